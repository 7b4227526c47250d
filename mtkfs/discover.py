"""Find the partition map of an opened source.

The parsers in :mod:`mtkfs.maps` are pure; this module feeds them bytes — read through the chunk
cache, so the sectors a probe touches are not fetched twice — and decides what wins:

1. The device's own table, probed on ``user`` (or the only region): GPT (primary, then backup)
   → MediaTek MBR + EBR chain → PMT.
2. ``--map FILE`` (repeatable): any format :mod:`mtkfs.maps.detect` knows. When given, these maps
   are what the mount shows; each disagreement with the device's table (1.) is a warning.
3. A preloader in ``boot1`` (an ``EMMC_BOOT``/``UFS_BOOT`` header) that no map places becomes
   the ``preloader`` partition, as SP Flash Tool and the phone's own kernel name it.

A corrupt GPT without ``--map`` is an error of its own (never "fixed", never silently replaced by
an MBR); finding nothing is :class:`NoMapError` with the fix in its message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import trio

from mtkfs.errors import CorruptMapError, MapError, NoMapError, SourceError
from mtkfs.maps.combine import cross_check, merge, names_unnamed_mbr
from mtkfs.maps.detect import parse_map_bytes, table_region_of
from mtkfs.maps.gpt import read_gpt
from mtkfs.maps.mbr import read_mbr
from mtkfs.maps.model import MapReader, Partition, PartitionMap, Region
from mtkfs.maps.names import unique_names
from mtkfs.maps.pmt import read_pmt

log = logging.getLogger(__name__)

AsyncRead = Callable[[str, int, int], Awaitable[bytes]]

#: A map file bigger than this is surely not a map.
MAX_MAP_FILE_BYTES = 64 << 20

#: First bytes of a boot region that holds a preloader (formats.md §8.4).
_PRELOADER_MAGICS = (b"EMMC_BOOT", b"UFS_BOOT", b"MMM\x01")


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


async def probe_region(region: Region, read: AsyncRead, boot: Region | None = None) -> PartitionMap:
    """GPT, then MBR/EBR, then PMT, on one region."""
    for make in (read_gpt, read_mbr):
        try:
            return await run_reader_async(make(region), read)
        except NoMapError as exc:
            log.debug("%s on %s: %s", make.__name__, region.name, exc)
    try:
        return await run_reader_async(read_pmt(region, boot_region=boot), read)
    except NoMapError as exc:
        log.debug("no PMT on %s: %s", region.name, exc)
    raise NoMapError(
        f"no partition table (GPT, MBR or PMT) found in region {region.name}; pass --map FILE "
        "(a scatter file, dumchar_info, /proc/mtd, boot log or mtdparts= text, or a table "
        "image), or --no-map to mount the whole regions only"
    )


async def load_map_file(path: Path, regions: Mapping[str, Region]) -> tuple[str, PartitionMap]:
    """(label, map) of one ``--map FILE``."""
    try:
        data = await trio.Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read map file {path}: {exc.strerror}") from exc
    if len(data) > MAX_MAP_FILE_BYTES:
        raise SourceError(f"map file {path} is {len(data)} bytes: too big to be a partition map")
    try:
        kind, pmap = parse_map_bytes(data, regions)
    except MapError as exc:
        raise type(exc)(f"map file {path}: {exc}") from exc
    label = f"{kind} {path.name}"
    return label, replace(pmap, origin=f"{pmap.origin} from {path.name}")


async def discover_map(
    regions: Mapping[str, Region],
    read: AsyncRead,
    *,
    map_files: Sequence[Path] = (),
    no_map: bool = False,
    device_table: PartitionMap | None = None,
    probe_limit_bytes: int | None = None,
) -> PartitionMap:
    """The partition map for a source; see the module docstring for the order.

    ``no_map`` (``--no-map``) skips every table: the mount then shows the whole regions only.
    ``device_table``: what the device reports by a command of its own (a DA's partition
    table): every disagreement with the map mtkfs uses becomes a warning, and it is the map
    when nothing else is found.
    ``probe_limit_bytes``: the most the table probes may ask for (a slow link's
    :attr:`~mtkfs.transports.base.Transport.probe_limit_bytes`); past it the search stops as
    if nothing were found — its error says to pass ``--map``.
    """
    if probe_limit_bytes is not None:
        read = _limited(read, probe_limit_bytes)
    if no_map:
        return PartitionMap((), "none (--no-map)")
    if device_table is None or not device_table.partitions:
        try:
            return await _discover(regions, read, map_files)
        except NoMapError:
            whole = await _bare_file_system(regions, read) if not map_files else None
            if whole is None:
                raise
            return whole
    try:
        pmap = await _discover(regions, read, map_files)
    except NoMapError as exc:
        note = f"no partition table on the flash ({exc}); using {device_table.origin}"
        return replace(device_table, warnings=(*device_table.warnings, note))
    if not pmap.partitions or pmap.origin.startswith("none"):
        return pmap
    named = names_unnamed_mbr(pmap, device_table)
    if named is not None and not map_files:
        note = (
            f"partition names from {device_table.origin}: it agrees with the {pmap.origin} on "
            f"all {len(pmap.partitions)} numbered partitions, and names the ones between"
        )
        return replace(named, warnings=(*named.warnings, note))
    warnings = cross_check(pmap, pmap.origin, device_table)
    return replace(pmap, warnings=(*pmap.warnings, *warnings)) if warnings else pmap


#: Kinds that make a table-less single image one partition (a system.img, a rootfs dump).
_FILE_SYSTEMS = frozenset({"ext4", "f2fs", "erofs", "squashfs", "vfat", "jffs2", "ubi"})


async def _bare_file_system(regions: Mapping[str, Region], read: AsyncRead) -> PartitionMap | None:
    """One region holding a file system and no partition table (``system.img``, an Android
    sparse system image, a jffs2 dump): that file system is the one partition, named after
    its label when it has a plain one, else after its kind."""
    from mtkfs.content.detect import HEAD_BYTES, detect

    if len(regions) != 1:
        return None
    region = next(iter(regions.values()))
    found = detect(await read(region.name, 0, min(HEAD_BYTES, region.size_bytes)))
    if found.kind not in _FILE_SYSTEMS:
        return None
    label = str(found.info.get("label", ""))
    name = label if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", label) else found.kind
    part = Partition(name, region.name, 0, region.size_bytes, origin="whole image")
    note = f"no partition table: the whole image is one {found.detail}"
    return PartitionMap((part,), f"none: the image is one {found.kind} file system", (note,))


def _limited(read: AsyncRead, limit_bytes: int) -> AsyncRead:
    """``read`` that refuses (NoMapError) once probes asked for more than ``limit_bytes``:
    scanning 10 MiB for a PMT is instant in an image and an hour over a 115200-baud console."""
    asked = 0

    async def limited(region: str, offset_bytes: int, size_bytes: int) -> bytes:
        nonlocal asked
        asked += size_bytes
        if asked > limit_bytes:
            raise NoMapError(
                f"stopped looking for a partition table after {limit_bytes} bytes: this link "
                "is too slow to scan the flash for one; pass --map FILE (a boot log with the "
                "MTD lines, mtdparts=, a scatter file…) or --no-map"
            )
        return await read(region, offset_bytes, size_bytes)

    return limited


async def _discover(
    regions: Mapping[str, Region], read: AsyncRead, map_files: Sequence[Path]
) -> PartitionMap:
    region = table_region_of(regions)
    table: PartitionMap | None = None
    corrupt: CorruptMapError | None = None
    if region is not None:
        try:
            table = await probe_region(region, read, regions.get("boot1"))
        except NoMapError:
            if not map_files:
                raise
        except CorruptMapError as exc:
            if not map_files:
                raise
            corrupt = exc
    elif not map_files:
        raise NoMapError(
            "no user-area readback (User / mmcblk0.img) in this source, so no partition table "
            "to read; add the User file, pass --map FILE, or --no-map to mount the regions only"
        )
    if not map_files:
        assert table is not None
        return await _with_preloader(table, regions, read)
    loaded = [await load_map_file(path, regions) for path in map_files]
    chosen = merge(loaded)
    label = " + ".join(lbl for lbl, _ in loaded)
    warnings = list(chosen.warnings)
    if table is not None:
        warnings.extend(cross_check(chosen, label, table))
    elif corrupt is not None:
        warnings.append(f"the device's own table is unusable ({corrupt}); {label} not checked")
    chosen = replace(chosen, warnings=tuple(warnings))
    return await _with_preloader(chosen, regions, read)


async def _with_preloader(
    pmap: PartitionMap, regions: Mapping[str, Region], read: AsyncRead
) -> PartitionMap:
    """Add ``preloader`` (all of boot1) when boot1 holds one and no map placed anything there."""
    boot = regions.get("boot1")
    if boot is None or any(p.region == "boot1" for p in pmap.partitions):
        return pmap
    head = await read("boot1", 0, 16)
    magic = next((m for m in _PRELOADER_MAGICS if head.startswith(m)), None)
    if magic is None:
        return pmap
    part = Partition(
        name="preloader",
        region="boot1",
        offset_bytes=0,
        size_bytes=boot.size_bytes,
        origin="boot-region",
        extra={"header": magic.decode("ascii", errors="replace").rstrip("\x01")},
    )
    parts = (part, *pmap.partitions)
    names = unique_names(p.name for p in parts)
    renamed = tuple(replace(p, name=n) for p, n in zip(parts, names, strict=True))
    return replace(pmap, partitions=renamed)


__all__ = ["discover_map", "load_map_file", "probe_region", "run_reader_async"]
