"""Sequential-stream detection: when to fetch ahead, and how much.

Pure logic (no I/O, no trio), so the policy can be tested exactly. The cache reports every read
it serves; the planner answers with the byte range to prefetch, if any.

Policy (Linux's on-demand readahead, simplified, measured in bytes of a region):

* A *stream* is a run of reads that each start where the previous one ended, give or take
  ``tolerance_bytes``: the kernel issues its readahead requests asynchronously, so consecutive
  requests of one reader can arrive slightly out of order.
* The first read of a stream prefetches nothing: a lone random read (ext4 metadata under a loop
  mount) must not drag in megabytes. From the second sequential read on, the window starts at
  ``initial_bytes`` and doubles on every further sequential read up to ``max_bytes``.
* The planner keeps the stream's prefetched end at least one window ahead of the reader and
  refills in steps of at least half a window, so the link always has a big command queued
  (per-command latency amortised) while the reader consumes the previous one.
* Prefetch never crosses ``limit_bytes`` — the end of the partition being read (or the region).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Streams remembered at once (concurrent sequential readers: cp of several partitions).
MAX_STREAMS = 16


@dataclass
class _Stream:
    region: str
    next_bytes: int
    window_bytes: int
    ahead_end_bytes: int
    sequential_reads: int = 0


@dataclass(frozen=True)
class Prefetch:
    """Bytes ``[start_bytes, end_bytes)`` of ``region`` should be fetched in the background."""

    region: str
    start_bytes: int
    end_bytes: int


class ReadaheadPlanner:
    """Tracks streams and plans prefetches. See the module docstring for the policy."""

    def __init__(self, *, initial_bytes: int, max_bytes: int, tolerance_bytes: int) -> None:
        self.initial_bytes = initial_bytes
        self.max_bytes = max(max_bytes, initial_bytes)
        self.tolerance_bytes = tolerance_bytes
        self._streams: list[_Stream] = []

    def observe(
        self, region: str, offset_bytes: int, end_bytes: int, limit_bytes: int
    ) -> Prefetch | None:
        """A read of ``[offset, end)`` was served; what to prefetch (None when nothing)."""
        stream = self._find(region, offset_bytes)
        if stream is None:
            stream = _Stream(region, end_bytes, self.initial_bytes, end_bytes)
            self._streams.insert(0, stream)
            del self._streams[MAX_STREAMS:]
            return None
        self._streams.remove(stream)
        self._streams.insert(0, stream)
        stream.sequential_reads += 1
        if stream.sequential_reads > 1:
            stream.window_bytes = min(stream.window_bytes * 2, self.max_bytes)
        stream.next_bytes = max(stream.next_bytes, end_bytes)
        reader_bytes = stream.next_bytes
        ahead = max(stream.ahead_end_bytes, reader_bytes)
        target = min(reader_bytes + stream.window_bytes, limit_bytes)
        step = max(stream.window_bytes // 2, 1)
        if target <= ahead or (target - ahead < step and target < limit_bytes):
            return None
        stream.ahead_end_bytes = target
        return Prefetch(region, ahead, target)

    def _find(self, region: str, offset_bytes: int) -> _Stream | None:
        for stream in self._streams:
            if (
                stream.region == region
                and abs(offset_bytes - stream.next_bytes) <= self.tolerance_bytes
            ):
                return stream
        return None
