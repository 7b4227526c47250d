"""Readback images as a transport: one file per region, read with ``pread`` on a shared fd.

What users hand us (DESIGN.md "Sources"):

* one file — a ``dd`` of ``mmcblk0``, an SP Flash Tool ``User`` readback, a NOR/NAND dump. Its
  region is named from the file name when it is a known readback name, otherwise ``user`` when it
  holds a partition table and ``flash`` when it does not (a raw NOR/NAND dump).
* a folder of readback files: SP Flash Tool ``Boot1``/``Boot2``/``RPMB``/``User`` (any case,
  optional ``.bin``/``.img``) or Linux-style ``mmcblk0.img``, ``mmcblk0boot0.img``,
  ``mmcblk0boot1.img``, ``mmcblk0rpmb.img``. Each recognised file becomes one region.
* a block device (a card reader with the phone's eMMC, ``/dev/sdX``) — treated like a file.

Why pread on one fd per file: it is stateless (no shared seek position between concurrent
readers), it never loads a whole multi-GB file, and the kernel page cache does the rest.
Reads run in worker threads so a slow disk never stalls the FUSE event loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import trio

from mtkfs.content import sparse
from mtkfs.errors import (
    DeviceGoneError,
    ReadOnlyError,
    SourceError,
    SparseImageError,
    TransportError,
    UsageError,
)
from mtkfs.maps.model import Region
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

#: SP Flash Tool readback names (any case, optional .bin/.img) → region; ``LU0``…``LU3`` are
#: a UFS phone's logical units (LU0/LU1 the boot LUs, LU2 the user LU with the GPT).
_SPFT_NAME = re.compile(r"^(boot1|boot2|rpmb|user|lu[0-3])(?:\.(?:bin|img))?$", re.IGNORECASE)
#: Linux block-device style names → region.
_LINUX_NAME = re.compile(r"^mmcblk(\d+)(boot0|boot1|rpmb)?(?:\.(?:bin|img))?$", re.IGNORECASE)
_LINUX_REGION = {None: "user", "boot0": "boot1", "boot1": "boot2", "rpmb": "rpmb"}

#: Bytes fetched per cache miss. Big enough that a sequential copy makes few calls, small
#: enough that a random 4 KiB read of a loop-mounted ext4 does not drag in much extra.
IMAGE_CHUNK_BYTES = 1 << 20
#: Concurrent preads per transport (a local disk likes a little parallelism, not a lot).
_MAX_THREADS = 4

_EXPECTED = (
    "SP Flash Tool readback files Boot1, Boot2, RPMB, User (optionally .bin/.img), UFS LU0, "
    "LU1, LU2, or Linux-style mmcblk0.img, mmcblk0boot0.img, mmcblk0boot1.img, mmcblk0rpmb.img"
)


def region_for_file_name(file_name: str) -> str | None:
    """The region a readback file's name stands for, or None if the name is not one we know."""
    match = _SPFT_NAME.match(file_name)
    if match:
        return match.group(1).lower()
    match = _LINUX_NAME.match(file_name)
    if match:
        part = match.group(2).lower() if match.group(2) else None
        return _LINUX_REGION[part]
    return None


