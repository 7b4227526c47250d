"""Real U-Boot 2023.01 under QEMU (Debian's qemu-system-arm and u-boot-qemu), reached the way
a board's UART is: mtkfs opens QEMU's serial port as ``uboot:socket://127.0.0.1:PORT``, stops
autoboot, learns the prompt and reads the flash through ``virtio read``/``md``/``crc32``.

The board (mtkfs.testing.qemu_uboot): a virtio disk with a GPT (one partition ext4), and CFI NOR
mapped into memory holding a 16 MiB region laid out with seed 003's MTD lines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import fuse_available, loop_available
from mounting import loop_mounted, mounted
from test_sim_mount import sha256_of

from mtkfs.testing.disk import pseudo_random
from mtkfs.testing.qemu_uboot import UbootBoard, build_uboot_board, qemu_available, running_uboot

_fuse_ok, _fuse_why = fuse_available()
_loop_ok, _loop_why = loop_available()
_qemu_ok, _qemu_why = qemu_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.skipif(not _qemu_ok, reason=_qemu_why),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> UbootBoard:
    return build_uboot_board(tmp_path_factory.mktemp("qemu-board"))


def _listing(mnt: Path) -> list[dict[str, object]]:
    partitions: list[dict[str, object]] = json.loads((mnt / ".mtkfs" / "map.json").read_text())[
        "partitions"
    ]
    return [p for p in partitions if p["exposed"]]


def test_virtio_disk_partitions_equal_the_image_and_ext4_loop_mounts(
    board: UbootBoard, tmp_path: Path
) -> None:
    with running_uboot(board) as qemu:
        args = ("--flash", "virtio", "--no-cache-dir")
        with mounted(f"uboot:{qemu.url}", tmp_path / "mnt", *args) as mnt:
            listing = _listing(mnt)
            assert listing, "no partitions found on the virtio disk"
            for entry in listing:
                assert sha256_of(mnt / str(entry["file"])) == sha256_of(
                    board.disk, int(str(entry["offset"])), int(str(entry["size"]))
                ), entry["name"]
            if _loop_ok:
                ext4 = next(e for e in listing if e["name"] == board.ext4_partition)
                with loop_mounted(mnt / str(ext4["file"]), tmp_path / "fs") as target:
                    assert (target / "etc" / "hostname").read_text().strip()
            stats = json.loads((mnt / ".mtkfs" / "stats.json").read_text())["transport"]
            assert stats["uboot_dumps"] > 0 and stats["uboot_erased_chunks"] > 0


def test_nor_region_with_seed_003_map(board: UbootBoard, tmp_path: Path) -> None:
    with running_uboot(board) as qemu:
        flash = f"mem:{board.nor_base:#x}:{board.nor_size}"
        args = ("--flash", flash, "--map", str(board.bootlog), "--no-cache-dir")
        with mounted(f"uboot:{qemu.url}", tmp_path / "mnt", *args) as mnt:
            names = {str(e["name"]) for e in _listing(mnt)}
            assert {"BOOT", "KERNEL", "ROOTFS", "HOME", "vd1", "conf"} <= names
            for entry in _listing(mnt):
                expected = board.read("nor", int(str(entry["offset"])), int(str(entry["size"])))
                assert (mnt / str(entry["file"])).read_bytes() == expected, entry["name"]


def test_writes_are_verified_and_the_cfi_nor_that_lies_gives_eio(
    board: UbootBoard, tmp_path: Path
) -> None:
    """A write to the virtio disk is committed and verified (loady, crc32, virtio write, read
    back, crc32). Every 1 KiB block ends in 0x1A 0x1A 0x1A, which U-Boot's loadx would strip
    (shifting the data); loady, told the length, keeps them. QEMU's CFI NOR prints "done"
    for multi-KiB cp.b writes that do not stick: mtkfs must report EIO, never success."""
    data = bytearray(pseudo_random("uboot/write", 96 << 10))
    for end in range(1024, len(data) + 1, 1024):
        data[end - 3 : end] = b"\x1a\x1a\x1a"
    data = bytes(data)
    rw = ("-o", "rw", "--no-cache-dir", "--journal-dir", str(tmp_path / "journal"))
    virtio = ("--flash", "virtio", *rw)
    with (
        running_uboot(board) as qemu,
        mounted(f"uboot:{qemu.url}", tmp_path / "mnt", *virtio) as mnt,
    ):
        target = next(e for e in _listing(mnt) if e["name"] == board.scratch_partition)
        done = subprocess.run(
                ["dd", f"of={mnt / str(target['file'])}", "conv=notrunc,fsync", "status=none"],
                input=data, capture_output=True, check=False,
            )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (mnt / str(target["file"])).read_bytes()[: len(data)] == data
    with running_uboot(board) as qemu:
        flash = f"mem:{board.nor_base:#x}:{board.nor_size}:256k"
        args = ("--flash", flash, "--map", str(board.bootlog), *rw)
        with mounted(f"uboot:{qemu.url}", tmp_path / "mnt2", *args) as mnt:
            failed = subprocess.run(
                ["dd", f"of={mnt / 'HOME.img'}", "bs=64k", "conv=notrunc,fsync", "status=none"],
                input=data[: 64 << 10], capture_output=True, check=False,
            )  # fmt: skip
            assert failed.returncode != 0 and b"Input/output error" in failed.stderr
            status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
            assert status["state"] == "failsafe"
            # EIO for the right reason: U-Boot's crc32 of the flash after the write.
            failures = " ".join(str(f) for f in status["writes"]["failures"])
            assert "crc32 of the flash" in failures, failures
