"""``mtkfs journal show|replay|rollback|prune``: the user decides what happens to journalled writes.

Why these are separate commands and not automatic: after a crash the journal knows the old and
the new bytes of every unfinished chunk, but not which the user wants. A half-flashed boot image
may be worth finishing (replay) or undoing (rollback); only the user knows, so a read-write mount
refuses to start until they chose (DESIGN.md "Writes").

Every device write made here goes through the same discipline as a mount's commit: journalled
first (a rollback of a backup is itself recoverable), written, verified on the device, retired.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from mtkfs.commit import verify_on_device
from mtkfs.errors import UsageError
from mtkfs.journal import BackupSession, ChunkWrite, Entry, Journal
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

#: Restores are journalled in batches of at most this many bytes of new data.
_BATCH_BYTES = 64 << 20

Progress = Callable[[str], None]


async def device_holds(transport: Transport, entry: Entry) -> str:
    """Whether the device holds the entry's ``old`` or ``new`` bytes now, or ``neither``."""
    crc = None
    if transport.has_checksum:
        crc = await transport.checksum(entry.region, entry.offset_bytes, entry.size_bytes)
    if crc is None:
        crc = zlib.crc32(
            await transport.read_back(entry.region, entry.offset_bytes, entry.size_bytes)
        )
    if crc == entry.new_crc32:
        return "new"
    if crc == entry.old_crc32:
        return "old"
    return "neither"


async def show(transport: Transport, journal: Journal) -> dict[str, Any]:
    """What the journal holds for this device: unfinished writes and backup sessions."""
    entries = []
    for entry in journal.unfinished():
        entries.append(
            {
                "txn": entry.txn,
                "index": entry.index,
                "region": entry.region,
                "offset": entry.offset_bytes,
                "size": entry.size_bytes,
                "partitions": list(entry.partitions),
                "state": "failed" if entry.failed else "pending",
                "reason": journal.failure_reason(entry),
                "device_holds": await device_holds(transport, entry),
                "created": entry.created_s,
            }
        )
    sessions = [
        {
            "id": s.id,
            "state": s.state,
            "started": s.meta.get("started_s"),
            "chunks": sum(len(s.chunks(r)) for r in s.regions()),
            "bytes": s.size_bytes(),
            "partitions": s.written,
        }
        for s in journal.sessions()
    ]
    return {
        "source": transport.description,
        "device_id": transport.device_id,
        "journal": str(journal.folder),
        "unfinished": entries,
        "backups": sessions,
    }


async def _finish(
    transport: Transport,
    journal: Journal,
    entry: Entry,
    data: bytes,
    *,
    session: BackupSession | None = None,
) -> None:
    """Write ``data`` for ``entry``'s chunk, verify it on the device, retire the entry.

    ``session``: the backup session to record the verified chunk in first, as the mount's own
    commit does (so that a later rollback of it takes the chunk for its own write).
    """
    await transport.write(entry.region, entry.offset_bytes, data)
    await verify_on_device(transport, entry.region, entry.offset_bytes, data)
    if session is not None:
        index = entry.offset_bytes // session.chunk_bytes
        session.note_committed([(entry.region, index, zlib.crc32(data))])
    journal.retire(entry)


async def replay(transport: Transport, journal: Journal, progress: Progress) -> int:
    """Write every unfinished entry's new bytes, in order; returns how many were written.

    As the mount's own commit would have, each chunk is recorded in the backup session of the
    mount that journalled it before its entry is retired: a later rollback of that session must
    take it for that session's write, not for a change made by someone else since.
    """
    entries = journal.unfinished()
    for entry in entries:
        _, new = journal.load(entry)
        session = None if entry.session is None else journal.session(entry.session)
        await _finish(transport, journal, entry, new, session=session)
        progress(f"replayed {entry.describe()}")
    return len(entries)


