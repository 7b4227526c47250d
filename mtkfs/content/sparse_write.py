"""Write an Android sparse image (the EXT4_IMG files of an SP Flash Tool ROM, fastboot images).

Why our own writer: AOSP's libsparse is C with no maintained Python binding, and the format is
two headers (:mod:`mtkfs.content.sparse` reads it). Blocks outside ``used`` become DONT_CARE
(nothing stored; flashing leaves them alone), used blocks that repeat one 4-byte value (zeros
above all) become FILL, the rest RAW — what ``ext2simg`` produces from an ext4's used blocks.

Streaming: the image is written as the partition is read, ``step_bytes`` at a time; a RAW
chunk is closed at ``step_bytes`` so nothing larger is ever held. The chunk count is only known
at the end, so the file header is written last (``out`` must be seekable).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from mtkfs.content.sparse import CHUNK_HEADER, DONT_CARE, FILE_HEADER, FILL, MAGIC, RAW
from mtkfs.errors import SourceError

Read = Callable[[int, int], Awaitable[bytes]]


@dataclass
class SparseStats:
    """What the image holds."""

    raw_blocks: int = 0
    fill_blocks: int = 0
    dont_care_blocks: int = 0
    chunks: int = 0
    file_bytes: int = 0


class _Writer:
    """Chunks in order, merging neighbours of the same kind (and fill value)."""

    def __init__(self, out: BinaryIO, block_bytes: int, max_raw_bytes: int) -> None:
        self.out = out
        self.block_bytes = block_bytes
        self.max_raw_bytes = max(block_bytes, max_raw_bytes - max_raw_bytes % block_bytes)
        self.stats = SparseStats()
        self._kind: int | None = None
        self._blocks = 0
        self._fill = b""
        self._raw = bytearray()

    def dont_care(self, blocks: int) -> None:
        if blocks:
            self._switch(DONT_CARE, b"")
            self._blocks += blocks

    def data(self, block: bytes) -> None:
        """One used block."""
        head = block[:4]
        if block == head * (len(block) // 4):
            self._switch(FILL, head)
            self._blocks += 1
            return
        self._switch(RAW, b"")
        self._raw += block
        self._blocks += 1
        if len(self._raw) >= self.max_raw_bytes:
            self._emit()

    def finish(self) -> SparseStats:
        self._emit()
        return self.stats

    def _switch(self, kind: int, fill: bytes) -> None:
        if self._kind != kind or self._fill != fill:
            self._emit()
            self._kind, self._fill = kind, fill

    def _emit(self) -> None:
        if self._kind is None or not self._blocks:
            self._kind, self._blocks = None, 0
            return
        payload = {RAW: bytes(self._raw), FILL: self._fill, DONT_CARE: b""}[self._kind]
        self.out.write(CHUNK_HEADER.pack(self._kind, 0, self._blocks,
                                         CHUNK_HEADER.size + len(payload)))  # fmt: skip
        self.out.write(payload)
        counters = {RAW: "raw_blocks", FILL: "fill_blocks", DONT_CARE: "dont_care_blocks"}
        name = counters[self._kind]
        setattr(self.stats, name, getattr(self.stats, name) + self._blocks)
        self.stats.chunks += 1
        self._kind, self._blocks, self._raw = None, 0, bytearray()


def _clip(used: Iterable[tuple[int, int]], total_blocks: int) -> list[tuple[int, int]]:
    """Sorted, merged, within ``[0, total_blocks)``."""
    merged: list[tuple[int, int]] = []
    for start, count in sorted((max(0, s), min(s + c, total_blocks)) for s, c in used):
        if count <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], count))
        else:
            merged.append((start, count))
    return merged


async def write_sparse(
    out: BinaryIO,
    read: Read,
    *,
    size_bytes: int,
    block_bytes: int,
    used: Iterable[tuple[int, int]],
    on_progress: Callable[[int], None] | None = None,
    step_bytes: int = 4 << 20,
) -> SparseStats:
    """Write the sparse image of ``size_bytes`` read through ``read(offset, size)``: blocks in
    ``used`` (``(first block, count)`` ranges) stored, the others DONT_CARE.

    ``on_progress(position)`` is told how far through the ``size_bytes`` it is.
    """
    if block_bytes <= 0 or block_bytes % 4 or size_bytes % block_bytes:
        raise ValueError(f"{size_bytes} bytes is not a whole number of {block_bytes}-byte blocks")
    total_blocks = size_bytes // block_bytes
    start_at = out.tell()
    out.write(bytes(FILE_HEADER.size))  # the real header once the chunk count is known
    writer = _Writer(out, block_bytes, step_bytes)
    step_blocks = max(1, step_bytes // block_bytes)
    position = 0
    for first, end in _clip(used, total_blocks):
        writer.dont_care(first - position)
        for at in range(first, end, step_blocks):
            count = min(step_blocks, end - at)
            data = await read(at * block_bytes, count * block_bytes)
            if len(data) != count * block_bytes:
                raise SourceError(f"the source ends inside block {at} ({len(data)} bytes read)")
            for k in range(count):
                writer.data(data[k * block_bytes : (k + 1) * block_bytes])
            if on_progress is not None:
                on_progress((at + count) * block_bytes)
        position = end
    writer.dont_care(total_blocks - position)
    stats = writer.finish()
    end_at = out.tell()
    out.seek(start_at)
    out.write(FILE_HEADER.pack(MAGIC, 1, 0, FILE_HEADER.size, CHUNK_HEADER.size, block_bytes,
                               total_blocks, stats.chunks, 0))  # fmt: skip
    out.seek(end_at)
    stats.file_bytes = end_at - start_at
    if on_progress is not None:
        on_progress(size_bytes)
    return stats
