"""The write-ahead journal and the backup area: what makes a flash write recoverable.

Why a local journal: a commit writes a chunk to a device that may be unplugged, rebooted or
killed half way, and a daemon that may be SIGKILLed. Before the device sees a byte, the journal
holds — durably, on the host — the chunk's old and new bytes. Whatever happens next, the user can
finish the write (``mtkfs journal replay``) or undo it (``mtkfs journal rollback``).

Layout under the journal root (``--journal-dir``; default ``$XDG_STATE_HOME/mtkfs/journal``,
``/var/lib/mtkfs/journal`` for root), one folder per device (see :func:`device_folder`)::

    <device>/device.json              the device id and description (for people)
    <device>/lock                     flock()ed by the one process using this journal
    <device>/txn/<seq>/entry-<n>.bin  one chunk: header, old bytes, new bytes, CRC-32
    <device>/txn/<seq>/entry-<n>.failed   the device did not verify this entry
    <device>/txn/<seq>/COMMITTED      the transaction is complete: its entries are live
    <device>/backup/<session>/        original chunks, saved before a mount's first write

A **transaction** is one commit (an fsync, a close, the timer, the unmount). Its entries are
written and fsynced first, then ``COMMITTED`` is created and the folder fsynced; only then does
the device see a write. So a crash before the marker leaves the device untouched (the folder is
discarded at the next open: that commit never reported success), and a crash after it leaves
every chunk of the transaction recoverable to its old or new bytes. An entry is *retired*
(deleted) once its chunk verified on the device; a transaction with no entries left is removed.

Entry file (all integers little-endian)::

    b"MTKFSJ01"  u32 header_length  header (UTF-8 JSON)  old bytes  new bytes  u32 crc32(all before)

The header holds ``region``, ``offset_bytes``, ``size_bytes``, ``old_crc32``, ``new_crc32``,
``device_id``, ``created_s``, the ``partitions`` the chunk belongs to and the backup ``session``
of the mount that wrote it (so that a replay records the chunk in that session, as the mount
would have).

The **backup area** keeps, per mount session, each chunk's content from before that session's
first write to it, so a partition can be rolled back even after its commit succeeded. A session
is ``session.json`` plus per region a sparse ``<region>.data`` (chunks at their own offsets) and
an append-only ``<region>.chunks`` index of ``index size crc32`` lines, each appended (and
fsynced) only after its data was fsynced, and ``<region>.after`` lines ``index crc32`` of what
the session wrote and verified (rollback checks nothing else changed the chunk since).

Everything here is blocking file I/O: the commit pipeline calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtkfs.errors import BusyError, JournalCorruptError, UsageError

MAGIC = b"MTKFSJ01"
_COMMITTED = "COMMITTED"
_ENTRY = re.compile(r"^entry-(\d{6})\.bin$")
_TXN = re.compile(r"^\d{8}$")
_SESSION = re.compile(r"^\d{8}T\d{6}-\d+(?:-\d+)?$")
_AFTER_LINE = re.compile(r"^(\d+) ([0-9a-f]{8})$")
_CHUNK_LINE = re.compile(r"^(\d+) (\d+) ([0-9a-f]{8})$")


def default_journal_root() -> Path:
    """``$XDG_STATE_HOME/mtkfs/journal``; for root without XDG, ``/var/lib/mtkfs/journal``."""
    state = os.environ.get("XDG_STATE_HOME")
    if state:
        return Path(state) / "mtkfs" / "journal"
    if os.getuid() == 0:
        return Path("/var/lib/mtkfs/journal")
    return Path.home() / ".local" / "state" / "mtkfs" / "journal"


def device_folder(device_id: str) -> str:
    """A folder name for a device: readable prefix plus a hash (ids hold ``/`` and ``:``)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", device_id.rsplit("/", 1)[-1])[:40]
    readable = readable.lstrip("-._") or "device"  # never a name a shell takes for an option
    # surrogatepass: ids built from file names may hold undecodable bytes (surrogate escapes).
    digest = hashlib.sha256(device_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class Entry:
    """One journalled chunk (the header; :meth:`Journal.load` fetches the bytes).

    Attributes:
        txn: transaction number (commits are numbered in order).
        index: position in the transaction.
        region: region written.
        offset_bytes: where in the region.
        size_bytes: chunk length.
        old_crc32: CRC-32 of the bytes before the write.
        new_crc32: CRC-32 of the bytes written.
        partitions: partition names the chunk overlaps (for people).
        created_s: when it was journalled.
        failed: the device did not verify it.
        path: the entry file.
        session: the backup session of the mount that wrote it (None for recovery writes).
    """

    txn: int
    index: int
    region: str
    offset_bytes: int
    size_bytes: int
    old_crc32: int
    new_crc32: int
    partitions: tuple[str, ...]
    created_s: float
    failed: bool
    path: Path
    session: str | None = None

    def describe(self) -> str:
        """``boot: user+0x1d00000 (1 MiB)``."""
        names = ",".join(self.partitions) or "-"
        return f"{names}: {self.region}+{self.offset_bytes:#x} ({self.size_bytes} bytes)"


@dataclass(frozen=True)
class ChunkWrite:
    """One chunk to journal: where, the bytes before, the bytes after."""

    region: str
    offset_bytes: int
    old: bytes
    new: bytes
    partitions: tuple[str, ...] = ()
    session: str | None = None


def encode_entry(device_id: str, write: ChunkWrite, created_s: float) -> bytes:
    """The bytes of an entry file (see the module docstring)."""
    if len(write.old) != len(write.new):
        raise ValueError("old and new bytes of a chunk must have the same length")
    header = json.dumps(
        {
            "device_id": device_id,
            "region": write.region,
            "offset_bytes": write.offset_bytes,
            "size_bytes": len(write.new),
            "old_crc32": zlib.crc32(write.old),
            "new_crc32": zlib.crc32(write.new),
            "partitions": list(write.partitions),
            "session": write.session,
            "created_s": created_s,
        },
        sort_keys=True,
    ).encode()
    body = MAGIC + struct.pack("<I", len(header)) + header + write.old + write.new
    return body + struct.pack("<I", zlib.crc32(body))


def decode_header(blob: bytes, path: Path) -> dict[str, Any]:
    """The JSON header of an entry file's first bytes; JournalCorruptError if it is not one."""
    if blob[:8] != MAGIC or len(blob) < 12:
        raise JournalCorruptError(f"{path} is not an mtkfs journal entry")
    (length,) = struct.unpack_from("<I", blob, 8)
    try:
        header = json.loads(blob[12 : 12 + length])
        missing = {"region", "offset_bytes", "size_bytes", "old_crc32", "new_crc32"} - set(header)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except (ValueError, KeyError, TypeError) as exc:
        raise JournalCorruptError(f"{path}: unreadable header ({exc})") from exc
    header["_data_offset"] = 12 + length
    return dict(header)


def decode_entry(blob: bytes, path: Path) -> tuple[dict[str, Any], bytes, bytes]:
    """Header, old bytes and new bytes of a whole entry file, CRC-checked."""
    header = decode_header(blob, path)
    start = header["_data_offset"]
    size = int(header["size_bytes"])
    if len(blob) != start + 2 * size + 4:
        raise JournalCorruptError(f"{path}: truncated ({len(blob)} bytes)")
    (crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != crc:
        raise JournalCorruptError(f"{path}: checksum mismatch")
    old = blob[start : start + size]
    new = blob[start + size : start + 2 * size]
    if zlib.crc32(old) != header["old_crc32"] or zlib.crc32(new) != header["new_crc32"]:
        raise JournalCorruptError(f"{path}: chunk checksums do not match its header")
    return header, old, new


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, data: bytes, offset_bytes: int) -> None:
    """os.pwrite until all of ``data`` is written at ``offset_bytes``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset_bytes)
        view, offset_bytes = view[written:], offset_bytes + written


def _append_durably(path: Path, payload: bytes) -> None:
    """Append ``payload`` to ``path`` (created if need be) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, payload: bytes) -> None:
    """Create ``path`` with ``payload`` via a temporary file, fsynced, renamed, folder fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Journal:
    """The journal of one device. Open it with :meth:`open`; one process at a time."""

    def __init__(self, folder: Path, device_id: str, lock_fd: int | None) -> None:
        self.folder = folder
        self.device_id = device_id
        self._lock_fd = lock_fd
        self._next_txn = 1 + max((t for t in self._txn_numbers()), default=0)

    @classmethod
    def open(cls, root: Path, device_id: str, description: str, *, lock: bool = True) -> Journal:
        """The journal of ``device_id`` under ``root`` (created if need be).

        With ``lock`` (everything that may write), a second process using the same journal —
        a second rw mount, a ``journal replay`` while mounted — gets a BusyError.
        """
        folder = root / device_folder(device_id)
        try:
            (folder / "txn").mkdir(parents=True, exist_ok=True)
            (folder / "backup").mkdir(exist_ok=True)
            info = folder / "device.json"
            if not info.exists():
                _write_durably(
                    info,
                    json.dumps({"device_id": device_id, "description": description}).encode(),
                )
        except OSError as exc:
            raise UsageError(
                f"cannot use journal folder {folder}: {exc.strerror}; pass --journal-dir DIR "
                "on a writable local disk"
            ) from exc
        lock_fd = None
        if lock:
            lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                holder = os.pread(lock_fd, 64, 0).decode(errors="replace").strip()
                os.close(lock_fd)
                raise BusyError(
                    f"the journal of {description} is in use by another mtkfs (pid {holder or '?'}"
                    "): a read-write mount or a journal command; unmount or wait for it first"
                ) from exc
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
        journal = cls(folder, device_id, lock_fd)
        if lock:
            journal.discard_incomplete()
        return journal

    @classmethod
    def peek(cls, root: Path, device_id: str) -> list[Entry]:
        """Unfinished entries of a device's journal without creating or locking anything."""
        folder = root / device_folder(device_id)
        if not (folder / "txn").is_dir():
            return []
        return cls(folder, device_id, None).unfinished()

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- transactions ----------------------------------------------------------------------------

    def _txn_numbers(self) -> Iterator[int]:
        txn_dir = self.folder / "txn"
        if txn_dir.is_dir():
            for child in txn_dir.iterdir():
                if _TXN.match(child.name):
                    yield int(child.name)

    def discard_incomplete(self) -> int:
        """Remove transactions that never got their COMMITTED marker (the device was never
        written for them). Returns how many were removed."""
        removed = 0
        for number in list(self._txn_numbers()):
            folder = self.folder / "txn" / f"{number:08d}"
            if not (folder / _COMMITTED).exists():
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        for tmp in (self.folder / "txn").glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        return removed

    def begin(self, writes: list[ChunkWrite]) -> list[Entry]:
        """Journal ``writes`` as one transaction, durably; the device may be written after."""
        number = self._next_txn
        self._next_txn += 1
        folder = self.folder / "txn" / f"{number:08d}"
        folder.mkdir()
        now = time.time()
        entries = []
        fds = []
        try:
            # Write every entry first and fsync them after: the kernel starts writing the early
            # ones back while later ones are copied in (2-3x faster than write+fsync each).
            for index, write in enumerate(writes):
                path = folder / f"entry-{index:06d}.bin"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                fds.append(fd)
                _write_all(fd, encode_entry(self.device_id, write, now))
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        for index, write in enumerate(writes):
            path = folder / f"entry-{index:06d}.bin"
            entries.append(
                Entry(
                    number,
                    index,
                    write.region,
                    write.offset_bytes,
                    len(write.new),
                    zlib.crc32(write.old),
                    zlib.crc32(write.new),
                    write.partitions,
                    now,
                    False,
                    path,
                    write.session,
                )
            )
        _fsync_dir(folder)
        _write_durably(folder / _COMMITTED, b"")
        return entries

    def retire(self, entry: Entry) -> None:
        """The entry's chunk verified on the device: forget it (and its transaction when empty).

        No fsync: an entry that reappears after a crash is written again by replay or undone
        by rollback, both of which leave the chunk wholly new or wholly old.
        """
        self.retire_many([entry])

    def retire_many(self, entries: list[Entry]) -> None:
        """:meth:`retire` each of ``entries``; each emptied transaction folder is removed."""
        folders = set()
        for entry in entries:
            entry.path.unlink(missing_ok=True)
            entry.path.with_suffix(".failed").unlink(missing_ok=True)
            folders.add(entry.path.parent)
        for folder in folders:
            if folder.is_dir() and not any(_ENTRY.match(p.name) for p in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)

    def mark_failed(self, entry: Entry, reason: str) -> None:
        """The device did not verify this entry; keep it, say why."""
        _write_durably(entry.path.with_suffix(".failed"), (reason + "\n").encode())

    def unfinished(self) -> list[Entry]:
        """Live entries of committed transactions, in the order they were written."""
        entries: list[Entry] = []
        for number in sorted(self._txn_numbers()):
            folder = self.folder / "txn" / f"{number:08d}"
            if not (folder / _COMMITTED).exists():
                continue
            # Without the lock (peek from a read-only mount) a committing rw mount may retire
            # entries, or the whole transaction, while we look: gone means finished.
            try:
                children = sorted(folder.iterdir())
            except FileNotFoundError:
                continue
            for path in children:
                match = _ENTRY.match(path.name)
                if not match:
                    continue
                try:
                    stream = open(path, "rb")  # noqa: SIM115 - closed by the with below
                except FileNotFoundError:
                    continue
                with stream:
                    head = stream.read(12)
                    length = struct.unpack_from("<I", head, 8)[0] if len(head) == 12 else 0
                    header = decode_header(head + stream.read(length), path)
                entries.append(
                    Entry(
                        number,
                        int(match.group(1)),
                        str(header["region"]),
                        int(header["offset_bytes"]),
                        int(header["size_bytes"]),
                        int(header["old_crc32"]),
                        int(header["new_crc32"]),
                        tuple(str(p) for p in header.get("partitions", [])),
                        float(header.get("created_s", 0.0)),
                        path.with_suffix(".failed").exists(),
                        path,
                        header.get("session"),
                    )
                )
        return entries

    def load(self, entry: Entry) -> tuple[bytes, bytes]:
        """Old and new bytes of ``entry``, CRC-checked."""
        header, old, new = decode_entry(entry.path.read_bytes(), entry.path)
        if header.get("device_id", self.device_id) != self.device_id:
            raise JournalCorruptError(f"{entry.path} belongs to device {header['device_id']}")
        return old, new

    def failure_reason(self, entry: Entry) -> str | None:
        """Why the device did not verify ``entry`` (None if it was not tried or it did)."""
        try:
            return entry.path.with_suffix(".failed").read_text().strip()
        except OSError:
            return None

    # -- backups ---------------------------------------------------------------------------------

    def new_session(
        self, chunk_bytes: int, partitions: Mapping[str, tuple[str, int, int]]
    ) -> BackupSession:
        """Start the backup session of a mount (``partitions``: name → region, offset, size)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        folder = self.folder / "backup" / f"{stamp}-{os.getpid()}"
        serial = 1
        while True:
            try:
                folder.mkdir()
                break
            except FileExistsError:  # a second session of this process within one second
                serial += 1
                folder = self.folder / "backup" / f"{stamp}-{os.getpid()}-{serial}"
        meta = {
            "device_id": self.device_id,
            "started_s": time.time(),
            "chunk_bytes": chunk_bytes,
            "state": "active",
            "partitions": {
                name: {"region": r, "offset_bytes": o, "size_bytes": s}
                for name, (r, o, s) in partitions.items()
            },
        }
        _write_durably(folder / "session.json", json.dumps(meta, indent=1).encode())
        return BackupSession(folder)

    def session(self, session_id: str) -> BackupSession | None:
        """The backup session called ``session_id``, if it still exists."""
        folder = self.folder / "backup" / session_id
        if _SESSION.match(session_id) and (folder / "session.json").exists():
            return BackupSession(folder)
        return None

    def sessions(self) -> list[BackupSession]:
        """Backup sessions, oldest first."""
        backup = self.folder / "backup"
        if not backup.is_dir():
            return []
        sessions = [
            BackupSession(p)
            for p in backup.iterdir()
            if _SESSION.match(p.name) and (p / "session.json").exists()
        ]
        # By start time: the names sort by second, then by pid as text (``-1000`` < ``-999``).
        return sorted(sessions, key=lambda s: (float(s.meta.get("started_s", 0.0)), s.id))


class BackupSession:
    """The original chunks one mount overwrote (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.id = folder.name
        try:
            self.meta: dict[str, Any] = json.loads((folder / "session.json").read_text())
            self.chunk_bytes = int(self.meta["chunk_bytes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JournalCorruptError(f"{folder}/session.json is unreadable ({exc})") from exc
        self._saved: dict[str, dict[int, tuple[int, int]]] = {}

    @property
    def state(self) -> str:
        """``active`` (may be rolled back) or ``rolled-back``."""
        return str(self.meta.get("state", "active"))

    @property
    def partitions(self) -> dict[str, tuple[str, int, int]]:
        """Partition name → (region, offset, size), as mapped when the session started."""
        parts = self.meta.get("partitions", {})
        return {
            str(n): (str(p["region"]), int(p["offset_bytes"]), int(p["size_bytes"]))
            for n, p in parts.items()
        }

    def chunks(self, region: str) -> dict[int, tuple[int, int]]:
        """Saved chunks of ``region``: index → (size, crc32). A torn last line is ignored."""
        if region not in self._saved:
            saved: dict[int, tuple[int, int]] = {}
            with contextlib.suppress(FileNotFoundError):
                for line in (self.folder / f"{region}.chunks").read_text().splitlines():
                    match = _CHUNK_LINE.match(line)
                    if match:
                        index = int(match.group(1))
                        # The first copy wins: it is the content before the session's writes.
                        saved.setdefault(index, (int(match.group(2)), int(match.group(3), 16)))
            self._saved[region] = saved
        return self._saved[region]

    def regions(self) -> list[str]:
        """Regions with saved chunks."""
        return sorted(p.stem for p in self.folder.glob("*.chunks"))

    def size_bytes(self) -> int:
        """Bytes of original data held."""
        return sum(size for r in self.regions() for size, _ in self.chunks(r).values())

    @property
    def written(self) -> list[str]:
        """Partitions this session changed (as recorded at each commit)."""
        return [str(n) for n in self.meta.get("written", [])]

    def note_written(self, names: Iterator[str] | list[str] | tuple[str, ...]) -> None:
        """Record that the session changed ``names`` (rewrites session.json only if new)."""
        new = sorted(set(self.written) | set(names))
        if new != self.written:
            self.meta["written"] = new
            _write_durably(self.folder / "session.json", json.dumps(self.meta, indent=1).encode())

    def save(self, region: str, index: int, data: bytes) -> None:
        """Keep ``data`` as chunk ``index`` of ``region`` unless already kept; durable on return."""
        self.save_many([(region, index, data)])

    def save_many(self, chunks: list[tuple[str, int, bytes]]) -> None:
        """:meth:`save` several (region, index, data) at once: one fdatasync per region file
        and one fsync per index, instead of one pair per chunk."""
        by_region: dict[str, list[tuple[int, bytes]]] = {}
        for region, index, data in chunks:
            if index not in self.chunks(region):
                by_region.setdefault(region, []).append((index, data))
        for region, items in by_region.items():
            fd = os.open(
                self.folder / f"{region}.data", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                for index, data in items:
                    _pwrite_all(fd, data, index * self.chunk_bytes)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            # The index line only after its data is durable: a listed chunk is always whole.
            lines = "".join(f"{i} {len(d)} {zlib.crc32(d):08x}\n" for i, d in items).encode()
            _append_durably(self.folder / f"{region}.chunks", lines)
            saved = self.chunks(region)
            for index, data in items:
                saved.setdefault(index, (len(data), zlib.crc32(data)))

    def note_committed(self, chunks: list[tuple[str, int, int]]) -> None:
        """Record (region, index, crc32) of chunks this session wrote and verified, durably.

        Rollback compares the device with the last of these: a chunk that no longer holds what
        this session wrote was changed by something else since (a later mount, another tool, an
        image file replaced at the same path) and is not overwritten without ``--force``.
        """
        by_region: dict[str, list[str]] = {}
        for region, index, crc in chunks:
            by_region.setdefault(region, []).append(f"{index} {crc:08x}\n")
        for region, lines in by_region.items():
            _append_durably(self.folder / f"{region}.after", "".join(lines).encode())

    def committed_crc(self, region: str) -> dict[int, int]:
        """Chunk index → CRC-32 of what this session last wrote there (torn lines ignored)."""
        found: dict[int, int] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in (self.folder / f"{region}.after").read_text().splitlines():
                match = _AFTER_LINE.match(line)
                if match:
                    found[int(match.group(1))] = int(match.group(2), 16)
        return found

    def load(self, region: str, index: int) -> bytes:
        """Saved chunk ``index`` of ``region``, CRC-checked."""
        size, crc = self.chunks(region)[index]
        with open(self.folder / f"{region}.data", "rb") as stream:
            stream.seek(index * self.chunk_bytes)
            data = stream.read(size)
        if len(data) != size or zlib.crc32(data) != crc:
            raise JournalCorruptError(
                f"backup {self.id}: chunk {index} of {region} is damaged on disk"
            )
        return data

    def mark(self, state: str) -> None:
        """Record the session's state (``rolled-back`` after a full rollback)."""
        self.meta["state"] = state
        _write_durably(self.folder / "session.json", json.dumps(self.meta, indent=1).encode())

    def remove(self) -> None:
        """Delete the session (``mtkfs journal prune``)."""
        shutil.rmtree(self.folder)
