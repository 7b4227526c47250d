"""``mtkfs journal show|replay|rollback|prune`` over real image files.

The journal is filled the way a crash leaves it — transactions begun (entries and COMMITTED
durable) and the device written partly or not at all — and the recovery functions must bring
every chunk to exactly the bytes the user chose: the newest (replay), the original (rollback of
pending writes), or a backup session's (restore), never a mix, and never bytes outside the
partitions named.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mtkfs.cache import ChunkCache
from mtkfs.commit import WriteBack
from mtkfs.errors import TransportError, UsageError, VerifyError
from mtkfs.journal import BackupSession, ChunkWrite, Journal
from mtkfs.recovery import (
    PruneResult,
    RestoreResult,
    pick_session,
    prune,
    replay,
    restore_session,
    rollback_pending,
    show,
)
from mtkfs.testing.faults import FaultyTransport, parse_fault_spec
from mtkfs.transports.base import Transport
from mtkfs.transports.image import ImageTransport
from mtkfs.transports.linkmodel import LinkModelTransport, LinkSpec

CHUNK = 64 << 10
USER = random.Random(3).randbytes(8 * CHUNK)
BOOT1 = random.Random(4).randbytes(2 * CHUNK)
#: ``alpha`` and ``beta`` share chunk 4 (the boundary is not even 4 KiB aligned).
PARTS = {
    "alpha": ("user", 0, 4 * CHUNK + 1000),
    "beta": ("user", 4 * CHUNK + 1000, 3 * CHUNK),
    "preloader": ("boot1", 0, 2 * CHUNK),
}


def at(index: int, within: int = 0) -> int:
    return index * CHUNK + within


def chunk_of(data: bytes, index: int) -> bytes:
    return data[at(index) : at(index + 1)]


def _pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Device:
    """A readback folder (``User``, ``Boot1``) opened for writing, and its journal."""

    folder: Path
    transport: ImageTransport
    journal: Journal
    messages: list[str]

    def user(self) -> bytes:
        return (self.folder / "User").read_bytes()

    def boot1(self) -> bytes:
        return (self.folder / "Boot1").read_bytes()

    def poke(self, name: str, offset: int, data: bytes) -> None:
        """Change the device behind mtkfs' back (what an earlier, committed write did)."""
        with open(self.folder / name, "r+b") as stream:
            stream.seek(offset)
            stream.write(data)

    def progress(self, message: str) -> None:
        self.messages.append(message)


@asynccontextmanager
async def device(tmp_path: Path) -> AsyncIterator[Device]:
    folder = tmp_path / "readback"
    folder.mkdir()
    (folder / "User").write_bytes(USER)
    (folder / "Boot1").write_bytes(BOOT1)
    transport = ImageTransport.open(folder, writable=True)
    journal = Journal.open(tmp_path / "journal", transport.device_id, transport.description)
    try:
        yield Device(folder, transport, journal, [])
    finally:
        journal.close()
        await transport.aclose()


# -- replay and rollback of pending entries ------------------------------------------------------


def _two_transactions(dev: Device) -> tuple[bytes, bytes, bytes]:
    """Chunk 2 written twice (original → A → B) and chunk 5 once, as two commits."""
    original, a, b = chunk_of(USER, 2), _pattern(CHUNK, 1), _pattern(CHUNK, 2)
    dev.journal.begin(
        [
            ChunkWrite("user", at(2), original, a, ("alpha",)),
            ChunkWrite("user", at(5), chunk_of(USER, 5), _pattern(CHUNK, 5), ("beta",)),
        ]
    )
    dev.journal.begin([ChunkWrite("user", at(2), a, b, ("alpha",))])
    return original, a, b


async def test_replay_writes_the_newest_bytes_in_order(tmp_path: Path) -> None:
    """Replay applies entries oldest first, so a chunk written by two commits ends as the
    second one left it; each entry is verified and retired."""
    async with device(tmp_path) as dev:
        _, _, b = _two_transactions(dev)
        assert await replay(dev.transport, dev.journal, dev.progress) == 3
        user = dev.user()
        assert chunk_of(user, 2) == b
        assert chunk_of(user, 5) == _pattern(CHUNK, 5)
        assert user[: at(2)] == USER[: at(2)]
        assert dev.journal.unfinished() == []
        assert len(dev.messages) == 3
        assert all(m.startswith("replayed ") for m in dev.messages)


