"""A UFS phone's readback (LU0, LU1, LU2 with a GPT in 4096-byte sectors) mounted: the user LU's
partitions found with 4 KiB LBAs, byte-exact, and its ext4 loop-mounts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fuse_available, loop_available
from mounting import loop_mounted, mounted
from test_sim_mount import sha256_of

from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
_loop_ok, _loop_why = loop_available()
pytestmark = [pytest.mark.fuse, pytest.mark.skipif(not _fuse_ok, reason=_fuse_why)]


def test_ufs_readback_partitions_are_the_lu_bytes(ufs: Layout, tmp_path: Path) -> None:
    with mounted(ufs.folder, tmp_path / "mnt") as mnt:
        pmap = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        assert "4096-byte sectors" in pmap["map"]
        for part in ufs.partitions:
            if part.name == "userdata":
                continue  # 7.6 GiB of holes; its start and end are checked below
            assert sha256_of(mnt / f"{part.name}.img") == sha256_of(
                ufs.folder / "LU2", part.offset_bytes, part.size_bytes
            ), part.name
        userdata = ufs.by_name("userdata")
        assert (mnt / "userdata.img").stat().st_size == userdata.size_bytes
        for region, name in (("lu0", "LU0"), ("lu1", "LU1")):
            assert sha256_of(mnt / "regions" / f"{region}.img") == sha256_of(ufs.folder / name)


@pytest.mark.loop
@pytest.mark.skipif(not _loop_ok, reason=_loop_why)
def test_ufs_system_loop_mounts(ufs: Layout, tmp_path: Path) -> None:
    with (
        mounted(ufs.folder, tmp_path / "mnt") as mnt,
        loop_mounted(mnt / "system_a.img", tmp_path / "sys") as target,
    ):
        assert "mt6833" in (target / "build.prop").read_text()