def _file_size_bytes(path: Path, fd: int) -> int:
    """Size of a regular file or a block device (whose st_size is 0)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISBLK(mode):
        return os.lseek(fd, 0, os.SEEK_END)
    if not stat.S_ISREG(mode):
        raise SourceError(f"{path} is neither a regular file nor a block device")
    return os.fstat(fd).st_size


def _sparse_index(path: Path, fd: int) -> sparse.SparseIndex | None:
    """The chunk index when ``path`` is an Android sparse image (None for a raw one)."""
    if not sparse.is_sparse(os.pread(fd, 4, 0)):
        return None
    size = _file_size_bytes(path, fd)
    try:
        return sparse.build_index(lambda offset, n: os.pread(fd, n, offset), size)
    except SparseImageError as exc:
        raise SparseImageError(f"{path}: {exc}") from exc


def _looks_partitioned(fd: int, index: sparse.SparseIndex | None = None) -> bool:
    """True when the first sectors hold a GPT or MBR signature (cheap sniff, 8 KiB)."""
    if index is None:
        head = os.pread(fd, 8192, 0)
    else:
        head = index.read(lambda offset, n: os.pread(fd, n, offset), 0, 8192)
    if head[512:520] == b"EFI PART" or head[4096:4104] == b"EFI PART":
        return True
    return len(head) >= 512 and head[510:512] == b"\x55\xaa"


def _pwrite_sync(fd: int, data: bytes, offset_bytes: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset_bytes)
        view, offset_bytes = view[written:], offset_bytes + written
    os.fdatasync(fd)


#: O_DIRECT wants buffers, offsets and lengths aligned to the logical block size.
_DIRECT_ALIGN = 4096


def _read_direct(path: Path, offset_bytes: int, size_bytes: int) -> bytes:
    """``size_bytes`` at ``offset_bytes`` of ``path`` read past the page cache where possible."""
    start = offset_bytes - offset_bytes % _DIRECT_ALIGN
    end = -(-(offset_bytes + size_bytes) // _DIRECT_ALIGN) * _DIRECT_ALIGN
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECT", 0))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = -1
    if fd >= 0:
        try:
            buffer = mmap.mmap(-1, end - start)  # page-aligned, as O_DIRECT needs
            try:
                done = 0
                while done < end - start:
                    got = os.preadv(fd, [memoryview(buffer)[done:]], start + done)
                    if got == 0:
                        break
                    done += got
                head = offset_bytes - start
                return bytes(buffer[head : min(done, head + size_bytes)])
            finally:
                buffer.close()
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset_bytes, size_bytes, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, size_bytes, offset_bytes)
    finally:
        os.close(fd)


def _open(path: Path, writable: bool = False) -> int:
    """Open a readback file; read-write only when the user asked for writes."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except PermissionError as exc:
        what = "write" if writable else "read"
        raise SourceError(f"cannot {what} {path}: permission denied (try sudo)") from exc
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from exc


