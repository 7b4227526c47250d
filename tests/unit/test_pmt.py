"""PMT reader: MT6582/MT6577 tables in all three row widths, NAND tables, hostile bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from map_checks import assert_sane_map

from mtkfs.errors import CorruptMapError, MapError, NoMapError
from mtkfs.maps.model import Need, PartitionMap, Region, run_reader
from mtkfs.maps.pmt import read_pmt

KIB, MIB, GIB = 1024, 1024 * 1024, 1024 * 1024 * 1024
BLOCK = 2048
PTV1, PTV2, PTV3 = b"1vTP", b"2vTP", b"3vTP"
MPT1, MPT2, MPT3 = b"1TPM", b"2TPM", b"3TPM"


# --- builders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    size: int
    offset: int  # as written in the table: linear on eMMC
    mask: int = 0
    part_id: int = 0


def pack_row(row: Row, width: int) -> bytes:
    name = row.name.encode("ascii")
    if width == 76:
        return struct.pack("<64sIII", name, row.size, row.offset, row.mask)
    if width == 88:
        return struct.pack("<64sQQQ", name, row.size, row.offset, row.mask)
    return struct.pack("<64sQQQQ", name, row.size, row.part_id, row.offset, row.mask)


def emmc_blocks(sig: bytes, rows: Sequence[Row], width: int, *, sequence: int = 1) -> bytes:
    """dumchar.c's 2048-byte copies: sig, rows from +4, pt_info at +2040, sig at +2044.

    Rows that do not fit go to a following block, and pt_next (high nibble of byte 2041) says so.
    """
    per_block = (2040 - 4) // width
    chunks = [rows[i : i + per_block] for i in range(0, len(rows), per_block)] or [[]]
    out = b""
    for index, chunk in enumerate(chunks):
        block = bytearray(BLOCK)
        block[0:4] = block[2044:2048] = sig
        for slot, row in enumerate(chunk):
            block[4 + slot * width : 4 + (slot + 1) * width] = pack_row(row, width)
        block[2040] = sequence
        block[2041] = 0x10 if index < len(chunks) - 1 else 0
        out += bytes(block)
    return out


def nand_table(sig: bytes, rows: Sequence[Row], width: int, rows_at: int) -> bytes:
    """A NAND page: signature area (4 or 8 bytes), rows, then erased (0xFF) flash."""
    head = sig + bytes(rows_at - len(sig))
    body = b"".join(pack_row(row, width) for row in rows)
    return head + body + b"\xff" * 256


def sparse_reader(size_bytes: int, pieces: Mapping[int, bytes]) -> Callable[[Need], bytes]:
    """Zeros except ``pieces`` (byte offset → data); the image ends at ``size_bytes``.

    Nothing large is ever allocated beyond one answer, so 8 GiB "devices" cost nothing.
    """

    def read(need: Need) -> bytes:
        end = min(need.offset_bytes + need.size_bytes, size_bytes)
        if need.offset_bytes < 0 or need.offset_bytes >= end:
            return b""
        out = bytearray(end - need.offset_bytes)
        for at, data in pieces.items():
            lo, hi = max(at, need.offset_bytes), min(at + len(data), end)
            if lo < hi:
                out[lo - need.offset_bytes : hi - need.offset_bytes] = data[lo - at : hi - at]
        return bytes(out)

    return read


class Recorder:
    """Wraps a read function and remembers every Need."""

    def __init__(self, read: Callable[[Need], bytes]) -> None:
        self.read = read
        self.needs: list[Need] = []

    def __call__(self, need: Need) -> bytes:
        self.needs.append(need)
        return self.read(need)

    @property
    def total_bytes(self) -> int:
        return sum(need.size_bytes for need in self.needs)


def parse(
    size_bytes: int,
    pieces: Mapping[int, bytes],
    *,
    name: str = "user",
    boot: Region | None = None,
    image_bytes: int | None = None,
) -> PartitionMap:
    """The PMT of a ``size_bytes`` region whose image holds ``image_bytes`` (short reads)."""
    reader = read_pmt(Region(name, size_bytes), boot_region=boot)
    image = size_bytes if image_bytes is None else image_bytes
    return run_reader(reader, sparse_reader(image, pieces))


def spans(pmap: PartitionMap) -> list[tuple[str, str, int, int, bool]]:
    return [(p.name, p.region, p.offset_bytes, p.size_bytes, p.exposed) for p in pmap.partitions]


# --- Lenovo S650 / MT6582 (the seed's dumchar_info; linear = logical + 20 MiB) ----------------

S650_USER = 7779516416  # /proc/partitions: 7597184 KiB
S650_BOOT1 = 2 * MIB  # mmcblk0boot0: 2048 KiB
MBR_LINEAR = 0x1400000
BMTPOOL_MARKER = 0xFFFF00A8  # 0xA8 x 128 KiB = 0x1500000 before the end

#: (name as in the PMT, size, logical start in the user area) from the seed's dumchar_info.
S650_USER_ROWS = [
    ("MBR", 0x80000, 0x0),
    ("EBR1", 0x80000, 0x80000),
    ("__NODL_PRO_INFO", 0x300000, 0x100000),
    ("__NODL_NVRAM", 0x500000, 0x400000),
    ("__NODL_PROTECT_F", 0xA00000, 0x900000),
    ("__NODL_PROTECT_S", 0xA00000, 0x1300000),
    ("__NODL_SECCFG", 0x20000, 0x1D00000),
    ("UBOOT", 0x60000, 0x1D20000),
    ("BOOTIMG", 0x600000, 0x1D80000),
    ("RECOVERY", 0xC00000, 0x2380000),
    ("SEC_RO", 0x600000, 0x2F80000),
    ("__NODL_MISC", 0x80000, 0x3580000),
    ("LOGO", 0x300000, 0x3600000),
    ("EBR2", 0x80000, 0x3900000),
    ("__NODL_EXPDB", 0xA00000, 0x3980000),
    ("ANDROID", 0x40000000, 0x4380000),
    ("CACHE", 0x8000000, 0x44380000),
    ("USRDATA", 0xC0000000, 0x4C380000),
    ("__NODL_FAT", 0xC37A0000, 0x10C380000),
]


def s650_rows() -> list[Row]:
    rows = [Row("PRELOADER", 0x1400000, 0x0, mask=0)]
    rows += [Row(name, size, logical + MBR_LINEAR) for name, size, logical in S650_USER_ROWS]
    rows.append(Row("__NODL_BMTPOOL", 0x1500000, BMTPOOL_MARKER))
    return rows


S650_EXPECTED_NAMES = [
    "preloader", "mbr", "ebr1", "pro_info", "nvram", "protect_f", "protect_s", "seccfg", "uboot",
    "bootimg", "recovery", "sec_ro", "misc", "logo", "ebr2", "expdb", "android", "cache",
    "usrdata", "fat", "bmtpool",
]  # fmt: skip

#: An odd 512-byte boundary inside the first 10 MiB (inside pro_info's area).
S650_PMT_AT = 0x200000 + 7 * 512


def s650_user_spans() -> list[tuple[str, str, int, int, bool]]:
    user = [
        (name.removeprefix("__NODL_").lower(), "user", logical, size, True)
        for name, size, logical in S650_USER_ROWS
    ]
    return [
        ("preloader", "boot1", 0, S650_BOOT1, True),
        *user,
        ("bmtpool", "user", S650_USER - 0x1500000, 0x1500000, True),
    ]


@pytest.mark.parametrize(("sig", "width"), [(PTV1, 88), (PTV2, 88), (PTV3, 96)])
def test_s650_table_in_user_area(sig: bytes, width: int) -> None:
    rows = [
        Row(r.name, r.size, r.offset, mask=0, part_id=8 if r.offset else 1) for r in s650_rows()
    ]
    pieces = {S650_PMT_AT: emmc_blocks(sig, rows, width, sequence=3)}
    pmap = parse(S650_USER, pieces, boot=Region("boot1", S650_BOOT1))
    assert pmap.origin == f"PMT {sig[::-1].decode()} (eMMC, {width}-byte entries, 21 rows)"
    assert [p.name for p in pmap.partitions] == S650_EXPECTED_NAMES
    assert spans(pmap) == s650_user_spans()
    # MTK's runtime-sized fat runs to the end of the user area, over the BMT pool.
    assert pmap.warnings == (
        "bmtpool (bytes 0x1ce620000-0x1cfb20000 of user) overlaps fat "
        "(bytes 0x10c380000-0x1cfb20000)",
    )
    assert all(not p.warnings for p in pmap.partitions)  # preloader's 20 MiB is clamped quietly
    assert all(p.origin == "pmt" for p in pmap.partitions)
    android = pmap.by_name("android")
    assert android.number == 17
    expected_extra = {
        "pmt_signature": sig[::-1].decode(),
        "entry_bytes": width,
        "mask_flags": 0,
        "linear_offset": 0x4380000 + MBR_LINEAR,
        "table_offset_bytes": S650_PMT_AT,
        "to_end": False,
        "sequence_number": 3,
    }
    if width == 96:
        expected_extra["part_id"] = 8
    assert dict(android.extra) == expected_extra
    bmtpool = pmap.by_name("bmtpool")
    assert bmtpool.extra["reserved_from_end_bytes"] == 0x1500000
    assert bmtpool.extra["linear_offset"] == BMTPOOL_MARKER


def test_s650_reads_stop_at_the_table() -> None:
    recorder = Recorder(sparse_reader(S650_USER, {S650_PMT_AT: emmc_blocks(PTV1, s650_rows(), 88)}))
    run_reader(read_pmt(Region("user", S650_USER)), recorder)
    assert recorder.needs == [
        Need("user", 0, MIB),
        Need("user", MIB, MIB),
        Need("user", 2 * MIB, MIB),
    ]


def test_without_boot_region_preloader_is_missing() -> None:
    pmap = parse(S650_USER, {S650_PMT_AT: emmc_blocks(PTV1, s650_rows(), 88)})
    preloader = pmap.by_name("preloader")
    assert not preloader.exposed and preloader.region == "boot1" and preloader.size_bytes == 0
    assert preloader.declared_size_bytes == 0x1400000
    assert "missing: lives in region boot1" in preloader.warnings[0]
    assert "Boot1" in preloader.warnings[0]
    assert all(p.exposed for p in pmap.partitions[1:])


def test_dsp_bl_and_rows_before_the_mbr_are_in_boot1() -> None:
    rows = [
        Row("PRELOADER", 0x40000, 0),
        Row("DSP_BL", 0x5C0000, 0x40000),
        Row("NVRAM_BAK", 0x80000, 0x600000),  # before the MBR, not a known boot row
        Row("MBR", 0x80000, 0x680000),
        Row("USRDATA", 0, 0x700000),
    ]
    pmap = parse(64 * MIB, {4096: emmc_blocks(PTV1, rows, 88)}, boot=Region("boot1", 8 * MIB))
    assert spans(pmap) == [
        ("preloader", "boot1", 0, 0x40000, True),
        ("dsp_bl", "boot1", 0x40000, 0x5C0000, True),
        ("nvram_bak", "boot1", 0x600000, 0x80000, True),
        ("mbr", "user", 0, 0x80000, True),
        ("usrdata", "user", 0x80000, 64 * MIB - 0x80000, True),  # size 0: to the end
    ]
    assert "before the MBR (0x680000); in boot1" in pmap.by_name("nvram_bak").warnings[0]
    assert pmap.by_name("usrdata").extra["to_end"] is True
    assert pmap.by_name("usrdata").warnings == ()


def test_s650_truncated_readback() -> None:
    """A 2 GiB readback: usrdata cut, fat missing, bmtpool's place unknown."""
    pmap = parse(2 * GIB, {S650_PMT_AT: emmc_blocks(PTV1, s650_rows(), 88)})
    usrdata, fat, bmtpool = (pmap.by_name(n) for n in ("usrdata", "fat", "bmtpool"))
    assert usrdata.exposed and usrdata.end_bytes == 2 * GIB and "truncated" in usrdata.warnings[0]
    assert not fat.exposed and "missing" in fat.warnings[0]
    assert not bmtpool.exposed and bmtpool.size_bytes == 0
    assert "looks truncated" in bmtpool.warnings[0]
    assert pmap.by_name("android").exposed and not pmap.by_name("android").warnings
    assert not pmap.warnings


