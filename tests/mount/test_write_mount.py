"""Read-write mounts (``-o rw``) through real FUSE mounts and real tools: dd, mount -o loop, e2fsck.

What these prove, always against the image files themselves (never only what the mount says):

* a write reaches the image at exactly the partition's range, and nothing else changes;
* an ext4 file system inside a partition file can be mounted, changed and checked;
* a write the device does not verify is never reported as done (fsync/close fail with EIO), the
  mount turns failsafe read-only, and the journal keeps the data for replay or rollback;
* protected partitions, whole-region files and the partition layout refuse writes;
* a read-only mount never opens the source for writing;
* dirty data is committed on SIGTERM and by the timer, even while the writer keeps the file open.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import fuse_available, skip_without_loop
from mounting import foreground_daemon, is_mounted, mounted, mtkfs

from mtkfs.testing.content import pseudo_random
from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(300),
]

MiB = 1 << 20
#: Block size of the hole-aware content digest.
_BLOCK = 1 << 16
_ZEROS = bytes(_BLOCK)

#: Protected partitions the P-70A image has (preloader is the boot1 region's content).
PROTECTED = ("preloader", "proinfo", "nvram", "seccfg")


# -- helpers ---------------------------------------------------------------------------------------


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool (dd, cp, mount, …) and capture its output; never raises on failure."""
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=120
    )


def pread(path: Path, offset_bytes: int, size_bytes: int) -> bytes:
    """Bytes of a file, straight from it."""
    with open(path, "rb", buffering=0) as f:
        return os.pread(f.fileno(), size_bytes, offset_bytes)


