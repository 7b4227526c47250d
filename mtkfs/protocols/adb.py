"""The adb server's "smart socket" (TCP 127.0.0.1:5037), host side, sans-I/O.

mtkfs reads a rooted Android phone through the adb server that is already running on the host,
as the ``adb`` client does: one TCP connection per request, each a short conversation. Every
conversation below is one :data:`~mtkfs.protocols.base.Op` — the transport opens a socket,
drives the Op over it and closes it. Facts come from ``../shared/reference/adb.md`` (§1, §5):

* a request is 4 hex digits of payload length, then the payload (``000Chost:version``); the
  answer is ``OKAY``, or ``FAIL`` + hex4 length + the server's reason, which becomes an error of
  :mod:`mtkfs.errors` that carries the reason and says what to do;
* host queries answer OKAY + one hex4-framed block; ``host:transport:SERIAL`` switches the socket
  to the device, whose *local services* then answer: ``shell,v2,raw:`` (framed stdout, stderr
  and exit status: the read and write path on Android 7+), ``exec:`` (raw bytes, Android 5–6),
  legacy ``shell:`` (a PTY: text only), ``root:``; ``sync:`` is in :mod:`.adb_sync`.

The convention's :class:`~mtkfs.protocols.base.Recv` reads *exactly* n bytes and a closed socket
is the driver's error, so nothing here reads "until EOF". Streams without framing get an end
marker instead: ``exec:`` and ``shell:`` commands are followed by ``echo <marker>$?``, which also
recovers the exit status those services lose.

Device strings are hostile (DESIGN.md): :func:`safe_device_path` and :func:`sh_quote` are the
only ways a string reaches a device command; the transport builds the rest from integers.
"""

from __future__ import annotations

import enum
import logging
import re
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from mtkfs.errors import (
    AuthRequiredError,
    DeviceGoneError,
    LocalProtocolError,
    MtkfsError,
    RemoteProtocolError,
    SourceError,
    TransportError,
    UsageError,
)
from mtkfs.protocols.base import Op, Send, recv_exact

log = logging.getLogger(__name__)

DEFAULT_PORT = 5037
#: Requests end up as the payload of one adb OPEN message, NUL-terminated; old adbd accepts at
#: most 4096 payload bytes, so stay below that with room for the NUL (adb.md §2.2, §5.4).
MAX_REQUEST_BYTES = 4000
#: Hex4-framed answers cannot exceed 0xFFFF bytes; a device list is far smaller.
MAX_BLOCK_BYTES = 0xFFFF
MAX_DEVICES = 256
_MAX_LINE_CHARS = 1024
_MAX_FEATURES = 256

ShellService = Literal["shell,v2", "exec", "shell"]


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


def printable(data: bytes | str, limit_chars: int = 400) -> str:
    """A server's or device's text made safe for one log/error line: control characters become
    ``?`` so a hostile message cannot rewrite the user's terminal; long texts are cut."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = "".join(c if c.isprintable() else "?" for c in text.strip())
    return text if len(text) <= limit_chars else text[:limit_chars] + "…"


def encode_request(payload: str) -> bytes:
    """``payload`` framed for the server: 4 hex digits of its UTF-8 length, then the bytes."""
    data = payload.encode("utf-8")
    if not 0 < len(data) <= MAX_REQUEST_BYTES or b"\0" in data or b"\n" in data:
        raise LocalProtocolError(
            f"adb request of {len(data)} bytes (1..{MAX_REQUEST_BYTES} allowed, one line, no "
            f"NUL): {payload!r:.80}"
        )
    return b"%04x" % len(data) + data


_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")


def parse_hex4(data: bytes, what: str) -> int:
    """A 4-hex-digit length. Stricter than ``int(x, 16)``, which would take ``" +1f"``."""
    if not _HEX4.fullmatch(data):
        raise RemoteProtocolError(
            f"{what}: expected a 4-hex-digit length, got {data!r} — is something other than an "
            f"adb server listening on its port ({DEFAULT_PORT} unless ANDROID_ADB_SERVER_PORT)?"
        )
    return int(data, 16)


def recv_hex4_block(what: str, max_bytes: int = MAX_BLOCK_BYTES) -> Op[bytes]:
    """A hex4 length, then that many bytes (query answers, FAIL reasons, track-devices)."""
    length = parse_hex4((yield from recv_exact(4)), what)
    if length > max_bytes:
        raise RemoteProtocolError(f"{what}: a {length}-byte answer where at most {max_bytes} fit")
    return (yield from recv_exact(length)) if length else b""


def server_error(what: str, reason: str) -> MtkfsError:
    """The error for a ``FAIL`` answer: its class by what the user can do about it.

    The server's reasons are fixed English strings (adb.md §1.1: "device 'x' not found",
    "no devices/emulators found"; also "more than one device/emulator", "device unauthorized…",
    "device offline"); anything else keeps its words in a TransportError.
    """
    lower = reason.lower()
    said = f"{what}: the adb server says {reason!r}"
    if "unauthorized" in lower:
        return AuthRequiredError(f"{said}; accept the 'Allow USB debugging?' prompt on the phone")
    if "more than one" in lower:
        return UsageError(f"{said}; name the phone as adb:SERIAL (see `adb devices -l`)")
    if "not found" in lower or "no devices" in lower:
        return SourceError(f"{said}; check the cable, USB debugging and `adb devices -l`")
    if any(word in lower for word in ("offline", "authorizing", "connecting")):
        return DeviceGoneError(f"{said}; wait for the phone to come online, or replug it")
    return TransportError(said)


def recv_status(what: str) -> Op[None]:
    """``OKAY``, or the error a ``FAIL`` + reason stands for."""
    status = yield from recv_exact(4)
    if status == b"OKAY":
        return
    if status == b"FAIL":
        reason = yield from recv_hex4_block(f"{what} (FAIL reason)")
        raise server_error(what, printable(reason))
    raise RemoteProtocolError(
        f"{what}: expected OKAY or FAIL from the adb server, got {status!r}; is an adb server "
        "listening on that port?"
    )


def request(payload: str) -> Op[None]:
    """Send one request and require OKAY (the socket stays open for what follows)."""
    yield Send(encode_request(payload))
    yield from recv_status(printable(payload, 120))


def query(payload: str, max_bytes: int = MAX_BLOCK_BYTES) -> Op[bytes]:
    """A host query: request, OKAY, one hex4-framed answer (then the server closes)."""
    yield from request(payload)
    return (yield from recv_hex4_block(payload, max_bytes))


# ---------------------------------------------------------------------------------------------
# Host services
# ---------------------------------------------------------------------------------------------


def host_version() -> Op[int]:
    """``host:version`` → the server's protocol version (0x29 = 41 for platform-tools 29)."""
    text = yield from query("host:version", 8)
    if not re.fullmatch(rb"[0-9a-fA-F]{1,8}", text):
        raise RemoteProtocolError(f"host:version: expected hex digits, got {text!r}")
    return int(text, 16)


@dataclass(frozen=True)
class AdbDevice:
    """One line of ``host:devices-l``: ``serial state [key:value …]``.

    ``state`` is ``device`` when usable; also ``offline``, ``unauthorized``, ``recovery``,
    ``sideload``, ``bootloader``, or a sentence (``no permissions (…); see […]``).
    ``attrs`` holds ``usb``, ``product``, ``model``, ``device``, ``transport_id`` as given.
    """

    serial: str
    state: str
    attrs: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def online(self) -> bool:
        return self.state == "device"

    @property
    def transport_id(self) -> int | None:
        value = self.attrs.get("transport_id", "")
        return int(value) if value.isdigit() and len(value) < 12 else None


_ATTR = re.compile(r"([a-z_]{1,32}):(\S{0,256})")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]{1,255}")
_NO_SERIAL = "(no serial number)"


def _parse_device_line(line: str) -> AdbDevice | None:
    """One device line, or None (logged) when it cannot be trusted to address a device."""
    if line.startswith(_NO_SERIAL):  # adb prints this for devices without a serial
        serial, rest = "", line[len(_NO_SERIAL) :]
    else:
        serial, _, rest = line.partition("\t") if "\t" in line else line.partition(" ")
    tokens = rest.split()
    attrs: dict[str, str] = {}
    while tokens and (match := _ATTR.fullmatch(tokens[-1])):  # key:value run at the end
        attrs.setdefault(match[1], printable(match[2]))
        tokens.pop()
    state = " ".join(tokens)
    if (serial and not _VISIBLE_ASCII.fullmatch(serial)) or not state or len(state) > 300:
        log.warning("adb: ignoring a device line I cannot parse: %s", printable(line, 120))
        return None
    return AdbDevice(serial, printable(state), attrs)


