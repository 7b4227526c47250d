"""adb's ``sync:`` sub-protocol (file transfer), host side, sans-I/O.

After ``sync:`` is OKAYed the socket is binary: every message is a 4-byte id plus a u32
little-endian number — a length, or a mode/mtime — then, for lengths, that many bytes (SYNC.TXT,
adb.md §1.4). mtkfs needs it for old devices (adb.md §5.6: no shell v2 and no exec:, so a range
is dumped to a temp file on the device and RECV'd, which is framed and so binary-safe) and to
STAT. Requests within one connection compose (:func:`stat_path`, :func:`recv_file`,
:func:`send_file`, :func:`quit_sync`); :func:`sync_stat`, :func:`sync_recv` and
:func:`sync_send` are whole one-connection conversations.

sync runs inside adbd's own context: ``/dev/block/*`` is readable only when adbd itself is root
(``adb root``); ``su`` cannot help here.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass

from mtkfs.errors import LocalProtocolError, RemoteProtocolError, TransportError
from mtkfs.protocols.adb import open_service, printable
from mtkfs.protocols.base import Op, Send, recv_exact

_HEADER = struct.Struct("<4sI")
_STAT_REPLY = struct.Struct("<4sIII")
#: SYNC_DATA_MAX: no DATA chunk is longer, either way.
MAX_CHUNK_BYTES = 64 * 1024
#: adbd refuses longer paths ("path too long").
MAX_PATH_BYTES = 1024
DEFAULT_MAX_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class SyncStat:
    """STAT (v1) answer. All zero when the path does not exist or cannot be stat'ed; sizes are
    32-bit, so a block device over 4 GiB reads wrong here (STA2 of ``stat_v2`` has 64 bits)."""

    mode: int
    size_bytes: int
    mtime_s: int

    @property
    def exists(self) -> bool:
        return self.mode != 0

    @property
    def is_block_device(self) -> bool:
        return stat.S_ISBLK(self.mode)


def _encode_path(path: str, what: str) -> bytes:
    data = path.encode("utf-8")
    if not path.startswith("/") or "\0" in path or "\n" in path or len(data) > MAX_PATH_BYTES:
        raise LocalProtocolError(f"sync {what}: not an absolute path of ≤ 1024 bytes: {path!r:.80}")
    return data


def encode_sync_request(ident: bytes, payload: bytes) -> bytes:
    """``ident`` (4 ASCII bytes), u32 LE length, payload."""
    return _HEADER.pack(ident, len(payload)) + payload


def _recv_header() -> Op[tuple[bytes, int]]:
    ident, number = _HEADER.unpack((yield from recv_exact(_HEADER.size)))
    return ident, number


def _recv_fail(what: str, length: int) -> Op[TransportError]:
    """The error for a FAIL message whose header has been read (its text is the device's)."""
    if length > MAX_CHUNK_BYTES:
        raise RemoteProtocolError(f"sync {what}: a FAIL message of {length} bytes")
    message = (yield from recv_exact(length)) if length else b""
    return TransportError(f"sync {what}: the device says {printable(message)!r}")


def stat_path(path: str) -> Op[SyncStat]:
    """STAT ``path`` → mode, size, mtime (see :class:`SyncStat` for the limits of v1)."""
    yield Send(encode_sync_request(b"STAT", _encode_path(path, "STAT")))
    ident, mode, size_bytes, mtime_s = _STAT_REPLY.unpack((yield from recv_exact(_STAT_REPLY.size)))
    if ident != b"STAT":
        raise RemoteProtocolError(f"sync STAT {path}: the answer starts {ident!r}, not STAT")
    return SyncStat(mode, size_bytes, mtime_s)


def recv_file(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Op[bytes]:
    """RECV ``path``: the whole file (the protocol has no offset or length), as DATA chunks of
    at most 64 KiB up to DONE; FAIL (missing file, no permission) is a TransportError with the
    device's message. More than ``max_bytes`` is refused as it arrives."""
    what = f"RECV {path}"
    yield Send(encode_sync_request(b"RECV", _encode_path(path, "RECV")))
    data = bytearray()
    while True:
        ident, length = yield from _recv_header()
        if ident == b"DONE":  # its number carries nothing here
            return bytes(data)
        if ident == b"FAIL":
            raise (yield from _recv_fail(what, length))
        if ident != b"DATA":
            raise RemoteProtocolError(f"sync {what}: unexpected message {ident!r}")
        if length > MAX_CHUNK_BYTES:
            raise RemoteProtocolError(f"sync {what}: a DATA chunk of {length} bytes (max 64 KiB)")
        if len(data) + length > max_bytes:
            raise TransportError(f"sync {what}: the file is larger than {max_bytes} bytes")
        data += (yield from recv_exact(length)) if length else b""


def send_file(path: str, data: bytes, *, mode: int = 0o100644, mtime_s: int = 0) -> Op[None]:
    """SEND ``path,mode`` → DATA chunks (≤ 64 KiB) → DONE with ``mtime_s`` → OKAY or FAIL.

    If the device fails early it says so only after DONE (or closes the socket, which the driver
    reports): the data is streamed without waiting, as the adb client does.
    """
    if "," in path:
        raise LocalProtocolError(f"sync SEND: a comma would be taken for the mode: {path!r:.80}")
    what = f"SEND {path}"
    spec = _encode_path(path, "SEND") + b",%d" % mode
    yield Send(encode_sync_request(b"SEND", spec))
    for start in range(0, len(data), MAX_CHUNK_BYTES):
        yield Send(encode_sync_request(b"DATA", data[start : start + MAX_CHUNK_BYTES]))
    yield Send(_HEADER.pack(b"DONE", mtime_s & 0xFFFFFFFF))
    ident, length = yield from _recv_header()
    if ident == b"FAIL":
        raise (yield from _recv_fail(what, length))
    if ident != b"OKAY":
        raise RemoteProtocolError(f"sync {what}: expected OKAY or FAIL, got {ident!r}")


def quit_sync() -> Op[None]:
    """QUIT: leave sync mode; adbd closes the connection."""
    yield Send(_HEADER.pack(b"QUIT", 0))


def sync_stat(serial: str | None, path: str) -> Op[SyncStat]:
    """One connection: select the device, ``sync:``, STAT, QUIT."""
    yield from open_service(serial, "sync:")
    result = yield from stat_path(path)
    yield from quit_sync()
    return result


def sync_recv(serial: str | None, path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Op[bytes]:
    """One connection: select the device, ``sync:``, RECV the whole file, QUIT."""
    yield from open_service(serial, "sync:")
    data = yield from recv_file(path, max_bytes)
    yield from quit_sync()
    return data


def sync_send(
    serial: str | None, path: str, data: bytes, *, mode: int = 0o100644, mtime_s: int = 0
) -> Op[None]:
    """One connection: select the device, ``sync:``, SEND the file, QUIT."""
    yield from open_service(serial, "sync:")
    yield from send_file(path, data, mode=mode, mtime_s=mtime_s)
    yield from quit_sync()
