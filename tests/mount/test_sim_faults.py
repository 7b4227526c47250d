"""A simulated phone whose link fails on purpose, mounted: readers get the phone's bytes or
EIO, never other bytes, and the mount reconnects and keeps serving (the same daemon).

Faults (:mod:`mtkfs.testing.wirefaults`): transfers cut short with the phone rebooting, and
garbled frame headers — what a USB link to a phone does wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import fuse_available
from mounting import mounted
from test_sim_mount import make_da_file, phone_on_a_pty, sha256_of

from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(900),
]


def copy_digest(path: Path, block_bytes: int = 1 << 20) -> str:
    """What ``cp`` does to a partition file (sequential reads of ``block_bytes``), hashed
    instead of stored: userdata is 12 GiB."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as stream:
        while block := stream.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def transport_stats(mnt: Path) -> dict[str, int]:
    stats: dict[str, int] = json.loads((mnt / ".mtkfs" / "stats.json").read_text())["transport"]
    return stats


def test_200_link_faults_during_a_cp_of_userdata(p70a: Layout, tmp_path: Path) -> None:
    """The acceptance run: 200 faults spread over a copy of the 12 GiB userdata. Every one is
    noticed (a failed command or bring-up each), the copy is byte-exact, and the same mount
    then serves other partitions."""
    spec = "every=1800,limit=200,seed=11"
    with mounted(f"sim:mt6765:{p70a.folder}", tmp_path / "mnt", "--sim-faults", spec) as mnt:
        userdata = p70a.by_name("userdata")
        assert copy_digest(mnt / "userdata.img") == sha256_of(
            p70a.folder / "User", userdata.offset_bytes, userdata.size_bytes
        )
        stats = transport_stats(mnt)
        assert stats["da_failed_commands"] + stats["da_failed_reconnects"] == 200, stats
        assert stats["da_reconnects"] >= 150, stats
        boot = p70a.by_name("boot")
        assert copy_digest(mnt / "boot.img") == sha256_of(
            p70a.folder / "User", boot.offset_bytes, boot.size_bytes
        )


def test_link_faults_on_a_tty_reconnect_through_the_tty(p70a: Layout, tmp_path: Path) -> None:
    """``da:/dev/pts/N`` with a phone that cuts transfers and garbles headers: the host times
    out (``--io-timeout``) or sees the garbage, reopens the tty, handshakes with the rebooted
    phone, and the partition files are still byte-exact."""
    da_file = make_da_file(tmp_path / "MTK_AllInOne_DA.bin", "0x6765")
    args = ("--da", str(da_file), "--io-timeout", "0.5")
    with (
        phone_on_a_pty(p70a.folder, "--faults", "every=150,limit=8,seed=5") as pts,
        mounted(f"da:{pts}", tmp_path / "mnt", *args) as mnt,
    ):
        for name in ("metadata", "lk", "nvram", "recovery"):
            part = p70a.by_name(name)
            assert copy_digest(mnt / f"{name}.img") == sha256_of(
                p70a.folder / "User", part.offset_bytes, part.size_bytes
            ), name
        stats = transport_stats(mnt)
        assert stats["da_reconnects"] >= 1, stats
        assert stats["da_failed_commands"] + stats["da_failed_reconnects"] >= 6, stats
