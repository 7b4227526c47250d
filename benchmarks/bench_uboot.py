"""Benchmark 8 — a board's NOR through its U-Boot console at a simulated 115200 baud.

The U-Boot console simulator (:mod:`mtkfs.testing.sim_uboot`) paces its UART at 115200 baud,
8N1 (11 520 characters per second, both ways), so every character mtkfs types and every
character U-Boot prints costs what it would on a real wire. Side by side in one run:

* the payload rate of a ``dd`` of random (undumpable-by-shortcut) NOR data through an
  ``uboot:`` mount, against the *md wire limit* — the rate at which the ``md`` width mtkfs used
  carries payload over that wire if nothing else were sent (``md.q``: 63 characters per 16
  bytes; ``md.l``: 65). The ratio is what mtkfs's own chatter (echo-checked typing, ``sf
  read``, ``crc32`` per chunk) costs;
* the same for erased NOR: four ``crc32`` lines per 64 KiB chunk instead of a dump.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from benchlib import KiB, Report, mounted

from mtkfs.testing.disk import build_nor
from mtkfs.testing.sim_uboot import ConsoleFaults, SimBoard, SpiNor, running_console

B = "8 U-Boot (sim, 115200 baud)"
BAUD = 115200
CHARS_PER_S = BAUD / 10
#: Characters per 16-byte md line on the wire (2023.01 layout, CRLF), by width.
MD_LINE_CHARS = {8: 63, 4: 65, 2: 69, 1: 77}
RANDOM_BYTES = 128 * KiB
ERASED_BYTES = 1024 * KiB


def _read(path: Path, offset: int, size: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["dd", f"if={path}", "of=/dev/null", "bs=64k", f"skip={offset // (64 * KiB)}",
         f"count={size // (64 * KiB)}", "status=none"],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def run(report: Report, work: Path) -> None:
    nor = build_nor(work / "nor")
    board = SimBoard(sf=SpiNor(nor.regions["flash"]), banner_delay_s=0.05, autoboot_step_s=0.2)
    args = ("--flash", "sf", "--map", str(nor.folder / "mtdparts.txt"), "--no-cache-dir",
            "--io-timeout", "60")  # fmt: skip
    with (
        running_console(board, faults=ConsoleFaults(baud=BAUD)) as console,
        mounted(
            f"uboot:{console.url}", work / "mnt-uboot", *args, log=work / "mtkfs-uboot.log"
        ) as mnt,
    ):
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        width = int(status["device"]["md_width"])
        kernel = mnt / "kernel.img"  # random from its first byte to its last
        random_s = _read(kernel, 0, RANDOM_BYTES)
        rootfs = nor.by_name("rootfs")
        erased_at = -(-(rootfs.size_bytes // 3) // (64 * KiB)) * (64 * KiB) + 64 * KiB
        erased_s = _read(mnt / "rootfs.img", erased_at, ERASED_BYTES)
    limit = CHARS_PER_S * 16 / MD_LINE_CHARS[width]
    rate = RANDOM_BYTES / random_s
    report.add(B, f"md wire limit (md.{'bwlq'[[1, 2, 4, 8].index(width)]})", limit / 1e3, "KB/s")
    report.add(B, "random NOR through the mount", rate / 1e3, "KB/s")
    report.add(
        B, "random NOR: mtkfs / md wire limit", rate / limit, "×",
        "echo-checked typing, sf read and crc32 per 64 KiB chunk included",
    )  # fmt: skip
    report.add(
        B, "erased NOR through the mount", ERASED_BYTES / erased_s / 1e3, "KB/s",
        "crc32 of the chunk and its quarters instead of a dump",
    )  # fmt: skip
