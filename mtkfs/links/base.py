"""The link contract, and the driver that runs a sans-I/O operation over a link.

A link moves bytes and knows nothing about protocols (DESIGN.md). Protocol operations
(:mod:`mtkfs.protocols.base`) say *what* to send and how much to read; :func:`drive` does it over
a :class:`Link` with a timeout per read, turning a silent device into a TransportTimeout instead
of a hang.
"""

from __future__ import annotations

import abc
from typing import TypeVar

from mtkfs.protocols.base import Op, Recv, Send

T = TypeVar("T")


class Link(abc.ABC):
    """A bidirectional byte stream to one device.

    Attributes:
        description: one human line (``USB 0e8d:0003 bus 1 port 4``, ``/dev/ttyACM0``).
        max_packet_bytes: the USB bulk packet size (512 at high speed); 0 where packets do not
            exist (serial, pty, memory).
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

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the link; idempotent."""


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
