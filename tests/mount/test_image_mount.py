"""Real FUSE mounts of readback images built from the seeds (tests/conftest.py fixtures).

These are the acceptance tests of the spine: every partition file holds exactly the bytes of its
range in the image, cp/dd/loop-mount/e2fsck work on it, and bad input fails cleanly.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import fuse_available, loop_available
from mounting import foreground_daemon, is_mounted, loop_mounted, mounted, mtkfs

from mtkfs.testing.disk import Layout

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(900),
]
needs_loop = pytest.mark.skipif(not loop_available()[0], reason=loop_available()[1])

MiB = 1 << 20


def sha256_of_range(path: Path, offset_bytes: int, size_bytes: int) -> str:
    """Hash a byte range of a file with pread (the independent side of the comparison)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < size_bytes:
            block = os.pread(f.fileno(), min(4 * MiB, size_bytes - done), offset_bytes + done)
            assert block, f"{path} ended early at {offset_bytes + done}"
            digest.update(block)
            done += len(block)
    return digest.hexdigest()


def sha256_of_file(path: Path) -> tuple[str, int]:
    """Hash a whole file by reading it to the end (as cp would); returns (hash, bytes read)."""
    digest = hashlib.sha256()
    total = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(4 * MiB):
            digest.update(block)
            total += len(block)
    return digest.hexdigest(), total


