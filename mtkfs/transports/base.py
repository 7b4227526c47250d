"""The transport contract: a device seen as a few regions of bytes.

A transport is "protocol + link = block device of regions" (DESIGN.md). Everything above it — the
chunk cache, the partition views, FUSE — only ever asks for byte ranges of named regions, so a
readback image, a Download Agent session and a U-Boot console are interchangeable. Retries live
inside transports and nowhere else.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

from mtkfs.maps.model import Region


class Transport(abc.ABC):
    """A source of region bytes.

    Attributes:
        regions: the regions this device has, by name.
        device_id: a stable identifier (for fsname, logs and the persistent cache).
        description: one human line: what this is.
        chunk_bytes: the natural unit to fetch in; the cache aligns to it.
        mtime_s: a timestamp to show as the partition files' mtime.
        writable: whether :meth:`write` may be called at all.
    """

    regions: Mapping[str, Region]
    device_id: str
    description: str
    chunk_bytes: int
    mtime_s: float
    writable: bool = False

    @abc.abstractmethod
    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """Bytes of ``region`` from ``offset_bytes``; shorter only where the region ends."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the device; idempotent."""
