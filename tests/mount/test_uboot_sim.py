"""The uboot: transport against the U-Boot console simulator (mtkfs.testing.sim_uboot), for
what QEMU's U-Boot cannot show: SPI NOR behind ``sf``, big-endian boards, and faults on the
line — garbled and dropped lines, resets in the middle of a dump, wrong CRCs, lost keystrokes.

The NOR is the fixture of mtkfs.testing.disk.build_nor (16 MiB, ``mtdparts=`` map)."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import fuse_available
from mounting import force_unmount, foreground_daemon, mounted

from mtkfs.testing.disk import Layout, build_nor, pseudo_random
from mtkfs.testing.sim_uboot import ConsoleFaults, SimBoard, SpiNor, running_console
from mtkfs.testing.sim_uboot_board import Emmc, Nand

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def nor(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_nor(tmp_path_factory.mktemp("nor"))


def _board(flash: Path, **kwargs: object) -> SimBoard:
    fast = {"banner_delay_s": 0.02, "autoboot_step_s": 0.1, "boot_script_s": 0.2}
    return SimBoard(sf=SpiNor(flash), **{**fast, **kwargs})  # type: ignore[arg-type]


def _with_sub_runs(data: bytes, at: int) -> bytes:
    """``data`` (to be written at ``at``, a 1 KiB-aligned place in the flash) with 0x1A 0x1A
    0x1A ending every 1 KiB block of flash it covers: XMODEM's padding look-alike."""
    out = bytearray(data)
    for end in range(-at % 1024 or 1024, len(out) + 1, 1024):
        if end >= 3:
            out[end - 3 : end] = b"\x1a\x1a\x1a"
    return bytes(out)


def _stats(mnt: Path) -> dict[str, int]:
    stats: dict[str, int] = json.loads((mnt / ".mtkfs" / "stats.json").read_text())["transport"]
    return stats


@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_sf_nor_partitions_are_byte_exact_on_both_byte_orders(
    nor: Layout, tmp_path: Path, byte_order: str
) -> None:
    """md.l prints words in the CPU's order: mtkfs learns it and never hands out a swapped
    dump (seed 003's dump.py did)."""
    args = ("--flash", "sf", "--map", str(nor.folder / "mtdparts.txt"), "--no-cache-dir")
    board = _board(nor.regions["flash"], byte_order=byte_order)
    with (
        running_console(board) as console,
        mounted(f"uboot:{console.url}", tmp_path / "mnt", *args) as mnt,
    ):
        for part in nor.partitions:
            assert (mnt / f"{part.name}.img").read_bytes() == nor.read(part.name), part.name
        assert (
            json.loads((mnt / ".mtkfs" / "status.json").read_text())["device"]["byte_order"]
            == byte_order
        )
        stats = _stats(mnt)
        assert stats["uboot_erased_chunks"] > 0  # NOR partitions are mostly erased


def test_1000_faults_during_a_cp_and_the_output_is_byte_exact(nor: Layout, tmp_path: Path) -> None:
    """Garbled and dropped md lines, resets mid-dump, wrong CRCs and lost keystrokes — exactly
    1000 of them, injected while ``cp`` copies the 3 MiB kernel partition in 4 KiB chunks."""
    faults = ConsoleFaults(
        garble_line_rate=0.003,
        drop_line_rate=0.001,
        reset_during_md_rate=0.004,
        wrong_crc_rate=0.01,
        drop_input_char_rate=0.0005,
        seed=3,
        max_faults=1000,
    )
    args = ("--flash", "sf", "--map", str(nor.folder / "mtdparts.txt"), "--no-cache-dir",
            "--chunk-size", "4k", "--io-timeout", "2")  # fmt: skip
    board = _board(nor.regions["flash"])
    with (
        running_console(board, faults=faults) as console,
        mounted(f"uboot:{console.url}", tmp_path / "mnt", *args) as mnt,
    ):
        shutil.copyfile(mnt / "kernel.img", tmp_path / "kernel.img")
        assert (tmp_path / "kernel.img").read_bytes() == nor.read("kernel")
        assert sum(faults.injected.values()) == 1000, faults.injected
        assert all(faults.injected.get(kind, 0) > 0 for kind in (
                "garble_line", "drop_line", "reset_during_md", "wrong_crc", "drop_input_char"
            )), faults.injected  # fmt: skip
        # The daemon is alive and still serves, byte-exact.
        assert (mnt / "uboot.img").read_bytes() == nor.read("uboot")
        stats = _stats(mnt)
        assert stats["uboot_redumps"] > 0 and stats["uboot_reattaches"] > 0


