"""PMT reader: MediaTek's partition management table on MT65xx eMMC and MTK raw NAND.

Why: before GPT (MT6735), MTK phones kept their real layout in the PMT; the MBR/EBR chain lists
only the file systems, and ``/proc/dumchar_info`` is the PMT as the kernel printed it. The table
has no header, no CRC and three row widths (76, 88, 96 bytes) recorded nowhere reliable
(formats.md §2), so this reader

* finds a copy by its signature pair (``PTvN`` at +0 and +2044 of a 2048-byte block on a 512-byte
  boundary of the first 10 MiB), or on a ``flash`` region at the start of one of its last 8 erase
  blocks (NAND dumps); main copies first, backups (``MPTN``) only when no main copy parses;
* picks the row width (and on NAND where rows start) by parsing every layout the signature allows
  and keeping the one with the most plausible rows: a wrong width reads its second row from the
  middle of a field, which looks like an empty name (the end of the list) or garbage;
* turns eMMC *linear* addresses into offsets (§1.3): ``PRELOADER``/``DSP_BL`` live in boot1, the
  rest count from the ``MBR`` row; ``0xFFFFnnnn`` starts are reserved from the region's end (§1.4).

Reads are bounded: 10 MiB for the eMMC search, a few KiB for the NAND probe and per table. It is
a sans-I/O generator, see :mod:`mtkfs.maps.model`.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace

from mtkfs.errors import CorruptMapError, NoMapError
from mtkfs.maps import names
from mtkfs.maps.model import (
    MapReader,
    Need,
    Partition,
    PartitionMap,
    Region,
    is_reserved_marker,
    place,
    reserved_size_bytes,
)

#: Signatures as the bytes on flash (LE u32 0x50547631 etc. read backwards) → their names.
MAIN_SIGNATURES = {b"1vTP": "PTv1", b"2vTP": "PTv2", b"3vTP": "PTv3"}
BACKUP_SIGNATURES = {b"1TPM": "MPT1", b"2TPM": "MPT2", b"3TPM": "MPT3"}
_SIGNATURE_NAMES = MAIN_SIGNATURES | BACKUP_SIGNATURES
SIGNATURE_BYTES = 4
#: eMMC search: CFG_EMMC_PMT_SIZE window from byte 1024 (backups from 1024+2048), 512-byte step.
EMMC_SCAN_END_BYTES = 0xA00000
EMMC_SCAN_START_BYTES = 1024
EMMC_BACKUP_SCAN_START_BYTES = 1024 + 2048
EMMC_STEP_BYTES = 512
SCAN_CHUNK_BYTES = 1024 * 1024
#: One eMMC copy: sig @0, rows @4, pt_info @2040 (seq; pt_next = high nibble @2041), sig @2044.
BLOCK_BYTES = 2048
ROWS_OFFSET_BYTES = 4
PT_INFO_OFFSET_BYTES = 2040
TRAILER_OFFSET_BYTES = 2044
#: Bounds against hostile images: blocks per pt_next chain, hits tried per search.
MAX_BLOCKS = 8
MAX_ATTEMPTS = 32
NAND_ERASE_BLOCK_BYTES = (128 * 1024, 256 * 1024)
NAND_TAIL_BLOCKS = 8
#: MTK tables hold at most 128 rows (the PTv3 parser's bound); we never read more.
MAX_ROWS = 128
NAND_TABLE_BYTES = 8 + MAX_ROWS * 96
FLASH_REGION = "flash"
#: eMMCs this large need 64-bit (88-byte) PTv1 rows; smaller ones used the 76-byte form.
LARGE_EMMC_BYTES = 4 << 30
#: Starts and sizes beyond 1 TiB are not from a phone of the PMT era.
MAX_PLAUSIBLE_BYTES = 1 << 40
TO_END_SIZES = frozenset({0, 0xFFFFFFFF, 0xFFFFFFFF_FFFFFFFF})
BOOT_ROWS = frozenset({"PRELOADER", "DSP_BL"})
NODL_PREFIX = "__NODL_"
#: name[64] then size, offset, mask_flags; 96-byte rows carry part_id between size and offset.
_ROWS = {76: struct.Struct("<64sIII"), 88: struct.Struct("<64sQQQ"), 96: struct.Struct("<64sQQQQ")}
#: Row layouts to try, preferred first: eMMC widths, NAND (rows start, width).
_EMMC_WIDTHS = {"1": (76, 88), "2": (88,), "3": (96,)}
_NAND_LAYOUTS = {  # PTv3: 8-byte sig area (sig + TLC ratio); PTv2: sig(4); PTv1 as mtkclient
    "1": ((8, 88), (4, 88), (4, 76), (8, 76)),
    "2": ((4, 88), (8, 88)),
    "3": ((8, 96), (4, 96)),
}


class _Bad(Exception):
    """A copy failed a check. ``rows_read`` (how far it got) picks the likeliest width's report."""

    def __init__(self, message: str, rows_read: int = 0) -> None:
        super().__init__(message)
        self.rows_read = rows_read


