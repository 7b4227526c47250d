"""Map files recognised by content; merging several; cross-checking with the device's table."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from map_checks import assert_sane_map

from mtkfs.errors import MapError, NoMapError
from mtkfs.maps.combine import canonical, cross_check, merge
from mtkfs.maps.detect import is_text, parse_map_bytes
from mtkfs.maps.model import Partition, PartitionMap, Region

MiB = 1 << 20
REGIONS = {
    "user": Region("user", 64 * MiB),
    "boot1": Region("boot1", 4 * MiB),
    "flash": Region("flash", 16 * MiB),
}
USER_ONLY = {"user": REGIONS["user"]}

DUMCHAR = (
    "Part_Name\tSize\tStartAddr\tType\tMapTo\n"
    "preloader    0x0000000000040000   0x0000000000000000   2   /dev/misc-sd\n"
    "android      0x0000000001000000   0x0000000000100000   2   /dev/block/mmcblk0p5\n"
)
SCATTER = (
    "- partition_index: SYS0\n  partition_name: boot\n  physical_start_addr: 0x100000\n"
    "  linear_start_addr: 0x100000\n  partition_size: 0x800000\n  region: EMMC_USER\n"
)
BOOTLOG = 'Creating 1 MTD partitions on "nor0":\n0x000000000000-0x000000100000 : "u-boot"\n'
PROC_MTD = 'dev:    size   erasesize  name\nmtd0: 00100000 00010000 "u-boot"\n'
MTDPARTS = "mtdparts=nor0:1m(u-boot),-(rootfs)\n"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (SCATTER, "scatter"),
        ("PRELOADER 0x0\n{\n}\n", "scatter"),
        (DUMCHAR, "dumchar_info"),
        (BOOTLOG, "MTD boot log"),
        (PROC_MTD, "/proc/mtd"),
        (MTDPARTS, "mtdparts"),
    ],
)
def test_text_formats_are_recognised_by_content(text: str, kind: str) -> None:
    found, pmap = parse_map_bytes(text.encode(), REGIONS)
    assert found == kind
    assert pmap.partitions


def test_binary_table_images() -> None:
    mbr = bytearray(512)
    mbr[446:462] = (
        bytes([0, 0, 0, 0, 0x83, 0, 0, 0])
        + (2048).to_bytes(4, "little")
        + (4096).to_bytes(4, "little")
    )
    mbr[510:512] = b"\x55\xaa"
    kind, pmap = parse_map_bytes(bytes(mbr), USER_ONLY)
    assert kind == "table image"
    assert [(p.name, p.offset_bytes, p.size_bytes) for p in pmap.partitions] == [
        ("p1", 2048 * 512, 4096 * 512)
    ]
    with pytest.raises(NoMapError, match="scatter file"):
        parse_map_bytes(b"\x00" * 4096, USER_ONLY)
    with pytest.raises(NoMapError, match="not a partition map"):
        parse_map_bytes(b"just some notes\n", USER_ONLY)


def test_is_text() -> None:
    assert is_text("caf\u00e9 scatter\n".encode())
    assert not is_text(b"EFI PART\x00\x00")
    assert is_text(("x" * 65535 + "\u00e9").encode())  # a character cut at the 64 KiB window


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096) | st.text(max_size=2000).map(str.encode))
def test_any_bytes_give_a_map_or_a_map_error(data: bytes) -> None:
    try:
        _, pmap = parse_map_bytes(data, REGIONS)
    except MapError:
        return
    assert_sane_map(pmap, REGIONS)


def part(name: str, offset: int, size: int, **kw: object) -> Partition:
    return Partition(name, "user", offset, size, **kw)  # type: ignore[arg-type]


def test_merge_keeps_first_definition_and_says_so() -> None:
    a = PartitionMap((part("boot", 0, 10), part("system", 10, 10)), "scatter")
    b = PartitionMap((part("BOOT", 0, 10), part("system", 20, 10), part("cache", 30, 5)), "mtd")
    merged = merge([("scatter a", a), ("dumchar b", b)])
    assert [(p.name, p.offset_bytes) for p in merged.partitions] == [
        ("boot", 0),
        ("system", 10),
        ("cache", 30),
    ]
    assert len(merged.warnings) == 1
    assert "system" in merged.warnings[0] and "using scatter a" in merged.warnings[0]


def test_cross_check_by_name_alias_and_number() -> None:
    chosen = PartitionMap(
        (
            part("bootimg", 0x100000, 0x600000),
            part("android", 0x4380000, 0x1000, number=5, extra={"mapto": "/dev/block/mmcblk0p5"}),
        ),
        "dumchar_info",
    )
    table = PartitionMap(
        (
            part("boot", 0x100000, 0x600000, origin="gpt"),
            part("p5", 0x4380000, 0x2000, number=5, origin="ebr"),
            part("p6", 0x5000000, 0x1000, number=6, origin="ebr"),
        ),
        "MBR + 2 EBRs",
    )
    warnings = cross_check(chosen, "dumchar_info d.txt", table)
    assert len(warnings) == 2
    assert warnings[0].startswith("android: dumchar_info d.txt says offset 0x4380000 size 0x1000")
    assert "the MBR on the device says" in warnings[0] and "size 0x2000" in warnings[0]
    assert warnings[1].startswith("p6: in the MBR on the device") and "not shown" in warnings[1]


def test_canonical_names() -> None:
    assert canonical("BOOTIMG") == "boot"
    assert canonical("usrdata") == "userdata"
    assert canonical("Vendor") == "vendor"