def test_image_ends_inside_the_table() -> None:
    with pytest.raises(NoMapError, match="no PMT found in user"):
        parse(S650_PMT_AT + 1500, {S650_PMT_AT: emmc_blocks(PTV1, s650_rows(), 88)})


# --- MT6577, 32-bit rows (formats.md §1.5 layout, linear = logical + 6 MiB) -------------------

MT6577_MBR = 0x600000
MT6577_USER = 0x74500000 + 0x1500000
MT6577_USER_ROWS = [
    ("MBR", 0x80000, 0x0),
    ("EBR1", 0x80000, 0x80000),
    ("__NODL_PRO_INFO", 0x300000, 0x100000),
    ("__NODL_NVRAM", 0x500000, 0x400000),
    ("__NODL_PROTECT_F", 0xA00000, 0x900000),
    ("__NODL_PROTECT_S", 0xA00000, 0x1300000),
    ("__NODL_SECCFG", 0x20000, 0x1D00000),
    ("UBOOT", 0x60000, 0x1D20000),
    ("BOOTIMG", 0x600000, 0x1D80000),
    ("RECOVERY", 0x600000, 0x2380000),
    ("SEC_RO", 0x600000, 0x2980000),
    ("__NODL_MISC", 0x80000, 0x2F80000),
    ("LOGO", 0x300000, 0x3000000),
    ("__NODL_EXPDB", 0xA00000, 0x3300000),
    ("ANDROID", 0x28A00000, 0x3D00000),
    ("CACHE", 0x7E00000, 0x2C700000),
    ("USRDATA", 0x40000000, 0x34500000),
]