@dataclass(frozen=True)
class _Row:
    """One row as written (``offset_bytes`` is the raw field: a linear address on eMMC)."""

    number: int
    name: str
    size_bytes: int
    offset_bytes: int
    mask_flags: int
    part_id: int | None
    padded: bool  # NULs after the name, as memset-then-strcpy leaves them

    @property
    def reserved(self) -> bool:
        """A 0xFFFFnnnn start: an area counted back from the region's end."""
        return is_reserved_marker(self.offset_bytes)

    @property
    def to_end(self) -> bool:
        """A size of 0 (or all ones): the partition runs to the next one or the region's end."""
        return self.size_bytes in TO_END_SIZES and not self.reserved


@dataclass
class _Table:
    """A copy that parsed: its rows and how and where it was found."""

    signature: str
    layout: str  # "eMMC" or "NAND"
    offset_bytes: int
    rows: tuple[_Row, ...]
    entry_bytes: int
    sequence_number: int | None = None
    warnings: list[str] = field(default_factory=list)


_Search = Generator[Need, bytes, _Table | None]
_Reading = Generator[Need, bytes, _Table]


def read_pmt(region: Region, *, boot_region: Region | None = None) -> MapReader:
    """Find and read the PMT of ``region`` (``user`` on eMMC, ``flash`` for a NAND/linear dump).

    ``boot_region`` (boot1) receives the PRELOADER/DSP_BL rows of an eMMC table; without it
    they are listed as missing.

    Raises:
        NoMapError: no signature pair anywhere we look.
        CorruptMapError: signatures found, but no copy holds plausible rows.
    """
    failures: list[str] = []
    table = None
    if region.name == FLASH_REGION:
        table = yield from _search_nand(region, failures)
    if table is None:
        table = yield from _search_emmc(region, failures)
    if table is None:
        if failures:
            raise CorruptMapError(
                f"PMT in {region.name} is corrupt: {_summary(failures)}. "
                "Pass --map FILE with a scatter file"
            )
        scanned = min(region.size_bytes, EMMC_SCAN_END_BYTES)
        nand = " nor at the start of its last 8 erase blocks" if region.name == FLASH_REGION else ""
        raise NoMapError(
            f"no PMT found in {region.name}: no PTv1-3/MPT1-3 signature pair on a 512-byte "
            f"boundary of its first {scanned:#x} bytes{nand}"
        )
    return _build_map(table, region, boot_region)


def _search_emmc(region: Region, failures: list[str]) -> _Search:
    """Scan the first 10 MiB in 1 MiB reads for a block with one signature at +0 and +2044."""
    end = min(EMMC_SCAN_END_BYTES, region.size_bytes)
    buf, buf_start, exhausted, attempts = b"", 0, False, 0
    backups: list[tuple[int, bytes]] = []
    for pos in range(EMMC_SCAN_START_BYTES, end - BLOCK_BYTES + 1, EMMC_STEP_BYTES):
        if pos + BLOCK_BYTES > buf_start + len(buf):
            if exhausted:
                break
            read_at = buf_start + len(buf)
            want = min(SCAN_CHUNK_BYTES, end - read_at)
            data = (yield Need(region.name, read_at, want))[:want]
            exhausted = len(data) < want
            buf, buf_start = (buf + data)[pos - buf_start :], pos
            if len(buf) < BLOCK_BYTES:
                break
        block = buf[pos - buf_start : pos - buf_start + BLOCK_BYTES]
        sig = block[:SIGNATURE_BYTES]
        if sig != block[TRAILER_OFFSET_BYTES:]:
            continue
        if sig in MAIN_SIGNATURES and attempts < MAX_ATTEMPTS:
            attempts += 1
            table = yield from _attempt(_emmc_table(region, pos, sig, block), pos, sig, failures)
            if table is not None:
                return table
        elif sig in BACKUP_SIGNATURES and pos >= EMMC_BACKUP_SCAN_START_BYTES:
            backups.append((pos, sig))
    tries = [(pos, sig, _emmc_table(region, pos, sig, None)) for pos, sig in backups[:MAX_ATTEMPTS]]
    return (yield from _backups(tries, failures))


