"""Benchmark 7 — a rooted phone through the adb server: mtkfs vs ``adb exec-out dd``.

The fake Android 12 phone of :mod:`mtkfs.testing.sim_adbd` (the P-70A's eMMC, commands run for
real in a chroot) is attached to Debian's real adb server with ``adb connect``. Side by side in
one run, through the same server and the same phone:

* ``dd`` of 256 MiB of ``cache.img`` from an ``adb:`` mount (mtkfs's ``dd`` commands over shell
  v2, chunk cache and readahead);
* the hand-made way seed 000 used: ``adb exec-out su -c 'dd if=/dev/block/mmcblk0 bs=1M
  skip=N count=256'`` of the same range, piped to /dev/null;
* the same ``dd`` through ``adb shell`` (the client picks ``shell,v2,raw`` when its output is
  not a terminal): the service mtkfs itself uses, so this is the like-for-like ratio.

Why two baselines: ``exec:`` is a PTY in raw mode on a real adbd and on this fake alike, and a
Linux PTY moves ~20 MB/s here, so exec-out is the slower way on this machine — a ratio against
it alone would flatter mtkfs. The link here is loopback TCP, not USB: the ratios say what
mtkfs's own overhead costs, not what a phone's USB link would allow.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from benchlib import MiB, Report, mounted

from mtkfs.testing.disk import build_p70a
from mtkfs.testing.sim_adbd import adb_server, running_device

B = "7 adb (fake phone)"
READ_BYTES = 256 * MiB


def run(report: Report, work: Path) -> None:
    layout = build_p70a(work / "p70a-adb")
    cache = layout.by_name("cache")
    with running_device("android12", layout) as phone, adb_server() as server:
        server.connect(phone.serial)
        os.environ["ADB_SERVER_SOCKET"] = f"tcp:127.0.0.1:{server.port}"
        try:
            with mounted(f"adb:{phone.serial}", work / "mnt-adb", log=work / "mtkfs.log") as mnt:
                started = time.perf_counter()
                subprocess.run(
                    ["dd", f"if={mnt / 'cache.img'}", "of=/dev/null", "bs=1M",
                     f"count={READ_BYTES // MiB}", "status=none"],
                    check=True,
                )  # fmt: skip
                mtkfs_s = time.perf_counter() - started
        finally:
            del os.environ["ADB_SERVER_SOCKET"]
        skip = cache.offset_bytes // MiB
        command = f"dd if=/dev/block/mmcblk0 bs=1048576 skip={skip} count=256 2>/dev/null"
        baselines = {}
        for service in ("exec-out", "shell"):
            started = time.perf_counter()
            done = server.adb("-s", phone.serial, service, f"su -c '{command}'", timeout_s=600)
            baselines[service] = time.perf_counter() - started
            if len(done.stdout) != READ_BYTES:
                report.add(B, f"adb {service} dd", None, "", f"got {len(done.stdout)} bytes")
                return
    report.add(B, "read 256 MiB: mtkfs", READ_BYTES / mtkfs_s / 1e6, "MB/s")
    for service, seconds in baselines.items():
        report.add(B, f"read 256 MiB: adb {service} dd", READ_BYTES / seconds / 1e6, "MB/s")
    report.add(
        B,
        "read 256 MiB: mtkfs / adb shell dd",
        baselines["shell"] / mtkfs_s,
        "×",
        "like for like: both shell v2 through the same server",
    )
    report.add(
        B,
        "read 256 MiB: mtkfs / exec-out dd",
        baselines["exec-out"] / mtkfs_s,
        "×",
        "exec: is a PTY (raw) on adbd; here the PTY limits exec-out",
    )
