"""The write-ahead journal and the backup sessions: the files that make a flash write recoverable.

Everything here is plain file I/O in a temporary folder, so these tests say exactly what a crash
at any point leaves behind: an entry that decodes only when it is whole, a transaction that is
live only with its COMMITTED marker, a lock that keeps a second writer out, a backup that keeps
the first copy of a chunk and refuses a damaged one.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.errors import BusyError, JournalCorruptError
from mtkfs.journal import (
    BackupSession,
    ChunkWrite,
    Journal,
    decode_entry,
    device_folder,
    encode_entry,
)

DEVICE = "usb:1-2:1.0/da"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """A locked journal of :data:`DEVICE` under ``tmp_path/j`` (released after the test)."""
    opened = Journal.open(tmp_path / "j", DEVICE, "test phone")
    yield opened
    opened.close()


def _write(offset: int, old: bytes, new: bytes, *names: str) -> ChunkWrite:
    return ChunkWrite("user", offset, old, new, names)


# -- entry files ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    region=st.sampled_from(["user", "boot1", "flash"]),
    offset=st.integers(0, 1 << 40),
    pair=st.integers(0, 300).flatmap(
        lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n))
    ),
    names=st.lists(st.text(min_size=1, max_size=12), max_size=3),
    created=st.floats(0, 4e9),
)
def test_entry_round_trip(
    region: str, offset: int, pair: tuple[bytes, bytes], names: list[str], created: float
) -> None:
    """What is encoded is what decodes: header fields, both byte strings, their CRCs."""
    old, new = pair
    blob = encode_entry(DEVICE, ChunkWrite(region, offset, old, new, tuple(names)), created)
    header, got_old, got_new = decode_entry(blob, Path("e.bin"))
    assert (got_old, got_new) == (old, new)
    assert header["region"] == region
    assert header["offset_bytes"] == offset
    assert header["size_bytes"] == len(new)
    assert header["old_crc32"] == zlib.crc32(old)
    assert header["new_crc32"] == zlib.crc32(new)
    assert header["partitions"] == names
    assert header["device_id"] == DEVICE
    assert header["created_s"] == created


def test_entry_needs_equal_lengths() -> None:
    """A chunk's old and new bytes cover the same range; anything else is a caller bug."""
    with pytest.raises(ValueError):
        encode_entry(DEVICE, _write(0, b"ab", b"abc"), 0.0)


_BLOB = encode_entry(DEVICE, _write(4096, bytes(range(256)) * 4, b"\xa5" * 1024, "boot"), 1.5)