def parse_devices(text: bytes) -> list[AdbDevice]:
    """The lines of ``host:devices[-l]`` or one ``host:track-devices`` block.

    Tolerant (blank, overlong, unparsable lines are skipped with a warning) and bounded: at most
    :data:`MAX_DEVICES`. Serials must be visible ASCII, since they go back into requests.
    """
    devices: list[AdbDevice] = []
    for line in text.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        if len(devices) >= MAX_DEVICES:
            log.warning("adb: more than %d devices; ignoring the rest", MAX_DEVICES)
            break
        if len(line) > _MAX_LINE_CHARS:
            log.warning("adb: ignoring an overlong device line: %s", printable(line, 80))
            continue
        device = _parse_device_line(line.strip())
        if device is not None:
            devices.append(device)
    return devices


def host_devices() -> Op[list[AdbDevice]]:
    """``host:devices-l``: every device the server knows, with product/model/transport_id."""
    return parse_devices((yield from query("host:devices-l")))


def track_devices(long_format: bool = False) -> Op[None]:
    """Start ``host:track-devices[-l]``: the connection then never closes and the server sends
    the full list again whenever anything changes; read each with :func:`next_device_list`."""
    yield from request("host:track-devices-l" if long_format else "host:track-devices")


def next_device_list() -> Op[list[AdbDevice]]:
    """The next update block of a tracking connection (an empty list = no devices)."""
    return parse_devices((yield from recv_hex4_block("host:track-devices update")))


_FEATURE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_features(text: bytes) -> frozenset[str]:
    """A comma-separated feature list (``shell_v2,cmd,stat_v2,…``); odd names are dropped."""
    names = [name.strip() for name in text.decode("ascii", "replace").split(",")]
    good = [name for name in names if _FEATURE.fullmatch(name)]
    if len(good) != len([name for name in names if name]):
        log.warning("adb: ignoring odd feature names in %s", printable(text, 200))
    return frozenset(good[:_MAX_FEATURES])


def check_serial(serial: str) -> str:
    """A serial fit for a request: 1..255 visible ASCII characters (no spaces, no controls)."""
    if not _VISIBLE_ASCII.fullmatch(serial):
        raise UsageError(f"adb serial {serial!r:.80} is not 1-255 visible ASCII characters")
    return serial


def device_features(serial: str | None = None) -> Op[frozenset[str]]:
    """The device's features: ``host-serial:SERIAL:features`` (``host:features`` when there is
    just one device and ``serial`` is None). Read once per device (adb.md §1.2)."""
    if serial is None:
        return parse_features((yield from query("host:features")))
    return parse_features((yield from query(f"host-serial:{check_serial(serial)}:features")))


def server_features() -> Op[frozenset[str]]:
    """``host:host-features``: what the adb server itself supports."""
    return parse_features((yield from query("host:host-features")))


def select_transport(serial: str | None) -> Op[None]:
    """``host:transport:SERIAL`` (``host:transport-any`` for None): from the OKAY on, the socket
    talks to that device's adbd, and the next request names a local service."""
    if serial is None:
        yield from request("host:transport-any")
    else:
        yield from request(f"host:transport:{check_serial(serial)}")


def open_service(serial: str | None, service: str) -> Op[None]:
    """Select the device, then open one of its local services (``shell,v2,raw:…``, ``sync:``)."""
    yield from select_transport(serial)
    yield from request(service)


# ---------------------------------------------------------------------------------------------
# Device commands: quoting, paths, which shell service
# ---------------------------------------------------------------------------------------------


def sh_quote(arg: str) -> str:
    """``arg`` as one single-quoted POSIX shell word: every character is literal inside single
    quotes, and a quote itself is written ``'\\''`` (end quote, escaped quote, reopen).

    NUL cannot be carried at all (adb requests are NUL-terminated strings) and a newline is
    refused too: commands are one line on every path to the device (legacy PTY shells, ``su
    -c``), and no partition or path mtkfs uses contains one.
    """
    if "\0" in arg or "\n" in arg:
        raise UsageError(f"refusing to put {arg!r:.80} into a device command: NUL or newline")
    return "'" + arg.replace("'", "'\\''") + "'"


_DEVICE_PATH = re.compile(r"/dev/block/[A-Za-z0-9._/-]{1,200}")


