"""A partition (or whole region) as a fixed-size file of bytes over the chunk cache.

Tiny on purpose: this is where "a partition is a byte range of a region" becomes bounds checks.
Reads past the end return nothing — never the next partition's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtkfs.cache import ChunkCache


@dataclass(frozen=True)
class Volume:
    """``size_bytes`` bytes of ``region`` starting at ``offset_bytes``.

    Attributes:
        name: partition (or region) name, for messages.
        region: the region it lives in.
        offset_bytes: start within the region.
        size_bytes: exposed size (never changes while mounted).
    """

    name: str
    region: str
    offset_bytes: int
    size_bytes: int

    async def read(self, cache: ChunkCache, offset_bytes: int, size_bytes: int) -> bytes:
        """Up to ``size_bytes`` from ``offset_bytes``; short at the end, empty past it."""
        if offset_bytes >= self.size_bytes or size_bytes <= 0:
            return b""
        size_bytes = min(size_bytes, self.size_bytes - offset_bytes)
        return await cache.read(
            self.region,
            self.offset_bytes + offset_bytes,
            size_bytes,
            limit_bytes=self.offset_bytes + self.size_bytes,
        )
