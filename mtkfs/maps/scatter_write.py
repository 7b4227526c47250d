"""Write a :class:`PartitionMap` as an SP Flash Tool scatter file (YAML, config_version V1.1.x).

Why: the mount shows ``scatter.txt`` next to the partition files so that a readback can be flashed
back with SP Flash Tool as it is (the seed-001 restore procedure, minus the hand-written scatter).
So the text copies ptgen's layout exactly — banner comments, general block, then every field of
every row in ptgen's order — because SP Flash Tool and the tools around it (WwR MTK, MTK Droid
Tools) are picky readers, and LF line endings only: SP Flash Tool fails on CRLF (seed 002).

Which rows get downloaded is a policy, decided per partition by :func:`row_role`:

* ``BOOTLOADERS`` — preloader, dsp_bl and anything in a boot region (type ``SV5_BL_BIN``);
  downloaded. Every downloaded file is ``<name>.img``, as the mount names them, except the
  preloader's: ``preloader.bin``, the preloader without the 2 KiB ``EMMC_BOOT`` header a boot-region
  readback starts with (seed 001 cuts it off with dd). The raw ``preloader.img`` must never be
  flashed as the preloader, so the scatter names a file that has to be made on purpose.
* ``PROTECTED`` — calibration and per-device data (proinfo, protect1/2, persist, nvdata, frp…);
  never downloaded: SP Flash Tool's "firmware upgrade" keeps them, and another phone's copy would
  overwrite this phone's IMEI/calibration.
* ``BINREGION`` — nvram; never downloaded, for the same reason.
* ``INVISIBLE`` — pgpt, seccfg, efuse, and para/expdb/metadata/kb/dkb: not part of a ROM
  (boot-state, crash logs, encryption keys); never downloaded. Real scatters of the P-70A era mark
  para/expdb/metadata exactly so (the seed's "not needed" list).
* ``RESERVED`` — sgpt, flashinfo, bmtpool, otp: ``is_reserved``, no boundary check, never
  downloaded. Written as ``0xFFFFnnnn`` markers when they sit a whole number of 128 KiB blocks
  before the region's end, which is how ptgen writes them and what SP Flash Tool expects.
* ``UPDATE`` — everything else, downloaded. MBR-era ``mbr``/``ebrN`` rows are ``UPDATE`` and
  downloaded too: they are this phone's own partition table, and ptgen's MBR-era scatters flash
  them so that a "format all + download" rebuilds the table the other rows rely on.
* A partition the source does not hold (``exposed`` False) is never downloaded: the mount has no
  file for it, and SP Flash Tool would stop on the missing file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mtkfs.maps import names
from mtkfs.maps.model import RESERVED_BLOCK_BYTES, Partition, PartitionMap, Region

CONFIG_VERSIONS = {"EMMC": "V1.1.2", "UFS": "V1.1.2", "NAND": "V1.1.1"}
BLOCK_SIZE_BYTES = 0x20000
MAX_RESERVED_BLOCKS = 0xFFFF

PROTECTED = frozenset(
    {"proinfo", "pro_info", "protect1", "protect2", "protect_f", "protect_s", "persist",
     "nvdata", "nvcfg", "frp"}
)  # fmt: skip
INVISIBLE = frozenset({"pgpt", "seccfg", "efuse", "para", "expdb", "metadata", "kb", "dkb"})
RESERVED = frozenset({"sgpt", "flashinfo", "bmtpool", "otp"})
BOOTLOADERS = frozenset({"preloader", "dsp_bl"})
_BOOT_REGIONS = frozenset({"boot1", "boot2", "lu0", "lu1"})
_MBR_ROW = re.compile(r"mbr|ebr[0-9]+")
#: Region order in the file: boot regions first (ptgen puts the preloader at SYS0), then user.
_REGION_ORDER = ("boot1", "boot2", "lu0", "lu1", "rpmb", "gp1", "gp2", "gp3", "gp4", "user",
                 "lu2", "flash")  # fmt: skip
_EMMC_REGIONS = {
    "boot1": "EMMC_BOOT1_BOOT2", "boot2": "EMMC_BOOT2", "rpmb": "EMMC_RPMB", "user": "EMMC_USER",
    "gp1": "EMMC_GP1", "gp2": "EMMC_GP2", "gp3": "EMMC_GP3", "gp4": "EMMC_GP4",
    "lu0": "UFS_LU0", "lu1": "UFS_LU1", "lu2": "UFS_LU2", "flash": "NONE",
}  # fmt: skip
#: On UFS the plain-file regions of a readback are the LUs (scatter.py maps them back).
_UFS_REGIONS = {"boot1": "UFS_LU0", "boot2": "UFS_LU1", "user": "UFS_LU2"}
_PLAIN_SCALAR = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+~-]*")
_BANNER = "#" * 108


@dataclass(frozen=True)
class RowRole:
    """How SP Flash Tool should treat one partition (see the module docstring for the rules)."""

    operation_type: str
    is_download: bool
    type: str


def row_role(part: Partition, fs_types: Mapping[str, str] | None = None) -> RowRole:
    """The scatter ``operation_type``, ``is_download`` and ``type`` of one partition."""
    name = part.name.lower()
    in_boot = part.region in _BOOT_REGIONS
    file_type = "EXT4_IMG" if (fs_types or {}).get(part.name) == "ext4" else "NORMAL_ROM"
    if in_boot or name in BOOTLOADERS:
        operation, download, file_type = "BOOTLOADERS", True, "SV5_BL_BIN"
    elif name in PROTECTED:
        operation, download = "PROTECTED", False
    elif name == "nvram":
        operation, download = "BINREGION", False
    elif name in RESERVED:
        operation, download = "RESERVED", False
    elif name in INVISIBLE or part.region == "rpmb":
        operation, download = "INVISIBLE", False
    else:
        operation, download = "UPDATE", True
    return RowRole(operation, download and part.exposed, file_type)


def write_scatter(
    pmap: PartitionMap,
    regions: Mapping[str, Region],
    *,
    fs_types: Mapping[str, str] | None = None,
    platform: str = "MT6xxx",
    project: str = "mtkfs",
    storage: str = "EMMC",
    left_out: frozenset[str] = frozenset(),
) -> str:
    """The scatter text of ``pmap``: every partition, exposed or not, region by region.

    ``regions`` gives the region sizes that reserved-from-end rows are counted back from;
    ``fs_types`` maps partition names to file systems (``ext4`` rows become ``EXT4_IMG``).
    Partitions in a region a scatter file cannot name are left out, with a comment saying so.
    ``parse_scatter`` of the result with the same ``regions`` gives back every partition's name,
    region, offset and size. ``left_out``: partitions whose file a ROM folder does not hold
    (``mtkfs export-rom`` without ``--all`` leaves a huge userdata out): not downloaded.
    """
    storage = storage.upper()
    if storage not in CONFIG_VERSIONS:
        raise ValueError(f"storage must be one of {sorted(CONFIG_VERSIONS)}, not {storage!r}")
    mbr_era = pmap.origin.upper().startswith("MBR") or any(
        _MBR_ROW.fullmatch(p.name.lower()) for p in pmap.partitions
    )
    lines = [
        *_banner("General Setting"),
        "- general: MTK_PLATFORM_CFG",
        "  info:",
        f"    - config_version: {CONFIG_VERSIONS[storage]}",
        f"      platform: {_scalar(names.clean_name(platform, 'MT6xxx'))}",
        f"      project: {_scalar(names.clean_name(project, 'mtkfs'))}",
        f"      storage: {storage}",
        f"      boot_channel: {'NONE' if storage == 'NAND' else 'MSDC_0'}",
        f"      block_size: {BLOCK_SIZE_BYTES:#x}",
        f"      skip_pmt_operate: {_bool(not mbr_era)}",
        *_banner("Layout Setting"),
    ]
    rank = {region: index for index, region in enumerate(_REGION_ORDER)}
    ordered = sorted(
        enumerate(pmap.partitions),
        key=lambda item: (
            rank.get(item[1].region, len(rank)),
            item[1].region,
            item[1].offset_bytes,
            item[0],
        ),
    )
    index = 0
    for _, part in ordered:
        region_name = _region_name(part.region, storage)
        if region_name is None:
            lines += [f"# {part.name}: region {part.region} has no scatter name; left out", ""]
            continue
        lines += _row(
            index, part, region_name, regions.get(part.region), fs_types, storage, left_out
        )
        index += 1
    return "\n".join(lines) + "\n"


def _banner(title: str) -> list[str]:
    """ptgen's section banner."""
    return [_BANNER, "#", f"#  {title}", "#", _BANNER]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar: plain when that reads back as the same string, else quoted.

    Cleaned names can still start with ``-`` or ``+`` (``-`` alone would open a YAML sequence).
    """
    if _PLAIN_SCALAR.fullmatch(text):
        return text
    return "'" + text.replace("'", "''") + "'"


def _region_name(region: str, storage: str) -> str | None:
    """The scatter ``region:`` value for an mtkfs region, None when there is none."""
    if storage == "UFS" and region in _UFS_REGIONS:
        return _UFS_REGIONS[region]
    return _EMMC_REGIONS.get(region)


def _start_address(part: Partition, role: RowRole, region: Region | None, size: int) -> str:
    """The row's start: its region offset, or ptgen's 0xFFFFnnnn marker for reserved rows.

    The marker is used only when it says exactly the same thing — a whole number of 128 KiB
    blocks before the end of a region of known size, with a size that fits in them — so that
    reading the file back always finds the same offset.
    """
    if role.operation_type != "RESERVED" or region is None or size == 0:
        return f"{part.offset_bytes:#x}"
    from_end = region.size_bytes - part.offset_bytes
    blocks, remainder = divmod(from_end, RESERVED_BLOCK_BYTES)
    if remainder or not 0 < blocks <= MAX_RESERVED_BLOCKS or size > from_end:
        return f"{part.offset_bytes:#x}"
    return f"0xFFFF{blocks:04X}"  # upper case, as ptgen writes markers


def _row(
    index: int,
    part: Partition,
    region_name: str,
    region: Region | None,
    fs_types: Mapping[str, str] | None,
    storage: str,
    left_out: frozenset[str] = frozenset(),
) -> list[str]:
    """One partition's block, every field in ptgen's order, then a blank line."""
    role = row_role(part, fs_types)
    if part.name in left_out:
        role = RowRole(role.operation_type, False, role.type)
    size = part.size_bytes if part.declared_size_bytes is None else part.declared_size_bytes
    start = _start_address(part, role, region, size)
    if not role.is_download:
        file_name = "NONE"
    elif part.name.lower() == "preloader":
        file_name = "preloader.bin"
    else:
        file_name = f"{part.name}.img"
    reserved = role.operation_type == "RESERVED"
    upgradable = role.is_download and role.operation_type in ("UPDATE", "BOOTLOADERS")
    return [
        f"- partition_index: SYS{index}",
        f"  partition_name: {_scalar(part.name)}",
        f"  file_name: {_scalar(file_name)}",
        f"  is_download: {_bool(role.is_download)}",
        f"  type: {role.type}",
        f"  linear_start_addr: {start}",
        f"  physical_start_addr: {start}",
        f"  partition_size: {size:#x}",
        f"  region: {region_name}",
        f"  storage: HW_STORAGE_{storage}",
        f"  boundary_check: {_bool(not reserved)}",
        f"  is_reserved: {_bool(reserved)}",
        f"  operation_type: {role.operation_type}",
        f"  is_upgradable: {_bool(upgradable)}",
        "  empty_boot_needed: false",
        "  combo_partsize_check: false",
        "  reserve: 0x00",
        "",
    ]
