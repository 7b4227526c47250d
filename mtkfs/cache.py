"""Chunk cache: region bytes in fixed, aligned chunks, LRU-bounded, one fetch per chunk at a time.

Theory of operation (the full spec is docs/cache.md):

* Keys are ``(region, chunk_index)`` — never partitions — so a different partition map never
  needs an invalidation, and two partition files over the same bytes share them.
* Clean chunks live in a ``cachetools.LRUCache`` bounded in bytes (``getsizeof=len``). Evicting a
  clean chunk is always safe: the device still has it.
* Single flight: a miss registers a ``trio.Event`` in ``_inflight`` before it awaits the
  transport. A second reader of the same chunk waits on that event instead of fetching again.
  If the fetch fails the event is still set; the waiter finds no chunk, claims it and tries
  itself (and usually gets the same error, which is what it should report).
* Adjacent missing chunks of one request are fetched with **one** transport read: per-command
  latency dominates on real links (USB DA, adb, a serial console), so fewer, bigger commands
  win. The last chunk of a region may be short.
* Only trio tasks touch these dictionaries; transports may use threads internally but never see
  the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import cachetools
import trio

from mtkfs.errors import OutOfRangeError
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

ChunkKey = tuple[str, int]


@dataclass
class CacheStats:
    """Counters for ``.mtkfs/status.json`` and the benchmarks.

    Attributes:
        hits: chunk lookups served from memory.
        misses: chunk lookups that needed the transport (or waited for a fetch under way).
        transport_reads: read commands sent to the transport.
        transport_bytes: bytes the transport returned.
    """

    hits: int = 0
    misses: int = 0
    transport_reads: int = 0
    transport_bytes: int = 0


class ChunkCache:
    """Read-through cache of region chunks over a :class:`Transport`."""

    def __init__(self, transport: Transport, *, chunk_bytes: int, max_bytes: int) -> None:
        if chunk_bytes <= 0 or chunk_bytes & (chunk_bytes - 1):
            raise ValueError(f"chunk size must be a power of two, not {chunk_bytes}")
        self.transport = transport
        self.chunk_bytes = chunk_bytes
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        # A cache smaller than one chunk stores nothing; reads still work (pass-through).
        self._lru: cachetools.LRUCache[ChunkKey, bytes] = cachetools.LRUCache(
            maxsize=max(max_bytes, 1), getsizeof=len
        )
        self._inflight: dict[ChunkKey, trio.Event] = {}

    @property
    def cached_bytes(self) -> int:
        """Bytes currently held."""
        return int(self._lru.currsize)

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """Bytes of ``region`` in ``[offset, offset + size)``, cut short at the region's end."""
        region_size = self.transport.regions[region].size_bytes
        if offset_bytes < 0 or size_bytes < 0:
            raise OutOfRangeError(f"negative range {offset_bytes}+{size_bytes} in {region}")
        end = min(offset_bytes + size_bytes, region_size)
        if end <= offset_bytes:
            return b""
        first = offset_bytes // self.chunk_bytes
        last = (end - 1) // self.chunk_bytes
        chunks = await self._chunks(region, first, last)
        data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        start = offset_bytes - first * self.chunk_bytes
        return data[start : start + (end - offset_bytes)]

    async def _chunks(self, region: str, first: int, last: int) -> list[bytes]:
        """Chunks ``first..last`` (inclusive) of ``region``, fetching the missing ones."""
        found: dict[int, bytes] = {}
        while len(found) < last - first + 1:
            claimed: list[int] = []
            waiting: list[trio.Event] = []
            for index in range(first, last + 1):
                if index in found:
                    continue
                key = (region, index)
                chunk = self._lru.get(key)
                if chunk is not None:
                    self.stats.hits += 1
                    found[index] = chunk
                elif key in self._inflight:
                    self.stats.misses += 1
                    waiting.append(self._inflight[key])
                else:
                    self.stats.misses += 1
                    self._inflight[key] = trio.Event()
                    claimed.append(index)
            try:
                for run_first, run_last in _runs(claimed):
                    found.update(await self._fetch_run(region, run_first, run_last))
            finally:
                # A failed (or cancelled) run must not leave later claims for others to wait on.
                self._release(region, claimed)
            for event in waiting:
                await event.wait()
            # Chunks fetched by others are picked up (or re-claimed) on the next pass.
        return [found[i] for i in range(first, last + 1)]

    async def _fetch_run(self, region: str, first: int, last: int) -> dict[int, bytes]:
        """Fetch chunks ``first..last`` with one transport read; always releases the claims."""
        try:
            offset = first * self.chunk_bytes
            size = (last - first + 1) * self.chunk_bytes
            region_size = self.transport.regions[region].size_bytes
            size = min(size, region_size - offset)
            data = await self.transport.read(region, offset, size)
            self.stats.transport_reads += 1
            self.stats.transport_bytes += len(data)
            if len(data) != size:
                # The region is smaller than the transport said: a truncated file, a device that
                # lied. Never pad with zeros — report it.
                raise OutOfRangeError(
                    f"{region}: asked for {size} bytes at {offset:#x}, got {len(data)}"
                )
            out: dict[int, bytes] = {}
            for i, index in enumerate(range(first, last + 1)):
                chunk = data[i * self.chunk_bytes : (i + 1) * self.chunk_bytes]
                out[index] = chunk
                if len(chunk) <= self.max_bytes:
                    self._lru[(region, index)] = chunk
            return out
        finally:
            self._release(region, range(first, last + 1))

    def _release(self, region: str, indices: Iterable[int]) -> None:
        """Drop our claims on these chunks and wake whoever waits for them."""
        for index in indices:
            event = self._inflight.pop((region, index), None)
            if event is not None:
                event.set()


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Group sorted chunk indices into inclusive runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs
