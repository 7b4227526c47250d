"""The used blocks of real ext2/3/4 images (mtkfs.content.ext4_used) against e2fsprogs.

Oracle: ``dumpe2fs`` lists each group's free blocks; the used set must be exactly their
complement (for every layout mke2fs makes: flex_bg or not, 1/2/4 KiB blocks, sparse_super,
sparse_super2, 32/64-bit descriptors, uninit_bg, metadata_csum, ext2). And the proof that it is
enough: an image rebuilt from the used blocks only (zeros elsewhere, where the original had
0xA5 junk) passes ``e2fsck -fn`` and gives back every file byte for byte (``debugfs dump``).
Hostile superblocks and descriptors give :class:`Ext4Error`, never another exception.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mtkfs.content import ext4_used
from mtkfs.content.ext4_used import Ext4Usage, ext4_used_ranges
from mtkfs.errors import Ext4Error
from mtkfs.testing.disk import pseudo_random
from mtkfs.testing.tools import find_tool, fixed_uuid, mkfs_ext4, run, write_tree

KiB = 1 << 10
MiB = 1 << 20
SB = 1024  # the superblock's offset in the partition

#: Pinned mke2fs configuration (the host's varies, e.g. "small" file systems get 1 KiB blocks).
MKE2FS_CONF = """\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
"""

FILES = {
    "big.bin": pseudo_random("ext4_used/big", 700_000),
    "zeros.bin": bytes(300_000),
    "d/e/small.txt": b"hello ext4\n" * 500,
    "d/tiny": b"x",
    **{f"many/f{n:03}": pseudo_random(f"ext4_used/many/{n}", 3000 + 97 * n) for n in range(60)},
}


@dataclass
class Reads:
    """A partition image served through the async read interface, every call recorded."""

    path: Path
    calls: list[tuple[int, int]] = field(default_factory=list)

    async def __call__(self, offset_bytes: int, length_bytes: int) -> bytes:
        self.calls.append((offset_bytes, length_bytes))
        with self.path.open("rb") as f:
            return os.pread(f.fileno(), length_bytes, offset_bytes)


def make_fs(
    tmp: Path,
    size_bytes: int,
    *options: str,
    files: Mapping[str, bytes] | None = None,
    junk: int | None = None,
) -> Path:
    """mkfs.ext4 over a fresh file (pre-filled with ``junk`` bytes, so unused blocks are not
    zero: mke2fs runs with nodiscard), reproducibly (pinned conf, clock and UUID)."""
    tmp.mkdir(parents=True, exist_ok=True)
    image = tmp / "fs.img"
    with image.open("wb") as f:
        if junk is not None:
            for _ in range(size_bytes // MiB):
                f.write(bytes([junk]) * MiB)
        f.truncate(size_bytes)
    conf = tmp / "mke2fs.conf"
    conf.write_text(MKE2FS_CONF)
    args = [find_tool("mkfs.ext4"), "-q", "-F", "-U", str(fixed_uuid(f"ext4_used/{tmp.name}"))]
    args += ["-E", "nodiscard", *options]
    if files is not None:
        args += ["-d", str(write_tree(tmp / "tree", files))]
    run([*args, str(image)], env={"MKE2FS_CONFIG": str(conf), "E2FSPROGS_FAKE_TIME": "1420070400"})
    return image


def usage_of(image: Path, size_bytes: int | None = None) -> tuple[Ext4Usage, Reads]:
    reads = Reads(image)
    size = image.stat().st_size if size_bytes is None else size_bytes
    return trio.run(ext4_used_ranges, reads, size), reads


def dumpe2fs_used(image: Path) -> tuple[int, int, list[tuple[int, int]]]:
    """(block size, block count, used ranges): the complement of every group's "Free blocks"."""
    out = subprocess.run(
        [find_tool("dumpe2fs"), str(image)], capture_output=True, text=True, check=True
    ).stdout
    block_bytes = int(_field(out, "Block size"))
    blocks = int(_field(out, "Block count"))
    free: list[tuple[int, int]] = []
    for listing in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
        for part in filter(None, (p.strip() for p in listing.split(","))):
            low, _, high = part.partition("-")
            free.append((int(low), int(high or low) + 1))
    used: list[tuple[int, int]] = []
    position = 0
    for low, high in sorted(free):
        if low > position:
            used.append((position, low - position))
        position = max(position, high)
    if position < blocks:
        used.append((position, blocks - position))
    return block_bytes, blocks, used


