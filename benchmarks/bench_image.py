"""Benchmark 1 — image mode: a 1 GiB partition read through mtkfs vs a kernel loop device.

Both read the same byte range of the same image file, 1 MiB at a time. *Cold* is a fresh mount
or a fresh loop device (their own caches empty; the image itself may be in the host's page
cache, as it is after a readback was just written). *Warm* is a second read of the same (for
mtkfs the kernel keeps the partition file's pages: ``keep_cache``). The *from disk* variant drops
the page cache first, so both read the disk.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

from benchlib import Report, drop_caches, loop_device, mounted, timed_read
from images import BenchImage

B = "1 image mode"
#: Each figure is the median of this many runs (each cold run on a fresh mount / loop device).
RUNS = 3


def run(report: Report, image: BenchImage, work: Path) -> None:
    data = image.parts["data"]
    mnt = work / "mnt-image"
    log = work / "mtkfs.log"
    span = (data.offset_bytes, data.size_bytes)

    def mtkfs_cold_warm() -> tuple[float, float]:
        with mounted(image.path, mnt, log=log):
            return timed_read(mnt / "data.img"), timed_read(mnt / "data.img")

    def loop_cold_warm() -> tuple[float, float]:
        with loop_device(image.path, *span) as dev:
            return timed_read(dev), timed_read(dev)

    # The reference: the image file itself (read once more first, so it is in the page cache).
    timed_read(image.path, *span)
    direct = median(timed_read(image.path, *span) for _ in range(RUNS))
    m_cold, m_warm = _medians([mtkfs_cold_warm() for _ in range(RUNS)])
    l_cold, l_warm = _medians([loop_cold_warm() for _ in range(RUNS)])
    runs = f"median of {RUNS}"
    report.add(B, f"image file directly, {data.size_bytes >> 20} MiB", direct, "MB/s", runs)
    report.add(B, "mtkfs cold (fresh mount)", m_cold, "MB/s", runs)
    report.add(B, "loop cold (fresh losetup -o)", l_cold, "MB/s", runs)
    report.add(B, "mtkfs warm (second read)", m_warm, "MB/s", "kernel page cache (keep_cache)")
    report.add(B, "loop warm (second read)", l_warm, "MB/s")
    report.add(B, "ratio mtkfs/loop, cold", m_cold / l_cold, "x")
    report.add(B, "ratio mtkfs/loop, warm", m_warm / l_warm, "x")
    report.add(B, "ratio mtkfs warm / image file", m_warm / direct, "x")

    if not drop_caches():
        report.add(B, "FROM DISK (drop_caches)", None, "", "skipped: cannot drop caches here")
        return
    m_disk, l_disk = [], []
    for _ in range(RUNS):
        drop_caches()
        with mounted(image.path, mnt, log=log):
            m_disk.append(timed_read(mnt / "data.img"))
        drop_caches()
        with loop_device(image.path, *span) as dev:
            l_disk.append(timed_read(dev))
    note = f"echo 3 > drop_caches before each; {runs}"
    report.add(B, "mtkfs cold FROM DISK", median(m_disk), "MB/s", note)
    report.add(B, "loop cold FROM DISK", median(l_disk), "MB/s", note)
    report.add(B, "ratio mtkfs/loop, FROM DISK", median(m_disk) / median(l_disk), "x")


def _medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """(median of the firsts, median of the seconds)."""
    return median(p[0] for p in pairs), median(p[1] for p in pairs)
