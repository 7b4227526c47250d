"""How an XFlash Download Agent describes and addresses the phone's storage.

Split from :mod:`mtkfs.protocols.da_xflash`, which re-exports the names its callers use: the
GET_*_INFO record layouts, region names and partition ids, and the 56-byte addressing parameter
of READ_DATA/WRITE_DATA/FORMAT — pure parsing and packing, no exchange (little-endian throughout).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from mtkfs.errors import LocalProtocolError, RemoteProtocolError

#: Storage ids of the 56-byte addressing parameter.
STORAGE_IDS = {"emmc": 0x01, "nand": 0x10, "nor": 0x20, "ufs": 0x30}
#: Region name → partition id, per storage kind. UFS LU n is reported n-th in GET_UFS_INFO and
#: addressed as part n+1 (BOOT1, BOOT2, USER), as penumbra does; RPMB is not a data region here.
_PART_IDS = {
    "emmc": {"boot1": 1, "boot2": 2, "rpmb": 3, "gp1": 4, "gp2": 5, "gp3": 6, "gp4": 7, "user": 8},
    "ufs": {"lu0": 1, "lu1": 2, "lu2": 3},
    "nand": {"flash": 8},
    "nor": {"flash": 8},
}


def region_address(kind: str, region: str) -> tuple[int, int]:
    """``(storage id, partition id)`` of region ``region`` on storage ``kind`` (``emmc``…)."""
    try:
        return STORAGE_IDS[kind], _PART_IDS[kind][region]
    except KeyError:
        known = ", ".join(_PART_IDS.get(kind, {})) or "none"
        raise LocalProtocolError(
            f"no XFlash address for region {region!r} on {kind!r} storage (known: {known})"
        ) from None


@dataclass(frozen=True)
class StorageRegion:
    """One addressable area the DA reports: its mtkfs name, XFlash partition id and size."""

    name: str
    part_id: int
    size_bytes: int


@dataclass(frozen=True)
class StorageInfo:
    """What a GET_*_INFO says about the phone's storage.

    Attributes:
        kind: ``emmc``, ``ufs``, ``nand`` or ``nor``.
        storage_id: the addressing parameter's storage field.
        block_size_bytes: the unit reads and writes are aligned to (eMMC sector, UFS LBA, NAND
            page).
        regions: the regions with a nonzero size, in the DA's order.
        cid: the chip's identification bytes (eMMC CID, UFS CID, NAND id), for logs.
    """

    kind: str
    storage_id: int
    block_size_bytes: int
    regions: tuple[StorageRegion, ...]
    cid: bytes = b""

    def region(self, name: str) -> StorageRegion:
        for region in self.regions:
            if region.name == name:
                return region
        raise LocalProtocolError(
            f"{self.kind} storage has no region {name!r} "
            f"(it has {', '.join(r.name for r in self.regions) or 'none'})"
        )

    def address(self, name: str) -> tuple[int, int]:
        """``(storage id, partition id)`` for READ_DATA/WRITE_DATA on region ``name``."""
        return self.storage_id, self.region(name).part_id


def _regions(kind: str, sizes: dict[str, int]) -> tuple[StorageRegion, ...]:
    return tuple(
        StorageRegion(name, _PART_IDS[kind][name], size) for name, size in sizes.items() if size > 0
    )


def need_bytes(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise RemoteProtocolError(f"{what}: {len(payload)} bytes, at least {size} expected")


def parse_emmc_info(payload: bytes) -> StorageInfo | None:
    """GET_EMMC_INFO: u32 type, u32 block size, 8×u64 sizes, 16-byte CID… (None: no eMMC)."""
    need_bytes(payload, 72, "GET_EMMC_INFO")
    kind, block = struct.unpack_from("<II", payload)
    if kind == 0:
        return None
    names = ("boot1", "boot2", "rpmb", "gp1", "gp2", "gp3", "gp4", "user")
    sizes = dict(zip(names, struct.unpack_from("<8Q", payload, 8), strict=True))
    return StorageInfo(
        "emmc", STORAGE_IDS["emmc"], block or 512, _regions("emmc", sizes), payload[72:88]
    )


def parse_ufs_info(payload: bytes) -> StorageInfo | None:
    """GET_UFS_INFO: u32 type, u32 block size, 3×u64 LU sizes, then CID/firmware/serial.

    The LU sizes are taken in wire order as lu0 (boot LU A), lu1 (boot LU B), lu2 (user), as
    penumbra reads them. (mtkclient names the same three fields lu2, lu1, lu0; both agree that
    the third is the user LU, and the boot LUs have equal sizes on every phone seen.)
    """
    need_bytes(payload, 32, "GET_UFS_INFO")
    kind, block = struct.unpack_from("<II", payload)
    if kind == 0:
        return None
    sizes = dict(zip(("lu0", "lu1", "lu2"), struct.unpack_from("<3Q", payload, 8), strict=True))
    return StorageInfo(
        "ufs", STORAGE_IDS["ufs"], block or 4096, _regions("ufs", sizes), payload[32:48]
    )


def parse_nand_info(payload: bytes) -> StorageInfo | None:
    """GET_NAND_INFO: u32 type, page, block, spare sizes; u64 total, available; u8 bmt; 12-byte id.

    The region is the *available* size: READ_DATA addresses NAND logically (address type 0), and
    the logical space excludes the bad-block pool. (mtkclient dumps ``total``; which of the two a
    real NAND DA serves to the end is not verified on hardware.)
    """
    need_bytes(payload, 32, "GET_NAND_INFO")
    kind, page, _block, _spare, total, available = struct.unpack_from("<4I2Q", payload)
    if kind == 0:
        return None
    size = available or total
    return StorageInfo(
        "nand", STORAGE_IDS["nand"], page or 2048, _regions("nand", {"flash": size}), payload[33:45]
    )


def parse_nor_info(payload: bytes) -> StorageInfo | None:
    """GET_NOR_INFO: u32 type, u32 page size, u64 available (None: no NOR)."""
    need_bytes(payload, 16, "GET_NOR_INFO")
    kind, page, available = struct.unpack_from("<IIQ", payload)
    if kind == 0:
        return None
    return StorageInfo(
        "nor", STORAGE_IDS["nor"], page or 256, _regions("nor", {"flash": available})
    )


def address_param(storage_id: int, part_id: int, offset_bytes: int, length_bytes: int) -> bytes:
    """The 56-byte addressing parameter of READ_DATA/WRITE_DATA/FORMAT (NAND extension zeroed:
    logical addressing, raw binary)."""
    return struct.pack("<IIQQ8I", storage_id, part_id, offset_bytes, length_bytes, *([0] * 8))
