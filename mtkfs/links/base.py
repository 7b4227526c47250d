"""The link contract, and the drivers that run a sans-I/O operation over a link.

A link moves bytes and knows nothing about protocols (DESIGN.md). Protocol operations
(:mod:`mtkfs.protocols.base`) say *what* to send and how much to read; :func:`drive` does it over
a :class:`Link` with a timeout per read, turning a silent device into a TransportTimeout instead
of a hang. :func:`run_device` is its device-side twin: it serves a simulator's generator (the
same Send/Recv convention) over any link, so one simulator answers a host over a pty or a real
serial port alike (``python -m mtkfs.testing.sim_mtk``).
"""

from __future__ import annotations

import abc
import math
from typing import TypeVar

from mtkfs.errors import TransportError
from mtkfs.protocols.base import Op, Recv, Send

T = TypeVar("T")


class Link(abc.ABC):
    """A bidirectional byte stream to one device.

    Attributes:
        description: one human line (``USB 0e8d:0003 bus 1 port 4``, ``/dev/ttyACM0``).
        max_packet_bytes: the USB bulk packet size (512 at high speed); 0 where packets do not
            exist (serial, pty, an inline simulator).
    """

    description: str
    max_packet_bytes: int = 0

    @abc.abstractmethod
    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        """Write all of ``data`` (then a zero-length packet if ``zlp`` and the link has packets)."""

    @abc.abstractmethod
    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        """Read exactly ``size`` bytes; TransportTimeout if they do not come within
        ``timeout_s`` (measured from the call), DeviceGoneError if the link closed."""

    async def recv_some(self, max_bytes: int, timeout_s: float) -> bytes:
        """At least one byte and at most ``max_bytes``: whatever has come. For streams without
        framing (a console's text); TransportTimeout if nothing comes within ``timeout_s``.

        This default reads one byte at a time; links with a receive buffer return it whole.
        """
        del max_bytes
        return await self.recv_exactly(1, timeout_s)

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the link; idempotent."""

    async def reenumerated(self, timeout_s: float) -> Link:
        """The device went off the bus and came back (a USB speed switch): close this link and
        return one to the same device, without any protocol exchange. Links that cannot
        (ttys, ptys) raise TransportError; :attr:`can_reenumerate` says which."""
        raise TransportError(f"{self.description}: this link cannot follow a re-enumeration")

    #: Whether :meth:`reenumerated` can work (USB links, simulators that model it).
    can_reenumerate: bool = False


async def drive(op: Op[T], link: Link, *, timeout_s: float = 5.0) -> T:
    """Run a protocol operation over ``link``; returns its result."""
    try:
        request = next(op)
    except StopIteration as stop:  # nothing to exchange (a 0-byte read)
        done: T = stop.value
        return done
    while True:
        if isinstance(request, Send):
            await link.send(request.data, zlp=request.zlp)
            reply: bytes | None = None
        else:
            assert isinstance(request, Recv)
            reply = await link.recv_exactly(request.size, timeout_s)
        try:
            request = op.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result


async def run_device(device_op: Op[T], link: Link, *, idle_timeout_s: float = math.inf) -> T:
    """Serve a device-side generator over ``link`` until it returns; returns its result.

    A device waits for its host as long as it takes, hence no timeout by default
    (``idle_timeout_s`` bounds each wait otherwise). The link going away ends the run with
    DeviceGoneError — from the simulator's side, "the host went away"; callers serving one
    session after another catch it. The generator is closed on every exit, so its ``finally``
    blocks (a simulator releasing its flash image) run at once.
    """
    try:
        return await drive(device_op, link, timeout_s=idle_timeout_s)
    finally:
        device_op.close()