def mt6577_rows() -> list[Row]:
    rows = [Row("PRELOADER", 0x40000, 0), Row("DSP_BL", 0x5C0000, 0x40000)]
    rows += [Row(name, size, logical + MT6577_MBR) for name, size, logical in MT6577_USER_ROWS]
    return [*rows, Row("__NODL_BMTPOOL", 0x1500000, BMTPOOL_MARKER)]


@pytest.mark.parametrize(
    ("width", "user_bytes"),
    [(76, MT6577_USER), (88, MT6577_USER), (76, 8 * GIB), (88, 8 * GIB)],
    ids=["76-small", "88-small-by-plausibility", "76-large-by-plausibility", "88-large"],
)
def test_ptv1_width_is_found_by_plausibility(width: int, user_bytes: int) -> None:
    pieces = {0x100000: emmc_blocks(PTV1, mt6577_rows(), width)}
    pmap = parse(user_bytes, pieces, boot=Region("boot1", 4 * MIB))
    assert pmap.origin == f"PMT PTv1 (eMMC, {width}-byte entries, 20 rows)"
    assert [p.name for p in pmap.partitions][:5] == [
        "preloader",
        "dsp_bl",
        "mbr",
        "ebr1",
        "pro_info",
    ]
    assert pmap.by_name("usrdata").offset_bytes == 0x34500000
    assert pmap.by_name("usrdata").size_bytes == 0x40000000
    assert pmap.by_name("dsp_bl").region == "boot1"
    bmtpool = pmap.by_name("bmtpool")
    assert bmtpool.offset_bytes == user_bytes - 0x1500000 and bmtpool.exposed


