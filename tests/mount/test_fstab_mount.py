"""``mount -t fuse.mtkfs`` and /etc/fstab lines, through the real mount(8) and mount.fuse3.

mount(8) runs /sbin/mount.fuse3, which runs ``mtkfs SOURCE MNT -o OPTIONS``; what must hold is
what users see: the command returns once the files are there, with the right bytes, fstab-style
options take effect, mount(8)'s own options are ignored, a bad option is refused with mtkfs's
message, and umount(8) or ``mtkfs umount`` ends the daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mounting
import pytest
from helpers import fuse_available
from mount8 import mount8, shared_folder
from mounting import force_unmount, is_mounted, mtkfs
from seeds import SEED_000_DD, SEED_000_DUMCHAR

from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
_mount8_ok = os.geteuid() == 0 and bool(shutil.which("unshare"))
_mount8_ok = _mount8_ok and any(
    os.path.exists(p) for p in ("/sbin/mount.fuse3", "/sbin/mount.fuse")
)
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.skipif(not _mount8_ok, reason="needs root, unshare and /sbin/mount.fuse3"),
    pytest.mark.timeout(600),
]

MiB = 1 << 20


def sha256_of(path: Path, offset: int = 0, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as stream:
        left = os.fstat(stream.fileno()).st_size - offset if size is None else size
        while left > 0:
            block = os.pread(stream.fileno(), min(4 * MiB, left), offset)
            assert block, f"{path} ended early at {offset}"
            digest.update(block)
            offset += len(block)
            left -= len(block)
    return digest.hexdigest()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder whose mounts the namespace of :func:`mount8.mount8` shares with this test."""
    with shared_folder(tmp_path / "shared") as folder:
        try:
            yield folder
        finally:
            force_unmount(folder / "mnt")


def mount(*args: str | Path, shared: Path) -> subprocess.CompletedProcess[str]:
    return mount8(*args, shared=shared, env=mounting.ENV)


def daemon_pid(mnt: Path) -> int:
    return int(json.loads((mnt / ".mtkfs" / "status.json").read_text())["pid"])


def fs_options(mnt: Path) -> tuple[str, list[str]]:
    """(fstype, options) of the mount at ``mnt``, from findmnt."""
    out = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,OPTIONS", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert out, f"nothing mounted at {mnt}"
    return out[0], out[1].split(",")


