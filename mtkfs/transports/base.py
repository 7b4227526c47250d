"""The transport contract: a device seen as a few regions of bytes.

A transport is "protocol + link = block device of regions" (DESIGN.md). Everything above it — the
chunk cache, the partition views, FUSE — only ever asks for byte ranges of named regions, so a
readback image, a Download Agent session and a U-Boot console are interchangeable. Retries live
inside transports and nowhere else.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from mtkfs.errors import ReadOnlyError
from mtkfs.maps.model import PartitionMap, Region


class Transport(abc.ABC):
    """A source of region bytes.

    Attributes:
        regions: the regions this device has, by name.
        device_id: a stable identifier (for fsname, logs and the persistent cache).
        description: one human line: what this is.
        chunk_bytes: the natural unit to fetch in; the cache aligns to it.
        max_request_bytes: the most one read command should ask for (coalesced misses and
            readahead are split into commands of at most this size).
        readahead_max_bytes: how far ahead of a sequential reader to fetch, at most; 0 = never.
        has_checksum: :meth:`checksum` works (the persistent cache can revalidate chunks).
        kernel_readahead_bytes: the largest read the kernel should send the mount at once: big
            where per-request overhead dominates (a local image), about one chunk where the
            link is the limit (a kernel readahead past the end of a small file costs link time).
        mtime_s: a timestamp to show as the partition files' mtime.
        writable: whether :meth:`write` may be called at all (the source was opened for
            writing: only ``-o rw`` mounts and ``mtkfs journal`` commands do that).
        write_unit_bytes: the erase/program unit; writes are whole multiples of it, aligned.
    """

    regions: Mapping[str, Region]
    device_id: str
    description: str
    chunk_bytes: int
    mtime_s: float
    max_request_bytes: int = 8 << 20
    readahead_max_bytes: int = 8 << 20
    has_checksum: bool = False
    kernel_readahead_bytes: int = 128 << 10
    writable: bool = False
    write_unit_bytes: int = 512
    #: The most the partition-table probes may ask for (None: no limit). A slow link (a
    #: serial console) sets it so that mounting never scans megabytes for a table.
    probe_limit_bytes: int | None = None

    @abc.abstractmethod
    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """Bytes of ``region`` from ``offset_bytes``; shorter only where the region ends."""

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """Store ``data`` at ``offset_bytes`` of ``region`` durably (aligned to the write unit).

        Returning means the device accepted the data, not that it holds it: the commit
        pipeline verifies every write with :meth:`read_back` or :meth:`checksum`.
        """
        raise ReadOnlyError(f"{self.description} cannot be written")

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """Bytes as the device holds them now, bypassing every cache on the way (for verify).

        Transports whose :meth:`read` already asks the device each time need not override it.
        """
        return await self.read(region, offset_bytes, size_bytes)

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        """CRC-32 (zlib's) of a byte range computed *on the device*, or None if unsupported.

        Why: on a slow link (a U-Boot console moves ~2.8 KB/s) asking the device for a checksum
        costs one short command, so chunks kept in the persistent cache from an earlier session
        can be revalidated instead of read again. Transports without such a command return None
        and their cached chunks are trusted only with ``--trust-cache``.
        """
        return None

    async def digest(
        self, region: str, offset_bytes: int, size_bytes: int
    ) -> tuple[str, bytes] | None:
        """``(hashlib name, digest)`` of a byte range computed *on the device*, or None.

        Why: verifying a write by the device's own hash (a phone's ``sha256sum``) moves a few
        dozen bytes instead of the data; the range is read from the flash, not from a cache.
        """
        return None

    def stats(self) -> dict[str, int | float]:
        """Transport-level counters for ``.mtkfs/stats.json`` (commands, bytes, link time)."""
        return {}

    def device_report(self) -> dict[str, Any]:
        """What the device said about itself, for ``mtkfs info`` and ``.mtkfs/status.json``
        (chip, mode, security, protocol…); empty for sources that are just files."""
        return {}

    async def device_table(self) -> PartitionMap | None:
        """The partition table the device reports by a command of its own (a DA's
        READ-PARTITION-TABLE), to cross-check the one read from the flash; None if it has none.
        """
        return None

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the device; idempotent."""


class WrappingTransport(Transport):
    """A transport that stands in front of another one (link model, fault injection).

    Starts out as ``inner`` in every respect — attributes copied, every method forwarded — so a
    wrapper overrides only what it changes.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.regions = inner.regions
        self.device_id = inner.device_id
        self.description = inner.description
        self.chunk_bytes = inner.chunk_bytes
        self.mtime_s = inner.mtime_s
        self.max_request_bytes = inner.max_request_bytes
        self.readahead_max_bytes = inner.readahead_max_bytes
        self.has_checksum = inner.has_checksum
        self.kernel_readahead_bytes = inner.kernel_readahead_bytes
        self.writable = inner.writable
        self.write_unit_bytes = inner.write_unit_bytes

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        return await self.inner.read(region, offset_bytes, size_bytes)

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        return await self.inner.read_back(region, offset_bytes, size_bytes)

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        return await self.inner.checksum(region, offset_bytes, size_bytes)

    async def digest(
        self, region: str, offset_bytes: int, size_bytes: int
    ) -> tuple[str, bytes] | None:
        return await self.inner.digest(region, offset_bytes, size_bytes)

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        await self.inner.write(region, offset_bytes, data)

    def stats(self) -> dict[str, int | float]:
        return self.inner.stats()

    def device_report(self) -> dict[str, Any]:
        return self.inner.device_report()

    async def device_table(self) -> PartitionMap | None:
        return await self.inner.device_table()

    async def aclose(self) -> None:
        await self.inner.aclose()
