"""The sans-I/O convention of every protocol in mtkfs: operations are generators.

Why: a protocol exchange (a BROM command with its echoes, a Download Agent read with its packets
and acks) is a fixed dance of "send these bytes, then expect that many". Writing it as a
generator that *yields* :class:`Send` and :class:`Recv` requests — and never touches a socket,
a USB endpoint or a clock — makes it testable byte for byte against a device-side generator in
memory (:func:`run_pair`), fuzzable, and drivable over any link: USB bulk, a tty, a pty, TCP
(:mod:`mtkfs.links` does the I/O; ``drive`` in the transports). This is the h11 idea with the
control flow of the map readers (:mod:`mtkfs.maps.model`'s ``Need``).

Host operations and device simulators use the same two requests:

* ``yield Send(data)`` — write ``data`` (``zlp=True``: follow it with a USB zero-length packet,
  where the protocol needs one; other links ignore it). The generator is resumed with None.
* ``data = yield Recv(size)`` — read exactly ``size`` bytes. The generator is resumed with them.
  A short read (link closed, timeout) never resumes it: the driver raises instead.

An operation *returns* its result (``return value`` → ``StopIteration.value``) and raises
:class:`~mtkfs.errors.ProtocolError` subclasses for anything the other side got wrong.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

from mtkfs.errors import LocalProtocolError, RemoteProtocolError

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Write ``data`` to the other side (``zlp``: then a zero-length USB packet)."""

    data: bytes
    zlp: bool = False


@dataclass(frozen=True)
class Recv:
    """Read exactly ``size`` bytes from the other side."""

    size: int


Request = Send | Recv
#: A protocol operation: yields requests, receives bytes for each Recv, returns a result.
Op = Generator[Request, bytes | None, T]


def recv_exact(size: int) -> Op[bytes]:
    """``data = yield from recv_exact(size)``: a Recv, checked to have been answered with exactly
    ``size`` bytes (a driver that breaks that promise is a bug here: LocalProtocolError)."""
    data = yield Recv(size)
    if data is None or len(data) != size:
        raise LocalProtocolError(f"driver resumed a Recv({size}) with {data!r:.40}")
    return data


def expect(got: bytes, wanted: bytes, what: str) -> None:
    """Raise RemoteProtocolError unless ``got == wanted`` (echoes, fixed replies)."""
    if got != wanted:
        raise RemoteProtocolError(f"{what}: expected {wanted.hex(' ')}, got {got.hex(' ')}")


def run_pair(host: Op[T], device: Op[object], *, max_steps: int = 1_000_000) -> T:
    """Run a host operation against a device-side generator in memory; returns the host's result.

    Bytes flow through two FIFO buffers, so message boundaries need not match (as on a real
    link). If the device generator finishes or both sides wait for bytes that never come, the
    exchange is stuck: LocalProtocolError names who waited for what — never a hang.
    """
    to_device = bytearray()
    to_host = bytearray()
    try:
        host_req: Request | None = next(host)
    except StopIteration as stop:  # an operation with nothing to exchange (a 0-byte read)
        done: T = stop.value
        return done
    device_done = False
    try:
        device_req: Request | None = next(device)
    except StopIteration:
        device_req, device_done = None, True
    for _ in range(max_steps):
        progressed = False
        # Device side.
        while not device_done and device_req is not None:
            if isinstance(device_req, Send):
                to_host += device_req.data
                reply: bytes | None = None
            elif len(to_device) >= device_req.size:
                reply = bytes(to_device[: device_req.size])
                del to_device[: device_req.size]
            else:
                break
            progressed = True
            try:
                device_req = device.send(reply)
            except StopIteration:
                device_done = True
                device_req = None
        # Host side.
        while host_req is not None:
            if isinstance(host_req, Send):
                to_device += host_req.data
                answer: bytes | None = None
            elif len(to_host) >= host_req.size:
                answer = bytes(to_host[: host_req.size])
                del to_host[: host_req.size]
            else:
                break
            progressed = True
            try:
                host_req = host.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
        if not progressed:
            waiting = f"host waits for {host_req.size} bytes" if isinstance(host_req, Recv) else ""
            raise LocalProtocolError(
                f"exchange stuck: {waiting}; device "
                + ("finished" if device_done else f"waits for {getattr(device_req, 'size', 0)}")
                + f" ({len(to_host)} bytes unread by the host, {len(to_device)} by the device)"
            )
    raise LocalProtocolError("exchange did not finish")


def byte_sum16(data: bytes | bytearray | memoryview) -> int:
    """The sum of all bytes, modulo 65536: the legacy DA's per-packet checksum and XFlash's
    write checksum ("byte sum & 0xFFFF").

    Why not ``sum(data) & 0xFFFF``: that walks a megabyte packet one Python int at a time
    (~5 ms/MiB, so a read could not keep up with USB 2.0 on a small machine). Adler-32's low
    half is 1 + the byte sum modulo 65521, which for at most 256 bytes (at most 65280) is the
    exact sum; zlib computes it in C, 256 bytes per call (~1 ms/MiB).
    """
    view = memoryview(data).cast("B")
    total = 0
    for start in range(0, len(view), 256):
        total += (zlib.adler32(view[start : start + 256]) & 0xFFFF) - 1
    return total & 0xFFFF
