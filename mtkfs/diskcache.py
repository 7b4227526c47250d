"""Persistent chunk store behind ``--cache-dir``: resume slow copies, never serve a torn chunk.

Why: over a U-Boot console (~2.8 KB/s) one 64 MiB partition takes hours, so an interrupted copy
must not start again from zero. Chunks the in-memory :class:`~mtkfs.cache.ChunkCache` fetched
are kept on disk, per device, and handed back on the next mount.

Layout of ``ROOT/<key>/`` (key: a sanitised prefix of the device id, ``-``, 16 hex digits of its
sha256; device ids hold ``/`` and ``:`` and never reach a path as they are):

* ``meta.json``: format, device id, chunk size, region sizes. If it disagrees with the live
  device or cannot be read, the folder is emptied: chunk numbers would name other bytes.
* ``<region>.data``: a sparse file, chunk *i* at byte ``i * chunk_bytes``.
* ``<region>.idx``: append-only :data:`RECORD` s (chunk index, length, CRC-32 of the data,
  CRC-32 of the record's first 16 bytes). Later records for a chunk win.
* ``lock``: ``flock``-ed while a mtkfs uses the folder; two writers would interleave appends.

Crash safety comes from the checksums, not from the order of writes or from fsync: a torn or
garbled record fails its own CRC and is ignored (the index is rewritten at the next open, so
appends stay aligned); a record whose data never reached the disk, or data overwritten but not
yet recorded, fails the data CRC in :meth:`DiskCache.load` and is fetched again. A crash can
lose chunks, never return wrong ones; hence fsync only in :meth:`DiskCache.flush`.

Concurrency: only trio tasks touch the in-memory index; worker threads do pread, pwrite and
fsync on the shared descriptors. Appends to an index are serialised by a per-region
``trio.Lock``. A chunk being stored leaves the index first, so a concurrent load never pairs its
new bytes with the old CRC and calls them corrupt. A failing cache disk (ENOSPC, EIO) never
fails a read: the error is logged once, counted in ``io_errors``, the chunks count as missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mtkfs.errors import BusyError, UsageError
from mtkfs.maps.model import Region

log = logging.getLogger(__name__)

FORMAT = 1
#: One index record: chunk index, length, CRC-32 of the chunk's data, CRC-32 of the first 16 bytes.
RECORD = struct.Struct("<QIII")
_HEAD = struct.Struct("<QII")
_REGION_NAME = re.compile(r"[a-z0-9_]{1,32}")
_PREFIX_CHARS = 32
_META_MAX_BYTES = 1 << 20
_BLOB_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\.bin")
_BLOB_MAX_BYTES = 16 << 20

Entry = tuple[int, int]  # (length, crc32) of a chunk on disk


def encode_record(index: int, length: int, crc: int) -> bytes:
    """The index record saying "chunk ``index`` is ``length`` bytes with this CRC-32"."""
    return RECORD.pack(index, length, crc, zlib.crc32(_HEAD.pack(index, length, crc)))


def folder_name(device_id: str) -> str:
    """The per-device folder's name: readable, yet unable to escape the root or collide."""
    digest = hashlib.sha256(device_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_id)[:_PREFIX_CHARS].strip("._-")
    return f"{prefix or 'device'}-{digest}"


@dataclass
class DiskCacheStats:
    """Counters for ``.mtkfs/status.json``.

    Attributes:
        chunks: chunks in the index now.
        bytes: their total size.
        loaded_chunks: chunks handed back by :meth:`DiskCache.load` (checksum verified).
        stored_chunks: chunks written by :meth:`DiskCache.store`.
        corrupt_chunks: chunks dropped because their data did not match their record.
        io_errors: reads, writes or fsyncs of the cache disk that failed.
        discarded: the folder's previous content was thrown away at open.
        discard_reason: why, in words (empty when not discarded).
    """

    chunks: int = 0
    bytes: int = 0
    loaded_chunks: int = 0
    stored_chunks: int = 0
    corrupt_chunks: int = 0
    io_errors: int = 0
    discarded: bool = False
    discard_reason: str = ""


@dataclass
class _Region:
    size_bytes: int
    data_fd: int
    idx_fd: int
    idx_end: int  # where the next record goes; always a whole number of records
    entries: dict[int, Entry]
    lock: trio.Lock = field(default_factory=trio.Lock)


