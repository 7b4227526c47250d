"""ext4 used blocks (against dumpe2fs as the oracle) and the sparse writer (against our reader and
the real simg2img)."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkfs.content import sparse
from mtkfs.content.ext4_used import Ext4Usage, ext4_used_ranges
from mtkfs.content.sparse_write import write_sparse
from mtkfs.errors import Ext4Error
from mtkfs.testing.tools import find_tool, write_tree

MiB = 1 << 20


def make_ext4(
    path: Path, size_bytes: int, *options: str, junk: bool = False, tree: Path | None = None
) -> Path:
    """mkfs.ext4 over a file of ``size_bytes`` (pre-filled with 0xA5 when ``junk``)."""
    with path.open("wb") as f:
        if junk:
            for _ in range(size_bytes // MiB):
                f.write(b"\xa5" * MiB)
        f.truncate(size_bytes)
    args = [find_tool("mkfs.ext4"), "-q", "-F", "-E", "nodiscard", *options]
    if tree is not None:
        args += ["-d", str(tree)]
    subprocess.run([*args, str(path)], check=True, capture_output=True)
    return path


def dumpe2fs_used(path: Path) -> tuple[int, int, set[int]]:
    """(block size, first data block, used blocks) as e2fsprogs sees them."""
    out = subprocess.run(
        [find_tool("dumpe2fs"), str(path)], check=True, capture_output=True, text=True
    ).stdout
    block = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"^Block count:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    first = int(re.search(r"^First block:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    free: set[int] = set()
    for line in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
        for part in filter(None, (p.strip() for p in line.split(","))):
            low, _, high = part.partition("-")
            free.update(range(int(low), int(high or low) + 1))
    return block, first, set(range(first, count)) - free


def used_of(blob: bytes, size_bytes: int | None = None) -> Ext4Usage:
    """Run the async reader over ``blob``."""

    async def read(offset: int, size: int) -> bytes:
        return blob[offset : offset + size]

    return trio.run(ext4_used_ranges, read, len(blob) if size_bytes is None else size_bytes)


def ours(path: Path) -> tuple[int, set[int]]:
    usage = used_of(path.read_bytes())
    used = {b for start, count in usage.used for b in range(start, start + count)}
    return usage.block_bytes, used


@pytest.mark.parametrize(
    ("size_mib", "options", "junk"),
    [
        (64, (), False),  # defaults: flex_bg, metadata_csum, uninit groups
        (64, (), True),  # unused blocks hold junk
        (32, ("-b", "1024"), False),  # first data block 1
        (48, ("-O", "^flex_bg"), True),
        (48, ("-O", "^sparse_super,^resize_inode"), False),
        (48, ("-O", "^metadata_csum,^uninit_bg"), False),  # every bitmap initialised
        (64, ("-O", "64bit"), False),
        (40, ("-O", "sparse_super2"), False),
        (72, ("-t", "ext2"), False),
    ],
)
def test_used_blocks_equal_dumpe2fs(
    tmp_path: Path, size_mib: int, options: tuple[str, ...], junk: bool
) -> None:
    tree = write_tree(tmp_path / "tree", {
        "a.bin": os.urandom(300_000), "d/b.txt": b"hello\n" * 1000, "d/e/c": os.urandom(5000),
    })  # fmt: skip
    image = make_ext4(tmp_path / "fs.img", size_mib * MiB, *options, junk=junk, tree=tree)
    block, first, expected = dumpe2fs_used(image)
    got_block, used = ours(image)
    assert got_block == block
    assert {b for b in used if b >= first} == expected


def test_rebuilt_from_used_blocks_only_passes_fsck_with_equal_files(tmp_path: Path) -> None:
    files = {"a.bin": os.urandom(700_000), "x/y/z.txt": b"data\n" * 5000}
    tree = write_tree(tmp_path / "tree", files)
    image = make_ext4(tmp_path / "fs.img", 64 * MiB, junk=True, tree=tree)
    block, used = ours(image)
    data = image.read_bytes()
    rebuilt = bytearray(len(data))
    for b in used:
        rebuilt[b * block : (b + 1) * block] = data[b * block : (b + 1) * block]
    copy = tmp_path / "rebuilt.img"
    copy.write_bytes(bytes(rebuilt))
    fsck = subprocess.run(
        [find_tool("e2fsck"), "-fn", str(copy)], capture_output=True, text=True, check=False
    )
    assert fsck.returncode == 0, fsck.stdout
    for name, content in files.items():
        out = tmp_path / "out"
        subprocess.run([find_tool("debugfs"), "-R", f"dump /{name} {out}", str(copy)],
                       check=True, capture_output=True)  # fmt: skip
        assert out.read_bytes() == content, name


def test_not_ext4_and_lies_raise_ext4_error(tmp_path: Path) -> None:
    image = make_ext4(tmp_path / "fs.img", 16 * MiB)
    data = bytes(image.read_bytes())
    block = 1024 << struct.unpack_from("<I", data, 1024 + 0x18)[0]
    first = struct.unpack_from("<I", data, 1024 + 0x14)[0]
    cases = [bytes(len(data))]  # no magic
    spoiled = bytearray(data)
    struct.pack_into("<I", spoiled, 1024 + 0x18, 9)  # block size 512 KiB
    cases.append(bytes(spoiled))
    spoiled = bytearray(data)
    struct.pack_into("<I", spoiled, (first + 1) * block, 0xFFFFFF)  # group 0's bitmap: far out
    cases.append(bytes(spoiled))
    spoiled = bytearray(data)
    struct.pack_into("<I", spoiled, 1024 + 0x60, 0x10 | 0x2)  # meta_bg: refused, not guessed
    cases.append(bytes(spoiled))
    for blob in cases:
        with pytest.raises(Ext4Error):
            used_of(blob)
    with pytest.raises(Ext4Error, match="more than the partition"):
        used_of(data, 8 * MiB)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(1024, 2047), st.integers(0, 255)), max_size=12),
    st.lists(st.tuples(st.integers(2048, 3 * 4096), st.integers(0, 255)), max_size=12),
)
def test_mutated_metadata_never_raises_anything_else(
    ext4_blob: bytes, supers: list[tuple[int, int]], descs: list[tuple[int, int]]
) -> None:
    blob = bytearray(ext4_blob)
    for at, value in [*supers, *descs]:
        blob[at] = value
    try:
        usage = used_of(bytes(blob))
    except Ext4Error:
        return
    assert all(s >= 0 and s + c <= usage.blocks_count for s, c in usage.used)


@pytest.fixture(scope="module")
def ext4_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("ext4")
    return make_ext4(folder / "fs.img", 8 * MiB).read_bytes()


# -- the sparse writer -----------------------------------------------------------------------


def sparse_of(data: bytes, used: list[tuple[int, int]], block: int = 4096) -> bytes:
    async def read(offset: int, size: int) -> bytes:
        return data[offset : offset + size]

    async def write() -> bytes:
        out = io.BytesIO()
        await write_sparse(out, read, size_bytes=len(data), block_bytes=block, used=used,
                           step_bytes=3 * block)  # fmt: skip
        return out.getvalue()

    return trio.run(write)


def expand(image: bytes) -> bytes:
    index = sparse.build_index(lambda at, n: image[at : at + n], len(image))
    return index.read(lambda at, n: image[at : at + n], 0, index.raw_bytes)


def masked(data: bytes, used: list[tuple[int, int]], block: int = 4096) -> bytes:
    out = bytearray(len(data))
    for start, count in used:
        out[start * block : (start + count) * block] = data[start * block : (start + count) * block]
    return bytes(out)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["zero", "ones", "random", "pattern"]), min_size=1, max_size=24),
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 8)), max_size=6),
)
def test_round_trip_through_our_reader(kinds: list[str], used: list[tuple[int, int]]) -> None:
    blocks = {
        "zero": lambda: bytes(4096),
        "ones": lambda: b"\xff" * 4096,
        "random": lambda: os.urandom(4096),
        "pattern": lambda: b"\x01\x02\x03\x04" * 1024,
    }
    data = b"".join(blocks[k]() for k in kinds)
    image = sparse_of(data, used)
    clipped = [(s, max(0, min(s + c, len(kinds)) - s)) for s, c in used if s < len(kinds)]
    assert expand(image) == masked(data, clipped)


def test_chunks_merge_and_simg2img_agrees(tmp_path: Path) -> None:
    block = 4096
    data = bytes(8 * block) + os.urandom(5 * block) + b"\xab\xcd\xef\x01" * (3 * 1024)
    data += os.urandom(4 * block)  # 20 blocks; the last 4 unused
    used = [(0, 16)]
    image = sparse_of(data, used)
    index = sparse.build_index(lambda at, n: image[at : at + n], len(image))
    kinds = [(c.kind, c.size // block) for c in index.chunks]
    # One FILL for 8 zero blocks, RAW closed every 3 blocks (step_bytes), one FILL for the
    # pattern, one DONT_CARE for the tail.
    assert kinds[0] == (sparse.FILL, 8)
    assert [k for k, _ in kinds[1:3]] == [sparse.RAW, sparse.RAW]
    assert kinds[-2:] == [(sparse.FILL, 3), (sparse.DONT_CARE, 4)]
    path = tmp_path / "x.simg"
    path.write_bytes(image)
    raw = tmp_path / "x.raw"
    subprocess.run(["simg2img", str(path), str(raw)], check=True)
    assert raw.read_bytes() == masked(data, used)
    everything = sparse_of(data, [(0, 20)])
    path.write_bytes(everything)
    subprocess.run(["simg2img", str(path), str(raw)], check=True)
    assert raw.read_bytes() == data


def test_sizes_that_are_not_whole_blocks_are_refused() -> None:
    with pytest.raises(ValueError):
        sparse_of(bytes(5000), [(0, 1)])
