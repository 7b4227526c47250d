"""``/proc/dumchar_info``: the partition list of MTK's MBR-era eMMC and NAND phones, as text.

Why this table matters: on MT65xx kernels (2.6.35–3.10) it is the only place that names every
partition — the MBR/EBR chain only knows the ext4/FAT ones, by number — and users have it from
``adb shell cat /proc/dumchar_info``, recovery logs and forum posts. Its numbers are in the
driver's *logical* address space (formats.md §1.3), which is exactly a ``mmcblk0`` readback, so
offsets are used as printed, except for three quirks handled here:

* ``MapTo`` decides the region: ``/dev/misc-sd`` is the eMMC boot partition (``boot1``),
  ``/dev/block/mmcblk0[pN]`` the user area, ``/dev/mtd/mtdN`` raw NAND (``flash``).
* On NAND rows (Type 1) the StartAddr column is the MTD *index*, not an address: offsets are the
  sizes added up in index order.
* ``bmtpool``/``otp`` starts are MTK's "reserved from the end" markers ``0xFFFF0000 | n``, from
  which the driver has often subtracted the MBR's linear start (``0xfebf00a8`` =
  ``0xFFFF00A8 − 0x1400000``). Such a number is never an offset: it is undone and the area is
  placed ``n × 128 KiB`` before the end of its region, or listed without being shown.

Pure text in, :class:`PartitionMap` out; every problem becomes a warning in plain words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mtkfs.errors import CorruptMapError, NoMapError
from mtkfs.maps import names
from mtkfs.maps.model import (
    Partition,
    PartitionMap,
    Region,
    is_reserved_marker,
    place,
    reserved_size_bytes,
)

#: One table row: name, size, start, type and an optional MapTo, with 8 or 16 hex digits (the
#: driver's two printf shapes). Used with ``match`` after any log prefix; whitespace-separated
#: tokens, so no catastrophic backtracking.
_ROW = re.compile(
    r"\s*(\S+)\s+0x([0-9A-Fa-f]{16}|[0-9A-Fa-f]{8})\s+0x([0-9A-Fa-f]{16}|[0-9A-Fa-f]{8})"
    r"\s+([12])(?:\s+(\S+))?\s*$"
)
#: Kernel-log decorations a copied row may carry: ``<5>``, ``[   12.345678]`` (bounded).
_LOG_PREFIX = re.compile(r"^\s*(?:<[0-9]{1,2}>)?\s*(?:\[[^\]]{0,40}\]\s*){0,3}")
_MMCBLK0_PART = re.compile(r"^/dev/block/mmcblk0p([1-9][0-9]{0,5})$")
_MTD_DEVICE = re.compile(r"^/dev/(?:mtd/mtd|mtd|mtdblock)([0-9]{1,5})$")

TYPE_NAND = 1
TYPE_EMMC = 2
#: More rows than this is not a phone's partition table; refuse rather than build a huge map.
MAX_ROWS = 1024
#: On Type-1 rows StartAddr is an MTD index when every value is below this (formats.md §1.2).
MAX_MTD_INDEX = 1024
SECTOR_BYTES = 512
#: Where MT65xx chips put the MBR in the linear address space; the driver subtracts it from
#: user-area StartAddr values, reserved markers included (formats.md §1.3/§1.4).
MBR_LINEAR_STARTS_BYTES = (0x1400000, 0x600000)

_FIXED_MAPTO = {
    "/dev/misc-sd": "boot1",
    "/dev/block/mmcblk0": "user",
    "/dev/block/mmcblk0boot0": "boot1",
    "/dev/block/mmcblk0boot1": "boot2",
}


@dataclass(frozen=True)
class _Row:
    """One table row as printed."""

    line_number: int
    raw_name: str
    size_bytes: int
    start: int
    type: int
    mapto: str | None


@dataclass
class _Target:
    """Where a row lives, decided from its MapTo (or the row before it)."""

    region: str
    number: int | None = None
    mtd_index: int | None = None
    warning: str | None = None


def looks_like_dumchar(text: str) -> bool:
    """True when at least one line is a dumchar_info row (header and trailer are optional)."""
    return any(_match_row(line) is not None for line in text.splitlines())


def parse_dumchar(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """The partitions a dumchar_info table declares, placed in the regions the source has.

    Raises:
        NoMapError: no line of ``text`` is a dumchar_info row.
        CorruptMapError: more than :data:`MAX_ROWS` rows.
    """
    map_warnings: list[str] = []
    rows = _rows(text, map_warnings)
    preloader_bytes = next(
        (
            row.size_bytes
            for row in rows
            if row.raw_name.lower() == "preloader" and row.mapto == "/dev/misc-sd"
        ),
        0,
    )
    targets = _targets(rows)
    offsets = _nand_offsets(rows, targets, map_warnings)
    cleaned = names.unique_names(
        names.clean_name(row.raw_name, f"row{row.line_number}") for row in rows
    )
    parts: list[Partition] = []
    placed: list[Partition] = []  # those whose offset is a real one, for the checks below
    for row, target, name in zip(rows, targets, cleaned, strict=True):
        extra: dict[str, Any] = {"type": row.type, "start_raw": row.start, "line": row.line_number}
        if row.mapto is not None:
            extra["mapto"] = row.mapto
        if target.mtd_index is not None:
            extra["mtd_index"] = target.mtd_index
        part = Partition(
            name=name,
            region=target.region,
            offset_bytes=offsets.get(row.line_number, row.start),
            size_bytes=row.size_bytes,
            number=target.number,
            origin="dumchar",
            extra=extra,
            warnings=(target.warning,) if target.warning else (),
        )
        marker = _reserved_marker(row, target.region, preloader_bytes)
        if marker is not None:
            part, real = _place_reserved(part, row, marker, regions)
        else:
            part, real = place(part, regions), True
        if part.exposed and part.size_bytes == 0:
            part = replace(part, exposed=False).with_warning(
                "declares a size of 0 bytes; nothing to expose"
            )
        parts.append(part)
        if real:
            placed.append(part)
    map_warnings.extend(overlap_warnings(placed))
    map_warnings.extend(
        f"{part.name}: starts at {part.offset_bytes:#x} in {part.region}, not a multiple of "
        f"{SECTOR_BYTES} bytes (flash is read in whole sectors); used as printed"
        for part in placed
        if part.offset_bytes % SECTOR_BYTES and "reserved_marker" not in part.extra
    )
    return PartitionMap(tuple(parts), f"dumchar_info ({len(rows)} rows)", tuple(map_warnings))


def overlap_warnings(partitions: Iterable[Partition]) -> list[str]:
    """Plain-words warnings for partitions of one region whose declared ranges overlap.

    Why only warn: an overlap is usually the table's own doing (MTK's ``fat`` runs over the
    bmtpool) and both areas are still worth reading; the user must just know the files share
    bytes. A sweep over sorted starts keeps this O(n log n) for hostile tables.
    """
    by_region: dict[str, list[Partition]] = {}
    for part in partitions:
        if _declared(part) > 0:
            by_region.setdefault(part.region, []).append(part)
    warnings: list[str] = []
    for region in sorted(by_region):
        widest: Partition | None = None
        widest_end = 0
        for part in sorted(by_region[region], key=lambda p: (p.offset_bytes, _declared(p))):
            end = part.offset_bytes + _declared(part)
            if widest is not None and part.offset_bytes < widest_end:
                warnings.append(
                    f"{part.name} ({part.offset_bytes:#x}..{end:#x}) overlaps {widest.name} "
                    f"({widest.offset_bytes:#x}..{widest_end:#x}) in {region}; both are listed "
                    "as declared, so their files share those bytes"
                )
            if end > widest_end:
                widest, widest_end = part, end
    return warnings


def _declared(part: Partition) -> int:
    return part.size_bytes if part.declared_size_bytes is None else part.declared_size_bytes


def _match_row(line: str) -> re.Match[str] | None:
    prefix = _LOG_PREFIX.match(line)
    return _ROW.match(line, prefix.end() if prefix else 0)


def _rows(text: str, warnings: list[str]) -> list[_Row]:
    """The table's rows. A row repeating an earlier one exactly is dropped: logs often hold the
    table more than once (one copy per boot), and two files of the same bytes help nobody."""
    rows: list[_Row] = []
    seen: set[tuple[Any, ...]] = set()
    repeated = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        match = _match_row(line)
        if match is None:
            continue
        if match.groups() in seen:
            repeated += 1
            continue
        seen.add(match.groups())
        if len(rows) >= MAX_ROWS:
            raise CorruptMapError(
                f"more than {MAX_ROWS} dumchar_info rows: not a phone's partition table"
            )
        raw_name, size_hex, start_hex, type_digit, mapto = match.groups()
        rows.append(
            _Row(line_number, raw_name, int(size_hex, 16), int(start_hex, 16), int(type_digit),
                 mapto)
        )  # fmt: skip
    if not rows:
        raise NoMapError(
            "no dumchar_info rows (NAME 0xSIZE 0xSTART TYPE [MAPTO], 8 or 16 hex digits)"
        )
    if repeated:
        warnings.append(
            f"{repeated} rows repeat earlier ones exactly (the text holds the table more than "
            "once?); each is listed once"
        )
    return rows


def _targets(rows: list[_Row]) -> list[_Target]:
    """Each row's region from its MapTo; a row without one lives where the row before it does."""
    targets: list[_Target] = []
    previous = "user"
    for row in rows:
        target = _target_of(row, previous)
        targets.append(target)
        previous = target.region
    return targets


