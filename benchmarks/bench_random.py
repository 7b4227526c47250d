"""Benchmark 4 — random 4 KiB reads through the mount: latency of cache misses and hits.

Misses are first touches of random offsets, each in a different chunk, spread over a 1 GiB
partition: each costs one chunk fetch from the image. Hits re-read the same offsets, now in
mtkfs's chunk cache. The kernel's page cache must not answer either, or we would time the
kernel, not mtkfs: reads use O_DIRECT on the partition file, or — if the kernel refuses it —
``posix_fadvise(DONTNEED)`` before every read.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import time
from pathlib import Path

from benchlib import Report, counter, delta, mount_stats, mounted, percentile
from images import BenchImage

B = "4 random 4 KiB"
READ_BYTES = 4096
SAMPLES = 400
HIT_PASSES = 3


def run(report: Report, image: BenchImage, work: Path) -> None:
    mnt = work / "mnt-random"
    # Room for every chunk the misses bring in, so the hits really are hits.
    with mounted(image.path, mnt, "--cache-size", "1G", log=work / "mtkfs.log"):
        path = mnt / "data.img"
        chunk = int(counter(mount_stats(mnt), "chunk_bytes") or 1 << 20)
        size = path.stat().st_size
        rng = random.Random(4096)
        # Chunk 0 is left out: the O_DIRECT probe reads it.
        chunks = rng.sample(range(1, size // chunk), min(SAMPLES, size // chunk - 1))
        offsets = [c * chunk + rng.randrange(chunk // READ_BYTES) * READ_BYTES for c in chunks]
        read = _Reader(path)
        try:
            before = mount_stats(mnt)
            misses = [read(offset) for offset in offsets]
            middle = mount_stats(mnt)
            hits = [read(offset) for _ in range(HIT_PASSES) for offset in offsets]
            after = mount_stats(mnt)
        finally:
            read.close()
    # Fetches can exceed reads: two random offsets close together look sequential to readahead.
    fetches = delta(before, middle, "transport_reads")
    refetches = delta(middle, after, "transport_reads")
    note = (
        f"{read.how}; {len(misses)} reads, {fetches:.0f} fetches"
        if fetches is not None
        else read.how
    )
    report.add(B, "miss p50", percentile(misses, 50), "us", note)
    report.add(B, "miss p99", percentile(misses, 99), "us", f"chunk {chunk >> 10} KiB")
    note = f"{len(hits)} reads, {refetches:.0f} fetches" if refetches is not None else ""
    report.add(B, "hit p50", percentile(hits, 50), "us", note)
    report.add(B, "hit p99", percentile(hits, 99), "us")


class _Reader:
    """Timed 4 KiB reads of one file that bypass the kernel's page cache."""

    def __init__(self, path: Path) -> None:
        self.buffer = mmap.mmap(-1, READ_BYTES)  # page-aligned, as O_DIRECT needs
        fd = self._open_direct(path)
        self.direct = fd is not None
        self.fd = fd if fd is not None else os.open(path, os.O_RDONLY)
        self.how = "O_DIRECT" if self.direct else "fadvise(DONTNEED) before each read"

    def _open_direct(self, path: Path) -> int | None:
        """An O_DIRECT fd that really reads (probed at offset 0), or None if refused."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None
            raise
        try:
            os.preadv(fd, [self.buffer], 0)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EINVAL:
                return None
            raise
        return fd

    def __call__(self, offset_bytes: int) -> float:
        """Microseconds one read at ``offset_bytes`` took."""
        if not self.direct:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        started = time.perf_counter_ns()
        got = os.preadv(self.fd, [self.buffer], offset_bytes)
        elapsed_us = (time.perf_counter_ns() - started) / 1e3
        if got != READ_BYTES:
            raise RuntimeError(f"short read at {offset_bytes}: {got} bytes")
        return elapsed_us

    def close(self) -> None:
        os.close(self.fd)
