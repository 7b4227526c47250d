"""Builders for realistic MTK readback images, made with the same tools a user would use.

Why real tools: a partition table written by our own code and read back by our own parser would
only prove the two agree with each other. Here the GPT comes from ``sgdisk`` and the file systems
from ``mkfs.ext4``; the MTK MBR/EBR chain (which no standard tool writes: three logicals per EBR)
is packed with :mod:`struct` byte for byte as MTK's ``ptgen`` lays it out. The numbers are those
of two real phones (the project's seeds), so the images have the quirks readbacks really have:

* :func:`build_p70a` — a Lenovo P-70A (MT6752) as SP Flash Tool reads it back: ``Boot1``,
  ``Boot2``, ``User``. The GPT was written for a slightly smaller disk, so ``User`` is 991 sectors
  longer than the GPT says (parted's "Not all of the space … an extra 991 blocks" warning).
* :func:`build_s650` — a Lenovo S650 (MT6582) as ``dd`` reads it on the phone: ``mmcblk0.img``,
  ``mmcblk0boot0.img``, ``mmcblk0boot1.img``, with an MBR + EBR chain holding three logical
  partitions in one EBR and MTK's "0xFFFFFFFF - …" size for the last one.

Images are sparse (``truncate``; only metadata and a few MiB of content are ever written: a whole
build uses under 20 MB of disk and takes about a second) and deterministic: the same bytes on
every run, machine and user (fixed GUIDs/UUIDs/hash seeds, ``E2FSPROGS_FAKE_TIME``, a pinned
``mke2fs.conf``, inode times and owners pinned with ``debugfs``, content from SHAKE-256).
No root needed. The content helpers live in :mod:`mtkfs.testing.content`, the tool and file
helpers in :mod:`mtkfs.testing.tools`.

Run ``python -m mtkfs.testing.disk p70a|s650 FOLDER`` to build one from the shell (``make demo``).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mtkfs.testing.content import android_boot_image, emmc_boot_preloader, mtk_image, pseudo_random
from mtkfs.testing.gpt_write import GptPartition, write_gpt
from mtkfs.testing.tools import (
    find_tool,
    fixed_uuid,
    mkfs_ext4,
    pwrite,
    run,
    sparse_copy,
    sparse_file,
    write_tree,
)

__all__ = [
    "P70A_BOOT_BYTES",
    "P70A_BUILD_PROP",
    "P70A_GPT",
    "P70A_GPT_DISK_SECTORS",
    "P70A_USER_BYTES",
    "S650_BOOT_BYTES",
    "S650_BUILD_PROP",
    "S650_DUMCHAR_NAMES",
    "S650_USER_BYTES",
    "SECTOR_BYTES",
    "ExpectedPartition",
    "Layout",
    "build_nor",
    "build_p70a",
    "build_s650",
    "build_ufs",
    "find_tool",
    "main",
    "p70a_system_files",
    "pseudo_random",
    "s650_android_files",
]

SECTOR_BYTES = 512
_KiB = 1 << 10
_MiB = 1 << 20
_GiB = 1 << 30

#: Microsoft basic data: what MTK's GPT uses for every entry (parted shows it as ``msftdata``).
_GPT_TYPE_CODE = "0700"


@dataclass(frozen=True)
class ExpectedPartition:
    """One partition a correct map of the built image must find, as the table declares it.

    ``size_bytes`` is the size *as a mount should expose it*: for the S650's last partition that
    is the declared "to the end of the disk" size clamped to the user area.
    ``fs`` is ``"ext4"`` where a file system was made, else None (raw or pseudo-random bytes).
    """

    name: str
    region: str
    offset_bytes: int
    size_bytes: int
    fs: str | None


@dataclass(frozen=True)
class Layout:
    """A built readback folder and the truth about it, for tests to compare a mount against.

    Attributes:
        folder: the folder the files were built in (what ``mtkfs mount FOLDER`` is given).
        regions: region name (``user``, ``boot1``, ``boot2``) → the file holding it.
        partitions: what the user area's table declares, in table order.
    """

    folder: Path
    regions: dict[str, Path]
    partitions: tuple[ExpectedPartition, ...]

    def by_name(self, name: str) -> ExpectedPartition:
        """The expected partition called ``name`` (KeyError if none)."""
        for part in self.partitions:
            if part.name == name:
                return part
        raise KeyError(name)

    def read(self, name: str, offset_bytes: int = 0, size_bytes: int | None = None) -> bytes:
        """Bytes of partition ``name`` straight from its region file — the reference for a mount.

        Reads ``size_bytes`` (default: to the end of the partition; mind the gigabytes) from
        ``offset_bytes`` into the partition, never past its end.
        """
        part = self.by_name(name)
        if not 0 <= offset_bytes <= part.size_bytes:
            raise ValueError(f"offset {offset_bytes} outside {name} ({part.size_bytes} bytes)")
        available = part.size_bytes - offset_bytes
        length = available if size_bytes is None else min(size_bytes, available)
        with self.regions[part.region].open("rb") as f:
            f.seek(part.offset_bytes + offset_bytes)
            return f.read(length)

    def copy_to(self, folder: Path) -> Layout:
        """A sparse copy of the region files in ``folder``: a private image a test may write to.

        Why: the test suite builds each layout once per session and shares it; a test that
        mounts with ``-o rw`` must work on its own copy. Copying only the data extents takes a
        fraction of a second and a few tens of MB, whatever the apparent size.
        """
        folder.mkdir(parents=True, exist_ok=True)
        regions: dict[str, Path] = {}
        for region, source in self.regions.items():
            regions[region] = folder / source.name
            sparse_copy(source, regions[region])
        return replace(self, folder=folder, regions=regions)


# --------------------------------------------------------------------------------------------
# Lenovo P-70A (MT6752): GPT, SP Flash Tool readback (Boot1, Boot2, User)

#: EMMC_PART_BOOT1/BOOT2 size from SP Flash Tool's memory test report.
P70A_BOOT_BYTES = 0x400000
#: EMMC_PART_USER size (0x3a3e00000): the ``User`` readback file and parted's "Disk …: …B".
P70A_USER_BYTES = 15634268160
#: The disk size the GPT was written for: its backup header is the last sector (LBA 30534688),
#: the last usable LBA is 30534655 (flashinfo's end). ``User`` is 991 sectors longer.
P70A_GPT_DISK_SECTORS = 30534689

#: The seed's ``parted User unit b print``: (name, start byte, size bytes), GPT entries 1..19.
P70A_GPT: tuple[tuple[str, int, int], ...] = (
    ("proinfo", 524288, 3145728),
    ("nvram", 3670016, 5242880),
    ("protect1", 8912896, 10485760),
    ("protect2", 19398656, 10485760),
    ("seccfg", 29884416, 262144),
    ("lk", 30146560, 393216),
    ("boot", 30539776, 16777216),
    ("recovery", 47316992, 16777216),
    ("secro", 64094208, 6291456),
    ("para", 70385664, 524288),
    ("logo", 70909952, 8388608),
    ("expdb", 79298560, 10485760),
    ("tee1", 89784320, 5242880),
    ("tee2", 95027200, 5242880),
    ("metadata", 100270080, 33947648),
    ("system", 134217728, 2147483648),
    ("cache", 2281701376, 444596224),
    ("userdata", 2726297600, 12890669056),
    ("flashinfo", 15616966656, 16777216),
)

_P70A_EXT4 = ("protect1", "protect2", "system", "cache", "userdata")

#: ``/system/build.prop`` of the P-70A image (values in the style of the stock ROM; invented ids).
P70A_BUILD_PROP = """\
# begin build properties
# autogenerated by mtkfs.testing.disk (fixture, not a real ROM)
ro.build.id=LRX21M
ro.build.display.id=P70-A_S000_150101
ro.build.version.release=5.0
ro.build.version.sdk=21
ro.build.type=user
ro.product.model=Lenovo P70-A
ro.product.brand=Lenovo
ro.product.name=P70-A
ro.product.device=P70-A
ro.product.manufacturer=LENOVO
ro.product.cpu.abi=arm64-v8a
ro.board.platform=mt6752
ro.mediatek.platform=MT6752
# end build properties
"""

_HOSTS = "127.0.0.1\t\t    localhost\n::1\t\t    ip6-localhost\n"


def p70a_system_files() -> dict[str, bytes]:
    """Path → content of every regular file put into the P-70A ``system`` file system."""
    return {
        "build.prop": P70A_BUILD_PROP.encode(),
        "etc/hosts": _HOSTS.encode(),
        "app/Demo.apk": pseudo_random("p70a/system/app/Demo.apk", 3 * _MiB),
    }


def build_p70a(folder: Path) -> Layout:
    """Build an SP Flash Tool readback of a Lenovo P-70A in ``folder`` (made if missing).

    Files already there are replaced. The user area's GPT holds the 19 partitions of the seed's
    parted listing at their exact byte ranges (``sgdisk -a 1``, so nothing is realigned).
    """
    folder.mkdir(parents=True, exist_ok=True)
    user, boot1, boot2 = folder / "User", folder / "Boot1", folder / "Boot2"

    sparse_file(boot1, P70A_BOOT_BYTES)
    pwrite(boot1, 0, emmc_boot_preloader("p70a/preloader", 256 * _KiB))
    sparse_file(boot2, P70A_BOOT_BYTES)
    # Boot2 is empty on real MTK phones; a small distinct pattern lets tests catch a mount that
    # serves one boot region's bytes for the other.
    pwrite(boot2, 0, pseudo_random("p70a/boot2", 64 * _KiB))

    # The GPT is written for a disk of P70A_GPT_DISK_SECTORS, then the file grows to the real
    # user-area size: the backup GPT then sits 991 sectors before the end, as in the seed.
    sparse_file(user, P70A_GPT_DISK_SECTORS * SECTOR_BYTES)
    sgdisk = [find_tool("sgdisk"), "-o", "-a", "1", "-U", str(fixed_uuid("p70a/gpt/disk"))]
    for number, (name, start, size) in enumerate(P70A_GPT, start=1):
        first_lba, last_lba = start // SECTOR_BYTES, (start + size) // SECTOR_BYTES - 1
        sgdisk += [
            f"--new={number}:{first_lba}:{last_lba}",
            f"--typecode={number}:{_GPT_TYPE_CODE}",
            f"--change-name={number}:{name}",
            f"--partition-guid={number}:{fixed_uuid('p70a/gpt/' + name)}",
        ]
    run([*sgdisk, str(user)])
    os.truncate(user, P70A_USER_BYTES)

    parts = {name: (start, size) for name, start, size in P70A_GPT}
    with tempfile.TemporaryDirectory(prefix="mtkfs-disk-") as tmp:
        tmp_dir = Path(tmp)
        system_tree = write_tree(tmp_dir / "system", p70a_system_files())
        for name in _P70A_EXT4:
            start, size = parts[name]
            tree = system_tree if name == "system" else None
            mkfs_ext4(tmp_dir, user, start, size, label=name, key=f"p70a/{name}", tree=tree)

    for name, offset, data in _p70a_raw_content():
        start, size = parts[name]
        assert offset + len(data) <= size, name
        pwrite(user, start + offset, data)

    return Layout(
        folder=folder,
        regions={"user": user, "boot1": boot1, "boot2": boot2},
        partitions=tuple(
            ExpectedPartition(name, "user", start, size, "ext4" if name in _P70A_EXT4 else None)
            for name, start, size in P70A_GPT
        ),
    )


def _p70a_raw_content() -> list[tuple[str, int, bytes]]:
    """(partition, offset in it, bytes) for the non-file-system partitions of the P-70A."""
    return [
        ("proinfo", 0, pseudo_random("p70a/proinfo", 256 * _KiB)),
        ("nvram", 0, pseudo_random("p70a/nvram", 384 * _KiB)),
        ("seccfg", 0, b"AND_SECCFG_v" + pseudo_random("p70a/seccfg", 4 * _KiB - 12)),
        ("lk", 0, mtk_image(b"lk", pseudo_random("p70a/lk", 300 * _KiB))),
        ("boot", 0, android_boot_image("p70a/boot", b"ROOTFS", b"bootopt=64S3,32N2,64N2")),
        ("recovery", 0, android_boot_image("p70a/recovery", b"RECOVERY", b"")),
        ("secro", 0, pseudo_random("p70a/secro", 64 * _KiB)),
        ("logo", 0, mtk_image(b"logo", pseudo_random("p70a/logo", 400 * _KiB))),
        ("tee1", 0, mtk_image(b"tee", pseudo_random("p70a/tee1", 128 * _KiB))),
        ("tee2", 0, mtk_image(b"tee", pseudo_random("p70a/tee2", 128 * _KiB))),
        # The last partition, right before the backup GPT: a mount that gets the end wrong shows.
        ("flashinfo", 0, pseudo_random("p70a/flashinfo", 64 * _KiB)),
        ("flashinfo", 16 * _MiB - 4 * _KiB, pseudo_random("p70a/flashinfo/tail", 4 * _KiB)),
    ]


# --------------------------------------------------------------------------------------------
# A UFS phone (Dimensity 700 / MT6833 class): three LUs, 4096-byte logical blocks

#: LU sizes: two boot LUs (preloader A/B) and the user LU with the GPT.
UFS_BOOT_LU_BYTES = 4 * _MiB
UFS_USER_LU_BYTES = 8 * _GiB
UFS_SECTOR_BYTES = 4096
#: The user LU's GPT, K8-era A/B names: (name, start byte, size bytes); 4 KiB-aligned.
UFS_GPT = (
    ("proinfo", 1 * _MiB, 3 * _MiB),
    ("nvram", 4 * _MiB, 64 * _MiB),
    ("protect1", 68 * _MiB, 8 * _MiB),
    ("protect2", 76 * _MiB, 8 * _MiB),
    ("seccfg", 84 * _MiB, 8 * _MiB),
    ("boot_a", 92 * _MiB, 32 * _MiB),
    ("vbmeta_a", 124 * _MiB, 8 * _MiB),
    ("system_a", 132 * _MiB, 256 * _MiB),
    ("userdata", 388 * _MiB, UFS_USER_LU_BYTES - 388 * _MiB - 1 * _MiB),
)
_UFS_EXT4 = ("protect1", "protect2", "system_a", "userdata")


def ufs_system_files() -> dict[str, bytes]:
    """Path → content of the UFS phone's ``system_a`` file system."""
    return {
        "build.prop": b"ro.product.model=UFS K8-era\nro.board.platform=mt6833\n",
        "etc/hosts": _HOSTS.encode(),
        "framework/framework.jar": pseudo_random("ufs/system/framework.jar", 2 * _MiB),
    }


