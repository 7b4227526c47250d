"""Helpers for protocol tests that run a host operation against a simulated device."""

from __future__ import annotations

from mtkfs.protocols.base import Op, Send


def recording(op: Op[object], sends: list[Send]) -> Op[object]:
    """``op``, with every Send it makes appended to ``sends`` (to assert the exact wire bytes)."""
    request = next(op)
    while True:
        if isinstance(request, Send):
            sends.append(request)
        reply = yield request
        try:
            request = op.send(reply)
        except StopIteration as stop:
            return stop.value
