"""Android sparse images read lazily (mtkfs.content.sparse): every chunk type from a small
encoder written here, img2simg's own output compared with simg2img's, and hostile headers
that must give a SparseImageError naming the problem, never something else."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.content import sparse
from mtkfs.errors import SparseImageError
from mtkfs.testing.disk import pseudo_random

BLOCK = 4096


def encode(chunks: list[tuple[int, int, bytes]], *, block: int = BLOCK) -> bytes:
    """A sparse image of (type, blocks, data) chunks; the header's totals computed."""
    body = b""
    blocks = 0
    for kind, count, data in chunks:
        body += struct.pack("<HHII", kind, 0, count, 12 + len(data)) + data
        blocks += count if kind != sparse.CRC32 else 0
    head = struct.pack("<IHHHHIIII", sparse.MAGIC, 1, 0, 28, 12, block, blocks, len(chunks), 0)
    return head + body


def expand(chunks: list[tuple[int, int, bytes]]) -> bytes:
    out = b""
    for kind, count, data in chunks:
        if kind == sparse.RAW:
            out += data
        elif kind == sparse.FILL:
            out += data * (count * BLOCK // 4)
        elif kind == sparse.DONT_CARE:
            out += bytes(count * BLOCK)
    return out


CHUNKS = [
    (sparse.RAW, 2, pseudo_random("sparse/raw1", 2 * BLOCK)),
    (sparse.FILL, 3, b"\xde\xad\xbe\xef"),
    (sparse.DONT_CARE, 5, b""),
    (sparse.CRC32, 0, b"\x01\x02\x03\x04"),
    (sparse.RAW, 1, pseudo_random("sparse/raw2", BLOCK)),
]


def _index(data: bytes) -> sparse.SparseIndex:
    return sparse.build_index(lambda at, n: data[at : at + n], len(data))


def test_every_chunk_type_at_every_alignment() -> None:
    data = encode(CHUNKS)
    index = _index(data)
    raw = expand(CHUNKS)
    assert index.raw_bytes == len(raw) == 11 * BLOCK
    pread = lambda at, n: data[at : at + n]  # noqa: E731
    for offset, size in [(0, len(raw)), (1, 3), (2 * BLOCK - 3, 10), (2 * BLOCK + 1, 7),
                         (5 * BLOCK - 2, 9), (10 * BLOCK - 1, 5000), (len(raw) - 1, 10),
                         (len(raw), 10)]:  # fmt: skip
        assert index.read(pread, offset, size) == raw[offset : offset + size], (offset, size)


def test_img2simg_output_reads_as_simg2img_expands(tmp_path: Path) -> None:
    raw = bytearray(8 << 20)
    raw[0:100_000] = pseudo_random("sparse/head", 100_000)
    raw[3 << 20 : (3 << 20) + 8192] = b"\x5a" * 8192  # a fill run img2simg finds
    raw[6 << 20 : (6 << 20) + 12_345] = pseudo_random("sparse/mid", 12_345)
    (tmp_path / "raw.img").write_bytes(bytes(raw))
    subprocess.run(["img2simg", str(tmp_path / "raw.img"), str(tmp_path / "s.img")], check=True)
    subprocess.run(["simg2img", str(tmp_path / "s.img"), str(tmp_path / "back.img")], check=True)
    data = (tmp_path / "s.img").read_bytes()
    index = _index(data)
    assert {c.kind for c in index.chunks} >= {sparse.RAW, sparse.FILL}  # zeros: FILL 0
    expanded = index.read(lambda at, n: data[at : at + n], 0, index.raw_bytes)
    assert expanded == (tmp_path / "back.img").read_bytes() == bytes(raw)


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (b"\0" * 28, "not an Android sparse image"),
        (encode(CHUNKS)[:35], "truncated"),
        (encode(CHUNKS)[:-100], "do not fit"),
        (encode([(sparse.RAW, 2, b"x" * BLOCK)]), "RAW holds 4096 bytes for 2 blocks"),
        (encode([(sparse.FILL, 1, b"xy")]), "FILL holds 2 bytes"),
        (encode([(sparse.DONT_CARE, 1, b"zz")]), "DONT_CARE holds 2 bytes"),
        (encode([(0xBEEF, 1, b"")]), "unknown chunk type 0xbeef"),
        (encode([(sparse.RAW, 1, b"x" * 102)], block=102), "not a positive multiple of 4"),
        (encode(CHUNKS)[:4] + struct.pack("<H", 2) + encode(CHUNKS)[6:], "version 2"),
    ],
)
def test_lies_and_truncations_are_named(image: bytes, says: str) -> None:
    with pytest.raises(SparseImageError, match=says):
        _index(image)


def test_header_totals_must_add_up() -> None:
    data = bytearray(encode(CHUNKS))
    struct.pack_into("<I", data, 16, 12)  # total blocks: one too many
    with pytest.raises(SparseImageError, match="chunks cover 11 blocks, the header says 12"):
        _index(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_images_raise_only_sparse_errors(data: st.DataObject) -> None:
    image = bytearray(encode(CHUNKS))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, min(len(image) - 1, 200)))
        image[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(image)))
    blob = bytes(image[:cut])
    try:
        index = _index(blob)
    except SparseImageError:
        return
    try:
        index.read(lambda at, n: blob[at : at + n], 0, index.raw_bytes)
    except SparseImageError:
        pass


def test_big_index_reads_only_headers(tmp_path: Path) -> None:
    """A 1 GiB raw image of which 64 MiB is data: the index is built from headers alone."""
    path = tmp_path / "big.simg"
    chunk = os.urandom(1 << 20)
    chunks = [(sparse.RAW, 256, chunk), (sparse.DONT_CARE, 3840 * 16 // 16, b"")] * 16
    path.write_bytes(encode(chunks))
    reads: list[int] = []
    with path.open("rb") as f:

        def pread(at: int, n: int) -> bytes:
            reads.append(n)
            return os.pread(f.fileno(), n, at)

        index = sparse.build_index(pread, path.stat().st_size)
    assert index.raw_bytes == 16 * (256 + 3840) * BLOCK
    assert sum(reads) < 1024  # headers only, no RAW data
