"""GPT reader: the partition map of MTK eMMC (MT6735 and later) and UFS user areas.

Why our own reader instead of a library: readback images are routinely truncated (no backup GPT
in them) or padded (parted then offers to "fix" things), UFS uses 4096-byte sectors, and every
byte of the table comes from a device we do not trust. So this reader

* finds the sector size itself (``EFI PART`` at byte 512 or 4096),
* checks both CRCs and every field it uses, and bounds what a hostile header can make it read,
* works from the primary table alone and never requires the backup when the primary is good,
* falls back to the backup (and says so) only when the primary fails a check,
* never writes or "repairs" anything, and reports size mismatches as warnings.

It is a sans-I/O generator (see :mod:`mtkfs.maps.model`): it yields :class:`Need` and gets bytes.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Generator
from dataclasses import dataclass

from mtkfs.errors import CorruptMapError, NoMapError
from mtkfs.maps import names
from mtkfs.maps.model import MapReader, Need, Partition, PartitionMap, Region, clamp_to_region

SIGNATURE = b"EFI PART"
#: Sector sizes we probe, in the order we probe them: eMMC first, then UFS.
SECTOR_SIZES_BYTES = (512, 4096)
HEADER_MIN_BYTES = 92
ENTRY_MIN_BYTES = 128
#: Bounds on what a header may make us read: at most 1024 entries of at most 1 KiB (1 MiB in all;
#: real tables are 128 x 128 bytes = 16 KiB). A hostile count must not cost gigabytes of I/O.
MAX_ENTRIES = 1024
MAX_ENTRY_BYTES = 1024
NAME_OFFSET_BYTES = 56
NAME_FIELD_BYTES = 72

_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # the 92 bytes of UEFI's GPT header
_ENTRY = struct.Struct("<16s16sQQQ")  # type GUID, unique GUID, first/last LBA, attributes
_CRC_OFFSET_BYTES = 16


@dataclass(frozen=True)
class _Header:
    """The header fields this reader relies on, already checked."""

    header_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    entries_lba: int
    entry_count: int
    entry_bytes: int
    entries_crc32: int


@dataclass(frozen=True)
class _Entry:
    """One used entry of the array, before names are made unique."""

    number: int
    name: str
    type_guid: bytes
    unique_guid: bytes
    first_lba: int
    last_lba: int
    attributes: int


_Reading = Generator[Need, bytes, tuple[_Header, bytes]]


class _BadCopy(Exception):
    """One copy of the GPT (primary or backup) failed a check.

    ``header`` is set when the header itself was sane and only the entry array failed: its
    ``alternate_lba`` then tells where the other copy is.
    """

    def __init__(self, reason: str, header: _Header | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.header = header


def read_gpt(region: Region) -> MapReader:
    """Read the GPT of ``region``: primary if it is intact, else the backup (with a warning).

    Raises:
        NoMapError: no GPT signature at LBA 1 (512 or 4096-byte sectors) nor in the last sector;
            the caller may then try an MBR.
        CorruptMapError: a GPT is there but neither copy passes its checks.
    """
    sector_bytes, primary_raw = yield from _find_primary(region)
    if sector_bytes is None:
        sector_bytes = yield from _find_backup_sector_size(region)
        if sector_bytes is None:
            raise NoMapError(
                f"no GPT found in {region.name}: no 'EFI PART' signature at byte 512, "
                "byte 4096 or in the last sector"
            )
    last_region_lba = region.size_bytes // sector_bytes - 1
    warnings: list[str] = []
    try:
        if primary_raw is None:
            raise _BadCopy("no GPT header at LBA 1")
        header, entries = yield from _read_copy(region, sector_bytes, 1, primary_raw)
        kind = "primary"
        disk_last_lba = header.alternate_lba
    except _BadCopy as primary_bad:
        candidates = [] if primary_bad.header is None else [primary_bad.header.alternate_lba]
        if last_region_lba > 1 and last_region_lba not in candidates:
            candidates.append(last_region_lba)
        header, entries = yield from _read_backup(region, sector_bytes, primary_bad, candidates)
        kind = "backup"
        disk_last_lba = header.header_lba
        warnings.append(
            f"primary GPT is corrupt ({primary_bad.reason}); using the backup GPT at LBA "
            f"{header.header_lba}; nothing was repaired"
        )
    warnings.extend(_size_warnings(disk_last_lba, last_region_lba, sector_bytes))
    origin = "gpt" if kind == "primary" else "gpt-backup"
    parts, entry_warnings = _partitions(region, header, entries, sector_bytes, origin)
    warnings.extend(entry_warnings)
    return PartitionMap(
        partitions=tuple(parts),
        origin=f"GPT ({kind}, {sector_bytes}-byte sectors)",
        warnings=tuple(warnings),
    )


def _find_primary(region: Region) -> Generator[Need, bytes, tuple[int | None, bytes | None]]:
    """The sector size and raw LBA-1 sector of the primary header, found by its signature."""
    for sector_bytes in SECTOR_SIZES_BYTES:
        raw = yield Need(region.name, sector_bytes, sector_bytes)
        if raw.startswith(SIGNATURE):
            return sector_bytes, raw
    return None, None


def _find_backup_sector_size(region: Region) -> Generator[Need, bytes, int | None]:
    """With no primary signature, the sector size for which the last sector holds a GPT header."""
    for sector_bytes in SECTOR_SIZES_BYTES:
        last_lba = region.size_bytes // sector_bytes - 1
        if last_lba <= 1:
            continue
        raw = yield Need(region.name, last_lba * sector_bytes, len(SIGNATURE))
        if raw.startswith(SIGNATURE):
            return sector_bytes
    return None


def _read_backup(
    region: Region, sector_bytes: int, primary_bad: _BadCopy, candidates: list[int]
) -> _Reading:
    """The first backup copy among ``candidates`` (LBAs) that passes, else CorruptMapError."""
    failures: list[str] = []
    for lba in candidates:
        try:
            return (yield from _read_copy(region, sector_bytes, lba, None))
        except _BadCopy as bad:
            failures.append(f"at LBA {lba}: {bad.reason}")
    backup = "; ".join(failures) if failures else "no place to look for it"
    raise CorruptMapError(
        f"GPT in {region.name} is corrupt: primary: {primary_bad.reason}; backup: {backup}. "
        "Pass --map FILE with a scatter file or a PGPT dump"
    )


def _read_copy(region: Region, sector_bytes: int, lba: int, raw: bytes | None) -> _Reading:
    """Read and check one copy: the header at ``lba`` (``raw`` if already read) and its entries."""
    if raw is None:
        raw = yield Need(region.name, lba * sector_bytes, sector_bytes)
    header = _parse_header(raw, sector_bytes, lba)
    array_bytes = header.entry_count * header.entry_bytes
    entries = yield Need(region.name, header.entries_lba * sector_bytes, array_bytes)
    if len(entries) < array_bytes:
        raise _BadCopy(
            f"entry array at LBA {header.entries_lba} runs past the end of the image", header
        )
    if zlib.crc32(entries) != header.entries_crc32:
        raise _BadCopy("entry array CRC32 mismatch", header)
    return header, entries


def _parse_header(raw: bytes, sector_bytes: int, lba: int) -> _Header:
    """Check a header sector read from ``lba``; raise :class:`_BadCopy` naming the failed check."""
    if len(raw) < HEADER_MIN_BYTES:
        raise _BadCopy(f"header at LBA {lba} is past the end of the image")
    (sig, _rev, header_bytes, crc, _res, my_lba, alt_lba, first_usable, last_usable, _disk_guid,
     entries_lba, entry_count, entry_bytes, entries_crc) = _HEADER.unpack_from(raw)  # fmt: skip
    if sig != SIGNATURE:
        raise _BadCopy(f"no 'EFI PART' signature at LBA {lba}")
    if not HEADER_MIN_BYTES <= header_bytes <= min(sector_bytes, len(raw)):
        raise _BadCopy(f"header size {header_bytes} is not within {HEADER_MIN_BYTES}..sector")
    zeroed = raw[:_CRC_OFFSET_BYTES] + bytes(4) + raw[_CRC_OFFSET_BYTES + 4 : header_bytes]
    if zlib.crc32(zeroed) != crc:
        raise _BadCopy("header CRC32 mismatch")
    if my_lba != lba:
        raise _BadCopy(f"header at LBA {lba} says it is at LBA {my_lba}")
    if alt_lba == my_lba:
        raise _BadCopy(f"header's alternate LBA is its own LBA ({my_lba})")
    if entry_bytes < ENTRY_MIN_BYTES or entry_bytes % 8 or entry_bytes > MAX_ENTRY_BYTES:
        raise _BadCopy(f"entry size {entry_bytes} is not a multiple of 8 in 128..1024")
    if entry_count > MAX_ENTRIES:
        raise _BadCopy(f"entry count {entry_count} is over {MAX_ENTRIES}")
    if first_usable > last_usable:
        raise _BadCopy(f"first usable LBA {first_usable} is after last usable LBA {last_usable}")
    array_sectors = -(-(entry_count * entry_bytes) // sector_bytes)
    if entries_lba <= my_lba < entries_lba + array_sectors:
        raise _BadCopy(f"entry array at LBA {entries_lba} overlaps the header")
    return _Header(
        header_lba=my_lba,
        alternate_lba=alt_lba,
        first_usable_lba=first_usable,
        last_usable_lba=last_usable,
        entries_lba=entries_lba,
        entry_count=entry_count,
        entry_bytes=entry_bytes,
        entries_crc32=entries_crc,
    )


def _size_warnings(disk_last_lba: int, last_region_lba: int, sector_bytes: int) -> list[str]:
    """Say when the image is larger (parted's "Not all of the space") or shorter than the GPT."""
    if disk_last_lba < last_region_lba:
        extra = last_region_lba - disk_last_lba
        return [
            f"image is {extra} sectors ({extra * sector_bytes} bytes) larger than the GPT says "
            f"(parted: 'Not all of the space available ... appears to be used ... an extra "
            f"{extra} blocks'); the extra space is ignored and nothing is changed"
        ]
    if disk_last_lba > last_region_lba:
        return [
            f"image is truncated: the GPT describes {disk_last_lba + 1} sectors "
            f"({(disk_last_lba + 1) * sector_bytes} bytes) but the image holds "
            f"{last_region_lba + 1}; the backup GPT (LBA {disk_last_lba}) is not in it"
        ]
    return []


def _partitions(
    region: Region, header: _Header, entries: bytes, sector_bytes: int, origin: str
) -> tuple[list[Partition], list[str]]:
    """The used entries as partitions (clamped to the region) plus map-level warnings."""
    kept: list[_Entry] = []
    warnings: list[str] = []
    for index in range(header.entry_count):
        entry = entries[index * header.entry_bytes : (index + 1) * header.entry_bytes]
        type_guid, unique_guid, first_lba, last_lba, attributes = _ENTRY.unpack_from(entry)
        if not any(type_guid):
            continue
        raw_name = entry[NAME_OFFSET_BYTES : NAME_OFFSET_BYTES + NAME_FIELD_BYTES]
        label = raw_name.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
        if last_lba < first_lba:
            warnings.append(
                f"GPT entry {index + 1} ({label!r}) ends before it starts (first LBA {first_lba}, "
                f"last LBA {last_lba}); skipped"
            )
            continue
        # Fall back to the Linux name (mmcblk0pN), N = entry index + 1, as `number` is.
        name = names.clean_name(label, f"p{index + 1}")
        kept.append(
            _Entry(index + 1, name, type_guid, unique_guid, first_lba, last_lba, attributes)
        )
    parts: list[Partition] = []
    for used, name in zip(kept, names.unique_names(e.name for e in kept), strict=True):
        part = Partition(
            name=name,
            region=region.name,
            offset_bytes=used.first_lba * sector_bytes,
            size_bytes=(used.last_lba - used.first_lba + 1) * sector_bytes,
            number=used.number,
            origin=origin,
            extra={
                "type_guid": _guid(used.type_guid),
                "unique_guid": _guid(used.unique_guid),
                "attributes": used.attributes,
                "first_lba": used.first_lba,
                "last_lba": used.last_lba,
                "sector_bytes": sector_bytes,
            },
        )
        if used.first_lba < header.first_usable_lba or used.last_lba > header.last_usable_lba:
            part = part.with_warning(
                f"lies outside the GPT's usable area (LBA {header.first_usable_lba}.."
                f"{header.last_usable_lba})"
            )
        parts.append(clamp_to_region(part, region.size_bytes))
    return parts, warnings


def _guid(raw: bytes) -> str:
    """GPT's mixed-endian GUID bytes as the canonical lower-case string (as blkid prints it)."""
    return str(uuid.UUID(bytes_le=raw))
