"""GeneratorLink: a device generator as the far end of a link, stepped inline."""

from __future__ import annotations

import pytest

from mtkfs.errors import DeviceGoneError, TransportTimeout
from mtkfs.links.base import drive
from mtkfs.protocols.base import Op, Recv, Send
from mtkfs.testing.simlink import GeneratorLink


def doubler(rounds: int) -> Op[object]:
    """Device: read a u32 count, answer that many bytes of 0x5A, ``rounds`` times, then leave."""
    for _ in range(rounds):
        size = yield Recv(4)
        assert size is not None
        yield Send(b"\x5a" * int.from_bytes(size, "little"))
    return None


def ask(size: int) -> Op[bytes]:
    yield Send(size.to_bytes(4, "little"))
    data = yield Recv(size)
    assert data is not None
    return data


async def test_round_trips_and_large_payloads() -> None:
    link = GeneratorLink(doubler(3))
    assert await drive(ask(3), link) == b"ZZZ"
    assert await drive(ask(8 << 20), link) == b"\x5a" * (8 << 20)
    assert link.received_bytes == 3 + (8 << 20)


async def test_a_device_that_leaves_is_gone() -> None:
    link = GeneratorLink(doubler(1))
    await drive(ask(1), link)
    with pytest.raises(DeviceGoneError):
        await drive(ask(1), link)


async def test_a_silent_device_times_out_at_once() -> None:
    def silent() -> Op[object]:
        yield Recv(100)
        return None

    link = GeneratorLink(silent())
    with pytest.raises(TransportTimeout, match="0 of 4 bytes"):
        await drive(ask(4), link)
