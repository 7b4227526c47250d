"""The read path through real mounts over the link model: resumable persistent cache, laziness."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import fuse_available
from mounting import foreground_daemon, is_mounted, mounted

from mtkfs.diskcache import folder_name
from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(300),
]

MiB = 1 << 20
#: A fast link so the tests stay quick; latency still makes every command count.
LINK = "latency=1ms,bandwidth=2GB/s"


def stats(mnt: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((mnt / ".mtkfs" / "stats.json").read_text())  # type: ignore[no-any-return]


def link_bytes(mnt: Path) -> int:
    return int(stats(mnt)["transport"]["link_bytes"])


def test_killed_mount_resumes_from_the_cache_dir(p70a: Layout, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    mnt = tmp_path / "mnt"
    boot = p70a.by_name("boot")
    expected = p70a.read("boot")
    args = ("--link-model", LINK, "--cache-dir", str(cache_dir))
    with foreground_daemon(p70a.folder, mnt, *args) as daemon:
        with open(mnt / "boot.img", "rb") as f:
            first_half = f.read(boot.size_bytes // 2)
        assert first_half == expected[: len(first_half)]
        time.sleep(0.5)  # let in-flight readahead land in the cache dir
        fetched = link_bytes(mnt)  # map probe + boot's first half (+ readahead)
        assert fetched >= len(first_half)
        daemon.send_signal(signal.SIGKILL)  # no flush, no unmount: a crash
        daemon.wait(timeout=10)
    assert not is_mounted(mnt)

    with mounted(p70a.folder, mnt, "--link-model", LINK, "--cache-dir", str(cache_dir)) as again:
        before = link_bytes(again)
        assert (again / "boot.img").read_bytes() == expected
        after = stats(again)
        # Only the part never fetched before crossed the link; the rest came from the cache dir,
        # revalidated with the device's checksum command instead of being read again.
        moved = after["transport"]["link_bytes"] - before
        assert before == 0  # the map probe's sectors came from the cache dir
        # Nothing fetched before the crash crossed the link again: both sessions together moved
        # boot once, plus the map probe and chunk-alignment slack (boot is not 1 MiB-aligned).
        assert moved <= boot.size_bytes - len(first_half) + 2 * MiB
        assert fetched + moved <= boot.size_bytes + 4 * MiB
        user = after["cache"]["per_region"]["user"]
        assert user["disk_hits"] * after["cache"]["chunk_bytes"] >= len(first_half)
        assert user["disk_revalidations"] >= 1
        assert after["transport"]["link_checksum_commands"] >= 1
        assert after["disk_cache"]["corrupt_chunks"] == 0


def test_corrupted_cache_chunk_is_detected_and_refetched(p70a: Layout, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    boot = p70a.by_name("boot")
    expected = p70a.read("boot")
    args = ("--link-model", LINK, "--cache-dir", str(cache_dir))
    with mounted(p70a.folder, tmp_path / "mnt", *args) as mnt:
        assert (mnt / "boot.img").read_bytes() == expected
        chunk_bytes = stats(mnt)["cache"]["chunk_bytes"]
    data_file = cache_dir / folder_name(f"image:{p70a.folder}") / "user.data"
    assert data_file.stat().st_size >= boot.offset_bytes + boot.size_bytes
    # Flip bytes in the middle of boot's second chunk on disk.
    offset = boot.offset_bytes + chunk_bytes + 1000
    with open(data_file, "r+b") as f:
        original = os.pread(f.fileno(), 16, offset)
        os.pwrite(f.fileno(), bytes(b ^ 0xFF for b in original), offset)
    with mounted(p70a.folder, tmp_path / "mnt", *args) as mnt:
        before = link_bytes(mnt)
        assert (mnt / "boot.img").read_bytes() == expected
        after = stats(mnt)
        assert after["disk_cache"]["corrupt_chunks"] >= 1
        moved = after["transport"]["link_bytes"] - before
        assert 0 < moved <= 2 * chunk_bytes  # that chunk (maybe its neighbour run), not all boot


def test_without_checksum_or_trust_the_cache_is_not_believed(tmp_path: Path) -> None:
    image = tmp_path / "User"
    image.write_bytes(os.urandom(4 * MiB))
    link = "latency=1ms,bandwidth=2GB/s,checksum=off"
    args = ("--no-map", "--link-model", link, "--cache-dir", str(tmp_path / "cache"))
    with mounted(image, tmp_path / "mnt", *args) as mnt:
        (mnt / "regions" / "user.img").read_bytes()
    image.write_bytes(os.urandom(4 * MiB))  # the "device" changed since
    with mounted(image, tmp_path / "mnt", *args) as mnt:
        assert (mnt / "regions" / "user.img").read_bytes() == image.read_bytes()
    # --trust-cache believes the stored chunks (the user's call) and moves nothing.
    with mounted(image, tmp_path / "mnt", *args, "--trust-cache") as mnt:
        data = (mnt / "regions" / "user.img").read_bytes()
        assert stats(mnt)["transport"]["link_bytes"] == 0
        assert data == image.read_bytes()  # the second session stored the new bytes
