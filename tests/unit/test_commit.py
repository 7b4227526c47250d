"""The commit pipeline over a real image file: dirty chunks, journal, device write, verification.

Each test builds the stack a ``-o rw`` mount builds — ImageTransport (opened for writing) under a
FaultyTransport (which counts writes and misbehaves when told), optionally a LinkModelTransport on
top, a ChunkCache and a Journal in ``tmp_path`` — and checks what actually reached the image
file, what the journal kept, and what reads show. The rule under test: nothing is reported done
that is not verified on the device, and after a failure reads show what the device really holds.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from mtkfs.cache import ChunkCache
from mtkfs.commit import WriteBack
from mtkfs.errors import DeviceGoneError, JournalError, ReadOnlyError, VerifyError
from mtkfs.journal import Journal
from mtkfs.testing.faults import FaultyTransport, parse_fault_spec
from mtkfs.transports.base import Transport
from mtkfs.transports.image import ImageTransport
from mtkfs.transports.linkmodel import LinkModelTransport, LinkSpec

CHUNK = 64 << 10
CHUNKS = 12
ORIGINAL = random.Random(7).randbytes(CHUNKS * CHUNK)
#: ``alpha`` ends inside chunk 4, which it shares with ``beta`` (on a 4 KiB boundary: that is
#: the granularity at which a commit names the partitions a chunk's changes touch).
PARTITIONS = {
    "alpha": ("user", 0, 4 * CHUNK + 8192),
    "beta": ("user", 4 * CHUNK + 8192, 6 * CHUNK - 8192),
    "gamma": ("user", 10 * CHUNK, 2 * CHUNK),
}


def at(index: int, within: int = 0) -> int:
    """Byte offset of ``within`` in chunk ``index``."""
    return index * CHUNK + within


def chunk_of(data: bytes | bytearray, index: int) -> bytes:
    return bytes(data[at(index) : at(index + 1)])


@dataclass
class Rig:
    """One rw mount's write path, and what the image should hold once all is committed."""

    path: Path
    faulty: FaultyTransport
    transport: Transport
    cache: ChunkCache
    journal: Journal
    wb: WriteBack
    expected: bytearray

    def disk(self) -> bytes:
        """What the image file holds now."""
        return self.path.read_bytes()

    async def write(self, offset: int, data: bytes) -> None:
        """Write through the WriteBack and remember what that should eventually store."""
        await self.wb.write("user", offset, data)
        self.expected[offset : offset + len(data)] = data


@asynccontextmanager
async def rig(
    tmp_path: Path,
    faults: str = "",
    *,
    max_dirty: int = CHUNKS * CHUNK,
    link: LinkSpec | None = None,
) -> AsyncIterator[Rig]:
    """The stack of an rw mount (``link``: a link model on top, as the daemon stacks it)."""
    path = tmp_path / "User"
    path.write_bytes(ORIGINAL)
    image = ImageTransport.open(path, writable=True)
    faulty = FaultyTransport(image, parse_fault_spec(faults))
    transport: Transport = faulty if link is None else LinkModelTransport(faulty, link)
    cache = ChunkCache(transport, chunk_bytes=CHUNK, max_bytes=4 << 20)
    journal = Journal.open(tmp_path / "journal", transport.device_id, transport.description)
    wb = WriteBack(cache, journal, max_dirty_bytes=max_dirty, partitions=PARTITIONS)
    try:
        yield Rig(path, faulty, transport, cache, journal, wb, bytearray(ORIGINAL))
    finally:
        journal.close()
        await image.aclose()


def _pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- writing and committing ----------------------------------------------------------------------


