"""Chunk cache: region bytes in fixed, aligned chunks — LRU in memory, optionally on disk.

Theory of operation (the spec, with invariants and failure modes, is docs/cache.md):

* Keys are ``(region, chunk_index)`` — never partitions — so a different partition map never
  needs an invalidation, and two files over the same bytes share them.
* Clean chunks live in a ``cachetools.LRUCache`` bounded in bytes (``getsizeof=len``). Evicting a
  clean chunk is always safe: the device (or the disk cache) still has it.
* Single flight: a task that misses a chunk *claims* it — registers a ``trio.Event`` in
  ``_inflight`` — before it awaits anything. Others wait on that event instead of fetching again.
  The claimant always releases (sets the event) in a ``finally``; a waiter that then finds no
  chunk (the fetch failed, or it was evicted at once) claims it itself.
* Adjacent missing chunks are fetched with **one** transport command, up to the transport's
  ``max_request_bytes``: per-command latency dominates on real links.
* Readahead (:mod:`mtkfs.readahead`): sequential readers get the next window fetched by a
  background task while they consume the current one. Prefetch stops at the end of the
  partition being read (``limit_bytes``) and at the end of the region.
* Persistent cache (``--cache-dir``, :mod:`mtkfs.diskcache`): chunks fetched from the device are
  stored on disk; a later session loads them instead of asking the device — after revalidating
  each run of them with the device's own checksum (one short command), or without that only when
  the user said ``--trust-cache``. A chunk whose stored CRC does not match is refetched.
* Writes (:mod:`mtkfs.commit`) keep their chunks in ``dirty``, an overlay consulted before the
  LRU and never evicted. Once a chunk verified on the device the commit pipeline hands it back
  with :meth:`ChunkCache.committed`; a fetch that was already under way when that happened must
  not put the older bytes back, so every commit bumps an epoch and a fetch stores only chunks not
  committed since it started.
* Only trio tasks touch these dictionaries; transports and the disk cache may use threads
  internally but never see them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cachetools
import trio

from mtkfs.diskcache import DiskCache
from mtkfs.errors import OutOfRangeError
from mtkfs.readahead import ReadaheadPlanner
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

ChunkKey = tuple[str, int]


@dataclass
class RegionStats:
    """Counters of one region (``.mtkfs/stats.json``).

    Attributes:
        hits: chunk lookups served from memory.
        misses: chunk lookups that had to wait for a fetch (own, another reader's, readahead).
        readahead_hits: memory hits on chunks that readahead fetched before anyone asked.
        transport_reads: read commands sent to the transport.
        transport_bytes: bytes the transport returned.
        prefetch_bytes: of those, bytes fetched by readahead.
        disk_hits: chunks loaded from the persistent cache instead of the device.
        disk_revalidations: checksum commands used to revalidate persisted chunks.
        disk_rejected: persisted chunks refetched (stale per the device, or corrupt on disk).
    """

    hits: int = 0
    misses: int = 0
    readahead_hits: int = 0
    transport_reads: int = 0
    transport_bytes: int = 0
    prefetch_bytes: int = 0
    disk_hits: int = 0
    disk_revalidations: int = 0
    disk_rejected: int = 0


@dataclass
class CacheStats:
    """All counters: per region, plus totals on demand."""

    regions: dict[str, RegionStats] = field(default_factory=dict)

    def of(self, region: str) -> RegionStats:
        """The counters of ``region`` (created on first use)."""
        stats = self.regions.get(region)
        if stats is None:
            stats = self.regions[region] = RegionStats()
        return stats

    def total(self) -> RegionStats:
        """Sum over regions."""
        total = RegionStats()
        for stats in self.regions.values():
            for name, value in vars(stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: totals at the top, per region below."""
        return {**vars(self.total()), "per_region": {r: vars(s) for r, s in self.regions.items()}}


class _ChunkLRU(cachetools.LRUCache[ChunkKey, bytes]):
    """The LRU, telling the cache which chunks it evicts (to forget readahead bookkeeping)."""

    def __init__(self, maxsize: int, evicted: set[ChunkKey]) -> None:
        super().__init__(maxsize=maxsize, getsizeof=len)
        self._evicted = evicted

    def popitem(self) -> tuple[ChunkKey, bytes]:
        key, value = super().popitem()
        self._evicted.discard(key)
        return key, value


class ChunkCache:
    """Read-through cache of region chunks over a :class:`Transport`.

    Call :meth:`start` with a nursery to enable readahead (without one, e.g. for ``mtkfs ls``,
    every read is fetched on demand only).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        chunk_bytes: int,
        max_bytes: int,
        max_request_bytes: int | None = None,
        readahead_max_bytes: int = 0,
        readahead_min_stream_bytes: int | None = None,
        disk: DiskCache | None = None,
        trust_disk: bool = False,
    ) -> None:
        if chunk_bytes <= 0 or chunk_bytes & (chunk_bytes - 1):
            raise ValueError(f"chunk size must be a power of two, not {chunk_bytes}")
        self.transport = transport
        self.chunk_bytes = chunk_bytes
        self.max_bytes = max_bytes
        request_bytes = (
            transport.max_request_bytes if max_request_bytes is None else max_request_bytes
        )
        self.max_request_chunks = max(1, request_bytes // chunk_bytes)
        self.stats = CacheStats()
        self.disk = disk
        self.trust_disk = trust_disk
        self._inflight: dict[ChunkKey, trio.Event] = {}
        #: Chunks readahead fetched that no reader has used yet (for ``readahead_hits``).
        self._prefetched: set[ChunkKey] = set()
        # A cache smaller than one chunk stores nothing; reads still work (pass-through).
        self._lru = _ChunkLRU(max(max_bytes, 1), self._prefetched)
        self._planner = ReadaheadPlanner(
            initial_bytes=2 * chunk_bytes,
            # Never prefetch more than a quarter of the memory budget ahead of a reader.
            max_bytes=min(readahead_max_bytes, max_bytes // 4),
            tolerance_bytes=2 * max(chunk_bytes, 1 << 20),
            # Only a stream that has read this much gets readahead (see mtkfs.readahead).
            min_stream_bytes=max(4 * chunk_bytes, 8 << 20)
            if readahead_min_stream_bytes is None
            else readahead_min_stream_bytes,
        )
        self._readahead = readahead_max_bytes >= chunk_bytes
        self._nursery: trio.Nursery | None = None
        #: Written, not yet committed chunks (owned by :class:`mtkfs.commit.WriteBack`).
        self.dirty: dict[ChunkKey, bytearray] = {}
        self._epoch = 0
        self._committed_at: dict[ChunkKey, int] = {}

    def committed(self, key: ChunkKey, data: bytes) -> None:
        """``data`` is now what the device holds for chunk ``key`` (verified): cache it."""
        self._epoch += 1
        self._committed_at[key] = self._epoch
        self._prefetched.discard(key)
        if len(data) <= self.max_bytes:
            self._lru[key] = data

    def forget(self, key: ChunkKey) -> None:
        """Drop the clean copy of ``key`` (after a failed write: the device may hold anything)."""
        self._epoch += 1
        self._committed_at[key] = self._epoch
        self._lru.pop(key, None)
        self._prefetched.discard(key)

    def start(self, nursery: trio.Nursery) -> None:
        """Run readahead fetches as background tasks of ``nursery``."""
        self._nursery = nursery

    @property
    def cached_bytes(self) -> int:
        """Bytes currently held in memory."""
        return int(self._lru.currsize)

    async def read(
        self,
        region: str,
        offset_bytes: int,
        size_bytes: int,
        *,
        limit_bytes: int | None = None,
        readahead: bool = True,
    ) -> bytes:
        """Bytes of ``region`` in ``[offset, offset + size)``, cut short at the region's end.

        ``limit_bytes`` bounds readahead: the end of the partition the caller reads.
        ``readahead=False``: fetch only what is asked (the old bytes of chunks being written:
        a writer's stream says nothing about what anyone will read next).
        """
        region_size = self.transport.regions[region].size_bytes
        if offset_bytes < 0 or size_bytes < 0:
            raise OutOfRangeError(f"negative range {offset_bytes}+{size_bytes} in {region}")
        end = min(offset_bytes + size_bytes, region_size)
        if end <= offset_bytes:
            return b""
        first = offset_bytes // self.chunk_bytes
        last = (end - 1) // self.chunk_bytes
        chunks = await self._chunks(region, first, last)
        if readahead and self._readahead and self._nursery is not None:
            limit = region_size if limit_bytes is None else min(limit_bytes, region_size)
            plan = self._planner.observe(region, offset_bytes, end, limit)
            if plan is not None:
                self._prefetch(region, plan.start_bytes, plan.end_bytes)
        start = offset_bytes - first * self.chunk_bytes
        if len(chunks) == 1:
            data = chunks[0]
            return (
                data
                if start == 0 and len(data) == end - offset_bytes
                else (data[start : start + (end - offset_bytes)])
            )
        return b"".join(chunks)[start : start + (end - offset_bytes)]

    # -- fetching --------------------------------------------------------------------------------

    async def _chunks(self, region: str, first: int, last: int) -> list[bytes]:
        """Chunks ``first..last`` (inclusive) of ``region``, fetching the missing ones."""
        stats = self.stats.of(region)
        found: dict[int, bytes] = {}
        while len(found) < last - first + 1:
            claimed: list[int] = []
            waiting: list[trio.Event] = []
            for index in range(first, last + 1):
                if index in found:
                    continue
                key = (region, index)
                dirty = self.dirty.get(key)
                if dirty is not None:
                    stats.hits += 1
                    found[index] = bytes(dirty)
                    continue
                chunk = self._lru.get(key)
                if chunk is not None:
                    stats.hits += 1
                    if key in self._prefetched:
                        self._prefetched.discard(key)
                        stats.readahead_hits += 1
                    found[index] = chunk
                elif key in self._inflight:
                    stats.misses += 1
                    waiting.append(self._inflight[key])
                else:
                    stats.misses += 1
                    self._inflight[key] = trio.Event()
                    claimed.append(index)
            try:
                for run_first, run_last in _runs(claimed, self.max_request_chunks):
                    found.update(await self._fetch_run(region, run_first, run_last))
            finally:
                # A failed (or cancelled) run must not leave later claims for others to wait on.
                self._release(region, claimed)
            for event in waiting:
                await event.wait()
            # Chunks fetched by others are picked up (or re-claimed) on the next pass.
        return [found[i] for i in range(first, last + 1)]

    def _prefetch(self, region: str, start_bytes: int, end_bytes: int) -> None:
        """Claim the missing chunks of a byte range now; fetch them in the background."""
        assert self._nursery is not None
        first = start_bytes // self.chunk_bytes
        last = (end_bytes - 1) // self.chunk_bytes
        claimed = [
            i
            for i in range(first, last + 1)
            if (region, i) not in self._lru and (region, i) not in self._inflight
        ]
        if not claimed:
            return
        for index in claimed:
            self._inflight[(region, index)] = trio.Event()
        self._nursery.start_soon(self._prefetch_task, region, claimed)

    async def _prefetch_task(self, region: str, claimed: list[int]) -> None:
        try:
            for run_first, run_last in _runs(claimed, self.max_request_chunks):
                fetched = await self._fetch_run(region, run_first, run_last, prefetch=True)
                self._prefetched.update((region, i) for i in fetched)
        except Exception as exc:  # a reader will fetch it again and report the error
            log.debug("readahead of %s failed: %s", region, exc)
        finally:
            self._release(region, claimed)

    async def _fetch_run(
        self, region: str, first: int, last: int, *, prefetch: bool = False
    ) -> dict[int, bytes]:
        """Chunks ``first..last``: from the disk cache where valid, else one transport read."""
        out: dict[int, bytes] = {}
        started = self._epoch
        if self.disk is not None:
            out.update(await self._from_disk(region, first, last))
        for run_first, run_last in _runs([i for i in range(first, last + 1) if i not in out]):
            out.update(await self._from_transport(region, run_first, run_last, prefetch))
        for index, chunk in out.items():
            key = (region, index)
            if self._committed_at.get(key, 0) > started:
                # Committed while we fetched: our bytes may predate it. The read that asked
                # began before the write finished, so it may have them; the cache may not.
                continue
            if len(chunk) <= self.max_bytes:
                self._lru[key] = chunk
        return out

    async def _from_transport(
        self, region: str, first: int, last: int, prefetch: bool
    ) -> dict[int, bytes]:
        offset = first * self.chunk_bytes
        size = min((last - first + 1) * self.chunk_bytes, self._region_size(region) - offset)
        log.debug("fetch %s %#x+%#x%s", region, offset, size, " (readahead)" if prefetch else "")
        data = await self.transport.read(region, offset, size)
        stats = self.stats.of(region)
        stats.transport_reads += 1
        stats.transport_bytes += len(data)
        if prefetch:
            stats.prefetch_bytes += len(data)
        if len(data) != size:
            # The region is smaller than the transport said: a truncated file, a device that
            # lied. Never pad with zeros — report it.
            raise OutOfRangeError(
                f"{region}: asked for {size} bytes at {offset:#x}, got {len(data)}"
            )
        if self.disk is not None:
            await self.disk.store(region, first, data)
        cb = self.chunk_bytes
        return {
            index: data[(index - first) * cb : (index - first + 1) * cb]
            for index in range(first, last + 1)
        }

    async def _from_disk(self, region: str, first: int, last: int) -> dict[int, bytes]:
        """Persisted chunks of the run that are still valid (see the module docstring)."""
        assert self.disk is not None
        if not any(self.disk.present(region, i) for i in range(first, last + 1)):
            return {}
        loaded = await self.disk.load(region, first, last)
        stats = self.stats.of(region)
        if not loaded:
            return {}
        if self.trust_disk:
            stats.disk_hits += len(loaded)
            return loaded
        valid: dict[int, bytes] = {}
        for run_first, run_last in _runs(sorted(loaded)):
            run = b"".join(loaded[i] for i in range(run_first, run_last + 1))
            stats.disk_revalidations += 1
            device_crc = await self.transport.checksum(
                region, run_first * self.chunk_bytes, len(run)
            )
            if device_crc is not None and device_crc == zlib.crc32(run):
                valid.update((i, loaded[i]) for i in range(run_first, run_last + 1))
            else:
                stats.disk_rejected += run_last - run_first + 1
        stats.disk_hits += len(valid)
        return valid

    def _region_size(self, region: str) -> int:
        return self.transport.regions[region].size_bytes

    def _release(self, region: str, indices: Iterable[int]) -> None:
        """Drop our claims on these chunks and wake whoever waits for them."""
        for index in indices:
            event = self._inflight.pop((region, index), None)
            if event is not None:
                event.set()


def _runs(indices: Iterable[int], max_chunks: int = 1 << 30) -> list[tuple[int, int]]:
    """Group sorted chunk indices into inclusive runs of consecutive numbers, each at most
    ``max_chunks`` long."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index - 1 and index - runs[-1][0] < max_chunks:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs
