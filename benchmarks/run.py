"""mtkfs benchmarks: how fast real mounts are, and how little they move over a slow link.

Run as root (loop devices, drop_caches, FUSE): ``make bench`` or
``.venv/bin/python benchmarks/run.py [--only N ...] [--json FILE] [--workdir DIR] [--keep]``.
Everything is built in a fresh folder under ``--workdir`` (default /var/tmp: on disk, since
benchmark 1 also reads from disk) and removed afterwards; about 1.5 GB of disk, 2–3 minutes.

1. image mode — a 1 GiB partition read through mtkfs vs a kernel loop device, cold and warm.
2. link efficiency — ``cp`` over the link model (USB 2.0; U-Boot at 115200 baud) vs the ideal.
3. laziness — loop-mount a 2 GiB ext4 from the mount over USB 2.0, read one 3 MiB file.
4. random 4 KiB reads — p50/p99 latency of cache misses and hits.
5. writes — verified ``dd conv=fsync`` through an rw mount vs straight into the image; over USB 2.0.
6. DA — a simulated phone through the Download Agent over USB 2.0, vs a no-cache baseline.
9. dump — ``mtkfs dump`` of a partition vs ``cp`` from a mount, over USB 2.0.

Not part of the test suite (pytest only collects ``tests/``): numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench_adb
import bench_da
import bench_dump
import bench_image
import bench_lazy
import bench_link
import bench_random
import bench_uboot
import bench_write
from benchlib import GiB, MiB, Report, mount_supports
from images import build_bench_image, build_nor_image

from mtkfs import __version__

NAMES = {
    1: "1 image mode",
    2: "2 link efficiency",
    3: "3 laziness",
    4: "4 random 4 KiB",
    5: "5 writes",
    6: "6 DA (sim, usb2)",
    7: "7 adb (fake phone)",
    8: "8 U-Boot (sim, 115200 baud)",
    9: "9 dump vs cp (usb2)",
}


def preflight() -> list[str]:
    """What this machine lacks for the benchmarks (empty: all there)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (loop devices, mount -o loop, drop_caches)")
    for device in ("/dev/fuse", "/dev/loop-control"):
        if not os.path.exists(device):
            problems.append(f"{device} is missing")
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    for tool in ("fusermount3", "losetup", "mount", "sgdisk", "mkfs.ext4", "cp"):
        if shutil.which(tool, path=path) is None:
            problems.append(f"{tool} not found (make deps)")
    return problems


def mounts_under(folder: Path) -> list[str]:
    """Mount targets inside ``folder`` (a removal must never walk into one)."""
    prefix = os.path.realpath(folder) + os.sep
    with open("/proc/self/mountinfo") as info:
        return [t for line in info if (t := line.split()[4]).startswith(prefix)]


def _output(*args: str) -> str:
    cwd = Path(__file__).parent
    done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, check=False)
    return done.stdout.strip()


def context(work: Path) -> dict[str, str]:
    fstype = _output("findmnt", "-n", "-o", "FSTYPE", "-T", str(work))
    revision = _output("git", "rev-parse", "--short", "HEAD")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "mtkfs": f"{__version__} ({revision or 'no git'})",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "workdir": f"{work} ({fstype or '?'})",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=int, action="append", choices=sorted(NAMES), metavar="N")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"), metavar="DIR")
    parser.add_argument("--keep", action="store_true", help="keep the built images")
    args = parser.parse_args(argv)
    problems = preflight()
    if problems:
        print("benchmarks cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    selected = sorted(set(args.only or NAMES))
    work = Path(tempfile.mkdtemp(prefix="mtkfs-bench-", dir=args.workdir))
    report = Report(context=context(work))
    for key, value in report.context.items():
        print(f"{key}: {value}")
    has_link_model = mount_supports("--link-model")
    failed = False
    started = time.perf_counter()
    try:
        image = nor = None
        if {1, 2, 4, 5, 9} & set(selected):
            print("building bench.img (1 GiB + 256 MiB of random bytes)…", flush=True)
            image = build_bench_image(work, data_bytes=1 * GiB, copy_bytes=256 * MiB)
            nor = build_nor_image(work)
        runs: dict[int, Callable[[], None]] = {
            1: lambda: bench_image.run(report, image, work),
            2: lambda: bench_link.run(report, image, nor, work),
            3: lambda: bench_lazy.run(report, work, link_model=has_link_model),
            4: lambda: bench_random.run(report, image, work),
            5: lambda: bench_write.run(report, image, work),
            6: lambda: bench_da.run(report, work),
            7: lambda: bench_adb.run(report, work),
            8: lambda: bench_uboot.run(report, work),
            9: lambda: bench_dump.run(report, image, work),
        }
        for number in selected:
            print(f"benchmark {NAMES[number]}…", flush=True)
            if number == 2 and not has_link_model:
                report.add(NAMES[2], "all", None, "", "skipped: mtkfs mount has no --link-model")
                continue
            try:
                runs[number]()
            except Exception as exc:
                failed = True
                traceback.print_exc()
                report.add(NAMES[number], "FAILED", None, "", f"{type(exc).__name__}: {exc}")
    finally:
        left = mounts_under(work)
        if left:
            print(f"still mounted, not removing {work}: {', '.join(left)}", file=sys.stderr)
        elif args.keep:
            print(f"images kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.context["runtime_s"] = f"{time.perf_counter() - started:.0f}"
    print()
    print(report.table())
    print(f"\n(MB/s are decimal: 10^6 bytes/s; run time {report.context['runtime_s']} s)")
    if args.json:
        report.write_json(args.json)
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
