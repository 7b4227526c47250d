"""SIGKILL of a read-write mount's daemon at random points of a large commit.

Acceptance criterion (Writes): after a SIGKILL anywhere in a commit and a restart, every chunk is
wholly old or wholly new, ``mtkfs journal show`` lists exactly the unfinished ones, and ``journal
replay`` or ``journal rollback`` brings the image to the new or the old content byte for byte.

One test, many crashes. Each iteration mounts ``-o rw`` (one journal folder for the whole run, as
a user has), a writer process writes a random 8-16 MiB payload at a random unaligned offset of
``metadata.img`` and fsyncs (the commit runs inside that fsync, each device write slowed with
``--inject-faults write-delay``), and the daemon is SIGKILLed after a random delay. The delays
are drawn within an *aimed* phase, from timings measured on a commit that is not killed and
refined by every iteration: before the transaction is committed in the journal, while its chunks
are written, after fsync returned. The phase really hit is read from the outcome, and all three
must be seen (extra iterations aim at a missing one).

After each kill the image is classified chunk by chunk against an exact model, checked against
``journal show --json``, recovered by replay, rollback, ``rollback --pending-only`` or replay
then a rollback of the whole mount (in turn, per phase), and compared with the model again after
every command: the whole partition and a chunk either side.
The model also follows the backup sessions, because ``rollback`` restores the newest active
session of the journal, which after a kill before this mount's first commit is an older mount's.
The next iteration's ``mount -o rw`` (same journal) is the check that the recovery left nothing
unfinished.

Why ``metadata``: 33 MiB, so the whole partition is compared every time, and it starts 64 KiB
after a 1 MiB boundary, so its first chunk is shared with ``tee2`` (whose bytes must survive).

Reproduce a failure with ``MTKFS_CRASH_SEED=<the printed seed>``; ``MTKFS_CRASH_ITERATIONS``
changes the number of kills (default 21).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import fuse_available
from mounting import force_unmount, foreground_daemon, is_mounted, mtkfs

from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.slow,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(600),
]

MiB = 1 << 20
#: The image transport's chunk: the unit a commit journals, writes and verifies.
CHUNK = MiB
PARTITION = "metadata"
ITERATIONS = int(os.environ.get("MTKFS_CRASH_ITERATIONS", "21"))
#: At most this many more kills, each aimed at the phase still short of REQUIRED.
EXTRA_ITERATIONS = 8
#: Before each device write command (a run of up to 8 adjacent chunks): widens the commit so
#: that random kills land inside it often enough.
WRITE_DELAY_S = 0.1

BEFORE, MID, AFTER = "before-commit", "mid-commit", "after-commit"
#: Kills that must land in each phase (mid-commit: each of its recovery actions once).
REQUIRED = {BEFORE: 1, MID: 4, AFTER: 1}
#: Recovery actions, taken in turn per phase observed. "replay, rollback": the user finishes
#: the writes, then changes their mind and undoes the whole mount.
ACTIONS = {
    BEFORE: ("replay", "rollback"),
    MID: ("rollback", "replay", "pending-only", "replay, rollback"),
    AFTER: ("rollback", "replay"),
}
#: Phases aimed at, a shuffled round at a time (mid-commit, the interesting one, twice).
ROUND = (BEFORE, MID, MID, AFTER)

#: The writing application. It reports times on CLOCK_MONOTONIC, which every process shares.
WRITER = """
import os, sys, time
path, offset, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(payload, "rb") as stream:
    data = memoryview(stream.read())
fd = os.open(path, os.O_WRONLY)
print("go", time.monotonic(), flush=True)
done = 0
while done < len(data):
    done += os.pwrite(fd, data[done : done + (1 << 20)], offset + done)
