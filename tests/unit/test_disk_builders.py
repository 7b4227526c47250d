"""The disk builders checked against independent tools and against the seeds' own numbers.

Every mount test trusts :mod:`mtkfs.testing.disk` as ground truth, so the truth itself is checked
here with tools that share no code with mtkfs: util-linux ``partx``/``sfdisk`` (libblkid,
libfdisk), GNU ``parted``, ``sgdisk`` and e2fsprogs. The expected numbers are copied from the seeds
(the P-70A's ``parted unit b print``, the S650's ``/proc/partitions``), not from the builder.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from seeds import SEED_000_DUMCHAR

from mtkfs.testing import disk
from mtkfs.testing.disk import Layout, build_p70a, build_s650, find_tool

# The seed's listing, verbatim: number, start B, end B (inclusive), size B, file system, name.
P70A_PARTED_SEED = """\
 1      524288B       3670015B      3145728B                   proinfo    msftdata
 2      3670016B      8912895B      5242880B                   nvram      msftdata
 3      8912896B      19398655B     10485760B     ext4         protect1   msftdata
 4      19398656B     29884415B     10485760B     ext4         protect2   msftdata
 5      29884416B     30146559B     262144B                    seccfg     msftdata
 6      30146560B     30539775B     393216B                    lk         msftdata
 7      30539776B     47316991B     16777216B                  boot       msftdata
 8      47316992B     64094207B     16777216B                  recovery   msftdata
 9      64094208B     70385663B     6291456B                   secro      msftdata
