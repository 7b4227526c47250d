"""Partition tables as the simulated U-Boot reads and prints them: ``part list`` and mtdparts.

``part list`` follows disk/part_efi.c (a GPT, primary then backup, CRCs checked) and
disk/part_dos.c (MBR and extended partitions, with its numbering rules). The MTD side has two
parsers of ``$mtdids``/``$mtdparts`` because U-Boot has two: cmd/mtdparts.c (offsets continue
after the previous partition; every partition must be erase-block aligned, else an error) and
drivers/mtd/mtdpart.c behind ``mtd list`` (offsets continue at the sum of the previous sizes;
misaligned partitions are only forced read-only, with a warning).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mtkfs.testing.sim_uboot_board import memsize_parse

__all__ = [
    "MtdDevice",
    "MtdPart",
    "MtdpartsError",
    "ReadBlock",
    "mtd_list_parts",
    "mtdparts_table",
    "part_list_text",
]

# ---------------------------------------------------------------------------------------------
# Partition tables: part list (GPT, DOS)


#: Reads ``count`` 512-byte blocks from ``lba`` of a block device.
ReadBlock = Callable[[int, int], bytes]


def _efi_name(raw: bytes) -> str:
    chars = []
    for (code,) in struct.iter_unpack("<H", raw):
        if code == 0:
            break
        chars.append(chr(code & 0xFF))
    return "".join(chars)


def _valid_gpt(read_block: ReadBlock, lba: int, blocks: int) -> list[bytes] | None:
    head = read_block(lba, 1)
    if head[:8] != b"EFI PART":
        return None
    header_size = struct.unpack_from("<I", head, 12)[0]
    if not 92 <= header_size <= 512:
        return None
    stored = struct.unpack_from("<I", head, 16)[0]
    check = bytearray(head[:header_size])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != stored or struct.unpack_from("<Q", head, 24)[0] != lba:
        return None
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", head, 72)
    if entry_size < 128 or count > 1024:
        return None
    table_blocks = -(-count * entry_size // 512)
    if entries_lba + table_blocks > blocks:
        return None
    table = read_block(entries_lba, table_blocks)[: count * entry_size]
    if zlib.crc32(table) != entries_crc:
        return None
    return [table[i : i + entry_size] for i in range(0, len(table), entry_size)]


def part_list_text(kind: str, devnum: int, read_block: ReadBlock, blocks: int) -> str:
    """What ``part list <if> <dev>`` prints for a disk of ``blocks`` 512-byte blocks:
    part_efi.c's table for a valid GPT (primary, else backup), part_dos.c's for an MBR,
    ``## Unknown partition table type 0`` otherwise. ``kind``: ``VirtIO``, ``MMC``…"""
    reader = read_block
    entries = _valid_gpt(reader, 1, blocks)
    if entries is None and blocks > 1:
        entries = _valid_gpt(reader, blocks - 1, blocks)
    head = f"\nPartition Map for {kind} device {devnum}  --   Partition Type: "
    if entries is not None:
        out = [
            head + "EFI\n\n",
            "Part\tStart LBA\tEnd LBA\t\tName\n",
            "\tAttributes\n\tType GUID\n\tPartition GUID\n",
        ]
        for number, entry in enumerate(entries, 1):
            if entry[:16] == bytes(16):
                continue
            first, last, attrs = struct.unpack_from("<QQQ", entry, 32)
            out.append(f'{number:3d}\t0x{first:08x}\t0x{last:08x}\t"{_efi_name(entry[56:128])}"\n')
            out.append(f"\tattrs:\t0x{attrs:016x}\n")
            out.append(f"\ttype:\t{uuid.UUID(bytes_le=entry[:16])}\n")
            out.append(f"\tguid:\t{uuid.UUID(bytes_le=entry[16:32])}\n")
        return "".join(out)
    mbr = reader(0, 1)
    if mbr[510:512] != b"\x55\xaa":
        return "## Unknown partition table type 0\n"
    out = [head + "DOS\n\n", "Part\tStart Sector\tNum Sectors\tUUID\t\tType\n"]
    _dos_extended(reader, 0, 0, 1, 0, out, 0)
    return "".join(out)