print("written", time.monotonic(), flush=True)
os.fsync(fd)
print("synced", time.monotonic(), flush=True)
os.close(fd)
"""


def read_range(path: Path, offset_bytes: int, size_bytes: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        parts = []
        done = 0
        while done < size_bytes:
            block = os.pread(f.fileno(), size_bytes - done, offset_bytes + done)
            assert block, f"{path} ended early at {offset_bytes + done}"
            parts.append(block)
            done += len(block)
    return b"".join(parts)


def summary(report: dict[str, Any]) -> list[tuple[int, int, int, str]]:
    """The unfinished entries of a `journal show` report: (txn, index, chunk, device_holds)."""
    return [
        (e["txn"], e["index"], e["offset"] // CHUNK, e["device_holds"])
        for e in report["unfinished"]
    ]


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Window:
    """The chunks of the user region that hold the partition, and one more on either side."""

    image: Path
    part_start: int
    part_size: int
    first: int  # chunk index
    end: int  # chunk index, exclusive

    @classmethod
    def around(cls, layout: Layout, name: str) -> Window:
        part = layout.by_name(name)
        first = part.offset_bytes // CHUNK - 1
        end = -(-(part.offset_bytes + part.size_bytes) // CHUNK) + 1
        return cls(layout.regions[part.region], part.offset_bytes, part.size_bytes, first, end)

    def read(self) -> bytes:
        return read_range(self.image, self.first * CHUNK, (self.end - self.first) * CHUNK)

    def piece(self, index: int) -> slice:
        """Chunk ``index`` of the region inside a window's bytes."""
        return slice((index - self.first) * CHUNK, (index - self.first + 1) * CHUNK)

    def digests(self, data: bytes) -> dict[int, bytes]:
        return {i: digest(data[self.piece(i)]) for i in range(self.first, self.end)}


@dataclass(frozen=True)
class Write:
    """One iteration's write: the window before it and as a finished commit leaves it."""

    offset: int  # into the region
    payload: bytes
    before: bytes
    after: bytes
    chunks: tuple[int, ...]


@dataclass
class Outcome:
    """What one kill left behind."""

    phase: str
    listed: dict[int, dict[str, Any]]  # chunk index → its `journal show` entry
    states: dict[int, str]  # chunk index → old | new | neither


@dataclass
class Timing:
    """How long a commit's phases take per written chunk, learned from every iteration.

    ``journal_s``: from the writer's first write until the transaction is committed in the
    journal (the writes, the backup of the originals, the journal entries); ``commit_s``: from
    there until fsync returns (each chunk written, verified, retired). Learned rather than
    fixed: the machine may be busy with other work, and then every phase stretches.
    """

    journal_s: float = 0.0
    commit_s: float = 0.0

    def estimate(self, chunks: int) -> tuple[float, float]:
        """Seconds after the first write: (committed in the journal, fsync returned)."""
        committed = self.journal_s * chunks
        return committed, committed + self.commit_s * chunks

    def learn(
        self, chunks: int, phase: str, committed: float | None, synced: float | None, killed: float
    ) -> None:
        """Times in seconds after the first write; ``committed`` is None if not seen.

        A measurement moves an estimate halfway to it; a kill that came first only says the
        phase lasts at least that long.
        """

        def toward(old: float, new: float) -> float:
            return new if old == 0 else (old + new) / 2

        if committed is not None:
            self.journal_s = toward(self.journal_s, committed / chunks)
            if synced is not None:
                self.commit_s = toward(self.commit_s, (synced - committed) / chunks)
            elif phase == MID:
                self.commit_s = max(self.commit_s, (killed - committed) / chunks)
        elif phase == BEFORE:
            self.journal_s = max(self.journal_s, killed / chunks)


@contextlib.contextmanager
def watch_commits(journal: Path) -> Iterator[list[float]]:
    """Yields a list that gets the time a new transaction is committed in ``journal`` (a thread
    polls every 2 ms while the with-block runs)."""
    seen: list[float] = []
    stop = threading.Event()
    pattern = "*/txn/*/COMMITTED"
    old = set(journal.glob(pattern))

    def watch() -> None:
        while not stop.is_set() and not seen:
            if set(journal.glob(pattern)) - old:
                seen.append(time.monotonic())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()