@settings(max_examples=400, deadline=None)
@given(position=st.integers(0, len(_BLOB) - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_is_reported_with_the_file_name(position: int, bit: int) -> None:
    """One bad bit anywhere — magic, length, header, data, CRC — is a JournalCorruptError that
    names the file, never wrong bytes handed to a device."""
    damaged = bytearray(_BLOB)
    damaged[position] ^= 1 << bit
    path = Path("/j/txn/00000001/entry-000000.bin")
    with pytest.raises(JournalCorruptError, match=re.escape(str(path))):
        decode_entry(bytes(damaged), path)


@pytest.mark.parametrize("cut", [0, 7, 12, 40, len(_BLOB) - 1])
def test_truncated_entry_is_corrupt(cut: int) -> None:
    """A torn entry file (crash while it was written) never decodes."""
    with pytest.raises(JournalCorruptError):
        decode_entry(_BLOB[:cut], Path("e.bin"))


def test_corrupt_entry_on_disk_is_named_by_load(journal: Journal) -> None:
    """``Journal.load`` checks the whole file: a flipped data byte is caught and the file named,
    although ``unfinished`` (which reads only headers) still lists the entry."""
    (entry,) = journal.begin([_write(0, b"\x00" * 512, b"\x01" * 512, "boot")])
    blob = bytearray(entry.path.read_bytes())
    blob[-100] ^= 0xFF  # in the new bytes
    entry.path.write_bytes(bytes(blob))
    (listed,) = journal.unfinished()
    with pytest.raises(JournalCorruptError, match=re.escape(str(entry.path))):
        journal.load(listed)


def test_entry_of_another_device_is_refused(tmp_path: Path) -> None:
    """An entry file copied into another device's journal is never applied to this device."""
    mine = Journal.open(tmp_path, "device-a", "a")
    theirs = Journal.open(tmp_path, "device-b", "b")
    try:
        (entry,) = theirs.begin([_write(0, b"o" * 512, b"n" * 512)])
        target = mine.folder / "txn" / entry.path.parent.name
        target.mkdir()
        for name in ("entry-000000.bin", "COMMITTED"):
            (target / name).write_bytes((entry.path.parent / name).read_bytes())
        (copied,) = mine.unfinished()
        with pytest.raises(JournalCorruptError, match="device-b"):
            mine.load(copied)
    finally:
        mine.close()
        theirs.close()


# -- transactions --------------------------------------------------------------------------------


def test_begin_lists_entries_in_order_with_their_headers(journal: Journal) -> None:
    """Transactions and their entries come back in the order they were journalled, with the
    header as written: that order is what replay and rollback rely on."""
    first = journal.begin(
        [
            _write(0x10000, b"a" * 1024, b"b" * 1024, "boot"),
            _write(0x20000, b"c" * 2048, b"d" * 2048, "boot", "lk"),
        ]
    )
    second = journal.begin([_write(0x10000, b"b" * 1024, b"e" * 1024, "boot")])
    listed = journal.unfinished()
    assert listed == first + second
    assert [(e.txn, e.index) for e in listed] == [(1, 0), (1, 1), (2, 0)]
    assert [e.offset_bytes for e in listed] == [0x10000, 0x20000, 0x10000]
    assert [e.size_bytes for e in listed] == [1024, 2048, 1024]
    assert [e.partitions for e in listed] == [("boot",), ("boot", "lk"), ("boot",)]
    assert listed[1].old_crc32 == zlib.crc32(b"c" * 2048)
    assert listed[1].new_crc32 == zlib.crc32(b"d" * 2048)
    assert not any(e.failed for e in listed)
    assert journal.load(listed[2]) == (b"b" * 1024, b"e" * 1024)
    assert listed[1].describe() == "boot,lk: user+0x20000 (2048 bytes)"


def test_transaction_without_marker_is_discarded_at_the_next_open(tmp_path: Path) -> None:
    """A crash between the entries and COMMITTED: the device was never written for that
    transaction, so it is never listed, and the next locked open deletes it."""
    root = tmp_path / "j"
    journal = Journal.open(root, DEVICE, "phone")
    (kept,) = journal.begin([_write(0, b"o" * 512, b"n" * 512, "boot")])
    (torn,) = journal.begin([_write(512, b"O" * 512, b"N" * 512, "lk")])
    (torn.path.parent / "COMMITTED").unlink()
    assert journal.unfinished() == [kept]
    assert Journal.peek(root, DEVICE) == [kept]
    journal.close()
    assert torn.path.parent.exists()  # nothing has cleaned up yet (peek never does)

    reopened = Journal.open(root, DEVICE, "phone")
    try:
        assert not torn.path.parent.exists()
        assert kept.path.exists()
        assert reopened.unfinished() == [kept]
        # New transactions are numbered after every live one.
        (later,) = reopened.begin([_write(0, b"n" * 512, b"m" * 512)])
        assert later.txn > kept.txn
    finally:
        reopened.close()


def test_retire_removes_entries_then_the_transaction(journal: Journal) -> None:
    """A verified chunk is forgotten; the transaction goes with its last entry."""
    a, b = journal.begin([_write(0, b"o" * 512, b"n" * 512), _write(512, b"O" * 512, b"N" * 512)])
    journal.mark_failed(a, "verify failed")
    journal.retire(a)
    assert not a.path.exists()
    assert not a.path.with_suffix(".failed").exists()
    assert journal.unfinished() == [b]
    journal.retire(b)
    assert journal.unfinished() == []
    assert not b.path.parent.exists()
    assert list((journal.folder / "txn").iterdir()) == []


def test_mark_failed_is_listed_with_its_reason(journal: Journal) -> None:
    """A chunk the device did not verify stays, flagged, with the reason for ``journal show``."""
    a, _ = journal.begin([_write(0, b"o" * 512, b"n" * 512), _write(512, b"O" * 512, b"N" * 512)])
    journal.mark_failed(a, "read-back differs at byte 0x100")
    listed = journal.unfinished()
    assert [e.failed for e in listed] == [True, False]
    assert journal.failure_reason(listed[0]) == "read-back differs at byte 0x100"
    assert journal.failure_reason(listed[1]) is None


# -- locking and peeking -------------------------------------------------------------------------


def test_second_locked_open_is_busy_and_names_the_pid(tmp_path: Path) -> None:
    """Two writers of one journal (a second rw mount, a replay while mounted) must not mix."""
    root = tmp_path / "j"
    first = Journal.open(root, DEVICE, "phone")
    try:
        with pytest.raises(BusyError, match=rf"pid {os.getpid()}\b"):
            Journal.open(root, DEVICE, "phone")
        # Another device's journal is independent; an unlocked open is allowed.
        Journal.open(root, "another", "other phone").close()
        Journal.open(root, DEVICE, "phone", lock=False).close()
    finally:
        first.close()
    Journal.open(root, DEVICE, "phone").close()  # released


def test_peek_creates_nothing_and_ignores_the_lock(tmp_path: Path) -> None:
    """A read-only mount peeks: no folders made, no lock taken, even while someone holds it."""
    root = tmp_path / "nowhere"
    assert Journal.peek(root, DEVICE) == []
    assert not root.exists()

    holder = Journal.open(root, DEVICE, "phone")
    try:
        entries = holder.begin([_write(0, b"o" * 512, b"n" * 512, "boot")])
        assert Journal.peek(root, DEVICE) == entries
    finally:
        holder.close()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_device_folder_is_one_safe_name(device_id: str) -> None:
    """Any id (they hold ``/``, ``:``, ``..``) becomes one plain folder name, never a path."""
    name = device_folder(device_id)
    assert re.fullmatch(r"[A-Za-z0-9._-]*-[0-9a-f]{16}", name)
    assert name not in (".", "..")
    assert len(name) <= 40 + 1 + 16


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_device_folders_differ_for_different_ids(a: str, b: str) -> None:
    """Two devices never share a journal, even when their readable parts look the same."""
    if a != b:
        assert device_folder(a) != device_folder(b)


def test_device_folder_of_awkward_ids(tmp_path: Path) -> None:
    """Ids that would escape the journal root, ids that differ only in punctuation, and an image
    path that is not valid UTF-8 (Python holds it with surrogate escapes) all get their own
    folder right under the root."""
    undecodable = os.fsdecode(b"image:/tmp/\xff\xfe.img")
    ids = ["../../etc", "..", ".", "", "/", "a/b", "a:b", "a_b", "da:/dev/ttyACM0", undecodable]
    names = {device_folder(i) for i in ids}
    assert len(names) == len(ids)
    for device_id in ids:
        journal = Journal.open(tmp_path, device_id, "x")
        try:
            assert journal.folder.parent == tmp_path
            info = json.loads((journal.folder / "device.json").read_text())
            assert info["device_id"] == device_id
        finally:
            journal.close()
    assert len(list(tmp_path.iterdir())) == len(ids)


# -- backup sessions -----------------------------------------------------------------------------

PARTS = {"boot": ("user", 0, 8192), "lk": ("user", 8192, 4096)}


def test_backup_keeps_the_first_copy_and_survives_reload(journal: Journal) -> None:
    """The first save of a chunk is its content before the session: later saves change nothing,
    on disk either (a fresh object reads the same)."""
    session = journal.new_session(4096, PARTS)
    session.save("user", 3, b"A" * 4096)
    session.save("user", 3, b"B" * 4096)
    session.save("user", 1, b"C" * 1000)  # a short last chunk
    session.save("boot1", 0, b"D" * 4096)
    again = BackupSession(session.folder)
    assert again.load("user", 3) == b"A" * 4096
    assert again.load("user", 1) == b"C" * 1000
    assert again.chunks("user") == {
        3: (4096, zlib.crc32(b"A" * 4096)),
        1: (1000, zlib.crc32(b"C" * 1000)),
    }
    assert again.regions() == ["boot1", "user"]
    assert again.size_bytes() == 4096 + 1000 + 4096
    assert again.partitions == PARTS
    assert again.chunk_bytes == 4096
    assert again.state == "active"


def test_backup_index_first_line_wins(journal: Journal) -> None:
    """Should an index ever hold a chunk twice, the earlier line (the original) wins."""
    session = journal.new_session(4096, PARTS)
    session.save("user", 2, b"A" * 4096)
    with open(session.folder / "user.chunks", "a") as index:
        index.write(f"2 4096 {zlib.crc32(b'B' * 4096):08x}\n")
    assert BackupSession(session.folder).chunks("user")[2] == (4096, zlib.crc32(b"A" * 4096))


def test_backup_damaged_data_is_refused(journal: Journal) -> None:
    """A backup chunk whose bytes no longer match its index CRC is never restored."""
    session = journal.new_session(4096, PARTS)
    session.save("user", 1, b"A" * 4096)
    session.save("user", 2, b"B" * 4096)
    with open(session.folder / "user.data", "r+b") as data:
        data.seek(4096 + 17)
        data.write(b"x")
    fresh = BackupSession(session.folder)
    with pytest.raises(JournalCorruptError, match="chunk 1 of user"):
        fresh.load("user", 1)
    assert fresh.load("user", 2) == b"B" * 4096


def test_backup_torn_last_index_line_is_ignored(journal: Journal) -> None:
    """A crash while appending an index line loses that line only (its data was never
    promised), the lines before it still count."""
    session = journal.new_session(4096, PARTS)
    session.save("user", 0, b"A" * 4096)
    crc = f"{zlib.crc32(b'B' * 4096):08x}"
    with open(session.folder / "user.chunks", "a") as index:
        index.write(f"5 4096 {crc[:5]}")  # torn: no newline, CRC cut short
    fresh = BackupSession(session.folder)
    assert fresh.chunks("user") == {0: (4096, zlib.crc32(b"A" * 4096))}
    assert fresh.load("user", 0) == b"A" * 4096


def test_mark_and_note_written_persist(journal: Journal) -> None:
    """State and the written partitions live in session.json; an unchanged list is not
    rewritten (no fsync per commit for nothing)."""
    session = journal.new_session(4096, PARTS)
    assert session.written == []
    session.note_written(["lk", "boot"])
    session.note_written(("boot",))
    assert BackupSession(session.folder).written == ["boot", "lk"]
    inode = (session.folder / "session.json").stat().st_ino
    session.note_written(["lk"])
    assert (session.folder / "session.json").stat().st_ino == inode
    session.mark("rolled-back")
    fresh = BackupSession(session.folder)
    assert fresh.state == "rolled-back"
    assert fresh.written == ["boot", "lk"]


def test_unreadable_session_json_is_corrupt(journal: Journal) -> None:
    session = journal.new_session(4096, PARTS)
    (session.folder / "session.json").write_text("{not json")
    with pytest.raises(JournalCorruptError, match=r"session\.json"):
        BackupSession(session.folder)


def _session_named(journal: Journal, name: str, started_s: float) -> BackupSession:
    """A session with a chosen id and start time (new_session names them by second and pid)."""
    session = journal.new_session(4096, PARTS)
    session.meta["started_s"] = started_s
    (session.folder / "session.json").write_text(json.dumps(session.meta))
    target = session.folder.with_name(name)
    session.folder.rename(target)
    return BackupSession(target)


def test_sessions_oldest_first(journal: Journal) -> None:
    """Oldest first, by start time: within one second the names alone would sort pid 1000
    before pid 999. Folders that are not sessions are skipped."""
    _session_named(journal, "20250102T030405-1000", 1002.0)
    _session_named(journal, "20250102T030405-999", 1001.0)
    _session_named(journal, "20250101T000000-5", 1000.0)
    (journal.folder / "backup" / "notes").mkdir()
    (journal.folder / "backup" / "20250103T000000-7").mkdir()  # no session.json
    ids = [s.id for s in journal.sessions()]
    assert ids == ["20250101T000000-5", "20250102T030405-999", "20250102T030405-1000"]