def safe_device_path(path: str) -> str:
    """``path`` if it is an absolute block-device path mtkfs may name in a command; UsageError
    otherwise.

    Why so strict: paths reach us from the device (``/proc/dumchar_info``'s MapTo, by-name
    links), and a partition called ``a;reboot`` or ``$(rm …)`` must never become a command. Only
    ``/dev/block/`` + ``[A-Za-z0-9._/-]``, with no empty, ``.`` or ``..`` component.
    """
    parts = path.split("/")[3:]
    if not _DEVICE_PATH.fullmatch(path) or any(part in ("", ".", "..") for part in parts):
        raise UsageError(
            f"refusing device path {path!r:.80}: mtkfs only reads absolute paths under "
            "/dev/block/ made of letters, digits, '.', '_', '-' and '/' (no '..')"
        )
    return path


def pick_shell(features: Iterable[str], sdk_version: int | None = None) -> ShellService:
    """The binary-safe service for a device (adb.md §1.5).

    * ``shell,v2`` when the device has the ``shell_v2`` feature (Android 7+): framed, stderr
      apart, exit status, stdin with close-stdin — the only service writes may use;
    * ``exec`` on Android 5–6 (API 21–23): raw, but stderr is merged, so commands must redirect
      it on the device (``2>/dev/null``);
    * ``shell`` otherwise: a cooked PTY (LF → CRLF), for text only, never for data.

    Devices before Android 7 advertise no features at all, so 5–6 and ≤ 4.4 differ only by
    ``ro.build.version.sdk`` (read it over ``shell``); unknown means the safe answer, ``shell``.
    """
    if "shell_v2" in set(features):
        return "shell,v2"
    if sdk_version is not None and sdk_version >= 21:
        return "exec"
    return "shell"


# ---------------------------------------------------------------------------------------------
# shell,v2: the shell protocol
# ---------------------------------------------------------------------------------------------


