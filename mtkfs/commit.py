"""Verified writes: dirty chunks in memory, committed through the journal, verified on the device.

Theory of operation (docs/writes.md is the user-facing version):

* ``write()`` never touches the device. It copies the bytes into the chunk's *dirty* copy — an
  overlay of the chunk cache (:attr:`ChunkCache.dirty`) that reads see and eviction never drops.
  The first write to a chunk reads the whole chunk first (read-modify-write): the device is
  written in whole, aligned chunks (multiples of the transport's erase/program unit), and the
  journal needs the old bytes anyway.
* Dirty memory is bounded (``--max-dirty``). A writer that needs a new dirty chunk when the
  bound is reached commits what is dirty first — writers wait, they never fail for lack of room.
* A **commit** (fsync, close, the timer, unmount) runs one at a time:

  1. chunks whose bytes did not change are simply clean again (no device write);
  2. the original of each chunk is saved in the mount's backup session (first write only);
  3. all chunks are journalled as one transaction and made durable (:mod:`mtkfs.journal`);
  4. per chunk: write to the transport, verify — the transport's checksum command where it has
     one, else a read-back that bypasses every cache — retire the journal entry, and only then
     is the chunk clean (the verified bytes become the cache's clean copy).

* A failed write or verify stops the commit. The failing chunk and the chunks not yet written
  stay in the journal (the user decides: ``mtkfs journal replay|rollback``), their in-memory
  copies are dropped so reads show what the device really holds, and the mount turns
  **failsafe**: further writes get EROFS, and every fsync/close of a file that overlaps an
  unverified chunk gets EIO. Nothing reports success for a write that was not verified.
* Commits are shielded from cancellation: once the journal says a transaction is live, the
  daemon finishes it (or fails it) before anything else happens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from mtkfs.cache import ChunkCache, ChunkKey
from mtkfs.errors import JournalError, MtkfsError, ReadOnlyError, VerifyError
from mtkfs.journal import BackupSession, ChunkWrite, Entry, Journal
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

#: Partition name → (region, offset_bytes, size_bytes).
PartitionRanges = Mapping[str, tuple[str, int, int]]


@dataclass
class _Dirty:
    """Bookkeeping of one dirty chunk (its bytes live in ``ChunkCache.dirty``)."""

    old: bytes
    since_s: float
    generation: int = 0


@dataclass(frozen=True)
class Failure:
    """A chunk whose new bytes are not (verified) on the device; they are in the journal."""

    region: str
    offset_bytes: int
    size_bytes: int
    partitions: tuple[str, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "offset": self.offset_bytes,
            "size": self.size_bytes,
            "partitions": list(self.partitions),
            "reason": self.reason,
        }


@dataclass
class WriteStats:
    """Counters for ``.mtkfs/stats.json`` and ``status.json``."""

    writes: int = 0
    written_bytes: int = 0
    commits: int = 0
    committed_chunks: int = 0
    committed_bytes: int = 0
    unchanged_chunks: int = 0
    backed_up_chunks: int = 0
    failed_chunks: int = 0
    last_commit_s: float | None = None


async def verify_on_device(
    transport: Transport, region: str, offset_bytes: int, new: bytes
) -> None:
    """Raise VerifyError unless the device holds ``new`` at ``offset_bytes`` of ``region``.

    The device's checksum command where it has one (one short command instead of the bytes),
    else its hash of the range (a phone's ``sha256sum``), else a read-back that bypasses every
    cache.
    """
    if transport.has_checksum:
        crc = await transport.checksum(region, offset_bytes, len(new))
        if crc is not None:
            if crc != zlib.crc32(new):
                raise VerifyError(
                    f"device checksum {crc:08x} of {region}+{offset_bytes:#x} is not the "
                    f"{zlib.crc32(new):08x} written"
                )
            return
    hashed = await transport.digest(region, offset_bytes, len(new))
    if hashed is not None:
        algorithm, digest = hashed
        if digest != hashlib.new(algorithm, new).digest():
            raise VerifyError(
                f"the device's {algorithm} of {region}+{offset_bytes:#x} ({len(new)} bytes) is "
                f"{digest.hex()[:16]}…, not that of the bytes written"
            )
        return
    got = await transport.read_back(region, offset_bytes, len(new))
    if got != new:
        at = next(
            (i for i, (a, b) in enumerate(zip(got, new, strict=False)) if a != b),
            min(len(got), len(new)),
        )
        raise VerifyError(
            f"read-back of {region}+{offset_bytes:#x} differs from what was written at byte "
            f"{offset_bytes + at:#x}"
        )


@dataclass(frozen=True, eq=False)
class _Item:
    """One chunk of a commit: its journal entry, key, new bytes and dirty generation."""

    entry: Entry
    key: ChunkKey
    new: bytes
    generation: int


def _adjacent_runs(items: list[_Item], max_chunks: int) -> list[list[_Item]]:
    """Group sorted items into runs of adjacent chunks of one region, at most ``max_chunks``."""
    runs: list[list[_Item]] = []
    for item in items:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.key[0] == item.key[0]
            and last.key[1] + 1 == item.key[1]
            and len(runs[-1]) < max_chunks
        ):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _reason(exc: BaseException) -> str:
    """A failure as one line for people (our errors carry their own message)."""
    if isinstance(exc, MtkfsError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


class WriteBack:
    """The dirty map and commit pipeline of one rw mount.

    Attributes:
        failsafe: why the mount turned read-only (None while healthy).
        failures: chunks not verified on the device, by key.
        stats: counters.
    """

    def __init__(
        self,
        cache: ChunkCache,
        journal: Journal,
        *,
        max_dirty_bytes: int,
        partitions: PartitionRanges,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        transport = cache.transport
        if not transport.writable:
            raise ReadOnlyError(f"{transport.description} was not opened for writing")
        if cache.chunk_bytes % transport.write_unit_bytes:
            raise ValueError(
                f"chunk size {cache.chunk_bytes} is not a multiple of the write unit "
                f"{transport.write_unit_bytes}"
            )
        self.cache = cache
        self.transport = transport
        self.journal = journal
        self.max_dirty_bytes = max(max_dirty_bytes, cache.chunk_bytes)
        self.partitions = dict(partitions)
        self.clock = clock
        self.failsafe: str | None = None
        self.failures: dict[ChunkKey, Failure] = {}
        self.stats = WriteStats()
        self._meta: dict[ChunkKey, _Dirty] = {}
        self._dirty_bytes = 0
        self._lock = trio.Lock()
        self._session: BackupSession | None = None
        #: Told what the pipeline is doing, in a few words (the daemon passes it to systemd's
        #: STATUS=: ``committing 3 chunks``, ``FAILSAFE: …``, ``idle``).
        self.on_status: Callable[[str], None] = lambda text: None

    # -- state -----------------------------------------------------------------------------------

    @property
    def dirty_bytes(self) -> int:
        """Bytes held in dirty chunks."""
        return self._dirty_bytes

    @property
    def dirty_chunks(self) -> int:
        """Number of dirty chunks."""
        return len(self._meta)

    @property
    def backup_session(self) -> str | None:
        """The id of this mount's backup session (None before the first commit)."""
        return None if self._session is None else self._session.id

    def partitions_of(self, region: str, start: int, end: int) -> tuple[str, ...]:
        """Names of the partitions overlapping ``[start, end)`` of ``region``."""
        return tuple(
            name
            for name, (r, offset, size) in self.partitions.items()
            if r == region and offset < end and start < offset + size
        )

    def changed_partitions(
        self, region: str, start: int, old: bytes, new: bytes
    ) -> tuple[str, ...]:
        """Partitions whose bytes differ between ``old`` and ``new`` (a chunk at ``start``).

        A chunk may span several partitions; naming only those that really change keeps the
        journal and the backup listing honest (4 KiB granularity is plenty for people).
        """
        block = 4096
        changed = [i for i in range(0, len(new), block) if old[i : i + block] != new[i : i + block]]
        if not changed:
            return ()
        return self.partitions_of(region, start + changed[0], start + changed[-1] + block)

    def _key_range(self, key: ChunkKey) -> tuple[int, int]:
        region, index = key
        start = index * self.cache.chunk_bytes
        end = min(start + self.cache.chunk_bytes, self.transport.regions[region].size_bytes)
        return start, end

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """Put ``data`` into dirty chunks (the region range was checked by the volume)."""
        if self.failsafe is not None:
            raise ReadOnlyError(f"the mount turned read-only after a failed write: {self.failsafe}")
        chunk = self.cache.chunk_bytes
        done = 0
        while done < len(data):
            position = offset_bytes + done
            index, within = divmod(position, chunk)
            take = min(chunk - within, len(data) - done)
            key = (region, index)
            await self._make_dirty(key)
            self.cache.dirty[key][within : within + take] = data[done : done + take]
            self._meta[key].generation += 1
            done += take
        self.stats.writes += 1
        self.stats.written_bytes += len(data)

    async def _make_dirty(self, key: ChunkKey) -> None:
        """Ensure ``key`` has a dirty copy, making room and reading the chunk first."""
        while key not in self._meta:
            if self._dirty_bytes + self.cache.chunk_bytes > self.max_dirty_bytes and self._meta:
                # Full: the writer itself commits (and so waits) before adding more.
                await self.commit()
                continue
            start, end = self._key_range(key)
            # Exactly the chunk: a writer's stream says nothing about what will be read next.
            base = await self.cache.read(key[0], start, end - start, readahead=False)
            if self.failsafe is not None:
                raise ReadOnlyError(f"the mount turned read-only: {self.failsafe}")
            if key in self._meta:  # another writer got here while we read
                return
            if self._dirty_bytes + self.cache.chunk_bytes > self.max_dirty_bytes and self._meta:
                continue  # other writers filled the room while we read: commit first
            self.cache.dirty[key] = bytearray(base)
            self._meta[key] = _Dirty(old=base, since_s=self.clock())
            self._dirty_bytes += len(base)

    # -- committing ------------------------------------------------------------------------------

    async def sync(self, region: str, start: int, end: int) -> None:
        """Commit the dirty chunks of ``[start, end)`` of ``region``; raise VerifyError if any
        chunk there is not verified on the device (now or from an earlier commit)."""
        chunk = self.cache.chunk_bytes
        first, last = start // chunk, (max(end, start + 1) - 1) // chunk

        def inside(key: ChunkKey) -> bool:
            return key[0] == region and first <= key[1] <= last

        await self._commit(inside)
        for key, failure in self.failures.items():
            if inside(key):
                raise VerifyError(
                    f"{','.join(failure.partitions) or region}: data at {region}+"
                    f"{failure.offset_bytes:#x} is not on the device ({failure.reason}); it is "
                    "kept in the journal"
                )

    async def commit(self) -> None:
        """Commit every dirty chunk."""
        await self._commit(lambda key: True)

    async def commit_older_than(self, age_s: float) -> None:
        """Commit the chunks dirty for at least ``age_s`` (the timer)."""
        limit = self.clock() - age_s
        await self._commit(lambda key: self._meta[key].since_s <= limit)

    async def _commit(self, select: Callable[[ChunkKey], bool]) -> None:
        async with self._lock:
            keys = sorted(k for k in self._meta if select(k))
            if not keys:
                return
            if self.failsafe is not None:
                raise VerifyError(
                    f"{len(keys)} chunk(s) not written: the mount is read-only after a failed "
                    f"write ({self.failsafe})"
                )
            with trio.CancelScope(shield=True):
                await self._commit_keys(keys)

    async def _commit_keys(self, keys: list[ChunkKey]) -> None:
        batch: list[tuple[ChunkKey, bytes, int]] = []
        for key in keys:
            meta = self._meta[key]
            new = bytes(self.cache.dirty[key])
            if new == meta.old:
                self.stats.unchanged_chunks += 1
                await self._clean(key, new, meta.generation)
            else:
                batch.append((key, new, meta.generation))
        if not batch:
            return
        self.stats.commits += 1
        writes = []
        for key, new, _ in batch:
            start, _ = self._key_range(key)
            old = self._meta[key].old
            names = self.changed_partitions(key[0], start, old, new)
            writes.append(ChunkWrite(key[0], start, old, new, names))
        try:
            entries = await trio.to_thread.run_sync(self._journal_batch, writes)
        except OSError as exc:
            # The device has not been touched: the data stays dirty, the mount stays writable.
            raise JournalError(
                f"cannot write the journal in {self.journal.folder} ({exc.strerror or exc}); "
                "nothing was written to the device; free space there or use --journal-dir"
            ) from exc
        log.info("committing %d chunk(s), %d bytes", len(batch), sum(len(w.new) for w in writes))
        self.on_status(f"committing {len(batch)} chunk{'s' if len(batch) != 1 else ''}")
        items = [
            _Item(entry, key, new, generation)
            for entry, (key, new, generation) in zip(entries, batch, strict=True)
        ]
        runs = _adjacent_runs(
            items, max(1, self.transport.max_request_bytes // self.cache.chunk_bytes)
        )
        for position, run in enumerate(runs):
            region, offset = run[0].entry.region, run[0].entry.offset_bytes
            data = b"".join(item.new for item in run)
            later = [item for r in runs[position + 1 :] for item in r]
            try:
                # One command per run of adjacent chunks: on a link, latency per command
                # dominates; on an image, one fdatasync per run instead of per chunk.
                await self.transport.write(region, offset, data)
                bad = await self._verify_run(run, data)
            except Exception as exc:
                await self._fail(run[:1], _reason(exc), run[1:] + later)
                raise VerifyError(
                    f"{run[0].entry.describe()}: {_reason(exc)}; the mount is now read-only "
                    "and the data is kept in the journal"
                ) from exc
            good = [item for item in run if item not in bad]
            await trio.to_thread.run_sync(self._verified, good)
            for item in good:
                self.stats.committed_chunks += 1
                self.stats.committed_bytes += len(item.new)
                await self._clean(item.key, item.new, item.generation)
            if bad:
                reason = bad[next(iter(bad))]
                await self._fail(list(bad), reason, later)
                raise VerifyError(
                    f"{next(iter(bad)).entry.describe()}: {reason}; the mount is now read-only "
                    "and the data is kept in the journal"
                )
        self.stats.last_commit_s = time.time()
        self.on_status(f"idle; {self.stats.committed_chunks} chunk(s) written and verified")

    async def _verify_run(self, run: list[_Item], data: bytes) -> dict[_Item, str]:
        """Verify a written run; returns the chunks that did not verify, with why.

        One checksum (or one read-back) for the whole run; only when that fails is each chunk
        checked on its own, so that the good ones are not reported as failed.
        """
        region, offset = run[0].entry.region, run[0].entry.offset_bytes
        try:
            await verify_on_device(self.transport, region, offset, data)
            return {}
        except VerifyError as exc:
            if len(run) == 1:
                return {run[0]: str(exc)}
        bad: dict[_Item, str] = {}
        for item in run:
            try:
                await verify_on_device(self.transport, region, item.entry.offset_bytes, item.new)
            except VerifyError as exc:
                bad[item] = str(exc)
        return bad or {run[0]: "the run did not verify as a whole"}

    def _verified(self, good: list[_Item]) -> None:
        """Worker thread: record what the session wrote, then retire the entries."""
        assert self._session is not None
        self._session.note_committed([(i.key[0], i.key[1], zlib.crc32(i.new)) for i in good])
        self.journal.retire_many([i.entry for i in good])

    def _journal_batch(self, writes: list[ChunkWrite]) -> list[Entry]:
        """Worker thread: back up originals (first write per session), then journal the batch."""
        if self._session is None:
            self._session = self.journal.new_session(self.cache.chunk_bytes, self.partitions)
        originals = [
            (w.region, w.offset_bytes // self.cache.chunk_bytes, w.old)
            for w in writes
            if w.offset_bytes // self.cache.chunk_bytes not in self._session.chunks(w.region)
        ]
        self._session.save_many(originals)
        self.stats.backed_up_chunks += len(originals)
        self._session.note_written([n for w in writes for n in w.partitions])
        session = self._session.id
        return self.journal.begin([dataclasses.replace(w, session=session) for w in writes])

    async def _clean(self, key: ChunkKey, new: bytes, generation: int) -> None:
        """The device holds ``new`` for ``key`` (verified, or never changed)."""
        meta = self._meta[key]
        if meta.generation == generation:
            del self._meta[key]
            del self.cache.dirty[key]
            self._dirty_bytes -= len(new)
        else:
            # Written again during the commit: still dirty, relative to what is now stored.
            meta.old = new
        self.cache.committed(key, new)
        disk = self.cache.disk
        if disk is not None and len(new) == self.cache.chunk_bytes:
            await disk.store(key[0], key[1], new)

    async def _fail(self, failed: list[_Item], reason: str, unwritten: list[_Item]) -> None:
        """Turn failsafe: keep the journal entries, drop the in-memory copies, remember why."""
        first = failed[0].entry
        self.failsafe = f"{first.describe()}: {reason}"
        log.error("write failed, mount is now read-only: %s", self.failsafe)
        self.on_status(f"FAILSAFE: verify failed at {self._where(first)}; the mount is read-only")
        for item in failed:
            await trio.to_thread.run_sync(self.journal.mark_failed, item.entry, reason)
        stopped = f"not written: the commit stopped at {first.region}+{first.offset_bytes:#x}"
        for item, why in [(i, reason) for i in failed] + [(i, stopped) for i in unwritten]:
            entry = item.entry
            self.failures[item.key] = Failure(
                entry.region, entry.offset_bytes, entry.size_bytes, entry.partitions, why
            )
            self.stats.failed_chunks += 1
            # The journal has the bytes; reads now show what the device really holds.
            self._dirty_bytes -= len(self.cache.dirty.pop(item.key, b""))
            self._meta.pop(item.key, None)
            self.cache.forget(item.key)

    def _where(self, entry: Entry) -> str:
        """``boot+0x40000`` (partition-relative) when the chunk starts in a partition, else
        ``user+0x1d00000``."""
        for name in entry.partitions:
            region, start, size = self.partitions.get(name, ("", 0, 0))
            if region == entry.region and start <= entry.offset_bytes < start + size:
                return f"{name}+{entry.offset_bytes - start:#x}"
        return f"{entry.region}+{entry.offset_bytes:#x}"

    async def close(self) -> None:
        """Unmount: commit everything; after a failure keep what is left in the journal."""
        try:
            await self.commit()
        except MtkfsError as exc:
            log.error("final commit failed: %s", exc)
        async with self._lock:
            if not self._meta:
                return
            writes = []
            for key in sorted(self._meta):
                start, _ = self._key_range(key)
                old, new = self._meta[key].old, bytes(self.cache.dirty[key])
                if old == new:
                    continue  # nothing to keep
                names = self.changed_partitions(key[0], start, old, new)
                writes.append(ChunkWrite(key[0], start, old, new, names))
            if not writes:
                return
            with trio.CancelScope(shield=True):
                entries = await trio.to_thread.run_sync(self.journal.begin, writes)
            log.error(
                "%d chunk(s) were not written (the mount is read-only after a failed write); "
                "they are kept in the journal: see `mtkfs journal show`",
                len(entries),
            )
