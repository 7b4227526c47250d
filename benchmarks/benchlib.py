"""Helpers shared by the benchmarks: real mounts, loop devices, timed reads, the results table.

Why subprocesses and real mounts (as ``tests/mounting.py`` does): the numbers must be what a user
gets from ``mtkfs mount`` — kernel FUSE, page cache, readahead and all — and a FUSE daemon must
never serve requests from the process that reads its files. Every helper that mounts or attaches
something undoes it in a ``finally``, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
#: Throughput is in decimal MB/s, the unit link speeds are quoted in.
MB = 1e6
#: Read size of the sequential benchmarks (dd bs=1M).
BLOCK_BYTES = MiB


@dataclass
class Result:
    """One line of the table."""

    bench: str
    name: str
    value: float | None
    unit: str
    note: str = ""


@dataclass
class Report:
    """All results of a run, printed as one table and written as JSON."""

    results: list[Result] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    def add(self, bench: str, name: str, value: float | None, unit: str, note: str = "") -> None:
        self.results.append(Result(bench, name, value, unit, note))
        shown = "—" if value is None else f"{value:.4g} {unit}"
        print(f"  [{bench}] {name}: {shown} {note}".rstrip(), flush=True)

    def table(self) -> str:
        rows = [("benchmark", "measurement", "value", "unit", "note")]
        for r in self.results:
            value = "—" if r.value is None else _number(r.value)
            rows.append((r.bench, r.name, value, r.unit, r.note))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = []
        for i, row in enumerate(rows):
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [row[2].rjust(widths[2]), row[3].ljust(widths[3]), row[4]]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in [*widths, 4]))
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        doc = {"context": self.context, "results": [asdict(r) for r in self.results]}
        path.write_text(json.dumps(doc, indent=2) + "\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


# -- mtkfs, mounts, loop devices ---------------------------------------------------------------


def mtkfs(*args: str | Path, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mtkfs ARGS`` (this interpreter: the venv's mtkfs) and capture output."""
    return subprocess.run(
        [sys.executable, "-m", "mtkfs", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def mount_supports(flag: str) -> bool:
    """Whether ``mtkfs mount`` knows ``flag`` (``--link-model`` is newer than the benchmarks)."""
    return flag in mtkfs("mount", "--help").stdout


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


def _force_unmount(path: Path) -> None:
    """Last resort: ``umount -f`` aborts a hung FUSE connection, ``-l`` detaches what is left."""
    for _ in range(3):
        if not is_mounted(path):
            return
        subprocess.run(["umount", "-f", str(path)], capture_output=True, check=False)
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)
        time.sleep(0.1)


@contextlib.contextmanager
def mounted(source: Path, mountpoint: Path, *args: str, log: Path) -> Iterator[Path]:
    """``mtkfs mount SOURCE MOUNTPOINT ARGS`` (background, as users run it) for a with-block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        result = mtkfs("mount", source, mountpoint, "--log", log, *args, timeout_s=120)
    except subprocess.TimeoutExpired:
        _force_unmount(mountpoint)
        raise
    if result.returncode != 0:
        _force_unmount(mountpoint)
        raise RuntimeError(f"mtkfs mount {source} failed: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        done = mtkfs("umount", mountpoint)
        _force_unmount(mountpoint)
        if done.returncode != 0:
            print(f"warning: mtkfs umount {mountpoint}: {done.stderr.strip()}", file=sys.stderr)


@contextlib.contextmanager
def loop_device(image: Path, offset_bytes: int, size_bytes: int) -> Iterator[Path]:
    """A fresh read-only loop device over ``[offset, offset + size)`` of ``image``."""
    args = ["losetup", "-f", "--show", "-r", "-o", str(offset_bytes)]
    args += ["--sizelimit", str(size_bytes), str(image)]
    device = Path(subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], capture_output=True, check=False)


@contextlib.contextmanager
def loop_mounted(image_file: Path, target: Path) -> Iterator[Path]:
    """``mount -o loop,ro FILE TARGET`` (the kernel detaches the loop device on umount)."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,ro", str(image_file), str(target)], check=True)
    try:
        yield target
    finally:
        if subprocess.run(["umount", str(target)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=False)


def human_bytes(size_bytes: int) -> str:
    """``256 MiB``, ``64 KiB`` (binary, as partition sizes are)."""
    if size_bytes >= MiB:
        return f"{size_bytes / MiB:g} MiB"
    return f"{size_bytes / KiB:g} KiB"


def mount_stats(mountpoint: Path) -> dict[str, Any]:
    """The mount's counters: ``.mtkfs/stats.json`` (newer mounts) or ``status.json``."""
    for name in ("stats.json", "status.json"):
        path = mountpoint / ".mtkfs" / name
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    return {}


def counter(doc: Any, key: str) -> float | None:
    """The first value called ``key`` anywhere in a stats document (they nest by layer)."""
    if isinstance(doc, dict):
        if isinstance(doc.get(key), int | float):
            return float(doc[key])
        for value in doc.values():
            found = counter(value, key)
            if found is not None:
                return found
    return None


def delta(before: dict[str, Any], after: dict[str, Any], key: str) -> float | None:
    a, b = counter(before, key), counter(after, key)
    return None if a is None or b is None else b - a


# -- reading -------------------------------------------------------------------------------------


def timed_read(path: Path, offset_bytes: int = 0, size_bytes: int | None = None) -> float:
    """Read ``size_bytes`` (default: to the end) from ``offset_bytes`` in 1 MiB ``preadv`` calls
    into one reused buffer; returns MB/s. Python's overhead per MiB is a memcpy: negligible."""
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        end = os.lseek(fd, 0, os.SEEK_END) if size_bytes is None else offset_bytes + size_bytes
        done = 0
        started = time.perf_counter()
        while offset_bytes + done < end:
            want = min(BLOCK_BYTES, end - offset_bytes - done)
            got = os.preadv(fd, [view[:want]], offset_bytes + done)
            if got == 0:
                raise RuntimeError(f"{path} ended early at {offset_bytes + done}")
            done += got
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    return done / elapsed / MB


def drop_caches() -> bool:
    """Empty the kernel's page cache (machine-wide); False if this system does not allow it."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every value reported was measured)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]
