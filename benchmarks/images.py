"""The images the benchmarks read, built fresh in the run's work folder.

* ``bench.img``: a GPT disk (``sgdisk``, as users' images have) with ``data`` (1 GiB) and
  ``copy`` (256 MiB), both filled with random bytes: a sequential-read benchmark over holes would
  measure the kernel's zero-page path, not reading.
* ``nor.bin``: 64 KiB of random bytes, a raw NOR dump (no table), for the U-Boot-speed copy — so
  the mount reads nothing over the 2.8 KB/s link before the copy starts (``--no-map``).
* The P-70A readback of :func:`mtkfs.testing.disk.build_p70a` for the laziness benchmark.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from benchlib import KiB, MiB

from mtkfs.testing.tools import find_tool, run, sparse_file

SECTOR = 512
FILL_PIECE_BYTES = 16 * MiB


@dataclass(frozen=True)
class Part:
    name: str
    offset_bytes: int
    size_bytes: int


@dataclass(frozen=True)
class BenchImage:
    path: Path
    parts: dict[str, Part]


def build_bench_image(folder: Path, data_bytes: int, copy_bytes: int) -> BenchImage:
    """``folder/bench.img`` with partitions ``data`` and ``copy`` of random bytes, 1 MiB aligned."""
    path = folder / "bench.img"
    data = Part("data", 1 * MiB, data_bytes)
    copy = Part("copy", data.offset_bytes + data_bytes, copy_bytes)
    # 1 MiB after the last partition for the backup GPT (and the usual alignment slack).
    sparse_file(path, copy.offset_bytes + copy_bytes + 1 * MiB)
    sgdisk = [find_tool("sgdisk"), "-o", "-a", "1"]
    for number, part in enumerate((data, copy), start=1):
        first = part.offset_bytes // SECTOR
        last = (part.offset_bytes + part.size_bytes) // SECTOR - 1
        sgdisk += [f"--new={number}:{first}:{last}", f"--change-name={number}:{part.name}"]
    run([*sgdisk, str(path)])
    fd = os.open(path, os.O_WRONLY)
    try:
        for part in (data, copy):
            for offset in range(0, part.size_bytes, FILL_PIECE_BYTES):
                piece = os.urandom(min(FILL_PIECE_BYTES, part.size_bytes - offset))
                os.pwrite(fd, piece, part.offset_bytes + offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return BenchImage(path, {"data": data, "copy": copy})


def build_nor_image(folder: Path, size_bytes: int = 64 * KiB) -> Path:
    """A raw flash dump of random bytes: region ``flash``, no partition table."""
    path = folder / "nor.bin"
    data = bytearray(os.urandom(size_bytes))
    data[510:512] = b"\0\0"  # never an MBR signature by chance: the region must be "flash"
    path.write_bytes(data)
    return path