def test_single_row_table_falls_back_to_the_size_rule() -> None:
    """With one row both widths parse; the eMMC size decides (< 4 GiB: 76 bytes)."""
    pieces = {1024: emmc_blocks(PTV1, [Row("MBR", 0x80000, 0)], 76)}
    assert parse(64 * MIB, pieces).origin == "PMT PTv1 (eMMC, 76-byte entries, 1 rows)"


# --- pt_next, backups, placement inside the window --------------------------------------------


@pytest.mark.parametrize(("width", "extra_rows"), [(76, 10), (88, 5), (96, 4)])
def test_pt_next_continuation_block(width: int, extra_rows: int) -> None:
    extra = [Row(f"EXTRA{i}", 0x100000, 0x78000000 + i * 0x100000) for i in range(extra_rows)]
    rows = [r for r in mt6577_rows() if r.offset != BMTPOOL_MARKER] + extra
    blocks = emmc_blocks({96: PTV3, 88: PTV2, 76: PTV1}[width], rows, width)
    assert len(blocks) == 2 * BLOCK
    pmap = parse(8 * GIB, {0x80000: blocks})
    assert len(pmap.partitions) == len(rows)
    assert pmap.partitions[-1].name == f"extra{extra_rows - 1}"
    assert pmap.warnings == ()


def test_pt_next_block_missing_is_a_warning() -> None:
    rows = [Row(f"P{i}", 0x100000, 0x600000 + i * 0x100000) for i in range(30)]
    blocks = emmc_blocks(PTV2, [Row("MBR", 0x80000, 0x600000), *rows], 88)
    pmap = parse(64 * MIB, {0x80000: blocks[:BLOCK]})
    assert len(pmap.partitions) == 23
    assert pmap.warnings[0] == (
        "pt_next says a PMT block follows at byte 0x80800, but it has no signatures; "
        "rows after row 23 are missing"
    )


