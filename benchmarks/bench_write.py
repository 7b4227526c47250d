"""Benchmark 5 — writes: what a verified flash write costs, measured side by side.

* Local image: ``dd conv=notrunc,fsync`` of random bytes into a partition through an ``-o rw``
  mount, against the same ``dd`` straight into the image file at the partition's offset (no
  journal, no verify). The ratio is what the safety costs on a fast disk: the journal writes the
  old and the new bytes once each, the backup session the old bytes once more, and every chunk is
  read back with O_DIRECT.
* USB 2.0 link model: the same write over ``--link-model usb2``. Ideal = the bytes alone at the
  link's bandwidth; the report says how much link traffic the pipeline adds (the read-modify-write
  read of each chunk's old bytes, the write, a checksum command per chunk to verify).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from benchlib import MiB, Report, delta, human_bytes, mount_stats, mounted
from images import BenchImage

from mtkfs.transports.linkmodel import parse_link_spec

B = "5 writes"
LOCAL_BYTES = 128 * MiB
LINK_BYTES = 32 * MiB


def run(report: Report, image: BenchImage, work: Path) -> None:
    part = image.parts["copy"]
    payload = work / "payload.bin"
    payload.write_bytes(os.urandom(LOCAL_BYTES))
    journal = work / "journal"
    label = f"local: dd {human_bytes(LOCAL_BYTES)} conv=notrunc,fsync"
    direct_s = _dd(payload, image.path, seek_bytes=part.offset_bytes, size_bytes=LOCAL_BYTES)
    payload.write_bytes(os.urandom(LOCAL_BYTES))  # different bytes: every chunk really changes
    mnt = work / "mnt-write"
    args = ["-o", "rw", "--journal-dir", str(journal), "--max-dirty", "256M"]
    with mounted(image.path, mnt, *args, log=work / "mtkfs.log"):
        mtkfs_s = _dd(payload, mnt / "copy.img", seek_bytes=0, size_bytes=LOCAL_BYTES)
    same = _holds(image.path, part.offset_bytes, payload, LOCAL_BYTES)
    report.add(B, f"{label} into the image file", LOCAL_BYTES / direct_s / 1e6, "MB/s")
    report.add(B, f"{label} through mtkfs -o rw", LOCAL_BYTES / mtkfs_s / 1e6, "MB/s", _ok(same))
    report.add(B, f"{label} mtkfs / direct", direct_s / mtkfs_s, "x")
    _link(report, image, work, journal)


def _link(report: Report, image: BenchImage, work: Path, journal: Path) -> None:
    part = image.parts["copy"]
    spec = parse_link_spec("usb2")
    payload = work / "payload-link.bin"
    payload.write_bytes(os.urandom(LINK_BYTES))
    label = f"usb2: dd {human_bytes(LINK_BYTES)} conv=notrunc,fsync"
    mnt = work / "mnt-write-usb2"
    args = ["-o", "rw", "--journal-dir", str(journal), "--link-model", "usb2"]
    with mounted(image.path, mnt, *args, log=work / "mtkfs.log"):
        before = mount_stats(mnt)
        elapsed = _dd(payload, mnt / "copy.img", seek_bytes=0, size_bytes=LINK_BYTES)
        after = mount_stats(mnt)
    same = _holds(image.path, part.offset_bytes, payload, LINK_BYTES)
    ideal = spec.transfer_s(LINK_BYTES)
    report.add(B, f"{label} elapsed", elapsed, "s", f"link {spec.summary()}")
    report.add(B, f"{label} ideal (bytes/bandwidth)", ideal, "s")
    report.add(B, f"{label} efficiency (ideal/elapsed)", ideal / elapsed, "", _ok(same))
    # The journal and the backup need each chunk's old bytes: a verified, undoable write moves
    # the file's size twice over the link at least (read old, write new; verify is a checksum).
    safe = spec.transfer_s(2 * LINK_BYTES)
    report.add(B, f"{label} vs read-old + write-new ideal", safe / elapsed, "")
    for key, name in (
        ("link_bytes", "link bytes read / file bytes"),
        ("link_write_bytes", "link bytes written / file bytes"),
    ):
        moved = delta(before, after, key)
        report.add(B, f"{label} {name}", None if moved is None else moved / LINK_BYTES, "x")
    report.add(B, f"{label} checksum commands", delta(before, after, "link_checksum_commands"), "")


def _dd(payload: Path, target: Path, *, seek_bytes: int, size_bytes: int) -> float:
    """Seconds for ``dd`` to write ``payload`` into ``target`` at ``seek_bytes``, fsync included."""
    started = time.perf_counter()
    subprocess.run(
        [
            "dd",
            f"if={payload}",
            f"of={target}",
            "bs=1M",
            f"count={size_bytes // MiB}",
            f"seek={seek_bytes}",
            "oflag=seek_bytes",
            "conv=notrunc,fsync",
            "status=none",
        ],
        check=True,
    )
    return time.perf_counter() - started


def _holds(image: Path, offset_bytes: int, payload: Path, size_bytes: int) -> bool:
    """The image file holds the payload at ``offset_bytes`` (read from the file, not the mount)."""
    with image.open("rb") as a, payload.open("rb") as b:
        a.seek(offset_bytes)
        done = 0
        while done < size_bytes:
            block = b.read(4 * MiB)
            if block != a.read(len(block)):
                return False
            done += len(block)
    return True


def _ok(same: bool) -> str:
    return "image holds the bytes" if same else "IMAGE DIFFERS"
