"""An output file of a dump: raw, gzip or zstd, hashed as it is written, resumable.

Why members: a compressed stream cannot be continued after a crash — the compressor's state is
gone. So the sink ends a gzip member (or a zstd frame) at every :meth:`Sink.checkpoint` and the
dump records ``(raw bytes, file bytes)`` there. A resumed dump truncates the file to the last
checkpoint and appends new members: concatenated gzip members and zstd frames are one valid
stream to ``gunzip``/``zstd -d`` and to every library (RFC 1952 §2.2; zstd format §3).

The sha256 of the raw data is what the manifest promises; on resume it is rebuilt by reading the
kept prefix back (locally, by decompressing), which also proves that prefix is intact.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from mtkfs.errors import BackupError

COMPRESSIONS = {"none": "", "gzip": ".gz", "zstd": ".zst"}
_READ_STEP_BYTES = 4 << 20


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _compressor(kind: str) -> _Compressor:
    if kind == "gzip":
        return zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3).compressobj()
    return _Identity()


class Reader(Protocol):
    """What :func:`open_decompressed` returns: a readable, closable byte stream."""

    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


def open_decompressed(path: Path, kind: str) -> Reader:
    """``path`` as a stream of the raw bytes it holds (all members/frames)."""
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "zstd":
        raw = path.open("rb")
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=True
        )
    return path.open("rb")


class Sink:
    """Writes the raw bytes of one item to ``path`` (compressed per ``kind``).

    Attributes:
        raw_bytes: raw bytes accepted so far (including a resumed prefix).
        file_bytes: bytes in the file at the last checkpoint or close.
    """

    def __init__(self, path: Path, kind: str, *, resume_raw: int = 0, resume_file: int = 0):
        if kind not in COMPRESSIONS:
            raise ValueError(f"compression {kind!r}")
        self.path = path
        self.kind = kind
        self.raw_hash = hashlib.sha256()
        self.file_hash = hashlib.sha256()
        self.raw_bytes = 0
        self.file_bytes = 0
        exists = path.exists()
        if resume_raw and exists and path.stat().st_size >= resume_file:
            with path.open("r+b") as f:
                f.truncate(resume_file)
            self._rehash(resume_raw, resume_file)
        else:
            path.write_bytes(b"")
        self._file: BinaryIO = path.open("r+b")
        self._file.seek(self.file_bytes)
        self._compressor = _compressor(kind)

    def _rehash(self, raw_bytes: int, file_bytes: int) -> None:
        """Rebuild both hashes from the kept prefix; BackupError if it does not add up."""
        with self.path.open("rb") as f:
            while block := f.read(_READ_STEP_BYTES):
                self.file_hash.update(block)
        try:
            with contextlib.closing(open_decompressed(self.path, self.kind)) as stream:
                while block := stream.read(_READ_STEP_BYTES):
                    self.raw_hash.update(block)
                    self.raw_bytes += len(block)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise BackupError(
                f"{self.path}: the part kept from the interrupted run is damaged ({exc}); "
                "delete it and run the dump again"
            ) from exc
        if self.raw_bytes != raw_bytes:
            raise BackupError(
                f"{self.path}: the kept part holds {self.raw_bytes} bytes, the manifest says "
                f"{raw_bytes}; delete it and run the dump again"
            )
        self.file_bytes = file_bytes

    def write(self, data: bytes) -> None:
        """Hash, compress and write ``data`` (runs in a worker thread: all of it is C code).

        Uncompressed, a run of zeros is skipped with a seek, so the file is sparse: an empty
        2 GiB system partition costs no disk space (the size is set at the checkpoint).
        """
        self.raw_hash.update(data)
        self.raw_bytes += len(data)
        if self.kind == "none" and data == bytes(len(data)):
            self.file_hash.update(data)
            self._file.seek(len(data), os.SEEK_CUR)
            return
        self._put(self._compressor.compress(data))

    def checkpoint(self) -> tuple[int, int]:
        """End the member, make the file durable; ``(raw_bytes, file_bytes)`` to record."""
        self._put(self._compressor.flush())
        self._compressor = _compressor(self.kind)
        self._file.truncate(self._file.tell())  # a trailing hole needs the size set
        self._file.flush()
        os.fsync(self._file.fileno())
        self.file_bytes = self._file.tell()
        return self.raw_bytes, self.file_bytes

    def close(self) -> tuple[int, int]:
        """Final checkpoint and close."""
        try:
            return self.checkpoint()
        finally:
            self._file.close()

    def abandon(self) -> None:
        """Close without a checkpoint (what was not checkpointed is dropped at the next run)."""
        self._file.close()

    def _put(self, out: bytes) -> None:
        if out:
            self._file.write(out)
            self.file_hash.update(out)
