"""Android sparse images as sources: ``mtkfs mount system.simg MNT`` shows the raw image
(equal to what simg2img writes), the ext4 inside loop-mounts from the mount, a sparse image
stored inside a partition mounts from the partition file, and a write is refused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import fuse_available, loop_available
from mounting import loop_mounted, mounted, mtkfs

from mtkfs.testing.disk import Layout, pseudo_random
from mtkfs.testing.tools import mkfs_ext4

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(300),
]
needs_loop = pytest.mark.skipif(not loop_available()[0], reason=loop_available()[1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sparse")
    tree = folder / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "build.prop").write_text("ro.build.id=MTKFS1\nro.product.model=P-70A\n")
    (tree / "etc" / "blob.bin").write_bytes(pseudo_random("sparse/blob", 2 << 20))
    raw = folder / "system.raw"
    raw.write_bytes(b"")
    os.truncate(raw, 48 << 20)
    mkfs_ext4(folder, raw, 0, 48 << 20, label="system", key="sparse/system", tree=tree)
    simg = folder / "system.simg"
    subprocess.run(["img2simg", str(raw), str(simg)], check=True)
    expanded = folder / "system.expanded"
    subprocess.run(["simg2img", str(simg), str(expanded)], check=True)
    return {"simg": simg, "expanded": expanded, "tree": tree}


def test_a_sparse_image_mounts_as_its_raw_image(system: dict[str, Path], tmp_path: Path) -> None:
    assert system["simg"].stat().st_size < system["expanded"].stat().st_size // 4
    with mounted(system["simg"], tmp_path / "mnt") as mnt:
        # No partition table: the ext4 is the one partition, named by its label.
        assert _sha256(mnt / "system.img") == _sha256(system["expanded"])
        assert _sha256(mnt / "regions" / "flash.img") == _sha256(system["expanded"])
        report = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        assert report["partitions"][0]["content"]["kind"] == "ext4"
        assert "Android sparse" in report["source"]


@needs_loop
def test_the_ext4_inside_loop_mounts(system: dict[str, Path], tmp_path: Path) -> None:
    with (
        mounted(system["simg"], tmp_path / "mnt") as mnt,
        loop_mounted(mnt / "system.img", tmp_path / "ext4") as target,
    ):
        assert "ro.build.id=MTKFS1" in (target / "build.prop").read_text()
        blob = (system["tree"] / "etc" / "blob.bin").read_bytes()
        assert (target / "etc" / "blob.bin").read_bytes() == blob


def test_a_sparse_image_inside_a_partition_mounts_from_the_partition_file(
    system: dict[str, Path], p70a_rw: Layout, tmp_path: Path
) -> None:
    """SP Flash Tool ROMs flash EXT4_IMG as sparse; a readback of such a partition holds the
    sparse image: the partition file is a source of its own."""
    part = p70a_rw.by_name("cache")
    data = system["simg"].read_bytes()
    assert len(data) <= part.size_bytes
    with (p70a_rw.folder / "User").open("r+b") as f:
        f.seek(part.offset_bytes)
        f.write(data)
    with mounted(p70a_rw.folder, tmp_path / "outer") as outer:
        report = json.loads((outer / ".mtkfs" / "map.json").read_text())
        kinds = {p["name"]: (p["content"] or {}).get("kind") for p in report["partitions"]}
        assert kinds["cache"] == "android-sparse"
        with mounted(outer / "cache.img", tmp_path / "inner") as inner:
            assert _sha256(inner / "system.img") == _sha256(system["expanded"])


def test_writes_to_a_sparse_source_are_refused(system: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = mtkfs("mount", system["simg"], tmp_path / "mnt", "-o", "rw")
    assert result.returncode == 2
    assert "Android sparse image" in result.stderr and "simg2img" in result.stderr