@pytest.mark.parametrize("pos", [3 * MIB - 1024, 0xA00000 - BLOCK, 1024])
def test_table_across_read_pieces_and_at_the_window_edges(pos: int) -> None:
    pmap = parse(S650_USER, {pos: emmc_blocks(PTV1, s650_rows(), 88)})
    assert [p.name for p in pmap.partitions] == S650_EXPECTED_NAMES
    assert pmap.by_name("usrdata").extra["table_offset_bytes"] == pos


def test_table_past_10_mib_is_not_seen() -> None:
    with pytest.raises(NoMapError, match="first 0xa00000 bytes"):
        parse(S650_USER, {0xA00000: emmc_blocks(PTV1, s650_rows(), 88)})


def test_only_the_leading_signature_is_not_a_table() -> None:
    block = bytearray(emmc_blocks(PTV1, s650_rows(), 88))
    block[2044:2048] = bytes(4)
    with pytest.raises(NoMapError):
        parse(S650_USER, {S650_PMT_AT: bytes(block)})


@pytest.mark.parametrize(("sig", "width"), [(MPT1, 88), (MPT2, 88), (MPT3, 96)])
def test_backup_copy_alone(sig: bytes, width: int) -> None:
    pmap = parse(S650_USER, {0x300000: emmc_blocks(sig, s650_rows(), width)})
    assert pmap.origin == f"PMT {sig[::-1].decode()} (eMMC, {width}-byte entries, 21 rows)"
    assert pmap.warnings[0] == "no main copy; using the backup PMT copy at byte 0x300000"
    assert spans(pmap)[1:] == s650_user_spans()[1:]


def test_corrupt_main_copy_falls_back_to_the_backup() -> None:
    main = bytearray(emmc_blocks(PTV1, s650_rows(), 88))
    main[4 + 88 * 3 : 4 + 88 * 3 + 4] = b"\x01\x02\x03\x04"  # row 4's name
    pieces = {S650_PMT_AT: bytes(main), S650_PMT_AT + 0x10000: emmc_blocks(MPT1, s650_rows(), 88)}
    pmap = parse(S650_USER, pieces)
    assert pmap.origin.startswith("PMT MPT1 (eMMC, 88-byte entries")
    assert pmap.warnings[0].startswith(
        "the main copy is unusable (PTv1 at byte 0x200e00: as 88-byte rows: row 4: name "
    )
    assert [p.name for p in pmap.partitions] == S650_EXPECTED_NAMES


def test_main_wins_over_an_earlier_backup() -> None:
    pieces = {
        0x4000: emmc_blocks(MPT1, [Row("MBR", 0x80000, 0), Row("OLD", 0x1000, 0x80000)], 88),
        S650_PMT_AT: emmc_blocks(PTV1, s650_rows(), 88),
    }
    assert [p.name for p in parse(S650_USER, pieces).partitions] == S650_EXPECTED_NAMES


# --- garbage, duplicates, no MBR ---------------------------------------------------------------


def signed_block(sig: bytes, body: bytes) -> bytes:
    block = bytearray(BLOCK)
    block[4 : 4 + len(body)] = body[:2036]
    block[0:4] = block[2044:2048] = sig
    return bytes(block)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x01garbage" * 50, r"row 1: name b'\\x01garbage\\x01garbage' is not printable ASCII"),
        (b"\x00" * 100, r"the table has no rows \(its first row is blank\)"),
        (pack_row(Row("BOOTIMG", 0x600000, 1 << 50), 96), r"start 0x4000000000000 is implausible"),
        (pack_row(Row("BOOTIMG", 1 << 45, 0x600000), 96), r"size 0x200000000000 is implausible"),
    ],
)
def test_signature_with_garbage_rows_is_corrupt(body: bytes, message: str) -> None:
    with pytest.raises(CorruptMapError, match=message):
        parse(16 * MIB, {0x8000: signed_block(PTV3, body)})


def test_corrupt_message_names_both_widths_tried() -> None:
    with pytest.raises(CorruptMapError, match=r"PTv1 at byte 0x8000: as 76-byte rows: row 1"):
        parse(16 * MIB, {0x8000: signed_block(PTV1, b"\x7f" * 200)})


