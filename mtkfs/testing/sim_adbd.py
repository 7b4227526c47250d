"""A fake Android device that Debian's real adb server attaches with ``adb connect``.

Why: the adb transport must be tested against the real adb server (its smart-socket replies,
its shell-protocol choices, its quirks), and Debian has no adbd. This module is the device
side of the adb wire protocol (24-byte headers, CNXN/OPEN/OKAY/WRTE/CLSE, one WRTE in flight
per stream) on a loopback TCP port, serving a chroot built by :mod:`mtkfs.testing.sim_adbd_root`
where commands run for real. See ``reference/adb.md`` §2 (wire), §1.3–1.5 (services), §4.

Services, as the profile's Android generation has them:

* ``shell,v2[,raw|,pty]:CMD`` — shell protocol packets (id, u32 length, data): stdout and stderr
  separate, stdin fed to the process, close-stdin, exit status (profiles with ``shell_v2``);
* ``exec:CMD`` — a PTY in raw mode: stdout and stderr merged, no exit status, and a hang-up
  (SIGHUP) when the host closes the stream, so stdin still in the PTY is lost (Android 5+);
* ``shell:CMD`` — legacy: a cooked PTY (LF→CRLF, echo) on Android ≤ 6, raw later;
* ``sync:`` — STAT/LSTA v1, STA2/LST2, LIST/LIS2, RECV, SEND, QUIT, served from the root;
* ``root:``/``unroot:`` — adbd's text answers; anything else is refused with CLSE.

No AUTH: the fake answers CNXN at once, like a device whose user already allowed the host's
key. The device runs in its own thread with its own trio loop, so both plain pytest tests and
trio tests can use it. Fault injection lives in :class:`Faults` and may change while it runs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from mtkfs.testing.disk import Layout
from mtkfs.testing.sim_adbd_root import (
    ANDROID6,
    ANDROID12,
    ANDROID44,
    PROFILES,
    DeviceProfile,
    DeviceRoot,
    build_root,
)

__all__ = [
    "ANDROID6",
    "ANDROID12",
    "ANDROID44",
    "A_AUTH",
    "A_CLSE",
    "A_CNXN",
    "A_OKAY",
    "A_OPEN",
    "A_WRTE",
    "PROFILES",
    "AdbServer",
    "DeviceProfile",
    "FakeDevice",
    "Faults",
    "Message",
    "adb_server",
    "decode_header",
    "encode_message",
    "running_device",
]

log = logging.getLogger(__name__)

A_CNXN, A_AUTH, A_OPEN = 0x4E584E43, 0x48545541, 0x4E45504F
A_OKAY, A_WRTE, A_CLSE = 0x59414B4F, 0x45545257, 0x45534C43
#: From this protocol version on, nobody fills or checks ``data_check``.
VERSION_SKIP_CHECKSUM = 0x01000001
#: What any peer may send before its CNXN told us its limit (MAX_PAYLOAD, 1 MiB).
_MAX_PAYLOAD = 1 << 20
_HEADER = struct.Struct("<6I")
_V2_HEADER = struct.Struct("<BI")
_V2_STDIN, _V2_STDOUT, _V2_STDERR, _V2_EXIT, _V2_CLOSE_STDIN = 0, 1, 2, 3, 4
_SYNC_DATA_MAX = 64 << 10


@dataclass(frozen=True)
class Message:
    """One adb wire message: command, two arguments, payload."""

    command: int
    arg0: int
    arg1: int
    data: bytes = b""


def encode_message(message: Message, *, checksum: bool = True) -> bytes:
    """Header (with ``magic = command ^ 0xFFFFFFFF``) + payload. ``data_check`` is the byte sum
    of the payload, or 0 when the negotiated version skips checksums."""
    check = sum(message.data) & 0xFFFFFFFF if checksum else 0
    header = _HEADER.pack(
        message.command, message.arg0, message.arg1, len(message.data), check,
        message.command ^ 0xFFFFFFFF,
    )  # fmt: skip
    return header + message.data


def decode_header(header: bytes, max_payload: int) -> tuple[int, int, int, int, int]:
    """(command, arg0, arg1, length, check) of a 24-byte header; ValueError if adbd would drop
    the connection over it (bad magic, oversized payload)."""
    command, arg0, arg1, length, check, magic = _HEADER.unpack(header)
    if magic != command ^ 0xFFFFFFFF:
        raise ValueError(f"bad magic {magic:#x} for command {command:#x}")
    if length > max_payload:
        raise ValueError(f"payload of {length} bytes exceeds {max_payload}")
    return command, arg0, arg1, length, check


@dataclass
class Faults:
    """Faults to inject; change them at any time, the device reads them as it goes.

    Attributes:
        disconnect_after_bytes: drop the TCP connection in the middle of the WRTE that would
            take the payload sent from now on past this many bytes; counts down as the device
            sends, and clears itself (None) when it fires.
        slow_okay_s: wait this long before every OKAY the device sends.
        truncate_output: deliver at most this many bytes of each command's stdout (PTY: of its
            output), silently dropping the rest; the exit status is unchanged.
        corrupt_store: flip bit 0 of the first stdin byte of every command containing ``of=``,
            and of the first byte of every file pushed with ``sync:`` SEND, so a ``dd of=…``
            write (fed either way) lands with one bit flipped.
        duplicate_clse: after answering an OPEN, send a stray CLSE for the last closed stream,
            as adbd 29 was seen to do (reference §1.5).
    """

    disconnect_after_bytes: int | None = None
    slow_okay_s: float = 0.0
    truncate_output: int | None = None
    corrupt_store: bool = False
    duplicate_clse: bool = False


class _ExactReader:
    """Exact-size reads over a source of byte chunks (a socket, a stream's WRTE payloads);
    None once the source ends."""

    def __init__(self, fetch: Callable[[], Awaitable[bytes | None]]) -> None:
        self.fetch = fetch
        self.buffer = bytearray()

    async def read(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            data = await self.fetch()
            if data is None:
                return None
            self.buffer += data
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk


class _Dropped(Exception):
    """The connection must end now (a fault, or a protocol violation by the host)."""


class _Connection:
    """One TCP connection from the adb server: handshake, message routing, streams."""

    def __init__(self, device: FakeDevice, sock: trio.SocketStream) -> None:
        self.device = device
        self.sock = sock
        self.maxdata = device.profile.maxdata
        self.checksum = True
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.last_closed: tuple[int, int] | None = None
        self._send_lock = trio.Lock()
        self._reader = _ExactReader(self._receive)

    async def serve(self) -> None:
        """Route messages until the host hangs up or a fault drops the connection."""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._read_loop()
                nursery.cancel_scope.cancel()
        except* (_Dropped, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as group:
            log.debug("connection dropped: %s", group.exceptions)
        except* Exception:
            log.exception("fake adb device: connection failed")
        finally:
            with trio.CancelScope(shield=True):
                await self.sock.aclose()

    async def _receive(self) -> bytes | None:
        return await self.sock.receive_some(1 << 16) or None

    async def _read_loop(self) -> None:
        connected = False
        while True:
            header = await self._reader.read(_HEADER.size)
            if header is None:
                return
            command, arg0, arg1, length, check = decode_header(header, _MAX_PAYLOAD)
            data = await self._reader.read(length)
            if data is None:
                return
            if self.checksum and check and sum(data) & 0xFFFFFFFF != check:
                raise _Dropped("bad data_check")
            if command == A_CNXN:
                await self._handshake(arg0, arg1)
                connected = True
            elif connected:
                await self._dispatch(Message(command, arg0, arg1, data))

    async def _handshake(self, version: int, maxdata: int) -> None:
        """Answer CNXN with the profile's version, limit and banner; no AUTH (see module doc)."""
        profile = self.device.profile
        self.maxdata = min(maxdata, profile.maxdata)
        self.checksum = min(version, profile.protocol_version) < VERSION_SKIP_CHECKSUM
        banner = profile.banner()
        await self.send(Message(A_CNXN, profile.protocol_version, profile.maxdata, banner))

    async def _dispatch(self, message: Message) -> None:
        if message.command == A_OPEN:
            await self._open(message.arg0, message.data.rstrip(b"\0").decode("utf-8", "replace"))
            return
        stream = self.streams.get(message.arg1)
        if stream is None or (stream.remote_id != message.arg0 and message.command != A_CLSE):
            return  # a stream we no longer know: ignore, as adbd does
        if message.command == A_OKAY:
            stream.acks_send.send_nowait(None)
        elif message.command == A_WRTE:
            stream.inbox_send.send_nowait(message.data)
        elif message.command == A_CLSE:
            stream.peer_closed = True
            stream.inbox_send.send_nowait(None)

    async def _open(self, remote_id: int, service: str) -> None:
        self.device._record(service)
        handler = _service_handler(self.device, service)
        if handler is None or remote_id == 0:
            await self.send(Message(A_CLSE, 0, remote_id))
            return
        local_id, self.next_id = self.next_id, self.next_id + 1
        stream = _Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        await self.okay(stream)
        if self.device.faults.duplicate_clse and self.last_closed is not None:
            await self.send(Message(A_CLSE, *self.last_closed))
        self.nursery.start_soon(self._run_stream, stream, handler)

    async def _run_stream(self, stream: _Stream, handler: _Handler) -> None:
        with stream.scope:
            await handler(stream)
        if not stream.peer_closed:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.send(Message(A_CLSE, stream.local_id, stream.remote_id))
        self.last_closed = (stream.local_id, stream.remote_id)
        del self.streams[stream.local_id]

    async def okay(self, stream: _Stream) -> None:
        """Tell the host it may send the next WRTE (after the slow-OKAY fault's delay)."""
        if self.device.faults.slow_okay_s:
            await trio.sleep(self.device.faults.slow_okay_s)
        await self.send(Message(A_OKAY, stream.local_id, stream.remote_id))

    async def send(self, message: Message) -> None:
        wire = encode_message(message, checksum=self.checksum)
        if message.command == A_WRTE:
            cut = self.device._spend(len(message.data))
            if cut is not None:
                async with self._send_lock:
                    await self.sock.send_all(wire[: _HEADER.size + cut])
                raise _Dropped(f"disconnect_after_bytes fault, {cut} bytes into a WRTE")
        async with self._send_lock:
            await self.sock.send_all(wire)


class _Stream:
    """One open service: its ids, the host's payloads (None = host closed it), and a send that
    keeps one WRTE in flight, as the classic protocol requires."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.peer_closed = False
        self.scope = trio.CancelScope()
        self.inbox_send, self.inbox = trio.open_memory_channel[bytes | None](math.inf)
        self.acks_send, self.acks = trio.open_memory_channel[None](math.inf)
        self._lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            for start in range(0, len(data), self.conn.maxdata):
                chunk = data[start : start + self.conn.maxdata]
                await self.conn.send(Message(A_WRTE, self.local_id, self.remote_id, chunk))
                await self.acks.receive()

    async def receive(self) -> bytes | None:
        """The host's next payload, acknowledged; None once the host closed the stream."""
        data = await self.inbox.receive()
        if data is not None:
            await self.conn.okay(self)
        return data


_Handler = Callable[[_Stream], Awaitable[None]]


def _service_handler(device: FakeDevice, service: str) -> _Handler | None:
    """The coroutine serving ``service`` on this profile, or None (refused with CLSE)."""
    profile = device.profile
    name, colon, command = service.partition(":")
    if not colon:
        return None
    kind, *options = name.split(",")
    if kind == "shell" and "v2" in options and "shell_v2" in profile.features:
        device._record_command(command)
        pty = "pty" in options
        return lambda s: _serve_process(device, s, command, v2=True, pty=pty, cooked=pty)
    if kind == "shell" and not options:
        device._record_command(command)
        cooked = profile.cooked_legacy_shell or not command
        return lambda s: _serve_process(device, s, command, v2=False, pty=True, cooked=cooked)
    if kind == "exec" and profile.exec_service:
        device._record_command(command)
        return lambda s: _serve_process(device, s, command, v2=False, pty=True)
    if kind == "sync" and not command:
        return lambda s: _serve_sync(device, s)
    if kind == "root" and not command and profile.userdebug and not profile.adbd_root:
        return lambda s: _restart_as_root(device, s)
    if kind in ("root", "unroot") and not command:
        return lambda s: _serve_text(s, _restart_answer(profile, kind))
    return None


def _restart_answer(profile: DeviceProfile, kind: str) -> bytes:
    """adbd's ``root:``/``unroot:`` answers (``daemon/restart_service.cpp``); nothing restarts."""
    if kind == "root":
        if profile.adbd_root:
            return b"adbd is already running as root\n"
        return b"adbd cannot run as root in production builds\n"
    if profile.adbd_root:
        return b"restarting adbd as non root\n"
    return b"adbd not running as root\n"


async def _serve_text(stream: _Stream, text: bytes) -> None:
    await stream.send(text)


async def _restart_as_root(device: FakeDevice, stream: _Stream) -> None:
    """A userdebug adbd's ``root:``: answer, then restart as root — every connection drops and
    the device comes back (same serial) with adbd, and so every command, running as uid 0."""
    await stream.send(b"restarting adbd as root\n")
    device.profile = replace(device.profile, adbd_root=True)
    device.root.profile = device.profile
    assert device._nursery is not None

    async def restart() -> None:
        await trio.sleep(0.2)  # the answer and CLSE reach the server first
        await device._replug(0.2)

    device._nursery.start_soon(restart)


# --------------------------------------------------------------------------------------------
# Processes: shell v2 over pipes, exec:/shell: over a PTY


class _Output:
    """Forwards one command's output, honouring the ``truncate_output`` fault."""

    def __init__(self, stream: _Stream, faults: Faults, v2: bool) -> None:
        self.stream = stream
        self.v2 = v2
        self.left = faults.truncate_output

    async def emit(self, packet_id: int, data: bytes) -> None:
        if packet_id != _V2_STDERR and self.left is not None:
            data, self.left = data[: self.left], max(0, self.left - len(data))
        if not data:
            return
        if self.v2:
            data = _V2_HEADER.pack(packet_id, len(data)) + data
        await self.stream.send(data)


async def _serve_process(
    device: FakeDevice, stream: _Stream, command: str, *, v2: bool, pty: bool, cooked: bool = False
) -> None:
    """Run ``command`` in the device root and shuttle its bytes until it exits or the host
    closes the stream (then the process group gets SIGHUP, as adbd's PTY close causes)."""
    if pty:
        proc, master = await _spawn_pty(device.root, command, cooked)
        pipes: list[tuple[int, trio.abc.ReceiveStream]] = [(_V2_STDOUT, master)]
        stdin: trio.abc.SendStream | None = master
    else:
        proc = await trio.lowlevel.open_process(
            device.root.argv(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=device.root.env(), start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        pipes = [(_V2_STDOUT, proc.stdout), (_V2_STDERR, proc.stderr)]
        stdin = proc.stdin
    output = _Output(stream, device.faults, v2)
    feeder = _StdinFeeder(stream, stdin, v2, pty, device.faults.corrupt_store and "of=" in command)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feeder.run, proc, nursery.cancel_scope)
            async with trio.open_nursery() as pumps:
                for packet_id, pipe in pipes:
                    pumps.start_soon(_pump, pipe, packet_id, output, stream.conn.maxdata - 5)
            status = await proc.wait()
            if v2:
                code = 128 - status if status < 0 else status & 0xFF
                await stream.send(_V2_HEADER.pack(_V2_EXIT, 1) + bytes([code]))
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for _, pipe in pipes:
                await pipe.aclose()
            if proc.stdin is not None:
                await proc.stdin.aclose()
            await _reap(proc)


async def _spawn_pty(
    root: DeviceRoot, command: str, cooked: bool
) -> tuple[trio.Process, trio.lowlevel.FdStream]:
    """``command`` on a fresh PTY (raw unless ``cooked``); the master end as a trio stream.

    A cooked PTY is what old adbd gave every shell: the kernel's line discipline turns LF
    into CRLF and echoes stdin — the mangling a transport must survive on Android ≤ 6.
    """
    master, slave = os.openpty()
    try:
        if not cooked:
            tty.setraw(slave)
        proc = await trio.lowlevel.open_process(
            root.argv(command or None), stdin=slave, stdout=slave, stderr=slave, env=root.env(),
            start_new_session=True,
        )  # fmt: skip
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return proc, trio.lowlevel.FdStream(master)


async def _pump(
    pipe: trio.abc.ReceiveStream, packet_id: int, output: _Output, chunk_bytes: int
) -> None:
    while True:
        try:
            data = await pipe.receive_some(chunk_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # a PTY master reads EIO once every slave is closed
        if not data:
            return
        await output.emit(packet_id, bytes(data))


class _StdinFeeder:
    """Host payloads → the process's stdin (v2: unpacked from shell packets, close-stdin
    honoured); the host's CLSE hangs the process group up, as closing adbd's socket does."""

    def __init__(
        self, stream: _Stream, stdin: trio.abc.SendStream | None, v2: bool, pty: bool,
        corrupt: bool,
    ) -> None:  # fmt: skip
        self.stream = stream
        self.stdin = stdin
        self.v2 = v2
        self.pty = pty
        self.corrupt = corrupt
        self.pending = bytearray()

    async def run(self, proc: trio.Process, scope: trio.CancelScope) -> None:
        while True:
            data = await self.stream.receive()
            if data is None:
                _signal_group(proc, signal.SIGHUP)
                scope.cancel()
                self.stream.scope.cancel()
                return
            if self.v2:
                self.pending += data
                packets = _unpack_v2(self.pending)
            else:
                packets = [(_V2_STDIN, data)]
            for packet_id, payload in packets:
                await self._deliver(packet_id, payload)

    async def _deliver(self, packet_id: int, payload: bytes) -> None:
        if self.stdin is None:
            return
        if packet_id == _V2_STDIN and payload:
            if self.corrupt:
                payload, self.corrupt = bytes([payload[0] ^ 1]) + payload[1:], False
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stdin.send_all(payload)
        elif packet_id == _V2_CLOSE_STDIN and not self.pty:
            await self.stdin.aclose()
            self.stdin = None


def _unpack_v2(pending: bytearray) -> list[tuple[int, bytes]]:
    """Complete shell-protocol packets taken off the front of ``pending``."""
    packets = []
    while len(pending) >= _V2_HEADER.size:
        packet_id, length = _V2_HEADER.unpack_from(pending)
        if len(pending) < _V2_HEADER.size + length:
            break
        packets.append((packet_id, bytes(pending[_V2_HEADER.size : _V2_HEADER.size + length])))
        del pending[: _V2_HEADER.size + length]
    return packets


def _signal_group(proc: trio.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


async def _reap(proc: trio.Process) -> None:
    """A process still running when its stream ends gets SIGHUP (adbd's hang-up), then
    SIGKILL if it lingers; either way it is waited for."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGHUP)
        with trio.move_on_after(2.0):
            await proc.wait()
        _signal_group(proc, signal.SIGKILL)
    await proc.wait()


# --------------------------------------------------------------------------------------------
# sync: (SYNC.TXT), served from the device root by the fake itself, as adbd serves it


async def _serve_sync(device: FakeDevice, stream: _Stream) -> None:
    reader = _ExactReader(stream.receive)
    while True:
        header = await reader.read(8)
        if header is None:
            return
        request, length = header[:4], struct.unpack("<I", header[4:])[0]
        if request == b"QUIT":
            return
        if length > 1024:
            await stream.send(_sync_fail("path too long"))
            return
        raw_path = await reader.read(length)
        if raw_path is None:
            return
        path = raw_path.decode("utf-8", "surrogateescape")
        if request in (b"STAT", b"STA2", b"LST2"):
            await stream.send(_sync_stat(device.root, request, path))
        elif request in (b"LIST", b"LIS2"):
            await stream.send(_sync_list(device.root, request == b"LIS2", path))
        elif request == b"RECV":
            await _sync_recv(device, stream, path)
        elif request == b"SEND":
            await _sync_send(device, stream, reader, path)
        else:
            await stream.send(_sync_fail(f"unknown sync request {request!r}"))
            return


def _sync_fail(message: str) -> bytes:
    text = message.encode()
    return b"FAIL" + struct.pack("<I", len(text)) + text


def _stat_fields(st: os.stat_result | None) -> tuple[int, int, int, int, int, int, int, int]:
    """(dev, ino, mode, nlink, uid, gid, size, mtime); zeros for a failed stat."""
    if st is None:
        return (0,) * 8
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            int(st.st_mtime))  # fmt: skip


def _device_stat(root: DeviceRoot, path: str, follow: bool) -> tuple[os.stat_result | None, int]:
    try:
        host = root.resolve(path, follow_last=follow)
        return (os.stat(host) if follow else os.lstat(host)), 0
    except OSError as exc:
        return None, exc.errno or errno.EIO


def _sync_stat(root: DeviceRoot, request: bytes, path: str) -> bytes:
    """STAT (v1: lstat, 32-bit fields, zeros on error), STA2 (stat) and LST2 (lstat)."""
    st, error = _device_stat(root, path, follow=request == b"STA2")
    dev, ino, mode, nlink, uid, gid, size, mtime = _stat_fields(st)
    if request == b"STAT":
        return b"STAT" + struct.pack("<III", mode, size & 0xFFFFFFFF, mtime & 0xFFFFFFFF)
    times = (int(st.st_atime), mtime, int(st.st_ctime)) if st else (0, 0, 0)
    return request + struct.pack("<IQQIIIIQqqq", error, dev, ino, mode, nlink, uid, gid, size,
                                 *times)  # fmt: skip


def _sync_list(root: DeviceRoot, v2: bool, path: str) -> bytes:
    """DENT (or DNT2) per entry, ``.`` and ``..`` included as readdir gives them, then DONE."""
    try:
        folder = root.resolve(path)
        names = [".", "..", *sorted(os.listdir(folder))]
    except OSError:
        names, folder = [], root.path
    out = bytearray()
    for name in names:
        st = os.lstat(folder / name)
        dev, ino, mode, nlink, uid, gid, size, mtime = _stat_fields(st)
        encoded = name.encode("utf-8", "surrogateescape")
        if v2:
            out += b"DNT2" + struct.pack("<IQQIIIIQqqqI", 0, dev, ino, mode, nlink, uid, gid,
                                         size, int(st.st_atime), mtime, int(st.st_ctime),
                                         len(encoded))  # fmt: skip
        else:
            out += b"DENT" + struct.pack("<IIII", mode, size & 0xFFFFFFFF, mtime, len(encoded))
        out += encoded
    out += b"DONE" + bytes(72 if v2 else 16)
    return bytes(out)


def _adbd_may_touch(device: FakeDevice, host_path: Path) -> bool:
    """Whether adbd's own uid may open ``host_path``: a non-root adbd (the shell user) can
    open nothing under ``/dev/block`` and no block device. Other paths are not guarded."""
    if device.profile.adbd_root:
        return True
    if host_path.relative_to(device.root.path).as_posix().startswith("dev/block"):
        return False
    try:
        return not stat.S_ISBLK(os.stat(host_path).st_mode)
    except OSError:
        return True  # let the real open report the real error


async def _sync_recv(device: FakeDevice, stream: _Stream, path: str) -> None:
    try:
        host = device.root.resolve(path)
        if not _adbd_may_touch(device, host):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        with host.open("rb") as f:
            while chunk := f.read(_SYNC_DATA_MAX):
                await stream.send(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
    except OSError as exc:
        await stream.send(_sync_fail(f"open failed: {exc.strerror}"))
        return
    await stream.send(b"DONE" + bytes(4))


async def _sync_send(device: FakeDevice, stream: _Stream, reader: _ExactReader, spec: str) -> None:
    """SEND "path,mode": DATA… then DONE(mtime); write into an existing device node in place
    (``adb push image /dev/block/…`` works), else (re)create the file and its folders."""
    path, _, mode_text = spec.rpartition(",")
    chunks: list[bytes] = []
    mtime = 0
    while True:
        header = await reader.read(8)
        if header is None:
            return
        kind, length = header[:4], struct.unpack("<I", header[4:])[0]
        if kind == b"DONE":
            mtime = length
            break
        data = await reader.read(length) if kind == b"DATA" else None
        if data is None:
            await stream.send(_sync_fail("bad SEND data"))
            return
        chunks.append(data)
    data = b"".join(chunks)
    if device.faults.corrupt_store and data:  # the flash ends up one bit off, as with dd
        data = bytes([data[0] ^ 1]) + data[1:]
    try:
        _store(device, path, int(mode_text or "420"), data, mtime)
    except (OSError, ValueError) as exc:
        await stream.send(_sync_fail(f"couldn't create file: {getattr(exc, 'strerror', exc)}"))
        return
    await stream.send(b"OKAY" + bytes(4))


def _store(device: FakeDevice, path: str, mode: int, data: bytes, mtime: int) -> None:
    host = device.root.resolve(path)
    if not _adbd_may_touch(device, host):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    if host.exists() and not host.is_file():
        with host.open("r+b") as f:
            f.write(data)
        return
    host.parent.mkdir(parents=True, exist_ok=True)
    host.unlink(missing_ok=True)
    host.write_bytes(data)
    host.chmod(stat.S_IMODE(mode))
    os.utime(host, (mtime, mtime))


# --------------------------------------------------------------------------------------------
# The device: a listener in its own thread, replug, the context manager


class FakeDevice:
    """A running fake phone. ``serial`` is what ``adb -s`` takes once the server connected it.

    ``commands`` lists every shell/exec command string received (tests assert hostile strings
    never appear there); ``services`` every OPEN payload.
    """

    def __init__(self, profile: DeviceProfile, root: DeviceRoot, faults: Faults) -> None:
        self.profile = profile
        self.root = root
        self.faults = faults
        self.port = 0
        self.connections = 0
        self._commands: list[str] = []
        self._services: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._generation: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._generation_done = trio.Event()
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def commands(self) -> list[str]:
        with self._lock:
            return list(self._commands)

    @property
    def services(self) -> list[str]:
        with self._lock:
            return list(self._services)

    def _record(self, service: str) -> None:
        with self._lock:
            self._services.append(service)

    def _record_command(self, command: str) -> None:
        with self._lock:
            self._commands.append(command)

    def _spend(self, size: int) -> int | None:
        """Count WRTE payload bytes down from ``disconnect_after_bytes``; where to cut the WRTE
        that crosses zero (the fault then clears itself)."""
        with self._lock:
            budget = self.faults.disconnect_after_bytes
            if budget is None:
                return None
            if size <= budget:
                self.faults.disconnect_after_bytes = budget - size
                return None
            self.faults.disconnect_after_bytes = None
            return budget

    def start(self, port: int = 0) -> None:
        """Start serving on 127.0.0.1:``port`` (0: any free port, outside the emulator range)."""
        self._thread = threading.Thread(
            target=self._run, args=(port,), name=f"sim-adbd-{self.profile.name}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("fake adb device did not start listening")
        if self._error is not None:
            raise RuntimeError("fake adb device failed to start") from self._error

    def stop(self) -> None:
        """Stop serving: connections close, processes are reaped. Safe from any thread."""
        if self._thread is None or self._token is None or self._stop is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._stop.set)
        self._thread.join(15)
        self._thread = None

    def replug(self, down_s: float = 0.0) -> None:
        """Drop every connection and the listener, stay away ``down_s``, listen again on the
        same port: the adb server sees the device vanish and come back with the same serial.

        Debian's adb 29 server retries a dropped ``adb connect`` device by itself: at once,
        then only about every 10 s — so a long ``down_s`` means a long wait for the test.
        Blocks until the device listens again; callable from any thread, a trio test's too
        (``trio.from_thread`` is not used because it refuses to run inside another trio loop).
        """
        assert self._token is not None and self._nursery is not None
        done = threading.Event()
        nursery = self._nursery

        async def replug_then_signal() -> None:
            try:
                await self._replug(down_s)
            finally:
                done.set()

        self._token.run_sync_soon(nursery.start_soon, replug_then_signal)
        if not done.wait(down_s + 15):
            raise TimeoutError("fake adb device did not come back")

    def _run(self, port: int) -> None:
        try:
            trio.run(self._main, port)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            log.exception("fake adb device crashed")

    async def _main(self, port: int) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.port = await nursery.start(self._serve_generation, port)
            self._started.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _replug(self, down_s: float) -> None:
        assert self._generation is not None and self._nursery is not None
        self._generation.cancel()
        await self._generation_done.wait()
        await trio.sleep(down_s)
        await self._nursery.start(self._serve_generation, self.port)

    async def _serve_generation(
        self, port: int, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until replugged or stopped; everything dies with this scope."""
        self._generation_done = trio.Event()
        try:
            await self._listen_and_serve(port, task_status)
        finally:
            self._generation_done.set()

    async def _listen_and_serve(self, port: int, task_status: trio.TaskStatus[int]) -> None:
        with trio.CancelScope() as self._generation:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            async with listeners[0] as listener, trio.open_nursery() as nursery:
                task_status.started(listener.socket.getsockname()[1])
                while True:
                    sock = await listener.accept()
                    self.connections += 1
                    nursery.start_soon(_Connection(self, sock).serve)


@contextlib.contextmanager
def running_device(
    profile: DeviceProfile | str,
    layout: Layout,
    *,
    faults: Faults | None = None,
    hostile: bool = False,
    port: int = 0,
) -> Iterator[FakeDevice]:
    """A fake phone of ``profile`` carrying ``layout`` (its flash *is* the layout's files:
    writes land there), listening on 127.0.0.1. Needs root (chroot, loop devices).

    ``hostile`` adds by-name links and dumchar rows with shell metacharacters in their names.
    Everything (processes, loop devices, the root folder) is gone when the block exits.
    """
    if isinstance(profile, str):
        profile = PROFILES[profile]
    root = build_root(profile, layout, hostile=hostile)
    device = FakeDevice(profile, root, faults or Faults())
    try:
        device.start(port)
        yield device
    finally:
        try:
            device.stop()
        finally:
            root.close()


# --------------------------------------------------------------------------------------------
# Debian's real adb server, private to one test


@dataclass
class AdbServer:
    """A private adb server (its own port, HOME and keys); :meth:`adb` runs the real client."""

    port: int
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    adb_path: str = field(default="adb")

    def adb(
        self, *args: str, input: bytes | None = None, timeout_s: float = 30.0
    ) -> subprocess.CompletedProcess[bytes]:
        """``adb -P PORT ARGS…``; never starts a server of its own (ADB_SERVER_SOCKET is set)."""
        return subprocess.run(
            [self.adb_path, *args], input=input, capture_output=True, env=self.env,
            timeout=timeout_s, check=False,
        )  # fmt: skip

    def connect(self, serial: str, timeout_s: float = 15.0) -> None:
        """``adb connect SERIAL`` and wait until the device is in state ``device``."""
        self.adb("connect", serial)
        self.wait_for(serial, timeout_s)

    def wait_for(self, serial: str, timeout_s: float = 15.0) -> None:
        """Poll ``adb get-state`` until ``device`` (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.adb("-s", serial, "get-state", timeout_s=5.0)
            if done.stdout.strip() == b"device":
                return
            time.sleep(0.1)
        raise TimeoutError(f"{serial} did not come online within {timeout_s} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"adb server exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"adb server not listening on {port} after {timeout_s} s")


@contextlib.contextmanager
def adb_server(port: int | None = None, *, timeout_s: float = 20.0) -> Iterator[AdbServer]:
    """Debian's adb server in the foreground (``adb nodaemon server``) on a private port.

    Why in the foreground: the server is then our child, killed for sure at the end, never a
    daemon outliving the test. HOME (and so ``~/.android/adbkey``) is a fresh temp folder, no
    ``ADB_*`` variable of the caller leaks in, and clients get ``ADB_SERVER_SOCKET`` so that
    they fail rather than spawn a stray server if this one died.
    """
    adb = shutil.which("adb")
    if adb is None:
        raise FileNotFoundError("adb not found (apt-get install adb)")
    port = port or _free_port()
    with tempfile.TemporaryDirectory(prefix="mtkfs-adb-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ADB_", "ANDROID_"))}
        env.update(HOME=str(home), TMPDIR=str(home), ANDROID_ADB_SERVER_PORT=str(port))
        log_file = (home / "server.log").open("wb")
        process = subprocess.Popen(
            [adb, "-P", str(port), "nodaemon", "server"], env=env, stdout=log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_listening(port, process, timeout_s)
            client_env = dict(env, ADB_SERVER_SOCKET=f"tcp:127.0.0.1:{port}")
            yield AdbServer(port, home, client_env, process, adb)
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log_file.close()
