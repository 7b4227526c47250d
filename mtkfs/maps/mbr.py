"""MBR + EBR reader with Linux kernel semantics: the partition map of MTK's MBR-era eMMC.

Why our own walker: MTK's ``ptgen`` puts up to *three* logical partitions in each EBR (plus the
link), which util-linux fdisk/sfdisk drop ("Ignoring extra data in partition table 5") and other
libraries number differently. What counts on these phones is what the Linux kernel
(``block/partitions/msdos.c``) made of the table, because ``/proc/dumchar_info``, ``/proc/emmc``
and the phone's fstab all name ``mmcblk0pN``. So this walker follows the kernel:

* primaries are ``p1``..``p4`` by slot position (an extended slot is the container and is not
  shown, but still uses its number); logicals are numbered from ``p5`` in chain order;
* in every EBR, every slot with a non-zero sector count that is not itself a link is a logical
  partition, its start relative to *that* EBR; slots 3 and 4 must also fit the EBR's and the
  extended partition's extents (the kernel's guard against garbage there);
* the link slot points to the next EBR relative to the *first* EBR (the extended base);
* MTK's "to the end of the device" sector counts (0xFFFFFFFF, or 0xFFFFFFFF minus the start
  relative to the first EBR) are clamped to the region quietly.

Sectors are 512 bytes (MBR-era MTK is eMMC only). It is a sans-I/O generator, see
:mod:`mtkfs.maps.model`.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from dataclasses import dataclass, field

from mtkfs.errors import NoMapError
from mtkfs.maps.model import MapReader, Need, Partition, PartitionMap, Region, clamp_to_region

SECTOR_BYTES = 512
BOOT_SIGNATURE = b"\x55\xaa"
SIGNATURE_OFFSET_BYTES = 510
TABLE_OFFSET_BYTES = 0x1BE
PROTECTIVE_TYPE = 0xEE
#: DOS (0x05), Windows LBA (0x0F) and Linux (0x85) extended partitions, as the kernel knows them.
EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MAX_EBR_LINKS = 100
#: A start-plus-count (relative to the base its start is counted from) at or above this many
#: sectors is MTK's "to the end of the device", not a real extent: 0xFFFF0000 sectors is 2 TiB.
TO_END_SECTORS = 0xFFFF0000
MAX_SECTOR_COUNT = 0xFFFFFFFF

_SLOT = struct.Struct("<B3sB3sII")  # boot flag, CHS start, type, CHS end, start LBA, sectors


@dataclass(frozen=True)
class _Slot:
    """One 16-byte entry of a boot record, as written (start relative to its base)."""

    index: int
    boot_flag: int
    type: int
    start_lba: int
    sector_count: int

    @property
    def used(self) -> bool:
        """The kernel's test: a slot with sectors is used, whatever its type byte says."""
        return self.sector_count != 0

    @property
    def extended(self) -> bool:
        return self.type in EXTENDED_TYPES


@dataclass
class _Walk:
    """What the EBR walk found so far."""

    next_number: int = 5
    ebr_count: int = 0
    multi_logical: bool = False
    partitions: list[Partition] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_mbr(region: Region) -> MapReader:
    """Read the MBR at sector 0 of ``region`` and follow its EBR chain(s).

    Raises:
        NoMapError: sector 0 holds no partition table (no 55 AA, a boot sector rather than a
            table, no used slot), or it is a protective MBR (the disk uses GPT).
    """
    sector0 = yield Need(region.name, 0, SECTOR_BYTES)
    if len(sector0) < SECTOR_BYTES or not _has_signature(sector0):
        raise NoMapError(f"no MBR in {region.name}: sector 0 does not end in 55 AA")
    slots = _slots(sector0)
    if any(slot.type == PROTECTIVE_TYPE for slot in slots):
        raise NoMapError("protective MBR: this disk uses GPT (read its GPT, not the MBR)")
    for slot in slots:
        if slot.boot_flag not in (0x00, 0x80):
            raise NoMapError(
                f"sector 0 of {region.name} ends in 55 AA but is not a partition table "
                f"(slot {slot.index + 1} has boot flag {slot.boot_flag:#04x}; a boot sector?)"
            )
    if not any(slot.used for slot in slots):
        raise NoMapError(f"the MBR of {region.name} has no partitions")

    primaries: list[Partition] = []
    walk = _Walk()
    for slot in slots:
        if not slot.used:
            continue
        if slot.extended:
            # The container (Linux shows it as a 1 KiB pN); its start is the extended base.
            yield from _walk_chain(region, slot, walk)
            continue
        primaries.append(
            _partition(region, slot, slot.index + 1, slot.start_lba, 0, "mbr", table_lba=0)
        )
    origin = "MBR"
    if walk.ebr_count:
        plural = "s" if walk.ebr_count != 1 else ""
        style = " (MTK style)" if walk.multi_logical else ""
        origin = f"MBR + {walk.ebr_count} EBR{plural}{style}"
    return PartitionMap(
        partitions=(*primaries, *walk.partitions), origin=origin, warnings=tuple(walk.warnings)
    )


