"""A rooted Android phone mounted through Debian's real adb server: the fake phone of
mtkfs.testing.sim_adbd attached with ``adb connect``, mtkfs speaking the smart-socket protocol
to the server. Three generations: Android 12 (shell v2, the P-70A's GPT eMMC, by-name links —
some with hostile names), Android 6 (``exec:``; writes pushed with ``sync:``) and Android 4.4
(legacy cooked ``shell:``, seed 000's S650 with its ``/proc/dumchar_info`` and MBR/EBR; data
both ways through temp files and ``sync:``)."""

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
            assert_partitions_equal(mnt, p70a, whole_bytes=512 << 20)
            if _loop_ok:
                with loop_mounted(mnt / "system.img", tmp_path / "sys") as target:
                    assert "ro.board.platform" in (target / "build.prop").read_text()
        # Device text never reached a command: only validated paths and numbers did.
        for command in phone.commands:
            for hostile in (";reboot", "$(id)", "`reboot`", "../", "\n", "-rf"):
                assert hostile not in command, command
        assert any(c.startswith("su -c 'dd if=/dev/block/mmcblk0 ") for c in phone.commands)


@pytest.mark.parametrize("corrupt", [False, True], ids=["verified", "corrupted-store"])
@pytest.mark.parametrize(
    ("profile", "fixture", "boot"),
    [("android12", "p70a_rw", "boot"), ("android6", "p70a_rw", "boot"),
     ("android44", "s650_rw", "bootimg")],
)  # fmt: skip
def test_a_write_through_adb_is_verified_on_the_phone(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corrupt: bool,
    profile: str,
    fixture: str,
    boot: str,
) -> None:
    """``dd conv=fsync`` into the boot partition: written through shell v2's stdin (Android
    12) or pushed with ``sync:`` and copied by ``dd`` on the phone (6, 4.4), then verified by
    the phone's ``sha256sum`` of the range (12, 6) or read back past its block cache (4.4,
    whose toolbox has no hash tool); a phone whose flash stores a flipped bit fails fsync with
    EIO and the mount turns failsafe."""
    layout: Layout = request.getfixturevalue(fixture)
    data = pseudo_random("adb/boot", 300_000)
    faults = Faults(corrupt_store=corrupt)
    args = ("-o", "rw", "--journal-dir", str(tmp_path / "journal"))
    with running_device(profile, layout, faults=faults) as phone, adb_server() as server:
        server.connect(phone.serial)
        monkeypatch.setitem(mounting.ENV, "ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        with mounted(f"adb:{phone.serial}", tmp_path / "mnt", *args) as mnt:
            result = subprocess.run(
                ["dd", f"of={mnt / f'{boot}.img'}", "conv=notrunc,fsync", "status=none"],
                input=data,
                capture_output=True,
                check=False,
            )
            status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
            where = partition_entry(mnt, boot)
        if corrupt:
            assert result.returncode != 0 and b"Input/output error" in result.stderr
            assert status["state"] == "failsafe"
        else:
            assert result.returncode == 0, result.stderr
            assert status["writes"]["failures"] == []
            assert any("conv=notrunc,fsync" in c for c in phone.commands)
        hashed = any("| sha256sum" in c for c in phone.commands)
        assert hashed == (profile != "android44")
        if profile != "android12":
            assert "sync:" in phone.services  # the bytes went by SEND, not through a PTY
    if not corrupt:
        assert region_bytes(layout, *where, len(data)) == data


def partition_entry(mnt: Path, name: str) -> tuple[str, int]:
    """Where the mount says partition ``name`` lies: (region, offset in bytes)."""
    listing = json.loads((mnt / ".mtkfs" / "map.json").read_text())
    entry = next(p for p in listing["partitions"] if p["name"] == name)
    return str(entry["region"]), int(entry["offset"])


def region_bytes(layout: Layout, region: str, offset_bytes: int, size_bytes: int) -> bytes:
    """Bytes of the fake phone's flash, straight from the layout's region file."""
    with layout.regions[region].open("rb") as f:
        f.seek(offset_bytes)
        return f.read(size_bytes)


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


#: Partitions too big to compare whole are compared in windows of this size: Android 4.4 moves
#: ~20 MB/s through its temp file and sync:, and the S650 holds 7 GiB; the P-70A holds 14.
_WINDOW_BYTES = 4 << 20


def assert_partitions_equal(mnt: Path, layout: Layout, whole_bytes: int = 128 << 20) -> None:
    """Every partition file of the mount equals the fake phone's flash: whole up to
    ``whole_bytes``, in 4 MiB windows (start, every 256 MiB, end) beyond."""
    listing = json.loads((mnt / ".mtkfs" / "map.json").read_text())
    for entry in listing["partitions"]:
        if not entry["exposed"]:
            continue
        region, offset, size = entry["region"], entry["offset"], entry["size"]
        windows = (
            [(0, size)]
            if size <= whole_bytes
            else [(at, _WINDOW_BYTES) for at in range(0, size, 256 << 20)]
            + [(size - _WINDOW_BYTES, _WINDOW_BYTES)]
        )
        with (mnt / entry["file"]).open("rb") as f:
            for at, length in windows:
                f.seek(at)
                expected = region_bytes(layout, region, offset + at, length)
                assert f.read(length) == expected, (entry["name"], hex(at))


def test_android44_phone_of_seed_000_through_the_real_adb_server(
    s650: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 000's Lenovo S650 on Android 4.4: no shell v2, no exec:, a cooked PTY. The map is
    the phone's ``/proc/dumchar_info`` (it names what the unnamed MBR/EBR numbers, and agrees
    with them); every partition file equals the eMMC's bytes (whole up to 128 MiB, in windows
    beyond); the ext4 system partition loop-mounts; device text never reaches a command."""
    with running_device("android44", s650, hostile=True) as phone, adb_server() as server:
        server.connect(phone.serial)
        monkeypatch.setitem(mounting.ENV, "ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        with mounted(f"adb:{phone.serial}", tmp_path / "mnt") as mnt:
            listing = json.loads((mnt / ".mtkfs" / "map.json").read_text())
            assert listing["map"].startswith("dumchar_info")
            names = [p["name"] for p in listing["partitions"]]
            assert {"preloader", "nvram", "bootimg", "recovery", "android", "usrdata"} <= set(names)
            assert_partitions_equal(mnt, s650)
            if _loop_ok:
                with loop_mounted(mnt / "android.img", tmp_path / "sys") as target:
                    assert (target / "build.prop").read_text()
        for command in phone.commands:
            for hostile in (";reboot", "$(id)", "../", "\n"):
                assert hostile not in command, command
        assert "sync:" in phone.services  # binary data came by sync:, never through the PTY
        assert not any(s.startswith(("exec:", "shell,v2")) for s in phone.services)


def test_info_on_a_userdebug_phone_gets_root_with_adb_root(
    p70a: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No su on this build: ``adb root`` restarts adbd as root (the phone drops off the server
    and comes back), and ``mtkfs info`` says what it found."""
    with running_device("android12-userdebug", p70a) as phone, adb_server() as server:
        server.connect(phone.serial)
        monkeypatch.setitem(mounting.ENV, "ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{server.port}")
        done = mounting.mtkfs("info", f"adb:{phone.serial}")
        assert done.returncode == 0, done.stderr
        assert "root by adbd" in done.stdout
        assert "mtkfs sim android12-userdebug, Android 12 (SDK 31)" in done.stdout
        assert "root:" in phone.services
        assert not any(c.startswith("su ") for c in phone.commands)