10      70385664B     70909951B     524288B                    para       msftdata
11      70909952B     79298559B     8388608B                   logo       msftdata
12      79298560B     89784319B     10485760B                  expdb      msftdata
13      89784320B     95027199B     5242880B                   tee1       msftdata
14      95027200B     100270079B    5242880B                   tee2       msftdata
15      100270080B    134217727B    33947648B                  metadata   msftdata
16      134217728B    2281701375B   2147483648B   ext4         system     msftdata
17      2281701376B   2726297599B   444596224B    ext4         cache      msftdata
18      2726297600B   15616966655B  12890669056B  ext4         userdata   msftdata
19      15616966656B  15633743871B  16777216B                  flashinfo  msftdata
"""


def _seed_rows() -> list[tuple[int, int, int, int, str | None, str]]:
    rows = []
    for line in P70A_PARTED_SEED.splitlines():
        fields = line.split()
        fs = fields[4] if len(fields) == 7 else None
        number, start, end, size = (int(f.rstrip("B")) for f in fields[:4])
        rows.append((number, start, end, size, fs, fields[-2]))
    return rows


P70A_SEED = _seed_rows()

# The S650 seed's /proc/partitions (1 KiB blocks) for the data partitions p2..p8.
S650_PROC_PARTITIONS_KIB = {
    "p2": 10240,
    "p3": 10240,
    "p4": 6144,
    "p5": 1048576,
    "p6": 131072,
    "p7": 3145728,
    "p8": 3202688,
}
S650_MMCBLK0_KIB = 7597184


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a system tool (found in sbin too) with C locale; output as text."""
    tool, *rest = (str(a) for a in args)
    return subprocess.run(
        [find_tool(tool), *rest],
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def partx(image: Path) -> list[tuple[int, int, int, int, str]]:
    """libblkid's view: (NR, START sector, SECTORS, SIZE bytes, NAME) per partition."""
    out = run(
        "partx", "--raw", "--noheadings", "--bytes", "-o", "NR,START,SECTORS,SIZE,NAME", image
    )
    rows = []
    for line in out.stdout.splitlines():
        nr, start, sectors, size, *name = line.split(" ")
        rows.append((int(nr), int(start), int(sectors), int(size), " ".join(name)))
    return rows


def allocated_bytes(layout: Layout) -> int:
    return sum(path.stat().st_blocks * 512 for path in layout.regions.values())


def extents_digest(path: Path) -> str:
    """Hash of a sparse file's non-zero 1 MiB blocks and where they are, reading only its data.

    Blocks sit on a fixed grid, so the result depends on the content only, not on how the host
    file system happens to split it into extents.
    """
    block_bytes = 1 << 20
    blocks: set[int] = set()
    fd = os.open(path, os.O_RDONLY)
    try:
        size, position = os.fstat(fd).st_size, 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past position
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            blocks.update(range(start // block_bytes, (end - 1) // block_bytes + 1))
            position = end
        digest = hashlib.sha256()
        for index in sorted(blocks):
            block = os.pread(fd, block_bytes, index * block_bytes)
            if block.count(0) != len(block):
                digest.update(index.to_bytes(8, "little") + block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def fs_target(layout: Layout, name: str) -> str:
    """e2fsprogs' ``FILE?offset=N`` syntax: a file system inside a bigger image, no copy."""
    part = layout.by_name(name)
    return f"{layout.regions[part.region]}?offset={part.offset_bytes}"


# -- P-70A: GPT ------------------------------------------------------------------------------------


def test_p70a_files_and_sizes(p70a: Layout) -> None:
    sizes = {region: path.stat().st_size for region, path in p70a.regions.items()}
    assert sizes == {"user": 0x3A3E00000, "boot1": 0x400000, "boot2": 0x400000}
    assert {path.name for path in p70a.regions.values()} == {"User", "Boot1", "Boot2"}
    assert all(path.parent == p70a.folder for path in p70a.regions.values())


def test_p70a_expected_partitions_are_the_seed(p70a: Layout) -> None:
    assert [(p.name, p.offset_bytes, p.size_bytes, p.fs) for p in p70a.partitions] == [
        (name, start, size, fs) for _, start, _, size, fs, name in P70A_SEED
    ]
    assert all(p.region == "user" for p in p70a.partitions)
    for _, start, end, size, _, _ in P70A_SEED:
        assert end == start + size - 1


def test_p70a_partx_reads_the_seed_ranges(p70a: Layout) -> None:
    assert partx(p70a.regions["user"]) == [
        (number, start // 512, size // 512, size, name)
        for number, start, _, size, _, name in P70A_SEED
    ]


def test_p70a_parted_reads_the_seed_listing_and_warns_991(p70a: Layout) -> None:
    result = run("parted", "-s", "-m", p70a.regions["user"], "unit", "B", "print")
    lines = result.stdout.splitlines()
    assert lines[0] == "BYT;"
    assert lines[1].split(":")[1:6] == ["15634268160B", "file", "512", "512", "gpt"]
    assert lines[2:] == [
        f"{number}:{start}B:{end}B:{size}B:{fs or ''}:{name}:msftdata;"
        for number, start, end, size, fs, name in P70A_SEED
    ]
    # The seed's warning, word for word: the image is 991 sectors longer than the GPT says.
    assert "Not all of the space available" in result.stderr
    assert "(an extra 991 blocks)" in result.stderr


def test_p70a_gpt_headers_say_991_sectors_short(p70a: Layout) -> None:
    user = p70a.regions["user"]
    with user.open("rb") as f:
        primary = f.read(1024)[512:]
        f.seek(30534688 * 512)
        backup = f.read(512)
    for header, my_lba, alternate_lba in ((primary, 1, 30534688), (backup, 30534688, 1)):
        signature, _, _, _, _, mine, other, first, last = struct.unpack_from("<8sIIIIQQQQ", header)
        assert (signature, mine, other) == (b"EFI PART", my_lba, alternate_lba)
        assert (first, last) == (34, 30534655)
    assert user.stat().st_size // 512 - (30534688 + 1) == 991
    # sgdisk agrees that the backup header is not at the end (and finds nothing else wrong).
    verify = run("sgdisk", "-v", user, check=False).stdout
    assert "secondary header's self-pointer indicates that it doesn't reside" in verify
    assert "Identified 1 problems!" in verify


# -- P-70A: file systems and content ------------------------------------------------------------


@pytest.mark.parametrize("name", ["protect1", "protect2", "system", "cache", "userdata"])
def test_p70a_ext4_passes_e2fsck(p70a: Layout, name: str) -> None:
    part = p70a.by_name(name)
    result = run("e2fsck", "-fn", fs_target(p70a, name), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    header = run("dumpe2fs", "-h", fs_target(p70a, name)).stdout
    assert re.search(rf"^Filesystem volume name:\s+{name}$", header, re.M)
    block_count = int(re.search(r"^Block count:\s+(\d+)$", header, re.M)[1])  # type: ignore[index]
    assert block_count * 4096 == part.size_bytes


def test_p70a_protect1_extracted_with_dd_passes_e2fsck(p70a: Layout, tmp_path: Path) -> None:
    """Cut out with dd (no e2fsprogs offset support involved), as the seed's author would."""
    part = p70a.by_name("protect1")
    copy = tmp_path / "protect1.img"
    run(
        "dd",
        f"if={p70a.regions['user']}",
        f"of={copy}",
        "bs=512",
        f"skip={part.offset_bytes // 512}",
        f"count={part.size_bytes // 512}",
        "status=none",
    )
    assert copy.stat().st_size == part.size_bytes
    result = run("e2fsck", "-fn", copy, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_p70a_system_holds_the_tree(p70a: Layout, tmp_path: Path) -> None:
    target = fs_target(p70a, "system")
    for rel, content in disk.p70a_system_files().items():
        out = tmp_path / rel.replace("/", "_")
        run("debugfs", "-R", f"dump /{rel} {out}", target)
        assert out.read_bytes() == content, rel
    for path in ("/app", "/app/Demo.apk", "/build.prop", "/etc/hosts"):
        stat = run("debugfs", "-R", f"stat {path}", target).stdout
        assert re.search(r"User:\s+0\s+Group:\s+0\s", stat), path  # whoever built it
        assert "ctime: 0x54a48e00:00000000" in stat, path  # fixed clock: 2015-01-01
    build_prop = disk.p70a_system_files()["build.prop"].decode()
    assert "ro.product.model=Lenovo P70-A\n" in build_prop
    assert "ro.board.platform=mt6752\n" in build_prop


def test_p70a_raw_partitions_have_content(p70a: Layout) -> None:
    assert p70a.read("boot", 0, 8) == b"ANDROID!"
    assert p70a.read("recovery", 0, 8) == b"ANDROID!"
    assert p70a.read("lk", 0, 4) == bytes.fromhex("88168858")
    assert p70a.read("logo", 0, 4) == bytes.fromhex("88168858")
    for name in ("proinfo", "nvram", "lk", "logo", "boot", "recovery", "flashinfo"):
        head = p70a.read(name, 0, 64 * 1024)
        assert head.count(0) < len(head) // 2, name
    # Distinct partitions hold distinct bytes (a mount serving the wrong range would show).
    heads = {p70a.read(n, 4096, 4096) for n in ("proinfo", "nvram", "lk", "boot", "recovery")}
    assert len(heads) == 5
    assert p70a.read("flashinfo", 16 * 1024 * 1024 - 16) != bytes(16)  # its very last bytes
    with p70a.regions["boot1"].open("rb") as f:
        boot1 = f.read(0x40000)
    assert boot1.startswith(b"EMMC_BOOT")
    assert boot1[0x200:0x205] == b"BRLYT" and boot1[0x800:0x804] == b"MMM\x01"
    assert boot1[0x808:0x811] == b"FILE_INFO"
    assert boot1[0x10000:0x10010] != bytes(16)
    with p70a.regions["boot2"].open("rb") as f:
        assert f.read(4096) != boot1[:4096]


def test_p70a_is_sparse(p70a: Layout) -> None:
    assert allocated_bytes(p70a) < 64 * 1024 * 1024


# -- S650: MTK MBR + EBR ------------------------------------------------------------------------


def test_s650_files_and_sizes(s650: Layout) -> None:
    sizes = {s650.regions[r].name: s650.regions[r].stat().st_size for r in s650.regions}
    assert sizes == {
        "mmcblk0.img": S650_MMCBLK0_KIB * 1024,
        "mmcblk0boot0.img": 2048 * 1024,
        "mmcblk0boot1.img": 2048 * 1024,
    }
    assert s650.regions["boot1"].name == "mmcblk0boot0.img"


def test_s650_expected_partitions_match_proc_partitions(s650: Layout) -> None:
    assert {p.name: p.size_bytes // 1024 for p in s650.partitions} == S650_PROC_PARTITIONS_KIB
    assert [p.name for p in s650.partitions if p.fs == "ext4"] == ["p5", "p6", "p7"]


def test_s650_fat_size_arithmetic(s650: Layout) -> None:
    """MTK's "to the end" count for the last logical, and what it clamps to."""
    with s650.regions["user"].open("rb") as f:
        f.seek(0x3900000 + 0x1BE)
        part_type, rel_start, count = struct.unpack("<4xB3xII", f.read(16))
    ebr1_lba, ebr2_lba = 0x80000 // 512, 0x3900000 // 512
    fat_lba = ebr2_lba + rel_start
    assert (part_type, fat_lba * 512) == (0x83, 0x10C380000)
    assert count == 0xFFFFFFFF - (fat_lba - ebr1_lba) == 0xFF79E7FF
    user_bytes = S650_MMCBLK0_KIB * 1024
    assert fat_lba * 512 + count * 512 > user_bytes  # declared: far past the end of the disk
    clamped = min(count * 512, user_bytes - fat_lba * 512)
    assert clamped == 0xC37A0000 == 3202688 * 1024  # dumchar_info's fat size and /proc/partitions
    assert s650.by_name("p8").size_bytes == clamped


def test_s650_dumchar_rows_agree_with_the_layout(s650: Layout) -> None:
    rows = re.findall(
        r"^(\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+2\s+/dev/block/mmcblk0p(\d+)$",
        SEED_000_DUMCHAR,
        re.M,
    )
    by_number = {f"p{n}": (name, int(size, 16), int(start, 16)) for name, size, start, n in rows}
    for part in s650.partitions:
        name, size, start = by_number[part.name]
        assert disk.S650_DUMCHAR_NAMES[part.name] == name
        assert (part.offset_bytes, part.size_bytes) == (start, size)


def test_s650_partx_sees_what_libblkid_sees(s650: Layout) -> None:
    """What util-linux 2.38's libblkid makes of MTK's chain (differs from the kernel!).

    libblkid does read several logicals per EBR, but it checks EBR slots 3 and 4 against
    ``ex_start + ex_size`` in *32-bit* sectors. MTK's extended entry says 0xFFFFFFFF sectors, so
    0x400 + 0xFFFFFFFF wraps to 0x3FF and the 3rd logical of EBR1 (usrdata) fails the check and is
    dropped. The logicals that remain are numbered consecutively, so fat (the kernel's p8)
    becomes partx's 7. (With a sane extended size the same chain gives 1..8 like the kernel.) Sizes
    are reported as declared: 0xFFFFFFFF for the container, 0xFF79E7FF for fat. The kernel uses
    64-bit sectors here and clamps to the disk: p1..p8 as in /proc/partitions.
    """
    mib = 1 << 20
    assert partx(s650.regions["user"]) == [
        (1, 0x400, 0xFFFFFFFF, 0xFFFFFFFF * 512, ""),  # extended container (kernel: p1, 1 KiB)
        (2, 0x900000 // 512, 20480, 10 * mib, ""),  # protect_f
        (3, 0x1300000 // 512, 20480, 10 * mib, ""),  # protect_s
        (4, 0x2F80000 // 512, 12288, 6 * mib, ""),  # sec_ro
        (5, 0x4380000 // 512, 0x200000, 1024 * mib, ""),  # android
        (6, 0x44380000 // 512, 0x40000, 128 * mib, ""),  # cache
        # usrdata (kernel p7) missing; fat (kernel p8) as 7, with MTK's declared size:
        (7, 0x10C380000 // 512, 0xFF79E7FF, 0xFF79E7FF * 512, ""),
    ]


def test_s650_sfdisk_keeps_one_logical_per_ebr(s650: Layout) -> None:
    """libfdisk (fdisk/sfdisk) follows the one-logical-per-EBR rule: cache and usrdata vanish."""
    result = run("sfdisk", "-d", s650.regions["user"])
    starts = re.findall(r"start=\s*(\d+), size=\s*(\d+), type=(\w+)", result.stdout)
    assert [(int(s), int(n), t) for s, n, t in starts] == [
        (0x400, 0xFFFFFFFF, "5"),
        (0x900000 // 512, 20480, "83"),
        (0x1300000 // 512, 20480, "83"),
        (0x2F80000 // 512, 12288, "83"),
        (0x4380000 // 512, 0x200000, "83"),  # android
        (0x10C380000 // 512, 0xFF79E7FF, "83"),  # fat
    ]
    assert "Ignoring extra data in partition table 5" in result.stderr


def test_s650_parted_refuses_the_table(s650: Layout) -> None:
    """parted rejects partitions declared past the end of the disk: no table at all."""
    result = run("parted", "-s", "-m", s650.regions["user"], "unit", "B", "print", check=False)
    assert "Can't have a partition outside the disk!" in result.stderr
    assert ":unknown:" in result.stdout


@pytest.mark.parametrize(("name", "label"), [("p5", "android"), ("p6", "cache"), ("p7", "usrdata")])
def test_s650_ext4_passes_e2fsck(s650: Layout, name: str, label: str) -> None:
    result = run("e2fsck", "-fn", fs_target(s650, name), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    header = run("dumpe2fs", "-h", fs_target(s650, name)).stdout
    assert re.search(rf"^Filesystem volume name:\s+{label}$", header, re.M)


def test_s650_android_holds_the_tree(s650: Layout, tmp_path: Path) -> None:
    target = fs_target(s650, "p5")
    for rel, content in disk.s650_android_files().items():
        out = tmp_path / rel.replace("/", "_")
        run("debugfs", "-R", f"dump /{rel} {out}", target)
        assert out.read_bytes() == content, rel
    listing = run("debugfs", "-R", "stat /bin/sh", target).stdout
    assert "Mode:  0755" in listing
    build_prop = disk.s650_android_files()["build.prop"].decode()
    assert "ro.product.model=Lenovo S650\n" in build_prop
    assert "ro.board.platform=mt6582\n" in build_prop


def test_s650_raw_areas_have_content(s650: Layout) -> None:
    with s650.regions["user"].open("rb") as f:

        def at(offset: int, size: int) -> bytes:
            f.seek(offset)
            return f.read(size)

        assert at(0x1D80000, 8) == b"ANDROID!"  # bootimg
        assert at(0x2380000, 8) == b"ANDROID!"  # recovery
        assert at(0x3600000, 4) == bytes.fromhex("88168858")  # logo (MTK header)
        for offset in (0x100000, 0x400000, 0x3600000 + 4096):  # pro_info, nvram, logo
            assert at(offset, 4096).count(0) < 2048
        assert at(0x1FE, 2) == at(0x801FE, 2) == at(0x39001FE, 2) == b"\x55\xaa"
    for name in ("p2", "p3", "p4"):
        assert s650.read(name, 0, 4096).count(0) < 2048
    with s650.regions["boot1"].open("rb") as f:
        assert f.read(9) == b"EMMC_BOOT"


def test_s650_is_sparse(s650: Layout) -> None:
    assert allocated_bytes(s650) < 64 * 1024 * 1024


# -- the builders themselves ----------------------------------------------------------------------


def test_builds_are_deterministic(p70a: Layout, s650: Layout, tmp_path: Path) -> None:
    for build, first in ((build_p70a, p70a), (build_s650, s650)):
        second = build(tmp_path / first.folder.name)
        assert second.partitions == first.partitions
        for region, path in first.regions.items():
            again = second.regions[region]
            assert again.stat().st_size == path.stat().st_size
            assert extents_digest(again) == extents_digest(path), (first.folder.name, region)


def test_rebuilding_in_place_replaces_everything(tmp_path: Path) -> None:
    first = build_s650(tmp_path / "s650")
    with first.regions["user"].open("r+b") as f:
        f.seek(0x5000000)
        f.write(b"stale")
    second = build_s650(tmp_path / "s650")
    assert second.read("p5", 0x5000000 - 0x4380000, 5) == bytes(5)


def test_copy_to_is_sparse_and_identical(s650: Layout, tmp_path: Path) -> None:
    copy = s650.copy_to(tmp_path / "copy")
    assert copy.partitions == s650.partitions
    assert allocated_bytes(copy) <= allocated_bytes(s650)
    for region, path in s650.regions.items():
        assert copy.regions[region].parent == tmp_path / "copy"
        assert extents_digest(copy.regions[region]) == extents_digest(path)


def test_layout_read_bounds(s650: Layout) -> None:
    p4 = s650.by_name("p4")
    assert len(s650.read("p4", p4.size_bytes - 10, 100)) == 10
    with pytest.raises(KeyError):
        s650.by_name("usrdata")
    with pytest.raises(ValueError, match="outside"):
        s650.read("p4", p4.size_bytes + 1, 1)


def test_cli_builds_a_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mtkfs.testing.disk", "s650", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "mmcblk0.img" in result.stdout and "p8" in result.stdout
    assert (tmp_path / "cli" / "mmcblk0boot1.img").stat().st_size == 2048 * 1024


def test_ufs_user_lu_gpt_reads_back_with_4096_byte_sectors(tmp_path: Path) -> None:
    """sgdisk, told nothing, reads the hand-written GPT of LU2 as a 4096-byte-sector disk (its
    header at byte 4096): every partition where the builder says, names and order kept."""
    layout = disk.build_ufs(tmp_path / "ufs")
    lu2 = layout.regions["lu2"]
    with lu2.open("rb") as image:
        head = image.read(8192)
    assert head[510:512] == b"\x55\xaa" and head[4096:4104] == b"EFI PART"
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", "--sector-size", "4096", str(lu2)],
        capture_output=True,
        text=True,
        check=False,
    )
    if loop.returncode != 0:
        pytest.skip(f"no loop devices here: {loop.stderr.strip()}")
    device = loop.stdout.strip()
    try:
        listing = subprocess.run(
            [find_tool("sgdisk"), "-p", device], capture_output=True, text=True, check=True
        ).stdout
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    assert "Sector size (logical/physical): 4096/4096 bytes" in listing
    rows = [line.split() for line in listing.splitlines() if re.match(r"^\s+\d+\s+\d+", line)]
    found = [(row[6], int(row[1]) * 4096, (int(row[2]) + 1 - int(row[1])) * 4096) for row in rows]
    assert found == [(p.name, p.offset_bytes, p.size_bytes) for p in layout.partitions]