def test_names_are_cleaned_and_made_unique() -> None:
    rows = [
        Row("MBR", 0x80000, 0x600000),
        Row("CACHE", 0x100000, 0x680000),
        Row("cache", 0x100000, 0x780000),
        Row("../ETC", 0x100000, 0x880000),
        Row("__NODL_", 0x100000, 0x980000),
        Row(".HIDDEN", 0x100000, 0xA80000),
    ]
    pmap = parse(64 * MIB, {1024: emmc_blocks(PTV2, rows, 88)})
    assert [p.name for p in pmap.partitions] == [
        "mbr",
        "cache",
        "cache~2",
        "_etc",
        "pmt5",
        "hidden",
    ]


def test_without_an_mbr_row_offsets_are_used_as_they_are() -> None:
    rows = [Row("NVRAM", 0x500000, 0x400000), Row("USRDATA", 0, 0x1000000)]
    pmap = parse(64 * MIB, {1024: emmc_blocks(PTV2, rows, 88)})
    assert spans(pmap) == [
        ("nvram", "user", 0x400000, 0x500000, True),
        ("usrdata", "user", 0x1000000, 64 * MIB - 0x1000000, True),
    ]
    assert "has no MBR row" in pmap.warnings[0]


def test_unaligned_start_and_overlap_warnings() -> None:
    rows = [
        Row("MBR", 0x80000, 0x600000),
        Row("A", 0x100000, 0x680100),
        Row("B", 0x100000, 0x700000),
    ]
    pmap = parse(64 * MIB, {1024: emmc_blocks(PTV2, rows, 88)})
    assert pmap.by_name("a").warnings == (
        "starts at byte 0x80100, not on a 512-byte sector boundary",
    )
    assert pmap.warnings == (
        "b (bytes 0x100000-0x200000 of user) overlaps a (bytes 0x80100-0x180100)",
    )


def test_reserved_marker_larger_than_the_region() -> None:
    rows = [Row("MBR", 0x80000, 0), Row("BMTPOOL", 0, 0xFFFFFFFF)]
    pmap = parse(64 * MIB, {1024: emmc_blocks(PTV2, rows, 88)})
    bmtpool = pmap.by_name("bmtpool")
    assert not bmtpool.exposed
    assert "0xffffffff reserves 0x1fffe0000 of a 0x4000000-byte user" in bmtpool.warnings[0]


def test_no_table_anywhere() -> None:
    with pytest.raises(NoMapError, match="no PMT found in user: no PTv1-3/MPT1-3 signature pair"):
        parse(S650_USER, {})


# --- NAND / raw flash dumps ---------------------------------------------------------------------

FLASH = 256 * MIB
REGION_LOW_PAGE = 0x004C4F57
NAND_ROWS = [
    Row("PRELOADER", 0x80000, 0x0),
    Row("PRO_INFO", 0x80000, 0x80000),
    Row("NVRAM", 0x300000, 0x100000),
    Row("LK", 0x100000, 0x400000),
    Row("BOOT", 0x1000000, 0x500000, part_id=REGION_LOW_PAGE),
    Row("ANDROID", 0xA000000, 0x1500000, part_id=REGION_LOW_PAGE),
    Row("USRDATA", 0, 0xB500000, mask=1),
    Row("BMTPOOL", 0x1000000, 0xFFFF0050),
]


def test_nand_ptv3_near_the_end_of_flash() -> None:
    pieces = {
        FLASH - 6 * 128 * KIB: nand_table(PTV3, NAND_ROWS, 96, rows_at=8),
        FLASH - 5 * 128 * KIB: nand_table(PTV3, NAND_ROWS[:2], 96, rows_at=8),
    }
    recorder = Recorder(sparse_reader(FLASH, pieces))
    pmap = run_reader(read_pmt(Region("flash", FLASH)), recorder)
    assert pmap.origin == "PMT PTv3 (NAND, 96-byte entries, 8 rows)"
    assert spans(pmap) == [
        ("preloader", "flash", 0, 0x80000, True),
        ("pro_info", "flash", 0x80000, 0x80000, True),
        ("nvram", "flash", 0x100000, 0x300000, True),
        ("lk", "flash", 0x400000, 0x100000, True),
        ("boot", "flash", 0x500000, 0x1000000, True),
        ("android", "flash", 0x1500000, 0xA000000, True),
        ("usrdata", "flash", 0xB500000, FLASH - 0xA00000 - 0xB500000, True),  # up to bmtpool
        ("bmtpool", "flash", FLASH - 0xA00000, 0xA00000, True),
    ]
    assert pmap.warnings == ()
    assert pmap.by_name("boot").extra["part_id"] == REGION_LOW_PAGE
    assert pmap.by_name("usrdata").extra["mask_flags"] == 1
    assert "sequence_number" not in pmap.by_name("boot").extra
    assert recorder.total_bytes < 64 * KIB


