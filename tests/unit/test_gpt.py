"""GPT reader: built tables (struct + zlib), real sgdisk images, corruption, hostile input."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from map_checks import assert_sane_map

from mtkfs.errors import CorruptMapError, MapError, NoMapError
from mtkfs.maps.gpt import MAX_ENTRIES, MAX_ENTRY_BYTES, read_gpt
from mtkfs.maps.model import Need, PartitionMap, Region, reader_from_bytes, run_reader

LINUX_FS = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
MIB = 1024 * 1024


# --- builders ---------------------------------------------------------------------------------


@dataclass
class Entry:
    name: str | bytes  # bytes: the raw 72-byte name field, for hostile names
    first_lba: int
    last_lba: int
    type_guid: uuid.UUID = LINUX_FS
    unique_guid: uuid.UUID = field(default_factory=uuid.uuid4)
    attributes: int = 0


def entry_array(entries: Sequence[Entry | None], count: int = 128, entry_bytes: int = 128) -> bytes:
    out = bytearray(count * entry_bytes)
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        name = entry.name if isinstance(entry.name, bytes) else entry.name.encode("utf-16-le")
        struct.pack_into(
            "<16s16sQQQ72s",
            out,
            index * entry_bytes,
            entry.type_guid.bytes_le,
            entry.unique_guid.bytes_le,
            entry.first_lba,
            entry.last_lba,
            entry.attributes,
            name[:72],
        )
    return bytes(out)


def gpt_header(
    *,
    my_lba: int,
    alternate_lba: int,
    first_usable_lba: int,
    last_usable_lba: int,
    entries_lba: int,
    entry_count: int,
    entry_bytes: int,
    entries_crc32: int,
    sector_bytes: int = 512,
    header_bytes: int = 92,
) -> bytes:
    """One header sector with a correct header CRC."""
    raw = bytearray(
        struct.pack(
            "<8sIIIIQQQQ16sQIII",
            b"EFI PART",
            0x00010000,
            header_bytes,
            0,  # header CRC, filled in below
            0,
            my_lba,
            alternate_lba,
            first_usable_lba,
            last_usable_lba,
            uuid.uuid4().bytes_le,
            entries_lba,
            entry_count,
            entry_bytes,
            entries_crc32,
        )
    )
    raw = raw.ljust(header_bytes, b"\0")
    struct.pack_into("<I", raw, 16, zlib.crc32(raw[:header_bytes]))
    return bytes(raw.ljust(sector_bytes, b"\0"))


def build_gpt(
    entries: Sequence[Entry | None],
    *,
    disk_sectors: int = 2048,
    sector_bytes: int = 512,
    entry_count: int = 128,
    entry_bytes: int = 128,
) -> bytearray:
    """A whole disk: protective MBR, primary header + entries, backup entries + header."""
    array = entry_array(entries, entry_count, entry_bytes)
    array_sectors = -(-len(array) // sector_bytes)
    last_lba = disk_sectors - 1
    common = dict(
        first_usable_lba=2 + array_sectors,
        last_usable_lba=last_lba - 1 - array_sectors,
        entry_count=entry_count,
        entry_bytes=entry_bytes,
        entries_crc32=zlib.crc32(array),
        sector_bytes=sector_bytes,
    )
    img = bytearray(disk_sectors * sector_bytes)
    struct.pack_into("<B3sB3sII", img, 0x1BE, 0, b"", 0xEE, b"", 1, min(last_lba, 0xFFFFFFFF))
    img[510:512] = b"\x55\xaa"
    img[sector_bytes : 2 * sector_bytes] = gpt_header(
        my_lba=1, alternate_lba=last_lba, entries_lba=2, **common
    )
    img[2 * sector_bytes : 2 * sector_bytes + len(array)] = array
    backup_entries_lba = last_lba - array_sectors
    start = backup_entries_lba * sector_bytes
    img[start : start + len(array)] = array
    img[last_lba * sector_bytes :] = gpt_header(
        my_lba=last_lba, alternate_lba=1, entries_lba=backup_entries_lba, **common
    )
    return img


def parse(img: bytes | bytearray, size_bytes: int | None = None) -> PartitionMap:
    data = bytes(img)
    region = Region("user", len(data) if size_bytes is None else size_bytes)
    return run_reader(read_gpt(region), reader_from_bytes({"user": data}))


def recording(img: bytes | bytearray) -> tuple[Callable[[Need], bytes], list[Need]]:
    needs: list[Need] = []
    inner = reader_from_bytes({"user": bytes(img)})

    def read(need: Need) -> bytes:
        needs.append(need)
        return inner(need)

    return read, needs


THREE = [
    Entry("boot_a", 40, 103),
    Entry("system", 104, 1063),
    Entry("userdata", 1064, 1999, attributes=1 << 60),
]


# --- the good path ----------------------------------------------------------------------------


def test_built_gpt_names_offsets_and_inclusive_sizes() -> None:
    pmap = parse(build_gpt(THREE))
    assert pmap.origin == "GPT (primary, 512-byte sectors)"
    assert pmap.warnings == ()
    assert [p.name for p in pmap.partitions] == ["boot_a", "system", "userdata"]
    boot = pmap.by_name("boot_a")
    assert (boot.offset_bytes, boot.size_bytes) == (40 * 512, 64 * 512)  # 40..103 inclusive
    assert pmap.by_name("userdata").end_bytes == 2000 * 512
    assert [p.number for p in pmap.partitions] == [1, 2, 3]
    assert all(p.origin == "gpt" and p.exposed and not p.warnings for p in pmap.partitions)
    extra = pmap.by_name("userdata").extra
    assert extra["type_guid"] == str(LINUX_FS)
    assert extra["unique_guid"] == str(THREE[2].unique_guid)
    assert extra["attributes"] == 1 << 60
    assert (extra["first_lba"], extra["last_lba"], extra["sector_bytes"]) == (1064, 1999, 512)


def test_good_primary_never_reads_the_backup() -> None:
    img = build_gpt(THREE)
    read, needs = recording(img)
    run_reader(read_gpt(Region("user", len(img))), read)
    assert all(need.offset_bytes < 34 * 512 for need in needs)


def test_empty_slots_are_skipped_but_keep_entry_numbers() -> None:
    pmap = parse(build_gpt([Entry("a", 40, 41), None, None, Entry("d", 42, 43)]))
    assert [(p.name, p.number) for p in pmap.partitions] == [("a", 1), ("d", 4)]


def test_4096_byte_sectors_ufs() -> None:
    entries = [Entry("preloader_raw", 6, 261), Entry("super", 262, 511)]
    img = build_gpt(entries, disk_sectors=1024, sector_bytes=4096)
    assert img[512:520] != b"EFI PART" and img[4096:4104] == b"EFI PART"
    pmap = parse(img)
    assert pmap.origin == "GPT (primary, 4096-byte sectors)"
    assert pmap.warnings == ()
    sup = pmap.by_name("super")
    assert (sup.offset_bytes, sup.size_bytes) == (262 * 4096, 250 * 4096)
    assert sup.extra["sector_bytes"] == 4096


def test_larger_entries_are_read_by_their_size() -> None:
    img = build_gpt([Entry("a", 100, 199), Entry("b", 200, 299)], entry_count=64, entry_bytes=256)
    pmap = parse(img)
    assert [p.offset_bytes for p in pmap.partitions] == [100 * 512, 200 * 512]


def test_no_gpt_raises_nomaperror() -> None:
    with pytest.raises(NoMapError, match="no GPT"):
        parse(bytes(64 * 1024))
    with pytest.raises(NoMapError):
        parse(b"")


def test_entry_ending_before_it_starts_is_skipped_with_a_warning() -> None:
    pmap = parse(build_gpt([Entry("good", 40, 50), Entry("bad", 60, 59)]))
    assert [p.name for p in pmap.partitions] == ["good"]
    assert any("ends before it starts" in w and "'bad'" in w for w in pmap.warnings)


def test_entry_outside_usable_area_is_flagged() -> None:
    pmap = parse(build_gpt([Entry("over_header", 1, 50)]))
    assert pmap.partitions[0].exposed
    assert "outside the GPT's usable area" in pmap.partitions[0].warnings[0]


# --- corruption: the backup takes over ------------------------------------------------------


def test_corrupt_primary_header_crc_uses_backup() -> None:
    img = build_gpt(THREE)
    img[512 + 40] ^= 0x01  # first_usable_lba changes, the header CRC no longer matches
    pmap = parse(img)
    assert pmap.origin == "GPT (backup, 512-byte sectors)"
    assert [p.name for p in pmap.partitions] == ["boot_a", "system", "userdata"]
    assert all(p.origin == "gpt-backup" for p in pmap.partitions)
    (warning,) = pmap.warnings
    assert "primary GPT is corrupt" in warning and "header CRC32 mismatch" in warning
    assert "backup GPT at LBA 2047" in warning


def test_corrupt_primary_entries_crc_uses_backup_at_alternate_lba() -> None:
    img = build_gpt(THREE)
    img[2 * 512 + 56] ^= 0x20  # first name character of entry 1: 'b' -> 'B'
    read, needs = recording(img)
    pmap = run_reader(read_gpt(Region("user", len(img))), read)
    assert pmap.by_name("boot_a").origin == "gpt-backup"
    assert "entry array CRC32 mismatch" in pmap.warnings[0]
    assert Need("user", 2047 * 512, 512) in needs


def test_padded_image_with_corrupt_entries_finds_backup_at_alternate_lba() -> None:
    """The backup is where the primary says, not in the last sector of a padded image."""
    img = build_gpt(THREE) + bytes(100 * 512)
    img[2 * 512 + 56] ^= 0x20
    pmap = parse(img)
    assert pmap.origin.startswith("GPT (backup")
    assert "primary GPT is corrupt" in pmap.warnings[0]
    assert "100 sectors (51200 bytes) larger than the GPT says" in pmap.warnings[1]


def test_missing_primary_finds_backup_in_last_sector() -> None:
    for sector_bytes, disk_sectors in ((512, 2048), (4096, 512)):
        img = build_gpt(THREE[:2], disk_sectors=disk_sectors, sector_bytes=sector_bytes)
        img[sector_bytes : 2 * sector_bytes] = bytes(sector_bytes)
        pmap = parse(img)
        assert pmap.origin == f"GPT (backup, {sector_bytes}-byte sectors)"
        assert "no GPT header at LBA 1" in pmap.warnings[0]
        assert pmap.by_name("system").offset_bytes == 104 * sector_bytes


def test_both_copies_corrupt_raise_one_line_corruptmaperror() -> None:
    img = build_gpt(THREE)
    img[512 + 40] ^= 0x01
    img[-512 + 40] ^= 0x01
    with pytest.raises(CorruptMapError) as info:
        parse(img)
    message = str(info.value)
    assert "\n" not in message
    assert "primary: header CRC32 mismatch" in message
    assert "backup: at LBA 2047: header CRC32 mismatch" in message
    assert "--map FILE" in message


def test_truncated_image_with_corrupt_primary_has_no_backup_to_use() -> None:
    img = build_gpt(THREE)[: 1000 * 512]
    img[2 * 512 + 56] ^= 0x20
    with pytest.raises(CorruptMapError, match=r"entry array CRC32 mismatch.*backup: at LBA 2047"):
        parse(img)


# --- sizes: truncated and oversized images --------------------------------------------------


def test_truncated_image_clamps_and_hides_what_is_missing() -> None:
    img = build_gpt(THREE)[: 500 * 512]
    pmap = parse(img)
    assert pmap.origin == "GPT (primary, 512-byte sectors)"
    assert pmap.warnings == (
        "image is truncated: the GPT describes 2048 sectors (1048576 bytes) but the image "
        "holds 500; the backup GPT (LBA 2047) is not in it",
    )
    assert pmap.by_name("boot_a").warnings == ()
    system = pmap.by_name("system")
    assert system.exposed and system.size_bytes == (500 - 104) * 512
    assert system.declared_size_bytes == 960 * 512
    assert "truncated" in system.warnings[0]
    userdata = pmap.by_name("userdata")
    assert not userdata.exposed and userdata.size_bytes == 0
    assert "missing" in userdata.warnings[0]


def test_oversized_image_gets_the_parted_warning() -> None:
    pmap = parse(build_gpt(THREE) + bytes(991 * 512))
    assert pmap.warnings == (
        "image is 991 sectors (507392 bytes) larger than the GPT says (parted: 'Not all of the "
        "space available ... appears to be used ... an extra 991 blocks'); the extra space is "
        "ignored and nothing is changed",
    )


# --- hostile input ----------------------------------------------------------------------------


def test_hostile_names_are_cleaned_and_made_unique() -> None:
    names = ["../../etc/passwd", "a/b", "boot", "BOOT", "boot", ".hidden", "..", "", "x" * 36]
    entries: list[Entry | None] = [Entry(n, 40 + i, 40 + i) for i, n in enumerate(names)]
    entries.append(Entry("sys".encode("utf-16-le") + b"\0\0" + "tem".encode("utf-16-le"), 60, 60))
    entries.append(Entry("\udcff".encode("utf-16-le", "surrogatepass") + b"\x00\xd8", 61, 61))
    pmap = parse(build_gpt(entries))
    got = [p.name for p in pmap.partitions]
    assert got == [
        "_.._etc_passwd",
        "a_b",
        "boot",
        "BOOT~2",
        "boot~3",
        "hidden",
        "p7",
        "p8",
        "x" * 36,
        "sys",
        "p11",
    ]
    for name in got:
        assert "/" not in name and "\0" not in name and not name.startswith(".")


def test_hostile_entry_count_is_refused_without_reading_it() -> None:
    img = build_gpt(THREE)
    img[512:1024] = gpt_header(
        my_lba=1,
        alternate_lba=2047,
        first_usable_lba=34,
        last_usable_lba=2014,
        entries_lba=2,
        entry_count=0xFFFFFFFF,
        entry_bytes=128,
        entries_crc32=0,
    )
    read, needs = recording(img)
    pmap = run_reader(read_gpt(Region("user", len(img))), read)
    assert "entry count 4294967295 is over 1024" in pmap.warnings[0]
    assert pmap.origin.startswith("GPT (backup")
    assert max(need.size_bytes for need in needs) <= MAX_ENTRIES * MAX_ENTRY_BYTES


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"entry_bytes": 0xFFFFFFF8}, "entry size"),
        ({"entry_bytes": 100}, "entry size"),
        ({"entry_bytes": 132}, "entry size"),
        ({"header_bytes": 91}, "header size"),
        ({"header_bytes": 513}, "header size"),
        ({"my_lba": 7}, "says it is at LBA 7"),
        ({"alternate_lba": 1}, "alternate LBA"),
        ({"first_usable_lba": 3000}, "first usable"),
        ({"entries_lba": 1}, "overlaps the header"),
    ],
)
def test_insane_primary_headers_fall_back_to_backup(changes: dict[str, int], reason: str) -> None:
    img = build_gpt(THREE)
    fields = dict(
        my_lba=1,
        alternate_lba=2047,
        first_usable_lba=34,
        last_usable_lba=2014,
        entries_lba=2,
        entry_count=128,
        entry_bytes=128,
        entries_crc32=zlib.crc32(entry_array(list(THREE))),
    )
    fields.update(changes)
    img[512:1024] = gpt_header(**fields)[:512]
    pmap = parse(img)
    assert pmap.origin.startswith("GPT (backup")
    assert reason in pmap.warnings[0]


# --- real sgdisk images -----------------------------------------------------------------------

needs_sgdisk = pytest.mark.skipif(shutil.which("sgdisk") is None, reason="sgdisk not installed")


def sgdisk(*args: str) -> str:
    done = subprocess.run(["sgdisk", *args], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout


@pytest.fixture
def sgdisk_disk(tmp_path: Path) -> Path:
    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk not installed")
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(16 * MIB)
    sgdisk("-o", "-n", "1:2048:+1M", "-c", "1:boot_a", "-n", "2:0:+3M", "-c", "2:system",
           "-n", "3:0:0", "-c", "3:userdata", "-A", "3:set:2", str(path))  # fmt: skip
    return path


@needs_sgdisk
def test_sgdisk_image_matches_sgdisk_own_report(sgdisk_disk: Path) -> None:
    pmap = parse(sgdisk_disk.read_bytes())
    assert pmap.warnings == ()
    assert [p.name for p in pmap.partitions] == ["boot_a", "system", "userdata"]
    for part in pmap.partitions:
        info = sgdisk("-i", str(part.number), str(sgdisk_disk))
        first = int(re.search(r"First sector: (\d+)", info).group(1))  # type: ignore[union-attr]
        last = int(re.search(r"Last sector: (\d+)", info).group(1))  # type: ignore[union-attr]
        unique = re.search(r"unique GUID: (\S+)", info).group(1)  # type: ignore[union-attr]
        assert part.offset_bytes == first * 512
        assert part.size_bytes == (last - first + 1) * 512
        assert part.extra["unique_guid"] == unique.lower()
        assert part.extra["type_guid"] == str(LINUX_FS)
    assert pmap.by_name("boot_a").offset_bytes == MIB
    assert pmap.by_name("system").size_bytes == 3 * MIB
    assert pmap.by_name("userdata").extra["attributes"] == 1 << 2


@needs_sgdisk
def test_sgdisk_image_grown_by_991_sectors(sgdisk_disk: Path) -> None:
    data = sgdisk_disk.read_bytes() + bytes(991 * 512)
    pmap = parse(data)
    assert len(pmap.partitions) == 3
    assert pmap.warnings[0].startswith("image is 991 sectors (507392 bytes) larger than the GPT")
    assert "an extra 991 blocks" in pmap.warnings[0]


@needs_sgdisk
def test_sgdisk_image_truncated(sgdisk_disk: Path) -> None:
    pmap = parse(sgdisk_disk.read_bytes()[: 4 * MIB])
    assert pmap.origin == "GPT (primary, 512-byte sectors)"
    assert "backup GPT (LBA 32767) is not in it" in pmap.warnings[0]
    boot, system, userdata = pmap.partitions
    assert boot.exposed and boot.size_bytes == MIB and not boot.warnings
    assert system.exposed and system.size_bytes == 2 * MIB and system.declared_size_bytes == 3 * MIB
    assert not userdata.exposed and userdata.size_bytes == 0


@needs_sgdisk
def test_sgdisk_image_with_primary_zapped(sgdisk_disk: Path) -> None:
    data = bytearray(sgdisk_disk.read_bytes())
    data[512:1024] = bytes(512)
    pmap = parse(data)
    assert pmap.origin == "GPT (backup, 512-byte sectors)"
    assert [p.name for p in pmap.partitions] == ["boot_a", "system", "userdata"]


# --- fuzzing ----------------------------------------------------------------------------------


def check_outcome(img: bytes, size_bytes: int) -> None:
    """Either a map whose partitions lie inside the region, or a MapError; nothing else."""
    read, needs = recording(img)
    try:
        pmap = run_reader(read_gpt(Region("user", size_bytes)), read)
    except MapError:
        return
    finally:
        assert all(need.size_bytes <= MAX_ENTRIES * MAX_ENTRY_BYTES for need in needs)
    assert_sane_map(pmap, {"user": Region("user", size_bytes)})


small_lba = st.one_of(st.integers(0, 80), st.sampled_from([2**32 - 1, 2**63, 2**64 - 1]))


def mostly(valid: int, hostile: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """The sane value most of the time, so the fuzzer also gets past the header checks."""
    return st.one_of(st.just(valid), st.just(valid), hostile)


@st.composite
def fuzz_entries(draw: st.DrawFn) -> Entry:
    type_guid = draw(st.one_of(st.just(LINUX_FS.bytes_le), st.binary(min_size=16, max_size=16)))
    return Entry(
        name=draw(st.one_of(st.text(max_size=40), st.binary(max_size=72))),
        first_lba=draw(small_lba),
        last_lba=draw(small_lba),
        type_guid=uuid.UUID(bytes_le=type_guid),
        attributes=draw(st.integers(0, 2**64 - 1)),
    )


@st.composite
def hostile_gpts(draw: st.DrawFn) -> tuple[bytes, int]:
    """Small GPTs with valid CRCs but arbitrary fields, then optionally a few flipped bytes."""
    sector_bytes = draw(st.sampled_from([512, 4096]))
    disk_sectors = draw(st.integers(4, 80))
    last_lba = disk_sectors - 1
    entry_count = draw(mostly(4, st.sampled_from([0, 1, 8, 1024, 1025, 2**32 - 1])))
    entry_bytes = draw(mostly(128, st.sampled_from([136, 256, 64, 0, 2**32 - 8])))
    entries = draw(st.lists(st.one_of(st.none(), fuzz_entries()), max_size=6))
    fitting = min(entry_count, 8) if 128 <= entry_bytes <= 256 else 0
    array = entry_array(entries[:fitting], fitting, entry_bytes if fitting else 128)
    img = bytearray(disk_sectors * sector_bytes)

    def header(my_lba: int, alternate_lba: int) -> bytes:
        return gpt_header(
            my_lba=my_lba,
            alternate_lba=alternate_lba,
            first_usable_lba=draw(mostly(3, small_lba)),
            last_usable_lba=draw(mostly(last_lba - 2, small_lba)),
            entries_lba=draw(mostly(2, st.integers(0, 4))),
            entry_count=entry_count,
            entry_bytes=entry_bytes,
            entries_crc32=zlib.crc32(array),
            sector_bytes=sector_bytes,
            header_bytes=draw(mostly(92, st.sampled_from([100, 0, sector_bytes + 1]))),
        )[:sector_bytes]

    primary = header(draw(mostly(1, st.just(2))), draw(mostly(last_lba, small_lba)))
    img[sector_bytes : 2 * sector_bytes] = primary
    entries_at = 2 * sector_bytes
    img[entries_at : entries_at + len(array)] = array[: len(img) - entries_at]
    if draw(st.booleans()):
        img[-sector_bytes:] = header(last_lba, 1)  # entries: wherever it says, likely LBA 2
    flips = st.tuples(st.integers(0, len(img) - 1), st.integers(0, 255))
    for offset, value in draw(st.lists(flips, max_size=3)):
        img[offset] = value
    size_bytes = draw(st.one_of(st.just(len(img)), st.integers(0, 2 * len(img))))
    return bytes(img[: disk_sectors * sector_bytes]), size_bytes


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_gpts())
def test_fuzz_structured_gpts(case: tuple[bytes, int]) -> None:
    check_outcome(*case)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=8192), st.integers(0, 16384))
def test_fuzz_random_bytes(data: bytes, size_bytes: int) -> None:
    check_outcome(data, size_bytes)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 34 * 512 - 1), st.integers(2015 * 512, 2048 * 512 - 1)),
            st.integers(0, 255),
        ),
        max_size=8,
    )
)
def test_fuzz_mutated_valid_gpt(flips: list[tuple[int, int]]) -> None:
    img = build_gpt(THREE)
    for offset, value in flips:
        img[offset] = value
    check_outcome(bytes(img), len(img))
