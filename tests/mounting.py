"""Run ``mtkfs`` as users do — a subprocess — and always clean up the mounts it makes.

Why subprocesses: the mount must behave like the installed command (background start, ready
signalling, exit codes, messages), and a FUSE daemon must never serve requests from the same
process that reads its files (a blocked read would deadlock the test).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

MTKFS = [sys.executable, "-m", "mtkfs"]
ENV = {**os.environ, "MTKFS_STRICT": "1"}


def mtkfs(*args: str | Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``mtkfs ARGS`` and capture its output."""
    return subprocess.run(
        [*MTKFS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=ENV,
        check=False,
    )


def is_mounted(path: Path) -> bool:
    """True if ``path`` appears as a mount target in /proc/self/mountinfo (dead ones too)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


def force_unmount(path: Path) -> None:
    """Teardown of last resort: lazy-unmount whatever is left at ``path``."""
    for _ in range(3):
        if not is_mounted(path):
            return
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)
        time.sleep(0.1)


@contextlib.contextmanager
def mounted(source: Path | str, mountpoint: Path, *args: str) -> Iterator[Path]:
    """``mtkfs mount SOURCE MOUNTPOINT ARGS`` for the duration of a with-block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = mtkfs("mount", source, mountpoint, *args)
    assert result.returncode == 0, f"mount failed: {result.stderr}"
    assert is_mounted(mountpoint), "mtkfs mount returned 0 but nothing is mounted"
    try:
        yield mountpoint
    finally:
        done = mtkfs("umount", mountpoint)
        force_unmount(mountpoint)
        assert done.returncode == 0, f"umount failed: {done.stderr}"


@contextlib.contextmanager
def foreground_daemon(
    source: Path | str, mountpoint: Path, *args: str, flag: str = "--foreground"
) -> Iterator[subprocess.Popen[bytes]]:
    """``mtkfs mount --foreground SOURCE MOUNTPOINT ARGS`` as a child, yielded once it serves.

    For tests that signal, kill or unmount the daemon themselves. Whatever they do, the child
    is killed and the mountpoint cleaned afterwards.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    daemon = subprocess.Popen(
        [*MTKFS, "mount", flag, str(source), str(mountpoint), *args],
        env=ENV,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (is_mounted(mountpoint) and (mountpoint / ".mtkfs").exists()):
            if daemon.poll() is not None:
                error = daemon.stderr.read() if daemon.stderr else b""
                raise AssertionError(f"daemon exited: {error.decode(errors='replace')}")
            assert time.monotonic() < deadline, "mount did not come up"
            time.sleep(0.05)
        yield daemon
    finally:
        daemon.kill()
        daemon.wait(timeout=10)
        force_unmount(mountpoint)


@contextlib.contextmanager
def loop_mounted(image: Path, target: Path) -> Iterator[Path]:
    """``mount -o loop,ro IMAGE TARGET`` (a file system straight from a partition file of a
    mount) for a with-block; TARGET is made and unmounted again."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