def test_a_killed_mount_resumes_without_dumping_verified_chunks_again(
    nor: Layout, tmp_path: Path
) -> None:
    """The persistent cache (on by default for uboot:): after ``kill -9`` and a new mount, a
    full copy dumps only the chunks never fetched; the others cost one flash read + crc32."""
    cache = tmp_path / "cache"
    args = ("--flash", "sf", "--map", str(nor.folder / "mtdparts.txt"), "--cache-dir",
            str(cache))  # fmt: skip
    kernel = nor.by_name("kernel")
    half = kernel.size_bytes // 2
    with running_console(_board(nor.regions["flash"])) as console:
        with foreground_daemon(f"uboot:{console.url}", tmp_path / "mnt", *args) as daemon:
            with (tmp_path / "mnt" / "kernel.img").open("rb") as f:
                assert f.read(half) == nor.read("kernel", 0, half)
            time.sleep(6)  # the cache index is flushed every 5 s
            first = _stats(tmp_path / "mnt")
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
        force_unmount(tmp_path / "mnt")
        with mounted(f"uboot:{console.url}", tmp_path / "mnt2", *args) as mnt:
            assert (mnt / "kernel.img").read_bytes() == nor.read("kernel")
            second = _stats(mnt)
            hits = json.loads((mnt / ".mtkfs" / "stats.json").read_text())["cache"]["disk_hits"]
    chunk = 64 << 10
    first_half_chunks = half // chunk
    later_chunks_with_data = sum(
        1
        for at in range(half, kernel.size_bytes, chunk)
        if nor.read("kernel", at, chunk) not in (b"\xff" * chunk, b"\x00" * chunk)
    )
    assert first["uboot_dumps"] >= first_half_chunks
    # Every chunk of the first half came from the disk cache, revalidated by crc32 (one flash
    # read + crc32 each, never an md dump); only chunks of the second half were dumped, and
    # those read ahead before the kill were not dumped again either.
    assert hits >= first_half_chunks
    assert 0 < second["uboot_dumps"] <= later_chunks_with_data, (first, second)
    assert second["uboot_crc_commands"] >= first_half_chunks