def _field(dump: str, name: str) -> str:
    found = re.search(rf"^{name}:\s+(\S+)", dump, re.M)
    assert found is not None, name
    return found.group(1)


def check_rebuilt(tmp: Path, image: Path, usage: Ext4Usage, files: Mapping[str, bytes]) -> None:
    """Only the used blocks copied (zeros elsewhere): e2fsck finds nothing, files are equal."""
    rebuilt = tmp / "rebuilt.img"
    with image.open("rb") as src, rebuilt.open("wb") as dst:
        dst.truncate(image.stat().st_size)
        for start, count in usage.used:
            for at in range(start, start + count, 1024):
                n = min(1024, start + count - at) * usage.block_bytes
                offset = at * usage.block_bytes
                os.pwrite(dst.fileno(), os.pread(src.fileno(), n, offset), offset)
    fsck = subprocess.run(
        [find_tool("e2fsck"), "-fn", str(rebuilt)], capture_output=True, text=True, check=False
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    out = tmp / "dumped"
    for name, content in files.items():
        run([find_tool("debugfs"), "-R", f"dump /{name} {out}", str(rebuilt)])
        assert out.read_bytes() == content, name


# (id, size, mkfs options, junk byte or None, populated with FILES)
LAYOUTS = [
    ("flex-csum-uninit", 200 * MiB, ("-g", "4096"), None, False),
    ("flex-csum-files-junk", 200 * MiB, ("-g", "4096"), 0xA5, True),
    ("1k-blocks", 40 * MiB, ("-b", "1024", "-g", "1024"), None, True),
    ("1k-noflex-junk", 40 * MiB, ("-b", "1024", "-g", "1024", "-O", "^flex_bg"), 0xA5, True),
    ("2k-blocks", 48 * MiB, ("-b", "2048", "-g", "2048"), 0x5A, True),
    ("noflex", 160 * MiB, ("-g", "4096", "-O", "^flex_bg"), 0xA5, True),
    ("no-sparse-super", 160 * MiB, ("-g", "4096", "-O", "^sparse_super,^resize_inode"), None, True),
    (
        "sparse-super2",
        160 * MiB,
        ("-g", "4096", "-O", "sparse_super2", "-E", "num_backup_sb=2"),
        None,
        True,
    ),
    ("32bit-descriptors", 160 * MiB, ("-g", "4096", "-O", "^64bit"), 0xA5, True),
    ("64bit-no-flex", 160 * MiB, ("-g", "4096", "-O", "64bit,^flex_bg"), None, True),
    (
        "uninit_bg-gdt_csum",
        160 * MiB,
        ("-g", "4096", "-O", "^metadata_csum,uninit_bg"),
        0xA5,
        True,
    ),
    ("no-checksums", 160 * MiB, ("-g", "4096", "-O", "^metadata_csum,^uninit_bg"), None, True),
    ("ext2", 64 * MiB, ("-t", "ext2", "-g", "4096"), 0xA5, True),
    ("ext3", 64 * MiB, ("-t", "ext3", "-b", "1024"), None, True),
]


@pytest.mark.parametrize(
    ("size_bytes", "options", "junk", "populated"),
    [pytest.param(*rest, id=name) for name, *rest in LAYOUTS],
)
def test_used_blocks_are_exactly_what_dumpe2fs_does_not_list_free(
    tmp_path: Path, size_bytes: int, options: tuple[str, ...], junk: int | None, populated: bool
) -> None:
    files = FILES if populated else {}
    image = make_fs(tmp_path, size_bytes, *options, files=files if populated else None, junk=junk)
    usage, reads = usage_of(image)
    block_bytes, blocks, expected = dumpe2fs_used(image)
    assert (usage.block_bytes, usage.blocks_count) == (block_bytes, blocks)
    assert list(usage.used) == expected
    assert usage.used_blocks == sum(count for _, count in expected)
    assert all(length <= 4 * MiB for _, length in reads.calls)
    if junk is not None:  # the test means something: what is left out is junk, not zeros
        gap_at = (usage.used[0][0] + usage.used[0][1]) * block_bytes
        with image.open("rb") as f:
            assert os.pread(f.fileno(), 64, gap_at) == bytes([junk]) * 64
    check_rebuilt(tmp_path, image, usage, files)


def test_the_project_image_builder_and_few_reads(tmp_path: Path) -> None:
    """mtkfs.testing's own builder (the images of the phone fixtures): 3 groups of 128 MiB, all
    the bitmaps side by side in group 0 (flex_bg) — one superblock, one table, one bitmap read."""
    image = tmp_path / "system.img"
    image.write_bytes(b"")
    os.truncate(image, 320 * MiB)
    mkfs_ext4(tmp_path, image, 0, 320 * MiB, label="system", key="ext4_used/system",
              tree=write_tree(tmp_path / "tree", FILES))  # fmt: skip
    usage, reads = usage_of(image)
    assert list(usage.used) == dumpe2fs_used(image)[2]
    assert len(reads.calls) == 3, reads.calls
    check_rebuilt(tmp_path, image, usage, FILES)


def test_a_large_sparse_file_system_reads_bitmaps_in_batches(tmp_path: Path) -> None:
    """A 16 GiB userdata-like ext4 (128 groups, flex_bg of 16): exact, and one bitmap read per
    flex group at most (not one per group)."""
    image = make_fs(tmp_path, 16 << 30, "-E", "lazy_itable_init=1,lazy_journal_init=1")
    usage, reads = usage_of(image)
    assert usage.blocks_count == 4 * MiB  # 4 KiB blocks
    assert list(usage.used) == dumpe2fs_used(image)[2]
    assert len(reads.calls) <= 2 + 128 // 16, reads.calls


def test_a_partition_larger_than_the_file_system(tmp_path: Path) -> None:
    """The partition may be bigger than the file system (a resized partition): fine."""
    image = make_fs(tmp_path, 48 * MiB, "-g", "4096")
    run([find_tool("resize2fs"), "-f", str(image), "40M"])
    usage, _ = usage_of(image)
    assert usage.blocks_count * usage.block_bytes == 40 * MiB
    assert list(usage.used) == dumpe2fs_used(image)[2]


def test_block_uninit_flag_without_checksum_feature_is_ignored(tmp_path: Path) -> None:
    """BLOCK_UNINIT means nothing without gdt_csum/metadata_csum: the bitmap is read anyway
    (as e2fsprogs does)."""
    image = make_fs(tmp_path, 160 * MiB, "-g", "4096", "-O", "^metadata_csum,^uninit_bg",
                    files=FILES)  # fmt: skip
    before, _ = usage_of(image)
    desc_bytes = 64
    with image.open("r+b") as f:
        for group in range(10):
            at = 4096 + group * desc_bytes + 0x12
            (flags,) = struct.unpack("<H", os.pread(f.fileno(), 2, at))
            os.pwrite(f.fileno(), struct.pack("<H", flags | 0x2), at)
    after, _ = usage_of(image)
    assert after == before
    assert list(after.used) == dumpe2fs_used(image)[2]


def test_unclean_or_unsupported_file_systems_are_refused(tmp_path: Path) -> None:
    """Bitmaps that cannot be trusted, or that do not mean blocks: copy the whole partition."""
    cases = {
        "meta_bg": ("-O", "meta_bg,^resize_inode"),
        "bigalloc": ("-O", "bigalloc", "-C", "16384"),
    }
    for name, options in cases.items():
        image = make_fs(tmp_path / name, 64 * MiB, *options)
        with pytest.raises(Ext4Error, match=name):
            usage_of(image)
    image = make_fs(tmp_path / "states", 32 * MiB)
    for feature, state, match in [
        (0x4, 0x1, "not yet replayed"),  # needs_recovery
        (0, 0x3, "errors"),
    ]:
        spoiled = tmp_path / "states" / f"spoiled-{feature}-{state}.img"
        data = bytearray(image.read_bytes())
        (incompat,) = struct.unpack_from("<I", data, SB + 0x60)
        struct.pack_into("<I", data, SB + 0x60, incompat | feature)
        struct.pack_into("<H", data, SB + 0x3A, state)
        spoiled.write_bytes(data)
        with pytest.raises(Ext4Error, match=match):
            usage_of(spoiled)
    ext2 = make_fs(tmp_path / "ext2", 32 * MiB, "-t", "ext2")
    data = bytearray(ext2.read_bytes())
    struct.pack_into("<H", data, SB + 0x3A, 0)  # mounted (or crashed) without a journal
    ext2.write_bytes(data)
    with pytest.raises(Ext4Error, match="cleanly"):
        usage_of(ext2)


# -- hostile and truncated metadata ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_fs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 6 MiB ext4 of 1 KiB blocks and 1 MiB groups (6 groups, some uninit), with files."""
    folder = tmp_path_factory.mktemp("small_fs")
    files = {"a": pseudo_random("ext4_used/a", 200_000), "b/c": b"c" * 5000}
    return make_fs(folder, 6 * MiB, "-b", "1024", "-g", "1024", files=files).read_bytes()


def usage_of_bytes(
    blob: bytes, size_bytes: int, patches: Mapping[int, int] | None = None
) -> tuple[Ext4Usage, list[tuple[int, int]]]:
    """ext4_used_ranges over ``blob`` with single bytes replaced (offset → value)."""
    calls: list[tuple[int, int]] = []
    patches = patches or {}

    async def read(offset_bytes: int, length_bytes: int) -> bytes:
        calls.append((offset_bytes, length_bytes))
        piece = bytearray(blob[offset_bytes : offset_bytes + length_bytes])
        for at, value in patches.items():
            if offset_bytes <= at < offset_bytes + len(piece):
                piece[at - offset_bytes] = value
        return bytes(piece)

    return trio.run(ext4_used_ranges, read, size_bytes), calls


GDT = 2048  # 1 KiB blocks: the descriptor table is block 2


def _lie(match: str, *patches: tuple[int, str, int]) -> object:
    return pytest.param(list(patches), match, id=f"{match}-{patches[0][0]:#x}-{patches[0][2]}")


@pytest.mark.parametrize(
    ("patches", "match"),
    [
        _lie("magic", (SB + 0x38, "<H", 0xEF54)),
        _lie("block size", (SB + 0x18, "<I", 7)),
        _lie("block size", (SB + 0x18, "<I", 0xFFFFFFFF)),
        _lie("more than the partition", (SB + 0x04, "<I", 0xFFFFFFFF)),
        _lie("more than the partition", (SB + 0x150, "<I", 1)),  # the 64-bit high half
        _lie("first data block", (SB + 0x14, "<I", 0)),
        _lie("first data block", (SB + 0x14, "<I", 5000)),
        _lie("blocks per group", (SB + 0x20, "<I", 0)),
        _lie("blocks per group", (SB + 0x20, "<I", 100)),
        _lie("blocks per group", (SB + 0x20, "<I", 8193)),
        _lie("blocks per group", (SB + 0x20, "<I", 16384)),
        _lie("cluster size", (SB + 0x24, "<I", 2048)),
        _lie("cluster size", (SB + 0x1C, "<I", 1)),
        _lie("inodes per group", (SB + 0x28, "<I", 0)),
        _lie("inodes per group", (SB + 0x28, "<I", 1 << 20)),
        _lie("inodes is not", (SB + 0x00, "<I", 12345)),
        _lie("inode size", (SB + 0x58, "<H", 100)),
        _lie("inode size", (SB + 0x58, "<H", 4096)),
        _lie("descriptor size", (SB + 0xFE, "<H", 48)),
        _lie("descriptor size", (SB + 0xFE, "<H", 2048)),
        _lie("reserved descriptor", (SB + 0xCE, "<H", 1000)),
        _lie(
            "do not fit in group 0",
            (SB + 0x20, "<I", 256),
            (SB + 0x24, "<I", 256),
            (SB + 0x28, "<I", 16),
            (SB + 0xCE, "<H", 255),
        ),
        _lie("block bitmap", (GDT + 0x00, "<I", 0)),
        _lie("block bitmap", (GDT + 0x00, "<I", 1)),
        _lie("inode bitmap", (GDT + 64 + 0x04, "<I", 6 * 1024)),
        _lie("inode table", (GDT + 2 * 64 + 0x08, "<I", 6 * 1024 - 10)),
        _lie("block bitmap", (GDT + 3 * 64 + 0x20, "<I", 1)),  # the 64-bit high half
        _lie("meta_bg", (SB + 0x60, "<I|", 0x10)),  # "|": set bits in the field
        _lie("bigalloc", (SB + 0x64, "<I|", 0x200)),
    ],
)
def test_lies_in_superblock_or_descriptors(
    small_fs: bytes, patches: list[tuple[int, str, int]], match: str
) -> None:
    data = bytearray(small_fs)
    for offset, spec, value in patches:
        fmt = spec.rstrip("|")
        bits = struct.unpack_from(fmt, data, offset)[0] if spec.endswith("|") else 0
        struct.pack_into(fmt, data, offset, value | bits)
    with pytest.raises(Ext4Error, match=match):
        usage_of_bytes(bytes(data), len(small_fs))


def test_truncated_and_missing_file_systems(small_fs: bytes) -> None:
    with pytest.raises(Ext4Error, match="too small"):
        usage_of_bytes(small_fs[:1500], 1500)
    with pytest.raises(Ext4Error, match="magic"):
        usage_of_bytes(bytes(64 * KiB), 64 * KiB)
    with pytest.raises(Ext4Error, match=r"6144 blocks of 1024 bytes.*partition's 5242880 bytes"):
        usage_of_bytes(small_fs, 5 * MiB)
    # The partition claims its full size but the read ends early (a short source).
    _, calls = usage_of_bytes(small_fs, len(small_fs))
    last_offset, last_length = calls[-1]  # the last bitmap read
    for cut in (2100, 3000, last_offset + 10, last_offset + last_length - 1):
        with pytest.raises(Ext4Error, match="past the end"):
            usage_of_bytes(small_fs[:cut], len(small_fs))


def test_a_hostile_superblock_over_a_huge_partition_stays_bounded() -> None:
    """A 1 TiB "partition" of zeros but for a superblock claiming 2^28 blocks in 256-block
    groups: its descriptor table would be 32 MiB and cannot fit in group 0. Refused without
    reading or allocating anything big."""
    sb = bytearray(1024)
    struct.pack_into("<IIIIIIIIII", sb, 0, 1 << 30, 1 << 28, 0, 0, 0, 0, 2, 2, 256, 256)
    struct.pack_into("<I", sb, 0x28, 1024)
    struct.pack_into("<HH", sb, 0x38, 0xEF53, 1)
    struct.pack_into("<I", sb, 0x4C, 1)
    struct.pack_into("<H", sb, 0x58, 256)
    struct.pack_into("<I", sb, 0x5C, 0x4)
    calls: list[tuple[int, int]] = []

    async def read(offset_bytes: int, length_bytes: int) -> bytes:
        calls.append((offset_bytes, length_bytes))
        if offset_bytes == SB:
            return bytes(sb)
        return bytes(length_bytes)

    with pytest.raises(Ext4Error, match="group 0"):
        trio.run(ext4_used_ranges, read, 1 << 40)
    assert calls == [(SB, 1024)]


def test_too_many_ranges_are_bridged_not_listed(
    small_fs: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the range limit, small free gaps count as used: a superset, and a bounded list."""
    exact, _ = usage_of_bytes(small_fs, len(small_fs))
    assert len(exact.used) > 2
    monkeypatch.setattr(ext4_used, "_MAX_RANGES", 2)
    bridged, _ = usage_of_bytes(small_fs, len(small_fs))
    assert len(bridged.used) <= 2
    covered = {b for start, count in bridged.used for b in range(start, start + count)}
    assert all(b in covered for start, count in exact.used for b in range(start, start + count))


def test_ranges_helper_halves_when_over_the_limit() -> None:
    ranges = ext4_used._Ranges(8)
    for n in range(1000):
        ranges.add(3 * n, 3 * n + 1 + (n % 3 == 0))
    assert len(ranges.items) <= 8
    assert ranges.items[0][0] == 0 and ranges.items[-1][1] == 2999
    assert all(a[1] < b[0] for a, b in zip(ranges.items, ranges.items[1:], strict=False))


_SUPER_OFFSETS = sorted({at for at, _ in ext4_used._SUPER_FIELDS.values()})
_INTERESTING = [0, 1, 2, 7, 8, 255, 256, 1023, 1024, 4096, 32768, 0x7FFFFFFF, 0xFFFFFFFF]


def check_error_or_sane(blob: bytes, size_bytes: int, patches: Mapping[int, int]) -> None:
    """Either Ext4Error, or an answer that fits the partition, read in bounded pieces."""
    try:
        usage, calls = usage_of_bytes(blob, size_bytes, patches)
    except Ext4Error:
        event("Ext4Error")
        return
    event("an answer")
    assert all(length <= 4 * MiB for _, length in calls)
    assert 1024 <= usage.block_bytes <= 65536
    assert usage.blocks_count * usage.block_bytes <= size_bytes
    previous_end = -1
    for start, count in usage.used:
        assert count > 0 and start > previous_end and start + count <= usage.blocks_count
        previous_end = start + count


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from(_SUPER_OFFSETS)
            | st.builds(
                lambda g, f: GDT - SB + 64 * g + f,
                st.integers(0, 7),
                st.sampled_from([0, 4, 8, 0x12, 0x20, 0x24, 0x28]),
            ),
            st.sampled_from(_INTERESTING) | st.integers(0, 0xFFFFFFFF),
        ),
        max_size=4,
    ),
    noise=st.lists(st.tuples(st.integers(SB, 600 * KiB), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 18 * MiB),  # past 6 MiB: not cut
)
def test_mutated_superblock_and_descriptors_give_ext4_error_or_a_sane_answer(
    small_fs: bytes, fields: list[tuple[int, int]], noise: list[tuple[int, int]], cut: int
) -> None:
    """Whole 32-bit fields of the superblock and descriptors set to edge values, stray bytes,
    and the image cut anywhere."""
    patches: dict[int, int] = {}
    for relative, value in fields:
        for i, byte in enumerate(struct.pack("<I", value)):
            patches[SB + relative + i] = byte
    patches.update(noise)
    check_error_or_sane(small_fs[:cut], len(small_fs), patches)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=st.dictionaries(st.integers(SB, 600 * KiB), st.integers(0, 255), max_size=4))
def test_stray_bytes_in_metadata_give_ext4_error_or_a_sane_answer(
    small_fs: bytes, noise: dict[int, int]
) -> None:
    """A few stray bytes anywhere in the superblock, descriptors (flags: uninit or not) and
    bitmaps: mostly answers, which must still be sane."""
    check_error_or_sane(small_fs, len(small_fs), noise)