def _data_blocks(fd: int, start: int, end: int) -> Iterator[int]:
    """Starts of the ``_BLOCK``-sized blocks of ``[start, end)`` (aligned to ``start``) that
    hold any data extent: holes read as zeros and need no reading."""
    position, last = start, -1
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after position
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        for block in range(start + (data - start) // _BLOCK * _BLOCK, hole, _BLOCK):
            if block != last:
                yield block
                last = block
        position = hole


def content_digest(path: Path, offset_bytes: int, size_bytes: int) -> str:
    """SHA-256 of the content of a byte range, fast on sparse multi-GB images.

    Hashes (position, bytes) of every block that is not all zeros: equal for two ranges exactly
    when their bytes are equal, whether the zeros are holes or written zeros.
    """
    digest = hashlib.sha256()
    end = offset_bytes + size_bytes
    with open(path, "rb", buffering=0) as f:
        for block_start in _data_blocks(f.fileno(), offset_bytes, end):
            block = os.pread(f.fileno(), min(_BLOCK, end - block_start), block_start)
            if block != _ZEROS[: len(block)]:
                digest.update(struct.pack("<Q", block_start - offset_bytes))
                digest.update(block)
    return digest.hexdigest()


def status_of(mnt: Path) -> dict[str, Any]:
    return json.loads((mnt / ".mtkfs" / "status.json").read_text())  # type: ignore[no-any-return]


def journal_show(source: Path) -> tuple[int, dict[str, Any]]:
    """``mtkfs journal show SOURCE --json``: (exit code, report)."""
    result = mtkfs("journal", "show", source, "--json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def fails_with(code: int, action: Callable[[], object]) -> None:
    """``action()`` raises OSError with errno ``code``."""
    with pytest.raises(OSError) as info:
        action()
    assert info.value.errno == code, f"{errno.errorcode.get(info.value.errno or 0)}: {info.value}"


def open_close(path: Path, flags: int) -> None:
    os.close(os.open(path, flags))


def chunk_range(mnt: Path, offset_bytes: int, size_bytes: int) -> list[int]:
    """Region offsets of the commit chunks that ``[offset, offset + size)`` touches."""
    chunk = int(status_of(mnt)["cache"]["chunk_bytes"])
    first, last = offset_bytes // chunk, (offset_bytes + size_bytes - 1) // chunk
    return [index * chunk for index in range(first, last + 1)]


def assert_only_changed(layout: Layout, pristine: Layout, changed: set[str]) -> None:
    """Every partition not in ``changed``, the space between them and the boot regions hold
    exactly the pristine image's bytes."""
    user = layout.regions["user"]
    for part in layout.partitions:
        if part.name not in changed:
            assert content_digest(user, part.offset_bytes, part.size_bytes) == content_digest(
                pristine.regions["user"], part.offset_bytes, part.size_bytes
            ), f"{part.name} changed"
    # Outside every partition: the GPTs, the gaps, the 991 sectors past the table's disk.
    ends = sorted((p.offset_bytes, p.offset_bytes + p.size_bytes) for p in layout.partitions)
    edges = [0, *(x for pair in ends for x in pair), user.stat().st_size]
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if start < end:
            assert content_digest(user, start, end - start) == content_digest(
                pristine.regions["user"], start, end - start
            ), f"bytes {start:#x}..{end:#x} outside the partitions changed"
    for region in ("boot1", "boot2"):
        if "preloader" not in changed or region != "boot1":
            assert layout.regions[region].read_bytes() == pristine.regions[region].read_bytes()


def expected_head(layout: Layout, name: str, size_bytes: int = 4096) -> bytes:
    """The first bytes of partition ``name`` in the image (the preloader is boot1's start)."""
    if name == "preloader":
        return pread(layout.regions["boot1"], 0, size_bytes)
    return layout.read(name, 0, size_bytes)


@contextlib.contextmanager
def loop_mounted(device: Path | str, target: Path, *options: str) -> Iterator[Path]:
    """``mount [-o OPTIONS] DEVICE TARGET`` for a with-block; always unmounted after."""
    target.mkdir(exist_ok=True)
    argv = ["mount", *(["-o", ",".join(options)] if options else []), str(device), str(target)]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        yield target
    finally:
        if run("umount", target).returncode != 0:
            run("umount", "-l", target)


def dd_at(
    source: Path, target: Path, offset_bytes: int, *conv: str
) -> subprocess.CompletedProcess[str]:
    """``dd`` all of ``source`` into ``target`` at byte ``offset_bytes`` (never truncating)."""
    return run(
        "dd",
        f"if={source}",
        f"of={target}",
        "bs=64K",
        "oflag=seek_bytes",
        f"seek={offset_bytes}",
        "conv=" + ",".join(("notrunc", *conv)),
        "status=none",
    )


def rw(*extra: str) -> tuple[str, ...]:
    """Mount arguments of a read-write mount that commits only on fsync/close/unmount."""
    return ("-o", "rw", "--commit-interval", "0", *extra)


# -- 1. dd a new boot image -----------------------------------------------------------------------


def test_dd_writes_boot_and_nothing_else(p70a: Layout, p70a_rw: Layout, tmp_path: Path) -> None:
    boot = p70a_rw.by_name("boot")
    user = p70a_rw.regions["user"]
    original = p70a.read("boot")
    # Not a whole number of chunks, and boot does not start on a chunk boundary: the first and
    # last chunks are read-modify-write (lk's tail and boot's rest must survive).
    new_boot = pseudo_random("write/new-boot", 5 * MiB + 12345)
    (tmp_path / "new-boot.img").write_bytes(new_boot)

    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw()) as mnt:
        assert (mnt / "boot.img").stat().st_mode & 0o777 == 0o644
        done = run(
            "dd",
            f"if={tmp_path}/new-boot.img",
            f"of={mnt}/boot.img",
            "bs=1M",
            "conv=notrunc,fsync",
            "status=none",
        )
        assert done.returncode == 0, done.stderr
        # fsync returned: the bytes are in the image file already, not just in the daemon.
        assert pread(user, boot.offset_bytes, len(new_boot)) == new_boot
        status = status_of(mnt)
        writes = status["writes"]
        assert status["state"] == "mounted" and status["failsafe"] is None
        assert status["read_only"] is False
        assert writes["failures"] == [] and writes["failed_chunks"] == 0
        assert writes["dirty_chunks"] == 0 and writes["dirty_bytes"] == 0
        assert writes["written_bytes"] == len(new_boot)
        chunks = chunk_range(mnt, boot.offset_bytes, len(new_boot))
        assert writes["committed_chunks"] == len(chunks)
        assert writes["committed_bytes"] == len(chunks) * status["cache"]["chunk_bytes"]
        assert writes["backup_session"] is not None
        # A fresh open sees the new bytes, through the partition and through the region.
        assert (mnt / "boot.img").read_bytes() == new_boot + original[len(new_boot) :]
        with open(mnt / "regions" / "user.img", "rb", buffering=0) as region:
            assert os.pread(region.fileno(), len(new_boot), boot.offset_bytes) == new_boot
        assert mtkfs("status", mnt).returncode == 0

    assert p70a_rw.read("boot") == new_boot + original[len(new_boot) :]
    assert_only_changed(p70a_rw, p70a, {"boot"})
    code, report = journal_show(p70a_rw.folder)
    assert code == 0 and report["unfinished"] == []
    [session] = report["backups"]
    assert session["partitions"] == ["boot"] and session["state"] == "active"
    assert session["chunks"] == len(chunks)


def test_two_files_sharing_a_chunk(p70a: Layout, p70a_rw: Layout, tmp_path: Path) -> None:
    lk, boot = p70a_rw.by_name("lk"), p70a_rw.by_name("boot")
    lk_tail = pseudo_random("write/lk-tail", 4096)
    boot_head = pseudo_random("write/boot-head", 4096)
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw()) as mnt:
        # lk ends and boot starts inside one chunk: two writers, one chunk, one commit.
        assert chunk_range(mnt, lk.offset_bytes + lk.size_bytes - 1, 2) == chunk_range(
            mnt, boot.offset_bytes, 1
        )
        lk_fd = os.open(mnt / "lk.img", os.O_RDWR)
        try:
            boot_fd = os.open(mnt / "boot.img", os.O_RDWR)
            try:
                assert os.pwrite(lk_fd, lk_tail, lk.size_bytes - 4096) == 4096
                assert os.pwrite(boot_fd, boot_head, 0) == 4096
                os.fsync(boot_fd)
                assert p70a_rw.read("lk", lk.size_bytes - 4096) == lk_tail
                assert p70a_rw.read("boot", 0, 4096) == boot_head
                # Written again after that commit: dirty again, committed by lk's close.
                assert os.pwrite(lk_fd, b"\x11" * 4096, lk.size_bytes - 8192) == 4096
            finally:
                os.close(boot_fd)
        finally:
            os.close(lk_fd)
        assert p70a_rw.read("lk", lk.size_bytes - 8192) == b"\x11" * 4096 + lk_tail
        assert status_of(mnt)["writes"]["committed_chunks"] == 2
    assert_only_changed(p70a_rw, p70a, {"lk", "boot"})
    assert journal_show(p70a_rw.folder)[1]["backups"][0]["partitions"] == ["boot", "lk"]