def _target_of(row: _Row, previous_region: str) -> _Target:
    if row.mapto is None:
        return _Target("flash" if row.type == TYPE_NAND else previous_region)
    fixed = _FIXED_MAPTO.get(row.mapto)
    if fixed is not None:
        return _Target(fixed)
    if match := _MMCBLK0_PART.match(row.mapto):
        return _Target("user", number=int(match.group(1)))
    if match := _MTD_DEVICE.match(row.mapto):
        return _Target("flash", mtd_index=int(match.group(1)))
    # An SD card (mmcblk1) or something newer: a region of its own, which no source provides.
    region = names.clean_name(row.mapto, "unknown")
    shown = names.clean_name(row.mapto, "?")
    return _Target(
        region, warning=f"MapTo {shown} is not a device mtkfs knows; kept in a region of its own"
    )


def _nand_offsets(rows: list[_Row], targets: list[_Target], warnings: list[str]) -> dict[int, int]:
    """Offsets (by line number) of NAND rows whose StartAddr is an MTD index, not an address.

    The MTD index order is the order of the partitions on the chip, so the offsets are the sizes
    added up in that order. Only when every Type-1 start is a small number (a later, disabled
    driver version printed real addresses, which are then used as they are).
    """
    nand = [
        (row, target)
        for row, target in zip(rows, targets, strict=True)
        if row.type == TYPE_NAND and target.region == "flash" and not is_reserved_marker(row.start)
    ]
    if not nand or any(row.start >= MAX_MTD_INDEX for row, _ in nand):
        return {}
    for row, target in nand:
        if target.mtd_index is None:
            target.mtd_index = row.start
        elif target.mtd_index != row.start:
            target.warning = (
                f"StartAddr says MTD index {row.start} but MapTo says mtd{target.mtd_index}; "
                "the MapTo number is used"
            )
    order = sorted(nand, key=lambda pair: pair[1].mtd_index or 0)
    offsets: dict[int, int] = {}
    offset_bytes = 0
    seen: dict[int, str] = {}
    for row, target in order:
        index = target.mtd_index or 0
        if row.size_bytes and index in seen:
            warnings.append(
                f"{row.raw_name[:64]!r} and {seen[index]!r} both claim MTD index {index}; "
                "offsets after them are a guess"
            )
        if row.size_bytes:
            seen[index] = row.raw_name[:64]
        offsets[row.line_number] = offset_bytes
        offset_bytes += row.size_bytes
    warnings.append(
        "NAND (Type 1) rows give MTD indexes, not addresses: their offsets in flash are the "
        "sizes added up in index order (this assumes no gaps between partitions)"
    )
    return offsets


