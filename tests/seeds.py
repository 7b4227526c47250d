"""The seeds' own texts, verbatim, shared by the unit and mount tests.

One copy each: a fixture that drifted from the field report it claims to reproduce would make
the tests prove the wrong thing. Sources: ../shared/seeds/000_*.txt (a Lenovo S650's
``/proc/dumchar_info`` and dd commands), 003_*.txt (a camera's boot-log MTD lines, 16 MiB NOR
flash) and 004_*.txt (a one-row scatter).
"""

from __future__ import annotations

#: Seed 000: ``cat /proc/dumchar_info`` on a Lenovo S650 (MT6582), verbatim.
SEED_000_DUMCHAR = """\
Part_Name Size StartAddr Type MapTo
preloader    0x0000000001400000   0x0000000000000000   2   /dev/misc-sd
mbr          0x0000000000080000   0x0000000000000000   2   /dev/block/mmcblk0
ebr1         0x0000000000080000   0x0000000000080000   2   /dev/block/mmcblk0p1
pro_info     0x0000000000300000   0x0000000000100000   2   /dev/block/mmcblk0
nvram        0x0000000000500000   0x0000000000400000   2   /dev/block/mmcblk0
protect_f    0x0000000000a00000   0x0000000000900000   2   /dev/block/mmcblk0p2
protect_s    0x0000000000a00000   0x0000000001300000   2   /dev/block/mmcblk0p3
seccfg       0x0000000000020000   0x0000000001d00000   2   /dev/block/mmcblk0
uboot        0x0000000000060000   0x0000000001d20000   2   /dev/block/mmcblk0
bootimg      0x0000000000600000   0x0000000001d80000   2   /dev/block/mmcblk0
recovery     0x0000000000c00000   0x0000000002380000   2   /dev/block/mmcblk0
sec_ro       0x0000000000600000   0x0000000002f80000   2   /dev/block/mmcblk0p4
misc         0x0000000000080000   0x0000000003580000   2   /dev/block/mmcblk0
logo         0x0000000000300000   0x0000000003600000   2   /dev/block/mmcblk0
ebr2         0x0000000000080000   0x0000000003900000   2   /dev/block/mmcblk0
expdb        0x0000000000a00000   0x0000000003980000   2   /dev/block/mmcblk0
android      0x0000000040000000   0x0000000004380000   2   /dev/block/mmcblk0p5
cache        0x0000000008000000   0x0000000044380000   2   /dev/block/mmcblk0p6
usrdata      0x00000000c0000000   0x000000004c380000   2   /dev/block/mmcblk0p7
fat          0x00000000c37a0000   0x000000010c380000   2   /dev/block/mmcblk0p8
bmtpool      0x0000000001500000   0x00000000febf00a8   2   /dev/block/mmcblk0
Part_Name:Partition name you should open;
Size:size of partition
StartAddr:Start Address of partition;
Type:Type of partition(MTD=1,EMMC=2)
MapTo:actual device you operate
"""

#: Seed 001: the P-70A author's scatter entry for system, line for line (after its
#: ``- partition_index: SYSn`` line, whose number depends on the layout).
SEED_001_SYSTEM_LINES = """\
  partition_name: system
  file_name: system.img
  is_download: true
  type: EXT4_IMG
  linear_start_addr: 0x8000000
  physical_start_addr: 0x8000000
  partition_size: 0x80000000
  region: EMMC_USER
  storage: HW_STORAGE_EMMC
  boundary_check: true
  is_reserved: false
  operation_type: UPDATE
"""

#: Seed 003: the MTD lines of the camera's boot log, verbatim.
SEED_003_BOOTLOG = """\
Creating 6 MTD partitions on "NOR_FLASH":
0x000000000000-0x000000050000 : "BOOT"
0x000000050000-0x0000001d0000 : "KERNEL"
0x0000001d0000-0x0000003b0000 : "ROOTFS"
0x0000003b0000-0x000000fe0000 : "HOME"
0x000000fe0000-0x000000ff0000 : "vd1"
0x000000ff0000-0x000001000000 : "conf"
"""

#: Seed 000's own backup commands, ``dd if=/dev/block/mmcblk0 of=NAME.img bs=1024 count=C
#: skip=S``, as name → (skip, count) in KiB. usrdata is the seed's gzip-piped line. The seed's
#: commented-out fat line says skip=200192 — an arithmetic slip (0x10c380000 is 4394496 KiB) —
#: and its bmtpool line skip=4173760.1640625; mtkfs computes both itself, so they are left out.
SEED_000_DD = {
    "mbr": (0, 512),
    "ebr1": (512, 512),
    "pro_info": (1024, 3072),
    "nvram": (4096, 5120),
    "protect_f": (9216, 10240),
    "protect_s": (19456, 10240),
    "seccfg": (29696, 128),
    "uboot": (29824, 384),
    "bootimg": (30208, 6144),
    "recovery": (36352, 12288),
    "sec_ro": (48640, 6144),
    "misc": (54784, 512),
    "logo": (55296, 3072),
    "ebr2": (58368, 512),
    "expdb": (58880, 10240),
    "android": (69120, 1048576),
    "cache": (1117696, 131072),
    "usrdata": (1248768, 3145728),
}

#: Seed 004: one scatter row is enough to read back (or flash) recovery.
SEED_004_RECOVERY_ONLY = """\
- general: MTK_PLATFORM_CFG
  info:
    - config_version: V1.1.2
      platform: MT6757
      storage: EMMC
- partition_index: SYS8
  partition_name: recovery
  file_name: recovery.img
  is_download: true
  type: NORMAL_ROM
  linear_start_addr: 0x8000
  physical_start_addr: 0x8000
  partition_size: 0x1000000
  region: EMMC_USER
  storage: HW_STORAGE_EMMC
  boundary_check: true
  is_reserved: false
  operation_type: UPDATE
  reserve: 0x00
"""