def test_files_already_open_see_writes_through_other_files(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    boot = p70a_rw.by_name("boot")
    data = pseudo_random("write/alias", 3 * 4096)
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw("--unlock", "preloader")) as mnt:
        # Open before the write, and read: the kernel now caches these pages for each file.
        region = os.open(mnt / "regions" / "user.img", os.O_RDONLY)
        bin_fd = os.open(mnt / "preloader.bin", os.O_RDONLY)
        try:
            assert os.pread(region, len(data), boot.offset_bytes) == p70a.read("boot", 0, len(data))
            old_bin = os.pread(bin_fd, 4096, 0)
            with open(mnt / "boot.img", "r+b", buffering=0) as writer:
                assert writer.write(data) == len(data)
                # Not committed yet, already seen through the region file.
                assert os.pread(region, len(data), boot.offset_bytes) == data
            assert os.pread(region, len(data), boot.offset_bytes) == data
            # preloader.bin is preloader.img without its 2 KiB header.
            with open(mnt / "preloader.img", "r+b", buffering=0) as writer:
                writer.seek(2048)
                assert writer.write(b"\x42" * 4096) == 4096
            assert os.pread(bin_fd, 4096, 0) == b"\x42" * 4096 != old_bin
        finally:
            os.close(region)
            os.close(bin_fd)
    assert p70a_rw.read("boot", 0, len(data)) == data
    assert pread(p70a_rw.regions["boot1"], 2048, 4096) == b"\x42" * 4096


def test_end_of_the_region_and_bounded_dirty_memory(
    s650: Layout, s650_rw: Layout, tmp_path: Path
) -> None:
    # The S650's last partition runs to the end of the user area, whose last chunk is short.
    last = s650_rw.by_name("p8")
    tail = pseudo_random("write/s650-tail", 8192)
    big = pseudo_random("write/s650-big", 5 * MiB)
    with mounted(s650_rw.folder, tmp_path / "mnt", *rw("--max-dirty", "2M")) as mnt:
        fd = os.open(mnt / "p8.img", os.O_RDWR)
        try:
            assert os.pwrite(fd, tail, last.size_bytes - len(tail)) == len(tail)
            fails_with(errno.ENOSPC, lambda: os.pwrite(fd, b"x", last.size_bytes))
            os.fsync(fd)
            assert s650_rw.read("p8", last.size_bytes - len(tail)) == tail
            # More than --max-dirty in one write: the writer commits as it goes.
            assert os.pwrite(fd, big, 0) == len(big)
            writes = status_of(mnt)["writes"]
            assert writes["dirty_bytes"] <= 2 * MiB and writes["committed_chunks"] >= 3
            assert s650_rw.read("p8", 0, MiB) == big[:MiB]
        finally:
            os.close(fd)
        assert status_of(mnt)["writes"]["dirty_bytes"] == 0
    assert s650_rw.read("p8", 0, len(big)) == big
    assert s650_rw.read("p8", last.size_bytes - len(tail)) == tail
    assert s650_rw.regions["user"].stat().st_size == s650.regions["user"].stat().st_size
    user, pristine = s650_rw.regions["user"], s650.regions["user"]
    assert content_digest(user, 0, last.offset_bytes) == content_digest(
        pristine, 0, last.offset_bytes
    )
    middle = last.offset_bytes + len(big), last.size_bytes - len(big) - len(tail)
    assert content_digest(user, *middle) == content_digest(pristine, *middle)


# -- 2. ext4 through a loop device ----------------------------------------------------------------