@pytest.mark.parametrize(
    ("sig", "width", "rows_at", "erase"),
    [(PTV2, 88, 4, 128 * KIB), (PTV1, 88, 8, 128 * KIB), (PTV3, 96, 8, 256 * KIB)],
)
def test_nand_other_layouts(sig: bytes, width: int, rows_at: int, erase: int) -> None:
    pieces = {FLASH - 7 * erase: nand_table(sig, NAND_ROWS, width, rows_at)}
    pmap = parse(FLASH, pieces, name="flash")
    assert pmap.origin == f"PMT {sig[::-1].decode()} (NAND, {width}-byte entries, 8 rows)"
    assert pmap.by_name("android").offset_bytes == 0x1500000


def test_nand_backup_when_main_is_garbage() -> None:
    pieces = {
        FLASH - 6 * 128 * KIB: PTV3 + b"\x05" * 200,
        FLASH - 5 * 128 * KIB: nand_table(MPT3, NAND_ROWS, 96, rows_at=8),
    }
    pmap = parse(FLASH, pieces, name="flash")
    assert pmap.origin == "PMT MPT3 (NAND, 96-byte entries, 8 rows)"
    assert pmap.warnings[0].startswith("the main copy is unusable (PTv3 at byte 0xff40000")


def test_flash_region_also_takes_an_emmc_style_linear_dump() -> None:
    """A linear (boot + user) dump: addresses are offsets into it, nothing moves to boot1."""
    pmap = parse(FLASH, {0x100000: emmc_blocks(PTV1, mt6577_rows()[:8], 88)}, name="flash")
    assert pmap.by_name("preloader").region == "flash"
    assert pmap.by_name("mbr").offset_bytes == MT6577_MBR
    assert pmap.warnings == ()


def test_nand_no_table() -> None:
    with pytest.raises(NoMapError, match="nor at the start of its last 8 erase blocks"):
        parse(FLASH, {}, name="flash")


def test_nand_table_cut_by_the_end_of_the_image() -> None:
    """The region is larger than the image holds: reads come back short inside the table."""
    rows = [Row(f"P{i}", 0x20000, 0x20000 * i) for i in range(40)]
    pos = FLASH - 8 * 128 * KIB
    table = nand_table(PTV2, rows, 88, rows_at=4)
    pmap = parse(FLASH, {pos: table}, name="flash", image_bytes=pos + 4 + 88 * 10 + 20)
    assert len(pmap.partitions) == 10
    assert "runs into the end of flash; rows after row 10 may be missing" in pmap.warnings[0]


# --- bounded reads ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["user", "flash"])
def test_reads_are_bounded_even_on_a_large_empty_device(name: str) -> None:
    recorder = Recorder(sparse_reader(64 * GIB, {}))
    with pytest.raises(NoMapError):
        run_reader(read_pmt(Region(name, 64 * GIB)), recorder)
    assert recorder.total_bytes <= 12 * MIB
    assert max(need.size_bytes for need in recorder.needs) <= MIB


def chained_block(sig: bytes, body: bytes) -> bytes:
    block = bytearray(signed_block(sig, body))
    block[2041] = 0x10  # pt_next: another block follows
    return bytes(block)


