"""Which blocks of an ext2/3/4 file system are in use, from its superblock, group descriptors and
block bitmaps — what ``ext2simg`` copies, so that ``mtkfs export-rom`` does the same.

Why our own reader: the job is ~150 lines of struct unpacking (formats.md §7; the kernel's
``Documentation/filesystems/ext4``), no maintained Python package reads ext4 bitmaps with an
async, range-based read, and e2fsprogs' tools need the partition as a local file.

Correctness rule: copying too much is safe, copying too little loses data. So:

* A group whose bitmap was never initialised (``BLOCK_UNINIT``, only meaningful with the
  GDT_CSUM or METADATA_CSUM feature) is not read; like e2fsprogs, its superblock backup and
  descriptor blocks (when it holds a backup) and its own bitmaps and inode table count as used.
* ``meta_bg`` (descriptors spread over the disk) is refused with :class:`Ext4Error`; the caller
  then exports the partition raw.
* Every number is checked against the partition size; a hostile image gets :class:`Ext4Error`,
  never a huge allocation or a wrong answer.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mtkfs.errors import Ext4Error

Read = Callable[[int, int], Awaitable[bytes]]

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_BYTES = 1024
MAGIC = 0xEF53
_INCOMPAT_META_BG = 0x10
_INCOMPAT_64BIT = 0x80
_RO_COMPAT_SPARSE_SUPER = 0x1
_RO_COMPAT_GDT_CSUM = 0x10
_RO_COMPAT_METADATA_CSUM = 0x400
_COMPAT_SPARSE_SUPER2 = 0x200
_BG_BLOCK_UNINIT = 0x2
#: Bitmap blocks fetched per read when they lie next to each other (flex_bg packs them).
_READ_RUN_BYTES = 4 << 20
_MAX_GROUPS = 1 << 22


@dataclass(frozen=True)
class Ext4Usage:
    """The file system's block size, its size in blocks, and the used blocks as sorted,
    merged ``(first block, number of blocks)`` ranges."""

    block_bytes: int
    blocks_count: int
    used: tuple[tuple[int, int], ...]

    @property
    def used_blocks(self) -> int:
        return sum(count for _, count in self.used)


@dataclass(frozen=True)
class _Super:
    block_bytes: int
    blocks_count: int
    first_data_block: int
    blocks_per_group: int
    inodes_per_group: int
    inode_bytes: int
    desc_bytes: int
    reserved_gdt_blocks: int
    compat: int
    incompat: int
    ro_compat: int
    backup_groups: tuple[int, ...]

    @property
    def groups(self) -> int:
        return -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)

    @property
    def gdt_blocks(self) -> int:
        return -(-(self.groups * self.desc_bytes) // self.block_bytes)

    @property
    def inode_table_blocks(self) -> int:
        return -(-(self.inodes_per_group * self.inode_bytes) // self.block_bytes)

    def has_backup(self, group: int) -> bool:
        """Whether ``group`` starts with a superblock (and descriptor) copy."""
        if group == 0:
            return True
        if self.compat & _COMPAT_SPARSE_SUPER2:
            return group in self.backup_groups
        if not self.ro_compat & _RO_COMPAT_SPARSE_SUPER:
            return True
        if group == 1:
            return True
        for base in (3, 5, 7):
            power = base
            while power < group:
                power *= base
            if power == group:
                return True
        return False


def _parse_super(raw: bytes, size_bytes: int) -> _Super:
    if len(raw) < SUPERBLOCK_BYTES:
        raise Ext4Error("no ext4 superblock: the partition is too small")
    (magic,) = struct.unpack_from("<H", raw, 0x38)
    if magic != MAGIC:
        raise Ext4Error(f"no ext4 superblock (magic {magic:#06x}, not 0xef53)")
    blocks_lo, first_data, log_block, per_group = struct.unpack_from("<I12xII4xI", raw, 0x04)
    (inodes_per_group,) = struct.unpack_from("<I", raw, 0x28)
    (rev_level,) = struct.unpack_from("<I", raw, 0x4C)
    (inode_size,) = struct.unpack_from("<H", raw, 0x58)
    compat, incompat, ro_compat = struct.unpack_from("<III", raw, 0x5C)
    (reserved_gdt,) = struct.unpack_from("<H", raw, 0xCE)
    (desc_size,) = struct.unpack_from("<H", raw, 0xFE)
    (blocks_hi,) = struct.unpack_from("<I", raw, 0x150)
    backup_bgs = struct.unpack_from("<II", raw, 0x24C)
    if log_block > 6:
        raise Ext4Error(f"block size 2^{10 + log_block} is not an ext4 block size")
    block_bytes = 1024 << log_block
    is_64bit = bool(incompat & _INCOMPAT_64BIT)
    blocks = blocks_lo | ((blocks_hi << 32) if is_64bit else 0)
    desc_bytes = desc_size if is_64bit else 32
    inode_bytes = inode_size if rev_level >= 1 else 128
    if is_64bit and (desc_bytes < 64 or desc_bytes > 1024 or desc_bytes & (desc_bytes - 1)):
        raise Ext4Error(f"group descriptor size {desc_bytes} is not one ext4 uses")
    if not 128 <= inode_bytes <= block_bytes or inode_bytes & (inode_bytes - 1):
        raise Ext4Error(f"inode size {inode_bytes} is not one ext4 uses")
    if blocks * block_bytes > size_bytes:
        raise Ext4Error(
            f"the file system says {blocks} blocks of {block_bytes} bytes, more than the "
            f"partition's {size_bytes} bytes"
        )
    if not 0 < per_group <= 8 * block_bytes or per_group % 8:
        raise Ext4Error(f"{per_group} blocks per group does not fit a one-block bitmap")
    if first_data not in (0, 1) or blocks <= first_data:
        raise Ext4Error(f"first data block {first_data} of {blocks} is impossible")
    if inodes_per_group == 0 or inodes_per_group > 8 * block_bytes:
        raise Ext4Error(f"{inodes_per_group} inodes per group does not fit a one-block bitmap")
    found = _Super(
        block_bytes=block_bytes,
        blocks_count=blocks,
        first_data_block=first_data,
        blocks_per_group=per_group,
        inodes_per_group=inodes_per_group,
        inode_bytes=inode_bytes,
        desc_bytes=desc_bytes,
        reserved_gdt_blocks=reserved_gdt,
        compat=compat,
        incompat=incompat,
        ro_compat=ro_compat,
        backup_groups=tuple(g for g in backup_bgs if g),
    )
    if incompat & _INCOMPAT_META_BG:
        raise Ext4Error("meta_bg file systems are not read (their descriptors are spread out)")
    if found.groups > _MAX_GROUPS:
        raise Ext4Error(f"{found.groups} block groups is more than any real ext4 has")
    return found


async def _read_exact(read: Read, offset: int, size: int, what: str) -> bytes:
    data = await read(offset, size)
    if len(data) != size:
        raise Ext4Error(f"{what} at byte {offset:#x} lies past the end of the partition")
    return data


async def ext4_used_ranges(read: Read, size_bytes: int) -> Ext4Usage:
    """The used blocks of the ext2/3/4 file system at the start of a partition.

    ``read(offset, size)`` reads the partition (may return short at its end).

    Raises:
        Ext4Error: not ext4, or metadata that does not add up.
    """
    sb = _parse_super(await read(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES), size_bytes)
    bs = sb.block_bytes
    gdt_at = (sb.first_data_block + 1) * bs
    gdt = await _read_exact(read, gdt_at, sb.gdt_blocks * bs, "the group descriptor table")
    uninit_flag_means = bool(sb.ro_compat & (_RO_COMPAT_GDT_CSUM | _RO_COMPAT_METADATA_CSUM))
    fs_bits = sb.blocks_count - sb.first_data_block
    bitmap = bytearray(-(-fs_bits // 8) + 1)  # bit i: block first_data_block + i
    per_group_bytes = sb.blocks_per_group // 8
    to_read: list[tuple[int, int]] = []  # (bitmap block, group)
    marks: list[tuple[int, int]] = []  # (first block, count) used whatever the bitmaps say
    # Block 0 .. end of group 0's descriptors and reserved descriptor blocks.
    marks.append((0, sb.first_data_block + 1 + sb.gdt_blocks + sb.reserved_gdt_blocks))
    for group in range(sb.groups):
        desc = gdt[group * sb.desc_bytes : (group + 1) * sb.desc_bytes]
        block_bitmap, inode_bitmap, inode_table = struct.unpack_from("<III", desc, 0)
        (flags,) = struct.unpack_from("<H", desc, 0x12)
        if sb.desc_bytes >= 64:
            hi = struct.unpack_from("<III", desc, 0x20)
            block_bitmap |= hi[0] << 32
            inode_bitmap |= hi[1] << 32
            inode_table |= hi[2] << 32
        for name, block, count in (
            ("block bitmap", block_bitmap, 1),
            ("inode bitmap", inode_bitmap, 1),
            ("inode table", inode_table, sb.inode_table_blocks),
        ):
            if block <= 0 or block + count > sb.blocks_count:
                raise Ext4Error(f"group {group}: its {name} at block {block} is outside the fs")
        if uninit_flag_means and flags & _BG_BLOCK_UNINIT:
            start = sb.first_data_block + group * sb.blocks_per_group
            if sb.has_backup(group):
                marks.append((start, 1 + sb.gdt_blocks + sb.reserved_gdt_blocks))
            marks += [(block_bitmap, 1), (inode_bitmap, 1), (inode_table, sb.inode_table_blocks)]
        else:
            to_read.append((block_bitmap, group))
    for run in _runs(sorted(to_read), bs):
        first_block = run[0][0]
        data = await _read_exact(read, first_block * bs, len(run) * bs, "a block bitmap")
        for block, group in run:
            piece = data[(block - first_block) * bs : (block - first_block) * bs + per_group_bytes]
            at = group * per_group_bytes
            bitmap[at : at + len(piece)] = piece[: len(bitmap) - at]
    for start, count in marks:
        for block in range(max(start, sb.first_data_block), min(start + count, sb.blocks_count)):
            index = block - sb.first_data_block
            bitmap[index // 8] |= 1 << (index % 8)
    used = _bit_ranges(bytes(bitmap), fs_bits, sb.first_data_block)
    if sb.first_data_block:
        used = _merge([(0, sb.first_data_block), *used])
    return Ext4Usage(bs, sb.blocks_count, tuple(used))


def _runs(blocks: list[tuple[int, int]], block_bytes: int) -> list[list[tuple[int, int]]]:
    """Group ``(block, group)`` pairs into runs of consecutive blocks, each ≤ 4 MiB."""
    limit = max(1, _READ_RUN_BYTES // block_bytes)
    runs: list[list[tuple[int, int]]] = []
    for pair in blocks:
        if runs and pair[0] == runs[-1][-1][0] + 1 and len(runs[-1]) < limit:
            runs[-1].append(pair)
        elif runs and pair[0] == runs[-1][-1][0]:
            runs[-1].append(pair)  # two groups sharing a bitmap block: corrupt, but harmless
        else:
            runs.append([pair])
    return runs


_SEGMENTS = re.compile(rb"\x00+|\xff+|[\x01-\xfe]")


def _bit_ranges(bitmap: bytes, nbits: int, base: int) -> list[tuple[int, int]]:
    """Runs of set bits (LSB first) among the first ``nbits``, as ``(base + start, count)``."""
    out: list[tuple[int, int]] = []
    start: int | None = None

    def close(end: int) -> None:
        nonlocal start
        if start is not None:
            end = min(end, nbits)
            if end > start:
                out.append((base + start, end - start))
            start = None

    for match in _SEGMENTS.finditer(bitmap):
        first_bit = match.start() * 8
        if first_bit >= nbits:
            break
        byte = match.group()[0]
        if byte == 0:
            close(first_bit)
        elif byte == 0xFF:
            if start is None:
                start = first_bit
        else:
            for bit in range(8):
                if byte >> bit & 1:
                    if start is None:
                        start = first_bit + bit
                else:
                    close(first_bit + bit)
    close(nbits)
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, count in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_count = merged[-1]
            merged[-1] = (last_start, max(last_count, start + count - last_start))
        else:
            merged.append((start, count))
    return merged
