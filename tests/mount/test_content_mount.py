"""What is inside, through a real mount: a 16 MiB NOR laid out with seed 003's MTD lines, its
ROOTFS and HOME made by mkfs.jffs2 (little-endian zlib, big-endian uncompressed, a file
overwritten later), browsed in ``MNT/<name>.files/`` without any kernel MTD support; the same
NOR word-swapped (seed 003's md.l dump); detection's cost in bytes; damaged jffs2."""

from __future__ import annotations

import gzip
import json
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import fuse_available
from mounting import mounted

from mtkfs.testing import jffs2_build as jb
from mtkfs.testing.bootimg_build import mtk, newc
from mtkfs.testing.disk import Layout, pseudo_random
from mtkfs.testing.qemu_uboot import SEED_003_BOOTLOG, SEED_003_MTD

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(300),
]

NOR_BYTES = 16 << 20
PARTS = {name: (start, end - start) for name, start, end in SEED_003_MTD}
MTIME_S = 1_500_000_000


def _rootfs_tree(root: Path) -> Path:
    files = {
        "etc/back.bin": pseudo_random("content/back.bin", 1500) + b"ssid=cam\0" * 40,
        "etc/init.d/rcS": b"#!/bin/sh\nmount -a\n",
        "bin/busybox": pseudo_random("content/busybox", 200_000),
        "usr/share/big.log": b"".join(b"line %06d ok\n" % i for i in range(20_000)),
        "home/empty": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        (root / rel).chmod(0o644)
    (root / "bin/busybox").chmod(0o755)
    (root / "etc/init.d/rcS").chmod(0o750)
    (root / "mnt/sd").mkdir(parents=True)
    (root / "bin/sh").symlink_to("busybox")
    for i, path in enumerate(sorted([root, *root.rglob("*")])):
        os.utime(path, (MTIME_S + i, MTIME_S + i), follow_symlinks=False)
    return root


def _home_tree(root: Path) -> Path:
    (root / "cfg").mkdir(parents=True)
    (root / "cfg/wifi.conf").write_bytes(b"ssid=home\npsk=secret\n")
    (root / "app.bin").write_bytes(pseudo_random("content/app", 50_000))
    return root


def _assert_same_tree(view: Path, source: Path) -> None:
    """Every entry of ``source`` is in ``view`` with the same type, bytes, target and mode;
    and ``view`` holds nothing else."""
    seen = set()
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        seen.add(rel)
        got = view / rel
        mode = path.lstat().st_mode
        assert stat.S_IFMT(got.lstat().st_mode) == stat.S_IFMT(mode), rel
        assert stat.S_IMODE(got.lstat().st_mode) == stat.S_IMODE(mode), rel
        assert int(got.lstat().st_mtime) == int(path.lstat().st_mtime), rel
        if path.is_symlink():
            assert os.readlink(got) == os.readlink(path), rel
        elif path.is_file():
            assert got.read_bytes() == path.read_bytes(), rel
    extra = {p.relative_to(view) for p in view.rglob("*")} - seen
    assert not extra, extra


@pytest.fixture(scope="module")
def nor(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The NOR image, its map, and the source trees (HOME's app.bin overwritten on flash)."""
    folder = tmp_path_factory.mktemp("nor")
    rootfs_src = _rootfs_tree(folder / "rootfs")
    home_src = _home_tree(folder / "home")
    rootfs = jb.mkfs_jffs2(rootfs_src, folder / "rootfs.jffs2", endian="<",
                           options=("-x", "rtime"))  # fmt: skip
    home = jb.mkfs_jffs2(home_src, folder / "home.jffs2", endian=">",
                         options=("-x", "zlib", "-x", "rtime"))  # fmt: skip
    # The device later rewrote 4 KiB in the middle of app.bin: a newer node in erased space.
    app = next(d for d in jb.dirents(home, ">") if d.name == b"app.bin")
    patch = pseudo_random("content/app-patch", 4096)
    newer = jb.inode_node(">", ino=app.ino, version=1000, mode=0o100644, isize=50_000,
                          offset=8192, data=patch, mtime_s=MTIME_S + 99)  # fmt: skip
    home += b"\xff" * (-len(home) % (64 << 10)) + newer
    data = bytearray(b"\xff" * NOR_BYTES)
    for name, image in (("ROOTFS", rootfs), ("HOME", home)):
        start, size = PARTS[name]
        data[start : start + len(image)] = jb.pad_erased(image, size)[: len(image)]
    data[PARTS["BOOT"][0] : PARTS["BOOT"][0] + 0x40000] = pseudo_random("content/boot", 0x40000)
    (folder / "nor.bin").write_bytes(bytes(data))
    (folder / "nor-swapped.bin").write_bytes(jb.word_swap(bytes(data)))
    (folder / "bootlog.txt").write_text(SEED_003_BOOTLOG)
    expected_home = folder / "home-expected"
    _home_tree(expected_home)
    app_bytes = bytearray((expected_home / "app.bin").read_bytes())
    app_bytes[8192 : 8192 + 4096] = patch
    (expected_home / "app.bin").write_bytes(bytes(app_bytes))
    for path in sorted([expected_home, *expected_home.rglob("*")]):
        src = home_src / path.relative_to(expected_home)
        os.utime(path, (src.lstat().st_mtime,) * 2)
    os.utime(expected_home / "app.bin", (MTIME_S + 99,) * 2)
    return {"folder": folder, "rootfs": rootfs_src, "home": expected_home}


@pytest.mark.parametrize("image", ["nor.bin", "nor-swapped.bin"])
def test_jffs2_partitions_browse_byte_equal(nor: dict[str, Path], image: str, tmp_path: Path
                                            ) -> None:  # fmt: skip
    folder = nor["folder"]
    with mounted(folder / image, tmp_path / "mnt", "--map", str(folder / "bootlog.txt")) as mnt:
        report = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        content = {p["name"]: p["content"] for p in report["partitions"]}
        assert content["ROOTFS"]["kind"] == content["HOME"]["kind"] == "jffs2"
        assert content["ROOTFS"]["word_swapped"] is (image == "nor-swapped.bin")
        assert content["vd1"]["kind"] == "erased"
        assert sorted(p.name for p in mnt.glob("*.files")) == ["HOME.files", "ROOTFS.files"]
        _assert_same_tree(mnt / "ROOTFS.files", nor["rootfs"])
        assert (mnt / "ROOTFS.files/etc/back.bin").read_bytes() == (
            nor["rootfs"] / "etc/back.bin"
        ).read_bytes()
        _assert_same_tree(mnt / "HOME.files", nor["home"])
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["views"]["ROOTFS"]["loaded"] is True
        swapped = any("word-swapped" in w for w in status["views"]["ROOTFS"]["warnings"])
        assert swapped is (image == "nor-swapped.bin")
        # Detection read a few KiB per partition, nothing more.
        detection = json.loads((mnt / ".mtkfs" / "stats.json").read_text())["detection"]
        assert detection["bytes_read"] <= len(SEED_003_MTD) * 5 * 1024


def test_a_damaged_jffs2_gives_a_partial_view_and_the_daemon_lives(
    nor: dict[str, Path], tmp_path: Path
) -> None:
    data = bytearray((nor["folder"] / "nor.bin").read_bytes())
    start, _ = PARTS["ROOTFS"]
    rng = random.Random(11)
    for _ in range(200):  # spray the used part of ROOTFS, past its first nodes
        data[start + rng.randrange(4096, 0x40000)] = rng.randrange(256)
    image = tmp_path / "damaged.bin"
    image.write_bytes(bytes(data))
    bootlog = nor["folder"] / "bootlog.txt"
    with mounted(image, tmp_path / "mnt", "--map", str(bootlog)) as mnt:
        view = mnt / "ROOTFS.files"
        listing = list(view.rglob("*"))
        readable = 0
        for path in listing:
            if path.is_file() and not path.is_symlink():
                try:
                    path.read_bytes()
                    readable += 1
                except OSError as exc:
                    assert exc.errno == 5, exc  # EIO for that file only
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["views"]["ROOTFS"]["warnings"], "damage must be reported"
        assert (mnt / "HOME.files/cfg/wifi.conf").read_bytes() == b"ssid=home\npsk=secret\n"
        assert status["state"] == "mounted"
        assert readable >= 1


def test_a_boot_image_with_mediatek_headers_browses(p70a_rw: Layout, tmp_path: Path) -> None:
    """boot.img made by mkbootimg with MTK-wrapped kernel and ramdisk, written into the
    P-70A readback's boot partition: boot.files/ has them byte-equal, headers stripped."""
    kernel = pseudo_random("content/kernel", 300_000)
    cpio = newc([("init", 0o100750, b"\x7fELF init"), ("init.rc", 0o100644, b"on boot\n")])
    ramdisk = gzip.compress(cpio, mtime=0)
    (tmp_path / "k").write_bytes(mtk(b"KERNEL", kernel))
    (tmp_path / "r").write_bytes(mtk(b"ROOTFS", ramdisk))
    subprocess.run(["mkbootimg", "--kernel", str(tmp_path / "k"), "--ramdisk",
                    str(tmp_path / "r"), "--cmdline", "console=ttyMT0 bootopt=64S3",
                    "-o", str(tmp_path / "boot.img")], check=True)  # fmt: skip
    boot = p70a_rw.by_name("boot")
    with (p70a_rw.folder / "User").open("r+b") as f:
        f.seek(boot.offset_bytes)
        f.write((tmp_path / "boot.img").read_bytes())
    with mounted(p70a_rw.folder, tmp_path / "mnt") as mnt:
        files = mnt / "boot.files"
        assert (files / "kernel").read_bytes() == kernel
        assert (files / "ramdisk").read_bytes() == ramdisk
        assert (files / "ramdisk.d" / "init.rc").read_bytes() == b"on boot\n"
        text = (files / "header.txt").read_text()
        assert "cmdline: console=ttyMT0 bootopt=64S3" in text
        assert "MediaTek header 'KERNEL'" in text
        listing = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        kinds = {p["name"]: p["content"]["kind"] for p in listing["partitions"]}
        assert kinds["boot"] == "android-boot"
