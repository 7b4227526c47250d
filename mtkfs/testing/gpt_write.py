"""Write a GPT into a (sparse) disk image file, for any logical sector size.

Why not sgdisk: it takes the sector size from the device, and an image file is always 512 —
but a UFS LU has 4096-byte logical blocks, and so does its GPT (the header at byte 4096, LBAs
counted in 4 KiB). This writes exactly what a UFS phone holds: protective MBR, primary header
and entry array, backup array and header at the end, CRCs right (UEFI §5.3). Test fixtures only;
mtkfs itself never writes partition tables.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkfs.testing.tools import fixed_uuid

#: "Microsoft basic data", what MediaTek's tools put on every partition.
BASIC_DATA_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
_ENTRY_COUNT = 128
_ENTRY_BYTES = 128
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


@dataclass(frozen=True)
class GptPartition:
    """One entry: its name and byte range (both multiples of the sector size)."""

    name: str
    offset_bytes: int
    size_bytes: int


def write_gpt(
    path: Path, partitions: Sequence[GptPartition], *, sector_bytes: int, key: str
) -> None:
    """Write a GPT for the whole of ``path`` (its current size is the disk's); GUIDs are fixed
    per ``key`` so rebuilds give the same bytes."""
    disk_sectors = os.stat(path).st_size // sector_bytes
    array = bytearray(_ENTRY_COUNT * _ENTRY_BYTES)
    type_guid = _guid_bytes(BASIC_DATA_TYPE)
    for index, part in enumerate(partitions):
        if part.offset_bytes % sector_bytes or part.size_bytes % sector_bytes:
            raise ValueError(f"{part.name}: not aligned to {sector_bytes}-byte sectors")
        first = part.offset_bytes // sector_bytes
        last = first + part.size_bytes // sector_bytes - 1
        struct.pack_into(
            "<16s16sQQQ72s",
            array,
            index * _ENTRY_BYTES,
            type_guid,
            fixed_uuid(f"{key}/{part.name}").bytes_le,
            first,
            last,
            0,
            part.name.encode("utf-16-le"),
        )
    array_sectors = -(-len(array) // sector_bytes)
    last_lba = disk_sectors - 1
    first_usable, last_usable = 2 + array_sectors, last_lba - 1 - array_sectors
    for part in partitions:
        end = (part.offset_bytes + part.size_bytes) // sector_bytes - 1
        if part.offset_bytes // sector_bytes < first_usable or end > last_usable:
            raise ValueError(f"{part.name}: outside the usable LBAs {first_usable}..{last_usable}")
    array_crc = zlib.crc32(array)
    disk_guid = fixed_uuid(f"{key}/disk").bytes_le

    def header(my_lba: int, alternate_lba: int, entries_lba: int) -> bytes:
        raw = bytearray(
            _HEADER.pack(
                b"EFI PART", 0x00010000, 92, 0, 0, my_lba, alternate_lba, first_usable,
                last_usable, disk_guid, entries_lba, _ENTRY_COUNT, _ENTRY_BYTES, array_crc,
            )
        )  # fmt: skip
        struct.pack_into("<I", raw, 16, zlib.crc32(raw))
        return bytes(raw.ljust(sector_bytes, b"\0"))

    mbr = bytearray(512)
    struct.pack_into("<B3sB3sII", mbr, 0x1BE, 0, b"", 0xEE, b"", 1, min(last_lba, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    backup_entries_lba = last_lba - array_sectors
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(mbr), 0)
        os.pwrite(fd, header(1, last_lba, 2), sector_bytes)
        os.pwrite(fd, bytes(array), 2 * sector_bytes)
        os.pwrite(fd, bytes(array), backup_entries_lba * sector_bytes)
        os.pwrite(fd, header(last_lba, 1, backup_entries_lba), last_lba * sector_bytes)
    finally:
        os.close(fd)


def _guid_bytes(text: str) -> bytes:
    return uuid.UUID(text).bytes_le
