"""The Android sparse image writer (mtkfs.content.sparse_write) against two readers: ours
(mtkfs.content.sparse) and AOSP's real ``simg2img``. What must hold: the image expands to the
input with the blocks outside ``used`` zeroed (exactly the input when everything is used); runs
of one fill value are one FILL chunk, runs of data one RAW chunk (closed at ``step_bytes``);
only used blocks are read, in steps; sizes the format cannot hold are refused."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.content import sparse, sparse_write
from mtkfs.content.ext4_used import Ext4Usage, ext4_used_ranges
from mtkfs.content.sparse_write import SparseStats, sparse_image, write_sparse
from mtkfs.errors import SourceError
from mtkfs.testing.disk import pseudo_random
from mtkfs.testing.tools import find_tool, mkfs_ext4, run, write_tree

BLOCK = 4096
MiB = 1 << 20


def blocks(*kinds: str, block_bytes: int = BLOCK) -> bytes:
    """Blocks of named kinds: ``z`` zeros, ``f`` 0xff, ``p``/``q`` two 4-byte patterns, ``r<n>``
    pseudo-random block number n."""
    out = bytearray()
    for kind in kinds:
        if kind == "z":
            out += bytes(block_bytes)
        elif kind == "f":
            out += b"\xff" * block_bytes
        elif kind in ("p", "q"):
            out += (b"\x01\x02\x03\x04" if kind == "p" else b"\xde\xad\xbe\xef") * (
                block_bytes // 4
            )
        else:
            out += pseudo_random(f"sparse_write/{kind}", block_bytes)
    return bytes(out)


def masked(data: bytes, used: Iterable[tuple[int, int]], block_bytes: int = BLOCK) -> bytes:
    """``data`` with every block outside ``used`` zeroed (what DONT_CARE expands to)."""
    out = bytearray(len(data))
    for start, count in used:
        lo, hi = max(0, start) * block_bytes, max(0, start + count) * block_bytes
        out[lo:hi] = data[lo:hi]
    return bytes(out[: len(data)])


async def write_to(
    out: io.BytesIO | io.BufferedRandom,
    data: bytes,
    used: Iterable[tuple[int, int]],
    *,
    block_bytes: int = BLOCK,
    step_bytes: int = 4 << 20,
    reads: list[tuple[int, int]] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SparseStats:
    async def read(offset_bytes: int, length_bytes: int) -> bytes:
        if reads is not None:
            reads.append((offset_bytes, length_bytes))
        await trio.lowlevel.checkpoint()
        return data[offset_bytes : offset_bytes + length_bytes]

    return await write_sparse(
        out, read, size_bytes=len(data), block_bytes=block_bytes, used=used,
        on_progress=on_progress, step_bytes=step_bytes,
    )  # fmt: skip


def index_of(image: bytes) -> sparse.SparseIndex:
    return sparse.build_index(lambda at, n: image[at : at + n], len(image))


def expand(image: bytes) -> bytes:
    index = index_of(image)
    return index.read(lambda at, n: image[at : at + n], 0, index.raw_bytes)


def layout(image: bytes, block_bytes: int = BLOCK) -> list[tuple[str, int, bytes]]:
    """The image's chunks as (kind, blocks, fill value)."""
    names = {sparse.RAW: "RAW", sparse.FILL: "FILL", sparse.DONT_CARE: "DONT_CARE"}
    return [(names[c.kind], c.size // block_bytes, c.fill) for c in index_of(image).chunks]


def simg2img(tmp: Path, image: bytes) -> bytes:
    (tmp / "in.simg").write_bytes(image)
    run([find_tool("simg2img"), str(tmp / "in.simg"), str(tmp / "out.raw")])
    return (tmp / "out.raw").read_bytes()


async def test_chunks_of_a_mixed_image_and_both_readers_agree(tmp_path: Path) -> None:
    data = blocks(*"zzzzzzzz", "r1", "r2", "r3", "r4", "r5", *"ppp", "r6", "r7", *"qq", "r8")
    used = [(0, 16), (18, 2)]  # blocks 16-17 (r6, r7) and 20 (r8) not used
    with (tmp_path / "out.simg").open("w+b") as f:
        stats = await write_to(f, data, used)
    image = (tmp_path / "out.simg").read_bytes()
    assert layout(image) == [
        ("FILL", 8, bytes(4)),
        ("RAW", 5, b""),
        ("FILL", 3, b"\x01\x02\x03\x04"),
        ("DONT_CARE", 2, b""),
        ("FILL", 2, b"\xde\xad\xbe\xef"),
        ("DONT_CARE", 1, b""),
    ]
    assert stats == SparseStats(
        raw_blocks=5, fill_blocks=13, dont_care_blocks=3, chunks=6, file_bytes=len(image)
    )
    assert len(image) == 28 + 6 * 12 + 5 * BLOCK + 3 * 4
    header = sparse.FILE_HEADER.unpack(image[:28])
    assert header == (sparse.MAGIC, 1, 0, 28, 12, BLOCK, 21, 6, 0)
    assert expand(image) == masked(data, used) == simg2img(tmp_path, image)
    everything = sparse_image(data, block_bytes=BLOCK, used=[(0, 21)])
    assert simg2img(tmp_path, everything) == data == expand(everything)


async def test_fill_runs_merge_across_steps_raw_runs_close_at_step_bytes() -> None:
    data = blocks(*("z" * 20), *(f"r{n}" for n in range(7)), *("f" * 5))
    out = io.BytesIO()
    await write_to(out, data, [(0, 32)], step_bytes=3 * BLOCK)
    assert layout(out.getvalue()) == [
        ("FILL", 20, bytes(4)),  # one chunk although read in 7 steps
        ("RAW", 3, b""),
        ("RAW", 3, b""),
        ("RAW", 1, b""),
        ("FILL", 5, b"\xff" * 4),
    ]
    out = io.BytesIO()
    await write_to(out, data, [(0, 32)])  # default 4 MiB steps: the data run is one chunk
    assert [kind for kind, _, _ in layout(out.getvalue())] == ["FILL", "RAW", "FILL"]
    assert expand(out.getvalue()) == data


async def test_an_all_zero_used_region_is_one_fill_chunk_of_a_few_bytes() -> None:
    data = bytes(64 * MiB)
    out = io.BytesIO()
    stats = await write_to(out, data, [(0, 16384)])
    assert layout(out.getvalue()) == [("FILL", 16384, bytes(4))]
    assert stats.file_bytes == len(out.getvalue()) == 28 + 12 + 4


async def test_used_ranges_are_sorted_merged_and_clipped() -> None:
    data = blocks(*(f"r{n}" for n in range(10)))
    messy = [(6, 2), (0, 2), (1, 2), (3, 0), (5, -4), (-3, 4), (8, 50), (4, 1)]
    out = io.BytesIO()
    stats = await write_to(out, data, messy)
    assert layout(out.getvalue()) == [("RAW", 3, b""), ("DONT_CARE", 1, b""), ("RAW", 1, b""),
                                      ("DONT_CARE", 1, b""), ("RAW", 4, b"")]  # fmt: skip
    assert expand(out.getvalue()) == masked(data, [(0, 3), (4, 1), (6, 4)])
    assert (stats.raw_blocks, stats.dont_care_blocks) == (8, 2)
    out = io.BytesIO()
    await write_to(out, data, [])
    assert layout(out.getvalue()) == [("DONT_CARE", 10, b"")]


async def test_only_used_blocks_are_read_in_steps_and_progress_climbs() -> None:
    data = blocks(*(f"r{n}" for n in range(40)))
    used = [(2, 9), (20, 1), (30, 10)]
    reads: list[tuple[int, int]] = []
    progress: list[int] = []
    await write_to(io.BytesIO(), data, used, step_bytes=4 * BLOCK + 100, reads=reads,
                   on_progress=progress.append)  # fmt: skip
    assert all(length <= 4 * BLOCK for _, length in reads)
    read_blocks = sorted(b for at, n in reads for b in range(at // BLOCK, (at + n) // BLOCK))
    assert read_blocks == [*range(2, 11), 20, *range(30, 40)]
    assert progress == sorted(progress) and progress[-1] == len(data)
    assert len(progress) >= len(reads)


async def test_written_at_a_nonzero_position_of_the_file(tmp_path: Path) -> None:
    data = blocks("r1", "z", "r2")
    with (tmp_path / "x").open("w+b") as f:
        f.write(b"prefix")
        stats = await write_to(f, data, [(0, 3)])
        assert f.tell() == 6 + stats.file_bytes
    image = (tmp_path / "x").read_bytes()
    assert image[:6] == b"prefix"
    assert expand(image[6:]) == data


async def test_sizes_the_format_cannot_hold_are_refused() -> None:
    async def never(offset_bytes: int, length_bytes: int) -> bytes:
        raise AssertionError("nothing is read before the sizes are checked")

    for size_bytes, block_bytes in [(5000, 4096), (4096, 0), (4098, 2), (6, 6), (-4096, 4096)]:
        with pytest.raises(ValueError):
            await write_sparse(io.BytesIO(), never, size_bytes=size_bytes,
                               block_bytes=block_bytes, used=[])  # fmt: skip
    with pytest.raises(ValueError, match="do not fit"):
        await write_sparse(io.BytesIO(), never, size_bytes=4 << 32, block_bytes=4, used=[])
    with pytest.raises(ValueError):
        sparse_image(bytes(5000), block_bytes=4096, used=[(0, 1)])


async def test_a_short_read_is_a_source_error() -> None:
    async def short(offset_bytes: int, length_bytes: int) -> bytes:
        return bytes(min(length_bytes, max(0, 3 * BLOCK - offset_bytes)))

    with pytest.raises(SourceError, match="ends at byte 12288, inside block 3 of 8"):
        await write_sparse(io.BytesIO(), short, size_bytes=8 * BLOCK, block_bytes=BLOCK,
                           used=[(0, 8)], step_bytes=2 * BLOCK)  # fmt: skip


def test_raw_chunks_stay_under_the_32_bit_size_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """A RAW chunk's total_sz is 32 bits: with a (pretend) tiny limit, runs are split."""
    monkeypatch.setattr(sparse_write, "_U32_MAX", 12 + 2 * BLOCK + 100)
    data = blocks(*(f"r{n}" for n in range(5)))
    image = sparse_image(data, block_bytes=BLOCK, used=[(0, 5)])
    assert [n for _, n, _ in layout(image)] == [2, 2, 1]
    assert expand(image) == data


KINDS = st.sampled_from(["z", "f", "p", "q", "r1", "r2", "r3"])


@settings(max_examples=150, deadline=None)
@given(
    kinds=st.lists(KINDS, min_size=1, max_size=40),
    used=st.lists(st.tuples(st.integers(-2, 42), st.integers(-1, 12)), max_size=6),
    block_bytes=st.sampled_from([4, 8, 512, 1024, 4096]),
    step_blocks=st.integers(1, 9),
)
def test_random_layouts_expand_to_the_masked_input(
    kinds: list[str], used: list[tuple[int, int]], block_bytes: int, step_blocks: int
) -> None:
    data = blocks(*kinds, block_bytes=block_bytes)
    out = io.BytesIO()
    stats = trio.run(
        lambda: write_to(
            out, data, used, block_bytes=block_bytes, step_bytes=step_blocks * block_bytes
        )
    )
    image = out.getvalue()
    clipped = [(s, c) for s, c in used if c > 0]
    assert expand(image) == masked(data, clipped, block_bytes)
    chunks = layout(image, block_bytes)
    assert stats.chunks == len(chunks) == sparse.FILE_HEADER.unpack(image[:28])[7]
    assert stats.raw_blocks + stats.fill_blocks + stats.dont_care_blocks == len(kinds)
    assert stats.file_bytes == len(image)
    for (kind_a, count_a, fill_a), (kind_b, _, fill_b) in itertools.pairwise(chunks):
        # Neighbours are merged unless a RAW chunk is full (step_bytes).
        assert (kind_a, fill_a) != (kind_b, fill_b) or (kind_a == "RAW" and count_a == step_blocks)
    default_steps = io.BytesIO()
    trio.run(lambda: write_to(default_steps, data, used, block_bytes=block_bytes))
    assert default_steps.getvalue() == sparse_image(data, block_bytes=block_bytes, used=used)


def test_an_ext4_image_of_its_used_blocks_like_ext2simg(tmp_path: Path) -> None:
    """The real job: an ext4 (the project's image builder) with 0xA5 junk in its free blocks,
    written as a sparse image of its used blocks and expanded by simg2img: the junk is gone,
    e2fsck finds nothing, the files are all there, and the file is a fraction of the size."""
    size_bytes = 96 * MiB
    image = tmp_path / "system.img"
    with image.open("wb") as f:
        for _ in range(size_bytes // MiB):
            f.write(b"\xa5" * MiB)
    files = {"app/big.apk": pseudo_random("sparse_write/apk", 3 * MiB), "etc/hosts": b"::1\n"}
    tree = write_tree(tmp_path / "tree", files)
    mkfs_ext4(tmp_path, image, 0, size_bytes, label="system", key="sparse_write", tree=tree)
    back = tmp_path / "back.img"
    with image.open("rb") as src, (tmp_path / "system.simg").open("w+b") as out:

        async def read(offset_bytes: int, length_bytes: int) -> bytes:
            return os.pread(src.fileno(), length_bytes, offset_bytes)

        async def export() -> tuple[Ext4Usage, SparseStats]:
            usage = await ext4_used_ranges(read, size_bytes)
            stats = await write_sparse(out, read, size_bytes=size_bytes,
                                       block_bytes=usage.block_bytes, used=usage.used)  # fmt: skip
            return usage, stats

        usage, stats = trio.run(export)
    assert stats.raw_blocks + stats.fill_blocks == usage.used_blocks
    assert stats.file_bytes < size_bytes // 8
    run([find_tool("simg2img"), str(tmp_path / "system.simg"), str(back)])
    bs = usage.block_bytes
    used = {b for start, count in usage.used for b in range(start, start + count)}
    with image.open("rb") as original, back.open("rb") as expanded:
        for block in range(size_bytes // bs):
            got = os.pread(expanded.fileno(), bs, block * bs)
            if block in used:
                assert got == os.pread(original.fileno(), bs, block * bs), block
            else:
                assert got == bytes(bs), block
    fsck = subprocess.run([find_tool("e2fsck"), "-fn", str(back)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert fsck.returncode == 0, fsck.stdout
    for name, content in files.items():
        run([find_tool("debugfs"), "-R", f"dump /{name} {tmp_path / 'dumped'}", str(back)])
        assert (tmp_path / "dumped").read_bytes() == content
