"""Write an Android sparse image (the EXT4_IMG files of an SP Flash Tool ROM, fastboot images).

Why our own writer: AOSP's libsparse is C with no maintained Python binding, and the format is
two small headers (:mod:`mtkfs.content.sparse` reads it and owns the constants). Blocks outside
``used`` become DONT_CARE (nothing stored; flashing leaves them alone), used blocks that repeat
one 4-byte value (zeros above all) become FILL, the rest RAW — what ``ext2simg`` makes of an
ext4's used blocks. Neighbouring blocks of one kind (and one fill value) share a chunk.

Streaming: the image is written as the partition is read, ``step_bytes`` at a time, and a RAW
chunk is closed once it holds ``step_bytes``, so at most about two steps are ever in memory.
The chunk count is known only at the end, so the file header is written last: ``out`` must be
seekable. Encoding and writing run in a worker thread, so the event loop (the transport, the
progress display) keeps going while a step is written.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import trio

from mtkfs.content.sparse import CHUNK_HEADER, DONT_CARE, FILE_HEADER, FILL, MAGIC, RAW
from mtkfs.errors import SourceError

#: ``read(offset_bytes, length_bytes)`` of the partition.
Read = Callable[[int, int], Awaitable[bytes]]

_MAJOR, _MINOR = 1, 0
#: chunk_sz, total_sz and total_blks are 32-bit fields.
_U32_MAX = 0xFFFFFFFF


@dataclass
class SparseStats:
    """What the image holds: blocks per chunk kind, the chunk count, the file's size."""

    raw_blocks: int = 0
    fill_blocks: int = 0
    dont_care_blocks: int = 0
    chunks: int = 0
    file_bytes: int = 0