def _walk_chain(region: Region, extended: _Slot, walk: _Walk) -> Generator[Need, bytes, None]:
    """Follow one EBR chain as the kernel's ``parse_extended`` does, adding to ``walk``."""
    base_lba, base_sectors = extended.start_lba, extended.sector_count
    ebr_lba, ebr_sectors = base_lba, base_sectors
    seen_lbas: set[int] = set()
    while True:
        where = f"EBR at byte {ebr_lba * SECTOR_BYTES:#x}"
        if ebr_lba in seen_lbas:
            walk.warnings.append(f"EBR chain loops back to the {where}; the chain ends there")
            return
        if len(seen_lbas) >= MAX_EBR_LINKS:
            walk.warnings.append(f"EBR chain is longer than {MAX_EBR_LINKS} links; stopped there")
            return
        seen_lbas.add(ebr_lba)
        data = yield Need(region.name, ebr_lba * SECTOR_BYTES, SECTOR_BYTES)
        if len(data) < SECTOR_BYTES:
            walk.warnings.append(
                f"{where} lies past the end of {region.name} (truncated image?); "
                "the chain ends there"
            )
            return
        if not _has_signature(data):
            walk.warnings.append(f"{where} does not end in 55 AA; the chain ends there")
            return
        walk.ebr_count += 1
        slots = _slots(data)
        found = 0
        for slot in slots:
            if not slot.used or slot.extended:
                continue
            lba = ebr_lba + slot.start_lba
            if slot.index >= 2 and (
                slot.start_lba + slot.sector_count > ebr_sectors
                or lba < base_lba
                or lba + slot.sector_count > base_lba + base_sectors
            ):
                walk.warnings.append(
                    f"{where}: slot {slot.index + 1} does not fit the extended partition; "
                    "ignored as garbage, as Linux does"
                )
                continue
            walk.partitions.append(
                _partition(region, slot, walk.next_number, lba, base_lba, "ebr", table_lba=ebr_lba)
            )
            walk.next_number += 1
            found += 1
        walk.multi_logical = walk.multi_logical or found > 1
        link = next((slot for slot in slots if slot.used and slot.extended), None)
        if link is None:
            return
        ebr_lba, ebr_sectors = base_lba + link.start_lba, link.sector_count


def _partition(
    region: Region, slot: _Slot, number: int, lba: int, base_lba: int, origin: str, table_lba: int
) -> Partition:
    """One table entry as a partition of ``region``, clamped to it.

    ``base_lba`` is what MTK counts "to the end" sizes from: the first EBR for logicals, the
    MBR (0) for primaries.
    """
    to_end = (
        slot.sector_count == MAX_SECTOR_COUNT
        or lba - base_lba + slot.sector_count >= TO_END_SECTORS
    )
    part = Partition(
        name=f"p{number}",
        region=region.name,
        offset_bytes=lba * SECTOR_BYTES,
        size_bytes=slot.sector_count * SECTOR_BYTES,
        number=number,
        origin=origin,
        extra={
            "type": slot.type,
            "start_lba": lba,
            "sector_count": slot.sector_count,
            "table_lba": table_lba,
            "slot": slot.index + 1,
            "to_end": to_end,
        },
    )
    return clamp_to_region(part, region.size_bytes, quiet=to_end)


def _has_signature(sector: bytes) -> bool:
    return sector[SIGNATURE_OFFSET_BYTES : SIGNATURE_OFFSET_BYTES + 2] == BOOT_SIGNATURE


def _slots(sector: bytes) -> list[_Slot]:
    """The four entries of a boot record (MBR or EBR)."""
    slots = []
    for index in range(4):
        boot_flag, _, type_, _, start_lba, count = _SLOT.unpack_from(
            sector, TABLE_OFFSET_BYTES + index * _SLOT.size
        )
        slots.append(_Slot(index, boot_flag, type_, start_lba, count))
    return slots