async def test_writes_reach_the_image_only_after_sync(tmp_path: Path) -> None:
    """A write is held in memory (reads see it); sync writes the whole chunk, keeping the bytes
    of the chunk nobody wrote (read-modify-write); the cache then serves the verified bytes."""
    async with rig(tmp_path) as r:
        await r.write(at(1, 10), b"hello, flash")
        assert r.disk() == ORIGINAL
        assert await r.cache.read("user", at(1, 5), 20) == bytes(r.expected[at(1, 5) : at(1, 25)])
        assert r.wb.dirty_bytes == CHUNK
        assert r.faulty.writes == 0

        await r.wb.sync("user", at(1), at(2))
        assert r.disk() == r.expected
        assert r.faulty.writes == 1
        assert (r.wb.dirty_bytes, r.wb.dirty_chunks) == (0, 0)
        assert r.wb.failsafe is None and r.wb.failures == {}
        assert r.journal.unfinished() == []
        assert list((r.journal.folder / "txn").iterdir()) == []

        reads = r.cache.stats.of("user").transport_reads
        assert await r.cache.read("user", at(1), CHUNK) == chunk_of(r.expected, 1)
        assert r.cache.stats.of("user").transport_reads == reads  # the committed copy


async def test_backup_session_holds_the_original_chunks(tmp_path: Path) -> None:
    """Every chunk a commit changes has its pre-mount content in the backup session, and the
    session records which partitions really changed (only alpha: beta shares chunk 4 but
    none of its bytes were written)."""
    async with rig(tmp_path) as r:
        await r.write(at(4, 10), b"A" * 100)  # chunk 4, alpha's part
        await r.write(at(0, CHUNK - 50), b"B" * 100)  # straddles chunks 0 and 1
        await r.wb.commit()
        await r.write(at(4, 20), b"C" * 10)  # a second commit of chunk 4
        await r.wb.commit()
        assert r.disk() == r.expected
        (session,) = r.journal.sessions()
        assert session.id == r.wb.backup_session
        assert sorted(session.chunks("user")) == [0, 1, 4]
        for index in (0, 1, 4):
            assert session.load("user", index) == chunk_of(ORIGINAL, index)
        assert session.written == ["alpha"]
        assert r.wb.stats.backed_up_chunks == 3
        await r.write(at(4, 8190), b"both")  # across the boundary in chunk 4
        await r.wb.commit()
        (session,) = r.journal.sessions()  # re-read from disk
        assert session.written == ["alpha", "beta"]
        assert sorted(session.chunks("user")) == [0, 1, 4]  # chunk 4 was saved once


async def test_partitions_are_named_by_the_bytes_that_change(tmp_path: Path) -> None:
    """A chunk shared by two partitions is journalled under the ones whose bytes change (in
    4 KiB blocks); ranges that only touch a partition's end do not name it."""
    async with rig(tmp_path) as r:
        wb = r.wb
        assert wb.partitions_of("user", at(4, 8191), at(4, 8192)) == ("alpha",)
        assert wb.partitions_of("user", at(4, 8192), at(4, 8193)) == ("beta",)
        assert wb.partitions_of("user", at(4, 8191), at(4, 8193)) == ("alpha", "beta")
        assert wb.partitions_of("user", at(9), at(10)) == ("beta",)
        assert wb.partitions_of("boot1", at(4), at(5)) == ()
        old = chunk_of(ORIGINAL, 4)
        new = bytearray(old)
        new[8192 + 100] ^= 1
        assert wb.changed_partitions("user", at(4), old, bytes(new)) == ("beta",)
        new[4095] ^= 1
        assert wb.changed_partitions("user", at(4), old, bytes(new)) == ("alpha", "beta")
        assert wb.changed_partitions("user", at(4), old, old) == ()


async def test_multi_chunk_write_with_ragged_ends(tmp_path: Path) -> None:
    """A write that starts and ends mid-chunk dirties every chunk it touches, and the bytes
    around it in the first and last chunk survive."""
    async with rig(tmp_path) as r:
        data = _pattern(3 * CHUNK + 100, seed=1)
        await r.write(at(2, CHUNK - 50), data)
        assert r.wb.dirty_chunks == 5
        assert await r.cache.read("user", at(2), 5 * CHUNK) == bytes(r.expected[at(2) : at(7)])
        await r.wb.commit()
        assert r.disk() == r.expected
        assert r.wb.stats.committed_chunks == 5
        # Adjacent chunks go to the device as one command (one round trip on a link).
        assert r.faulty.writes == 1


async def test_unchanged_bytes_are_never_written(tmp_path: Path) -> None:
    """Writing what is already there (or changing a chunk and changing it back) costs no device
    write, no journal transaction and no backup."""
    async with rig(tmp_path) as r:
        await r.write(at(3, 100), ORIGINAL[at(3, 100) : at(3, 200)])
        await r.write(at(6), b"X" * 10)
        await r.write(at(6), ORIGINAL[at(6) : at(6, 10)])
        await r.wb.commit()
        assert r.faulty.writes == 0
        assert r.wb.stats.unchanged_chunks == 2
        assert r.wb.dirty_chunks == 0
        assert r.wb.backup_session is None
        assert r.journal.sessions() == []
        assert r.disk() == ORIGINAL

        # Mixed with a real change, only the changed chunk goes to the device.
        await r.write(at(3, 100), ORIGINAL[at(3, 100) : at(3, 200)])
        await r.write(at(7, 5), b"changed")
        await r.wb.commit()
        assert r.faulty.writes == 1
        assert r.disk() == r.expected


async def test_sync_commits_only_its_range(tmp_path: Path) -> None:
    """fsync of one partition commits that partition's chunks, not the whole mount's."""
    async with rig(tmp_path) as r:
        await r.write(at(1, 7), b"one")
        await r.write(at(5, 7), b"five")
        await r.wb.sync("user", at(1, 100), at(1, 200))  # a range inside chunk 1
        assert r.faulty.writes == 1
        disk = r.disk()
        assert chunk_of(disk, 1) == chunk_of(r.expected, 1)
        assert chunk_of(disk, 5) == chunk_of(ORIGINAL, 5)
        assert r.wb.dirty_chunks == 1
        await r.wb.sync("user", at(5), at(6))
        assert r.disk() == r.expected


async def test_commit_older_than_picks_by_age(tmp_path: Path) -> None:
    """The timer commits what has been dirty long enough and leaves fresh chunks alone."""
    async with rig(tmp_path) as r:
        now = [100.0]
        r.wb.clock = lambda: now[0]
        await r.write(at(1), b"old")
        now[0] = 110.0
        await r.write(at(2), b"new")
        now[0] = 112.0
        await r.wb.commit_older_than(5.0)
        assert r.wb.dirty_chunks == 1
        assert chunk_of(r.disk(), 1) == chunk_of(r.expected, 1)
        assert chunk_of(r.disk(), 2) == chunk_of(ORIGINAL, 2)


async def test_max_dirty_commits_along_the_way(tmp_path: Path) -> None:
    """A writer that needs room commits first: dirty memory never exceeds the bound, and
    everything written still lands."""
    async with rig(tmp_path, max_dirty=3 * CHUNK) as r:
        for index in range(10):
            await r.write(at(index, 33), _pattern(100, seed=index))
            assert r.wb.dirty_bytes <= 3 * CHUNK
        assert r.wb.stats.committed_chunks == 10 - r.wb.dirty_chunks
        assert r.wb.stats.committed_chunks >= 7
        # One write call spanning more chunks than the bound.
        await r.write(at(1, 1), _pattern(8 * CHUNK, seed=99))
        assert r.wb.dirty_bytes <= 3 * CHUNK
        await r.wb.commit()
        assert r.disk() == r.expected


async def test_max_dirty_holds_for_concurrent_writers(tmp_path: Path) -> None:
    """Writers that all find room, then all read their chunk, must not all add it: the bound
    is rechecked once the chunk is read."""
    async with rig(tmp_path, max_dirty=2 * CHUNK) as r:
        peak = 0

        async def writer(index: int) -> None:
            nonlocal peak
            await r.write(at(index, 5), _pattern(10, seed=index))
            peak = max(peak, r.wb.dirty_bytes)

        async with trio.open_nursery() as nursery:
            for index in range(8):
                nursery.start_soon(writer, index)
        assert peak <= 2 * CHUNK
        await r.wb.commit()
        assert r.disk() == r.expected