@pytest.mark.loop
@skip_without_loop
def test_ext4_in_system_img_through_a_loop_device(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    files = {
        "hello.txt": b"written through mtkfs\n",
        "data/app/Big.apk": pseudo_random("write/big.apk", 6 * MiB + 4321),
        "data/app/lib/arm64/libx.so": pseudo_random("write/libx", 70_000),
        "etc/new.conf": b"key=value\n" * 500,
    }
    system = p70a_rw.by_name("system")
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw()) as mnt:
        with loop_mounted(mnt / "system.img", tmp_path / "system", "loop") as fs:
            original_prop = (fs / "build.prop").read_bytes()
            for name, content in files.items():
                (fs / name).parent.mkdir(parents=True, exist_ok=True)
                (fs / name).write_bytes(content)
            (fs / "emptydir").mkdir()
            (fs / "etc" / "hosts").unlink()
            os.sync()
        fsck = run("e2fsck", "-f", "-n", mnt / "system.img")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        with loop_mounted(mnt / "system.img", tmp_path / "system", "loop", "ro") as fs:
            for name, content in files.items():
                assert (fs / name).read_bytes() == content, name
            assert (fs / "build.prop").read_bytes() == original_prop
            assert (fs / "emptydir").is_dir() and not (fs / "etc" / "hosts").exists()
        assert status_of(mnt)["writes"]["failures"] == []

    # mtkfs is gone: the file system in the image file itself is complete and clean.
    assert_only_changed(p70a_rw, p70a, {"system"})
    attach = run(
        "losetup",
        "--find",
        "--show",
        "--read-only",
        "--offset",
        str(system.offset_bytes),
        "--sizelimit",
        str(system.size_bytes),
        p70a_rw.regions["user"],
    )
    assert attach.returncode == 0, attach.stderr
    device = attach.stdout.strip()
    try:
        fsck = run("e2fsck", "-f", "-n", device)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        with loop_mounted(device, tmp_path / "system", "ro") as fs:
            for name, content in files.items():
                assert (fs / name).read_bytes() == content, name
            assert (fs / "build.prop").read_bytes() == original_prop
    finally:
        run("losetup", "-d", device)


# -- 3. failed writes: failsafe, journal, replay/rollback -----------------------------------------


def test_bit_flip_fails_fsync_turns_failsafe_and_rolls_back(
    p70a_rw: Layout, tmp_path: Path
) -> None:
    boot = p70a_rw.by_name("boot")
    original = p70a_rw.read("boot")
    new_boot = pseudo_random("write/flipped-boot", 3 * MiB)
    (tmp_path / "new-boot.img").write_bytes(new_boot)
    mnt = tmp_path / "mnt"

    with (
        mounted(p70a_rw.folder, mnt, *rw("--inject-faults", "flip-bit@1")),
        # A reader that keeps boot.img open across the failed write.
        open(mnt / "boot.img", "rb", buffering=0) as held,
    ):
        done = run(
            "dd",
            f"if={tmp_path}/new-boot.img",
            f"of={mnt}/boot.img",
            "bs=1M",
            "conv=notrunc,fsync",
            "status=none",
        )
        assert done.returncode != 0
        assert "fsync failed" in done.stderr and "Input/output error" in done.stderr, done.stderr
        # The reader sees what the image holds, not the unverified bytes the kernel cached
        # when dd wrote them (before any new open of boot.img, which would drop them anyway).
        assert os.pread(held.fileno(), len(new_boot), 0) == p70a_rw.read("boot", 0, len(new_boot))
        chunks = chunk_range(mnt, boot.offset_bytes, len(new_boot))
        status = status_of(mnt)
        chunk_bytes = int(status["cache"]["chunk_bytes"])
        writes = status["writes"]
        assert status["state"] == "failsafe" and status["read_only"] is True
        # Exactly one chunk failed its verify. The chunks the commit had not written yet when
        # it stopped are failures too; chunks that verified before it stopped are not.
        failures = writes["failures"]
        assert all(f["region"] == "user" and f["partitions"] == ["boot"] for f in failures)
        [flipped] = [f["offset"] for f in failures if "read-back" in f["reason"]]
        assert {f["offset"] for f in failures} <= set(chunks)
        assert writes["committed_chunks"] + len(failures) == len(chunks)
        assert writes["dirty_chunks"] == 0
        assert f"boot: user+{flipped:#x}" in status["failsafe"]

        report = mtkfs("status", mnt)
        assert report.returncode == 7, report.stdout + report.stderr
        assert "FAILSAFE" in report.stdout
        assert f"failed: boot at user+{flipped:#x}" in report.stdout, report.stdout

        # Failsafe: new write opens are refused, reads show what the image really holds.
        fails_with(errno.EROFS, lambda: open_close(mnt / "recovery.img", os.O_WRONLY))
        fails_with(errno.EROFS, lambda: open_close(mnt / "boot.img", os.O_RDWR))
        refused = run("dd", "if=/dev/zero", f"of={mnt}/lk.img", "count=1", "conv=notrunc")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        assert (mnt / "lk.img").read_bytes() == p70a_rw.read("lk")
        assert (mnt / "boot.img").read_bytes() == p70a_rw.read("boot")

    # The journal keeps the commit: a read-write mount is refused until the user decides.
    mnt.mkdir(exist_ok=True)
    again = mtkfs("mount", "-o", "rw", p70a_rw.folder, mnt)
    assert again.returncode == 7, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert "unfinished" in again.stderr and "journal" in again.stderr
    assert not is_mounted(mnt)

    shown = mtkfs("journal", "show", p70a_rw.folder)
    assert shown.returncode == 7, shown.stderr
    assert "boot" in shown.stdout and "failed" in shown.stdout
    code, report_json = journal_show(p70a_rw.folder)
    assert code == 7
    held = {e["offset"]: (e["state"], e["device_holds"]) for e in report_json["unfinished"]}
    assert sorted(held) == sorted(f["offset"] for f in failures)
    assert held.pop(flipped) == ("failed", "neither")
    assert set(held.values()) <= {("pending", "old")}

    # Undo what the journal holds: those chunks are the original again, verified ones stay new.
    undo = mtkfs("journal", "rollback", p70a_rw.folder, "--pending-only")
    assert undo.returncode == 0, undo.stderr
    expected = bytearray(original)
    for chunk in set(chunks) - {f["offset"] for f in failures}:
        start = max(chunk, boot.offset_bytes) - boot.offset_bytes
        end = min(chunk + chunk_bytes - boot.offset_bytes, len(new_boot))
        expected[start:end] = new_boot[start:end]
    assert p70a_rw.read("boot") == bytes(expected)
    assert journal_show(p70a_rw.folder)[1]["unfinished"] == []
    # Then the mount's backup session: boot is entirely the original again.
    restore = mtkfs("journal", "rollback", p70a_rw.folder)
    assert restore.returncode == 0, restore.stderr
    assert p70a_rw.read("boot") == original
    # Decided: read-write mounts work again.
    with mounted(p70a_rw.folder, mnt, *rw()):
        assert status_of(mnt)["state"] == "mounted"


