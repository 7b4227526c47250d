"""MTK MBR + EBR reader with Linux kernel semantics: S650 layout, ptgen example, broken chains."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from map_checks import assert_sane_map

from mtkfs.errors import MapError, NoMapError
from mtkfs.maps.mbr import MAX_EBR_LINKS, read_mbr
from mtkfs.maps.model import Need, PartitionMap, Region, reader_from_bytes, run_reader

SECTOR = 512
TO_END = 0xFFFFFFFF

Slot = tuple[int, int, int]  # type, start LBA (relative, as written), sector count


# --- builders ---------------------------------------------------------------------------------


def boot_record(*slots: Slot, signature: bool = True, boot_flag: int = 0) -> bytes:
    """A 512-byte MBR/EBR as ptgen writes it: only type, start and count; CHS left zero."""
    sector = bytearray(SECTOR)
    for index, (type_, start_lba, sector_count) in enumerate(slots):
        struct.pack_into(
            "<B3sB3sII", sector, 0x1BE + 16 * index, boot_flag, b"", type_, b"", start_lba,
            sector_count,
        )  # fmt: skip
    if signature:
        sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def sparse_reader(size_bytes: int, sectors: Mapping[int, bytes]) -> Callable[[Need], bytes]:
    """A region of ``size_bytes`` zeros except ``sectors`` (byte offset → data), never allocated."""

    def read(need: Need) -> bytes:
        end = min(need.offset_bytes + need.size_bytes, size_bytes)
        if need.offset_bytes < 0 or need.offset_bytes >= end:
            return b""
        out = bytearray(end - need.offset_bytes)
        for offset, data in sectors.items():
            lo, hi = max(offset, need.offset_bytes), min(offset + len(data), end)
            if lo < hi:
                out[lo - need.offset_bytes : hi - need.offset_bytes] = data[
                    lo - offset : hi - offset
                ]
        return bytes(out)

    return read


def parse_sparse(size_bytes: int, sectors: Mapping[int, bytes]) -> PartitionMap:
    return run_reader(read_mbr(Region("user", size_bytes)), sparse_reader(size_bytes, sectors))


def lba(offset_bytes: int) -> int:
    assert offset_bytes % SECTOR == 0
    return offset_bytes // SECTOR


def spans(pmap: PartitionMap) -> list[tuple[str, int, int]]:
    return [(p.name, p.offset_bytes, p.size_bytes) for p in pmap.partitions]


# --- Lenovo S650 (real numbers, bytes of the user area) ---------------------------------------

S650_USER_BYTES = 7779516416
EBR1 = 0x80000
EBR2 = EBR1 + 0x3900000
P8 = 0x10C380000


def s650_sectors() -> dict[int, bytes]:
    mbr = boot_record(
        (0x05, lba(EBR1), TO_END),
        (0x83, lba(0x900000), lba(0xA00000)),
        (0x83, lba(0x1300000), lba(0xA00000)),
        (0x83, lba(0x2F80000), lba(0x600000)),
    )
    ebr1 = boot_record(
        (0x83, lba(0x4380000 - EBR1), lba(0x40000000)),
        (0x83, lba(0x44380000 - EBR1), lba(0x8000000)),
        (0x83, lba(0x4C380000 - EBR1), lba(0xC0000000)),
        (0x05, lba(EBR2 - EBR1), TO_END),
    )
    ebr2 = boot_record((0x83, lba(P8 - EBR2), TO_END - (lba(P8) - lba(EBR1))))
    return {0: mbr, EBR1: ebr1, EBR2: ebr2}


S650_EXPECTED = [
    ("p2", 0x900000, 0xA00000),
    ("p3", 0x1300000, 0xA00000),
    ("p4", 0x2F80000, 0x600000),
    ("p5", 0x4380000, 0x40000000),
    ("p6", 0x44380000, 0x8000000),
    ("p7", 0x4C380000, 0xC0000000),
    ("p8", 0x10C380000, 0xC37A0000),
]


def test_s650_layout_kernel_numbering_and_to_end_clamp() -> None:
    pmap = parse_sparse(S650_USER_BYTES, s650_sectors())
    assert spans(pmap) == S650_EXPECTED
    assert pmap.origin == "MBR + 2 EBRs (MTK style)"
    assert pmap.warnings == ()
    assert all(p.exposed and not p.warnings for p in pmap.partitions)
    assert [p.origin for p in pmap.partitions] == ["mbr"] * 3 + ["ebr"] * 4
    assert [p.number for p in pmap.partitions] == [2, 3, 4, 5, 6, 7, 8]
    p8 = pmap.by_name("p8")
    assert p8.extra["to_end"] is True
    assert p8.extra["sector_count"] == 0xFF79E7FF
    assert p8.declared_size_bytes == 0xFF79E7FF * SECTOR
    assert p8.end_bytes == S650_USER_BYTES
    p5 = pmap.by_name("p5")
    assert p5.extra == {
        "type": 0x83,
        "start_lba": lba(0x4380000),
        "sector_count": lba(0x40000000),
        "table_lba": lba(EBR1),
        "slot": 1,
        "to_end": False,
    }


def test_s650_truncated_readback() -> None:
    """A readback stopped at 2 GiB: p7 is cut (with a warning), p8 is missing."""
    pmap = parse_sparse(0x80000000, s650_sectors())
    p7, p8 = pmap.by_name("p7"), pmap.by_name("p8")
    assert p7.exposed and p7.size_bytes == 0x80000000 - 0x4C380000
    assert p7.declared_size_bytes == 0xC0000000
    assert "truncated" in p7.warnings[0]
    assert not p8.exposed and p8.size_bytes == 0
    assert "missing" in p8.warnings[0]
    assert all(not p.warnings for p in pmap.partitions[:5])


def test_s650_only_reads_boot_records() -> None:
    needs: list[Need] = []
    inner = sparse_reader(S650_USER_BYTES, s650_sectors())

    def read(need: Need) -> bytes:
        needs.append(need)
        return inner(need)

    run_reader(read_mbr(Region("user", S650_USER_BYTES)), read)
    assert needs == [Need("user", offset, SECTOR) for offset in (0, EBR1, EBR2)]


# --- formats.md §1.6 worked example (matches the dumchar mmcblk0pN numbers of §1.5) -----------


def ptgen_example() -> dict[int, bytes]:
    mbr = boot_record(
        (0x05, 0x400, TO_END), (0x83, 0x4800, 0x5000), (0x83, 0x9800, 0x5000),
        (0x83, 0x14C00, 0x3000),
    )  # fmt: skip
    ebr1 = boot_record(
        (0x83, 0x1E400, 0x145000), (0x83, 0x163400, 0x3F000), (0x83, 0x1A2400, 0xFFE5DBFF)
    )
    return {0: mbr, 0x400 * SECTOR: ebr1}


def test_ptgen_example_matches_dumchar() -> None:
    user_bytes = 0x74500000 + 0x1000000
    pmap = parse_sparse(user_bytes, ptgen_example())
    assert spans(pmap) == [
        ("p2", 0x900000, 0xA00000),  # protect_f -> mmcblk0p2
        ("p3", 0x1300000, 0xA00000),  # protect_s -> mmcblk0p3
        ("p4", 0x2980000, 0x600000),  # sec_ro -> mmcblk0p4
        ("p5", 0x3D00000, 0x28A00000),  # android -> mmcblk0p5
        ("p6", 0x2C700000, 0x7E00000),  # cache -> mmcblk0p6
        ("p7", 0x34500000, user_bytes - 0x34500000),  # usrdata -> mmcblk0p7, to the end
    ]
    assert pmap.origin == "MBR + 1 EBR (MTK style)"
    assert pmap.warnings == () and all(not p.warnings for p in pmap.partitions)
    assert pmap.by_name("p7").extra["to_end"] is True


def test_primary_only_to_end_is_quiet() -> None:
    data = boot_record((0x83, 2048, TO_END)) + bytes(4 * 1024 * 1024)
    pmap = run_reader(read_mbr(Region("user", len(data))), reader_from_bytes({"user": data}))
    assert spans(pmap) == [("p1", 2048 * SECTOR, len(data) - 2048 * SECTOR)]
    assert pmap.origin == "MBR" and pmap.partitions[0].warnings == ()
    assert pmap.partitions[0].extra["to_end"] is True


@pytest.mark.parametrize("ext_type", [0x05, 0x0F, 0x85])
def test_every_extended_type_is_a_container(ext_type: int) -> None:
    sectors = {
        0: boot_record((0x83, 100, 10), (ext_type, 200, 1000)),
        200 * SECTOR: boot_record((0x83, 1, 10)),
    }
    pmap = parse_sparse(2 * 1024 * 1024, sectors)
    assert spans(pmap) == [("p1", 100 * SECTOR, 10 * SECTOR), ("p5", 201 * SECTOR, 10 * SECTOR)]
    assert pmap.origin == "MBR + 1 EBR"


def test_classic_one_logical_per_ebr_chain() -> None:
    """The standard layout: links relative to the extended base, logicals to their EBR."""
    sectors = {
        0: boot_record((0x05, 1000, 9000)),
        1000 * SECTOR: boot_record((0x83, 63, 937), (0x05, 1000, 1000)),
        2000 * SECTOR: boot_record((0x83, 63, 937), (0x05, 2000, 1000)),
        3000 * SECTOR: boot_record((0x83, 63, 937)),
    }
    pmap = parse_sparse(10000 * SECTOR, sectors)
    assert [(p.name, p.offset_bytes // SECTOR) for p in pmap.partitions] == [
        ("p5", 1063),
        ("p6", 2063),
        ("p7", 3063),
    ]
    assert pmap.origin == "MBR + 3 EBRs"


def test_garbage_in_slots_3_and_4_is_ignored_like_linux() -> None:
    """Slots 3/4 of an EBR must fit the extended partition; a skipped slot takes no number."""
    sectors = {
        0: boot_record((0x05, 1000, 2000)),
        1000 * SECTOR: boot_record(
            (0x83, 10, 10), (0x83, 20, 10), (0x83, 1990, 100), (0x83, 30, 10)
        ),
    }
    pmap = parse_sparse(10000 * SECTOR, sectors)
    assert [p.offset_bytes // SECTOR for p in pmap.partitions] == [1010, 1020, 1030]
    assert [p.name for p in pmap.partitions] == ["p5", "p6", "p7"]
    assert any("slot 3 does not fit" in w for w in pmap.warnings)


# --- broken chains and non-MBRs ---------------------------------------------------------------


def test_chain_loop_is_stopped_with_a_warning() -> None:
    sectors = s650_sectors()
    sectors[EBR2] = boot_record((0x83, 8, 8), (0x05, 0, TO_END))  # links back to EBR1
    pmap = parse_sparse(S650_USER_BYTES, sectors)
    assert [p.name for p in pmap.partitions] == ["p2", "p3", "p4", "p5", "p6", "p7", "p8"]
    assert any("loops back" in w for w in pmap.warnings)


def test_self_loop_in_first_ebr() -> None:
    sectors = {
        0: boot_record((0x05, 64, 1000)),
        64 * SECTOR: boot_record((0x83, 1, 8), (0x05, 0, 8)),
    }
    pmap = parse_sparse(2000 * SECTOR, sectors)
    assert [p.name for p in pmap.partitions] == ["p5"]
    assert "loops back" in pmap.warnings[0]


def test_chain_longer_than_100_links_stops() -> None:
    sectors = {0: boot_record((0x05, 8, 10_000))}
    for link in range(150):
        sectors[(8 + 8 * link) * SECTOR] = boot_record((0x83, 1, 1), (0x05, 8 * (link + 1), 8))
    pmap = parse_sparse(20_000 * SECTOR, sectors)
    assert len(pmap.partitions) == MAX_EBR_LINKS
    assert pmap.partitions[-1].name == f"p{4 + MAX_EBR_LINKS}"
    assert any("longer than 100 links" in w for w in pmap.warnings)


def test_ebr_without_55aa_ends_the_chain() -> None:
    sectors = s650_sectors()
    sectors[EBR2] = sectors[EBR2][:510] + b"\0\0"
    pmap = parse_sparse(S650_USER_BYTES, sectors)
    assert [p.name for p in pmap.partitions] == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert pmap.warnings == (f"EBR at byte {EBR2:#x} does not end in 55 AA; the chain ends there",)
    assert pmap.origin == "MBR + 1 EBR (MTK style)"


def test_ebr_past_the_end_of_a_truncated_image() -> None:
    pmap = parse_sparse(0x1000000, s650_sectors())  # 16 MiB: EBR2 at 0x3980000 is not in it
    assert any("past the end" in w for w in pmap.warnings)
    assert [p.exposed for p in pmap.partitions] == [True, False, False, False, False, False]
    assert "truncated" in pmap.by_name("p2").warnings[0]


def test_protective_mbr_is_not_ours() -> None:
    with pytest.raises(NoMapError, match="protective MBR: this disk uses GPT"):
        parse_sparse(1 << 20, {0: boot_record((0xEE, 1, (1 << 11) - 1))})


@pytest.mark.parametrize(
    ("sector0", "message"),
    [
        (b"", "does not end in 55 AA"),
        (bytes(511), "does not end in 55 AA"),
        (boot_record((0x83, 1, 10), signature=False), "does not end in 55 AA"),
        (boot_record(), "has no partitions"),
        (boot_record((0x83, 1, 10), boot_flag=0x29), "not a partition table"),
    ],
)
def test_not_an_mbr(sector0: bytes, message: str) -> None:
    region = Region("user", len(sector0))
    with pytest.raises(NoMapError, match=message):
        run_reader(read_mbr(region), reader_from_bytes({"user": sector0}))


# --- fuzzing ----------------------------------------------------------------------------------


def check_outcome(read: Callable[[Need], bytes], size_bytes: int) -> None:
    """Either a map whose partitions lie inside the region, or a MapError; nothing else."""
    try:
        pmap = run_reader(read_mbr(Region("user", size_bytes)), read)
    except MapError:
        return
    assert_sane_map(pmap, {"user": Region("user", size_bytes)})


lbas = st.one_of(st.integers(0, 40), st.sampled_from([0xFFFFFFFF, 0xFFFF0000, 0x80000000]))
slots = st.tuples(st.sampled_from([0x00, 0x05, 0x0F, 0x85, 0x83, 0x0C, 0xEE]), lbas, lbas)


@st.composite
def hostile_chains(draw: st.DrawFn) -> tuple[dict[int, bytes], int]:
    """Boot records with plausible-to-absurd slots at the first few sectors of a small disk."""
    records = {
        SECTOR * index: boot_record(
            *draw(st.lists(slots, max_size=4)),
            signature=draw(st.booleans()) or index == 0,
            boot_flag=draw(st.sampled_from([0, 0, 0x80, 0x01])),
        )
        for index in draw(st.sets(st.integers(0, 40), max_size=8)) | {0}
    }
    return records, draw(st.integers(0, 64 * SECTOR))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_chains())
def test_fuzz_structured_chains(case: tuple[dict[int, bytes], int]) -> None:
    records, size_bytes = case
    check_outcome(sparse_reader(size_bytes, records), size_bytes)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=4096), st.integers(0, 8192))
def test_fuzz_random_bytes(data: bytes, size_bytes: int) -> None:
    check_outcome(reader_from_bytes({"user": data}), size_bytes)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, EBR1, EBR2]), st.integers(0x1BE, 511), st.integers(0, 255)),
        max_size=6,
    ),
    st.sampled_from([S650_USER_BYTES, 0x80000000, 0x1000000, 0]),
)
def test_fuzz_mutated_s650(flips: list[tuple[int, int, int]], size_bytes: int) -> None:
    sectors = {offset: bytearray(data) for offset, data in s650_sectors().items()}
    for record, offset, value in flips:
        sectors[record][offset] = value
    check_outcome(sparse_reader(size_bytes, {k: bytes(v) for k, v in sectors.items()}), size_bytes)
