"""What a restore reads: the items of a dump folder or of a scatter-based ROM folder.

Why one shape for both: the plan, the verification and the write loop do not care whether bytes
come from ``boot.img.zst`` of a dump or ``system.img`` (an Android sparse image) of a vendor ROM;
each :class:`Input` knows its file, how to expand it, and how to check it (sha256 from the
manifest, or the 16-bit sum from ``Checksum.ini``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mtkfs.backup import manifest as mf
from mtkfs.backup.sink import open_decompressed
from mtkfs.content import sparse
from mtkfs.errors import BackupError, MapError, SparseImageError
from mtkfs.maps.checksum import ByteSum16, parse_checksum_ini
from mtkfs.maps.model import Region
from mtkfs.maps.scatter import parse_scatter

STEP_BYTES = 1 << 20
#: SP Flash Tool's preloader file is the boot area without its 2 KiB EMMC_BOOT header.
EMMC_BOOT_HEADER_BYTES = 2048


@dataclass(frozen=True)
class Input:
    """One thing to write.

    Attributes:
        name: partition name (``user@0x0`` for a dump's table area).
        kind: ``partition``, ``gap`` or ``region`` (dumps), ``rom`` (a scatter row).
        region / offset / size: where it goes; None offset: the target's map decides.
        path: the file; ``encoding``: ``none``, ``gzip``, ``zstd`` or ``sparse``.
        length: raw bytes the file provides (a ROM image may be shorter than its partition).
        sha256 / sum16: what the bytes must hash to (manifest / Checksum.ini), if known.
    """

    name: str
    kind: str
    region: str
    offset: int | None
    size: int
    path: Path
    encoding: str
    length: int
    sha256: str | None = None
    sum16: int | None = None

    def pieces(self, step_bytes: int = STEP_BYTES) -> Iterator[tuple[int, bytes]]:
        """``(offset, bytes)`` to write, in order (blocking: run it in a worker thread).

        A sparse image's DONT_CARE chunks are skipped — the target keeps what it has there,
        as SP Flash Tool and fastboot do — so restoring a mostly empty ext4 writes only its
        used blocks.
        """
        if self.encoding != "sparse":
            at = 0
            for block in self.chunks(step_bytes):
                yield at, block
                at += len(block)
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:

            def pread(at: int, n: int) -> bytes:
                return os.pread(fd, n, at)

            index = sparse.build_index(pread, os.fstat(fd).st_size)
            for chunk in index.chunks:
                if chunk.kind == sparse.DONT_CARE:
                    continue
                end = chunk.start + chunk.size
                for at in range(chunk.start, end, step_bytes):
                    yield at, index.read(pread, at, min(step_bytes, end - at))
        finally:
            os.close(fd)

    def chunks(self, step_bytes: int = STEP_BYTES) -> Iterator[bytes]:
        """The raw bytes, in pieces (blocking: run it in a worker thread)."""
        if self.encoding == "sparse":
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                index = sparse.build_index(lambda at, n: os.pread(fd, n, at), os.fstat(fd).st_size)
                for at in range(0, index.raw_bytes, step_bytes):
                    yield index.read(lambda at, n: os.pread(fd, n, at), at, step_bytes)
            finally:
                os.close(fd)
            return
        with contextlib.closing(open_decompressed(self.path, self.encoding)) as stream:
            while block := stream.read(step_bytes):
                yield block


def verify(item: Input) -> None:
    """Read ``item`` whole and check length and hash; BackupError naming the file if not."""
    digest = hashlib.sha256()
    total = ByteSum16()
    length = 0
    try:
        if item.sum16 is not None:  # SP Flash Tool sums the file as stored (sparse or not)
            with item.path.open("rb") as f:
                while block := f.read(STEP_BYTES):
                    total.update(block)
        for block in item.chunks():
            digest.update(block)
            length += len(block)
    except (OSError, EOFError, SparseImageError, ValueError) as exc:
        raise BackupError(f"{item.path}: cannot be read ({exc}); nothing was written") from exc
    except Exception as exc:  # zlib.error, zstandard.ZstdError: damaged compressed data
        raise BackupError(f"{item.path}: damaged ({exc}); nothing was written") from exc
    if length != item.length:
        raise BackupError(
            f"{item.path}: holds {length} bytes, {item.length} expected; nothing was written"
        )
    if item.sha256 is not None and digest.hexdigest() != item.sha256:
        raise BackupError(
            f"{item.path}: sha256 {digest.hexdigest()[:16]}… differs from the manifest's "
            f"{item.sha256[:16]}…: the file is damaged; nothing was written"
        )
    if item.sum16 is not None and total.value != item.sum16:
        raise BackupError(
            f"{item.path}: byte sum 0x{total.value:04X} differs from Checksum.ini's "
            f"0x{item.sum16:04X}: the file is damaged; nothing was written"
        )


def from_dump(folder: Path, manifest: mf.Manifest) -> list[Input]:
    """The finished items of a dump folder."""
    found = []
    for item in manifest.items:
        if item.status != "done":
            continue
        found.append(
            Input(
                name=item.name,
                kind=item.kind,
                region=item.region,
                offset=item.offset,
                size=item.size,
                path=folder / item.file,
                encoding=manifest.compression,
                length=item.size,
                sha256=item.sha256,
            )
        )
    return found


def find_scatter(folder: Path) -> Path | None:
    """The scatter file of a ROM folder (``*scatter*.txt``, as SP Flash Tool looks for it)."""
    found = sorted(p for p in folder.glob("*.txt") if "scatter" in p.name.lower())
    return found[0] if found else None


def from_rom(folder: Path, scatter_path: Path, regions: Mapping[str, Region]) -> list[Input]:
    """The downloadable rows of a scatter file whose files exist, placed in ``regions``."""
    try:
        pmap = parse_scatter(scatter_path.read_text(errors="replace"), regions)
    except MapError as exc:
        raise BackupError(f"{scatter_path}: {exc}") from exc
    sums: dict[str, int] = {}
    checksum_ini = folder / "Checksum.ini"
    if checksum_ini.exists():
        try:
            sums = parse_checksum_ini(checksum_ini.read_text(errors="replace"))
        except MapError as exc:
            raise BackupError(f"{checksum_ini}: {exc}") from exc
    found = []
    for part in pmap.partitions:
        file_name = str(part.extra.get("file_name") or "")
        if not part.extra.get("is_download", True) or file_name in ("", "NONE"):
            continue
        if "/" in file_name or "\\" in file_name or file_name.startswith("."):
            raise BackupError(f"{scatter_path}: {part.name}: file name {file_name!r} is refused")
        path = folder / file_name
        if not path.is_file():
            continue
        encoding, length = _rom_encoding(path)
        offset: int | None = part.offset_bytes
        if part.name.lower() == "preloader" and part.region in ("boot1", "boot2"):
            offset = EMMC_BOOT_HEADER_BYTES  # written after the target's own EMMC_BOOT header
        found.append(
            Input(
                name=part.name,
                kind="rom",
                region=part.region,
                offset=offset,
                size=part.size_bytes,
                path=path,
                encoding=encoding,
                length=length,
                sum16=sums.get(part.name),
            )
        )
    return found


def _rom_encoding(path: Path) -> tuple[str, int]:
    """``("sparse", expanded size)`` for an Android sparse image, else ``("none", size)``."""
    with path.open("rb") as f:
        head = f.read(sparse.FILE_HEADER.size)
        if sparse.is_sparse(head):
            fd = f.fileno()
            try:
                index = sparse.build_index(lambda at, n: os.pread(fd, n, at), os.fstat(fd).st_size)
            except SparseImageError as exc:
                raise BackupError(f"{path}: {exc}; nothing was written") from exc
            return "sparse", index.raw_bytes
    return "none", path.stat().st_size
