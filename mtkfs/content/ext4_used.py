"""Which blocks of an ext2/3/4 file system are in use, from its superblock, group descriptors and
block bitmaps — what ``ext2simg`` copies, so that ``mtkfs export-rom`` can do the same.

Why our own reader: the job is a few dozen struct fields (the kernel's
``Documentation/filesystems/ext4``), no maintained Python package reads ext4 bitmaps through an
async, range-based read, and e2fsprogs' tools need the partition as a local file.

Correctness rule: copying too much is safe, copying too little loses data. So:

* A group whose bitmap was never initialised (``BLOCK_UNINIT``, only meaningful with the
  GDT_CSUM or METADATA_CSUM feature) is not read; exactly like e2fsprogs, its superblock backup
  and descriptor blocks (when it holds a backup) and its own bitmaps and inode table count as
  used — wherever flex_bg put them.
* Layouts whose bitmaps do not mean "this block is used" — ``meta_bg`` (descriptors spread over
  the disk), ``bigalloc`` (one bit per cluster) — and file systems whose bitmaps may be stale
  (a journal still to replay, an ext2 not cleanly unmounted, errors recorded) raise
  :class:`~mtkfs.errors.Ext4Error`: the caller then copies the whole partition.
* Every number is checked against the partition size before it is used to read or allocate;
  hostile metadata gets :class:`~mtkfs.errors.Ext4Error`, never another exception, a huge
  allocation or a wrong answer. A pathologically fragmented bitmap is answered with fewer,
  wider ranges (small free gaps counted as used) rather than millions of tuples.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from mtkfs.errors import Ext4Error

#: ``read(offset_bytes, length_bytes)`` of the partition; may return short at its end.
Read = Callable[[int, int], Awaitable[bytes]]

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_BYTES = 1024
MAGIC = 0xEF53

_STATE_VALID = 0x1
_STATE_ERRORS = 0x2
_COMPAT_HAS_JOURNAL = 0x4
_COMPAT_SPARSE_SUPER2 = 0x200
_INCOMPAT_RECOVER = 0x4
_INCOMPAT_META_BG = 0x10
_INCOMPAT_64BIT = 0x80
_RO_COMPAT_SPARSE_SUPER = 0x1
_RO_COMPAT_GDT_CSUM = 0x10
_RO_COMPAT_BIGALLOC = 0x200
_RO_COMPAT_METADATA_CSUM = 0x400
_BG_BLOCK_UNINIT = 0x2

#: Bitmap and descriptor blocks fetched per read call (flex_bg packs bitmaps side by side).
_READ_BATCH_BYTES = 4 << 20
#: Blocks between two bitmaps that are read and thrown away rather than costing another read
#: call (flex_bg packs the bitmaps together, but the uninitialised groups' ones are not read).
_BATCH_GAP_BLOCKS = 16
#: mke2fs refuses fewer blocks per group; accepting fewer only lets hostile images make us loop.
_MIN_BLOCKS_PER_GROUP = 256
#: Above this many ranges, the smallest free gaps are counted as used (see :class:`_Ranges`).
_MAX_RANGES = 1 << 18


@dataclass(frozen=True)
class Ext4Usage:
    """The file system's block size, its size in blocks, and the blocks to copy as sorted,
    merged, non-overlapping ``(start_block, count_blocks)`` ranges."""

    block_bytes: int
    blocks_count: int
    used: tuple[tuple[int, int], ...]

    @property
    def used_blocks(self) -> int:
        return sum(count for _, count in self.used)


@dataclass(frozen=True)
class _Geometry:
    """The superblock fields the layout follows from, already checked."""

    block_bytes: int
    blocks_count: int
    first_data_block: int
    blocks_per_group: int
    inodes_per_group: int
    inode_bytes: int
    desc_bytes: int
    reserved_gdt_blocks: int
    compat: int
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

    @property
    def backup_blocks(self) -> int:
        """Superblock + descriptor table + reserved descriptor blocks, at a backup group's start."""
        return 1 + self.gdt_blocks + self.reserved_gdt_blocks

    @property
    def uninit_is_meaningful(self) -> bool:
        return bool(self.ro_compat & (_RO_COMPAT_GDT_CSUM | _RO_COMPAT_METADATA_CSUM))

    def group_start(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def has_backup(self, group: int) -> bool:
        """Whether ``group`` starts with a superblock (and descriptor table) copy."""
        if group == 0:
            return True
        if self.compat & _COMPAT_SPARSE_SUPER2:
            return group in self.backup_groups
        if group == 1 or not self.ro_compat & _RO_COMPAT_SPARSE_SUPER:
            return True
        return any(_is_power_of(group, base) for base in (3, 5, 7))


def _is_power_of(number: int, base: int) -> bool:
    while number % base == 0:
        number //= base
    return number == 1


_SUPER_FIELDS = {  # name: (offset in the superblock, struct format)
    "inodes_count": (0x00, "<I"),
    "blocks_count_lo": (0x04, "<I"),
    "first_data_block": (0x14, "<I"),
    "log_block_size": (0x18, "<I"),
    "log_cluster_size": (0x1C, "<I"),
    "blocks_per_group": (0x20, "<I"),
    "clusters_per_group": (0x24, "<I"),
    "inodes_per_group": (0x28, "<I"),
    "magic": (0x38, "<H"),
    "state": (0x3A, "<H"),
    "rev_level": (0x4C, "<I"),
    "inode_size": (0x58, "<H"),
    "compat": (0x5C, "<I"),
    "incompat": (0x60, "<I"),
    "ro_compat": (0x64, "<I"),
    "reserved_gdt_blocks": (0xCE, "<H"),
    "desc_size": (0xFE, "<H"),
    "blocks_count_hi": (0x150, "<I"),
    "backup_bg0": (0x24C, "<I"),
    "backup_bg1": (0x250, "<I"),
}


def _parse_super(raw: bytes, size_bytes: int) -> _Geometry:
    """Check the superblock and derive the layout; every refusal names the number at fault."""
    if len(raw) < SUPERBLOCK_BYTES:
        raise Ext4Error(f"no ext4 superblock: the partition ({size_bytes} bytes) is too small")
    f = {name: struct.unpack_from(fmt, raw, at)[0] for name, (at, fmt) in _SUPER_FIELDS.items()}
    if f["magic"] != MAGIC:
        raise Ext4Error(f"no ext4 superblock (magic {f['magic']:#06x}, not 0xef53)")
    _refuse_layouts_and_unclean(f["compat"], f["incompat"], f["ro_compat"], f["state"])
    if f["log_block_size"] > 6:
        raise Ext4Error(f"block size 2^(10+{f['log_block_size']}) is not 1 KiB .. 64 KiB")
    block_bytes = 1024 << f["log_block_size"]
    is_64bit = bool(f["incompat"] & _INCOMPAT_64BIT)
    blocks = f["blocks_count_lo"] | (f["blocks_count_hi"] << 32 if is_64bit else 0)
    if blocks * block_bytes > size_bytes:
        raise Ext4Error(
            f"the file system says {blocks} blocks of {block_bytes} bytes "
            f"({blocks * block_bytes} bytes), more than the partition's {size_bytes} bytes"
        )
    first = f["first_data_block"]
    if first != (1 if block_bytes == 1024 else 0) or blocks <= first + 1:
        raise Ext4Error(f"first data block {first} of {blocks} with {block_bytes}-byte blocks")
    per_group = f["blocks_per_group"]
    if not _MIN_BLOCKS_PER_GROUP <= per_group <= 8 * block_bytes or per_group % 8:
        raise Ext4Error(f"{per_group} blocks per group does not fit a one-block bitmap")
    if f["log_cluster_size"] != f["log_block_size"] or f["clusters_per_group"] != per_group:
        raise Ext4Error("cluster size differs from the block size without bigalloc")
    desc_bytes = f["desc_size"] if is_64bit else 32
    if is_64bit and (not 64 <= desc_bytes <= 1024 or desc_bytes & (desc_bytes - 1)):
        raise Ext4Error(f"group descriptor size {desc_bytes} is not a power of two 64..1024")
    inode_bytes = f["inode_size"] if f["rev_level"] >= 1 else 128
    if not 128 <= inode_bytes <= block_bytes or inode_bytes & (inode_bytes - 1):
        raise Ext4Error(f"inode size {inode_bytes} is not a power of two 128..{block_bytes}")
    inodes_per_group = f["inodes_per_group"]
    if not 0 < inodes_per_group <= 8 * block_bytes:
        raise Ext4Error(f"{inodes_per_group} inodes per group does not fit a one-block bitmap")
    if f["reserved_gdt_blocks"] > block_bytes // 4:
        raise Ext4Error(f"{f['reserved_gdt_blocks']} reserved descriptor blocks (at most "
                        f"{block_bytes // 4})")  # fmt: skip
    geometry = _Geometry(
        block_bytes=block_bytes,
        blocks_count=blocks,
        first_data_block=first,
        blocks_per_group=per_group,
        inodes_per_group=inodes_per_group,
        inode_bytes=inode_bytes,
        desc_bytes=desc_bytes,
        reserved_gdt_blocks=f["reserved_gdt_blocks"],
        compat=f["compat"],
        ro_compat=f["ro_compat"],
        backup_groups=(f["backup_bg0"], f["backup_bg1"]),
    )
    if f["inodes_count"] != inodes_per_group * geometry.groups:
        raise Ext4Error(
            f"{f['inodes_count']} inodes is not {geometry.groups} groups × {inodes_per_group}"
        )
    # Without meta_bg the descriptor table (and its reserve) must sit in group 0: mke2fs sees to
    # it, and it bounds how much table there is to read.
    group0_end = min(first + per_group, blocks)
    if first + geometry.backup_blocks > group0_end:
        raise Ext4Error(
            f"{geometry.gdt_blocks} + {geometry.reserved_gdt_blocks} descriptor blocks do not "
            f"fit in group 0 ({group0_end - first} blocks)"
        )
    return geometry


def _refuse_layouts_and_unclean(compat: int, incompat: int, ro_compat: int, state: int) -> None:
    """Refuse what would make the bitmaps a wrong answer (see the module docstring)."""
    if incompat & _INCOMPAT_META_BG:
        raise Ext4Error("meta_bg file systems are not read (their descriptors are spread out)")
    if ro_compat & _RO_COMPAT_BIGALLOC:
        raise Ext4Error("bigalloc file systems are not read (their bitmaps count clusters)")
    if incompat & _INCOMPAT_RECOVER:
        raise Ext4Error("the journal holds transactions not yet replayed (mounted, or not "
                        "cleanly unmounted): the bitmaps may be stale")  # fmt: skip
    if state & _STATE_ERRORS:
        raise Ext4Error("the file system is marked as having errors (run e2fsck)")
    if not compat & _COMPAT_HAS_JOURNAL and not state & _STATE_VALID:
        raise Ext4Error("the file system has no journal and was not cleanly unmounted")


@dataclass(frozen=True)
class _Group:
    """One group descriptor's locations (absolute block numbers) and flags."""

    number: int
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    flags: int


def _parse_desc(geometry: _Geometry, number: int, desc: bytes) -> _Group:
    block_bitmap, inode_bitmap, inode_table = struct.unpack_from("<III", desc, 0)
    (flags,) = struct.unpack_from("<H", desc, 0x12)
    if geometry.desc_bytes >= 64:
        hi_block, hi_inode, hi_table = struct.unpack_from("<III", desc, 0x20)
        block_bitmap |= hi_block << 32
        inode_bitmap |= hi_inode << 32
        inode_table |= hi_table << 32
    for what, block, count in (
        ("block bitmap", block_bitmap, 1),
        ("inode bitmap", inode_bitmap, 1),
        ("inode table", inode_table, geometry.inode_table_blocks),
    ):
        if block <= geometry.first_data_block or block + count > geometry.blocks_count:
            raise Ext4Error(
                f"group {number}: its {what} at block {block} (+{count}) lies outside "
                f"blocks {geometry.first_data_block + 1}..{geometry.blocks_count - 1}"
            )
    return _Group(number, block_bitmap, inode_bitmap, inode_table, flags)


async def _read_exact(read: Read, offset_bytes: int, length_bytes: int, what: str) -> bytes:
    data = await read(offset_bytes, length_bytes)
    if len(data) != length_bytes:
        raise Ext4Error(
            f"{what} at byte {offset_bytes:#x} (+{length_bytes}) lies past the end of the "
            f"partition ({len(data)} bytes read)"
        )
    return data


async def _groups(read: Read, geometry: _Geometry) -> AsyncIterator[_Group]:
    """Every group's descriptor, the table read ``_READ_BATCH_BYTES`` at a time."""
    bs = geometry.block_bytes
    table_at = (geometry.first_data_block + 1) * bs
    table_bytes = geometry.groups * geometry.desc_bytes
    batch_bytes = max(bs, _READ_BATCH_BYTES - _READ_BATCH_BYTES % bs)
    number = 0
    for at in range(0, table_bytes, batch_bytes):
        length = min(batch_bytes, table_bytes - at)
        data = await _read_exact(read, table_at + at, length, "the group descriptor table")
        for offset in range(0, length, geometry.desc_bytes):
            yield _parse_desc(geometry, number, data[offset : offset + geometry.desc_bytes])
            number += 1


class _BlockBits:
    """One bit per block from ``first_data_block`` on (so each group's bitmap lands on a byte
    boundary: blocks per group is a multiple of 8)."""

    def __init__(self, geometry: _Geometry) -> None:
        self.base = geometry.first_data_block
        self.nbits = geometry.blocks_count - self.base
        self.bits = bytearray(-(-self.nbits // 8))

    def mark(self, start_block: int, count_blocks: int) -> None:
        """Set blocks ``[start, start + count)`` (clipped to the file system)."""
        start = max(start_block - self.base, 0)
        end = min(start_block + count_blocks - self.base, self.nbits)
        while start < end and start % 8:
            self.bits[start // 8] |= 1 << (start % 8)
            start += 1
        full_bytes = (end - start) // 8
        if full_bytes > 0:
            self.bits[start // 8 : start // 8 + full_bytes] = b"\xff" * full_bytes
            start += full_bytes * 8
        while start < end:
            self.bits[start // 8] |= 1 << (start % 8)
            start += 1

    def load(self, group: int, bitmap: bytes, blocks_per_group: int) -> None:
        """OR a group's on-disk bitmap in (the last group's is cut at the end of the fs)."""
        at = group * blocks_per_group // 8
        piece = bitmap[: min(blocks_per_group // 8, len(self.bits) - at)]
        current = int.from_bytes(self.bits[at : at + len(piece)], "little")
        merged = current | int.from_bytes(piece, "little")
        self.bits[at : at + len(piece)] = merged.to_bytes(len(piece), "little")

    def runs(self) -> Iterator[tuple[int, int]]:
        """``(start_block, end_block)`` of every run of set bits, in order."""
        if self.nbits % 8:
            self.bits[-1] &= (1 << (self.nbits % 8)) - 1  # padding bits of the last group
        run_start = run_end = -1
        for match in _NONZERO_TOKENS.finditer(self.bits):
            first_bit = match.start() * 8
            value = match.group()[0]
            pieces = (
                ((first_bit, match.end() * 8),)
                if value == 0xFF
                else tuple((first_bit + a, first_bit + b) for a, b in _BYTE_RUNS[value])
            )
            for start, end in pieces:
                if start == run_end:
                    run_end = end
                    continue
                if run_end > run_start:
                    yield self.base + run_start, self.base + run_end
                run_start, run_end = start, end
        if run_end > run_start:
            yield self.base + run_start, self.base + run_end


#: Runs of 0xff bytes, or one byte that is neither 0x00 nor 0xff.
_NONZERO_TOKENS = re.compile(rb"\xff+|[\x01-\xfe]")


def _runs_in_byte(value: int) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    for bit in range(8):
        if value >> bit & 1:
            if runs and runs[-1][1] == bit:
                runs[-1] = (runs[-1][0], bit + 1)
            else:
                runs.append((bit, bit + 1))
    return tuple(runs)


_BYTE_RUNS = tuple(_runs_in_byte(value) for value in range(256))


class _Ranges:
    """Sorted ``[start, end)`` ranges appended in order, merged when they touch.

    Why the gap bridging: a hostile (or absurdly fragmented) bitmap could alternate bits and
    ask for millions of ranges. Past ``limit`` ranges the median free gap becomes a gap that is
    bridged (counted as used: copying too much is safe), which at least halves the list.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bridge_blocks = 0
        self.items: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        if self.items and start - self.items[-1][1] <= self.bridge_blocks:
            self.items[-1] = (self.items[-1][0], max(end, self.items[-1][1]))
            return
        self.items.append((start, end))
        if len(self.items) > self.limit:
            gaps = sorted(b[0] - a[1] for a, b in itertools.pairwise(self.items))
            self.bridge_blocks = max(self.bridge_blocks, gaps[len(gaps) // 2])
            items, self.items = self.items, []
            for item in items:
                self.add(*item)


def _batches(bitmaps: list[tuple[int, int]], most_blocks: int) -> Iterator[list[tuple[int, int]]]:
    """Sorted ``(bitmap block, group)`` pairs cut into runs of nearby blocks (at most
    ``_BATCH_GAP_BLOCKS`` apart), each spanning at most ``most_blocks``: side-by-side bitmaps
    come in one read."""
    batch: list[tuple[int, int]] = []
    for pair in bitmaps:
        if batch and (
            pair[0] - batch[-1][0] > _BATCH_GAP_BLOCKS + 1 or pair[0] - batch[0][0] >= most_blocks
        ):
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch


async def ext4_used_ranges(read: Read, size_bytes: int) -> Ext4Usage:
    """The blocks to copy to reproduce the ext2/3/4 file system at the start of a partition.

    ``read(offset_bytes, length_bytes)`` reads the partition (short at its end is fine);
    ``size_bytes`` is the partition's size, which the file system must fit in.

    Raises:
        Ext4Error: not ext4, metadata that does not add up, or a layout or state whose bitmaps
            cannot be trusted (see the module docstring): copy the partition whole instead.
    """
    geometry = _parse_super(await read(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES), size_bytes)
    bs = geometry.block_bytes
    bits = _BlockBits(geometry)
    bits.mark(geometry.first_data_block, geometry.backup_blocks)  # superblock + descriptors
    to_read: list[tuple[int, int]] = []
    async for group in _groups(read, geometry):
        if geometry.uninit_is_meaningful and group.flags & _BG_BLOCK_UNINIT:
            if geometry.has_backup(group.number):
                bits.mark(geometry.group_start(group.number), geometry.backup_blocks)
            bits.mark(group.block_bitmap, 1)
            bits.mark(group.inode_bitmap, 1)
            bits.mark(group.inode_table, geometry.inode_table_blocks)
        else:
            to_read.append((group.block_bitmap, group.number))
    to_read.sort()
    for batch in _batches(to_read, max(1, _READ_BATCH_BYTES // bs)):
        first = batch[0][0]
        data = await _read_exact(
            read, first * bs, (batch[-1][0] - first + 1) * bs, "a block bitmap"
        )
        for block, number in batch:
            at = (block - first) * bs
            bits.load(number, data[at : at + bs], geometry.blocks_per_group)
    ranges = _Ranges(_MAX_RANGES)
    if geometry.first_data_block:
        ranges.add(0, geometry.first_data_block)  # the boot block before a 1 KiB-block fs
    for start, end in bits.runs():
        ranges.add(start, end)
    return Ext4Usage(
        block_bytes=bs,
        blocks_count=geometry.blocks_count,
        used=tuple((start, end - start) for start, end in ranges.items),
    )
