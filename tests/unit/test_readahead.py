"""Readahead: the planner's policy, and the cache prefetching in the background with it."""

from __future__ import annotations

import random

import trio
import trio.lowlevel
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cache import DATA, CountingTransport

from mtkfs.cache import ChunkCache
from mtkfs.readahead import ReadaheadPlanner

KiB = 1024


def planner() -> ReadaheadPlanner:
    return ReadaheadPlanner(initial_bytes=8 * KiB, max_bytes=64 * KiB, tolerance_bytes=8 * KiB)


def test_random_reads_prefetch_nothing() -> None:
    plan = planner()
    for offset in (0, 900 * KiB, 40 * KiB, 500 * KiB, 70 * KiB):
        assert plan.observe("user", offset, offset + 4 * KiB, 1 << 30) is None


def test_sequential_reads_grow_the_window_and_stay_ahead() -> None:
    plan = planner()
    assert plan.observe("user", 0, 4 * KiB, 1 << 30) is None  # first read: maybe random
    prefetches = []
    for offset in range(4 * KiB, 400 * KiB, 4 * KiB):
        step = plan.observe("user", offset, offset + 4 * KiB, 1 << 30)
        if step is not None:
            prefetches.append(step)
            # Always ahead of the reader, never overlapping what was already planned.
            assert step.start_bytes >= offset + 4 * KiB
            if len(prefetches) > 1:
                assert step.start_bytes == prefetches[-2].end_bytes
    sizes = [p.end_bytes - p.start_bytes for p in prefetches]
    assert sizes[0] < max(sizes) <= 64 * KiB  # grows, capped
    # Refills come in steps of at least half a window: few, big commands.
    assert len(prefetches) < 400 / 16


def test_prefetch_stops_at_the_limit() -> None:
    plan = planner()
    limit = 30 * KiB
    ends = []
    for offset in range(0, limit, 4 * KiB):
        step = plan.observe("user", offset, min(offset + 4 * KiB, limit), limit)
        if step is not None:
            ends.append(step.end_bytes)
    assert ends and max(ends) == limit


def test_streams_are_per_region_and_tolerate_reordering() -> None:
    plan = planner()
    plan.observe("user", 0, 4 * KiB, 1 << 30)
    plan.observe("boot1", 0, 4 * KiB, 1 << 30)
    # Kernel readahead requests may complete out of order: 8-12 KiB before 4-8 KiB.
    first = plan.observe("user", 8 * KiB, 12 * KiB, 1 << 30)
    assert first is not None
    late = plan.observe("user", 4 * KiB, 8 * KiB, 1 << 30)
    assert late is None or late.start_bytes >= first.end_bytes  # same stream, no re-fetch
    assert plan.observe("boot1", 4 * KiB, 8 * KiB, 1 << 30) is not None


async def read_sequentially(cache: ChunkCache, start: int, end: int, limit: int) -> bytes:
    out = []
    for offset in range(start, end, 4096):
        out.append(await cache.read("user", offset, min(4096, end - offset), limit_bytes=limit))
        await trio.sleep(0.001)  # the reader consumes; readahead runs meanwhile
    return b"".join(out)


async def test_cache_prefetches_in_the_background(autojump_clock: trio.testing.MockClock) -> None:
    transport = CountingTransport(DATA, delay_s=0.01)
    cache = ChunkCache(
        transport,
        chunk_bytes=4096,
        max_bytes=1 << 20,
        max_request_bytes=32768,
        readahead_max_bytes=32768,
        readahead_min_stream_bytes=16384,
    )
    async with trio.open_nursery() as nursery:
        cache.start(nursery)
        data = await read_sequentially(cache, 0, 48 * 1024, len(DATA))
    assert data == DATA[: 48 * 1024]
    stats = cache.stats.total()
    assert stats.readahead_hits > 6
    assert stats.prefetch_bytes > 0
    # Commands are bigger than one chunk: readahead coalesces.
    assert max(size for _, size in transport.calls) > 4096
    assert all(size <= 32768 for _, size in transport.calls)


async def test_readahead_stops_at_partition_and_region_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = CountingTransport(DATA, delay_s=0.001)
    cache = ChunkCache(
        transport,
        chunk_bytes=4096,
        max_bytes=1 << 20,
        readahead_max_bytes=64 * 1024,
        readahead_min_stream_bytes=8192,
    )
    partition_end = 8 * 4096
    async with trio.open_nursery() as nursery:
        cache.start(nursery)
        await read_sequentially(cache, 0, partition_end, partition_end)
    assert max(off + size for off, size in transport.calls) <= partition_end
    # And at the region's end (the last chunk is short).
    transport.calls.clear()
    region_end = len(DATA)
    start = region_end - 10 * 4096
    async with trio.open_nursery() as nursery:
        cache.start(nursery)
        data = await read_sequentially(cache, start, region_end, region_end)
    assert data == DATA[start:]
    assert max(off + size for off, size in transport.calls) <= region_end


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(DATA)), st.integers(1, 20000)), min_size=1, max_size=60),
    st.integers(0, 12),
)
def test_eviction_never_exceeds_the_byte_budget(
    reads: list[tuple[int, int]], budget_chunks: int
) -> None:
    async def main() -> None:
        transport = CountingTransport(DATA)
        budget = budget_chunks * 4096 + random.randint(0, 4095)
        cache = ChunkCache(
            transport,
            chunk_bytes=4096,
            max_bytes=budget,
            readahead_max_bytes=16384,
            readahead_min_stream_bytes=8192,
        )
        async with trio.open_nursery() as nursery:
            cache.start(nursery)
            for offset, size in reads:
                assert await cache.read("user", offset, size) == DATA[offset : offset + size]
                assert cache.cached_bytes <= budget
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
        assert cache.cached_bytes <= budget

    trio.run(main)
