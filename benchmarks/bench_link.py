"""Benchmark 2 — link efficiency: ``cp`` of a partition through a mount over a modelled link.

The mount wraps the image in the link model (``--link-model``), which charges every command its
latency plus bytes / bandwidth on one serial pipe. The ideal is the bytes alone at the link's
bandwidth, so ``ideal / elapsed`` says how much of the link mtkfs used (1.0: all of it).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from benchlib import MiB, Report, delta, human_bytes, mount_stats, mounted
from images import BenchImage

from mtkfs.transports.linkmodel import parse_link_spec

B = "2 link efficiency"


def run(report: Report, image: BenchImage, nor: Path, work: Path) -> None:
    copy = image.parts["copy"]
    _copy(report, "usb2", image.path, "copy.img", (copy.offset_bytes, copy.size_bytes), work, [])
    nor_range = (0, nor.stat().st_size)
    _copy(report, "uboot", nor, "regions/flash.img", nor_range, work, ["--no-map"])


def _copy(
    report: Report,
    preset: str,
    source: Path,
    rel: str,
    source_range: tuple[int, int],
    work: Path,
    args: list[str],
) -> None:
    """Mount ``source`` over the ``preset`` link, ``cp MNT/rel`` (``source_range`` of source)."""
    size_bytes = source_range[1]
    spec = parse_link_spec(preset)
    label = f"{preset}: cp {human_bytes(size_bytes)}"
    mnt = work / f"mnt-{preset}"
    target = work / f"cp-{preset}.out"
    with mounted(source, mnt, "--link-model", preset, *args, log=work / "mtkfs.log"):
        before = mount_stats(mnt)
        started = time.perf_counter()
        subprocess.run(["cp", str(mnt / rel), str(target)], check=True)
        elapsed = time.perf_counter() - started
        after = mount_stats(mnt)
    same = _same_bytes(target, source, *source_range)
    target.unlink()
    ideal = spec.transfer_s(size_bytes)
    link_bytes = delta(before, after, "link_bytes")
    commands = delta(before, after, "link_commands")
    busy = delta(before, after, "link_busy_s")
    report.add(B, f"{label} elapsed", elapsed, "s", f"link {spec.summary()}")
    report.add(B, f"{label} ideal (bytes/bandwidth)", ideal, "s")
    report.add(B, f"{label} efficiency (ideal/elapsed)", ideal / elapsed, "", _ok(same))
    report.add(B, f"{label} link commands", commands, "")
    moved = None if link_bytes is None else link_bytes / size_bytes
    report.add(B, f"{label} link bytes / file bytes", moved, "x")
    if busy is not None:
        report.add(B, f"{label} link busy / elapsed", busy / elapsed, "")


def _same_bytes(copied: Path, source: Path, offset_bytes: int, size_bytes: int) -> bool:
    """The copy holds exactly the source's range (checked against the image, not the mount)."""
    if copied.stat().st_size != size_bytes:
        return False
    with copied.open("rb") as a, source.open("rb") as b:
        b.seek(offset_bytes)
        while block := a.read(4 * MiB):
            if block != b.read(len(block)):
                return False
    return True


def _ok(same: bool) -> str:
    return "copy identical" if same else "COPY DIFFERS"