def ls_json(source: Path | str, *args: str) -> dict:  # type: ignore[type-arg]
    result = mtkfs("ls", source, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def partx_ranges(image: Path) -> dict[int, tuple[int, int, str]]:
    """util-linux's view (libblkid, an independent parser): NR → (start bytes, size bytes, type)."""
    out = subprocess.run(
        ["partx", "--raw", "--noheadings", "--bytes", "-o", "NR,START,SECTORS,TYPE", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ranges = {}
    for line in out.splitlines():
        nr, start, sectors, ptype = line.split()
        ranges[int(nr)] = (int(start) * 512, int(sectors) * 512, ptype)
    return ranges


# -- the map, checked against independent tools ---------------------------------------------------


def test_ls_p70a_matches_partx_and_parted(p70a: Layout) -> None:
    report = ls_json(p70a.folder)
    user = p70a.regions["user"]
    assert {r["name"]: r["size"] for r in report["regions"]} == {
        "boot1": 0x400000,
        "boot2": 0x400000,
        "user": 15634268160,
    }
    parts = [p for p in report["partitions"] if p["region"] == "user"]
    assert len(parts) == 19
    # Against parted's byte listing in the seed (the fixture's expected table).
    expected = {p.name: (p.offset_bytes, p.size_bytes) for p in p70a.partitions}
    assert {p["name"]: (p["offset"], p["size"]) for p in parts} == expected
    # Against util-linux.
    from_partx = partx_ranges(user)
    assert {p["number"]: (p["offset"], p["size"]) for p in parts} == {
        nr: (start, size) for nr, (start, size, _) in from_partx.items()
    }
    # The seed's parted warning: image 991 sectors longer than the GPT says.
    assert any("991 sectors" in w for w in report["warnings"]), report["warnings"]
    assert all(p["exposed"] and not p["warnings"] for p in parts)


def test_ls_s650_matches_partx(s650: Layout) -> None:
    report = ls_json(s650.folder)
    user = s650.regions["user"]
    user_size = user.stat().st_size
    parts = {p["name"]: p for p in report["partitions"] if p["region"] == "user"}
    assert set(parts) == {f"p{n}" for n in range(2, 9)}
    expected = {p.name: (p.offset_bytes, p.size_bytes) for p in s650.partitions}
    assert {n: (p["offset"], p["size"]) for n, p in parts.items()} == expected
    # The seed's dumchar_info: fat (p8) runs exactly to the end of the 7597184 KiB user area.
    assert parts["p8"]["offset"] == 0x10C380000 and parts["p8"]["size"] == 0xC37A0000

    # util-linux (libblkid) as the independent parser. It keeps MTK's "to the end" sizes as
    # written (the kernel and mtkfs clamp them to the device), and it drops EBR1's third logical
    # partition (usrdata): its sanity check for EBR slots 3-4 computes ext_start + ext_size in
    # 32 bits, and MTK's ext_size of 0xFFFFFFFF overflows. The kernel computes it in 64 bits and
    # keeps the partition (seed 000: usrdata is mmcblk0p7). So: every range partx reports is one
    # of ours, and the only one it misses is exactly that partition.
    from_partx = set()
    for start, size, ptype in partx_ranges(user).values():
        if int(ptype, 16) in (0x05, 0x0F, 0x85):
            continue  # the extended container (p1) is not a partition of data
        from_partx.add((start, min(size, user_size - start)))
    ours = {(p["offset"], p["size"]) for p in parts.values()}
    assert from_partx <= ours
    assert ours - from_partx == {(parts["p7"]["offset"], parts["p7"]["size"])}


def test_ls_text_output(p70a: Layout) -> None:
    result = mtkfs("ls", p70a.folder)
    assert result.returncode == 0, result.stderr
    assert "GPT" in result.stdout and "userdata" in result.stdout and "991" in result.stdout


# -- mounted: bytes, cp, dd, loop, fsck -----------------------------------------------------------


@pytest.mark.parametrize("fixture", ["p70a", "s650"])
def test_every_partition_file_has_the_image_bytes(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    layout: Layout = request.getfixturevalue(fixture)
    with mounted(layout.folder, tmp_path / "mnt") as mnt:
        names = sorted(os.listdir(mnt))
        extra = ["regions", ".mtkfs", "scatter.txt", "Checksum.ini", "preloader.img"]
        extra.append("preloader.bin")
        # The partitions holding boot images also get a <name>.files/ view.
        report = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        views = [
            f"{p['name']}.files"
            for p in report["partitions"]
            if p["content"] and p["content"]["kind"] in ("android-boot", "jffs2")
        ]
        assert names == sorted([*(f"{p.name}.img" for p in layout.partitions), *extra, *views])
        # The boot area starts with an EMMC_BOOT header: it is shown as the preloader, and
        # without its 2 KiB header as SP Flash Tool's SV5_BL_BIN (seed 001: dd bs=512 skip=4).
        boot = layout.regions["boot1"].read_bytes()
        assert (mnt / "preloader.img").read_bytes() == boot
        assert (mnt / "preloader.bin").read_bytes() == boot[2048:]
        assert sorted(os.listdir(mnt / "regions")) == sorted(f"{r}.img" for r in layout.regions)
        for part in layout.partitions:
            path = mnt / f"{part.name}.img"
            st = path.stat()
            assert st.st_size == part.size_bytes
            assert st.st_blocks == (part.size_bytes + 511) // 512
            assert st.st_mtime == pytest.approx(layout.regions[part.region].stat().st_mtime, abs=1)
            digest, length = sha256_of_file(path)
            assert length == part.size_bytes, f"{part.name}: read {length} bytes"
            image = layout.regions[part.region]
            assert digest == sha256_of_range(image, part.offset_bytes, part.size_bytes), part.name
        for region, image in layout.regions.items():
            if image.stat().st_size <= 64 * MiB:
                assert (mnt / "regions" / f"{region}.img").read_bytes() == image.read_bytes()


def test_cp_dd_and_short_reads(p70a: Layout, tmp_path: Path) -> None:
    user = p70a.regions["user"]
    boot = p70a.by_name("boot")
    system = p70a.by_name("system")
    with mounted(p70a.folder, tmp_path / "mnt") as mnt:
        shutil.copyfile(mnt / "boot.img", tmp_path / "boot.img")
        assert sha256_of_file(tmp_path / "boot.img")[0] == sha256_of_range(
            user, boot.offset_bytes, boot.size_bytes
        )
        # dd with hand-computed skip= on the whole region, as users did before mtkfs.
        skip_mib = system.offset_bytes // MiB
        subprocess.run(
            [
                "dd",
                f"if={mnt}/regions/user.img",
                f"of={tmp_path}/sys8m",
                "bs=1M",
                f"skip={skip_mib}",
                "count=8",
                "status=none",
            ],
            check=True,
        )
        with open(mnt / "system.img", "rb") as f:
            assert f.read(8 * MiB) == (tmp_path / "sys8m").read_bytes()
        # Short read at the end; nothing past the end (never the next partition's bytes).
        with open(mnt / "boot.img", "rb", buffering=0) as f:
            tail = os.pread(f.fileno(), 4096, boot.size_bytes - 100)
            assert len(tail) == 100
            assert tail == sha_range_bytes(user, boot.offset_bytes + boot.size_bytes - 100, 100)
            assert os.pread(f.fileno(), 4096, boot.size_bytes) == b""
            assert os.pread(f.fileno(), 4096, boot.size_bytes + MiB) == b""
        # Unaligned reads that straddle cache chunks.
        with open(mnt / "regions" / "user.img", "rb", buffering=0) as f:
            for offset in (MiB - 3, 5 * MiB + 17, system.offset_bytes - 4096):
                assert os.pread(f.fileno(), 10000, offset) == sha_range_bytes(user, offset, 10000)


def sha_range_bytes(path: Path, offset_bytes: int, size_bytes: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), size_bytes, offset_bytes)


@needs_loop
def test_loop_mount_system_and_fsck(p70a: Layout, tmp_path: Path) -> None:
    with mounted(p70a.folder, tmp_path / "mnt") as mnt:
        fsck = subprocess.run(
            ["e2fsck", "-fn", str(mnt / "system.img")], capture_output=True, text=True, check=False
        )
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        with loop_mounted(mnt / "system.img", tmp_path / "system") as target:
            build_prop = (target / "build.prop").read_text()
            assert "ro.product.model=Lenovo P70-A" in build_prop
            apk = (target / "app" / "Demo.apk").read_bytes()
            assert len(apk) == 3 * MiB


@needs_loop
def test_loop_mount_s650_android(s650: Layout, tmp_path: Path) -> None:
    with (
        mounted(s650.folder, tmp_path / "mnt") as mnt,
        loop_mounted(mnt / "p5.img", tmp_path / "android") as target,
    ):
        assert "ro.product.model=Lenovo S650" in (target / "build.prop").read_text()


def test_parallel_readers(p70a: Layout, tmp_path: Path) -> None:
    small = sorted(p70a.partitions, key=lambda p: p.size_bytes)[:8]
    user = p70a.regions["user"]
    with mounted(p70a.folder, tmp_path / "mnt", "--cache-size", "8M") as mnt:

        def check(name: str) -> tuple[str, str]:
            return name, sha256_of_file(mnt / f"{name}.img")[0]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = dict(pool.map(check, [p.name for p in small] * 2))
        for part in small:
            assert results[part.name] == sha256_of_range(user, part.offset_bytes, part.size_bytes)


def test_control_files(p70a: Layout, tmp_path: Path) -> None:
    with mounted(p70a.folder, tmp_path / "mnt") as mnt:
        map_json = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        assert map_json == ls_json(p70a.folder)
        (mnt / "boot.img").read_bytes()
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["read_only"] is True and status["partitions"] == 20  # + preloader
        assert status["cache"]["transport_bytes"] >= 16 * MiB
        with pytest.raises(OSError):
            (mnt / "boot.img").write_bytes(b"x")
        assert sorted(os.listdir(mnt / ".mtkfs")) == ["map.json", "stats.json", "status.json"]
        stats = json.loads((mnt / ".mtkfs" / "stats.json").read_text())
        user = stats["cache"]["per_region"]["user"]
        assert user["transport_bytes"] >= 16 * MiB and user["transport_reads"] >= 1
        assert stats["cache"]["cached_bytes"] <= stats["cache"]["max_bytes"]
        assert stats["disk_cache"] is None


# -- damaged tables and truncated images ----------------------------------------------------------


def small_gpt_image(path: Path) -> None:
    """64 MiB, four partitions, made by sgdisk, each filled with its own byte pattern."""
    subprocess.run(["truncate", "-s", "64M", str(path)], check=True)
    subprocess.run(
        [
            "sgdisk",
            "-a",
            "1",
            "-n",
            "1:2048:+8M",
            "-c",
            "1:boot",
            "-n",
            "2:0:+16M",
            "-c",
            "2:system",
            "-n",
            "3:0:+16M",
            "-c",
            "3:cache",
            "-n",
            "4:0:+16M",
            "-c",
            "4:userdata",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    with open(path, "r+b") as f:
        for n, start_mib in enumerate((1, 9, 25, 41)):
            f.seek(start_mib * MiB)
            f.write(bytes([0x10 + n]) * MiB)


def test_corrupt_primary_gpt_uses_backup(tmp_path: Path) -> None:
    image = tmp_path / "user.img"
    small_gpt_image(image)
    with open(image, "r+b") as f:
        f.seek(512 + 16)  # the primary header's CRC32 field
        f.write(b"\xde\xad\xbe\xef")
    report = ls_json(image)
    assert [p["name"] for p in report["partitions"]] == ["boot", "system", "cache", "userdata"]
    assert any("backup" in w.lower() and "primary" in w.lower() for w in report["warnings"])
    text = mtkfs("ls", image)
    assert "backup" in text.stdout.lower()
    with mounted(image, tmp_path / "mnt") as mnt:
        assert (mnt / "cache.img").read_bytes()[:MiB] == b"\x12" * MiB


def test_both_gpts_corrupt_is_a_clear_error(tmp_path: Path) -> None:
    image = tmp_path / "user.img"
    small_gpt_image(image)
    size = image.stat().st_size
    with open(image, "r+b") as f:
        f.seek(512 + 16)
        f.write(b"\xde\xad\xbe\xef")
        f.seek(size - 512 + 16)
        f.write(b"\xde\xad\xbe\xef")
    result = mtkfs("ls", image)
    assert result.returncode == 4
    assert "corrupt" in result.stderr.lower() and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "mnt").mkdir()
    result = mtkfs("mount", image, tmp_path / "mnt")
    assert result.returncode == 4 and "corrupt" in result.stderr.lower()
    assert not is_mounted(tmp_path / "mnt")


def test_truncated_image_reports_but_does_not_expose_missing_partitions(tmp_path: Path) -> None:
    image = tmp_path / "user.img"
    small_gpt_image(image)
    os.truncate(image, 30 * MiB)  # ends 5 MiB into "cache"; "userdata" is gone entirely
    report = ls_json(image)
    parts = {p["name"]: p for p in report["partitions"]}
    assert parts["cache"]["exposed"] and parts["cache"]["size"] == 5 * MiB
    assert parts["cache"]["declared_size"] == 16 * MiB and parts["cache"]["warnings"]
    assert not parts["userdata"]["exposed"] and parts["userdata"]["warnings"]
    with mounted(image, tmp_path / "mnt") as mnt:
        files = {".mtkfs", "Checksum.ini", "boot.img", "cache.img", "regions", "scatter.txt"}
        assert set(os.listdir(mnt)) == {*files, "system.img"}
        assert (mnt / "cache.img").stat().st_size == 5 * MiB
        assert (mnt / "cache.img").read_bytes()[:MiB] == b"\x12" * MiB


# -- bad input never leaves a dead mount ----------------------------------------------------------


def test_mount_errors_are_one_readable_line(tmp_path: Path, p70a: Layout) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = []
    cases.append((mtkfs("mount", tmp_path / "nope.img", mnt), 3, "no such file"))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "photo.jpg").write_bytes(b"\xff\xd8")
    cases.append((mtkfs("mount", junk, mnt), 3, "no readback files"))
    cases.append((mtkfs("mount", p70a.folder, tmp_path / "missing"), 5, "does not exist"))
    cases.append((mtkfs("mount", p70a.folder, mnt, "-o", "ro,rw"), 2, "contradict"))
    cases.append((mtkfs("mount", p70a.folder, mnt, "-o", "rw", "--unlock", "rpmb"), 2, "rpmb"))
    cases.append((mtkfs("mount", p70a.folder, mnt, "--cache-size", "lots"), 2, "not a size"))
    for result, code, words in cases:
        assert result.returncode == code, (result.returncode, result.stderr)
        assert words in result.stderr.lower(), result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not is_mounted(mnt)


def test_mountpoint_in_use(p70a: Layout, tmp_path: Path) -> None:
    with mounted(p70a.folder, tmp_path / "mnt") as mnt:
        result = mtkfs("mount", p70a.folder, mnt)
        assert result.returncode == 5 and "already a mount point" in result.stderr
        # The first mount still works.
        assert (mnt / "lk.img").stat().st_size == 393216


def test_stale_mount_is_explained_and_cleaned(p70a: Layout, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with foreground_daemon(p70a.folder, mnt) as daemon:
        daemon.kill()  # SIGKILL: no chance to unmount → a dead mount
        daemon.wait(timeout=10)
        with pytest.raises(OSError):
            os.listdir(mnt)
        result = mtkfs("mount", p70a.folder, mnt)
        assert result.returncode == 5 and "dead" in result.stderr
        result = mtkfs("umount", mnt)
        assert result.returncode == 0, result.stderr
        assert not is_mounted(mnt)
        result = mtkfs("umount", mnt)
        assert result.returncode == 5 and "not mounted" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(p70a: Layout, tmp_path: Path, signum: int) -> None:
    mnt = tmp_path / "mnt"
    with foreground_daemon(p70a.folder, mnt) as daemon:
        assert (mnt / "lk.img").stat().st_size == 393216
        daemon.send_signal(signum)
        assert daemon.wait(timeout=30) == 0
        assert not is_mounted(mnt)


def test_foreground_mount_ends_on_unmount(p70a: Layout, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with foreground_daemon(p70a.folder, mnt, flag="-f") as daemon:
        result = mtkfs("umount", mnt)
        assert result.returncode == 0, result.stderr
        assert daemon.wait(timeout=30) == 0


def test_map_file_and_no_map(tmp_path: Path) -> None:
    image = tmp_path / "user.img"
    small_gpt_image(image)
    # An SP Flash Tool style PGPT dump: the first 34 sectors (protective MBR, header, entries).
    pgpt = tmp_path / "PGPT"
    pgpt.write_bytes(image.read_bytes()[: 34 * 512])
    with open(image, "r+b") as f:
        f.write(bytes(34 * 512))  # wipe the table on the "device"
        f.seek(image.stat().st_size - 33 * 512)
        f.write(bytes(33 * 512))  # and the backup
    result = mtkfs("ls", image)
    assert result.returncode == 4 and "--map FILE" in result.stderr
    report = ls_json(image, "--map", str(pgpt))
    assert [p["name"] for p in report["partitions"]] == ["boot", "system", "cache", "userdata"]
    assert report["map"].endswith("from PGPT")
    bogus = tmp_path / "bogus.txt"
    bogus.write_text("hello")
    result = mtkfs("ls", image, "--map", bogus)
    assert result.returncode == 4 and "bogus.txt" in result.stderr
    with mounted(image, tmp_path / "mnt", "--map", str(pgpt)) as mnt:
        assert (mnt / "cache.img").read_bytes()[:MiB] == b"\x12" * MiB
    with mounted(image, tmp_path / "mnt2", "--no-map") as mnt:
        assert sorted(os.listdir(mnt)) == [".mtkfs", "regions"]
        assert (mnt / "regions" / "user.img").stat().st_size == 64 * MiB