def _dos_extended(
    reader: ReadBlock,
    sector: int,
    relative: int,
    number: int,
    disksig: int,
    out: list[str],
    depth: int,
) -> None:
    """disk/part_dos.c print_partition_extended(), including its numbering rules."""
    if depth > 64:
        out.append("** Nested DOS partitions detected, stopping **\n")
        return
    block = reader(sector, 1)
    if block[510:512] != b"\x55\xaa":
        out.append(f"bad MBR sector signature 0x{block[510]:02x}{block[511]:02x}\n")
        return
    if sector == 0:
        disksig = struct.unpack_from("<I", block, 440)[0]
    table = [block[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    extended = (0x05, 0x0F, 0x85)
    for entry in table:
        kind = entry[4]
        if kind and (sector == 0 or kind not in extended):
            start = sector + struct.unpack_from("<I", entry, 8)[0]
            size = struct.unpack_from("<I", entry, 12)[0]
            flags = (" Extd" if kind in extended else "") + (" Boot" if entry[0] == 0x80 else "")
            out.append(
                f"{number:3d}\t{start:<10d}\t{size:<10d}\t{disksig:08x}-{number:02x}"
                f"\t{kind:02x}{flags}\n"
            )
        if sector == 0 or (kind and kind not in extended):
            number += 1
    for entry in table:
        if entry[4] in extended:
            start = struct.unpack_from("<I", entry, 8)[0] + relative
            _dos_extended(
                reader, start, start if sector == 0 else relative, number, disksig, out, depth + 1
            )


# ---------------------------------------------------------------------------------------------
# MTD devices and mtdparts


@dataclass(frozen=True)
class MtdDevice:
    """An MTD device as ``mtd list`` and ``mtdparts`` see it."""

    name: str  # nor0, nand0
    kind: Literal["nor", "nand"]
    size: int
    erase_bytes: int
    write_bytes: int
    oob_bytes: int = 0
    device: str | None = None
    parent: str | None = None
    driver: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class MtdPart:
    name: str
    size: int
    offset: int
    mask_flags: int = 0


class MtdpartsError(Exception):
    """What U-Boot prints when ``$mtdids``/``$mtdparts`` do not parse or validate."""


def parse_mtdids(text: str) -> dict[str, str]:
    """``nor0=flash0,nand0=nand0`` → {mtd-id: device name}."""
    ids: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        device, _, mtd_id = item.partition("=")
        if not mtd_id:
            raise MtdpartsError(f"mtdids: incorrect <identifier>: {item}")
        ids[mtd_id] = device
    return ids


def parse_mtdparts_spec(
    text: str,
) -> list[tuple[str, list[tuple[int | None, int | None, str, bool]]]]:
    """``mtdparts=ID:1m(uboot),-(rootfs);ID2:…`` → [(mtd-id, [(size|None for '-', offset|None,
    name, read-only)])]."""
    body = text.removeprefix("mtdparts=")
    devices = []
    for chunk in filter(None, body.split(";")):
        mtd_id, colon, rest = chunk.partition(":")
        if not colon:
            raise MtdpartsError("mtdparts variable doesn't start with 'mtdparts='")
        parts: list[tuple[int | None, int | None, str, bool]] = []
        while rest:
            if rest.startswith("-"):
                size: int | None = None
                rest = rest[1:]
            else:
                size, rest = memsize_parse(rest)
                if size < 4096:
                    raise MtdpartsError(f"partition size too small ({size:x})")
            offset = None
            if rest.startswith("@"):
                offset, rest = memsize_parse(rest[1:])
            if rest.startswith("("):
                name, close, rest = rest[1:].partition(")")
                if not close:
                    raise MtdpartsError("no closing ) found in partition name")
                if not name:
                    raise MtdpartsError("empty partition name")
            else:
                name = f"0x{size or 0:08x}@0x{offset or 0:08x}"
            read_only = rest.startswith("ro")
            rest = rest[2:] if read_only else rest
            if rest.startswith(","):
                if size is None:
                    raise MtdpartsError("no partitions allowed after a fill-up partition")
                rest = rest[1:]
            elif rest:
                raise MtdpartsError(f"unexpected character '{rest[0]}' at the end of partition")
            parts.append((size, offset, name, read_only))
        devices.append((mtd_id, parts))
    return devices


def mtdparts_table(
    env: dict[str, str], devices: list[MtdDevice]
) -> list[tuple[MtdDevice, str, list[MtdPart]]]:
    """cmd/mtdparts.c's view of ``$mtdids``/``$mtdparts``: each device's partitions, offsets
    continuing after the previous partition, every partition checked against the device's
    erase size. Raises MtdpartsError with U-Boot's message."""
    if "mtdids" not in env:
        raise MtdpartsError("")
    ids = parse_mtdids(env["mtdids"])
    by_name = {device.name: device for device in devices}
    table = []
    for mtd_id, specs in parse_mtdparts_spec(env.get("mtdparts", "")):
        device = by_name.get(ids.get(mtd_id, ""))
        if device is None:
            raise MtdpartsError(f"invalid mtd device '{mtd_id}'")
        parts = []
        cursor = 0
        for given_size, given_offset, name, read_only in specs:
            offset = cursor if given_offset is None else given_offset
            size = device.size - offset if given_size is None else given_size
            if offset > device.size:
                raise MtdpartsError(
                    f"{mtd_id}: offset {offset:08x} beyond flash size {device.size:08x}"
                )
            if offset + size > device.size:
                raise MtdpartsError(f"{mtd_id}: partitioning exceeds flash size")
            if offset % device.erase_bytes:
                raise MtdpartsError(
                    f"{device.name}: partition ({name}) start offsetalignment incorrect"
                )
            if size % device.erase_bytes:
                raise MtdpartsError(f"{device.name}: partition ({name}) size alignment incorrect")
            parts.append(MtdPart(name, size, offset, 1 if read_only else 0))
            cursor = offset + size
        table.append((device, mtd_id, parts))
    return table


def mtd_list_parts(env: dict[str, str], device: MtdDevice) -> tuple[list[MtdPart], list[str]]:
    """drivers/mtd/mtdpart.c's view for ``mtd list``: (partitions, warnings). Its quirk: a
    partition without ``@offset`` starts at the *sum of the sizes* before it, not after the
    previous partition (seed 003's layout lists KERNEL at 0x50000)."""
    try:
        ids = parse_mtdids(env.get("mtdids", ""))
        specs = parse_mtdparts_spec(env.get("mtdparts", ""))
    except MtdpartsError:
        return [], []
    parts: list[MtdPart] = []
    warnings: list[str] = []
    for mtd_id, entries in specs:
        if ids.get(mtd_id) != device.name:
            continue
        cursor = 0
        for given_size, given_offset, name, _read_only in entries:
            size = device.size - cursor if given_size is None else given_size
            offset = cursor if given_offset is None else given_offset
            cursor += size
            if offset % device.erase_bytes:
                warnings.append(
                    f'mtd: partition "{name}" doesn\'t start on an erase block '
                    "boundary -- force read-only"
                )
            elif size % device.erase_bytes:
                warnings.append(
                    f'mtd: partition "{name}" doesn\'t end on an erase block -- force read-only'
                )
            parts.append(MtdPart(name, size, offset))
    return parts, warnings
