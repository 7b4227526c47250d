"""An in-memory pair of links, and the driver that serves a device generator over any link.

Why: protocol pair tests and the in-process simulator (``sim:NAME``) need the host's real async
code path — :func:`~mtkfs.links.base.drive`, timeouts, closing — without a kernel object in the
way. :func:`memory_link_pair` gives two :class:`MemoryLink` ends joined by two byte pipes, with
the same contract as a USB or tty link: byte-stream semantics (message boundaries are not kept),
``recv_exactly`` honouring its timeout, and :class:`~mtkfs.errors.DeviceGoneError` once the other
end has closed and the bytes already sent have been read.

:func:`run_device` is the device-side twin of ``drive``: it runs a simulator generator (the same
:class:`~mtkfs.protocols.base.Send`/:class:`~mtkfs.protocols.base.Recv` convention) over any
link, so one simulator serves a host over memory, a pty or a real serial port alike.
"""

from __future__ import annotations

import math
from typing import TypeVar

import trio

from mtkfs.errors import DeviceGoneError, TransportTimeout
from mtkfs.links.base import Link, drive
from mtkfs.protocols.base import Op

__all__ = ["DEFAULT_PIPE_BYTES", "MemoryLink", "memory_link_pair", "run_device"]

T = TypeVar("T")

#: Bytes a pipe holds before ``send`` waits for the reader (flow control, like a USB endpoint's
#: or a tty's buffer): a simulator streaming a 256 MiB partition does not buffer all of it.
DEFAULT_PIPE_BYTES = 4 * 1024 * 1024


class _Pipe:
    """One direction: a byte FIFO with a writer-closed flag and a parking lot for waiters.

    A ParkingLot rather than an Event because it can be woken any number of times; every change
    (bytes in, bytes out, close) wakes everyone and each waiter re-checks its own condition.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.buffer = bytearray()
        self.capacity_bytes = capacity_bytes
        self.closed = False
        #: Bytes a reader is waiting for right now: they may pile up beyond the capacity, as a
        #: real link's reader would be draining the kernel into its own buffer meanwhile.
        self.reader_wants_bytes = 0
        self.changed = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        self.changed.unpark_all()


class MemoryLink(Link):
    """One end of an in-memory pair: writes go to the peer's read pipe."""

    def __init__(self, rx: _Pipe, tx: _Pipe, description: str) -> None:
        self._rx = rx
        self._tx = tx
        self.description = description
        self._closed = False

    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        """Append ``data`` to the peer's pipe; waits while the pipe is over its capacity.

        ``zlp`` is ignored: a memory pipe has no packets. A chunk larger than the capacity goes
        in whole once the pipe has drained below it. The capacity grows by what the reader is
        waiting for, so a reader asking for more than the capacity never deadlocks a writer.
        """
        del zlp
        while True:
            if self._closed:
                raise DeviceGoneError(f"{self.description}: link closed")
            if self._tx.closed:
                raise DeviceGoneError(f"{self.description}: the other end closed the link")
            if len(self._tx.buffer) < self._tx.capacity_bytes + self._tx.reader_wants_bytes:
                break
            await self._tx.changed.park()
        self._tx.buffer += data
        self._tx.wake()
        # Shielded: once the bytes are in the pipe they were sent; a cancel here would lie.
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        """Take exactly ``size`` bytes from this end's pipe.

        Bytes the peer sent before closing are still delivered; DeviceGoneError only when the
        peer has closed and fewer than ``size`` bytes remain. ``timeout_s`` may be ``math.inf``.
        """
        if self._closed:
            raise DeviceGoneError(f"{self.description}: link closed")
        with trio.move_on_after(timeout_s):
            try:
                while len(self._rx.buffer) < size:
                    if self._rx.closed:
                        raise DeviceGoneError(
                            f"{self.description}: the other end closed the link "
                            f"({len(self._rx.buffer)} of {size} bytes came)"
                        )
                    if self._closed:
                        raise DeviceGoneError(f"{self.description}: link closed")
                    if self._rx.reader_wants_bytes != size:
                        self._rx.reader_wants_bytes = size
                        self._rx.wake()  # a sender waiting for room may go on
                    await self._rx.changed.park()
            finally:
                self._rx.reader_wants_bytes = 0
            data = bytes(self._rx.buffer[:size])
            del self._rx.buffer[:size]
            self._rx.wake()  # a sender may be waiting for room
            # Shielded: the bytes have left the pipe; a cancel now would lose them.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        raise TransportTimeout(
            f"{self.description}: {size} bytes did not come within {timeout_s:g} s "
            f"({len(self._rx.buffer)} came)"
        )

    async def aclose(self) -> None:
        """Close both directions: the peer reads what is buffered, then DeviceGoneError."""
        if self._closed:
            return
        self._closed = True
        self._tx.closed = True
        self._rx.closed = True
        self._tx.wake()
        self._rx.wake()
        await trio.lowlevel.checkpoint()


def memory_link_pair(
    *, capacity_bytes: int = DEFAULT_PIPE_BYTES, name: str = "memory"
) -> tuple[MemoryLink, MemoryLink]:
    """Two joined links: ``(host, device)``. What one sends, the other receives, in order."""
    to_device = _Pipe(capacity_bytes)
    to_host = _Pipe(capacity_bytes)
    host = MemoryLink(rx=to_host, tx=to_device, description=f"{name} (host end)")
    device = MemoryLink(rx=to_device, tx=to_host, description=f"{name} (device end)")
    return host, device


async def run_device(device_op: Op[T], link: Link, *, idle_timeout_s: float = math.inf) -> T:
    """Serve a device-side generator over ``link`` until it returns; returns its result.

    A device waits for its host as long as it takes, hence no timeout by default
    (``idle_timeout_s`` bounds each wait otherwise). The host closing the link ends the run
    with DeviceGoneError — from the simulator's side, "the host went away"; callers serving
    one session after another catch it. The generator is closed on every exit, so its
    ``finally`` blocks (a simulator releasing its flash image) run at once.
    """
    try:
        return await drive(device_op, link, timeout_s=idle_timeout_s)
    finally:
        device_op.close()