class ImageTransport(Transport):
    """Regions backed by image files. Build it with :meth:`open`."""

    def __init__(
        self, files: Mapping[str, Path], description: str, *, writable: bool = False
    ) -> None:
        self._fds: dict[str, int] = {}
        #: Regions whose file is an Android sparse image: read through its chunk index.
        self._sparse: dict[str, sparse.SparseIndex] = {}
        regions: dict[str, Region] = {}
        try:
            for region, path in files.items():
                fd = _open(path, writable)
                self._fds[region] = fd
                index = _sparse_index(path, fd)
                if index is not None:
                    if writable:
                        raise UsageError(
                            f"{path} is an Android sparse image, which mtkfs reads but does "
                            "not write; expand it first (simg2img IN OUT) to write the result"
                        )
                    self._sparse[region] = index
                size = _file_size_bytes(path, fd) if index is None else index.raw_bytes
                if size == 0:
                    raise SourceError(f"{path} is empty: the readback did not complete?")
                regions[region] = Region(region, size)
        except BaseException:
            self._close_fds()
            raise
        self.files = dict(files)
        self.regions = regions
        self.description = description
        self.device_id = "image:" + str(Path(os.path.commonpath(list(files.values()))).resolve())
        self.chunk_bytes = IMAGE_CHUNK_BYTES
        # A local file: big commands are cheap, and prefetching keeps a second core busy.
        self.max_request_bytes = 8 * IMAGE_CHUNK_BYTES
        self.readahead_max_bytes = 16 * IMAGE_CHUNK_BYTES
        self.kernel_readahead_bytes = IMAGE_CHUNK_BYTES
        self.mtime_s = max(os.fstat(fd).st_mtime for fd in self._fds.values())
        self._limiter = trio.CapacityLimiter(_MAX_THREADS)
        self.writable = writable
        # A file takes any aligned sector; chunks are whole multiples of it.
        self.write_unit_bytes = 512

    @classmethod
    def open(cls, source: Path, *, writable: bool = False) -> ImageTransport:
        """Recognise ``source`` (a file, block device or readback folder) and open it."""
        try:
            st = source.stat()
        except FileNotFoundError as exc:
            raise SourceError(f"{source}: no such file or folder") from exc
        except OSError as exc:
            raise SourceError(f"{source}: {exc.strerror}") from exc
        if stat.S_ISDIR(st.st_mode):
            return cls._open_folder(source, writable)
        region = region_for_file_name(source.name)
        kind = ""
        if region is None:
            fd = _open(source)
            try:
                index = _sparse_index(source, fd)
                region = "user" if _looks_partitioned(fd, index) else "flash"
                kind = "" if index is None else ", Android sparse"
            finally:
                os.close(fd)
        return cls({region: source}, f"image {source} ({region}{kind})", writable=writable)

    @classmethod
    def _open_folder(cls, folder: Path, writable: bool) -> ImageTransport:
        files: dict[str, Path] = {}
        others: list[str] = []
        for entry in sorted(folder.iterdir()):
            region = region_for_file_name(entry.name) if entry.is_file() else None
            if region is None:
                if not entry.name.startswith("."):
                    others.append(entry.name)
                continue
            if region in files:
                raise SourceError(
                    f"{folder} holds two readbacks of region {region}: {files[region].name} and "
                    f"{entry.name}; move one of them away"
                )
            files[region] = entry
        if not files:
            found = ", ".join(others[:8]) + (", …" if len(others) > 8 else "") or "nothing"
            raise SourceError(
                f"{folder} holds no readback files I recognise (found: {found}); expected "
                f"{_EXPECTED}"
            )
        names = ", ".join(f"{p.name}={r}" for r, p in files.items())
        return cls(files, f"readback folder {folder} ({names})", writable=writable)

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        fd = self._fds.get(region)
        if fd is None:
            raise DeviceGoneError(f"region {region} is not open (transport closed?)")
        index = self._sparse.get(region)
        try:
            if index is not None:
                return await trio.to_thread.run_sync(
                    index.read, lambda at, n: os.pread(fd, n, at), offset_bytes, size_bytes,
                    limiter=self._limiter,
                )  # fmt: skip
            return await trio.to_thread.run_sync(
                os.pread, fd, size_bytes, offset_bytes, limiter=self._limiter
            )
        except OSError as exc:
            raise DeviceGoneError(
                f"reading {self.files[region]} at {offset_bytes:#x}: {exc.strerror}"
            ) from exc

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """pwrite the whole buffer, then fdatasync: returning means the bytes reached the disk."""
        fd = self._fds.get(region)
        if fd is None:
            raise DeviceGoneError(f"region {region} is not open (transport closed?)")
        if not self.writable:
            raise ReadOnlyError(f"{self.files[region]} was opened read-only")
        try:
            await trio.to_thread.run_sync(
                _pwrite_sync, fd, data, offset_bytes, limiter=self._limiter
            )
        except OSError as exc:
            raise TransportError(
                f"writing {self.files[region]} at {offset_bytes:#x}: {exc.strerror}"
            ) from exc

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """Read through a fresh descriptor with O_DIRECT (from the disk, not the page cache).

        Where O_DIRECT is refused (tmpfs, some FUSE and network filesystems) the fresh
        descriptor reads through the page cache, which is what the file holds after fdatasync.
        """
        path = self.files.get(region)
        if path is None:
            raise DeviceGoneError(f"region {region} is not open (transport closed?)")
        if region in self._sparse:
            return await self.read(region, offset_bytes, size_bytes)  # never written
        try:
            return await trio.to_thread.run_sync(
                _read_direct, path, offset_bytes, size_bytes, limiter=self._limiter
            )
        except OSError as exc:
            raise DeviceGoneError(
                f"reading back {path} at {offset_bytes:#x}: {exc.strerror}"
            ) from exc

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    async def aclose(self) -> None:
        self._close_fds()