def test_refused_write_fails_close_and_replay_finishes_it(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    recovery = p70a_rw.by_name("recovery")
    original = p70a_rw.read("recovery")
    new_recovery = pseudo_random("write/recovery", 2 * MiB + 100)
    (tmp_path / "new.img").write_bytes(new_recovery)

    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw("--inject-faults", "fail-write@1")) as mnt:
        # No fsync: the commit happens when dd closes the file, and close() must fail.
        done = run("dd", f"if={tmp_path}/new.img", f"of={mnt}/recovery.img", "conv=notrunc")
        assert done.returncode != 0
        assert "closing output file" in done.stderr and "Input/output error" in done.stderr, (
            done.stderr
        )
        chunks = chunk_range(mnt, recovery.offset_bytes, len(new_recovery))
        status = status_of(mnt)
        assert status["state"] == "failsafe" and status["read_only"] is True
        assert [f["offset"] for f in status["writes"]["failures"]] == chunks
        assert "refused" in status["writes"]["failures"][0]["reason"]
        assert mtkfs("status", mnt).returncode == 7
        # Nothing reached the image, and the mount shows what the image holds.
        assert p70a_rw.read("recovery") == original
        assert (mnt / "recovery.img").read_bytes() == original

    code, report = journal_show(p70a_rw.folder)
    assert code == 7
    assert [e["device_holds"] for e in report["unfinished"]] == ["old"] * len(chunks)
    finish = mtkfs("journal", "replay", p70a_rw.folder)
    assert finish.returncode == 0, finish.stderr
    assert p70a_rw.read("recovery") == new_recovery + original[len(new_recovery) :]
    assert journal_show(p70a_rw.folder)[1]["unfinished"] == []
    assert_only_changed(p70a_rw, p70a, {"recovery"})


# -- 4. protected partitions and whole regions ----------------------------------------------------


def test_protected_partitions_and_regions_refuse_writes(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw()) as mnt:
        for name in (*PROTECTED, "protect1", "protect2"):
            path = mnt / f"{name}.img"
            assert path.stat().st_mode & 0o777 == 0o444, name
            fails_with(errno.EPERM, lambda path=path: open_close(path, os.O_WRONLY))
            fails_with(errno.EPERM, lambda path=path: open_close(path, os.O_RDWR))
            done = run("dd", "if=/dev/zero", f"of={path}", "count=1", "conv=notrunc")
            assert done.returncode != 0 and "Operation not permitted" in done.stderr, done.stderr
            assert pread(path, 0, 4096) == expected_head(p70a, name)  # reading is fine
        # The SP Flash Tool view of the preloader is never written: write preloader.img.
        fails_with(errno.EPERM, lambda: open_close(mnt / "preloader.bin", os.O_WRONLY))
        for region in ("user", "boot1", "boot2"):
            path = mnt / "regions" / f"{region}.img"
            fails_with(errno.EPERM, lambda path=path: open_close(path, os.O_WRONLY))
        assert status_of(mnt)["writes"]["writes"] == 0
    assert_only_changed(p70a_rw, p70a, set())


