"""/proc/dumchar_info: the real S650 table against its owner's dd lines, fixtures, hostile text."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from map_checks import assert_sane_map, mutated_text
from seeds import SEED_000_DD, SEED_000_DUMCHAR

from mtkfs.errors import MapError, NoMapError
from mtkfs.maps.dumchar import looks_like_dumchar, parse_dumchar
from mtkfs.maps.model import Region

KIB = 1024
MIB = 1024 * KIB

S650_DUMCHAR = SEED_000_DUMCHAR
#: mmcblk0 in the seed's /proc/partitions: 7597184 blocks of 1 KiB.
S650_USER_BYTES = 7597184 * KIB
S650_REGIONS = {
    "user": Region("user", S650_USER_BYTES),
    "boot1": Region("boot1", 0x200000),  # mmcblk0boot0: 2048 blocks
}

# formats.md §1.5: synthesised MT6582 table; bmtpool has size 0 and the mangled marker.
FIXTURE_15 = """\
Part_Name\tSize\tStartAddr\tType\tMapTo
preloader    0x0000000000040000   0x0000000000000000   2   /dev/misc-sd
mbr          0x0000000000080000   0x0000000000000000   2   /dev/block/mmcblk0
ebr1         0x0000000000080000   0x0000000000080000   2   /dev/block/mmcblk0p1
pro_info     0x0000000000300000   0x0000000000100000   2   /dev/block/mmcblk0
nvram        0x0000000000500000   0x0000000000400000   2   /dev/block/mmcblk0
protect_f    0x0000000000a00000   0x0000000000900000   2   /dev/block/mmcblk0p2
protect_s    0x0000000000a00000   0x0000000001300000   2   /dev/block/mmcblk0p3
seccfg       0x0000000000020000   0x0000000001d00000   2   /dev/block/mmcblk0
uboot        0x0000000000060000   0x0000000001d20000   2   /dev/block/mmcblk0
bootimg      0x0000000000600000   0x0000000001d80000   2   /dev/block/mmcblk0
recovery     0x0000000000600000   0x0000000002380000   2   /dev/block/mmcblk0
sec_ro       0x0000000000600000   0x0000000002980000   2   /dev/block/mmcblk0p4
misc         0x0000000000080000   0x0000000002f80000   2   /dev/block/mmcblk0
logo         0x0000000000300000   0x0000000003000000   2   /dev/block/mmcblk0
expdb        0x0000000000a00000   0x0000000003300000   2   /dev/block/mmcblk0
android      0x0000000028a00000   0x0000000003d00000   2   /dev/block/mmcblk0p5
cache        0x0000000007e00000   0x000000002c700000   2   /dev/block/mmcblk0p6
usrdata      0x0000000040000000   0x0000000034500000   2   /dev/block/mmcblk0p7
bmtpool      0x0000000000000000   0x00000000febf00a8   2   /dev/block/mmcblk0
Part_Name:Partition name you should open;
Size:size of partition
StartAddr:Start Address of partition;
Type:Type of partition(MTD=1,EMMC=2)
MapTo:actual device you operate
"""
FIXTURE_15_USER_BYTES = 0x76000000

# formats.md §1.2/§1.5: NAND (Type 1) shape — StartAddr is the MTD index, last row has 4 fields.
NAND_SIZES = {
    "preloader": 0x40000,
    "dsp_bl": 0xC0000,
    "nvram": 0x300000,
    "seccnfg": 0x20000,
    "uboot": 0x60000,
    "boot": 0x600000,
    "recovery": 0x600000,
    "secstatic": 0x120000,
    "misc": 0x60000,
    "logo": 0x300000,
    "expdb": 0xA0000,
    "system": 0x10E00000,
    "cache": 0x3A00000,
    "usrdata": 0x9820000,
}
NAND_ROWS = [
    f"{name:<10}   0x{size:08x}   0x{index:08x}   1   /dev/mtd/mtd{index}"
    for index, (name, size) in enumerate(NAND_SIZES.items())
]
NAND_TABLE = "\n".join(
    [
        "Part_Name\tSize\tStartAddr\tType\tMapTo",
        *NAND_ROWS,
        "bmtpool      0x00000000   0x00000000   1",
        "Part_Name:Partition name you should open;",
        "Size:size of partition",
        "StartAddr:Index (MTD); ",
        "Type:Type of partition(MTD=1,EMMC=2);",
        "MapTo:actual device you operate",
    ]
)
NAND_FLASH_BYTES = 512 * MIB


def row(name: str, size: int, start: int, mapto: str | None = "/dev/block/mmcblk0") -> str:
    """A 64-bit-build eMMC row, as the driver prints it."""
    tail = f"   {mapto}" if mapto else ""
    return f"{name:<10}   0x{size:016x}   0x{start:016x}   2{tail}"


def user(size_bytes: int) -> dict[str, Region]:
    return {"user": Region("user", size_bytes)}


# --- the S650 seed -----------------------------------------------------------------------------


def test_s650_every_row_matches_the_owners_dd_lines() -> None:
    pmap = parse_dumchar(S650_DUMCHAR, S650_REGIONS)
    assert pmap.origin == "dumchar_info (21 rows)"
    assert [p.name for p in pmap.partitions][:3] == ["preloader", "mbr", "ebr1"]
    assert all(p.exposed and p.origin == "dumchar" for p in pmap.partitions)
    for name, (skip_kib, count_kib) in SEED_000_DD.items():
        part = pmap.by_name(name)
        assert (part.region, part.offset_bytes, part.size_bytes) == (
            "user",
            skip_kib * KIB,
            count_kib * KIB,
        ), name
        assert not part.warnings, name


def test_s650_fat_ends_exactly_at_the_end_of_the_user_area() -> None:
    fat = parse_dumchar(S650_DUMCHAR, S650_REGIONS).by_name("fat")
    assert (fat.offset_bytes, fat.size_bytes) == (0x10C380000, 0xC37A0000)
    assert fat.end_bytes == S650_USER_BYTES
    # /proc/partitions agrees: mmcblk0p8 is 3202688 KiB. (The post's commented-out dd for fat
    # used skip=200192, which is 0x10c380000 cut to 32 bits: the real skip is 4394496.)
    assert fat.size_bytes == 3202688 * KIB and fat.number == 8
    assert fat.extra["mapto"] == "/dev/block/mmcblk0p8"


def test_s650_linux_numbers_come_from_mapto() -> None:
    pmap = parse_dumchar(S650_DUMCHAR, S650_REGIONS)
    numbered = {p.name: p.number for p in pmap.partitions if p.number is not None}
    assert numbered == {
        "ebr1": 1,
        "protect_f": 2,
        "protect_s": 3,
        "sec_ro": 4,
        "android": 5,
        "cache": 6,
        "usrdata": 7,
        "fat": 8,
    }


def test_s650_preloader_is_clamped_to_the_boot_partition() -> None:
    preloader = parse_dumchar(S650_DUMCHAR, S650_REGIONS).by_name("preloader")
    assert preloader.region == "boot1" and preloader.exposed
    assert (preloader.offset_bytes, preloader.size_bytes) == (0, 0x200000)
    assert preloader.declared_size_bytes == 0x1400000
    assert any("truncated" in w for w in preloader.warnings)


def test_s650_bmtpool_is_reserved_at_the_end_of_the_user_area() -> None:
    pmap = parse_dumchar(S650_DUMCHAR, S650_REGIONS)
    bmtpool = pmap.by_name("bmtpool")
    # 0xfebf00a8 + 0x1400000 (the preloader row's size = MT6582's MBR linear start) = 0xFFFF00A8:
    # 0xA8 blocks of 128 KiB = 0x1500000, which is exactly the row's Size column.
    assert 0xA8 * 128 * KIB == 0x1500000
    assert bmtpool.exposed and bmtpool.size_bytes == 0x1500000
    assert bmtpool.offset_bytes == S650_USER_BYTES - 0x1500000
    assert bmtpool.extra["reserved_marker"] == 0xFFFF00A8
    assert bmtpool.extra["mbr_linear_start"] == 0x1400000
    (warning,) = bmtpool.warnings
    assert "0xfebf00a8" in warning and "0x1400000" in warning and "end of user" in warning
    # The user's dd line for it (skip=4173760.1640625 KiB) took the garbage for an offset.
    assert 0xFEBF00A8 / 1024 == 4173760.1640625


def test_s650_fat_overlapping_the_bmt_pool_is_reported() -> None:
    pmap = parse_dumchar(S650_DUMCHAR, S650_REGIONS)
    assert len(pmap.warnings) == 1
    assert "bmtpool" in pmap.warnings[0] and "overlaps fat" in pmap.warnings[0]


def test_s650_without_a_boot1_readback_lists_preloader_as_missing() -> None:
    pmap = parse_dumchar(S650_DUMCHAR, user(S650_USER_BYTES))
    preloader = pmap.by_name("preloader")
    assert not preloader.exposed and preloader.size_bytes == 0
    assert preloader.declared_size_bytes == 0x1400000
    assert any("missing" in w and "boot1" in w and "Boot1" in w for w in preloader.warnings)
    assert all(p.exposed for p in pmap.partitions if p.name != "preloader")


def test_s650_truncated_user_readback() -> None:
    pmap = parse_dumchar(S650_DUMCHAR, {**S650_REGIONS, "user": Region("user", 0x44380000)})
    assert pmap.by_name("android").exposed
    cache = pmap.by_name("cache")
    assert not cache.exposed and any("missing" in w for w in cache.warnings)
    # The reserved area moves with the end of what we have; it is still never 0xfebf00a8.
    assert pmap.by_name("bmtpool").offset_bytes == 0x44380000 - 0x1500000


# --- fixtures and shapes -----------------------------------------------------------------------


def test_fixture_size_zero_bmtpool_gets_its_size_from_the_marker() -> None:
    pmap = parse_dumchar(FIXTURE_15, user(FIXTURE_15_USER_BYTES))
    bmtpool = pmap.by_name("bmtpool")
    assert bmtpool.exposed and bmtpool.size_bytes == 0x1500000
    assert bmtpool.offset_bytes == FIXTURE_15_USER_BYTES - 0x1500000
    assert bmtpool.extra["mbr_linear_start"] == 0x1400000  # not the 0x40000 preloader
    assert pmap.by_name("usrdata").end_bytes == 0x74500000
    assert not pmap.by_name("preloader").exposed  # no boot1 here
    assert not pmap.warnings


def test_marker_as_printed_and_size_column_disagreeing() -> None:
    text = "\n".join([row("android", 16 * MIB, 0), row("otp", 0x123, 0xFFFF0004)])
    otp = parse_dumchar(text, user(64 * MIB)).by_name("otp")
    assert (otp.offset_bytes, otp.size_bytes) == (64 * MIB - 0x80000, 0x80000)
    assert "Size column says 0x123" in otp.warnings[0]


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        (user(0x1000000), "only 0x1000000 bytes"),
        ({"boot1": Region("boot1", 0x200000)}, "missing"),
    ],
)
def test_unresolvable_reserved_rows_are_listed_not_shown(
    regions: dict[str, Region], expected: str
) -> None:
    text = row("bmtpool", 0x1500000, 0xFEBF00A8)
    bmtpool = parse_dumchar(text, regions).by_name("bmtpool")
    assert not bmtpool.exposed and bmtpool.size_bytes == 0
    assert bmtpool.offset_bytes != 0xFEBF00A8
    assert any(expected in w for w in bmtpool.warnings)
    assert any("0xfebf00a8" in w for w in bmtpool.warnings)


def test_a_linear_start_is_only_added_back_when_the_size_agrees() -> None:
    # 0xfebf00a8 + 0x1400000 is a marker of 0x1500000 bytes; a 1 MiB Size says it is not one.
    text = row("weird", MIB, 0xFEBF00A8)
    weird = parse_dumchar(text, user(8 << 30)).by_name("weird")
    assert weird.offset_bytes == 0xFEBF00A8 and "reserved_marker" not in weird.extra


def test_nand_rows_are_placed_by_mtd_index() -> None:
    pmap = parse_dumchar(NAND_TABLE, {"flash": Region("flash", NAND_FLASH_BYTES)})
    offset = 0
    for index, (name, size) in enumerate(NAND_SIZES.items()):
        part = pmap.by_name(name)
        assert (part.region, part.offset_bytes, part.size_bytes) == ("flash", offset, size), name
        assert part.extra["mtd_index"] == index and part.exposed
        offset += size
    bmtpool = pmap.by_name("bmtpool")
    assert bmtpool.region == "flash" and not bmtpool.exposed
    assert any("MTD indexes" in w for w in pmap.warnings)


def test_nand_rows_listed_out_of_index_order() -> None:
    shuffled = "\n".join([NAND_ROWS[2], NAND_ROWS[0], NAND_ROWS[1]])
    pmap = parse_dumchar(shuffled, {"flash": Region("flash", NAND_FLASH_BYTES)})
    assert [p.name for p in pmap.partitions] == ["nvram", "preloader", "dsp_bl"]
    assert pmap.by_name("preloader").offset_bytes == 0
    assert pmap.by_name("dsp_bl").offset_bytes == 0x40000
    assert pmap.by_name("nvram").offset_bytes == 0x100000


def test_nand_rows_with_real_addresses_are_used_as_addresses() -> None:
    text = "\n".join(
        [
            "preloader    0x00040000   0x00000000   1   /dev/mtd/mtd0",
            "boot         0x00600000   0x00100000   1   /dev/mtd/mtd1",
        ]
    )
    pmap = parse_dumchar(text, {"flash": Region("flash", 16 * MIB)})
    assert pmap.by_name("boot").offset_bytes == 0x100000
    assert not any("MTD indexes" in w for w in pmap.warnings)


def test_recovery_log_rows_among_junk() -> None:
    text = "\n".join(
        [
            "Starting recovery on Thu Jan  1 00:00:12 1970",
            "Partition Information:",
            row("preloader", 0x40000, 0, "/dev/misc-sd"),
            "[    3.141592] " + row("mbr", 0x80000, 0),
            "<5>" + row("ebr1", 0x80000, 0x80000, "/dev/block/mmcblk0p1"),
            "I:Can't partition non-vfat: datamedia",
            "ext4 0x1000 0x2000 2 /dev/block/mmcblk0  trailing words",
            "bootimg   0x00600000   0x01d80000   2   /dev/block/mmcblk0",
            "E:failed to mount /cache (No such file or directory) 0x12345678",
        ]
    )
    assert looks_like_dumchar(text)
    pmap = parse_dumchar(text, user(1 << 30))
    assert [p.name for p in pmap.partitions] == ["preloader", "mbr", "ebr1", "bootimg"]
    assert pmap.by_name("bootimg").offset_bytes == 0x1D80000
    assert pmap.origin == "dumchar_info (4 rows)"


def test_a_table_printed_twice_is_listed_once() -> None:
    pmap = parse_dumchar(S650_DUMCHAR + "reboot\n" + S650_DUMCHAR, S650_REGIONS)
    assert len(pmap.partitions) == 21 and "bmtpool~2" not in [p.name for p in pmap.partitions]
    assert any("21 rows repeat" in w for w in pmap.warnings)


def test_four_field_row_takes_the_region_of_the_row_before() -> None:
    text = "\n".join(
        [row("preloader", 0x40000, 0, "/dev/misc-sd"), row("dsp_bl", 0x1000, 0x40000, None)]
    )
    pmap = parse_dumchar(text, {"boot1": Region("boot1", 4 * MIB)})
    assert pmap.by_name("dsp_bl").region == "boot1" and pmap.by_name("dsp_bl").exposed


def test_unknown_mapto_is_a_region_no_source_has() -> None:
    pmap = parse_dumchar(row("sdcard", MIB, 0, "/dev/block/mmcblk1"), user(1 << 30))
    sdcard = pmap.partitions[0]
    assert sdcard.region != "user" and not sdcard.exposed
    assert any("not a device mtkfs knows" in w for w in sdcard.warnings)


def test_overlap_and_alignment_warnings() -> None:
    text = "\n".join(
        [row("a", 2 * MIB, 0), row("b", MIB, MIB), row("c", 512, 3 * MIB + 7)]
    )  # fmt: skip
    pmap = parse_dumchar(text, user(16 * MIB))
    assert any(w.startswith("b (") and "overlaps a" in w for w in pmap.warnings)
    assert any(w.startswith("c: starts at 0x300007") for w in pmap.warnings)
    assert all(p.exposed for p in pmap.partitions)


def test_size_zero_rows_are_not_shown() -> None:
    empty = parse_dumchar(row("empty", 0, MIB), user(16 * MIB)).partitions[0]
    assert not empty.exposed and any("0 bytes" in w for w in empty.warnings)


def test_hostile_names_are_cleaned_and_unique() -> None:
    raw = ["../../etc/passwd", ".mtkfs", "boot", "BOOT", "a\x1b[2Jb", "x" * 300, "..", "nul\x00"]
    text = "\n".join(row(name, MIB, i * MIB) for i, name in enumerate(raw))
    pmap = parse_dumchar(text, user(64 * MIB))
    assert_sane_map(pmap, user(64 * MIB))
    got = [p.name for p in pmap.partitions]
    assert got[:4] == ["_.._etc_passwd", "mtkfs", "boot", "BOOT~2"]
    assert got[4] == "a__2Jb" and len(got[5]) == 64 and got[6] == "row7" and got[7] == "nul"


@pytest.mark.parametrize("text", ["", "hello\nworld", "Part_Name Size StartAddr Type MapTo\n"])
def test_no_rows_is_no_map(text: str) -> None:
    assert not looks_like_dumchar(text)
    with pytest.raises(NoMapError):
        parse_dumchar(text, S650_REGIONS)


def test_12_hex_digits_are_not_a_row() -> None:
    assert not looks_like_dumchar("boot   0x000000600000   0x000001d80000   2   /dev/block/mmcblk0")


def test_pathological_lines_are_fast() -> None:
    started = time.monotonic()
    for text in [
        "x" * 200_000,
        " " * 200_000 + "y",
        "a " * 100_000,
        ("a 0x00000000 " * 20_000),
        "[" * 100_000,
        "<5>[" + "1" * 100_000,
    ]:
        assert not looks_like_dumchar(text)
    assert time.monotonic() - started < 2


# --- hostile input -----------------------------------------------------------------------------


def check_outcome(text: str, regions: Mapping[str, Region]) -> None:
    """Either a good map or a MapError; never another exception."""
    looks_like_dumchar(text)
    try:
        pmap = parse_dumchar(text, regions)
    except MapError:
        return
    assert_sane_map(pmap, regions)


region_sets = st.one_of(
    st.just(S650_REGIONS),
    st.just(user(FIXTURE_15_USER_BYTES)),
    st.dictionaries(
        st.sampled_from(["user", "boot1", "boot2", "flash"]),
        st.integers(0, 2**40),
        max_size=4,
    ).map(lambda sizes: {name: Region(name, size) for name, size in sizes.items()}),
)

_JUNK = st.sampled_from(
    [
        "0x",
        "0xffffffffffffffff",
        "0xFFFF00A8",
        "0x00000000febf00a8",
        "-0x00000001",
        "   ",
        "\t",
        "1",
        "2",
        "3",
        "/dev/misc-sd",
        "/dev/block/mmcblk0p9999999",
        "/dev/mtd/mtd7",
        "\x00",
        "..",
        "9" * 40,
        "\u2028",
    ]
)


def mutated(base: str) -> st.SearchStrategy[str]:
    return mutated_text(base, _JUNK)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400), region_sets)
def test_fuzz_random_text(text: str, regions: Mapping[str, Region]) -> None:
    check_outcome(text, regions)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        mutated(S650_DUMCHAR), mutated(FIXTURE_15), mutated(NAND_TABLE), mutated(NAND_ROWS[3])
    ),
    region_sets,
)
def test_fuzz_mutated_tables(text: str, regions: Mapping[str, Region]) -> None:
    check_outcome(text, regions)
