"""MTD lists: /proc/mtd, boot-log lines and mtdparts= all agree on a camera's 16 MiB NOR flash."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from map_checks import assert_sane_map, mutated_text
from seeds import SEED_003_BOOTLOG

from mtkfs.errors import CorruptMapError, MapError, NoMapError
from mtkfs.maps.model import PartitionMap, Region
from mtkfs.maps.mtd import (
    looks_like_mtd_bootlog,
    looks_like_mtdparts,
    looks_like_proc_mtd,
    parse_mtd_bootlog,
    parse_mtdparts,
    parse_proc_mtd,
)

KIB = 1024
MIB = 1024 * KIB
FLASH = {"flash": Region("flash", 16 * MIB)}

# Seed 003: the boot log of a camera (16 MiB SPI NOR), verbatim.
CAMERA_BOOTLOG = SEED_003_BOOTLOG
# The same layout as /proc/mtd would print it (64 KiB erase blocks, as mkfs.jffs2 -e 0x10000).
CAMERA_PROC_MTD = """\
dev:    size   erasesize  name
mtd0: 00050000 00010000 "BOOT"
mtd1: 00180000 00010000 "KERNEL"
mtd2: 001e0000 00010000 "ROOTFS"
mtd3: 00c30000 00010000 "HOME"
mtd4: 00010000 00010000 "vd1"
mtd5: 00010000 00010000 "conf"
"""
# ... and as mtdparts: 0x50000 = 320k, 0x180000 = 1536k, 0x1e0000 = 1920k, 0xc30000 = 12480k,
# 0x10000 = 64k, and the rest (0x10000) for conf.
CAMERA_MTDPARTS = (
    "mtdparts=NOR_FLASH:320k(BOOT),1536k(KERNEL),1920k(ROOTFS),12480k(HOME),64k(vd1),-(conf)"
)
CAMERA = [
    ("BOOT", 0x000000, 0x050000),
    ("KERNEL", 0x050000, 0x180000),
    ("ROOTFS", 0x1D0000, 0x1E0000),
    ("HOME", 0x3B0000, 0xC30000),
    ("vd1", 0xFE0000, 0x010000),
    ("conf", 0xFF0000, 0x010000),
]

Parser = Callable[[str, Mapping[str, Region]], PartitionMap]


def layout(pmap: PartitionMap) -> list[tuple[str, int, int]]:
    return [(p.name, p.offset_bytes, p.size_bytes) for p in pmap.partitions]


# --- the camera seed: three printouts, one layout ----------------------------------------------


def test_mtdparts_arithmetic_matches_the_boot_log() -> None:
    sizes = [size for _, _, size in CAMERA[:5]]
    assert sizes == [320 * KIB, 1536 * KIB, 1920 * KIB, 12480 * KIB, 64 * KIB]
    assert sum(size for _, _, size in CAMERA) == 16 * MIB


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_mtd_bootlog, CAMERA_BOOTLOG),
        (parse_proc_mtd, CAMERA_PROC_MTD),
        (parse_mtdparts, CAMERA_MTDPARTS),
    ],
)
def test_camera_layout_from_every_printout(parser: Parser, text: str) -> None:
    pmap = parser(text, FLASH)
    assert layout(pmap) == CAMERA
    for index, part in enumerate(pmap.partitions):
        assert part.region == "flash" and part.exposed and part.origin == "mtd"
        assert part.extra["mtd_index"] == index == part.number
    assert_sane_map(pmap, FLASH)


def test_camera_boot_log_details() -> None:
    pmap = parse_mtd_bootlog(CAMERA_BOOTLOG, FLASH)
    assert pmap.origin == 'MTD boot log (6 partitions on "NOR_FLASH")'
    assert not pmap.warnings
    assert pmap.by_name("HOME").extra["mtd_device"] == "NOR_FLASH"
    assert all(not p.warnings for p in pmap.partitions)


def test_camera_proc_mtd_details() -> None:
    pmap = parse_proc_mtd(CAMERA_PROC_MTD, FLASH)
    assert pmap.origin == "/proc/mtd (6 partitions)"
    assert any("inferred" in w for w in pmap.warnings)
    assert all(p.extra["erase_bytes"] == 0x10000 and not p.warnings for p in pmap.partitions)


def test_camera_mtdparts_details() -> None:
    pmap = parse_mtdparts(CAMERA_MTDPARTS, FLASH)
    assert pmap.origin == 'mtdparts (6 partitions on "NOR_FLASH")'
    conf = pmap.by_name("conf")
    assert conf.extra["to_end"] and not conf.extra["read_only"]


def test_device_named_like_a_region_of_the_source() -> None:
    regions = {"NOR_FLASH": Region("NOR_FLASH", 16 * MIB)}
    pmap = parse_mtd_bootlog(CAMERA_BOOTLOG, regions)
    assert {p.region for p in pmap.partitions} == {"NOR_FLASH"}
    assert all(p.exposed for p in pmap.partitions)


def test_smaller_dump_truncates_and_drops() -> None:
    pmap = parse_mtd_bootlog(CAMERA_BOOTLOG, {"flash": Region("flash", 0x400000)})
    home = pmap.by_name("HOME")
    assert home.exposed and home.size_bytes == 0x50000 and home.declared_size_bytes == 0xC30000
    assert any("truncated" in w for w in home.warnings)
    assert not pmap.by_name("vd1").exposed and not pmap.by_name("conf").exposed


# --- boot log ----------------------------------------------------------------------------------


def test_boot_log_with_timestamps_and_noise() -> None:
    text = "\n".join(
        [
            "[    0.912000] m25p80 spi0.0: w25q128 (16384 Kbytes)",
            '[    0.913000] Creating 3 MTD partitions on "spi0.0":',
            '[    0.913500] 0x000000000000-0x000000040000 : "u-boot"',
            '<5>0x00040000-0x00050000 : "u-boot-env"',
            '[    0.914000] mtd: partition "firmware" extends beyond the end of device "spi0.0"'
            " -- size truncated to 0xfb0000",
            '[    0.914100] 0x000000050000-0x000001000000 : "firmware"',
            "[    1.000000] Freeing unused kernel memory",
        ]
    )
    assert looks_like_mtd_bootlog(text)
    pmap = parse_mtd_bootlog(text, FLASH)
    assert layout(pmap) == [
        ("u-boot", 0, 0x40000),
        ("u-boot-env", 0x40000, 0x10000),
        ("firmware", 0x50000, 0xFB0000),
    ]
    assert not pmap.warnings


def test_uboot_mtd_list() -> None:
    text = "\n".join(
        [
            "=> mtd list",
            "List of MTD devices:",
            "* nor1",
            "  - type: NOR flash",
            "  - block size: 0x40000 bytes",
            "  - min I/O: 0x1 bytes",
            "  - 0x000000000000-0x000000100000 : \"uboot\"",
            "  - 0x000000100000-0x000000140000 : \"env\"",
            "  - 0x000000140000-0x000002000000 : \"rootfs\"",
            "=> ",
        ]
    )  # fmt: skip
    pmap = parse_mtd_bootlog(text, {"flash": Region("flash", 32 * MIB)})
    assert layout(pmap) == [
        ("uboot", 0, 0x100000),
        ("env", 0x100000, 0x40000),
        ("rootfs", 0x140000, 0x1EC0000),
    ]
    assert pmap.origin == 'MTD boot log (3 partitions on "nor1")'


def test_announced_count_disagreeing_is_a_warning() -> None:
    lines = CAMERA_BOOTLOG.splitlines()
    pmap = parse_mtd_bootlog("\n".join(lines[:-2]), FLASH)
    assert len(pmap.partitions) == 4
    assert any("announces 6" in w and "lists 4" in w for w in pmap.warnings)


def test_two_devices_first_is_flash_second_is_missing() -> None:
    text = "\n".join(
        [
            'Creating 2 MTD partitions on "spi0.0":',
            '0x000000000000-0x000000080000 : "u-boot"',
            '0x000000080000-0x000001000000 : "firmware"',
            'Creating 2 MTD partitions on "MTK-NAND":',
            '0x000000000000-0x000000400000 : "kernel"',
            '0x000000400000-0x000008000000 : "ubi"',
        ]
    )
    pmap = parse_mtd_bootlog(text, FLASH)
    assert [(p.region, p.exposed) for p in pmap.partitions] == [
        ("flash", True),
        ("flash", True),
        ("MTK-NAND", False),
        ("MTK-NAND", False),
    ]
    assert [p.extra["mtd_index"] for p in pmap.partitions] == [0, 1, 2, 3]
    assert any("missing" in w for w in pmap.by_name("ubi").warnings)
    assert pmap.origin == 'MTD boot log (2 partitions on "spi0.0", 2 partitions on "MTK-NAND")'
    both = {"spi0.0": Region("spi0.0", 16 * MIB), "MTK-NAND": Region("MTK-NAND", 128 * MIB)}
    pmap = parse_mtd_bootlog(text, both)
    assert [p.region for p in pmap.partitions] == ["spi0.0", "spi0.0", "MTK-NAND", "MTK-NAND"]
    assert all(p.exposed for p in pmap.partitions)


def test_a_log_of_two_boots_uses_the_last_listing() -> None:
    text = CAMERA_BOOTLOG.replace('"HOME"', '"OLDHOME"') + "reboot: Restarting system\n"
    text += CAMERA_BOOTLOG
    pmap = parse_mtd_bootlog(text, FLASH)
    assert layout(pmap) == CAMERA
    assert any("listed again" in w for w in pmap.warnings)


def test_range_ending_before_it_starts() -> None:
    pmap = parse_mtd_bootlog('0x00050000-0x00040000 : "bad"\n0x0-0x10000 : "ok"', FLASH)
    bad = pmap.by_name("bad")
    assert not bad.exposed and any("before it starts" in w for w in bad.warnings)
    assert pmap.by_name("ok").exposed


def test_boot_log_without_ranges_is_no_map() -> None:
    with pytest.raises(NoMapError):
        parse_mtd_bootlog('Creating 6 MTD partitions on "NOR_FLASH":\n', FLASH)


# --- /proc/mtd ---------------------------------------------------------------------------------


def test_proc_mtd_names_with_spaces_and_quotes() -> None:
    text = 'mtd0: 00040000 00020000 "boot loader"\nmtd1: 00020000 00020000 "say "hi""\n'
    assert looks_like_proc_mtd(text)
    pmap = parse_proc_mtd(text, FLASH)
    assert [p.name for p in pmap.partitions] == ["boot_loader", "say__hi_"]


def test_proc_mtd_with_the_whole_chip_first() -> None:
    # CONFIG_MTD_PARTITIONED_MASTER: the chip itself is mtd0, its partitions follow.
    rows = [line.split(" ", 1)[1] for line in CAMERA_PROC_MTD.splitlines()[1:]]
    text = "\n".join(
        ['mtd0: 01000000 00010000 "spi0.0"', *(f"mtd{i + 1}: {r}" for i, r in enumerate(rows))]
    )
    pmap = parse_proc_mtd(text, FLASH)
    chip = pmap.by_name("spi0.0")
    assert (chip.offset_bytes, chip.size_bytes, chip.extra["master"]) == (0, 16 * MIB, True)
    assert layout(pmap)[1:] == CAMERA
    assert not any("overlaps" in w for w in pmap.warnings)


def test_proc_mtd_gap_shows_as_misaligned_offset() -> None:
    text = 'mtd0: 00001000 00010000 "tiny"\nmtd1: 00010000 00010000 "next"\n'
    pmap = parse_proc_mtd(text, FLASH)
    assert any("erase size" in w for w in pmap.by_name("next").warnings)


def test_proc_mtd_large_sizes_and_order() -> None:
    text = 'mtd3: 100000000 00020000 "big"\nmtd1: 00020000 00020000 "after"\n'
    pmap = parse_proc_mtd(text, {"flash": Region("flash", 8 << 30)})
    assert layout(pmap) == [("big", 0, 1 << 32), ("after", 1 << 32, 0x20000)]
    assert any("out of order" in w for w in pmap.by_name("after").warnings)


# --- mtdparts= ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        CAMERA_MTDPARTS,
        CAMERA_MTDPARTS.removeprefix("mtdparts="),
        "mtdparts=" + CAMERA_MTDPARTS,  # U-Boot `printenv`: mtdparts=mtdparts=…
        "setenv mtdparts " + CAMERA_MTDPARTS,
        "mtdparts " + CAMERA_MTDPARTS,
        f"console=ttyS0,115200 root=/dev/mtdblock2 {CAMERA_MTDPARTS} rootfstype=jffs2 quiet",
        f"bootargs='console=ttyS0 {CAMERA_MTDPARTS}'",
        f"Kernel command line: mem=64M {CAMERA_MTDPARTS} quiet\n",
    ],
)
def test_mtdparts_wherever_it_is_found(text: str) -> None:
    assert looks_like_mtdparts(text)
    assert layout(parse_mtdparts(text, FLASH)) == CAMERA


def test_mtdparts_kernel_example_with_offsets_flags_and_two_devices() -> None:
    text = "mtdparts=nand0:2m(boot)ro,4m@0x200000(kernel),-(rootfs);nor0:-(all)"
    regions = {"nand0": Region("nand0", 128 * MIB), "nor0": Region("nor0", 4 * MIB)}
    pmap = parse_mtdparts(text, regions)
    assert [(p.region, p.name, p.offset_bytes, p.size_bytes) for p in pmap.partitions] == [
        ("nand0", "boot", 0, 2 * MIB),
        ("nand0", "kernel", 2 * MIB, 4 * MIB),
        ("nand0", "rootfs", 6 * MIB, 122 * MIB),
        ("nor0", "all", 0, 4 * MIB),
    ]
    assert [p.extra["read_only"] for p in pmap.partitions] == [True, False, False, False]
    # Only a flash dump: nand0 is the first device, so it is `flash`; nor0 is missing, and its
    # "rest of the device" has no size to compute.
    pmap = parse_mtdparts(text, {"flash": Region("flash", 128 * MIB)})
    assert pmap.by_name("rootfs").region == "flash" and pmap.by_name("rootfs").exposed
    everything = pmap.by_name("all")
    assert everything.region == "nor0" and not everything.exposed
    assert any("whose size is unknown" in w for w in everything.warnings)


def test_mtdparts_octal_gotcha() -> None:
    pmap = parse_mtdparts("mtdparts=nand0:0100k(a),010(b),0x100(c),100(d)", FLASH)
    assert [p.size_bytes for p in pmap.partitions] == [64 * KIB, 8, 0x100, 100]
    assert any("octal" in w and "0x10000" in w for w in pmap.by_name("a").warnings)
    assert not pmap.by_name("c").warnings and not pmap.by_name("d").warnings
    with pytest.raises(CorruptMapError, match="octal"):
        parse_mtdparts("mtdparts=nand0:0800k(a)", FLASH)


def test_mtdparts_suffixes_and_flags() -> None:
    pmap = parse_mtdparts("nor0:1K(a)lk,1M(b)rolk,1m@0x1000000(c)roslc,1g(d)", FLASH)
    a, b, c, d = pmap.partitions
    assert (a.size_bytes, a.extra["locked"], a.extra["read_only"]) == (KIB, True, False)
    assert b.extra["read_only"] and b.extra["locked"] and b.offset_bytes == KIB
    assert c.offset_bytes == 16 * MIB and c.extra["slc"] and not c.exposed
    assert d.offset_bytes == 17 * MIB and d.declared_size_bytes == 1 << 30


def test_mtdparts_unnamed_partitions_get_the_kernels_names() -> None:
    pmap = parse_mtdparts("mtdparts=spi0.0:64k,64k,-", FLASH)
    assert [p.name for p in pmap.partitions] == [
        "Partition_000",
        "Partition_001",
        "Partition_002",
    ]


def test_mtdparts_sizes_beyond_the_device_are_clamped() -> None:
    pmap = parse_mtdparts("mtdparts=NOR_FLASH:8m(a),16m(b)", FLASH)
    b = pmap.by_name("b")
    assert b.exposed and b.size_bytes == 8 * MIB and b.declared_size_bytes == 16 * MIB
    assert any("truncated" in w for w in b.warnings)


def test_mtdparts_overlapping_offsets_are_reported() -> None:
    pmap = parse_mtdparts("mtdparts=NOR_FLASH:4m(a),1m@0x100000(b)", FLASH)
    assert any("overlaps a" in w for w in pmap.warnings)


def test_mtdparts_colons_in_ids_and_names() -> None:
    pmap = parse_mtdparts("mtdparts=0000:00:1f.0:1m(a:b),-(c)", FLASH)
    assert [p.name for p in pmap.partitions] == ["a_b", "c"]
    assert pmap.partitions[0].extra["mtd_device"] == "0000:00:1f.0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mtdparts=nand0:-(all),1m(more)", "must be its last"),
        ("mtdparts=nand0:1m(a", "closing"),
        ("mtdparts=nand0:0(a)", "size 0"),
        ("mtdparts=nand0:(a)", "expected a number"),
        ("mtdparts=nand0:1m(a)x", "unexpected 'x'"),
        ("mtdparts=1m(a)", "mtd-id"),
        ("mtdparts=:1m(a)", "empty mtd-id"),
        ("mtdparts=nand0:99999999999999999999g", "64 bits"),
        ("mtdparts=nand0:" + "1" * 100, "too long"),
        ("mtdparts=nand0:1m@(a)", "offset"),
        ("mtdparts=nand0:" + ",".join(["1k"] * 2000), "more than"),
    ],
)
def test_mtdparts_errors(text: str, message: str) -> None:
    with pytest.raises(CorruptMapError, match=re.escape(message)):
        parse_mtdparts(text, FLASH)


@pytest.mark.parametrize("text", ["", "mtdparts=", "hello world", "console=ttyS0 root=/dev/sda"])
def test_no_mtdparts_is_no_map(text: str) -> None:
    with pytest.raises(NoMapError):
        parse_mtdparts(text, FLASH)


def test_recognisers_do_not_claim_each_other() -> None:
    assert not looks_like_proc_mtd(CAMERA_BOOTLOG) and not looks_like_mtdparts(CAMERA_BOOTLOG)
    assert not looks_like_mtd_bootlog(CAMERA_PROC_MTD) and not looks_like_mtdparts(CAMERA_PROC_MTD)
    assert not looks_like_mtd_bootlog(CAMERA_MTDPARTS) and not looks_like_proc_mtd(CAMERA_MTDPARTS)


def test_hostile_names_and_devices() -> None:
    text = "\n".join(
        [
            'Creating 3 MTD partitions on "\x1b[31mevil/../dev":',
            '0x0-0x10000 : "../../etc/shadow"',
            '0x10000-0x20000 : ".mtkfs"',
            '0x20000-0x30000 : "../../etc/shadow"',
        ]
    )
    pmap = parse_mtd_bootlog(text, FLASH)
    assert_sane_map(pmap, FLASH)
    assert [p.name for p in pmap.partitions] == ["_.._etc_shadow", "mtkfs", "_.._etc_shadow~2"]
    assert "\x1b" not in pmap.origin and "\x1b" not in pmap.partitions[0].extra["mtd_device"]


def test_pathological_text_is_fast() -> None:
    started = time.monotonic()
    for text in [
        "0x" * 100_000,
        "0x" + "1" * 100_000 + '-0x1 : "',
        '0x0-0x1 : "' + "a" * 100_000,
        "mtd0: " + "0" * 100_000,
        "mtdparts=a:" + "(" * 100_000,
        "mtdparts=" + ":" * 100_000,
        "* " * 100_000,
        "mtdparts=" * 100_000,
        "a:1;" * 100_000,
        "a:1k," * 100_000,
    ]:
        for parser in (parse_mtd_bootlog, parse_proc_mtd, parse_mtdparts):
            try:
                parser(text, FLASH)
            except MapError:
                pass
    assert time.monotonic() - started < 3


# --- hostile input -----------------------------------------------------------------------------


def check_outcome(
    looks_like: Callable[[str], bool], parser: Parser, text: str, regions: Mapping[str, Region]
) -> None:
    """Either a good map or a MapError; never another exception."""
    looks_like(text)
    try:
        pmap = parser(text, regions)
    except MapError:
        return
    assert_sane_map(pmap, regions)


region_sets = st.one_of(
    st.just(FLASH),
    st.dictionaries(
        st.sampled_from(["flash", "NOR_FLASH", "nand0", "nor0", "user"]),
        st.integers(0, 2**40),
        max_size=3,
    ).map(lambda sizes: {name: Region(name, size) for name, size in sizes.items()}),
)

_TOKENS = st.sampled_from(
    [
        ",", ";", ":", "-", "@", "(", ")", "0x", "0", "08", "k", "M", "ro", "lk", "slc",
        "mtdparts=", "9" * 30, "0x" + "f" * 20, "-0x10", "\n", " ", '"', "* nand0",
        'Creating 99 MTD partitions on "x":', "mtd9:", "\x00", "..", "\u2028",
    ]
)  # fmt: skip


def mutated(base: str) -> st.SearchStrategy[str]:
    return mutated_text(base, _TOKENS)


_TEXTS = st.one_of(st.text(max_size=300), st.text(alphabet='0x123-:,;()@kmro" \n', max_size=120))
_FORMATS = {
    "bootlog": (looks_like_mtd_bootlog, parse_mtd_bootlog, CAMERA_BOOTLOG),
    "proc_mtd": (looks_like_proc_mtd, parse_proc_mtd, CAMERA_PROC_MTD),
    "mtdparts": (looks_like_mtdparts, parse_mtdparts, CAMERA_MTDPARTS),
}
_EXTRA_MTDPARTS = "mtdparts=nand0:2m(boot)ro,4m@0x200000(kernel),-(rootfs);nor0:0100k(x),-(all)"


@pytest.mark.parametrize("fmt", sorted(_FORMATS))
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, regions=region_sets)
def test_fuzz_random_text(fmt: str, text: str, regions: Mapping[str, Region]) -> None:
    looks_like, parser, _ = _FORMATS[fmt]
    check_outcome(looks_like, parser, text, regions)


@pytest.mark.parametrize("fmt", sorted(_FORMATS))
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), regions=region_sets)
def test_fuzz_mutated_printouts(
    fmt: str, data: st.DataObject, regions: Mapping[str, Region]
) -> None:
    looks_like, parser, base = _FORMATS[fmt]
    bases = [base, _EXTRA_MTDPARTS] if fmt == "mtdparts" else [base]
    text = data.draw(st.one_of(*(mutated(b) for b in bases)))
    check_outcome(looks_like, parser, text, regions)