async def rollback_pending(transport: Transport, journal: Journal, progress: Progress) -> int:
    """Write every unfinished entry's old bytes, newest first; returns how many."""
    entries = journal.unfinished()
    for entry in reversed(entries):
        old, _ = journal.load(entry)
        await _finish(transport, journal, entry, old)
        progress(f"rolled back {entry.describe()}")
    return len(entries)


def pick_session(journal: Journal, session_id: str | None) -> BackupSession | None:
    """The session to restore: the one named, else the newest not yet rolled back."""
    sessions = journal.sessions()
    if session_id is not None:
        for session in sessions:
            if session.id == session_id:
                return session
        known = ", ".join(s.id for s in sessions) or "none"
        raise UsageError(f"no backup session {session_id} (sessions: {known})")
    active = [s for s in sessions if s.state == "active"]
    return active[-1] if active else None


async def restore_session(
    transport: Transport,
    journal: Journal,
    session: BackupSession,
    partitions: Collection[str],
    progress: Progress,
    *,
    force: bool = False,
) -> RestoreResult:
    """Write the session's original bytes back (only ``partitions``' ranges if any are named).

    A chunk that already holds its original is left alone. A chunk that holds neither its
    original nor what this session last wrote was changed by something else since (a newer
    mount, another tool, a different image at the same path): it is skipped and reported
    unless ``force``, because writing it back would destroy that later change.
    """
    ranges = session.partitions
    unknown = [p for p in partitions if p not in ranges]
    if unknown:
        raise UsageError(
            f"backup session {session.id} knows no partition {', '.join(unknown)} (it has: "
            f"{', '.join(sorted(ranges))})"
        )
    chunk = session.chunk_bytes
    batch: list[ChunkWrite] = []
    changed = 0
    skipped: list[str] = []
    for region in session.regions():
        selected = [ranges[p] for p in partitions if ranges[p][0] == region]
        if partitions and not selected:
            continue
        written = session.committed_crc(region)
        for index in sorted(session.chunks(region)):
            start = index * chunk
            original = session.load(region, index)
            end = start + len(original)
            spans = [(max(o, start), min(o + s, end)) for _, o, s in selected]
            spans = [(a, b) for a, b in spans if a < b]
            if partitions and not spans:
                continue
            current = await transport.read_back(region, start, len(original))
            if (
                not force
                and current != original
                and zlib.crc32(current) != written.get(index, zlib.crc32(original))
            ):
                skipped.append(f"{region}+{start:#x}")
                continue
            if partitions:
                merged = bytearray(current)
                for a, b in spans:
                    merged[a - start : b - start] = original[a - start : b - start]
                wanted = bytes(merged)
            else:
                wanted = original
            if wanted == current:
                continue
            names = tuple(
                n for n, (r, o, s) in ranges.items() if r == region and o < end and start < o + s
            )
            batch.append(ChunkWrite(region, start, current, wanted, names))
            if sum(len(w.new) for w in batch) >= _BATCH_BYTES:
                changed += await _apply(transport, journal, batch, progress)
                batch = []
    changed += await _apply(transport, journal, batch, progress)
    if not partitions and not skipped:
        session.mark("rolled-back")
    return RestoreResult(changed, skipped)


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_session` did: chunks written back, chunks skipped (changed since)."""

    changed: int
    skipped: list[str]


async def _apply(
    transport: Transport, journal: Journal, writes: list[ChunkWrite], progress: Progress
) -> int:
    if not writes:
        return 0
    entries = journal.begin(writes)
    for entry, write in zip(entries, writes, strict=True):
        await _finish(transport, journal, entry, write.new)
        progress(f"restored {entry.describe()}")
    return len(entries)


@dataclass(frozen=True)
class PruneResult:
    """What ``prune`` removed."""

    sessions: int
    bytes: int


def prune(journal: Journal, keep: int) -> PruneResult:
    """Delete all but the newest ``keep`` backup sessions."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    sessions = journal.sessions()
    doomed = sessions[: max(0, len(sessions) - keep)]
    freed = 0
    for session in doomed:
        freed += session.size_bytes()
        session.remove()
    return PruneResult(len(doomed), freed)