def _reserved_marker(row: _Row, region: str, preloader_bytes: int) -> tuple[int, int] | None:
    """``(marker, linear start added back)`` when the row's start is a reserved-from-end marker.

    As printed, or after adding back a plausible MBR linear start the driver subtracted from a
    user-area row. Adding one back is only believed when the Size column agrees with the
    marker (or is 0, as in tables whose driver printed no size).
    """
    if is_reserved_marker(row.start):
        return row.start, 0
    if region != "user":
        return None
    candidates = (preloader_bytes, *MBR_LINEAR_STARTS_BYTES)
    for linear_start in dict.fromkeys(c for c in candidates if c > 0):
        marker = row.start + linear_start
        if is_reserved_marker(marker) and row.size_bytes in (0, reserved_size_bytes(marker)):
            return marker, linear_start
    return None


def _place_reserved(
    part: Partition, row: _Row, found: tuple[int, int], regions: Mapping[str, Region]
) -> tuple[Partition, bool]:
    """Put a reserved-from-end row at the end of its region: ``(partition, offset is real)``."""
    marker, linear_start = found
    size_bytes = reserved_size_bytes(marker)
    how = f"start {row.start:#x} is MTK's reserved-from-the-end marker {marker:#x}"
    if linear_start:
        how = (
            f"start {row.start:#x} is MTK's reserved-from-the-end marker {marker:#x} minus the "
            f"MBR's linear start {linear_start:#x}, which the driver subtracted"
        )
    how += f" ({marker & 0xFFFF:#x} blocks of 128 KiB = {size_bytes:#x} bytes)"
    extra = {**part.extra, "reserved_marker": marker, "reserved_bytes": size_bytes}
    if linear_start:
        extra["mbr_linear_start"] = linear_start
    if row.size_bytes not in (0, size_bytes):
        how += f"; the Size column says {row.size_bytes:#x}, the marker's size is used"
    part = replace(part, offset_bytes=0, size_bytes=size_bytes, extra=extra)
    region = regions.get(part.region)
    if region is None:
        return place(
            part.with_warning(f"{how}; it lies at the end of {part.region}"), regions
        ), False
    if size_bytes > region.size_bytes:
        return replace(
            part,
            size_bytes=0,
            declared_size_bytes=size_bytes,
            exposed=False,
            warnings=(
                *part.warnings,
                f"{how}, but {part.region} is only {region.size_bytes:#x} bytes; not exposed",
            ),
        ), False
    offset_bytes = region.size_bytes - size_bytes
    part = replace(part, offset_bytes=offset_bytes).with_warning(
        f"{how}: placed at the end of {part.region}, at {offset_bytes:#x}"
    )
    return place(part, regions), True
