"""A rooted Android phone mounted through Debian's real adb server: the fake phone of
mtkfs.testing.sim_adbd (Android 12, the P-70A's GPT eMMC, by-name links — some with hostile
names) attached with ``adb connect``, mtkfs speaking the smart-socket protocol to the server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import mounting
import pytest
from helpers import fuse_available, loop_available
from mounting import loop_mounted, mounted
from test_sim_mount import sha256_of

from mtkfs.testing.disk import Layout, pseudo_random
from mtkfs.testing.sim_adbd import Faults, adb_server, running_device

_fuse_ok, _fuse_why = fuse_available()
_loop_ok, _loop_why = loop_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.skipif(shutil.which("adb") is None, reason="adb not installed (make deps)"),
    pytest.mark.timeout(600),
]


def test_android12_phone_through_the_real_adb_server(
    p70a: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_device("android12", p70a, hostile=True) as phone, adb_server() as server:
        server.connect(phone.serial)
        monkeypatch.setitem(mounting.ENV, "ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        with mounted(f"adb:{phone.serial}", tmp_path / "mnt") as mnt:
            status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
            assert phone.serial in status["source"]
            for name in ("lk", "boot", "nvram", "logo", "seccfg"):
                part = p70a.by_name(name)
                assert sha256_of(mnt / f"{name}.img") == sha256_of(
                    p70a.folder / "User", part.offset_bytes, part.size_bytes
                ), name
            if _loop_ok:
                with loop_mounted(mnt / "system.img", tmp_path / "sys") as target:
                    assert "ro.board.platform" in (target / "build.prop").read_text()
        # Device text never reached a command: only validated paths and numbers did.
        for command in phone.commands:
            for hostile in (";reboot", "$(id)", "`reboot`", "../", "\n", "-rf"):
                assert hostile not in command, command
        assert any(c.startswith("su -c 'dd if=/dev/block/mmcblk0 ") for c in phone.commands)


@pytest.mark.parametrize("corrupt", [False, True], ids=["verified", "corrupted-store"])
def test_a_write_through_adb_is_verified_on_the_phone(
    p70a_rw: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: bool
) -> None:
    """``dd conv=fsync`` into boot.img: written through shell v2's stdin, read back past the
    phone's block cache and compared; a phone whose flash stores a flipped bit fails fsync with
    EIO and the mount turns failsafe."""
    data = pseudo_random("adb/boot", 300_000)
    faults = Faults(corrupt_store=corrupt)
    args = ("-o", "rw", "--journal-dir", str(tmp_path / "journal"))
    with running_device("android12", p70a_rw, faults=faults) as phone, adb_server() as server:
        server.connect(phone.serial)
        monkeypatch.setitem(mounting.ENV, "ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        with mounted(f"adb:{phone.serial}", tmp_path / "mnt", *args) as mnt:
            result = subprocess.run(
                ["dd", f"of={mnt / 'boot.img'}", "conv=notrunc,fsync", "status=none"],
                input=data,
                capture_output=True,
                check=False,
            )
            status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        if corrupt:
            assert result.returncode != 0 and b"Input/output error" in result.stderr
            assert status["state"] == "failsafe"
        else:
            assert result.returncode == 0, result.stderr
            assert status["writes"]["failures"] == []
            assert any("conv=notrunc,fsync" in c for c in phone.commands)
    if not corrupt:
        assert p70a_rw.read("boot", 0, len(data)) == data


def test_a_phone_lost_mid_copy_gives_eio_and_the_mount_recovers(
    p70a: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops in the middle of a read: the reader gets EIO, the daemon stays up,
    and once the adb server has the phone again (same serial) the same file reads byte-exact."""
    boot = p70a.by_name("boot")
    expected = sha256_of(p70a.folder / "User", boot.offset_bytes, boot.size_bytes)
    with running_device("android12", p70a) as phone, adb_server() as server:
        server.connect(phone.serial)
        monkeypatch.setitem(mounting.ENV, "ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        with mounted(f"adb:{phone.serial}", tmp_path / "mnt") as mnt:
            phone.faults.disconnect_after_bytes = 3 << 20  # mid-way through boot.img
            failed = subprocess.run(
                ["dd", f"if={mnt / 'boot.img'}", "of=/dev/null", "bs=1M", "status=none"],
                capture_output=True,
                check=False,
            )
            assert failed.returncode != 0
            assert b"Input/output error" in failed.stderr
            deadline = time.monotonic() + 60
            while True:  # the server reconnects the phone by itself (at once or ~10 s later)
                try:
                    assert sha256_of(mnt / "boot.img") == expected
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the phone never came back"
                    time.sleep(1)
            stats = json.loads((mnt / ".mtkfs" / "stats.json").read_text())["transport"]
            assert stats["adb_failed_commands"] >= 1