async def test_rollback_writes_the_old_bytes_newest_first(tmp_path: Path) -> None:
    """Rollback undoes entries newest first, so a chunk written by two commits ends as it was
    before the first one — whatever the device holds now."""
    async with device(tmp_path) as dev:
        _, _, b = _two_transactions(dev)
        dev.poke("User", at(2), b)  # the device got the second commit
        dev.poke("User", at(5, 100), b"torn")  # and part of chunk 5
        assert await rollback_pending(dev.transport, dev.journal, dev.progress) == 3
        assert dev.user() == USER
        assert dev.journal.unfinished() == []
        offsets = [m.split("user+")[1].split(" ")[0] for m in dev.messages]
        assert offsets == [hex(at(2)), hex(at(5)), hex(at(2))]


async def test_replay_stops_at_a_chunk_that_does_not_verify(tmp_path: Path) -> None:
    """A replay whose write does not verify keeps that entry and the ones after it."""
    async with device(tmp_path) as dev:
        _two_transactions(dev)
        faulty = FaultyTransport(dev.transport, parse_fault_spec("flip-bit@2"))
        with pytest.raises(VerifyError):
            await replay(faulty, dev.journal, dev.progress)
        left = dev.journal.unfinished()
        assert [(e.txn, e.offset_bytes) for e in left] == [(1, at(5)), (2, at(2))]
        # Once the device behaves, replay finishes the job.
        assert await replay(dev.transport, dev.journal, dev.progress) == 2
        assert chunk_of(dev.user(), 5) == _pattern(CHUNK, 5)


async def test_failed_commit_is_replayable(tmp_path: Path) -> None:
    """End to end: a mount's commit fails on the device; ``journal replay`` (with the device
    back) then finishes exactly what the mount was asked to write."""
    async with device(tmp_path) as dev:
        faulty = FaultyTransport(dev.transport, parse_fault_spec("fail-write@1"))
        cache = ChunkCache(faulty, chunk_bytes=CHUNK, max_bytes=1 << 20)
        wb = WriteBack(cache, dev.journal, max_dirty_bytes=8 * CHUNK, partitions=PARTS)
        expected = bytearray(USER)
        for offset, data in ((at(1, 5), b"one"), (at(6, 9), b"six")):
            await wb.write("user", offset, data)
            expected[offset : offset + len(data)] = data
        with pytest.raises(VerifyError):
            await wb.commit()
        assert dev.user() == USER
        assert await replay(dev.transport, dev.journal, dev.progress) == 2
        assert dev.user() == expected
        # The replayed chunks count as that mount's writes: rolling its session back later
        # restores them (rather than skipping them as changed by someone else).
        (session,) = dev.journal.sessions()
        restored = await restore_session(dev.transport, dev.journal, session, [], dev.progress)
        assert restored == RestoreResult(2, [])
        assert dev.user() == USER


