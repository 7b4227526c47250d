"""Legacy DA bring-up, host side: from DA1's 0xC0 to DA2's flash report (steps 1–4 of
:mod:`mtkfs.protocols.da_legacy`): the sync report, the stage-2 configuration, DRAM from the
preloader's EMI settings (ENABLE_DRAM, BROM mode), the DA2 upload and the flash report that
gives the regions. Sans-I/O; split from ``da_legacy``, which re-exports these names.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from mtkfs.errors import (
    RemoteProtocolError,
    TransportError,
    UsageError,
)
from mtkfs.protocols.base import Op, Send, byte_sum16, recv_exact
from mtkfs.protocols.brom import DeviceInfo
from mtkfs.protocols.legacy_wire import (
    ACK,
    DA2_PACKET_BYTES,
    DRAM_APPLY,
    EMI_HEADER_VERSIONS,
    EMI_INFO_VERSIONS,
    EMI_LENGTH_VERSIONS,
    EMI_VERSIONS,
    EMMC_PARTS,
    FIX_EMI,
    HW_STORAGE,
    MAX_EMI_BYTES,
    MAX_IDS,
    MAX_PAGE_BYTES,
    NACK,
    PART_WHOLE,
    STATUS_NAND_MARKER,
    SYNC,
    Cmd,
    bounded,
    expect_ack,
    recv_int,
    status_error,
    u16,
    u32,
)
from mtkfs.protocols.preloader_emi import EmiSettings
from mtkfs.protocols.xflash_storage import StorageInfo, StorageRegion

log = logging.getLogger(__name__)
# ---------------------------------------------------------------------------------------------
# Bring-up
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """DA1's unasked report after its sync byte (and the 3 bytes after the host's ACK)."""

    nand_status: int
    nand_ids: tuple[int, ...]
    emmc_status: int
    emmc_ids: tuple[int, ...]
    da_version: tuple[int, int]
    chip_byte: int

    @property
    def storage_hint(self) -> str:
        """What DA1 found (mtkclient's rule): NAND ids first, then an eMMC id, else NOR."""
        if self.nand_ids and self.nand_ids[0]:
            return "nand"
        return "emmc" if self.emmc_ids[0] else "nor"


def recv_sync(*, read_sync_byte: bool = True) -> Op[SyncReport]:
    """0xC0 → NAND status, ids → eMMC status, 4 ids; H: ACK; D: DA major, minor, chip byte."""
    if read_sync_byte:
        byte = yield from recv_exact(1)
        if byte != SYNC:
            raise RemoteProtocolError(
                f"DA1 did not start: expected its sync byte 0xC0, got 0x{byte.hex()} — the DA "
                "file may not fit this chip, or the device rebooted; replug and retry"
            )
    nand_status = yield from recv_int(4)
    count = bounded((yield from recv_int(2)), MAX_IDS, "DA1 report, NAND id count")
    nand_ids = struct.unpack(f">{count}H", (yield from recv_exact(2 * count))) if count else ()
    emmc_status = yield from recv_int(4)
    emmc_ids = struct.unpack(">4I", (yield from recv_exact(16)))
    yield Send(ACK)
    major, minor, chip_byte = yield from recv_exact(3)
    log.debug("legacy DA1 %d.%d, chip byte 0x%02X", major, minor, chip_byte)
    return SyncReport(nand_status, nand_ids, emmc_status, emmc_ids, (major, minor), chip_byte)


def bmt_settings(hw_code: int, storage: str) -> tuple[int, int]:
    """(BMT flag, BMT pool size in bytes) of the stage-2 config (mtkclient's per-chip table)."""
    if hw_code in (0x6592, 0x6582, 0x8127, 0x6571) and storage == "emmc":
        return 1, 0x1500000
    if hw_code == 0x6571 and storage == "nand":
        return 0, 0xE00000
    if hw_code == 0x6575 and storage == "nand":
        return 0, 0
    return 1, 0


#: The 20 bytes MT6580/MT8163/MT8127 DAs expect after their SLC percentage (as mtkclient sends).
_SLC_TAIL = b"FF" + bytes(14) + b"\xff" + bytes(3)


def stage2_extra(hw_code: int) -> bytes:
    """The chip-specific words that end the stage-2 config (none for most chips)."""
    extras = {
        0x6592: u32(0),  # is_gpt_solution
        0x6580: u32(1) + _SLC_TAIL,  # SLC percentage
        0x8163: u32(1) + _SLC_TAIL,
        0x8127: u32(0) + u32(1) + _SLC_TAIL,
        0x6583: u32(0),  # force DRAM
        0x6589: u32(1),
        0x6582: u32(1),  # "new combo"
    }
    return extras.get(hw_code, b"")


def stage2_config(info: DeviceInfo, storage: str) -> bytes:
    """BROM version, BL version (0xFE in BROM mode), u16 NOR chip 0x0008, NOR CS 0, u32 NAND
    ACCCON 0x7007FFFF, BMT flag, u32 BMT size, force charge 1, reset keys, EXT_26M clock 2,
    MSDC boot channel 0, then the chip's extras."""
    bmt_flag, bmt_bytes = bmt_settings(info.hw_code, storage)
    bl_ver = 0xFE if info.bl_ver is None else info.bl_ver
    reset_keys = 0 if info.hw_code == 0x6583 else 1
    head = struct.pack(
        ">BBHBIBIBBBB",
        info.version & 0xFF,
        bl_ver & 0xFF,
        0x0008,
        0,
        0x7007FFFF,
        bmt_flag,
        bmt_bytes,
        1,
        reset_keys,
        2,
        0,
    )
    return head + stage2_extra(info.hw_code)


def send_stage2_config(config: bytes, hw_code: int) -> Op[int]:
    """Send the config; the DA's u32 answer (0 ready, 0xBC3 DRAM needed, else an error)."""
    yield Send(config)
    result = yield from recv_int(4)
    if result == 0 and hw_code == 0x6592:
        yield from recv_exact(20)  # five more words MT6592 DAs add (mtkclient skips them too)
    return result


def _emi_wire(version: int, blob: bytes, length: int, hw_code: int) -> bytes:
    """The bytes after the host's ACK in each shape of ENABLE_DRAM."""
    if version in EMI_LENGTH_VERSIONS:
        return (b"" if hw_code == 0x8127 else u32(len(blob))) + blob
    if len(blob) < length:
        raise UsageError(
            f"ENABLE_DRAM: the DA wants {length} bytes of EMI settings (v{version}), the "
            f"preloader has {len(blob)}: they are not this phone's; {FIX_EMI} (replug first)"
        )
    if version in EMI_HEADER_VERSIONS:
        return u32(0x100) + blob[4:length]
    return blob[:length]


def enable_dram(emi: EmiSettings, hw_code: int) -> Op[int]:
    """After the 0xBC3 answer: DRAM setup from the preloader's EMI settings; returns the RAM size.

    D: u32, 16 bytes of DRAM ids, u32 0xBC4, u16 count + NAND ids; H: ENABLE_DRAM, u32 EMI
    version; D: ACK (NACK: version refused); then per version: (v10/11: 16 info bytes) D: u32
    length; H: ACK; H: (v15–21: u32 length) EMI bytes (v12/13: u32 0x100 header first); D: u16
    checksum; H: ACK, u32 0x80000001; D: u32 result, u8 type, u8 chip select, u64 size
    (v13: 5 more words). The checksum's algorithm is unknown, so it is only logged.
    """
    yield from recv_exact(4)
    dram_ids = yield from recv_exact(16)
    marker = yield from recv_int(4)
    if marker != STATUS_NAND_MARKER:
        raise RemoteProtocolError(
            f"DRAM setup: expected 0x{STATUS_NAND_MARKER:X}, got 0x{marker:X}"
        )
    count = bounded((yield from recv_int(2)), MAX_IDS, "DRAM setup, NAND id count")
    yield from recv_exact(2 * count)
    log.info("the DA needs DRAM settings (DRAM ids %s)", dram_ids.hex())
    blob = emi.legacy_blob
    if emi.version not in EMI_VERSIONS:
        raise UsageError(
            f"the preloader's EMI settings are version v{emi.version}, for which the legacy "
            "DA's ENABLE_DRAM exchange is not known (known: v10–13, v15–17, v20, v21): they "
            f"belong to a newer phone; {FIX_EMI}"
        )
    yield Send(bytes([Cmd.ENABLE_DRAM]) + u32(emi.version))
    reply = yield from recv_exact(1)
    if reply == NACK:
        raise TransportError(f"ENABLE_DRAM: the DA refused EMI version v{emi.version}; {FIX_EMI}")
    if reply != ACK:
        raise RemoteProtocolError(f"ENABLE_DRAM: expected ACK, got 0x{reply.hex()}")
    if emi.version in EMI_INFO_VERSIONS:
        yield from recv_exact(16)
    length = bounded((yield from recv_int(4)), MAX_EMI_BYTES, "ENABLE_DRAM, EMI length")
    yield Send(ACK)
    wire = _emi_wire(emi.version, blob, length, hw_code)
    yield Send(wire)
    checksum = yield from recv_int(2)
    log.debug("EMI checksum from the DA 0x%04X (byte sum 0x%04X)", checksum, byte_sum16(wire))
    yield Send(ACK + u32(DRAM_APPLY))
    result = yield from recv_int(4)
    if result:
        raise status_error(result, f"ENABLE_DRAM (EMI v{emi.version})")
    ram = yield from recv_exact(10)  # u8 type, u8 chip select, u64 size
    size_bytes = int.from_bytes(ram[2:], "big")
    if emi.version == 13:
        yield from recv_exact(20)
    return size_bytes


def upload_da2(addr: int, da2: bytes, packet_bytes: int = DA2_PACKET_BYTES) -> Op[None]:
    """H: u32 address, size, packet size; D: ACK; per packet H: data, D: ACK; H: ACK; D: ACK."""
    yield Send(struct.pack(">III", addr, len(da2), packet_bytes))
    yield from expect_ack("DA2 upload (header)")
    for pos in range(0, len(da2), packet_bytes):
        yield Send(da2[pos : pos + packet_bytes])
        yield from expect_ack(f"DA2 upload, packet at +0x{pos:X}")
    yield Send(ACK)
    yield from expect_ack("DA2 start (no answer: DA2 did not run — DRAM not set up?)")


# ---------------------------------------------------------------------------------------------
# DA2's flash report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlashReport:
    """The flash report DA2 sends once it runs (sizes in bytes)."""

    nor_size: int
    nand_size: int
    nand_ids: tuple[int, ...]
    nand_page: int
    nand_spare: int
    emmc_sizes: dict[str, int]
    emmc_cid: bytes
    sd_size: int
    ram_size: int


def _recv_nand_report() -> Op[tuple[int, tuple[int, ...]]]:
    """NAND info: 17 bytes with a 64-bit size, or 13 with a 32-bit one (older DAs).

    mtkclient's rule: a zero id count at the 64-bit place means the 32-bit layout, whose ids
    started 4 bytes early. mtkfs also takes the 32-bit layout when the 64-bit count is
    implausible (its place holds the second id there), and the 64-bit one without ids when
    neither count makes sense but the 64-bit one is zero.
    """
    data = yield from recv_exact(17)
    size, count = struct.unpack_from(">QH", data, 7)
    size32, count32 = struct.unpack_from(">IH", data, 7)
    if 0 < count <= MAX_IDS:
        raw = yield from recv_exact(2 * count)
        return size, struct.unpack(f">{count}H", raw)
    if 2 <= count32 <= MAX_IDS:
        raw = data[13:] + (yield from recv_exact(2 * count32 - 4))
        return size32, struct.unpack(f">{count32}H", raw)
    if count == 0:
        return size, ()
    raise RemoteProtocolError(
        f"DA2 flash report: NAND id count {count} (or {count32}) is implausible: corrupted "
        "bytes, or a DA that does not speak this protocol"
    )


def recv_flash_report(hw_code: int) -> Op[FlashReport]:
    """NOR 0x1C, NAND 0x11 + ids, NAND 9, eMMC 0x5C, SD 0x1C, RAM 0x26, (MT8163: u32), pass 0xA."""
    nor = yield from recv_exact(0x1C)
    nand_size, nand_ids = yield from _recv_nand_report()
    nand_page, nand_spare = struct.unpack(">HH", (yield from recv_exact(9))[:4])
    emmc = yield from recv_exact(0x5C)
    sd = yield from recv_exact(0x1C)
    ram = yield from recv_exact(0x26)
    if hw_code == 0x8163:
        yield from recv_exact(4)
    passed = yield from recv_exact(10)
    if passed[0] != ACK[0]:
        if passed[4] != ACK[0]:
            raise RemoteProtocolError(
                f"DA2 flash report: its pass block {passed.hex(' ')} does not start with ACK "
                "— DA2 failed to initialise the flash; replug and retry"
            )
        yield from recv_exact(1)  # the block came one byte late (mtkclient tolerates this too)
    names = ("boot1", "boot2", "rpmb", "gp1", "gp2", "gp3", "gp4", "user")
    sizes = dict(zip(names, struct.unpack_from(">8Q", emmc, 4), strict=True))
    return FlashReport(
        nor_size=struct.unpack_from(">I", nor, 8)[0],
        nand_size=nand_size,
        nand_ids=nand_ids,
        nand_page=nand_page,
        nand_spare=nand_spare,
        emmc_sizes=sizes,
        emmc_cid=emmc[68:84],
        sd_size=struct.unpack_from(">Q", sd, 4)[0],
        ram_size=struct.unpack_from(">Q", ram, 14)[0],
    )


def storage_kind(sync: SyncReport, flash: FlashReport) -> str:
    """NAND when DA1 saw NAND ids (mtkclient's priority), else eMMC with a user area, else NOR,
    else NAND with a size after all; TransportError when the DA found no flash."""
    if flash.nand_size and sync.storage_hint == "nand":
        return "nand"
    if flash.emmc_sizes["user"]:
        return "emmc"
    if flash.nor_size:
        return "nor"
    if flash.nand_size:
        return "nand"
    raise TransportError(
        "the Download Agent reports no eMMC, NAND or NOR storage: it could not initialise the "
        "flash (a DA for another chip, or DRAM settings from another phone?)"
    )


def storage_info(sync: SyncReport, flash: FlashReport) -> StorageInfo:
    """The regions mtkfs shows: eMMC areas with a nonzero size, or one ``flash`` region."""
    kind = storage_kind(sync, flash)
    if kind == "emmc":
        regions = tuple(
            StorageRegion(name, EMMC_PARTS[name], size)
            for name, size in flash.emmc_sizes.items()
            if size
        )
        return StorageInfo("emmc", HW_STORAGE["emmc"], 512, regions, flash.emmc_cid)
    if kind == "nor":
        region = StorageRegion("flash", PART_WHOLE, flash.nor_size)
        return StorageInfo("nor", HW_STORAGE["nor"], 512, (region,))
    page = flash.nand_page or 2048
    if page & (page - 1) or not 512 <= page <= MAX_PAGE_BYTES:
        raise RemoteProtocolError(f"DA2 flash report: NAND pages of {page} bytes")
    ids = b"".join(u16(i) for i in flash.nand_ids)
    region = StorageRegion("flash", PART_WHOLE, flash.nand_size)
    return StorageInfo("nand", HW_STORAGE["nand"], page, (region,), ids)
