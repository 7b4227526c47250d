"""Chunk cache: correct bytes, single flight, coalesced misses, bounded memory, failures."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mtkfs.cache import ChunkCache
from mtkfs.errors import DeviceGoneError, OutOfRangeError
from mtkfs.maps.model import Region
from mtkfs.transports.base import Transport


class CountingTransport(Transport):
    """An in-memory region that counts commands and can stall or fail on demand."""

    def __init__(self, data: bytes, *, delay_s: float = 0.0) -> None:
        self.data = data
        self.regions = {"user": Region("user", len(data))}
        self.device_id = "memory"
        self.description = "memory"
        self.chunk_bytes = 4096
        self.mtime_s = 0.0
        self.delay_s = delay_s
        self.calls: list[tuple[int, int]] = []
        self.fail = False

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        self.calls.append((offset_bytes, size_bytes))
        await trio.sleep(self.delay_s)
        if self.fail:
            raise DeviceGoneError("unplugged")
        return self.data[offset_bytes : offset_bytes + size_bytes]

    async def aclose(self) -> None:
        return None


DATA = bytes((i * 7 + i // 4096) & 0xFF for i in range(64 * 1024 + 100))


async def test_reads_match_source_at_any_offset() -> None:
    cache = ChunkCache(CountingTransport(DATA), chunk_bytes=4096, max_bytes=1 << 20)
    for offset, size in [(0, 1), (4095, 2), (100, 20000), (60000, 99999), (len(DATA) - 1, 5)]:
        assert await cache.read("user", offset, size) == DATA[offset : offset + size]
    assert await cache.read("user", len(DATA), 10) == b""
    assert await cache.read("user", len(DATA) + 5000, 10) == b""


async def test_second_read_is_a_hit_and_misses_are_coalesced() -> None:
    transport = CountingTransport(DATA)
    cache = ChunkCache(transport, chunk_bytes=4096, max_bytes=1 << 20)
    await cache.read("user", 0, 5 * 4096)
    assert transport.calls == [(0, 5 * 4096)]  # five missing chunks, one command
    await cache.read("user", 4096, 4096)
    assert len(transport.calls) == 1
    assert cache.stats.total().hits == 1
    # A request with a hole in the middle: only the missing run is fetched.
    await cache.read("user", 4 * 4096, 4 * 4096)
    assert transport.calls[-1] == (5 * 4096, 3 * 4096)


async def test_32_concurrent_readers_share_one_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = CountingTransport(DATA, delay_s=1.0)
    cache = ChunkCache(transport, chunk_bytes=4096, max_bytes=1 << 20)
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await cache.read("user", 8192, 100))

    async with trio.open_nursery() as nursery:
        for _ in range(32):
            nursery.start_soon(reader)
    assert results == [DATA[8192:8292]] * 32
    assert transport.calls == [(8192, 4096)]  # exactly one fetch


async def test_memory_is_bounded_and_lru() -> None:
    transport = CountingTransport(DATA)
    cache = ChunkCache(transport, chunk_bytes=4096, max_bytes=3 * 4096)
    for index in range(10):
        await cache.read("user", index * 4096, 1)
    assert cache.cached_bytes <= 3 * 4096
    calls = len(transport.calls)
    await cache.read("user", 9 * 4096, 1)  # most recent: still cached
    assert len(transport.calls) == calls
    await cache.read("user", 0, 1)  # oldest: evicted
    assert len(transport.calls) == calls + 1


async def test_cache_smaller_than_a_chunk_still_reads() -> None:
    cache = ChunkCache(CountingTransport(DATA), chunk_bytes=4096, max_bytes=0)
    assert await cache.read("user", 5000, 9000) == DATA[5000:14000]


async def test_failure_wakes_waiters_and_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = CountingTransport(DATA, delay_s=1.0)
    transport.fail = True
    cache = ChunkCache(transport, chunk_bytes=4096, max_bytes=1 << 20)
    errors: list[Exception] = []

    async def reader() -> None:
        try:
            await cache.read("user", 0, 3 * 4096)
        except DeviceGoneError as exc:
            errors.append(exc)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(reader)
    assert len(errors) == 4
    # Nothing stays claimed: once the device is back, reads work.
    transport.fail = False
    assert await cache.read("user", 0, 3 * 4096) == DATA[: 3 * 4096]


async def test_short_transport_answer_is_an_error_not_zeros() -> None:
    transport = CountingTransport(DATA)
    transport.regions = {"user": Region("user", len(DATA) + 8192)}  # claims more than it has
    cache = ChunkCache(transport, chunk_bytes=4096, max_bytes=1 << 20)
    with pytest.raises(OutOfRangeError):
        await cache.read("user", len(DATA), 100)


def test_chunk_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ChunkCache(CountingTransport(DATA), chunk_bytes=3000, max_bytes=1 << 20)