def test_unlocked_protected_partitions_take_writes(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    offset = 3 * 4096 + 7  # unaligned, inside the first chunk of each
    payloads = {name: pseudo_random(f"write/{name}", 8192 + 333) for name in PROTECTED}
    unlock = [arg for name in PROTECTED for arg in ("--unlock", name)]
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw(*unlock)) as mnt:
        for name, data in payloads.items():
            path = mnt / f"{name}.img"
            assert path.stat().st_mode & 0o777 == 0o644, name
            (tmp_path / f"{name}.new").write_bytes(data)
            done = dd_at(tmp_path / f"{name}.new", path, offset, "fsync")
            assert done.returncode == 0, f"{name}: {done.stderr}"
        # Only what was named is unlocked.
        fails_with(errno.EPERM, lambda: open_close(mnt / "protect1.img", os.O_WRONLY))
        fails_with(errno.EPERM, lambda: open_close(mnt / "preloader.bin", os.O_WRONLY))
        fails_with(errno.EPERM, lambda: open_close(mnt / "regions" / "user.img", os.O_WRONLY))
        writes = status_of(mnt)["writes"]
        assert writes["unlocked"] == sorted(PROTECTED) and writes["failures"] == []

    for name, data in payloads.items():
        before = bytearray(expected_head(p70a, name, 64 * 1024))
        before[offset : offset + len(data)] = data
        assert expected_head(p70a_rw, name, 64 * 1024) == bytes(before), name
    assert_only_changed(p70a_rw, p70a, set(PROTECTED))
    # Whole partitions: nothing beyond the written range moved.
    for name in ("proinfo", "nvram", "seccfg"):
        got, want = p70a_rw.read(name), bytearray(p70a.read(name))
        want[offset : offset + len(payloads[name])] = payloads[name]
        assert got == bytes(want), name
    boot1 = bytearray(p70a.regions["boot1"].read_bytes())
    boot1[offset : offset + len(payloads["preloader"])] = payloads["preloader"]
    assert p70a_rw.regions["boot1"].read_bytes() == bytes(boot1)


