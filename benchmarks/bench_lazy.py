"""Benchmark 3 — laziness: one 3 MiB file out of a 2 GiB ext4, loop-mounted from the mount.

The P-70A readback is mounted over the USB 2.0 link model; the kernel then loop-mounts
``system.img`` straight from the mount and we read ``app/Demo.apk``. What a lazy mtkfs moves over
the link is the file system's metadata and the file's blocks — a few MiB, not 2 GiB (target: at
most 8 MiB, loop mount included).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from benchlib import MiB, Report, delta, loop_mounted, mount_stats, mounted

from mtkfs.testing.disk import build_p70a, p70a_system_files

B = "3 laziness"
TARGET_BYTES = 8 * MiB
APK = "app/Demo.apk"
READ_BYTES = 128 * 1024  # cp's buffer size


def run(report: Report, work: Path, *, link_model: bool) -> None:
    layout = build_p70a(work / "p70a")
    expected = hashlib.sha256(p70a_system_files()[APK]).hexdigest()
    mnt, system = work / "mnt-p70a", work / "mnt-system"
    args = ["--link-model", "usb2"] if link_model else []
    key, how = ("link_bytes", "link model usb2") if link_model else ("transport_bytes", "no link")
    with mounted(layout.folder, mnt, *args, log=work / "mtkfs.log"):
        before = mount_stats(mnt)
        started = time.perf_counter()
        with loop_mounted(mnt / "system.img", system):
            mounted_s = time.perf_counter() - started
            after_mount = mount_stats(mnt)
            digest = hashlib.sha256()
            opened = time.perf_counter()
            fd = os.open(system / APK, os.O_RDONLY)
            try:
                digest.update(os.read(fd, READ_BYTES))
                first_byte_s = time.perf_counter() - opened
                while block := os.read(fd, READ_BYTES):
                    digest.update(block)
            finally:
                os.close(fd)
            read_s = time.perf_counter() - opened
            after = mount_stats(mnt)
    ok = "content ok" if digest.hexdigest() == expected else "CONTENT DIFFERS"
    report.add(B, f"loop mount of system.img ({how})", mounted_s, "s")
    report.add(
        B, f"{APK} time to first byte", first_byte_s * 1e3, "ms", f"first {READ_BYTES}B read"
    )
    report.add(B, f"{APK} read, 3 MiB total", read_s * 1e3, "ms", ok)
    total = delta(before, after, key)
    if total is None:
        report.add(B, "bytes moved", None, "", f"no {key} in the mount's stats")
        return
    meta = delta(before, after_mount, key) or 0.0
    verdict = "within" if total <= TARGET_BYTES else "OVER"
    report.add(B, "bytes moved: loop mount", meta / MiB, "MiB", key)
    report.add(B, "bytes moved: loop mount + file", total / MiB, "MiB", f"{verdict} 8 MiB target")
    prefetched = delta(before, after, "prefetch_bytes")
    if prefetched is not None:
        note = "fetched ahead of any reader (mtkfs readahead)"
        report.add(B, "  of which readahead", prefetched / MiB, "MiB", note)
    commands = delta(before, after, "link_commands" if link_model else "transport_reads")
    report.add(B, "commands: loop mount + file", commands, "")
