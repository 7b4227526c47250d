"""Sequential-stream detection: when to fetch ahead, and how much.

Pure logic (no I/O, no trio), so the policy can be tested exactly. The cache reports every read
it serves; the planner answers with the byte range to prefetch, if any.

Policy (Linux's on-demand readahead, simplified, measured in bytes of a region):

* A *stream* is a run of reads that each start where the previous one ended, give or take
  ``tolerance_bytes``: the kernel issues its readahead requests asynchronously, so consecutive
  requests of one reader can arrive slightly out of order.
* Nothing is prefetched until a stream has consumed ``min_stream_bytes`` — bytes actually read,
  not the span it covers: ext4 metadata read through a loop mount comes in short bursts with
  gaps (bitmaps, inode tables) that must not drag in megabytes, and a small file read whole
  should cost its own size, not a window more.
* The window is proportional to what the stream has consumed — never more than it has read so
  far, between ``initial_bytes`` and ``max_bytes``. So a 3 MiB file read sequentially costs at
  most about 3 MiB of overshoot, while a multi-GB copy quickly runs with the largest window.
* The planner keeps the stream's prefetched end ahead of the reader and refills only when less
  than half a window is left, in one step up to a full window: few, big commands, and the link
  always has the next one queued while the reader consumes the previous one.
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
    ahead_end_bytes: int
    consumed_bytes: int


@dataclass(frozen=True)
class Prefetch:
    """Bytes ``[start_bytes, end_bytes)`` of ``region`` should be fetched in the background."""

    region: str
    start_bytes: int
    end_bytes: int


class ReadaheadPlanner:
    """Tracks streams and plans prefetches. See the module docstring for the policy."""

    def __init__(
        self,
        *,
        initial_bytes: int,
        max_bytes: int,
        tolerance_bytes: int,
        min_stream_bytes: int = 0,
    ) -> None:
        self.initial_bytes = initial_bytes
        self.max_bytes = max(max_bytes, initial_bytes)
        self.tolerance_bytes = tolerance_bytes
        self.min_stream_bytes = min_stream_bytes
        self._streams: list[_Stream] = []

    def observe(
        self, region: str, offset_bytes: int, end_bytes: int, limit_bytes: int
    ) -> Prefetch | None:
        """A read of ``[offset, end)`` was served; what to prefetch (None when nothing)."""
        stream = self._find(region, offset_bytes)
        if stream is None:
            stream = _Stream(region, end_bytes, end_bytes, end_bytes - offset_bytes)
            self._streams.insert(0, stream)
            del self._streams[MAX_STREAMS:]
            return None
        self._streams.remove(stream)
        self._streams.insert(0, stream)
        # Count bytes actually read, not the span: metadata reads with gaps between them
        # (ext4 bitmaps, inode tables) are not a stream worth fetching ahead of.
        stream.consumed_bytes += max(0, end_bytes - max(offset_bytes, stream.next_bytes))
        stream.next_bytes = max(stream.next_bytes, end_bytes)
        if stream.consumed_bytes < max(self.min_stream_bytes, 1):
            return None
        window = min(max(stream.consumed_bytes, self.initial_bytes), self.max_bytes)
        reader = stream.next_bytes
        ahead = max(stream.ahead_end_bytes, reader)
        target = min(reader + window, limit_bytes)
        if ahead - reader > window // 2 or target <= ahead:
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