async def test_write_during_a_commit_stays_dirty(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk written again while its commit is on the wire is still dirty afterwards (the
    commit wrote the earlier bytes), and the next commit stores the later write."""
    async with rig(tmp_path, "write-delay=0.5") as r:
        await r.write(at(2, 0), b"first")
        first = bytes(r.expected)
        on_the_wire = trio.Event()
        slow_write = r.faulty.write

        async def write(region: str, offset_bytes: int, data: bytes) -> None:
            on_the_wire.set()
            await slow_write(region, offset_bytes, data)

        monkeypatch.setattr(r.faulty, "write", write)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.wb.commit)
            await on_the_wire.wait()  # the commit is now in its (slow) device write
            await r.write(at(2, 100), b"second")

        assert r.wb.dirty_chunks == 1
        assert r.disk() == first
        assert await r.cache.read("user", at(2), CHUNK) == chunk_of(r.expected, 2)
        await r.wb.commit()
        assert r.disk() == r.expected
        assert r.wb.dirty_chunks == 0
        assert r.journal.unfinished() == []
        (session,) = r.journal.sessions()
        assert session.load("user", 2) == chunk_of(ORIGINAL, 2)  # the original, not "first"


@pytest.mark.parametrize("checksum", [True, False])
async def test_verification_uses_the_device_checksum_when_there_is_one(
    tmp_path: Path, checksum: bool
) -> None:
    """On a link with a checksum command, each chunk is verified with one checksum command and
    no read-back; without one, with one read-back command per chunk."""
    spec = LinkSpec(latency_s=0.0, bandwidth_bytes_per_s=math.inf, checksum=checksum)
    async with rig(tmp_path, link=spec) as r:
        link = r.transport
        assert isinstance(link, LinkModelTransport)
        for index in (1, 3, 8):
            await r.write(at(index, 9), b"data")
        reads = link.commands
        await r.wb.commit()
        assert r.disk() == r.expected
        assert link.write_commands == 3
        if checksum:
            assert (link.checksum_commands, link.commands) == (3, reads)
        else:
            assert (link.checksum_commands, link.commands) == (0, reads + 3)


async def test_writeback_needs_a_writable_transport(tmp_path: Path) -> None:
    path = tmp_path / "User"
    path.write_bytes(ORIGINAL)
    image = ImageTransport.open(path)
    journal = Journal.open(tmp_path / "j", image.device_id, "x")
    try:
        cache = ChunkCache(image, chunk_bytes=CHUNK, max_bytes=1 << 20)
        with pytest.raises(ReadOnlyError):
            WriteBack(cache, journal, max_dirty_bytes=CHUNK, partitions={})
    finally:
        journal.close()
        await image.aclose()


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum", [None, True, False])
async def test_flipped_bit_turns_the_mount_failsafe(tmp_path: Path, checksum: bool | None) -> None:
    """A write the device accepted but stored wrongly is caught by verification (read-back or
    checksum): fsync fails, the mount refuses writes, the journal keeps the entry marked failed,
    and reads show what the device really holds — not the data that failed."""
    link = None
    if checksum is not None:
        link = LinkSpec(latency_s=0.0, bandwidth_bytes_per_s=math.inf, checksum=checksum)
    async with rig(tmp_path, "flip-bit@1", link=link) as r:
        statuses: list[str] = []
        r.wb.on_status = statuses.append
        intended = b"kernel" * 100
        await r.write(at(4, 64), intended)  # alpha's part of chunk 4
        with pytest.raises(VerifyError, match="checksum" if checksum else "read-back"):
            await r.wb.sync("user", at(4), at(5))
        # What systemd's STATUS= shows: the partition and the offset inside it.
        start = PARTITIONS["alpha"][1]
        assert statuses == [
            "committing 1 chunk",
            f"FAILSAFE: verify failed at alpha+{at(4) - start:#x}; the mount is read-only",
        ]

        assert r.wb.failsafe is not None
        assert list(r.wb.failures) == [("user", 4)]
        failure = r.wb.failures[("user", 4)]
        assert (failure.offset_bytes, failure.size_bytes, failure.partitions) == (
            at(4),
            CHUNK,
            ("alpha",),
        )
        assert r.wb.dirty_bytes == 0

        (entry,) = r.journal.unfinished()
        assert entry.failed
        assert entry.partitions == ("alpha",)
        assert r.journal.failure_reason(entry)
        assert r.journal.load(entry) == (chunk_of(ORIGINAL, 4), chunk_of(r.expected, 4))

        disk = chunk_of(r.disk(), 4)
        flipped = [
            i for i, (a, b) in enumerate(zip(disk, chunk_of(r.expected, 4), strict=True)) if a != b
        ]
        assert len(flipped) == 1
        assert await r.cache.read("user", at(4), CHUNK) == disk

        with pytest.raises(ReadOnlyError):
            await r.wb.write("user", at(9), b"more")
        with pytest.raises(VerifyError, match=re.escape(f"user+{at(4):#x}")):
            await r.wb.sync("user", at(4, 100), at(4, 200))  # every later fsync there fails
        await r.wb.sync("user", at(9), at(10))  # a range the failure does not touch is fine


async def test_refused_write_keeps_the_rest_pending(tmp_path: Path) -> None:
    """The device refuses the second of three chunks: the first is done and retired, the second
    is kept as failed, the third was never tried and stays pending; only the first changed the
    image."""
    async with rig(tmp_path, "fail-write@2") as r:
        for index in (1, 3, 5):
            await r.write(at(index, 10), b"new bytes")
        with pytest.raises(VerifyError):
            await r.wb.commit()
        assert r.faulty.writes == 2
        disk = r.disk()
        assert chunk_of(disk, 1) == chunk_of(r.expected, 1)
        assert chunk_of(disk, 3) == chunk_of(ORIGINAL, 3)
        assert chunk_of(disk, 5) == chunk_of(ORIGINAL, 5)

        entries = r.journal.unfinished()
        assert [(e.offset_bytes, e.failed) for e in entries] == [(at(3), True), (at(5), False)]
        assert r.journal.failure_reason(entries[1]) is None
        assert sorted(r.wb.failures) == [("user", 3), ("user", 5)]
        assert "not written" in r.wb.failures[("user", 5)].reason
        assert r.wb.dirty_chunks == 0
        assert await r.cache.read("user", at(5), CHUNK) == chunk_of(ORIGINAL, 5)

        await r.wb.sync("user", at(1), at(2))  # chunk 1 verified: its fsync succeeds
        with pytest.raises(VerifyError):
            await r.wb.sync("user", at(5), at(6))
        with pytest.raises(ReadOnlyError):
            await r.wb.write("user", at(1), b"x")


async def test_device_gone_mid_write(tmp_path: Path) -> None:
    """The cable is pulled half way through the second chunk: that chunk is half written on the
    device, the one after it untouched, both kept in the journal; reads now fail honestly
    instead of serving the unverified data."""
    async with rig(tmp_path, "drop@2") as r:
        for index in (1, 3, 5):
            await r.write(at(index), _pattern(CHUNK, seed=index))
        with pytest.raises(VerifyError, match="gone"):
            await r.wb.commit()
        disk = r.disk()
        assert chunk_of(disk, 1) == chunk_of(r.expected, 1)
        half = CHUNK // 2
        assert disk[at(3) : at(3, half)] == r.expected[at(3) : at(3, half)]
        assert disk[at(3, half) : at(4)] == ORIGINAL[at(3, half) : at(4)]
        assert chunk_of(disk, 5) == chunk_of(ORIGINAL, 5)
        entries = r.journal.unfinished()
        assert [(e.offset_bytes, e.failed) for e in entries] == [(at(3), True), (at(5), False)]
        assert r.journal.load(entries[1]) == (chunk_of(ORIGINAL, 5), chunk_of(r.expected, 5))
        assert r.wb.failsafe is not None
        with pytest.raises(DeviceGoneError):
            await r.cache.read("user", at(3), 10)


async def test_close_in_failsafe_journals_leftovers_without_writing(tmp_path: Path) -> None:
    """Unmounting a failsafe mount writes nothing more: chunks still dirty are journalled (the
    user replays or drops them) and the device keeps its old bytes there."""
    async with rig(tmp_path, "fail-write@1") as r:
        await r.write(at(1), b"fails")
        await r.write(at(6, 3), b"left over")
        with pytest.raises(VerifyError):
            await r.wb.sync("user", at(1), at(2))
        assert r.wb.dirty_chunks == 1

        await r.wb.close()
        assert r.faulty.writes == 1
        assert r.disk() == ORIGINAL
        entries = r.journal.unfinished()
        assert [(e.offset_bytes, e.failed) for e in entries] == [(at(1), True), (at(6), False)]
        assert entries[1].txn > entries[0].txn
        assert r.journal.load(entries[1]) == (chunk_of(ORIGINAL, 6), chunk_of(r.expected, 6))


async def test_close_commits_everything_when_healthy(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.write(at(0, 1), b"a")
        await r.write(at(11, 1), b"b")
        await r.wb.close()
        assert r.disk() == r.expected
        assert r.journal.unfinished() == []


@pytest.mark.parametrize("checksum", [None, True])
async def test_a_bad_chunk_inside_a_run_fails_alone(tmp_path: Path, checksum: bool | None) -> None:
    """Adjacent chunks are written with one command and verified as a whole; when that fails,
    each chunk is checked on its own: the good ones are committed, only the bad one is failed
    (and the chunks of later runs stay unwritten in the journal)."""
    link = None
    if checksum is not None:
        link = LinkSpec(latency_s=0.0, bandwidth_bytes_per_s=math.inf, checksum=checksum)
    async with rig(tmp_path, "flip-bit@1", link=link) as r:
        await r.write(at(2, 10), _pattern(3 * CHUNK - 20, seed=5))  # chunks 2, 3, 4: one run
        await r.write(at(8, 10), b"later run")  # chunk 8: a second run
        with pytest.raises(VerifyError):
            await r.wb.commit()
        # The flip lands in the middle of the run's bytes: chunk 3.
        assert r.faulty.writes == 1
        assert sorted(r.wb.failures) == [("user", 3), ("user", 8)]
        assert "not written" in r.wb.failures[("user", 8)].reason
        assert "not written" not in r.wb.failures[("user", 3)].reason
        disk = r.disk()
        for good in (2, 4):
            assert chunk_of(disk, good) == chunk_of(r.expected, good)
        assert chunk_of(disk, 8) == chunk_of(ORIGINAL, 8)
        assert r.wb.stats.committed_chunks == 2
        entries = r.journal.unfinished()
        assert [(e.offset_bytes, e.failed) for e in entries] == [(at(3), True), (at(8), False)]


async def test_session_records_what_it_wrote(tmp_path: Path) -> None:
    """Every verified chunk's CRC is recorded in the backup session, so that a later rollback
    can tell this session's bytes from a change made by someone else since."""
    async with rig(tmp_path) as r:
        await r.write(at(2, 5), b"first")
        await r.wb.commit()
        await r.write(at(2, 5), b"again")
        await r.write(at(6), b"six")
        await r.wb.commit()
        (session,) = r.journal.sessions()
        assert session.committed_crc("user") == {
            2: zlib.crc32(chunk_of(r.expected, 2)),
            6: zlib.crc32(chunk_of(r.expected, 6)),
        }
        # The original is saved once, from before the first write.
        assert session.load("user", 2) == chunk_of(ORIGINAL, 2)


async def test_a_journal_that_cannot_be_written_touches_nothing(tmp_path: Path) -> None:
    """No journal, no device write: the commit fails with a JournalError naming the folder,
    the device is untouched, the data stays dirty and the mount stays writable."""
    async with rig(tmp_path) as r:
        await r.write(at(3, 5), b"payload")
        txn = r.journal.folder / "txn"
        txn.chmod(0o500)
        try:
            if os.access(txn, os.W_OK):  # root ignores the mode: make the folder a file instead
                txn.chmod(0o700)
                shutil.rmtree(txn)
                txn.write_bytes(b"")
            with pytest.raises(JournalError, match="cannot write the journal"):
                await r.wb.commit()
        finally:
            if txn.is_file():
                txn.unlink()
                txn.mkdir()
            txn.chmod(0o700)
        assert r.faulty.writes == 0
        assert r.disk() == ORIGINAL
        assert r.wb.failsafe is None and r.wb.dirty_chunks == 1
        await r.wb.commit()
        assert r.disk() == r.expected