class ShellId(enum.IntEnum):
    """Packet ids of the shell protocol (``shell_protocol.h``)."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    EXIT = 3
    CLOSE_STDIN = 4
    WINDOW_SIZE = 5
    INVALID = 255


_SHELL_HEADER = struct.Struct("<BI")
#: Device packets are bounded by adbd's buffer (at most the 1 MiB adb payload); a larger length
#: is a corrupt header, refused before anything is allocated.
MAX_SHELL_PACKET_BYTES = 1 << 20
#: Stdin packet size: each fits one 4096-byte payload of the oldest shell_v2 adbd, so no
#: assumption about how adbd reassembles bigger ones; the 5 bytes of header cost 0.1 %.
STDIN_PACKET_BYTES = 4096 - _SHELL_HEADER.size
#: Stdin packets are batched into Sends of about this size (fewer link writes).
_STDIN_SEND_BYTES = 256 * 1024
DEFAULT_MAX_STDOUT_BYTES = 64 << 20
DEFAULT_MAX_STDERR_BYTES = 64 << 10


def encode_shell_packet(ident: int, data: bytes = b"") -> bytes:
    """One packet: id byte, u32 little-endian length, data."""
    return _SHELL_HEADER.pack(ident, len(data)) + data


def encode_stdin(data: bytes, packet_bytes: int = STDIN_PACKET_BYTES) -> Iterator[bytes]:
    """``data`` as stdin packets, batched into chunks of about 256 KiB, then close-stdin."""
    batch = bytearray()
    for start in range(0, len(data), packet_bytes):
        batch += encode_shell_packet(ShellId.STDIN, data[start : start + packet_bytes])
        if len(batch) >= _STDIN_SEND_BYTES:
            yield bytes(batch)
            batch.clear()
    yield bytes(batch) + encode_shell_packet(ShellId.CLOSE_STDIN)


@dataclass(frozen=True)
class ShellResult:
    """What a device command produced. ``stderr`` is empty for ``exec:``/``shell:`` (merged)."""

    stdout: bytes
    stderr: bytes
    exit_status: int

    def check(self, what: str) -> bytes:
        """``stdout`` if the command succeeded; TransportError with its stderr otherwise."""
        if self.exit_status != 0:
            raise TransportError(
                f"{what}: the device command failed with exit status {self.exit_status}"
                + (f": {printable(self.stderr, 300)}" if self.stderr.strip() else "")
            )
        return self.stdout


def _check_command(command: str) -> str:
    if not command or "\0" in command or "\n" in command:
        raise LocalProtocolError(f"device command must be one non-empty line: {command!r:.80}")
    return command


def recv_shell_output(
    expect_stdout_bytes: int | None = None,
    max_stdout_bytes: int = DEFAULT_MAX_STDOUT_BYTES,
    max_stderr_bytes: int = DEFAULT_MAX_STDERR_BYTES,
) -> Op[ShellResult]:
    """Device packets up to the exit packet: stdout and stderr apart, stdout bounded (by
    ``expect_stdout_bytes`` when given: one byte more is an error at once, not after buffering
    it all), stderr kept up to ``max_stderr_bytes`` (it is diagnostics; the rest is dropped).
    Packets split across reads are reassembled by their lengths."""
    limit = max_stdout_bytes if expect_stdout_bytes is None else expect_stdout_bytes
    stdout, stderr = bytearray(), bytearray()
    while True:
        ident, length = _SHELL_HEADER.unpack((yield from recv_exact(_SHELL_HEADER.size)))
        if ident == ShellId.EXIT:
            if length != 1:
                raise RemoteProtocolError(f"shell v2: exit packet of {length} bytes, not 1")
            exit_status = (yield from recv_exact(1))[0]
            break
        if ident not in (ShellId.STDOUT, ShellId.STDERR):
            raise RemoteProtocolError(f"shell v2: unexpected packet id {ident} from the device")
        if length > MAX_SHELL_PACKET_BYTES:
            raise RemoteProtocolError(f"shell v2: a {length}-byte packet (corrupt header?)")
        if ident == ShellId.STDOUT and len(stdout) + length > limit:
            raise RemoteProtocolError(
                f"shell v2: the command printed more than the {limit} bytes it should — "
                "refusing its output (a tool printing a summary to stdout?)"
            )
        data = (yield from recv_exact(length)) if length else b""
        if ident == ShellId.STDOUT:
            stdout += data
        else:
            stderr += data[: max(0, max_stderr_bytes - len(stderr))]
    result = ShellResult(bytes(stdout), bytes(stderr), exit_status)
    if expect_stdout_bytes is not None and len(stdout) != expect_stdout_bytes:
        if exit_status != 0:
            result.check(f"shell v2 read of {expect_stdout_bytes} bytes")
        raise TransportError(
            f"shell v2: the device returned {len(stdout)} of {expect_stdout_bytes} bytes "
            "(exit status 0): a read past the end of the device, or a short read"
        )
    return result


def shell_v2(
    serial: str | None,
    command: str,
    *,
    stdin: bytes | None = None,
    expect_stdout_bytes: int | None = None,
    max_stdout_bytes: int = DEFAULT_MAX_STDOUT_BYTES,
    max_stderr_bytes: int = DEFAULT_MAX_STDERR_BYTES,
) -> Op[ShellResult]:
    """Run ``command`` over ``shell,v2,raw:`` (Android 7+): the read and the write path.

    ``stdin`` (a write: ``dd of=… seek=… conv=notrunc``) goes first as stdin packets; close-stdin
    follows always, so a command reading stdin sees EOF instead of waiting forever. Output is
    read only after that, so commands fed with stdin must print little (dd with ``2>/dev/null``
    prints nothing). A non-zero exit status is returned, not raised (see
    :meth:`ShellResult.check`), except for an ``expect_stdout_bytes`` read that came up short.
    """
    yield from open_service(serial, f"shell,v2,raw:{_check_command(command)}")
    for chunk in encode_stdin(stdin or b""):
        yield Send(chunk)
    return (yield from recv_shell_output(expect_stdout_bytes, max_stdout_bytes, max_stderr_bytes))


# ---------------------------------------------------------------------------------------------
# exec:, legacy shell:, root: — unframed streams
# ---------------------------------------------------------------------------------------------


def new_marker(nonce: str | None = None) -> str:
    """An end marker: ``#mtkfs-exit-<nonce>:``. The ``#`` occurs only at its start, so a trailer
    read a few bytes off (a short output) fails on its first byte; the random nonce keeps device
    output from faking it."""
    nonce = secrets.token_hex(8) if nonce is None else nonce
    if not re.fullmatch(r"[0-9a-f]{4,32}", nonce):
        raise LocalProtocolError(f"marker nonce must be 4-32 lowercase hex digits: {nonce!r}")
    return f"#mtkfs-exit-{nonce}:"


def with_marker(command: str, marker: str, *, own_line: bool = False) -> str:
    """``command`` followed by ``echo MARKER<exit status>`` (the marker quoted: ``#`` would start
    a comment). ``own_line`` first prints a newline, so the marker starts a line even after
    output without a final one; the status is saved before that ``echo`` would replace it."""
    if own_line:
        return f"{_check_command(command)}; mtkfs_s=$?; echo; echo '{marker}'$mtkfs_s"
    return f"{_check_command(command)}; echo '{marker}'$?"


def _recv_status_digits(what: str) -> Op[int]:
    """``<1-3 digits>\\n`` (or ``\\r\\n`` from a cooked PTY) after a marker."""
    digits = b""
    while (byte := (yield from recv_exact(1))) not in (b"\n", b"\r"):
        digits += byte
        if not digits.isdigit() or len(digits) > 3:
            raise RemoteProtocolError(f"{what}: bad exit status after the end marker: {digits!r}")
    if not digits:
        raise RemoteProtocolError(f"{what}: no exit status after the end marker")
    return int(digits)


def exec_read(
    serial: str | None, command: str, length_bytes: int, *, nonce: str | None = None
) -> Op[ShellResult]:
    """Run ``command`` over ``exec:`` (Android 5–6) and read exactly ``length_bytes`` of output.

    exec: gives a raw PTY: bytes untranslated, but stderr merged into them and no exit status,
    so ``command`` must redirect stderr on the device (``dd … 2>/dev/null``). An end marker
    follows the data and brings the exit status back. More output than expected fails at the
    marker; less fails there too when short by a few bytes, else the server closes the socket
    while the data is read (the driver's closed-link error). Never use exec: to write (adb.md
    §0.3: the PTY hangs up the child and loses data).
    """
    marker = new_marker(nonce)
    yield from open_service(serial, "exec:" + with_marker(command, marker))
    data = (yield from recv_exact(length_bytes)) if length_bytes else b""
    # Short by exactly the trailer's length: the whole trailer is in `data`, nothing follows.
    tail = re.search(re.escape(marker.encode()) + rb"(\d{1,3})\r?\n\Z", data[-len(marker) - 5 :])
    if tail:
        ShellResult(b"", b"", int(tail[1])).check(f"exec: read of {length_bytes} bytes")
        raise TransportError(
            f"exec: the device returned {len(data) - len(tail[0])} of {length_bytes} bytes"
        )
    for expected in marker.encode():
        if (yield from recv_exact(1))[0] != expected:
            raise RemoteProtocolError(
                f"exec: the command printed more or fewer than the {length_bytes} bytes "
                "expected (stderr not redirected to /dev/null on the device? a read past the "
                "end of the device?) — refusing its output"
            )
    status = yield from _recv_status_digits("exec:")
    return ShellResult(data, b"", status)


def legacy_shell(
    serial: str | None, command: str, *, max_bytes: int = 64 << 10, nonce: str | None = None
) -> Op[ShellResult]:
    """Run ``command`` over legacy ``shell:`` (Android ≤ 4.4, or to read ``getprop``) — TEXT
    ONLY: a cooked PTY turns LF into CRLF, which cannot be undone on binary data (adb.md §5.6).

    The output is read a byte at a time up to the end marker (nothing else tells where it ends),
    so keep it small (``max_bytes``). CRLF becomes LF; stderr is merged; the exit status comes
    from the marker.
    """
    marker = new_marker(nonce).encode()
    yield from open_service(serial, "shell:" + with_marker(command, marker.decode(), own_line=True))
    text = bytearray()
    while not text.endswith(marker):
        if len(text) >= max_bytes + len(marker) + 2:
            raise RemoteProtocolError(f"shell: more than {max_bytes} bytes of output")
        text += yield from recv_exact(1)
    status = yield from _recv_status_digits("shell:")
    body = bytes(text[: -len(marker)]).replace(b"\r\n", b"\n")
    return ShellResult(body[:-1] if body.endswith(b"\n") else body, b"", status)


def root(serial: str | None) -> Op[str]:
    """``root:``: ask adbd to restart as root; returns its one-line answer (adb.md §1.3), e.g.
    "adbd is already running as root", "restarting adbd as root" (reconnect: adbd restarts),
    "adbd cannot run as root in production builds" (a user build: use ``su``)."""
    yield from open_service(serial, "root:")
    reply = bytearray()
    while not reply.endswith(b"\n"):
        if len(reply) > 512:
            raise RemoteProtocolError(f"root: an overlong reply {printable(bytes(reply), 80)}")
        reply += yield from recv_exact(1)
    return printable(bytes(reply))