def test_a_write_to_sf_nor_is_erased_written_and_verified(nor: Layout, tmp_path: Path) -> None:
    """A write into ``data``: loady (YMODEM-1K) into RAM, crc32 = the host's, sf erase of
    whole 4 KiB blocks (the partial ones read first), sf write, sf read + crc32 again.
    Every 1 KiB block of the transfer ends in 0x1A bytes, which loadx would have stripped."""
    flash = tmp_path / "flash.bin"
    shutil.copyfile(nor.regions["flash"], flash)
    at = 1000  # inside the first erase block: a read-modify-write on both ends
    data = _with_sub_runs(pseudo_random("uboot/sf-write", 10_000), at)
    args = ("--flash", "sf", "--map", str(nor.folder / "mtdparts.txt"), "--no-cache-dir",
            "-o", "rw", "--journal-dir", str(tmp_path / "journal"))  # fmt: skip
    with running_console(_board(flash)) as console:
        with mounted(f"uboot:{console.url}", tmp_path / "mnt", *args) as mnt:
            done = subprocess.run(
                ["dd", f"of={mnt / 'data.img'}", "bs=1000", f"seek={at // 1000}",
                 "conv=notrunc,fsync", "status=none"],
                input=data, capture_output=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
            assert status["writes"]["failures"] == []
        assert any(line.startswith("sf erase") for line in console.log)
        assert any(line.startswith("loady") for line in console.log)
    part = nor.by_name("data")
    expected = bytearray(nor.read("data", 0, 64 << 10))
    expected[at : at + len(data)] = data
    with flash.open("rb") as f:
        f.seek(part.offset_bytes)
        assert f.read(64 << 10) == bytes(expected)


def test_emmc_behind_mmc_with_its_gpt_and_boot_partitions(p70a: Layout, tmp_path: Path) -> None:
    """The P-70A's eMMC behind ``mmc``: the GPT read from the user area (512-byte blocks), the
    boot partitions through ``mmc dev 0 1|2`` as regions boot1/boot2, partitions byte-exact."""
    board = SimBoard(
        mmc=(Emmc(user=p70a.regions["user"], boot0=p70a.regions["boot1"],
                  boot1=p70a.regions["boot2"]),),
        banner_delay_s=0.02, autoboot_step_s=0.1, boot_script_s=0.2,
    )  # fmt: skip
    args = ("--flash", "mmc", "--no-cache-dir")
    with (
        running_console(board) as console,
        mounted(f"uboot:{console.url}", tmp_path / "mnt", *args) as mnt,
    ):
        for name in ("lk", "seccfg", "nvram"):
            assert (mnt / f"{name}.img").read_bytes() == p70a.read(name), name
        boot1 = p70a.regions["boot1"].read_bytes()
        assert (mnt / "regions" / "boot1.img").read_bytes() == boot1
        assert any(line.startswith("mmc dev 0 1") for line in console.log)


def test_a_keyed_autoboot_stops_with_stop_key(nor: Layout, tmp_path: Path) -> None:
    """CONFIG_AUTOBOOT_KEYED boards wait for their own string during the countdown:
    ``--stop-key`` types it (followed by Ctrl-C, which then gives the fresh prompt lines that
    attaching counts), and the board mounts. (This simulator also lets Ctrl-C interrupt the
    boot that follows an unstopped countdown, so the test shows the key path works, not that
    it was the only way in.)"""
    board = _board(nor.regions["flash"], autoboot_keyed="tpl", boot_script_s=30.0)
    args = ("--flash", "sf", "--map", str(nor.folder / "mtdparts.txt"), "--no-cache-dir",
            "--stop-key", "tpl")  # fmt: skip
    with (
        running_console(board) as console,
        mounted(f"uboot:{console.url}", tmp_path / "mnt", *args) as mnt,
    ):
        assert (mnt / "env.img").read_bytes() == nor.read("env")


def test_raw_nand_bad_block_gives_eio_there_only_and_writes_avoid_it(
    nor: Layout, tmp_path: Path
) -> None:
    """Raw NAND behind ``nand`` with one bad block inside ``kernel``: U-Boot would skip it
    and hand over the next block's bytes, so that block's chunks get EIO at once (known from
    ``nand bad``: no read of it is even sent, and no retries), while the bytes around it and
    every other partition are exact. A write over it is refused before any erase; a write
    elsewhere is erased, written and verified."""
    image = tmp_path / "nand.bin"
    shutil.copyfile(nor.regions["flash"], image)
    bad = 0x200000
    board = SimBoard(
        nand=Nand(image, bad_blocks=frozenset({bad})),
        banner_delay_s=0.02, autoboot_step_s=0.1, boot_script_s=0.2,
    )  # fmt: skip
    args = ("--flash", "nand:16M:128k", "--map", str(nor.folder / "mtdparts.txt"),
            "--no-cache-dir", "-o", "rw", "--journal-dir", str(tmp_path / "journal"))  # fmt: skip
    kernel = nor.by_name("kernel")
    into = bad - kernel.offset_bytes
    data = _with_sub_runs(pseudo_random("uboot/nand-write", 128 << 10), 0)
    with running_console(board) as console:
        with mounted(f"uboot:{console.url}", tmp_path / "mnt", *args) as mnt:
            for name in ("preloader", "uboot", "env"):
                assert (mnt / f"{name}.img").read_bytes() == nor.read(name), name
            with (mnt / "kernel.img").open("rb", buffering=0) as f:
                f.seek(into - (64 << 10))
                assert f.read(64 << 10) == nor.read("kernel", into - (64 << 10), 64 << 10)
                f.seek(into + (128 << 10))
                assert f.read(64 << 10) == nor.read("kernel", into + (128 << 10), 64 << 10)
                f.seek(into)
                with pytest.raises(OSError) as caught:
                    f.read(64 << 10)
                assert caught.value.errno == errno.EIO
            assert not any(
                line.startswith("nand read") and int(line.split()[3], 16) == bad
                for line in console.log
            ), "a known bad block was read"
            # A write across the bad block: refused before anything is erased.
            refused = subprocess.run(
                ["dd", f"of={mnt / 'kernel.img'}", "bs=64k", f"seek={into // (64 << 10)}",
                 "conv=notrunc,fsync", "status=none"],
                input=data, capture_output=True, check=False,
            )  # fmt: skip
            assert refused.returncode != 0 and b"Input/output error" in refused.stderr
            erases = [line for line in console.log if line.startswith("nand erase")]
            assert not any(int(line.split()[2], 16) <= bad < int(line.split()[2], 16)
                           + int(line.split()[3], 16) for line in erases), erases  # fmt: skip
        with mounted(f"uboot:{console.url}", tmp_path / "mnt2", *args) as mnt:
            done = subprocess.run(
                ["dd", f"of={mnt / 'rootfs.img'}", "bs=64k", "conv=notrunc,fsync", "status=none"],
                input=data, capture_output=True, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        assert any(line.startswith("nand write") for line in console.log)
    rootfs = nor.by_name("rootfs")
    with image.open("rb") as f:
        f.seek(rootfs.offset_bytes)
        assert f.read(len(data)) == data
        f.seek(bad)
        assert f.read(128 << 10) == nor.read("kernel", into, 128 << 10), "the bad block changed"