@dataclass
class Crashes:
    """The run: the image, its journal, the model of both, and what the kills hit."""

    layout: Layout
    tmp: Path
    rng: random.Random
    window: Window
    journal: Path
    mnt: Path
    #: The model: digest of every window chunk as the image must hold it between iterations.
    expected: dict[int, bytes] = field(default_factory=dict)
    #: Active backup sessions, oldest first: id → original digests of the chunks it may restore.
    sessions: list[tuple[str, dict[int, bytes]]] = field(default_factory=list)
    known_sessions: set[str] = field(default_factory=set)
    timing: Timing = field(default_factory=Timing)
    seen: dict[str, int] = field(default_factory=lambda: {BEFORE: 0, MID: 0, AFTER: 0})
    done: list[tuple[str, str]] = field(default_factory=list)  # (phase, action)
    torn: int = 0
    #: Chunks the test made look interrupted (see interrupt_write), by what they hold.
    interrupted: dict[str, int] = field(default_factory=lambda: {"new": 0, "neither": 0})
    refused: int = 0
    _round: list[str] = field(default_factory=list)

    # -- one write ---------------------------------------------------------------------------

    def new_write(self) -> Write:
        before = self.window.read()
        assert self.window.digests(before) == self.expected, "the image changed between runs"
        while True:
            length = self.rng.randrange(8 * MiB, 16 * MiB + 1)
            offset = self.window.part_start + self.rng.randrange(self.window.part_size - length)
            head = CHUNK - offset % CHUNK
            tail = (offset + length) % CHUNK or CHUNK
            # Partial first/last chunks of at least 512 bytes: random bytes then surely differ.
            if min(head, tail) >= 512:
                break
        payload = self.rng.randbytes(length)
        after = bytearray(before)
        start = offset - self.window.first * CHUNK
        after[start : start + length] = payload
        chunks = tuple(range(offset // CHUNK, (offset + length - 1) // CHUNK + 1))
        write = Write(offset, payload, before, bytes(after), chunks)
        for index in chunks:
            piece = self.window.piece(index)
            assert write.before[piece] != write.after[piece]
        return write

    def rw_args(self) -> tuple[str, ...]:
        return (
            *("-o", "rw", "--commit-interval", "0", "--max-dirty", "64M"),
            *("--inject-faults", f"write-delay={WRITE_DELAY_S}"),
            *("--journal-dir", str(self.journal)),
        )

    def start_writer(self, write: Write) -> tuple[subprocess.Popen[str], float]:
        payload = self.tmp / "payload"
        payload.write_bytes(write.payload)
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(self.mnt / f"{PARTITION}.img"),
                str(write.offset - self.window.part_start),
                str(payload),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        line = writer.stdout.readline().split()
        if not line or line[0] != "go":
            writer.kill()
            _, err = writer.communicate(timeout=30)
            raise AssertionError(f"the writer did not start: {err}")
        return writer, float(line[1])

    @staticmethod
    def writer_times(writer: subprocess.Popen[str]) -> dict[str, float]:
        out, _ = writer.communicate(timeout=30)
        return {words[0]: float(words[1]) for words in map(str.split, out.splitlines()) if words}

    # -- the journal and the image -------------------------------------------------------------

    def show(self) -> dict[str, Any]:
        result = mtkfs(
            "journal", "show", self.layout.folder, "--json", "--journal-dir", self.journal
        )
        assert result.returncode in (0, 7), result.stderr
        report = json.loads(result.stdout)
        assert result.returncode == (7 if report["unfinished"] else 0), result.stderr
        return report  # type: ignore[no-any-return]

    def track_sessions(self, report: dict[str, Any], write: Write) -> str | None:
        """Follow the backup sessions; returns the id of the one this mount started, if any."""
        listed = {b["id"]: b for b in report["backups"]}
        new: list[str] = [sid for sid in listed if sid not in self.known_sessions]
        assert len(new) <= 1, f"one mount, one backup session: {new}"
        self.known_sessions.update(new)
        active = [sid for sid, b in listed.items() if b["state"] == "active"]
        assert active == [sid for sid, _ in self.sessions] + new, (active, self.sessions)
        if not new:
            return None
        originals = {i: digest(write.before[self.window.piece(i)]) for i in write.chunks}
        self.sessions.append((new[0], originals))
        return new[0]

    def classify(self, write: Write, now: bytes) -> dict[int, str]:
        """Each written chunk: old, new or neither; and nothing else in the window changed."""
        states = {}
        for index in range(self.window.first, self.window.end):
            piece = self.window.piece(index)
            if index not in write.chunks:
                assert now[piece] == write.before[piece], f"chunk {index} was never written"
            elif now[piece] == write.before[piece]:
                states[index] = "old"
            elif now[piece] == write.after[piece]:
                states[index] = "new"
            else:
                states[index] = "neither"
        return states

    def check_image(self, what: str) -> None:
        actual = self.window.digests(self.window.read())
        wrong = [i for i in actual if actual[i] != self.expected[i]]
        assert not wrong, (
            f"{what}: chunks {wrong} (user+{wrong[0] * CHUNK:#x}…) are not as expected"
        )

    # -- the run -------------------------------------------------------------------------------

    def calibrate(self) -> None:
        """One commit that is not killed: how long its phases take; and the baseline works."""
        write = self.new_write()
        with foreground_daemon(self.layout.folder, self.mnt, *self.rw_args()) as daemon:
            with watch_commits(self.journal) as committed:
                writer, go = self.start_writer(write)
                times = self.writer_times(writer)
            assert writer.returncode == 0 and "synced" in times, times
            result = mtkfs("umount", self.mnt)
            assert result.returncode == 0, result.stderr
            assert daemon.wait(timeout=30) == 0
        assert committed, "the watcher never saw a committed transaction"
        chunks = len(write.chunks)
        synced = times["synced"] - go
        self.timing.learn(chunks, AFTER, committed[0] - go, synced, synced)
        print(
            f"calibration: {chunks} chunks, committed in the journal after "
            f"{committed[0] - go:.3f}s, fsync returned after {synced:.3f}s"
        )
        report = self.show()
        assert not report["unfinished"]
        self.track_sessions(report, write)
        self.expected = self.window.digests(write.after)
        self.check_image("calibration commit")

    def kill_delay(self, aim: str, chunks: int) -> float:
        """Seconds after the first write: at random within the aimed phase, as estimated."""
        committed, synced = self.timing.estimate(chunks)
        if aim == BEFORE:
            return self.rng.uniform(0, 0.9 * committed)
        if aim == MID:
            return self.rng.uniform(committed, synced)
        return self.rng.uniform(1.05 * synced, 1.25 * synced)

    def crash(self, number: int, aim: str) -> None:
        write = self.new_write()
        delay = self.kill_delay(aim, len(write.chunks))
        with (
            foreground_daemon(self.layout.folder, self.mnt, *self.rw_args()) as daemon,
            watch_commits(self.journal) as committed,
        ):
            writer, go = self.start_writer(write)
            try:
                time.sleep(max(0.0, go + delay - time.monotonic()))
                daemon.kill()
                killed = time.monotonic() - go
                daemon.wait(timeout=30)
            finally:
                times = self.writer_times(writer)  # it fails once the daemon is gone
        force_unmount(self.mnt)
        assert not is_mounted(self.mnt)

        outcome = self.inspect(write, synced="synced" in times)
        self.timing.learn(
            len(write.chunks),
            outcome.phase,
            committed[0] - go if committed else None,
            times["synced"] - go if "synced" in times else None,
            killed,
        )
        holds = ",".join(outcome.listed[i]["device_holds"] for i in sorted(outcome.listed))
        if outcome.listed:
            self.check_mount_refused()
            holds += self.interrupt_write(write, outcome)
        action = ACTIONS[outcome.phase][self.seen[outcome.phase] % len(ACTIONS[outcome.phase])]
        self.seen[outcome.phase] += 1
        self.done.append((outcome.phase, action))
        self.recover(write, outcome, action)
        print(
            f"#{number:02d} aim {aim:<13} kill at {delay:.3f}s, {len(write.chunks):2d} chunks → "
            f"{outcome.phase:<13} unfinished [{holds}] → {action}"
        )

    def interrupt_write(self, write: Write, outcome: Outcome) -> str:
        """Make the first unfinished chunk look as if the kill had hit its write, and check that
        `journal show` says so: torn at a page boundary (a SIGKILL can stop a large pwrite
        there), or written but not yet verified and retired. A real torn write needs the kill
        inside the pwrite itself, which a random kill almost never hits."""
        index = min(outcome.listed)
        if outcome.states[index] != "old":
            return ""  # that chunk's write had begun: there is nothing to make up
        old, new = write.before[self.window.piece(index)], write.after[self.window.piece(index)]
        page = 4096
        pages = CHUNK // page
        changed = [
            p
            for p in range(pages)
            if old[p * page : (p + 1) * page] != new[p * page : (p + 1) * page]
        ]
        # Torn (every other time): the pages up to one that changes, but not the last that does.
        kept, state = pages, "new"
        if len(changed) > 1 and self.interrupted["neither"] <= self.interrupted["new"]:
            kept, state = self.rng.randrange(changed[0] + 1, changed[-1] + 1), "neither"
        with open(self.window.image, "r+b") as image:
            os.pwrite(image.fileno(), new[: kept * page], index * CHUNK)
        assert self.classify(write, self.window.read())[index] == state
        report = self.show()
        holds = {e["offset"] // CHUNK: e["device_holds"] for e in report["unfinished"]}
        assert set(holds) == set(outcome.listed), summary(report)
        outcome.states[index] = state
        assert holds == {i: outcome.states[i] for i in holds}, (holds, outcome.states)
        self.interrupted[state] += 1
        return f" then chunk {index} {state}"

    def inspect(self, write: Write, *, synced: bool) -> Outcome:
        """The acceptance criterion, right after the kill (and the restart of the tools)."""
        states = self.classify(write, self.window.read())
        report = self.show()
        listed: dict[int, dict[str, Any]] = {}
        for entry in report["unfinished"]:
            index, within = divmod(entry["offset"], CHUNK)
            assert within == 0 and entry["size"] == CHUNK and entry["region"] == "user", entry
            assert index in write.chunks and index not in listed, entry
            assert entry["partitions"] == [PARTITION], entry
            assert entry["state"] == "pending" and entry["reason"] is None, entry
            # device_holds as the tool computes it (CRCs, O_DIRECT) agrees with the image.
            assert entry["device_holds"] == states[index], (
                f"chunk {index}: `journal show` says the device holds {entry['device_holds']}, "
                f"the image holds {states[index]}; entries {summary(report)}, image {states}"
            )
            listed[index] = entry
        # Torn chunks (a SIGKILL can stop a pwrite at a page boundary) only under a live entry.
        torn = [i for i, state in states.items() if state == "neither"]
        assert set(torn) <= set(listed), f"chunks {torn} are neither old nor new"
        self.torn += len(torn)
        unlisted = {states[i] for i in write.chunks if i not in listed}
        if listed:
            phase = MID
            # Not listed = finished: written, verified, retired.
            assert unlisted == {"new"} or not unlisted, states
        else:
            assert len(unlisted) == 1, f"no unfinished entries, yet the chunks are mixed: {states}"
            phase = AFTER if unlisted == {"new"} else BEFORE
        if synced:
            assert phase == AFTER, "fsync returned, yet the data is not all on the image"
        session = self.track_sessions(report, write)
        if phase != BEFORE:
            # The originals are saved before the journal may let the device be written.
            assert session is not None, "the image was written without a backup session"
            saved = {b["id"]: b for b in report["backups"]}[session]
            assert saved["chunks"] == len(write.chunks) and saved["partitions"] == [PARTITION]
        return Outcome(phase, listed, states)

    def check_mount_refused(self) -> None:
        if self.refused >= 2:
            return  # twice is proof enough; each try costs a process start
        self.refused += 1
        try:
            result = mtkfs("mount", self.layout.folder, self.mnt, *self.rw_args(), timeout_s=60)
        finally:
            if is_mounted(self.mnt):
                mtkfs("umount", self.mnt)
                force_unmount(self.mnt)
        assert result.returncode == 7 and "unfinished" in result.stderr, result.stderr
        assert not is_mounted(self.mnt)

    def recover(self, write: Write, outcome: Outcome, action: str) -> None:
        """Run the action's journal commands; after each, the image is exactly as modelled."""
        listed = set(outcome.listed)
        now = self.window.digests(self.window.read())  # checked chunk by chunk by inspect()
        args = ("--journal-dir", str(self.journal))
        for step in action.split(", "):
            if step == "replay":
                result = mtkfs("journal", "replay", self.layout.folder, *args)
                assert result.returncode == 0, result.stderr
                assert f"replayed {len(listed)} unfinished" in result.stdout, result.stdout
                now.update({i: digest(write.after[self.window.piece(i)]) for i in listed})
            else:
                more = ("--pending-only",) if step == "pending-only" else ()
                result = mtkfs("journal", "rollback", self.layout.folder, *args, *more)
                assert result.returncode == 0, f"{step}: {result.stdout}{result.stderr}"
                assert f"rolled back {len(listed)} unfinished" in result.stdout, result.stdout
                now.update({i: digest(write.before[self.window.piece(i)]) for i in listed})
                if step == "rollback":
                    self.restored_session(result.stdout, now)
            listed = set()
            self.expected = now
            self.check_image(f"after {step}")

    def restored_session(self, stdout: str, now: dict[int, bytes]) -> None:
        """The newest active session was restored: this mount's, or (killed before its first
        commit) an older mount's. It puts back what was there when that mount started."""
        if not self.sessions:
            assert "no backup session left" in stdout, stdout
            return
        session, originals = self.sessions.pop()
        changed = sum(now[i] != d for i, d in originals.items())
        now.update(originals)
        match = re.search(r"restored backup session (\S+) .*: (\d+) chunk", stdout)
        assert match and match.groups() == (session, str(changed)), (session, changed, stdout)

    def aim(self, number: int) -> str:
        """Every ROUND, shuffled; past the planned iterations, the phase most short of REQUIRED."""
        if number < ITERATIONS:
            if number % len(ROUND) == 0:
                self._round = self.rng.sample(ROUND, len(ROUND))
            return self._round[number % len(ROUND)]
        return max(REQUIRED, key=lambda phase: REQUIRED[phase] - self.seen[phase])

    def short(self) -> bool:
        return any(self.seen[phase] < count for phase, count in REQUIRED.items())

    def final_mount(self) -> None:
        """After the last recovery a read-write mount works and shows the model's bytes."""
        part = self.window.part_start
        with foreground_daemon(self.layout.folder, self.mnt, *self.rw_args()) as daemon:
            shown = (self.mnt / f"{PARTITION}.img").read_bytes()
            result = mtkfs("umount", self.mnt)
            assert result.returncode == 0, result.stderr
            assert daemon.wait(timeout=30) == 0
        window = self.window.read()
        start = part - self.window.first * CHUNK
        assert shown == window[start : start + self.window.part_size]
        self.check_image("after the last mount")


def test_sigkill_during_commits_leaves_whole_chunks_and_recovers(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    seed = int(os.environ.get("MTKFS_CRASH_SEED") or secrets.randbits(32))
    print(f"MTKFS_CRASH_SEED={seed}")
    started = time.monotonic()
    run = Crashes(
        layout=p70a_rw,
        tmp=tmp_path,
        rng=random.Random(seed),
        window=Window.around(p70a_rw, PARTITION),
        journal=tmp_path / "journal",
        mnt=tmp_path / "mnt",
    )
    run.expected = run.window.digests(run.window.read())
    run.calibrate()
    number = 0
    while number < ITERATIONS or (run.short() and number < ITERATIONS + EXTRA_ITERATIONS):
        run.crash(number, run.aim(number))
        number += 1
    run.final_mount()
    print(
        f"{number} kills: {run.seen}; torn chunks seen: {run.torn}; "
        f"interrupted writes made up: {run.interrupted}; "
        f"{time.monotonic() - started:.1f}s"
    )
    assert not run.short(), f"the kills did not cover every phase: {run.seen}"
    assert {(MID, action) for action in ACTIONS[MID]} <= set(run.done)

    # Nothing outside the window changed: the other small partitions and system's ends.
    for part in p70a.partitions:
        if part.name == PARTITION:
            continue
        spans = [(0, part.size_bytes)]
        if part.size_bytes > 64 * MiB:
            spans = [(0, 8 * MiB), (part.size_bytes - 8 * MiB, 8 * MiB)]
        for offset, size in spans:
            original = read_range(p70a.regions[part.region], part.offset_bytes + offset, size)
            now = read_range(p70a_rw.regions[part.region], part.offset_bytes + offset, size)
            assert digest(now) == digest(original), f"{part.name}+{offset:#x} changed"
