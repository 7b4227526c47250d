"""Android sparse images (``img2simg``, fastboot, SP Flash Tool's EXT4_IMG) read as the raw
image they stand for, lazily: an index of chunks, then any range on demand.

Why an index and not an expansion: a 3 GiB system image expands to 3 GiB; the index is one
entry per chunk and is built by reading only the chunk headers (RAW data is skipped with a
seek). Reads then go through RAW chunks to the file, tile FILL chunks' 4-byte pattern, and
give zeros for DONT_CARE. CRC32 chunks carry no data and are skipped.

Layout (AOSP libsparse ``sparse_format.h``, ../shared/reference/formats.md): a 28-byte file
header (magic 0xED26FF3A, version 1.0, header sizes, block size, total blocks, total chunks),
then chunks of a 12-byte header (type, reserved, blocks, total bytes incl. header) + data.
Everything is checked; a lie is a :class:`~mtkfs.errors.SparseImageError` naming the chunk.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from dataclasses import dataclass

from mtkfs.errors import SparseImageError

MAGIC = 0xED26FF3A
FILE_HEADER = struct.Struct("<IHHHHIIII")
CHUNK_HEADER = struct.Struct("<HHII")
RAW, FILL, DONT_CARE, CRC32 = 0xCAC1, 0xCAC2, 0xCAC3, 0xCAC4

#: ``pread(offset, size) -> bytes`` of the sparse file itself.
Pread = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Chunk:
    """Output bytes [start, start + size) come from ``kind``: the file at ``file_offset``
    (RAW), the 4-byte ``fill`` (FILL), or zeros (DONT_CARE)."""

    start: int
    size: int
    kind: int
    file_offset: int = 0
    fill: bytes = b""


@dataclass(frozen=True)
class SparseIndex:
    """The raw image's size and where each part of it comes from."""

    block_bytes: int
    raw_bytes: int
    chunks: tuple[Chunk, ...]

    def read(self, pread: Pread, offset: int, size: int) -> bytes:
        """Raw bytes [offset, offset + size), short at the end."""
        size = max(0, min(size, self.raw_bytes - offset))
        out = bytearray()
        starts = [c.start for c in self.chunks]
        position = offset
        index = max(0, bisect.bisect_right(starts, position) - 1)
        while len(out) < size and index < len(self.chunks):
            chunk = self.chunks[index]
            inside = position - chunk.start
            take = min(chunk.size - inside, size - len(out))
            if take <= 0:
                index += 1
                continue
            if chunk.kind == RAW:
                got = pread(chunk.file_offset + inside, take)
                if len(got) != take:
                    raise SparseImageError(
                        f"RAW chunk at raw offset {chunk.start:#x}: the file ends early"
                    )
                out += got
            elif chunk.kind == FILL:
                skew = inside % 4
                out += (chunk.fill * ((take + skew) // 4 + 2))[skew : skew + take]
            else:
                out += bytes(take)
            position += take
            index += 1
        return bytes(out)


def is_sparse(head: bytes) -> bool:
    return len(head) >= 4 and struct.unpack_from("<I", head)[0] == MAGIC


def build_index(pread: Pread, file_bytes: int) -> SparseIndex:
    """Read the file header and every chunk header (never the data) into an index."""
    head = pread(0, FILE_HEADER.size)
    if len(head) < FILE_HEADER.size or not is_sparse(head):
        raise SparseImageError("not an Android sparse image (no 3a ff 26 ed magic)")
    (_magic, major, _minor, file_hdr, chunk_hdr, block, total_blocks, total_chunks,
     _checksum) = FILE_HEADER.unpack(head)  # fmt: skip
    if major != 1:
        raise SparseImageError(f"sparse format version {major} (only 1.x exists)")
    if file_hdr < FILE_HEADER.size or chunk_hdr < CHUNK_HEADER.size:
        raise SparseImageError(f"header sizes {file_hdr}/{chunk_hdr} are too small")
    if block == 0 or block % 4:
        raise SparseImageError(f"block size {block} is not a positive multiple of 4")
    chunks: list[Chunk] = []
    offset = file_hdr
    blocks = 0
    for number in range(total_chunks):
        raw = pread(offset, CHUNK_HEADER.size)
        if len(raw) < CHUNK_HEADER.size:
            raise SparseImageError(
                f"the file ends in chunk {number} of {total_chunks} (at {offset:#x}): truncated"
            )
        kind, _reserved, count, total = CHUNK_HEADER.unpack(raw)
        data_at, data_bytes = offset + chunk_hdr, total - chunk_hdr
        where = f"chunk {number} at {offset:#x}"
        if total < chunk_hdr or data_at + data_bytes > file_bytes:
            raise SparseImageError(f"{where}: {total} bytes do not fit in the file")
        start = blocks * block
        if kind == RAW:
            if data_bytes != count * block:
                raise SparseImageError(f"{where}: RAW holds {data_bytes} bytes for {count} blocks")
            chunks.append(Chunk(start, count * block, RAW, file_offset=data_at))
        elif kind == FILL:
            if data_bytes != 4:
                raise SparseImageError(f"{where}: FILL holds {data_bytes} bytes, not 4")
            chunks.append(Chunk(start, count * block, FILL, fill=pread(data_at, 4)))
        elif kind == DONT_CARE:
            if data_bytes:
                raise SparseImageError(f"{where}: DONT_CARE holds {data_bytes} bytes of data")
            chunks.append(Chunk(start, count * block, DONT_CARE))
        elif kind == CRC32:
            if count:
                raise SparseImageError(f"{where}: a CRC32 chunk covers {count} blocks")
        else:
            raise SparseImageError(f"{where}: unknown chunk type {kind:#06x}")
        blocks += count if kind != CRC32 else 0
        offset = data_at + data_bytes
    if blocks != total_blocks:
        raise SparseImageError(f"chunks cover {blocks} blocks, the header says {total_blocks}")
    chunks = [c for c in chunks if c.size]
    return SparseIndex(block, total_blocks * block, tuple(chunks))
