"""A simulated MediaTek phone (``sim:``) mounted through the real BROM → DA → XFlash client path.

The phone's eMMC is the P-70A readback (a private copy per test); what the mount shows must be
byte for byte what that eMMC holds, writes must reach it verified, and a phone that demands
authorisation must be refused quickly with a message that says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fuse_available, loop_available
from mounting import is_mounted, loop_mounted, mounted, mtkfs

from mtkfs.testing.content import emmc_boot_preloader
from mtkfs.testing.disk import Layout, pseudo_random

_fuse_ok, _fuse_why = fuse_available()
_loop_ok, _loop_why = loop_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(600),
]


def sha256_of(path: Path, offset: int = 0, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        stream.seek(offset)
        left = size
        while left is None or left > 0:
            block = stream.read(8 << 20 if left is None else min(8 << 20, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def test_sim_phone_partitions_are_the_emmc_bytes(p70a_rw: Layout, tmp_path: Path) -> None:
    source = f"sim:mt6765:{p70a_rw.folder}"
    with mounted(source, tmp_path / "mnt") as mnt:
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert "in preloader mode on a simulator backed by" in status["source"]
        user = p70a_rw.folder / "User"
        for part in p70a_rw.partitions:
            if part.region != "user" or part.size_bytes > 64 << 20:
                continue  # the big ones: system below, userdata is 12 GiB of holes
            assert sha256_of(mnt / f"{part.name}.img") == sha256_of(
                user, part.offset_bytes, part.size_bytes
            ), part.name
        for region, name in (("boot1", "Boot1"), ("boot2", "Boot2")):
            assert sha256_of(mnt / "regions" / f"{region}.img") == sha256_of(p70a_rw.folder / name)
        stats = json.loads((mnt / ".mtkfs" / "stats.json").read_text())
        assert stats["transport"]["da_commands"] > 0


@pytest.mark.loop
@pytest.mark.skipif(not _loop_ok, reason=_loop_why)
def test_sim_phone_system_loop_mounts(p70a_rw: Layout, tmp_path: Path) -> None:
    with (
        mounted(f"sim:mt6765:{p70a_rw.folder}", tmp_path / "mnt") as mnt,
        loop_mounted(mnt / "system.img", tmp_path / "sys") as target,
    ):
        assert "ro.board.platform" in (target / "build.prop").read_text()


def test_sim_phone_write_is_verified_on_its_emmc(p70a_rw: Layout, tmp_path: Path) -> None:
    data = pseudo_random("sim/boot", 300_000)
    args = ("-o", "rw", "--journal-dir", str(tmp_path / "journal"))
    with mounted(f"sim:mt6765:{p70a_rw.folder}", tmp_path / "mnt", *args) as mnt:
        subprocess.run(
            ["dd", f"of={mnt / 'boot.img'}", "conv=notrunc,fsync", "status=none"],
            input=data,
            check=True,
        )
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["writes"]["committed_chunks"] >= 1
        assert status["writes"]["failures"] == []
    assert p70a_rw.read("boot", 0, len(data)) == data


def test_secured_phone_is_refused_quickly_and_clearly(p70a_rw: Layout, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    started = time.monotonic()
    result = mtkfs("mount", f"sim:mt6765-sla:{p70a_rw.folder}", mnt)
    assert time.monotonic() - started < 5
    assert result.returncode == 8, result.stderr
    for words in ("SLA", "DAA", "secure boot", "--da"):
        assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not is_mounted(mnt)


def test_unknown_sim_phone_is_a_clear_error(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = mtkfs("mount", "sim:mt9999", mnt)
    assert result.returncode == 3
    assert "mt6765" in result.stderr and "Traceback" not in result.stderr


@contextlib.contextmanager
def phone_on_a_pty(folder: Path, *args: str, profile: str = "mt6765") -> Iterator[str]:
    """``python -m mtkfs.testing.sim_mtk ARGS PROFILE:FOLDER``: a simulated phone behind a
    pseudo-terminal, as a phone's ttyACM looks; yields its /dev/pts path."""
    phone = subprocess.Popen(
        [sys.executable, "-m", "mtkfs.testing.sim_mtk", *args, f"{profile}:{folder}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert phone.stdout is not None
        pts = phone.stdout.readline().strip()
        assert pts.startswith("/dev/pts/")
        yield pts
    finally:
        phone.kill()
        phone.wait(timeout=10)


def make_da_file(path: Path, *codes: str, v6: bool = False) -> Path:
    """A DA file in the real container format with agents for ``codes`` (``0x6765``…)."""
    subprocess.run(
        [sys.executable, "-m", "mtkfs.testing.dafile_build", str(path), *codes]
        + (["--v6"] if v6 else []),
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture
def da_file(tmp_path: Path) -> Path:
    """A DA file with an agent for the MT6765."""
    return make_da_file(tmp_path / "MTK_AllInOne_DA.bin", "0x6765")


def test_da_over_a_tty_link(p70a_rw: Layout, tmp_path: Path, da_file: Path) -> None:
    """``da:/dev/pts/N``: every partition file (but the 12 GiB userdata: test_sim_faults copies
    it through the in-memory link) and both boot regions are the eMMC's bytes through the real
    tty link; a write of boot.img is verified on the eMMC."""
    data = pseudo_random("tty/boot", 200_000)
    args = ("--da", str(da_file), "-o", "rw", "--journal-dir", str(tmp_path / "journal"))
    with (
        phone_on_a_pty(p70a_rw.folder, "--rw") as pts,
        mounted(f"da:{pts}", tmp_path / "mnt", *args) as mnt,
    ):
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert pts in status["source"]
        checked = 0
        for part in p70a_rw.partitions:
            if part.region != "user" or part.name == "userdata":
                continue
            assert sha256_of(mnt / f"{part.name}.img") == sha256_of(
                p70a_rw.folder / "User", part.offset_bytes, part.size_bytes
            ), part.name
            checked += 1
        assert checked >= 15
        for region, name in (("boot1", "Boot1"), ("boot2", "Boot2")):
            assert sha256_of(mnt / "regions" / f"{region}.img") == sha256_of(p70a_rw.folder / name)
        subprocess.run(
            ["dd", f"of={mnt / 'boot.img'}", "conv=notrunc,fsync", "status=none"],
            input=data,
            check=True,
        )
    assert p70a_rw.read("boot", 0, len(data)) == data


@pytest.mark.loop
@pytest.mark.skipif(not _loop_ok, reason=_loop_why)
def test_system_loop_mounts_over_a_tty_link(p70a: Layout, tmp_path: Path, da_file: Path) -> None:
    with (
        phone_on_a_pty(p70a.folder) as pts,
        mounted(f"da:{pts}", tmp_path / "mnt", "--da", str(da_file)) as mnt,
        loop_mounted(mnt / "system.img", tmp_path / "sys") as target,
    ):
        assert "ro.board.platform" in (target / "build.prop").read_text()


@pytest.mark.parametrize("fault", ["corrupt-write=1", "drop-write=1"])
def test_a_write_that_does_not_stick_is_eio_at_fsync(
    p70a_rw: Layout, tmp_path: Path, da_file: Path, fault: str
) -> None:
    """The phone acknowledges the write but its flash holds other bytes (or none): the
    read-back catches it, fsync fails with EIO, and the mount turns failsafe read-only."""
    chunk = 256 << 10  # the DA transport's chunk: what one write command carries
    before = p70a_rw.read("boot", 0, chunk)
    args = ("--da", str(da_file), "-o", "rw", "--journal-dir", str(tmp_path / "journal"))
    with (
        phone_on_a_pty(p70a_rw.folder, "--rw", "--faults", fault) as pts,
        mounted(f"da:{pts}", tmp_path / "mnt", *args) as mnt,
    ):
        result = subprocess.run(
            ["dd", f"of={mnt / 'boot.img'}", "bs=4096", "conv=notrunc,fsync", "status=none"],
            input=pseudo_random("tty/bad", 4096),
            capture_output=True,
            check=False,
        )
        assert result.returncode != 0
        assert b"Input/output error" in result.stderr
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["writes"]["failures"], status
        assert status["state"] == "failsafe" and status["read_only"], status
    held = p70a_rw.read("boot", 0, chunk)
    if fault.startswith("drop"):
        assert held == before
    else:  # one bit off somewhere in the chunk: what verification caught
        new = pseudo_random("tty/bad", 4096) + before[4096:]
        assert sum(bin(a ^ b).count("1") for a, b in zip(held, new, strict=True)) == 1


def test_brom_mode_sets_dram_up_from_the_phones_preloader(p70a: Layout, tmp_path: Path) -> None:
    """BROM mode: the DA needs DRAM set up with the EMI settings of the phone's own preloader
    (``--preloader``, here the readback's Boot1); without it, or with another model's, the
    mount fails with what to do."""
    source = f"sim:mt6765-brom:{p70a.folder}"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    missing = mtkfs("mount", source, mnt)
    assert missing.returncode == 2, missing.stderr
    assert "--preloader" in missing.stderr and "Traceback" not in missing.stderr
    other = tmp_path / "preloader_other.bin"
    other.write_bytes(emmc_boot_preloader("other/preloader", 256 << 10)[0x800:])
    wrong = mtkfs("mount", source, mnt, "--preloader", str(other))
    assert wrong.returncode == 6, wrong.stderr
    assert "EMI" in wrong.stderr and "--preloader" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    junk = tmp_path / "junk.bin"
    junk.write_bytes(pseudo_random("junk", 65536))
    not_a_preloader = mtkfs("mount", source, mnt, "--preloader", str(junk))
    assert not_a_preloader.returncode == 3, not_a_preloader.stderr
    assert "MTK_BLOADER_INFO" in not_a_preloader.stderr
    too_big = mtkfs("mount", source, mnt, "--preloader", str(p70a.folder / "User"))
    assert too_big.returncode == 3 and "not a preloader" in too_big.stderr
    with mounted(source, mnt, "--preloader", str(p70a.folder / "Boot1")) as mounted_at:
        status = json.loads((mounted_at / ".mtkfs" / "status.json").read_text())
        assert "brom mode" in status["source"]
        assert status["device"]["connection_agent"] == "brom"
        assert status["device"]["usb_speed"] == "high-speed"  # switched from full speed
        boot = p70a.by_name("boot")
        assert sha256_of(mounted_at / "boot.img") == sha256_of(
            p70a.folder / "User", boot.offset_bytes, boot.size_bytes
        )


def test_info_tells_chip_mode_security_protocol_and_storage(p70a: Layout) -> None:
    """``mtkfs info``: what the phone says about itself, without mounting anything."""
    text = mtkfs("info", f"sim:mt6765:{p70a.folder}")
    assert text.returncode == 0, text.stderr
    for words in ("MT6765", "preloader", "security:  none", "xflash DA", "emmc, 512-byte"):
        assert words in text.stdout, text.stdout
    report = json.loads(mtkfs("info", f"sim:mt6768:{p70a.folder}", "--json").stdout)
    assert report["device"]["chip"].startswith("MT6768")
    assert report["device"]["protocol"] == "xflash"
    assert report["regions"]["user"] == p70a.regions["user"].stat().st_size
    secured = mtkfs("info", f"sim:mt6765-sla:{p70a.folder}")
    assert secured.returncode == 8 and "SLA" in secured.stderr
