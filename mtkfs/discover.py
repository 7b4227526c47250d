"""Find the partition map of an opened source.

The parsers in :mod:`mtkfs.maps` are pure generators; this module feeds them bytes — read through
the chunk cache, so the sectors a probe touches are not fetched twice — and decides the order:

1. ``--map FILE`` when given: a partition-table image (a PGPT dump, or the first MiBs of the user
   area: GPT or MBR; later versions add text maps) applied to the ``user`` region (or the only
   region).
2. otherwise, on ``user`` (or a single ``flash`` region): GPT (primary, then backup), then MTK
   MBR + EBR chain.

A corrupt GPT is an error of its own (it is never "fixed" or silently replaced by an MBR);
finding nothing at all is :class:`NoMapError` with the fix in its message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import trio

from mtkfs.errors import NoMapError, SourceError
from mtkfs.maps.gpt import read_gpt
from mtkfs.maps.mbr import read_mbr
from mtkfs.maps.model import MapReader, Need, PartitionMap, Region

log = logging.getLogger(__name__)

AsyncRead = Callable[[str, int, int], Awaitable[bytes]]

#: A ``--map FILE`` table image bigger than this is surely not a table image.
_MAX_MAP_FILE_BYTES = 64 << 20


async def run_reader_async(reader: MapReader, read: AsyncRead) -> PartitionMap:
    """Drive a sans-I/O map parser with an async ``read(region, offset, size)``."""
    try:
        need = next(reader)
        while True:
            data = await read(need.region, need.offset_bytes, need.size_bytes)
            need = reader.send(data)
    except StopIteration as stop:
        result: PartitionMap = stop.value
        return result


def table_region(regions: Mapping[str, Region]) -> Region:
    """The region that carries the partition table: ``user``, or the only region there is."""
    if "user" in regions:
        return regions["user"]
    if len(regions) == 1:
        return next(iter(regions.values()))
    raise NoMapError(
        "no user-area readback (User / mmcblk0.img) in this source, so no partition table to "
        "read; add the User file, or pass --no-map to mount the regions only"
    )


async def probe_region(region: Region, read: AsyncRead) -> PartitionMap:
    """GPT first, then MBR/EBR, on one region."""
    try:
        return await run_reader_async(read_gpt(region), read)
    except NoMapError as gpt_error:
        log.debug("no GPT on %s: %s", region.name, gpt_error)
    try:
        return await run_reader_async(read_mbr(region), read)
    except NoMapError as mbr_error:
        log.debug("no MBR on %s: %s", region.name, mbr_error)
    raise NoMapError(
        f"no partition table (GPT or MBR) found in region {region.name}; pass --map FILE with "
        "the device's partition table, or --no-map to mount the whole regions only"
    )


async def discover_map(
    regions: Mapping[str, Region], read: AsyncRead, *, map_file: Path | None = None
) -> PartitionMap:
    """The partition map for a source; see the module docstring for the order."""
    region = table_region(regions)
    if map_file is None:
        return await probe_region(region, read)
    try:
        table = (await trio.Path(map_file).read_bytes())[:_MAX_MAP_FILE_BYTES]
    except OSError as exc:
        raise SourceError(f"cannot read map file {map_file}: {exc.strerror}") from exc

    async def read_table(_region: str, offset_bytes: int, size_bytes: int) -> bytes:
        return table[offset_bytes : offset_bytes + size_bytes]

    try:
        pmap = await probe_region(region, read_table)
    except NoMapError as exc:
        raise NoMapError(
            f"{map_file}: not a partition table image I understand (GPT or MBR expected)"
        ) from exc
    return PartitionMap(pmap.partitions, f"{pmap.origin} from {map_file}", pmap.warnings)


__all__ = ["Need", "discover_map", "probe_region", "run_reader_async", "table_region"]