def build_ufs(folder: Path) -> Layout:
    """Build a readback of a UFS phone in ``folder``: ``LU0``, ``LU1`` (boot LUs, the preloader
    behind a ``UFS_BOOT`` header) and ``LU2`` (the user LU: a GPT in 4096-byte sectors, ext4
    system_a and userdata, raw nvram/boot). Sparse: a few MiB on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    lu0, lu1, lu2 = folder / "LU0", folder / "LU1", folder / "LU2"
    sparse_file(lu0, UFS_BOOT_LU_BYTES)
    preloader = bytearray(emmc_boot_preloader("ufs/preloader", 256 * _KiB))
    preloader[:12] = b"UFS_BOOT\0\0\0\0"
    pwrite(lu0, 0, bytes(preloader))
    sparse_file(lu1, UFS_BOOT_LU_BYTES)
    pwrite(lu1, 0, pseudo_random("ufs/lu1", 64 * _KiB))
    sparse_file(lu2, UFS_USER_LU_BYTES)
    write_gpt(
        lu2,
        [GptPartition(name, start, size) for name, start, size in UFS_GPT],
        sector_bytes=UFS_SECTOR_BYTES,
        key="ufs/gpt",
    )
    parts = {name: (start, size) for name, start, size in UFS_GPT}
    with tempfile.TemporaryDirectory(prefix="mtkfs-disk-") as tmp:
        tmp_dir = Path(tmp)
        system_tree = write_tree(tmp_dir / "system", ufs_system_files())
        for name in _UFS_EXT4:
            start, size = parts[name]
            tree = system_tree if name == "system_a" else None
            mkfs_ext4(tmp_dir, lu2, start, size, label=name, key=f"ufs/{name}", tree=tree)
    for name, data in (
        ("proinfo", pseudo_random("ufs/proinfo", 256 * _KiB)),
        ("nvram", pseudo_random("ufs/nvram", 512 * _KiB)),
        ("seccfg", b"AND_SECCFG_v" + pseudo_random("ufs/seccfg", 4 * _KiB - 12)),
        ("boot_a", android_boot_image("ufs/boot", b"ROOTFS", b"console=tty0")),
        ("vbmeta_a", b"AVB0" + pseudo_random("ufs/vbmeta", 4 * _KiB - 4)),
    ):
        pwrite(lu2, parts[name][0], data)
    return Layout(
        folder=folder,
        regions={"lu0": lu0, "lu1": lu1, "lu2": lu2},
        partitions=tuple(
            ExpectedPartition(name, "lu2", start, size, "ext4" if name in _UFS_EXT4 else None)
            for name, start, size in UFS_GPT
        ),
    )


# --------------------------------------------------------------------------------------------
# A NOR-flash device (an old MT65xx board or a camera): one flat region, MTD partitions

NOR_FLASH_BYTES = 16 * _MiB
#: ``mtdparts=`` of the NOR: (name, start byte, size bytes), contiguous from 0.
NOR_PARTS = (
    ("preloader", 0, 256 * _KiB),
    ("uboot", 256 * _KiB, 256 * _KiB),
    ("env", 512 * _KiB, 64 * _KiB),
    ("kernel", 576 * _KiB, 3 * _MiB),
    ("rootfs", 3 * _MiB + 576 * _KiB, 10 * _MiB),
    ("data", 13 * _MiB + 576 * _KiB, 2 * _MiB + 448 * _KiB),
)
NOR_MTDPARTS = "mtdparts=nor0:" + ",".join(
    f"{size // _KiB}k({name})" for name, _, size in NOR_PARTS
)


def build_nor(folder: Path) -> Layout:
    """A 16 MiB NOR dump in ``folder``: ``flash.bin`` (erased bytes 0xFF where nothing was
    written, as NOR reads) and ``mtdparts.txt``, the map to mount it with (``--map``)."""
    folder.mkdir(parents=True, exist_ok=True)
    flash = folder / "flash.bin"
    flash.write_bytes(b"\xff" * NOR_FLASH_BYTES)
    for name, start, size in NOR_PARTS:
        fill = size if name in ("preloader", "uboot", "kernel") else size // 3
        pwrite(flash, start, pseudo_random(f"nor/{name}", fill))
    (folder / "mtdparts.txt").write_text(NOR_MTDPARTS + "\n")
    return Layout(
        folder=folder,
        regions={"flash": flash},
        partitions=tuple(ExpectedPartition(n, "flash", s, z, None) for n, s, z in NOR_PARTS),
    )


# --------------------------------------------------------------------------------------------
# Lenovo S650 (MT6582): MTK MBR + EBR chain, dd readback (mmcblk0*.img)

#: ``/proc/partitions``: mmcblk0 7597184 KiB.
S650_USER_BYTES = 7597184 * _KiB
#: mmcblk0boot0 / mmcblk0boot1: 2048 KiB each.
S650_BOOT_BYTES = 2048 * _KiB

_S650_EBR1_OFFSET = 0x80000
_S650_EBR2_OFFSET = 0x3900000
#: MBR data slots 1..3 (p2..p4): name, start byte, size bytes. Starts are absolute.
_S650_PRIMARY = (
    ("p2", 0x900000, 0xA00000),
    ("p3", 0x1300000, 0xA00000),
    ("p4", 0x2F80000, 0x600000),
)
#: EBR1's three logicals (p5..p7). Absolute starts here; stored relative to EBR1.
_S650_EBR1_LOGICAL = (
    ("p5", 0x4380000, 0x40000000),
    ("p6", 0x44380000, 0x8000000),
    ("p7", 0x4C380000, 0xC0000000),
)
#: EBR2's only logical (p8, "fat"): its size is MTK's "to the end of the disk".
_S650_LAST = ("p8", 0x10C380000)
_S650_EXT4 = {"p5": "android", "p6": "cache", "p7": "usrdata"}

#: Linux partition number → dumchar (MTK) name, from the seed's ``/proc/dumchar_info``.
#: p1 is the extended-partition container (``ebr1``), not a data partition.
S650_DUMCHAR_NAMES: dict[str, str] = {
    "p2": "protect_f",
    "p3": "protect_s",
    "p4": "sec_ro",
    "p5": "android",
    "p6": "cache",
    "p7": "usrdata",
    "p8": "fat",
}

#: ``/system/build.prop`` of the S650 image (``android`` = p5; invented ids).
S650_BUILD_PROP = """\
# begin build properties
# autogenerated by mtkfs.testing.disk (fixture, not a real ROM)
ro.build.id=JDQ39
ro.build.display.id=S650_S000_140401
ro.build.version.release=4.2.2
ro.build.version.sdk=17
ro.build.type=user
ro.product.model=Lenovo S650
ro.product.brand=Lenovo
ro.product.name=S650
ro.product.device=S650
ro.product.manufacturer=LENOVO
ro.product.cpu.abi=armeabi-v7a
ro.board.platform=mt6582
ro.mediatek.platform=MT6582
# end build properties
"""


def s650_android_files() -> dict[str, bytes]:
    """Path → content of every regular file put into the S650 ``android`` (p5) file system."""
    return {
        "build.prop": S650_BUILD_PROP.encode(),
        "etc/hosts": _HOSTS.encode(),
        "bin/sh": b"#!placeholder: mksh would live here\n",
    }


def build_s650(folder: Path) -> Layout:
    """Build a Linux ``dd`` readback of a Lenovo S650 in ``folder`` (made if missing).

    Expected partitions are named by Linux number (``p2``..``p8``): an MBR has no names. Their
    dumchar names are in :data:`S650_DUMCHAR_NAMES`; p1 (the extended container) is not listed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    user = folder / "mmcblk0.img"
    boot0, boot1 = folder / "mmcblk0boot0.img", folder / "mmcblk0boot1.img"

    sparse_file(boot0, S650_BOOT_BYTES)
    pwrite(boot0, 0, emmc_boot_preloader("s650/preloader", 256 * _KiB))
    sparse_file(boot1, S650_BOOT_BYTES)
    pwrite(boot1, 0, pseudo_random("s650/boot1", 64 * _KiB))  # see build_p70a's Boot2

    sparse_file(user, S650_USER_BYTES)
    for offset, record in _s650_boot_records():
        pwrite(user, offset, record)

    parts = _s650_partitions()
    with tempfile.TemporaryDirectory(prefix="mtkfs-disk-") as tmp:
        tmp_dir = Path(tmp)
        tree = write_tree(tmp_dir / "android", s650_android_files())
        for part in parts:
            if part.fs == "ext4":
                label = _S650_EXT4[part.name]
                mkfs_ext4(
                    tmp_dir,
                    user,
                    part.offset_bytes,
                    part.size_bytes,
                    label=label,
                    key=f"s650/{label}",
                    tree=tree if label == "android" else None,
                )

    for offset, data in _s650_raw_content():
        pwrite(user, offset, data)

    return Layout(
        folder=folder,
        regions={"user": user, "boot1": boot0, "boot2": boot1},
        partitions=parts,
    )


