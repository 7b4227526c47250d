"""Benchmark 9 — ``mtkfs dump`` vs ``cp`` from a mount, side by side, over the same modelled link.

Both read the same 256 MiB partition through the link model (USB 2.0). ``cp`` is the mount's
best case (the kernel's 128 KiB reads, readahead); ``dump`` adds hashing, the manifest and its
checkpoints. Their ratio says what the backup command's extras cost; the goal is ≈ 1.0. A third
row dumps with ``--compress zstd``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Report, human_bytes, mounted
from images import BenchImage

B = "9 dump vs cp (usb2)"
MTKFS = [sys.executable, "-m", "mtkfs"]


def run(report: Report, image: BenchImage, work: Path) -> None:
    copy = image.parts["copy"]
    label = f"usb2: {human_bytes(copy.size_bytes)}"
    mnt = work / "mnt-dump"
    target = work / "cp-dump.out"
    with mounted(image.path, mnt, "--link-model", "usb2", log=work / "mtkfs.log"):
        started = time.perf_counter()
        subprocess.run(["cp", str(mnt / "copy.img"), str(target)], check=True)
        cp_s = time.perf_counter() - started
    target.unlink()
    report.add(B, f"{label} cp from a mount", cp_s, "s")
    for compression in ("none", "zstd"):
        out = work / f"dump-{compression}"
        started = time.perf_counter()
        args = ["dump", str(image.path), "copy", "-o", str(out), "--link-model", "usb2"]
        args += ["--compress", compression, "--progress", "off"]
        subprocess.run([*MTKFS, *args], check=True)
        dump_s = time.perf_counter() - started
        manifest = json.loads((out / "manifest.json").read_text())
        moved = manifest["sessions"][-1]["link_bytes"] / copy.size_bytes
        subprocess.run(["rm", "-rf", str(out)], check=True)
        note = f"link bytes / partition {moved:.3f}"
        report.add(B, f"{label} dump --compress {compression}", dump_s, "s", note)
        note = "1.0: dump costs nothing over cp (dump's time includes its start and map probe)"
        report.add(B, f"{label} cp time / dump time ({compression})", cp_s / dump_s, "", note)