def test_unlock_of_a_partition_the_device_lacks_is_a_usage_error(
    p70a_rw: Layout, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = mtkfs("mount", *rw("--unlock", "nosuchpart"), p70a_rw.folder, mnt)
    assert result.returncode == 2, result.stderr
    assert "nosuchpart" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not is_mounted(mnt)


def test_region_writes_need_unlock_regions_and_spare_protected_partitions(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    boot = p70a_rw.by_name("boot")
    nvram = p70a_rw.by_name("nvram")
    data = pseudo_random("write/via-region", 100_000)
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw("--unlock-regions")) as mnt:
        region = mnt / "regions" / "user.img"
        fd = os.open(region, os.O_RDWR)
        try:
            # Inside boot (unprotected): accepted and verified on fsync.
            assert os.pwrite(fd, data, boot.offset_bytes + 4096) == len(data)
            os.fsync(fd)
            # Into nvram, or straddling its start, or covering it: refused, nothing written.
            for start, size in (
                (nvram.offset_bytes + MiB, 4096),
                (nvram.offset_bytes - 4096, 8192),
                (nvram.offset_bytes - 512, nvram.size_bytes + 1024),
            ):
                fails_with(errno.EPERM, lambda s=start, n=size: os.pwrite(fd, b"\xee" * n, s))
            os.fsync(fd)
        finally:
            os.close(fd)
        # The protected partitions stay locked through their own files too.
        fails_with(errno.EPERM, lambda: open_close(mnt / "nvram.img", os.O_WRONLY))
        # boot1 is all preloader: any write through regions/boot1.img touches it.
        with open(mnt / "regions" / "boot1.img", "r+b", buffering=0) as boot1:
            fails_with(errno.EPERM, lambda: boot1.write(b"\x00"))
        assert status_of(mnt)["writes"]["failures"] == []

    assert p70a_rw.read("boot", 4096, len(data)) == data
    assert_only_changed(p70a_rw, p70a, {"boot"})


def test_partition_tables_in_region_files_need_their_own_unlock(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    """Bytes of a region that belong to no partition hold the partition tables (protective MBR
    and primary GPT before the first partition, the backup GPT at the end): even with
    --unlock-regions they refuse writes until ``--unlock tables`` is given too."""
    first = min(p.offset_bytes for p in p70a_rw.partitions if p.region == "user")
    user_size = (p70a_rw.folder / "User").stat().st_size
    mnt = tmp_path / "mnt"
    with (
        mounted(p70a_rw.folder, mnt, *rw("--unlock-regions")),
        open(mnt / "regions" / "user.img", "r+b", buffering=0) as region,
    ):
        for offset in (0, 512, first - 512, user_size - 512):
            fails_with(errno.EPERM, lambda o=offset: os.pwrite(region.fileno(), b"\0", o))
    assert_only_changed(p70a_rw, p70a, set())
    with (
        mounted(p70a_rw.folder, mnt, *rw("--unlock-regions", "--unlock", "tables")),
        open(mnt / "regions" / "user.img", "r+b", buffering=0) as region,
    ):
        header = os.pread(region.fileno(), 512, 512)
        assert header[:8] == b"EFI PART"
        # Accepted (the same bytes: the image's table stays intact).
        assert os.pwrite(region.fileno(), header, 512) == 512
        os.fsync(region.fileno())


# -- 5. the layout is fixed -----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "code"), [("rw", errno.EPERM), ("ro", errno.EROFS)])
def test_layout_changes_are_refused(
    mode: str, code: int, p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    boot = p70a_rw.by_name("boot")
    message = os.strerror(code)
    (tmp_path / "small.img").write_bytes(b"\x5a" * 8192)
    args = rw() if mode == "rw" else ("-o", "ro")
    with mounted(p70a_rw.folder, tmp_path / "mnt", *args) as mnt:
        before = sorted(os.listdir(mnt))
        img = mnt / "boot.img"
        # The system calls, each with its exact errno.
        fails_with(code, lambda: open_close(mnt / "new.img", os.O_WRONLY | os.O_CREAT))
        fails_with(code, lambda: os.unlink(img))
        fails_with(code, lambda: os.rename(img, mnt / "boot2.img"))
        fails_with(code, lambda: os.truncate(img, 0))
        fails_with(code, lambda: os.truncate(img, boot.size_bytes + MiB))
        fails_with(code, lambda: open_close(img, os.O_WRONLY | os.O_TRUNC))
        fails_with(code, lambda: os.mkdir(mnt / "newdir"))
        fails_with(code, lambda: os.symlink("boot.img", mnt / "link.img"))
        fails_with(code, lambda: os.link(img, mnt / "link.img"))
        fails_with(code, lambda: os.chmod(img, 0o600))
        # The tools people use, each failing with the same reason.
        for argv in (
            ("touch", mnt / "new.img"),
            ("rm", "-f", img),
            ("mv", img, mnt / "boot2.img"),
            ("truncate", "-s", "0", img),
            ("truncate", "-s", "+1M", img),
            ("dd", f"if={tmp_path}/small.img", f"of={img}", "status=none"),  # O_TRUNC
            ("cp", tmp_path / "small.img", img),
        ):
            done = run(*argv)
            assert done.returncode != 0 and message in done.stderr, (argv, done.stderr)
        # Generated files are never writable.
        for name in ("scatter.txt", "Checksum.ini", ".mtkfs/status.json", ".mtkfs/map.json"):
            path = mnt / name
            with pytest.raises(OSError) as info:
                open_close(path, os.O_WRONLY)
            assert info.value.errno in (errno.EROFS, errno.EPERM), (name, info.value)
        if mode == "rw":
            # What changes nothing is accepted: new times, the size it already has.
            os.utime(img)
            os.truncate(img, boot.size_bytes)
        else:
            fails_with(code, lambda: os.utime(img))
        assert sorted(os.listdir(mnt)) == before
        assert img.stat().st_size == boot.size_bytes
        writes = status_of(mnt)["writes"]
        assert writes is None if mode == "ro" else writes["writes"] == 0
    assert_only_changed(p70a_rw, p70a, set())
    assert p70a_rw.read("boot") == p70a.read("boot")


def test_write_past_the_end_is_enospc(p70a: Layout, p70a_rw: Layout, tmp_path: Path) -> None:
    boot = p70a_rw.by_name("boot")
    tail = pseudo_random("write/tail", 8192)
    (tmp_path / "tail.img").write_bytes(tail)
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw()) as mnt:
        img = mnt / "boot.img"
        # dd: the first 4 KiB fit before the end, the rest is refused.
        done = dd_at(tmp_path / "tail.img", img, boot.size_bytes - 4096, "fsync")
        assert done.returncode != 0 and "No space left on device" in done.stderr, done.stderr
        fd = os.open(img, os.O_RDWR)
        try:
            assert os.pwrite(fd, b"\xa5" * 200, boot.size_bytes - 100) == 100  # short at the end
            fails_with(errno.ENOSPC, lambda: os.pwrite(fd, b"x", boot.size_bytes))
            fails_with(errno.ENOSPC, lambda: os.pwrite(fd, b"x" * 4096, boot.size_bytes + MiB))
            os.fsync(fd)
        finally:
            os.close(fd)
        assert img.stat().st_size == boot.size_bytes
        assert status_of(mnt)["writes"]["failures"] == []

    want = bytearray(p70a.read("boot"))
    want[-4096:] = tail[:4096]
    want[-100:] = b"\xa5" * 100
    assert p70a_rw.read("boot") == bytes(want)
    assert_only_changed(p70a_rw, p70a, {"boot"})  # recovery, right after boot, included


def test_fsync_on_any_descriptor_commits_the_file(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    data = pseudo_random("write/fsync-reader", 50_000)
    offset = 777
    with mounted(p70a_rw.folder, tmp_path / "mnt", *rw()) as mnt:
        # No fork/exec from here on: exec closes our descriptors, and that close commits.
        writer = os.open(mnt / "recovery.img", os.O_RDWR)
        try:
            assert os.pwrite(writer, data, offset) == len(data)
            reader = os.open(mnt / "recovery.img", os.O_RDONLY)
            try:
                assert p70a_rw.read("recovery", offset, len(data)) != data
                # What `sync FILE` does while the writer still holds the file open.
                os.fsync(reader)
                assert p70a_rw.read("recovery", offset, len(data)) == data
                assert status_of(mnt)["writes"]["dirty_chunks"] == 0
            finally:
                os.close(reader)
        finally:
            os.close(writer)
    assert_only_changed(p70a_rw, p70a, {"recovery"})


# -- 6. how the source is opened ------------------------------------------------------------------


def image_fd_modes(pid: int, files: list[Path]) -> dict[str, int]:
    """Image file → access mode (O_RDONLY/O_WRONLY/O_RDWR) of the daemon's descriptors on it."""
    wanted = {os.path.realpath(f) for f in files}
    modes: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue  # closed meanwhile
        if target in wanted:
            flags = next(
                int(line.split()[1], 8) for line in info.splitlines() if line.startswith("flags:")
            )
            mode = flags & os.O_ACCMODE
            assert modes.get(target, mode) == mode, f"{target} opened with two modes"
            modes[target] = mode
    return modes


@pytest.mark.parametrize(("mode", "access"), [("ro", os.O_RDONLY), ("rw", os.O_RDWR)])
def test_source_is_opened_for_writing_only_by_rw_mounts(
    mode: str, access: int, p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    layout, args = (p70a, ()) if mode == "ro" else (p70a_rw, rw())
    with mounted(layout.folder, tmp_path / "mnt", *args) as mnt:
        (mnt / "lk.img").read_bytes()
        pid = int(status_of(mnt)["pid"])
        modes = image_fd_modes(pid, list(layout.regions.values()))
        assert sorted(modes) == sorted(os.path.realpath(p) for p in layout.regions.values())
        assert set(modes.values()) == {access}, modes


# -- 7, 8. commits nobody asked for: SIGTERM, the timer -------------------------------------------


def test_sigterm_commits_dirty_data_before_exiting(
    p70a: Layout, p70a_rw: Layout, tmp_path: Path
) -> None:
    data = pseudo_random("write/sigterm", MiB + 777)
    offset = 3 * 4096
    mnt = tmp_path / "mnt"
    with foreground_daemon(p70a_rw.folder, mnt, *rw()) as daemon:
        # A writer that keeps the file open: no flush, no fsync, no timer.
        fd = os.open(mnt / "boot.img", os.O_RDWR)
        try:
            assert os.pwrite(fd, data, offset) == len(data)
            writes = status_of(mnt)["writes"]
            assert writes["dirty_chunks"] >= 2 and writes["committed_chunks"] == 0
            assert p70a_rw.read("boot", offset, len(data)) != data  # only in the daemon
            # Readers already see it, through the partition and through the region.
            assert pread(mnt / "boot.img", offset, len(data)) == data
            boot = p70a_rw.by_name("boot")
            assert (
                pread(mnt / "regions" / "user.img", boot.offset_bytes + offset, 4096) == data[:4096]
            )
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        assert not is_mounted(mnt)

    assert p70a_rw.read("boot", offset, len(data)) == data
    assert_only_changed(p70a_rw, p70a, {"boot"})
    code, report = journal_show(p70a_rw.folder)
    assert code == 0 and report["unfinished"] == []
    assert [s["partitions"] for s in report["backups"]] == [["boot"]]


def test_timer_commits_data_held_open(p70a: Layout, p70a_rw: Layout, tmp_path: Path) -> None:
    data = pseudo_random("write/timer", 300_000)
    offset = 12345
    args = ("-o", "rw", "--commit-interval", "1")
    with mounted(p70a_rw.folder, tmp_path / "mnt", *args) as mnt:
        fd = os.open(mnt / "recovery.img", os.O_RDWR)
        try:
            assert os.pwrite(fd, data, offset) == len(data)
            # A deadline, not a timing assertion: the timer commits within a couple of seconds.
            deadline = time.monotonic() + 20
            while (
                p70a_rw.read("recovery", offset, len(data)) != data
                or status_of(mnt)["writes"]["dirty_chunks"] != 0
            ):
                assert time.monotonic() < deadline, "the timer never committed"
                time.sleep(0.1)
            writes = status_of(mnt)["writes"]
            assert writes["committed_chunks"] >= 1 and writes["failures"] == []
        finally:
            os.close(fd)
    assert_only_changed(p70a_rw, p70a, {"recovery"})
