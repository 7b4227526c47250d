"""Pieces of dump/restore: resumable compressed sinks, the manifest as hostile input, progress
output in a pipe, the restore plan's rules."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio
import trio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.backup import inputs as inp
from mtkfs.backup import manifest as mf
from mtkfs.backup.restore import make_plan
from mtkfs.backup.sink import Sink, open_decompressed
from mtkfs.cache import ChunkCache
from mtkfs.errors import BackupError
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.progress import Progress
from mtkfs.session import run_job

DATA = bytes(range(256)) * 4096 + bytes(300_000) + b"tail" * 1000


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_a_sink_resumed_after_a_crash_gives_the_same_file_content(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "out"
    first = Sink(path, kind)
    first.write(DATA[:400_000])
    raw_at, file_at = first.checkpoint()
    first.write(DATA[400_000:700_000])  # written after the checkpoint, then the crash
    first.abandon()
    second = Sink(path, kind, resume_raw=raw_at, resume_file=file_at)
    assert second.raw_bytes == 400_000
    second.write(DATA[400_000:])
    second.close()
    with open_decompressed(path, kind) as stream:  # type: ignore[attr-defined]
        assert stream.read() == DATA
    whole = Sink(tmp_path / "ref", kind)
    whole.write(DATA)
    whole.close()
    assert second.raw_hash.hexdigest() == whole.raw_hash.hexdigest()
    assert second.file_hash.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    if kind == "gzip":  # two members: the real gunzip reads them as one stream
        out = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout
        assert out == DATA
    if kind == "zstd":
        out = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
        assert out == DATA


def test_a_damaged_kept_part_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out"
    sink = Sink(path, "gzip")
    sink.write(DATA[:500_000])
    raw_at, file_at = sink.checkpoint()
    sink.abandon()
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(BackupError, match="damaged"):
        Sink(path, "gzip", resume_raw=raw_at, resume_file=file_at)


def test_zero_runs_become_holes(tmp_path: Path) -> None:
    path = tmp_path / "out"
    sink = Sink(path, "none")
    sink.write(b"x" * 4096)
    sink.write(bytes(64 << 20))
    sink.close()
    assert path.stat().st_size == 4096 + (64 << 20)
    assert path.stat().st_blocks * 512 < (1 << 20)
    assert gzip.compress(b"") and path.read_bytes()[:4096] == b"x" * 4096


def _manifest() -> dict:  # type: ignore[type-arg]
    item = mf.Item("boot", "partition", "user", 0, 10, "boot.img", "done", "a" * 64, "b" * 64)
    man = mf.Manifest("src", "dev", "GPT", "none", {"user": 100}, [item])
    return json.loads(man.to_json())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("file", "../../etc/passwd"),
        ("file", "/etc/passwd"),
        ("file", "a/b/c.img"),
        ("kind", "shell"),
        ("offset", -1),
        ("size", "10"),
        ("sha256", "not-hex"),
        ("status", "weird"),
    ],
)
def test_hostile_manifests_are_refused(key: str, value: object) -> None:
    body = _manifest()
    body["items"][0][key] = value
    with pytest.raises(ValueError):
        mf.parse(body)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=12,
    )
)
def test_any_json_is_a_manifest_or_a_value_error(body: object) -> None:
    for candidate in (body, {**_manifest(), "items": body}):
        try:
            mf.parse(candidate)
        except (ValueError, TypeError, KeyError):
            pass


def test_progress_in_a_pipe_prints_plain_throttled_lines() -> None:
    stream = io.StringIO()
    now = [0.0]
    progress = Progress(300, stream=stream, clock=lambda: now[0], interval_s=10)
    assert progress.mode == "lines"
    progress.item("boot", 300)
    for _ in range(100):
        now[0] += 0.5
        progress.advance(3)
    progress.done("ok")
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "boot: 300 B" and lines[-1].startswith("boot: done, 300 B")
    assert 3 <= len(lines) <= 8  # start, a line per 10 s of 50 s, end


def _input(name: str, size: int, kind: str = "partition", offset: int = 0) -> inp.Input:
    return inp.Input(name, kind, "user", offset, size, Path(f"/x/{name}.img"), "none", size)


def test_plan_rules() -> None:
    regions = {"user": Region("user", 1 << 20)}
    target = PartitionMap(
        (Partition("boot", "user", 0, 4096), Partition("nvram", "user", 4096, 4096)), "GPT"
    )
    items = [_input("boot", 4096), _input("nvram", 4096, offset=4096),
             _input("user@0x0", 512, "gap")]  # fmt: skip
    plan = make_plan(items, target, regions)
    assert [s.write for s in plan.steps] == [True, False, False] and not plan.problems
    plan = make_plan(items, target, regions, names=["nvram"])
    assert plan.problems == ["nvram is protected; add --unlock nvram"]
    plan = make_plan(items, target, regions, unlock_all=True)
    assert all(s.write for s in plan.steps) and not plan.problems
    bigger = make_plan([_input("boot", 8192)], target, regions)
    assert "another partition layout" in bigger.problems[0]
    blank = make_plan([_input("boot", 8192)], PartitionMap((), "none"), regions)
    assert blank.steps[0].write and not blank.problems
    past = make_plan([_input("boot", 2 << 20)], PartitionMap((), "none"), regions)
    assert "past the target's user" in past.problems[0]


class _NoReads(ChunkCache):
    def __init__(self) -> None:  # only start() is used
        self._nursery = None


@pytest.mark.parametrize("raised", [BackupError("bad file"), KeyboardInterrupt()])
async def test_run_job_lets_errors_out_unwrapped(raised: BaseException) -> None:
    """Not as an ExceptionGroup: the CLI turns an MtkfsError into one line and Ctrl-C into
    exit 130 only when they arrive as themselves."""

    async def work() -> None:
        await trio.lowlevel.checkpoint()
        raise raised

    with pytest.raises(type(raised)):
        await run_job(_NoReads(), work)


async def test_run_job_reports_the_signal_that_stopped_it() -> None:
    saved = []

    async def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await trio.sleep(5)
        finally:
            saved.append("state saved while unwinding")

    assert await run_job(_NoReads(), work, stop_on_signals=True) == "SIGTERM"
    assert saved