class SparseEncoder:
    """Chunks written in order to a seekable file; the synchronous core of :func:`write_sparse`.

    Feed it the whole image front to back: :meth:`skip` for blocks not stored, :meth:`data` for
    stored ones (any number of whole blocks per call), then :meth:`finish`.
    """

    def __init__(
        self, out: BinaryIO, *, block_bytes: int, total_blocks: int, max_raw_bytes: int
    ) -> None:
        self.out = out
        self.block_bytes = block_bytes
        self.total_blocks = total_blocks
        limit = min(max_raw_bytes, _U32_MAX - CHUNK_HEADER.size)
        self.max_raw_blocks = max(1, limit // block_bytes)
        self.stats = SparseStats()
        self.start_at = out.tell()
        self.blocks_done = 0
        out.write(bytes(FILE_HEADER.size))  # the real header once the chunk count is known
        self._kind: int | None = None
        self._fill = b""
        self._blocks = 0
        #: The pending RAW chunk's data: (buffer, start, end) slices of the buffers fed.
        self._raw: list[tuple[memoryview, int, int]] = []

    def skip(self, count_blocks: int) -> None:
        """``count_blocks`` blocks that the image does not store (DONT_CARE)."""
        if count_blocks > 0:
            self._extend(DONT_CARE, b"", count_blocks)

    def data(self, data: bytes) -> None:
        """Stored blocks: FILL where a block is one 4-byte value repeated, RAW elsewhere."""
        bs = self.block_bytes
        if len(data) % bs:
            raise ValueError(f"{len(data)} bytes is not a whole number of {bs}-byte blocks")
        view = memoryview(data)
        repeats = bs // 4
        for at in range(0, len(data), bs):
            pattern = data[at : at + 4]
            if data[at : at + bs] == pattern * repeats:
                self._extend(FILL, pattern, 1)
            else:
                if self._kind == RAW and self._blocks >= self.max_raw_blocks:
                    self._emit()
                self._extend(RAW, b"", 1)
                if self._raw and self._raw[-1][0] is view and self._raw[-1][2] == at:
                    self._raw[-1] = (view, self._raw[-1][1], at + bs)  # the run goes on
                else:
                    self._raw.append((view, at, at + bs))

    def feed(self, skip_blocks: int, data: bytes) -> None:
        """:meth:`skip` then :meth:`data`, in one call (one trip to a worker thread)."""
        self.skip(skip_blocks)
        self.data(data)

    def finish(self) -> SparseStats:
        """Close the last chunk, write the file header; the stats, with the file's size.

        Blocks not fed yet at the end of the image are DONT_CARE.
        """
        self.skip(self.total_blocks - self.blocks_done)
        self._emit()
        if self.blocks_done != self.total_blocks:
            raise ValueError(f"{self.blocks_done} blocks fed to an image of {self.total_blocks}")
        end_at = self.out.tell()
        self.out.seek(self.start_at)
        self.out.write(
            FILE_HEADER.pack(
                MAGIC, _MAJOR, _MINOR, FILE_HEADER.size, CHUNK_HEADER.size, self.block_bytes,
                self.total_blocks, self.stats.chunks, 0,
            )
        )  # fmt: skip
        self.out.seek(end_at)
        self.stats.file_bytes = end_at - self.start_at
        return self.stats

    def _extend(self, kind: int, fill: bytes, count_blocks: int) -> None:
        if kind != self._kind or fill != self._fill:
            self._emit()
            self._kind, self._fill = kind, fill
        self._blocks += count_blocks
        self.blocks_done += count_blocks

    def _emit(self) -> None:
        kind, count, fill = self._kind, self._blocks, self._fill
        self._kind, self._blocks = None, 0
        if kind is None or count == 0:
            return
        if kind == RAW:
            payload_bytes = count * self.block_bytes
            self.out.write(CHUNK_HEADER.pack(RAW, 0, count, CHUNK_HEADER.size + payload_bytes))
            for buffer, start, end in self._raw:
                self.out.write(buffer[start:end])
            self._raw = []
            self.stats.raw_blocks += count
        elif kind == FILL:
            self.out.write(CHUNK_HEADER.pack(FILL, 0, count, CHUNK_HEADER.size + 4))
            self.out.write(fill)
            self.stats.fill_blocks += count
        else:
            self.out.write(CHUNK_HEADER.pack(DONT_CARE, 0, count, CHUNK_HEADER.size))
            self.stats.dont_care_blocks += count
        self.stats.chunks += 1


def _clip(used: Iterable[tuple[int, int]], total_blocks: int) -> list[tuple[int, int]]:
    """``(start_block, count_blocks)`` ranges as sorted, merged ``[start, end)`` ranges within
    ``[0, total_blocks)`` (empty and negative ranges dropped)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(s + c, total_blocks)) for s, c in used):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _check_sizes(size_bytes: int, block_bytes: int) -> int:
    """The image's block count, or ValueError for sizes the format cannot hold."""
    if block_bytes <= 0 or block_bytes % 4:
        raise ValueError(f"block size {block_bytes} is not a positive multiple of 4")
    if size_bytes < 0 or size_bytes % block_bytes:
        raise ValueError(f"{size_bytes} bytes is not a whole number of {block_bytes}-byte blocks")
    if size_bytes // block_bytes > _U32_MAX:
        raise ValueError(f"{size_bytes // block_bytes} blocks do not fit a sparse image's header")
    return size_bytes // block_bytes


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
    """Write, at ``out``'s position, the sparse image of the ``size_bytes`` that
    ``read(offset_bytes, length_bytes)`` returns, storing only the ``used``
    ``(start_block, count_blocks)`` ranges (clipped to the image; DONT_CARE elsewhere).

    ``on_progress(bytes_done)`` is told how far through ``size_bytes`` the image is, after each
    read and once at the end with ``size_bytes``.

    Raises:
        ValueError: ``size_bytes`` is not a whole number of blocks (the caller pads or cuts),
            or the block size is not a multiple of 4.
        SourceError: ``read`` returned fewer bytes than asked inside ``size_bytes``.
    """
    total_blocks = _check_sizes(size_bytes, block_bytes)
    step_blocks = max(1, step_bytes // block_bytes)
    encoder = SparseEncoder(
        out,
        block_bytes=block_bytes,
        total_blocks=total_blocks,
        max_raw_bytes=step_blocks * block_bytes,
    )
    position = 0
    for start, end in _clip(used, total_blocks):
        for at in range(start, end, step_blocks):
            count = min(step_blocks, end - at)
            data = await read(at * block_bytes, count * block_bytes)
            if len(data) < count * block_bytes:
                ends_at = at * block_bytes + len(data)
                raise SourceError(
                    f"the source ends at byte {ends_at}, inside block {ends_at // block_bytes}"
                    f" of {total_blocks} ({block_bytes}-byte blocks)"
                )
            if len(data) > count * block_bytes:
                raise ValueError(f"read returned {len(data)} bytes for {count * block_bytes}")
            await trio.to_thread.run_sync(encoder.feed, at - position, data)
            position = at + count
            if on_progress is not None:
                on_progress(position * block_bytes)
    stats = await trio.to_thread.run_sync(encoder.finish)
    if on_progress is not None:
        on_progress(size_bytes)
    return stats


def sparse_image(data: bytes, *, block_bytes: int, used: Iterable[tuple[int, int]]) -> bytes:
    """The sparse image of ``data`` in memory, as :func:`write_sparse` would write it (for tests
    and small images)."""
    total_blocks = _check_sizes(len(data), block_bytes)
    out = io.BytesIO()
    encoder = SparseEncoder(
        out, block_bytes=block_bytes, total_blocks=total_blocks, max_raw_bytes=4 << 20
    )
    position = 0
    for start, end in _clip(used, total_blocks):
        encoder.feed(start - position, data[start * block_bytes : end * block_bytes])
        position = end
    encoder.finish()
    return out.getvalue()
