"""A link whose other end is a device-side generator, run inline: no threads, no tasks.

Why: a simulated phone is a generator following :mod:`mtkfs.protocols.base` (it yields Send and
Recv like the host does). Running it *inside* the link — stepping it whenever the host sends or
wants bytes — makes ``sim:`` sources and protocol tests deterministic and free of scheduling:
the device answers exactly when, and only when, the protocol lets it. A device generator that
finishes is a device that went away (``DeviceGoneError`` on the next read); one that waits for
bytes the host never sends while the host waits too is a stalled device (``TransportTimeout``,
immediately — there is nobody else who could make progress).

Its twin for a simulator behind a real link (a pty, a serial port) is
:func:`mtkfs.links.base.run_device`, which serves the same generator from its own task.
"""

from __future__ import annotations

from collections.abc import Callable

from mtkfs.errors import DeviceGoneError, TransportTimeout
from mtkfs.links.base import Link
from mtkfs.protocols.base import Op, Recv, Send


class GeneratorLink(Link):
    """The host's end of a link to ``device`` (a device-side generator)."""

    def __init__(
        self,
        device: Op[object],
        description: str = "simulated device",
        *,
        on_close: Callable[[], None] | None = None,
        reenumerate: Callable[[], Op[object]] | None = None,
    ) -> None:
        """``reenumerate``: the device generator that goes on after the device left the bus
        and came back (a USB speed switch); None for a link that cannot follow that."""
        self.description = description
        self._on_close = on_close
        self._reenumerate = reenumerate
        self.can_reenumerate = reenumerate is not None
        self._device: Op[object] | None = device
        self._request: Send | Recv | None = None
        self._to_device = bytearray()
        self._to_host = bytearray()
        self.received_bytes = 0
        self._started = False

    @property
    def _gone(self) -> bool:
        """The device generator ended (or the link was closed) after it had started."""
        return self._device is None and self._started

    def _step(self) -> None:
        """Run the device until it waits for bytes the host has not sent yet (or ends)."""
        if self._device is None:
            return
        try:
            if not self._started:
                self._started = True
                self._request = next(self._device)
            while True:
                request = self._request
                if isinstance(request, Send):
                    self._to_host += request.data
                    reply: bytes | None = None
                elif isinstance(request, Recv) and len(self._to_device) >= request.size:
                    reply = bytes(self._to_device[: request.size])
                    del self._to_device[: request.size]
                else:
                    return
                self._request = self._device.send(reply)
        except StopIteration:
            self._device = None
            self._request = None

    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        """Hand ``data`` to the device and let it run (``zlp`` is ignored: no packets)."""
        del zlp
        if self._gone:
            raise DeviceGoneError(f"{self.description}: disconnected")
        self._to_device += data
        self._step()

    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        self._step()
        if len(self._to_host) < size:
            if self._gone:
                raise DeviceGoneError(
                    f"{self.description}: disconnected ({len(self._to_host)} of {size} bytes)"
                )
            raise TransportTimeout(
                f"{self.description}: no answer ({len(self._to_host)} of {size} bytes came)"
            )
        data = bytes(self._to_host[:size])
        del self._to_host[:size]
        self.received_bytes += size
        return data

    async def reenumerated(self, timeout_s: float) -> Link:
        """A new link to the same simulated device, continuing with ``reenumerate()``."""
        if self._reenumerate is None:
            return await super().reenumerated(timeout_s)
        on_close, self._on_close = self._on_close, None  # the device lives on
        await self.aclose()
        return GeneratorLink(
            self._reenumerate(),
            self.description,
            on_close=on_close,
            reenumerate=self._reenumerate,
        )

    async def aclose(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None
            self._started = True
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