def _search_nand(region: Region, failures: list[str]) -> _Search:
    """Probe the first bytes of each of the last 8 erase blocks (128 or 256 KiB) of a dump.

    NAND tables (MT6589 ``partition_mt.c``, the PTv3 mtd parser) sit a few blocks from the end.
    A 4-byte probe per block start keeps this cheap on slow links; only a hit reads 12 KiB.
    """
    size, backups = region.size_bytes, []
    starts = {
        (size // erase - back) * erase
        for erase in NAND_ERASE_BLOCK_BYTES
        for back in range(1, NAND_TAIL_BLOCKS + 1)
    }
    for pos in sorted(start for start in starts if start >= 0):
        sig = (yield Need(region.name, pos, SIGNATURE_BYTES))[:SIGNATURE_BYTES]
        if sig in BACKUP_SIGNATURES:
            backups.append((pos, sig))
        elif sig in MAIN_SIGNATURES:
            table = yield from _attempt(_nand_table(region, pos, sig), pos, sig, failures)
            if table is not None:
                return table
    tries = [(pos, sig, _nand_table(region, pos, sig)) for pos, sig in backups]
    return (yield from _backups(tries, failures))


def _attempt(reading: _Reading, pos: int, sig: bytes, failures: list[str]) -> _Search:
    """Run one table reading; on failure note why (for the CorruptMapError) and give None."""
    try:
        return (yield from reading)
    except _Bad as bad:
        failures.append(f"{_SIGNATURE_NAMES[sig]} at byte {pos:#x}: {bad}")
        return None


def _backups(tries: Sequence[tuple[int, bytes, _Reading]], failures: list[str]) -> _Search:
    """The first backup copy that parses, with a warning that says why it is used."""
    for pos, sig, reading in tries:
        table = yield from _attempt(reading, pos, sig, failures)
        if table is not None:
            why = (
                f"the main copy is unusable ({_summary(failures)})" if failures else "no main copy"
            )
            table.warnings.insert(0, f"{why}; using the backup PMT copy at byte {pos:#x}")
            return table
    return None


def _summary(failures: Sequence[str]) -> str:
    more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
    return "; ".join(failures[:3]) + more


def _emmc_table(region: Region, pos: int, sig: bytes, first: bytes | None) -> _Reading:
    """Read the block chain at ``pos`` (following pt_next) and parse its rows; _Bad if unusable."""
    blocks: list[bytes] = []
    block, at, chain_note = first, pos, ""
    while len(blocks) < MAX_BLOCKS:
        if block is None:
            block = (yield Need(region.name, at, BLOCK_BYTES))[:BLOCK_BYTES]
        if len(block) < BLOCK_BYTES or not block.startswith(sig) or not block.endswith(sig):
            if not blocks:
                raise _Bad("the block no longer holds its signature pair")
            why = "the image ends there" if len(block) < BLOCK_BYTES else "it has no signatures"
            chain_note = f"pt_next says a PMT block follows at byte {at:#x}, but {why}"
            break
        blocks.append(block)
        if not block[PT_INFO_OFFSET_BYTES + 1] >> 4:
            break
        block, at = None, at + BLOCK_BYTES
    name = _SIGNATURE_NAMES[sig]
    widths = _EMMC_WIDTHS[name[-1]]
    if region.size_bytes >= LARGE_EMMC_BYTES:
        widths = widths[::-1]
    areas = [b[ROWS_OFFSET_BYTES:PT_INFO_OFFSET_BYTES] for b in blocks]
    rows, width, terminated = _best([(width, areas) for width in widths])
    table = _Table(name, "eMMC", pos, rows, width, blocks[0][PT_INFO_OFFSET_BYTES])
    if chain_note and not terminated:
        table.warnings.append(f"{chain_note}; rows after row {len(rows)} are missing")
    return table


def _nand_table(region: Region, pos: int, sig: bytes) -> _Reading:
    """Parse a NAND-form table (signature area, then rows) at ``pos``; _Bad if unusable."""
    data = (yield Need(region.name, pos, NAND_TABLE_BYTES))[:NAND_TABLE_BYTES]
    name = _SIGNATURE_NAMES[sig]
    layouts = _NAND_LAYOUTS[name[-1]]
    rows, width, terminated = _best([(w, [data[at:]]) for at, w in layouts])
    table = _Table(name, "NAND", pos, rows, width)
    if not terminated and len(data) < NAND_TABLE_BYTES:
        table.warnings.append(
            f"the PMT runs into the end of {region.name}; rows after row {len(rows)} may be missing"
        )
    return table


_Parse = tuple[tuple[_Row, ...], int, bool]  # rows, row width, ended by an empty row


def _best(candidates: Sequence[tuple[int, Sequence[bytes]]]) -> _Parse:
    """The most plausible parse among (width, row areas) candidates; the earlier one on ties.

    Rank: most rows, then most cleanly NUL-padded names. A wrong width or start misreads its
    second row from the middle of a field: garbage, or an empty name in a row that is not blank.
    """
    good: list[_Parse] = []
    problems: list[_Bad] = []
    for width, areas in candidates:
        try:
            good.append(_parse_rows(width, areas))
        except _Bad as bad:
            problems.append(_Bad(f"as {width}-byte rows: {bad}", bad.rows_read))
    if not good:
        raise max(problems, key=lambda bad: bad.rows_read)
    return max(good, key=lambda p: (len(p[0]), sum(row.padded for row in p[0])))


def _parse_rows(width: int, areas: Sequence[bytes]) -> _Parse:
    """Rows of ``width`` bytes until a blank row (name starting 0x00/0xFF); _Bad on garbage."""
    rows: list[_Row] = []
    slots = [(area, at) for area in areas for at in range(0, len(area) - width + 1, width)]
    for area, at in slots[:MAX_ROWS]:
        if area[at] in (0x00, 0xFF):
            if area[at : at + width].strip(b"\x00\xff"):
                raise _Bad(f"row {len(rows) + 1} has no name but is not blank", len(rows))
            break
        raw_name, *fields = _ROWS[width].unpack_from(area, at)
        size, part_id, offset, mask = fields if width == 96 else (fields[0], None, *fields[1:])
        rows.append(_check_row(len(rows) + 1, raw_name, size, offset, mask, part_id))
    if not rows:
        raise _Bad("the table has no rows (its first row is blank)")
    return tuple(rows), width, len(rows) < len(slots)


def _check_row(
    number: int, raw_name: bytes, size: int, offset: int, mask: int, part_id: int | None
) -> _Row:
    text = raw_name.split(b"\x00", 1)[0]
    if not all(0x20 <= c < 0x7F for c in text):
        raise _Bad(f"row {number}: name {text[:16]!r} is not printable ASCII", number - 1)
    label = text.decode("ascii")
    if offset >= MAX_PLAUSIBLE_BYTES and not is_reserved_marker(offset):
        raise _Bad(f"row {number} ({label}): start {offset:#x} is implausible", number - 1)
    if size >= MAX_PLAUSIBLE_BYTES and size not in TO_END_SIZES:
        raise _Bad(f"row {number} ({label}): size {size:#x} is implausible", number - 1)
    return _Row(number, label, size, offset, mask, part_id, not any(raw_name[len(text) :]))


def _build_map(table: _Table, region: Region, boot_region: Region | None) -> PartitionMap:
    """Resolve rows into partitions of the source's regions, with the warnings users need.

    eMMC addresses are linear unless the region is itself a linear dump (``flash``): boot rows go
    to boot1, the rest count from the MBR row.
    """
    regions = {region.name: region} | ({boot_region.name: boot_region} if boot_region else {})
    boot = boot_region.name if boot_region else "boot1"
    rows, linear = table.rows, region.name != FLASH_REGION
    keys = [row.name.upper().removeprefix(NODL_PREFIX) for row in rows]  # "not downloadable"
    mbrs = [
        r.offset_bytes for k, r in zip(keys, rows, strict=True) if k == "MBR" and not r.reserved
    ]
    mbr = mbrs[0] if mbrs and linear else None
    warnings = list(table.warnings)
    if linear and mbr is None:
        warnings.append(
            f"the PMT has no MBR row, so its linear addresses cannot be turned into {region.name} "
            "offsets; they are used as they are (wrong by the boot-area size for a user-area image)"
        )
    labels = names.unique_names(
        names.clean_name(key.lower(), f"pmt{row.number}")
        for key, row in zip(keys, rows, strict=True)
    )
    drafts: list[Partition] = []  # region and offset settled; sizes as written
    for key, label, row in zip(keys, labels, rows, strict=True):
        where, offset, notes = region.name, row.offset_bytes, []
        if row.reserved:
            offset = region.size_bytes - reserved_size_bytes(offset)
        elif linear and (key in BOOT_ROWS or (mbr is not None and offset < mbr)):
            where = boot
            if key not in BOOT_ROWS:
                notes.append(f"starts at linear {offset:#x}, before the MBR ({mbr:#x}); in {boot}")
        elif mbr is not None:
            offset -= mbr
        extra = {"pmt_signature": table.signature, "entry_bytes": table.entry_bytes,
                 "mask_flags": row.mask_flags, "linear_offset": row.offset_bytes,
                 "table_offset_bytes": table.offset_bytes, "to_end": row.to_end}  # fmt: skip
        for name, value in (("sequence_number", table.sequence_number), ("part_id", row.part_id)):
            if value is not None:
                extra[name] = value
        drafts.append(Partition(label, where, offset, row.size_bytes, number=row.number,
                                origin="pmt", warnings=tuple(notes), extra=extra))  # fmt: skip
    # A regular row past the end means a truncated image, whose end is not the device's end.
    truncated = any(
        p.region == region.name and not (r.reserved or r.to_end) and p.end_bytes > region.size_bytes
        for p, r in zip(drafts, rows, strict=True)
    )
    starts = [(p.region, p.offset_bytes) for p, r in zip(drafts, rows, strict=True)
              if not (truncated and r.reserved)]  # fmt: skip
    parts = [
        _settle(part, row, starts, regions, region, truncated=truncated, boot_end=mbr)
        for part, row in zip(drafts, rows, strict=True)
    ]
    return PartitionMap(
        partitions=tuple(parts),
        origin=f"PMT {table.signature} ({table.layout}, {table.entry_bytes}-byte entries, "
        f"{len(parts)} rows)",
        warnings=(*warnings, *_overlaps(parts)),
    )


def _settle(
    part: Partition,
    row: _Row,
    starts: Sequence[tuple[str, int]],
    regions: dict[str, Region],
    region: Region,
    *,
    truncated: bool,
    boot_end: int | None,
) -> Partition:
    """Fill in reserved and to-end sizes, then place the partition in the source's regions."""
    if row.reserved:
        size = reserved_size_bytes(row.offset_bytes)
        part = replace(part, size_bytes=size, extra={**part.extra, "reserved_from_end_bytes": size})
        if size == 0 or size > region.size_bytes or truncated:
            why = (
                f"{region.name} looks truncated (rows run past its end), so its end is unknown"
                if truncated
                else f"{row.offset_bytes:#x} reserves {size:#x} of a {region.size_bytes:#x}-byte "
                f"{region.name}"
            )
            notes = (*part.warnings, f"reserved from the end: {why}; not exposed")
            return replace(part, offset_bytes=max(part.offset_bytes, 0), size_bytes=0,
                           declared_size_bytes=size, exposed=False, warnings=notes)  # fmt: skip
    elif row.to_end:  # up to the next start in its region, or the region's end
        limit = regions[part.region].size_bytes if part.region in regions else part.offset_bytes
        later = [at for where, at in starts if where == part.region and at > part.offset_bytes]
        part = replace(part, size_bytes=max(min([*later, limit]) - part.offset_bytes, 0))
    # PRELOADER's size often spans the whole boot area (boot1+boot2+rpmb): clamp that quietly.
    boot_span = boot_end is not None and part.region != region.name and part.end_bytes <= boot_end
    part = place(part, regions, quiet=row.to_end or row.reserved or boot_span)
    if part.exposed and part.size_bytes == 0:
        return replace(part, exposed=False, warnings=(*part.warnings, "empty; not exposed"))
    if row.to_end and truncated and part.exposed:
        part = part.with_warning("runs to the end of a truncated image, so it may be cut short")
    if part.exposed and part.offset_bytes % 512:
        part = part.with_warning(
            f"starts at byte {part.offset_bytes:#x}, not on a 512-byte sector boundary"
        )
    return part


def _overlaps(parts: Sequence[Partition]) -> list[str]:
    """Plain-word warnings for exposed partitions that share bytes of a region."""
    warnings: list[str] = []
    widest: Partition | None = None
    for part in sorted((p for p in parts if p.exposed), key=lambda p: (p.region, p.offset_bytes)):
        if widest is not None and widest.region == part.region:
            if part.offset_bytes < widest.end_bytes:
                warnings.append(
                    f"{part.name} (bytes {part.offset_bytes:#x}-{part.end_bytes:#x} of "
                    f"{part.region}) overlaps {widest.name} (bytes {widest.offset_bytes:#x}-"
                    f"{widest.end_bytes:#x})"
                )
            if part.end_bytes <= widest.end_bytes:
                continue
        widest = part
    return warnings