def assert_daemon_exits(pid: int, timeout_s: float = 30) -> None:
    """The daemon is gone (a zombie of a container's init counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1][:1] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"daemon {pid} still running {timeout_s} s after the unmount")


def umount8(mnt: Path) -> None:
    """umount(8), the way fstab mounts are taken down; the daemon must follow."""
    pid = daemon_pid(mnt)
    done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert not is_mounted(mnt)
    assert_daemon_exits(pid)


# -- mount -t fuse.mtkfs ------------------------------------------------------------------------


def test_mount_t_fuse_mtkfs_with_an_image(p70a: Layout, shared: Path) -> None:
    image = p70a.regions["user"]  # the User readback: one file with a GPT
    mnt = shared / "mnt"
    mnt.mkdir()
    result = mount("-t", "fuse.mtkfs", image, mnt, "-o", "ro", shared=shared)
    assert result.returncode == 0, result.stderr
    # mount(8) returned: the mount is there and answers (mtkfs waited for READY).
    fstype, options = fs_options(mnt)
    assert fstype == "fuse.mtkfs" and "ro" in options
    assert "nodev" in options and "nosuid" in options  # mount.fuse3's dev,suid were dropped
    status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
    assert status["read_only"] is True and status["source"] == f"image {image} (user)"
    user = [p for p in p70a.partitions if p.region == "user"]
    assert sorted(p.name for p in user) == sorted(
        f.removesuffix(".img") for f in os.listdir(mnt) if f.endswith(".img")
    )
    for part in user:
        path = mnt / f"{part.name}.img"
        assert path.stat().st_size == part.size_bytes, part.name
        if part.size_bytes <= 64 * MiB:
            assert sha256_of(path) == sha256_of(image, part.offset_bytes, part.size_bytes), (
                part.name
            )
    umount8(mnt)


def test_mount_t_fuse_mtkfs_with_a_simulated_phone(p70a_rw: Layout, shared: Path) -> None:
    mnt = shared / "mnt"
    mnt.mkdir()
    source = f"sim:mt6765:{p70a_rw.folder}"
    result = mount("-t", "fuse.mtkfs", source, mnt, "-o", "ro,io_timeout=5", shared=shared)
    assert result.returncode == 0, result.stderr
    status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
    assert "in preloader mode on a simulator backed by" in status["source"]
    boot = p70a_rw.by_name("boot")
    assert sha256_of(mnt / "boot.img") == sha256_of(
        p70a_rw.folder / "User", boot.offset_bytes, boot.size_bytes
    )
    assert sha256_of(mnt / "regions" / "boot1.img") == sha256_of(p70a_rw.folder / "Boot1")
    stats = json.loads((mnt / ".mtkfs" / "stats.json").read_text())
    assert stats["transport"]["da_commands"] > 0  # really through the DA client
    pid = daemon_pid(mnt)
    done = mtkfs("umount", mnt)
    assert done.returncode == 0, done.stderr
    assert not is_mounted(mnt)
    assert_daemon_exits(pid)


def test_a_bad_option_is_refused_with_mtkfs_s_message(p70a: Layout, shared: Path) -> None:
    mnt = shared / "mnt"
    mnt.mkdir()
    result = mount(
        "-t", "fuse.mtkfs", p70a.folder, mnt, "-o", "ro,cache_size=1G,bogus", shared=shared
    )
    assert result.returncode != 0
    assert "mtkfs: error: unknown mount option bogus; supported: ro, rw," in result.stderr
    assert "Traceback" not in result.stderr
    assert not is_mounted(mnt)


# -- /etc/fstab ---------------------------------------------------------------------------------


def test_an_fstab_line_with_systemd_options_and_a_map(
    s650: Layout, shared: Path, tmp_path: Path
) -> None:
    dumchar = tmp_path / "dumchar_info.txt"
    dumchar.write_text(SEED_000_DUMCHAR)
    mnt = shared / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    options = [
        "ro", "noauto", "nofail", "x-systemd.automount", "x-systemd.idle-timeout=5min",
        f"map={dumchar}", "cache_size=32M", "comment=phone",
    ]  # fmt: skip
    fstab.write_text(
        "# mtkfs test\n"
        f"{s650.folder}  {mnt}  fuse.mtkfs  {','.join(options)}  0 0\n"
    )  # fmt: skip
    result = mount("--fstab", fstab, mnt, shared=shared)
    assert result.returncode == 0, result.stderr
    # map= took effect: the dumchar_info names, not the MBR's p2…p8.
    names = {f.removesuffix(".img") for f in os.listdir(mnt) if f.endswith(".img")}
    assert set(SEED_000_DD) <= names and "p5" not in names
    user = s650.regions["user"]
    for name, (skip_kib, count_kib) in SEED_000_DD.items():
        if count_kib * 1024 <= 64 * MiB:
            assert sha256_of(mnt / f"{name}.img") == sha256_of(
                user, skip_kib * 1024, count_kib * 1024
            ), name
    # cache_size=32M reached the daemon.
    daemon = Path(f"/proc/{daemon_pid(mnt)}/cmdline").read_bytes().split(b"\0")
    assert daemon[daemon.index(b"--cache-size") + 1] == str(32 * MiB).encode()
    umount8(mnt)


def test_a_line_without_ro_stays_read_only_and_writable_opts_in(
    p70a_rw: Layout, shared: Path, tmp_path: Path
) -> None:
    """mount(8) passes ``rw`` whenever the line does not say ``ro``: that is its default, not
    a decision, so mtkfs stays read-only; the word ``writable`` makes the mount read-write."""
    mnt = shared / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{p70a_rw.folder} {mnt} fuse.mtkfs noauto,journal_dir={tmp_path}/j 0 0\n")
    result = mount("--fstab", fstab, mnt, shared=shared)
    assert result.returncode == 0, result.stderr
    assert json.loads((mnt / ".mtkfs" / "status.json").read_text())["read_only"] is True
    assert "ro" in fs_options(mnt)[1]
    umount8(mnt)
    fstab.write_text(
        f"{p70a_rw.folder} {mnt} fuse.mtkfs noauto,writable,journal_dir={tmp_path}/j 0 0\n"
    )
    result = mount("--fstab", fstab, mnt, shared=shared)
    assert result.returncode == 0, result.stderr
    assert json.loads((mnt / ".mtkfs" / "status.json").read_text())["read_only"] is False
    assert "rw" in fs_options(mnt)[1]
    umount8(mnt)


def test_the_program_path_form_needs_no_install(p70a: Layout, tmp_path: Path) -> None:
    """``-t fuse`` with ``/path/to/mtkfs#SOURCE``: mount.fuse3 runs that file, PATH or not —
    the way to mount from a venv without linking mtkfs into /usr/local/bin."""
    program = Path(sys.executable).parent / "mtkfs"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    image = p70a.regions["user"]
    try:
        result = subprocess.run(
            ["mount", "-t", "fuse", f"{program}#{image}", str(mnt), "-o", "ro,noauto,no_map"],
            capture_output=True,
            text=True,
            env=mounting.ENV,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(mnt)) == [".mtkfs", "regions"]  # no_map: only the region
        region = mnt / "regions" / "user.img"
        assert region.stat().st_size == image.stat().st_size
        system = p70a.by_name("system")  # the bytes of a partition, read through the region
        assert sha256_of(region, system.offset_bytes, 16 * MiB) == sha256_of(
            image, system.offset_bytes, 16 * MiB
        )
        pid = daemon_pid(mnt)
        done = mtkfs("umount", mnt)
        assert done.returncode == 0, done.stderr
        assert_daemon_exits(pid)
    finally:
        force_unmount(mnt)