# -- show ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum", [False, True])
async def test_show_tells_what_the_device_holds(tmp_path: Path, checksum: bool) -> None:
    """For each unfinished entry: old (never written), new (written, not retired) or neither
    (torn) — asked with the device's checksum command where it has one."""
    async with device(tmp_path) as dev:
        new = [_pattern(CHUNK, i) for i in range(3)]
        *_, torn = dev.journal.begin(
            [ChunkWrite("user", at(i), chunk_of(USER, i), new[i], ("alpha",)) for i in range(3)]
        )
        dev.poke("User", at(1), new[1])
        dev.poke("User", at(2), new[2][: CHUNK // 2])
        dev.journal.mark_failed(torn, "device gone")
        session = dev.journal.new_session(CHUNK, PARTS)
        session.save("user", 0, chunk_of(USER, 0))
        session.note_written(["alpha"])

        transport: Transport = dev.transport
        if checksum:
            spec = LinkSpec(latency_s=0.0, bandwidth_bytes_per_s=math.inf, checksum=True)
            transport = LinkModelTransport(dev.transport, spec)
        report = await show(transport, dev.journal)

        rows = report["unfinished"]
        assert [r["device_holds"] for r in rows] == ["old", "new", "neither"]
        assert [r["state"] for r in rows] == ["pending", "pending", "failed"]
        assert [r["reason"] for r in rows] == [None, None, "device gone"]
        assert [r["offset"] for r in rows] == [at(0), at(1), at(2)]
        assert rows[0]["partitions"] == ["alpha"]
        assert report["device_id"] == dev.transport.device_id
        assert report["journal"] == str(dev.journal.folder)
        (backup,) = report["backups"]
        assert backup["id"] == session.id
        assert (backup["state"], backup["chunks"], backup["bytes"]) == ("active", 1, CHUNK)
        assert backup["partitions"] == ["alpha"]
        json.dumps(report)  # the CLI prints it as JSON
        if isinstance(transport, LinkModelTransport):
            assert (transport.checksum_commands, transport.commands) == (3, 0)


# -- backup sessions -----------------------------------------------------------------------------


def _session_with_originals(dev: Device) -> BackupSession:
    """A session that saved user chunks 3, 4, 5 and boot1 chunk 0, which were then changed on
    the device (what a mount with successful commits leaves behind)."""
    session = dev.journal.new_session(CHUNK, PARTS)
    for index in (3, 4, 5):
        session.save("user", index, chunk_of(USER, index))
    session.save("boot1", 0, chunk_of(BOOT1, 0))
    dev.poke("User", at(3, 10), b"alpha was changed")
    dev.poke("User", at(4, 500), b"A" * 500 + b"B" * 500)  # alpha's tail, beta's head
    dev.poke("User", at(5, 10), b"beta was changed")
    dev.poke("Boot1", 10, b"preloader was changed")
    # What the mount's commits recorded: the bytes they wrote and verified.
    user, boot1 = dev.user(), dev.boot1()
    session.note_committed(
        [("user", i, zlib.crc32(chunk_of(user, i))) for i in (3, 4, 5)]
        + [("boot1", 0, zlib.crc32(chunk_of(boot1, 0)))]
    )
    return session


async def test_restore_whole_session(tmp_path: Path) -> None:
    """A full rollback puts every saved chunk back, journalled like any write, and marks the
    session rolled back; running it again changes nothing."""
    async with device(tmp_path) as dev:
        session = _session_with_originals(dev)
        result = await restore_session(dev.transport, dev.journal, session, [], dev.progress)
        assert result == RestoreResult(4, [])
        assert dev.user() == USER
        assert dev.boot1() == BOOT1
        assert dev.journal.unfinished() == []
        assert BackupSession(session.folder).state == "rolled-back"
        again = await restore_session(dev.transport, dev.journal, session, [], dev.progress)
        assert again == RestoreResult(0, [])


async def test_restore_named_partitions_only(tmp_path: Path) -> None:
    """Restoring alpha puts back alpha's bytes only: beta's bytes in the chunk they share, beta's
    own chunk and the other region stay as they are, and the session stays active."""
    async with device(tmp_path) as dev:
        session = _session_with_originals(dev)
        before = dev.user()
        result = await restore_session(dev.transport, dev.journal, session, ["alpha"], dev.progress)
        assert result.changed == 2  # chunks 3 and 4
        user = dev.user()
        boundary = at(4, 1000)
        assert user[:boundary] == USER[:boundary]
        assert user[boundary:] == before[boundary:]
        assert user[boundary : boundary + 500] == b"B" * 500
        assert dev.boot1() != BOOT1
        assert BackupSession(session.folder).state == "active"

        result = await restore_session(
            dev.transport, dev.journal, session, ["beta", "preloader"], dev.progress, force=True
        )
        assert result.changed == 3  # user chunks 4 and 5, boot1 chunk 0
        assert dev.user() == USER
        assert dev.boot1() == BOOT1
        assert BackupSession(session.folder).state == "active"
        assert dev.journal.unfinished() == []


async def test_restore_unknown_partition_is_a_usage_error(tmp_path: Path) -> None:
    async with device(tmp_path) as dev:
        session = _session_with_originals(dev)
        before = dev.user()
        with pytest.raises(UsageError, match="system"):
            await restore_session(
                dev.transport, dev.journal, session, ["alpha", "system"], dev.progress
            )
        assert dev.user() == before
        assert dev.journal.unfinished() == []


async def test_failed_restore_is_itself_recoverable(tmp_path: Path) -> None:
    """A restore whose device write fails leaves its entries in the journal: old = what the
    device held, new = the original."""
    async with device(tmp_path) as dev:
        session = _session_with_originals(dev)
        current = dev.user()
        faulty = FaultyTransport(dev.transport, parse_fault_spec("fail-write@1"))
        with pytest.raises(TransportError):
            await restore_session(faulty, dev.journal, session, ["beta"], dev.progress)
        entries = dev.journal.unfinished()
        assert [e.offset_bytes for e in entries] == [at(4), at(5)]
        old, new = dev.journal.load(entries[1])
        assert (old, new) == (chunk_of(current, 5), chunk_of(USER, 5))
        assert BackupSession(session.folder).state == "active"


async def test_restore_skips_chunks_changed_since(tmp_path: Path) -> None:
    """A chunk that holds neither the original nor what the session last wrote was changed by
    something else since (a newer mount, another tool, another image at the same path): it is
    skipped and named, and the session stays active; ``force`` restores it anyway."""
    async with device(tmp_path) as dev:
        session = _session_with_originals(dev)
        dev.poke("User", at(5, 2000), b"changed later by someone else")
        later = dev.user()
        result = await restore_session(dev.transport, dev.journal, session, [], dev.progress)
        assert result == RestoreResult(3, [f"user+{at(5):#x}"])
        user = dev.user()
        assert user[: at(5)] == USER[: at(5)]
        assert chunk_of(user, 5) == chunk_of(later, 5)
        assert BackupSession(session.folder).state == "active"
        forced = await restore_session(
            dev.transport, dev.journal, session, [], dev.progress, force=True
        )
        assert forced == RestoreResult(1, [])
        assert dev.user() == USER
        assert BackupSession(session.folder).state == "rolled-back"


def _session_named(journal: Journal, name: str, started_s: float) -> BackupSession:
    """A session with a chosen id and start time (ids are second-and-pid stamps)."""
    session = journal.new_session(CHUNK, PARTS)
    session.save("user", 0, b"x" * int(started_s))
    session.meta["started_s"] = started_s
    (session.folder / "session.json").write_text(json.dumps(session.meta))
    target = session.folder.with_name(name)
    session.folder.rename(target)
    return BackupSession(target)


async def test_pick_session(tmp_path: Path) -> None:
    """No id: the newest session not yet rolled back. An id: that one, whatever its state."""
    async with device(tmp_path) as dev:
        assert pick_session(dev.journal, None) is None
        _session_named(dev.journal, "20250101T000000-1", 100.0)
        _session_named(dev.journal, "20250102T000000-1", 200.0)
        _session_named(dev.journal, "20250103T000000-1", 300.0).mark("rolled-back")
        picked = pick_session(dev.journal, None)
        assert picked is not None and picked.id == "20250102T000000-1"
        named = pick_session(dev.journal, "20250103T000000-1")
        assert named is not None and named.state == "rolled-back"
        with pytest.raises(UsageError, match="20250101T000000-1"):
            pick_session(dev.journal, "20990101T000000-1")
        for session in dev.journal.sessions():
            session.mark("rolled-back")
        assert pick_session(dev.journal, None) is None


async def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    async with device(tmp_path) as dev:
        for day, size in ((1, 100), (2, 200), (3, 300)):
            _session_named(dev.journal, f"2025010{day}T000000-1", float(size))
        assert prune(dev.journal, 5) == PruneResult(0, 0)
        assert prune(dev.journal, 1) == PruneResult(2, 300)
        assert [s.id for s in dev.journal.sessions()] == ["20250103T000000-1"]
        with pytest.raises(UsageError):
            prune(dev.journal, -1)
        assert prune(dev.journal, 0) == PruneResult(1, 300)
        assert dev.journal.sessions() == []