class DiskCache:
    """Chunks of one device's regions on local disk. Build it with :meth:`open`.

    Attributes:
        directory: the per-device folder.
        chunk_bytes: the chunk size; the same as the in-memory cache's.
        stats: counters, see :class:`DiskCacheStats`.
    """

    directory: Path
    chunk_bytes: int
    stats: DiskCacheStats

    def __init__(
        self, directory: Path, lock_fd: int, chunk_bytes: int, regions: dict[str, _Region]
    ) -> None:
        self.directory = directory
        self.chunk_bytes = chunk_bytes
        self.stats = DiskCacheStats()
        self._lock_fd = lock_fd
        self._regions = regions
        self._closed = False
        self._dirty = False
        self._busy = 0
        self._idle = trio.Event()
        for state in regions.values():
            self.stats.chunks += len(state.entries)
            self.stats.bytes += sum(length for length, _ in state.entries.values())

    @classmethod
    async def open(
        cls, root: Path, *, device_id: str, chunk_bytes: int, regions: Mapping[str, Region]
    ) -> DiskCache:
        """Open (or create) the folder of ``device_id`` under ``root``.

        Raises:
            UsageError: ``root`` cannot be used (not a folder, not ours, no permission).
            BusyError: another mtkfs holds this device's folder.
        """
        if chunk_bytes <= 0:
            raise ValueError(f"chunk size must be positive, not {chunk_bytes}")
        sizes = {name: region.size_bytes for name, region in regions.items()}
        for name in sizes:
            if not _REGION_NAME.fullmatch(name):
                raise ValueError(f"region name {name!r} cannot become a file name")
        opened = await trio.to_thread.run_sync(_open_folder, root, device_id, chunk_bytes, sizes)
        directory, lock_fd, states, reason, corrupt = opened
        cache = cls(directory, lock_fd, chunk_bytes, states)
        cache.stats.discarded = bool(reason)
        cache.stats.discard_reason = reason
        cache.stats.corrupt_chunks = corrupt
        return cache

    def present(self, region: str, index: int) -> bool:
        """Whether chunk ``index`` is on disk as far as the index knows (no I/O, not verified)."""
        state = self._regions.get(region)
        return state is not None and index in state.entries

    async def load(self, region: str, first: int, last: int) -> dict[int, bytes]:
        """Chunks ``first..last`` (inclusive) that are on disk and match their recorded CRC.

        Missing chunks are absent from the answer; corrupt ones are dropped from the index,
        counted, logged and absent too: the caller fetches them again.
        """
        state = self._region(region)
        with self._in_use():
            last = min(last, (state.size_bytes - 1) // self.chunk_bytes)
            wanted = {i: e for i in range(max(first, 0), last + 1) if (e := state.entries.get(i))}
            if not wanted:
                return {}
            try:
                found = await trio.to_thread.run_sync(
                    _read_chunks, state.data_fd, self.chunk_bytes, wanted
                )
            except OSError as exc:
                self._io_error("read", region, exc)
                return {}
        out: dict[int, bytes] = {}
        corrupt: list[int] = []
        for index, data in found.items():
            if data is not None:
                out[index] = data
            elif state.entries.get(index) == wanted[index]:
                # Unchanged since we looked: the bytes on disk really are wrong. (A store running
                # meanwhile removes the entry first; its chunk is then just not ours to judge.)
                self._set(state, index, None)
                corrupt.append(index)
        if corrupt:
            self.stats.corrupt_chunks += len(corrupt)
            what = f"{len(corrupt)} chunk(s) of {region} from chunk {corrupt[0]}"
            log.warning("cache %s: %s fail their checksum; fetching again", self.directory, what)
        self.stats.loaded_chunks += len(out)
        return out

    async def store(self, region: str, first: int, data: bytes) -> None:
        """Keep ``data``: consecutive chunks from chunk ``first``; only a chunk ending at the
        region's end may be short. Disk failures are logged and swallowed (see module doc)."""
        state = self._region(region)
        offset = first * self.chunk_bytes
        end = offset + len(data)
        if first < 0 or not data or end > state.size_bytes:
            raise ValueError(f"{region}: {len(data)} bytes at chunk {first} leave the region")
        if len(data) % self.chunk_bytes and end != state.size_bytes:
            raise ValueError(f"{region}: a short chunk at {end - 1:#x} is not the region's last")
        with self._in_use():
            for index in range(first, (end - 1) // self.chunk_bytes + 1):
                self._set(state, index, None)  # out of sight while its bytes change
            self._dirty = True
            try:
                entries = await trio.to_thread.run_sync(
                    _write_run, state.data_fd, offset, data, self.chunk_bytes
                )
                records = b"".join(encode_record(first + k, *e) for k, e in enumerate(entries))
                async with state.lock:
                    state.idx_end = await trio.to_thread.run_sync(
                        _append, state.idx_fd, state.idx_end, records
                    )
                    for k, entry in enumerate(entries):
                        self._set(state, first + k, entry)
            except OSError as exc:
                self._io_error("write", region, exc)
                return
        self.stats.stored_chunks += len(entries)

    async def load_blob(self, name: str) -> bytes | None:
        """The side file ``name`` (e.g. detection samples), or None if absent or unreadable.

        Side files hold small things worth keeping between sessions that are not chunks; their
        own format carries checksums, and the caller revalidates them against the device.
        """
        if not _BLOB_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a side file name")
        with self._in_use():
            try:
                return await trio.to_thread.run_sync(_read_blob, self.directory, name)
            except FileNotFoundError:
                return None
            except OSError as exc:
                self._io_error("read", name, exc)
                return None

    async def store_blob(self, name: str, payload: bytes) -> None:
        """Replace the side file ``name`` atomically; disk failures are logged and swallowed."""
        if not _BLOB_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a side file name")
        if len(payload) > _BLOB_MAX_BYTES:
            raise ValueError(f"{name}: {len(payload)} bytes is too big for a side file")
        with self._in_use():
            try:
                await trio.to_thread.run_sync(_replace_blob, self.directory, name, payload)
            except OSError as exc:
                self._io_error("write", name, exc)

    async def flush(self) -> None:
        """Make everything stored so far durable: data files first, then index files."""
        if self._closed:
            return
        with self._in_use():
            await self._flush()

    async def aclose(self) -> None:
        """Wait for operations under way, flush, close the files and release the folder."""
        if self._closed:
            return
        self._closed = True
        # Closing a descriptor a worker thread still writes to could let a new file reuse its
        # number and receive those bytes: wait, even when cancelled.
        with trio.CancelScope(shield=True):
            try:
                if self._busy:
                    await self._idle.wait()
                await self._flush()
            finally:
                for state in self._regions.values():
                    os.close(state.data_fd)
                    os.close(state.idx_fd)
                os.close(self._lock_fd)

    async def _flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False  # writes from now on need the next flush
        states = self._regions.values()
        fds = [s.data_fd for s in states] + [s.idx_fd for s in states]  # data before records
        try:
            await trio.to_thread.run_sync(_fsync_all, fds)
        except OSError as exc:
            self._dirty = True
            self._io_error("flush", "all regions", exc)

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        """Count an operation so that :meth:`aclose` can wait for it."""
        if self._closed:
            raise trio.ClosedResourceError("the disk cache is closed")
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if self._closed and not self._busy:
                self._idle.set()

    def _region(self, region: str) -> _Region:
        state = self._regions.get(region)
        if state is None:
            raise ValueError(f"{region!r} is not a region of this cache")
        return state

    def _set(self, state: _Region, index: int, entry: Entry | None) -> None:
        """Replace (or with None, remove) one index entry, keeping the counters right."""
        old = state.entries.pop(index, None)
        if old is not None:
            self.stats.chunks -= 1
            self.stats.bytes -= old[0]
        if entry is not None:
            state.entries[index] = entry
            self.stats.chunks += 1
            self.stats.bytes += entry[0]

    def _io_error(self, what: str, region: str, exc: OSError) -> None:
        self.stats.io_errors += 1
        level = logging.WARNING if self.stats.io_errors == 1 else logging.DEBUG
        log.log(
            level, "cache %s: cannot %s %s: %s; going on without", self.directory, what, region, exc
        )


# Everything below runs in worker threads: blocking I/O only, no shared state. Files of the
# folder are opened relative to its descriptor and never through symlinks.


def _open_folder(
    root: Path, device_id: str, chunk_bytes: int, sizes: dict[str, int]
) -> tuple[Path, int, dict[str, _Region], str, int]:
    """Lock, check and (re)build the device's folder; load every region's index."""
    directory = root / folder_name(device_id)
    with contextlib.ExitStack() as always, contextlib.ExitStack() as on_error:
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, 0o700)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            always.callback(os.close, dir_fd)
            if os.fstat(dir_fd).st_uid != os.geteuid():
                raise UsageError(f"--cache-dir: {directory} belongs to another user")
            os.fchmod(dir_fd, 0o700)  # it holds a copy of the phone's flash
            lock_fd = _open_file(dir_fd, "lock", on_error)
        except OSError as exc:
            raise UsageError(f"--cache-dir: cannot use {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"--cache-dir: another mtkfs is using {directory}") from None
        reason, known = _meta_problem(dir_fd, device_id, chunk_bytes, sizes)
        if reason:
            log.warning("cache %s: discarding its content: %s", directory, reason)
            _discard(dir_fd)
            known = {}
        if not known or known.keys() < {**known, **sizes}.keys():
            meta = {"format": FORMAT, "device_id": device_id, "chunk_bytes": chunk_bytes}
            payload = json.dumps({**meta, "regions": {**known, **sizes}}, indent=2).encode()
            _replace_file(dir_fd, "meta.json", payload)
        states: dict[str, _Region] = {}
        lost = 0
        for name, size in sizes.items():
            states[name], dropped = _open_region(dir_fd, name, size, chunk_bytes, on_error)
            lost += dropped
            if dropped:
                what = f"{dropped} chunk(s) of {name} are missing from {name}.data"
                log.warning("cache %s: %s; they will be fetched again", directory, what)
        os.fsync(dir_fd)  # new files exist after a crash too
        on_error.pop_all()
        return directory, lock_fd, states, reason, lost


def _meta_problem(
    dir_fd: int, device_id: str, chunk_bytes: int, sizes: dict[str, int]
) -> tuple[str, dict[str, int]]:
    """Why the folder's content cannot be reused ("" if it can), and the regions it knows."""
    try:
        raw = _read_file(dir_fd, "meta.json", _META_MAX_BYTES + 1)
    except FileNotFoundError:
        ours = [n for n in os.listdir(dir_fd) if n != "lock" and not n.endswith(".tmp")]
        return ("meta.json is missing" if ours else ""), {}
    except OSError as exc:
        return f"meta.json is unreadable ({exc.strerror})", {}
    try:
        if len(raw) > _META_MAX_BYTES:
            raise ValueError("too big")
        meta = json.loads(raw)
    except ValueError:
        return "meta.json is not valid JSON", {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return "meta.json has an unknown format", {}
    regions = meta.get("regions")
    if not isinstance(regions, dict) or not all(
        isinstance(k, str) and _REGION_NAME.fullmatch(k) and type(v) is int and v > 0
        for k, v in regions.items()
    ):
        return "meta.json lists unusable regions", {}
    if meta.get("device_id") != device_id:
        return "meta.json names another device", {}
    if type(meta.get("chunk_bytes")) is not int or meta["chunk_bytes"] != chunk_bytes:
        return f"chunk size changed from {meta.get('chunk_bytes')!r} to {chunk_bytes}", {}
    for name in sorted(regions.keys() & sizes.keys()):
        if regions[name] != sizes[name]:
            return f"region {name} changed size from {regions[name]} to {sizes[name]}", {}
    return "", regions


def _discard(dir_fd: int) -> None:
    """Empty the folder, but keep the lock file we hold: another mtkfs could otherwise lock a
    new one while we still work in here."""
    for entry in os.scandir(dir_fd):
        if entry.name == "lock":
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.name, dir_fd=dir_fd)
        else:
            os.unlink(entry.name, dir_fd=dir_fd)


def _open_region(
    dir_fd: int, name: str, size: int, chunk_bytes: int, on_error: contextlib.ExitStack
) -> tuple[_Region, int]:
    """Open a region's files and rebuild its index; also say how many chunks were lost."""
    try:
        raw = _read_file(dir_fd, f"{name}.idx", None)
    except FileNotFoundError:
        raw = b""
    view = memoryview(raw)
    entries: dict[int, Entry] = {}
    records = 0
    whole = len(raw) - len(raw) % RECORD.size
    for pos in range(0, whole, RECORD.size):
        index, length, crc, check = RECORD.unpack_from(raw, pos)
        expected = min(chunk_bytes, size - index * chunk_bytes)
        if zlib.crc32(view[pos : pos + _HEAD.size]) == check and length == expected > 0:
            entries[index] = (length, crc)
            records += 1
    data_fd = _open_file(dir_fd, f"{name}.data", on_error)
    # A data file shorter than its records (lost, truncated) cannot hold those chunks.
    data_size = os.fstat(data_fd).st_size
    lost = [i for i, (length, _) in entries.items() if i * chunk_bytes + length > data_size]
    for index in lost:
        del entries[index]
    if len(raw) != records * RECORD.size or lost or records > 2 * len(entries) + 64:
        # Torn tail, garbage, lost or superseded records: rewrite the index, so that appends
        # start on a record boundary and the file does not grow without bound.
        payload = b"".join(encode_record(i, *entries[i]) for i in sorted(entries))
        _replace_file(dir_fd, f"{name}.idx", payload)
    idx_fd = _open_file(dir_fd, f"{name}.idx", on_error)
    return _Region(size, data_fd, idx_fd, os.fstat(idx_fd).st_size, entries), len(lost)


def _open_file(dir_fd: int, name: str, on_error: contextlib.ExitStack) -> int:
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    on_error.callback(os.close, fd)
    return fd


def _read_file(dir_fd: int, name: str, limit: int | None) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        size = os.fstat(fd).st_size
        return _pread_all(fd, size if limit is None else min(size, limit), 0)
    finally:
        os.close(fd)


def _replace_file(dir_fd: int, name: str, payload: bytes) -> None:
    """Write a file so that a crash leaves the old one or the new one, never a mix."""
    fd = os.open(
        f"{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
    )
    try:
        _pwrite_all(fd, payload, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(f"{name}.tmp", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def _read_blob(directory: Path, name: str) -> bytes:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _read_file(dir_fd, name, _BLOB_MAX_BYTES)
    finally:
        os.close(dir_fd)


def _replace_blob(directory: Path, name: str, payload: bytes) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _replace_file(dir_fd, name, payload)
    finally:
        os.close(dir_fd)


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset``; shorter only at the end of the file."""
    parts: list[bytes] = []
    while size > 0 and (part := os.pread(fd, size, offset)):
        parts.append(part)
        size -= len(part)
        offset += len(part)
    return b"".join(parts)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _read_chunks(fd: int, chunk_bytes: int, wanted: dict[int, Entry]) -> dict[int, bytes | None]:
    """The wanted chunks, one pread per run of neighbours; None for those that come back short
    or fail their CRC."""
    out: dict[int, bytes | None] = {}
    indices = sorted(wanted)
    while indices:
        run = 1
        while run < len(indices) and indices[run] == indices[0] + run:
            run += 1
        first = indices[0]
        size = (run - 1) * chunk_bytes + wanted[indices[run - 1]][0]
        raw = _pread_all(fd, size, first * chunk_bytes)
        for index in indices[:run]:
            length, crc = wanted[index]
            start = (index - first) * chunk_bytes
            chunk = raw[start : start + length]
            out[index] = chunk if len(chunk) == length and zlib.crc32(chunk) == crc else None
        del indices[:run]
    return out


def _write_run(fd: int, offset: int, data: bytes, chunk_bytes: int) -> list[Entry]:
    """Write a run of chunks; return their index entries."""
    _pwrite_all(fd, data, offset)
    chunks = [memoryview(data)[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    return [(len(chunk), zlib.crc32(chunk)) for chunk in chunks]


def _append(fd: int, end: int, records: bytes) -> int:
    """Write records at the index's end; return the new end. On failure cut the file back, so
    the next append starts on a record boundary again."""
    try:
        _pwrite_all(fd, records, end)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        raise
    return end + len(records)