def _s650_last_count_sectors() -> int:
    """MTK's "to the end" sector count of the last logical: 0xFFFFFFFF - (LBA - LBA(EBR1))."""
    return 0xFFFFFFFF - (_S650_LAST[1] - _S650_EBR1_OFFSET) // SECTOR_BYTES


def _s650_partitions() -> tuple[ExpectedPartition, ...]:
    """p2..p8 as a kernel-faithful MBR/EBR walker must report them (p8 clamped to the disk)."""
    parts = [
        ExpectedPartition(name, "user", start, size, "ext4" if name in _S650_EXT4 else None)
        for name, start, size in (*_S650_PRIMARY, *_S650_EBR1_LOGICAL)
    ]
    name, start = _S650_LAST
    declared = _s650_last_count_sectors() * SECTOR_BYTES
    parts.append(
        ExpectedPartition(name, "user", start, min(declared, S650_USER_BYTES - start), None)
    )
    return tuple(parts)


def _s650_boot_records() -> list[tuple[int, bytes]]:
    """(byte offset, 512-byte record) of the MBR, EBR1 and EBR2, as MTK's ptgen fills them."""
    ebr1_lba = _S650_EBR1_OFFSET // SECTOR_BYTES
    ebr2_lba = _S650_EBR2_OFFSET // SECTOR_BYTES

    mbr = [(0x05, ebr1_lba, 0xFFFFFFFF)]
    mbr += [(0x83, start // SECTOR_BYTES, size // SECTOR_BYTES) for _, start, size in _S650_PRIMARY]

    # EBR data slots are relative to the EBR itself; the link is relative to EBR1.
    ebr1 = [
        (0x83, start // SECTOR_BYTES - ebr1_lba, size // SECTOR_BYTES)
        for _, start, size in _S650_EBR1_LOGICAL
    ]
    ebr1.append((0x05, ebr2_lba - ebr1_lba, 0xFFFFFFFF))

    ebr2 = [(0x83, _S650_LAST[1] // SECTOR_BYTES - ebr2_lba, _s650_last_count_sectors())]

    return [
        (0, _boot_record(mbr)),
        (_S650_EBR1_OFFSET, _boot_record(ebr1)),
        (_S650_EBR2_OFFSET, _boot_record(ebr2)),
    ]


def _boot_record(entries: Sequence[tuple[int, int, int]]) -> bytes:
    """A zero-filled 512-byte MBR/EBR with (type, start LBA, sector count) slots and ``55 AA``.

    ptgen fills only type, start and count: status and CHS bytes stay zero.
    """
    if len(entries) > 4:
        raise ValueError("a boot record has four slots")
    record = bytearray(SECTOR_BYTES)
    for slot, (part_type, start_lba, count) in enumerate(entries):
        struct.pack_into(
            "<B3sB3sII", record, 0x1BE + 16 * slot, 0, b"", part_type, b"", start_lba, count
        )
    record[0x1FE:0x200] = b"\x55\xaa"
    return bytes(record)


def _s650_raw_content() -> list[tuple[int, bytes]]:
    """(user-area byte offset, bytes) for the dumchar raw areas and the non-ext4 partitions."""
    content = [
        (0x100000, pseudo_random("s650/pro_info", 256 * _KiB)),
        (0x400000, pseudo_random("s650/nvram", 384 * _KiB)),
        (0x1D00000, b"AND_SECCFG_v" + pseudo_random("s650/seccfg", 4 * _KiB - 12)),
        (0x1D20000, mtk_image(b"UBOOT", pseudo_random("s650/uboot", 256 * _KiB))),
        (0x1D80000, android_boot_image("s650/bootimg", b"ROOTFS", b"")),
        (0x2380000, android_boot_image("s650/recovery", b"RECOVERY", b"")),
        (0x3600000, mtk_image(b"LOGO", pseudo_random("s650/logo", 300 * _KiB))),
    ]
    content += [
        (start, pseudo_random(f"s650/{name}", 256 * _KiB)) for name, start, _ in _S650_PRIMARY
    ]
    return content


# --------------------------------------------------------------------------------------------
# Command line

_BUILDERS: dict[str, Callable[[Path], Layout]] = {
    "p70a": build_p70a,
    "s650": build_s650,
    "ufs": build_ufs,
    "nor": build_nor,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtkfs.testing.disk p70a|s650|ufs|nor FOLDER``: build one readback folder."""
    parser = argparse.ArgumentParser(
        prog="python -m mtkfs.testing.disk",
        description="Build a sparse, deterministic MTK readback folder for tests and the demo.",
    )
    parser.add_argument("device", choices=sorted(_BUILDERS), help="which phone to imitate")
    parser.add_argument("folder", type=Path, help="where to put the files (created if missing)")
    args = parser.parse_args(argv)
    try:
        layout = _BUILDERS[args.device](args.folder)
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for region, path in layout.regions.items():
        print(f"{region:6} {path}  ({path.stat().st_size} bytes)")
    for part in layout.partitions:
        fs = part.fs or "-"
        print(
            f"  {part.name:10} {part.region:6} offset {part.offset_bytes:#013x} "
            f"size {part.size_bytes:#013x}  {fs}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