def test_reads_are_bounded_with_many_hostile_signature_pairs() -> None:
    """Thousands of signed, chained, garbage blocks: tries are capped, and so is the reading."""
    garbage = chained_block(PTV1, b"\x10" * 100) * (5 * MIB // BLOCK)
    backups = chained_block(MPT1, b"\x10" * 100) * (5 * MIB // BLOCK)
    recorder = Recorder(sparse_reader(64 * GIB, {0: garbage, 5 * MIB: backups}))
    with pytest.raises(CorruptMapError) as caught:
        run_reader(read_pmt(Region("user", 64 * GIB)), recorder)
    assert "PTv1 at byte 0x800: as 88-byte rows: row 1: name" in str(caught.value)
    assert "; and 61 more. Pass --map FILE" in str(caught.value)  # 32 main + 32 backup tries
    assert recorder.total_bytes <= 12 * MIB


def test_pt_next_chain_is_capped() -> None:
    """An endless pt_next chain: at most 8 blocks are read and 128 rows kept."""
    blocks = chained_block(PTV3, pack_row(Row("X", 0x1000, 0x1000), 96) * 21) * 16
    recorder = Recorder(sparse_reader(64 * MIB, {0x800: blocks}))
    pmap = run_reader(read_pmt(Region("user", 64 * MIB)), recorder)
    assert pmap.origin == "PMT PTv3 (eMMC, 96-byte entries, 128 rows)"
    assert len({p.name for p in pmap.partitions}) == 128
    assert recorder.needs[1:] == [Need("user", 0x800 + k * BLOCK, BLOCK) for k in range(1, 8)]


# --- hostile input ------------------------------------------------------------------------------


def check_outcome(
    size_bytes: int, pieces: Mapping[int, bytes], *, name: str = "user", image_bytes: int = 0
) -> None:
    """A map whose exposed partitions lie inside their regions with clean unique names, or a
    MapError; nothing else, and a bounded amount of reading."""
    regions = {name: Region(name, size_bytes), "boot1": Region("boot1", 64 * KIB)}
    recorder = Recorder(sparse_reader(image_bytes or size_bytes, pieces))
    try:
        pmap = run_reader(read_pmt(regions[name], boot_region=regions["boot1"]), recorder)
    except MapError:
        return
    finally:
        assert recorder.total_bytes <= 12 * MIB
    assert all(part.region in regions for part in pmap.partitions)
    assert_sane_map(pmap, regions)


FUZZ_AT = 3 * 512
FUZZ_IMAGE = 64 * KIB
#: Region sizes: small, cut inside the table, and large (8 GiB, the image still ends at 64 KiB).
sizes = st.sampled_from([FUZZ_IMAGE, FUZZ_AT + 2048, FUZZ_AT + 3000, FUZZ_AT + 4096, 8 * GIB])
flips = st.lists(st.tuples(st.integers(0, 2 * BLOCK - 1), st.integers(0, 255)), max_size=12)


@st.composite
def mutated_tables(draw: st.DrawFn) -> bytes:
    sig = draw(st.sampled_from([PTV1, PTV2, PTV3, MPT1, MPT3]))
    width = draw(st.sampled_from([76, 88])) if sig in (PTV1, MPT1) else 88 if sig == PTV2 else 96
    rows = mt6577_rows()[: draw(st.integers(0, 20))]
    if draw(st.booleans()):
        rows += [Row(f"X{i}", 0x1000, 0x2000 * i) for i in range(10)]  # needs a second block
    data = bytearray(emmc_blocks(sig, rows, width))
    for at, value in draw(flips):
        if at < len(data):
            data[at] = value
    return bytes(data)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tables(), sizes)
def test_fuzz_mutated_emmc_tables(table: bytes, size_bytes: int) -> None:
    check_outcome(size_bytes, {FUZZ_AT: table}, image_bytes=min(size_bytes, FUZZ_IMAGE))


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from([PTV1, PTV2, PTV3, MPT2]),
    st.binary(max_size=2 * 2036),
    st.booleans(),
    sizes,
)
def test_fuzz_random_rows_after_a_signature(
    sig: bytes, body: bytes, chain: bool, size_bytes: int
) -> None:
    first = (chained_block if chain else signed_block)(sig, body[:2036])
    pieces = {FUZZ_AT: first, FUZZ_AT + BLOCK: signed_block(sig, body[2036:])}
    check_outcome(size_bytes, pieces, image_bytes=min(size_bytes, FUZZ_IMAGE))


FUZZ_FLASH = 512 * KIB
FUZZ_NAND_AT = FUZZ_FLASH - 3 * 128 * KIB


@settings(max_examples=2000, deadline=None)
@given(
    st.sampled_from([PTV1, PTV2, PTV3, MPT3]),
    st.sampled_from([(4, 88), (8, 88), (4, 76), (8, 96), (4, 96)]),
    st.integers(0, len(NAND_ROWS)),
    flips,
    st.sampled_from([0, 100, 6000]),
)
def test_fuzz_nand_tables(
    sig: bytes, layout: tuple[int, int], count: int, changes: list[tuple[int, int]], cut: int
) -> None:
    rows_at, width = layout
    data = bytearray(nand_table(sig, NAND_ROWS[:count], width, rows_at))
    for at, value in changes:
        if at < len(data):
            data[at] = value
    image = FUZZ_NAND_AT + cut if cut else FUZZ_FLASH
    check_outcome(FUZZ_FLASH, {FUZZ_NAND_AT: bytes(data)}, name="flash", image_bytes=image)
