"""The legacy Download Agent protocol (SP Flash Tool v3/v5 generation), host side, sans-I/O.

Phones from MT6572 to MT6580/MT8163 run DAs that speak single-byte commands, big-endian fields
and single-byte answers: ACK 0x5A, NACK 0xA5, CONT 0x69. After BROM's JUMP_DA, DA1 talks first:

1. 0xC0, then a report nobody asked for: u32 NAND status, u16 count + u16 NAND ids, u32 eMMC
   status + 4 u32 eMMC ids; the host ACKs and gets 3 bytes (DA version, chip);
2. the host's *stage-2 configuration* (versions, NOR/NAND timings, BMT settings, chip extras),
   answered by a u32: 0, or 0xBC3 — "DRAM is off, give me the preloader's EMI settings"
   (ENABLE_DRAM, :func:`enable_dram`), which is what BROM mode means;
3. DA2, uploaded *with* its signature in 4 KiB packets, each ACKed;
4. DA2's flash report: NOR, NAND (+ ids, page/spare), eMMC (sizes of every area, CID), SD,
   RAM and a pass block — the only place region sizes come from.

Then commands: SDMMC_SWITCH_PART + READ (data in host-chosen packets, each followed by a u16
byte-sum checksum the host ACKs), NAND_READPAGE (page + spare), SDMMC_WRITE_DATA, READ_PMT,
USB speed query/switch, FINISH. Facts from ``../shared/reference/mtkclient.md`` §3.3/§4.1 and
mtkclient's ``dalegacy_lib.py``; where they are inferences the docstring says so.

What mtkfs does differently from mtkclient (§4.1, §5, §6 of the reference):

* every read packet's checksum is *verified*; a bad packet is still ACKed to the end so the DA
  stays in step, then the whole command is issued again (:data:`READ_ATTEMPTS` in all) — bytes
  that failed their checksum are never returned;
* reads of any offset and length, widened to whole sectors/pages and trimmed, exact across packet
  boundaries (mtkclient's in-memory read returns only the first packet);
* every length the device announces is bounded before anything is read or allocated;
* DA error codes become :mod:`mtkfs.errors` exceptions whose messages say what to do.
"""

from __future__ import annotations

import enum
import logging
import struct
from dataclasses import dataclass
from typing import ClassVar

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    MtkfsError,
    OutOfRangeError,
    ReadOnlyError,
    RemoteProtocolError,
    TransportError,
    UsageError,
)
from mtkfs.protocols.base import Op, Send, byte_sum16, recv_exact
from mtkfs.protocols.brom import DeviceInfo
from mtkfs.protocols.da_session import DaSession
from mtkfs.protocols.dafile import DaEntry
from mtkfs.protocols.preloader_emi import EmiSettings
from mtkfs.protocols.xflash_storage import StorageInfo, StorageRegion

log = logging.getLogger(__name__)

ACK, NACK, CONT, SYNC = b"\x5a", b"\xa5", b"\x69", b"\xc0"
SOC_OK = 0xC1
#: READ's host-OS byte: Linux (0x0B would say Windows).
HOST_OS_LINUX = 0x0C
#: NAND_READPAGE: read pages with their spare area, logical addressing (mtkclient's choice).
NAND_READ_PAGE_SPARE, NAND_ADDR_LOGICAL = 0x00, 0x01
#: Pages per NAND packet: one, as mtkclient (the only client known to work) asks.
NAND_PAGES_PER_PACKET = 1
#: The stage-2 word that asks for DRAM settings, and the marker before its NAND ids.
STATUS_DRAM_NEEDED, STATUS_NAND_MARKER = 0xBC3, 0xBC4
#: What the host sends after the EMI blob: "apply the DRAM configuration".
DRAM_APPLY = 0x80000001
DA2_PACKET_BYTES = 0x1000
#: Attempts a read gets when packets fail their checksum (the first included).
READ_ATTEMPTS = 3

#: READ's storage byte (the DA's hardware storage type).
HW_STORAGE = {"nor": 0x00, "nand": 0x01, "emmc": 0x02}
#: SDMMC_WRITE_DATA's storage byte: mtkclient sends its DaStorage ids here, not READ's hardware
#: types (inference from mtkclient alone: no other client documents this byte).
WRITE_STORAGE = {"emmc": 0x01, "nand": 0x10, "nor": 0x20}
#: Partition numbers of SDMMC_SWITCH_PART / SDMMC_WRITE_DATA; NOR and NAND use 8 too.
EMMC_PARTS = {"boot1": 1, "boot2": 2, "rpmb": 3, "gp1": 4, "gp2": 5, "gp3": 6, "gp4": 7, "user": 8}
PART_WHOLE = 8
#: The host chooses the packet size: what SP Flash Tool and mtkclient use.
DEFAULT_PACKET_BYTES = {"emmc": 1 << 20, "nor": 0x1000, "nand": 1 << 20}
USB_SPEEDS = {0: "full-speed", 1: "high-speed", 2: "super-speed"}

#: ENABLE_DRAM has three shapes, chosen by the EMI version (``MTK_BLOADER_INFO_vNN``).
EMI_INFO_VERSIONS = frozenset({10, 11})
EMI_HEADER_VERSIONS = frozenset({12, 13})
EMI_LENGTH_VERSIONS = frozenset({15, 16, 17, 20, 21})
EMI_VERSIONS = EMI_INFO_VERSIONS | EMI_HEADER_VERSIONS | EMI_LENGTH_VERSIONS

_MAX_IDS = 64
_MAX_EMI_BYTES = 64 * 1024
_MAX_PMT_BYTES = 1 << 20
_MAX_PAGE_BYTES = 16 * 1024

_FIX_EMI = (
    "give --preloader FILE with this phone's own preloader (preloader_<board>.bin of its "
    "firmware, Boot1 of a readback, or regions/boot1.img of an earlier mount), or connect in "
    "preloader mode instead (switch the phone off and plug it in without holding any button)"
)


class Cmd(enum.IntEnum):
    """The command bytes mtkfs sends once DA2 runs (plus ENABLE_DRAM during bring-up)."""

    SDMMC_SWITCH_PART = 0x60
    SDMMC_WRITE_DATA = 0x62
    USB_SETUP_PORT = 0x70
    USB_CHECK_STATUS = 0x72
    SDMMC_READ_PMT = 0xA5
    READ = 0xD6
    FINISH = 0xD9
    NAND_READPAGE = 0xDF
    ENABLE_DRAM = 0xE8


# ---------------------------------------------------------------------------------------------
# Status codes
# ---------------------------------------------------------------------------------------------

#: DA status names (mtkclient's ``error.py``, the codes a reader or writer meets).
STATUS_NAMES = {
    0x3EA: "INVALID_ARGUMENTS",
    0x410: "UNSUPPORTED_OPERATION",
    0x411: "CHKSUM_ERROR",
    0xBB9: "EXT_RAM_ERROR",
    0xBBA: "SETUP_DRAM_FAIL",
    0xBBE: "DRAMC_RANK0_CALIBRATION_FAILED",
    0xBBF: "DRAMC_RANK1_CALIBRATION_FAILED",
    0xBC0: "DRAM_NOT_SUPPORT",
    0xBC3: "RAM_ERROR",
    0xBC4: "DEVICE_NOT_FOUND",
    0xBC7: "NOR_FLASH_NOT_FOUND",
    0xBC8: "NAND_FLASH_NOT_FOUND",
    0xBE0: "INVALID_RANGE",
    0xBE5: "NAND_BAD_BLOCK",
    0xBF9: "UART_DATA_CKSUM_ERROR",
    0xC22: "NAND_PAGE_READ_FAILED",
    0xC4D: "EMMC_FLASH_NOT_FOUND",
    0xC51: "SDMMC_READ_FAILED",
    0xC52: "SDMMC_WRITE_FAILED",
    0xC53: "SDMMC_ERR_CRC",
    0xC6A: "INVALID_STORAGE_TYPE",
}
_DRAM_STATUSES = frozenset({0xBB9, 0xBBA, 0xBBE, 0xBBF, 0xBC0, 0xBC3})
_CHECKSUM_STATUSES = frozenset({0x411, 0xBF9, 0xC53})
#: mtkclient's "SECURITY" group: SLA/DAA/SBC failures and forbidden read-back/download.
_SECURITY_STATUSES = range(0x1770, 0x1900)


def status_name(status: int) -> str:
    """``"INVALID_RANGE (0x0BE0)"``."""
    return f"{STATUS_NAMES.get(status, 'unknown status')} (0x{status:04X})"


def status_error(status: int, what: str) -> MtkfsError:
    """The exception for DA error ``status`` answering ``what``, saying what to do."""
    text = f"{what}: the Download Agent answered {status_name(status)}"
    exc: MtkfsError
    if status == 0xBE0:
        exc = OutOfRangeError(f"{text}: the request lies beyond the end of that flash area")
    elif status in _CHECKSUM_STATUSES:
        exc = TransportError(f"{text}: a packet was corrupted on the way; retrying may help")
        exc.temporary = True
    elif status in _DRAM_STATUSES:
        exc = TransportError(
            f"{text}: DRAM could not be set up with these EMI settings; {_FIX_EMI}"
        )
    elif status in _SECURITY_STATUSES:
        exc = AuthRequiredError(
            f"{text}: the phone's security policy forbids this and mtkfs does not bypass it; use "
            "the phone maker's own DA in preloader mode"
        )
    elif status in (0x3EA, 0x410, 0xC6A):
        exc = RemoteProtocolError(
            f"{text}: this DA does not take the request as mtkfs sends it; try the DA file from "
            "the phone's own firmware package"
        )
    else:
        exc = TransportError(
            f"{text}: the flash or the DA failed this operation; retry, and if it repeats at the "
            "same place the storage may be failing"
        )
    return exc


# ---------------------------------------------------------------------------------------------
# Byte-level helpers
# ---------------------------------------------------------------------------------------------


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def recv_int(size: int) -> Op[int]:
    """A big-endian unsigned integer of ``size`` bytes."""
    return int.from_bytes((yield from recv_exact(size)), "big")


def expect_ack(what: str) -> Op[None]:
    """The next byte must be ACK."""
    reply = yield from recv_exact(1)
    if reply != ACK:
        raise RemoteProtocolError(
            f"{what}: expected ACK 0x5A, got 0x{reply.hex()} — the DA refused or lost step; "
            "replug the phone and retry"
        )


def command_ack(what: str) -> Op[None]:
    """READ's answer: ACK, or NACK after which the host sends NACK and gets the u32 error."""
    reply = yield from recv_exact(1)
    if reply == ACK:
        return
    if reply != NACK:
        raise RemoteProtocolError(f"{what}: expected ACK or NACK, got 0x{reply.hex()}")
    yield Send(NACK)
    raw = yield from recv_exact(4)
    # mtkclient decodes this one word little-endian; everything else here is big-endian, so
    # mtkfs does too, and shows the bytes so either reading can be checked.
    raise status_error(int.from_bytes(raw, "big"), f"{what} (error bytes {raw.hex(' ')})")


def _bounded(value: int, limit: int, what: str) -> int:
    if value > limit:
        raise RemoteProtocolError(
            f"{what}: the DA announces {value}, at most {limit} is plausible (corrupted bytes, "
            "or a DA that does not speak this protocol)"
        )
    return value


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
    count = _bounded((yield from recv_int(2)), _MAX_IDS, "DA1 report, NAND id count")
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
        0x6592: _u32(0),  # is_gpt_solution
        0x6580: _u32(1) + _SLC_TAIL,  # SLC percentage
        0x8163: _u32(1) + _SLC_TAIL,
        0x8127: _u32(0) + _u32(1) + _SLC_TAIL,
        0x6583: _u32(0),  # force DRAM
        0x6589: _u32(1),
        0x6582: _u32(1),  # "new combo"
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
        return (b"" if hw_code == 0x8127 else _u32(len(blob))) + blob
    if len(blob) < length:
        raise UsageError(
            f"ENABLE_DRAM: the DA wants {length} bytes of EMI settings (v{version}), the "
            f"preloader has {len(blob)}: they are not this phone's; {_FIX_EMI} (replug first)"
        )
    if version in EMI_HEADER_VERSIONS:
        return _u32(0x100) + blob[4:length]
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
    count = _bounded((yield from recv_int(2)), _MAX_IDS, "DRAM setup, NAND id count")
    yield from recv_exact(2 * count)
    log.info("the DA needs DRAM settings (DRAM ids %s)", dram_ids.hex())
    blob = emi.legacy_blob
    if emi.version not in EMI_VERSIONS:
        raise UsageError(
            f"the preloader's EMI settings are version v{emi.version}, for which the legacy "
            "DA's ENABLE_DRAM exchange is not known (known: v10–13, v15–17, v20, v21): they "
            f"belong to a newer phone; {_FIX_EMI}"
        )
    yield Send(bytes([Cmd.ENABLE_DRAM]) + _u32(emi.version))
    reply = yield from recv_exact(1)
    if reply == NACK:
        raise TransportError(f"ENABLE_DRAM: the DA refused EMI version v{emi.version}; {_FIX_EMI}")
    if reply != ACK:
        raise RemoteProtocolError(f"ENABLE_DRAM: expected ACK, got 0x{reply.hex()}")
    if emi.version in EMI_INFO_VERSIONS:
        yield from recv_exact(16)
    length = _bounded((yield from recv_int(4)), _MAX_EMI_BYTES, "ENABLE_DRAM, EMI length")
    yield Send(ACK)
    wire = _emi_wire(emi.version, blob, length, hw_code)
    yield Send(wire)
    checksum = yield from recv_int(2)
    log.debug("EMI checksum from the DA 0x%04X (byte sum 0x%04X)", checksum, byte_sum16(wire))
    yield Send(ACK + _u32(DRAM_APPLY))
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
    if 0 < count <= _MAX_IDS:
        raw = yield from recv_exact(2 * count)
        return size, struct.unpack(f">{count}H", raw)
    if 2 <= count32 <= _MAX_IDS:
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
    if page & (page - 1) or not 512 <= page <= _MAX_PAGE_BYTES:
        raise RemoteProtocolError(f"DA2 flash report: NAND pages of {page} bytes")
    ids = b"".join(_u16(i) for i in flash.nand_ids)
    region = StorageRegion("flash", PART_WHOLE, flash.nand_size)
    return StorageInfo("nand", HW_STORAGE["nand"], page, (region,), ids)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def switch_partition(part: int) -> Op[None]:
    """SDMMC_SWITCH_PART: D: ACK; H: partition byte; D: ACK (NACK: no such area)."""
    yield Send(bytes([Cmd.SDMMC_SWITCH_PART]))
    yield from expect_ack("SDMMC_SWITCH_PART")
    yield Send(bytes([part]))
    reply = yield from recv_exact(1)
    if reply != ACK:
        raise TransportError(
            f"SDMMC_SWITCH_PART: the DA refused eMMC partition {part} (answer 0x{reply.hex()})"
        )


def _recv_packets(total: int, packet: int, what: str) -> Op[tuple[bytes, int | None]]:
    """Every packet of a read: D: data, D: u16 byte sum; H: ACK — even after a bad checksum, so
    the DA ends the command in step. Returns the bytes and the offset of the first bad packet."""
    data = bytearray()
    bad: int | None = None
    while len(data) < total:
        chunk = yield from recv_exact(min(packet, total - len(data)))
        checksum = yield from recv_int(2)
        if bad is None and byte_sum16(chunk) != checksum:
            bad = len(data)
            log.debug(
                "%s: packet at +0x%X failed its checksum (0x%04X from the DA, 0x%04X computed)",
                what,
                bad,
                checksum,
                byte_sum16(chunk),
            )
        data += chunk
        yield Send(ACK)
    return bytes(data), bad


def _widen(offset: int, length: int, unit: int) -> tuple[int, int]:
    if offset < 0 or length < 0 or unit < 1:
        raise LocalProtocolError(f"read of {length} bytes at {offset} (unit {unit})")
    start = offset - offset % unit
    return start, -(-(offset + length) // unit) * unit


def _read_flash_once(
    kind: str, part: int, start: int, length: int, packet: int
) -> Op[tuple[bytes, int | None]]:
    what = f"READ of {length} bytes at 0x{start:X}"
    if kind == "emmc":
        yield from switch_partition(part)
    header = bytes([Cmd.READ, HOST_OS_LINUX, HW_STORAGE[kind]])
    yield Send(header + struct.pack(">QQI", start, length, packet))
    yield from command_ack(what)
    return (yield from _recv_packets(length, packet, what))


def _read_nand_once(start: int, length: int, page: int) -> Op[tuple[bytes, int | None]]:
    """NAND_READPAGE: H: 0xDF, host OS, page+spare, logical, u32 address, u32 length, u32 0;
    D: ACK; D: u32 page, spare, packet size; H: u32 pages per packet; D: u32; then packets of
    page+spare each. The spare bytes are dropped (inference from mtkclient's read size)."""
    what = f"NAND_READPAGE of {length} bytes at 0x{start:X}"
    if start + length > 0xFFFFFFFF:
        raise OutOfRangeError(f"{what}: beyond the 4 GiB the command can address")
    head = bytes([Cmd.NAND_READPAGE, HOST_OS_LINUX, NAND_READ_PAGE_SPARE, NAND_ADDR_LOGICAL])
    yield Send(head + struct.pack(">III", start, length, 0))
    yield from command_ack(what)
    got_page, spare, _ = struct.unpack(">III", (yield from recv_exact(12)))
    if got_page != page or spare > _MAX_PAGE_BYTES // 8:
        raise RemoteProtocolError(
            f"{what}: the DA reports {got_page}-byte pages with {spare}-byte spares; its flash "
            f"report said {page}-byte pages"
        )
    yield Send(_u32(NAND_PAGES_PER_PACKET))
    yield from recv_exact(4)
    stride = page + spare
    raw, bad = yield from _recv_packets(
        length // page * stride, NAND_PAGES_PER_PACKET * stride, what
    )
    data = b"".join(raw[pos : pos + page] for pos in range(0, len(raw), stride))
    return data, None if bad is None else bad // stride * page


def _read_once(
    kind: str, part: int, start: int, length: int, packet: int, unit: int
) -> Op[tuple[bytes, int | None]]:
    if kind == "nand":
        return (yield from _read_nand_once(start, length, unit))
    return (yield from _read_flash_once(kind, part, start, length, packet))


def read_flash(
    kind: str,
    part: int,
    offset_bytes: int,
    length_bytes: int,
    *,
    packet_bytes: int,
    sector_bytes: int = 512,
    attempts: int = READ_ATTEMPTS,
) -> Op[bytes]:
    """Exactly ``length_bytes`` at ``offset_bytes`` of a region, checksums verified.

    The request is widened to whole sectors (NAND: pages) and trimmed. A packet that fails its
    checksum is ACKed like the others, then the whole command is issued again, ``attempts``
    times in all; then RemoteProtocolError — corrupted bytes are never returned.
    """
    if packet_bytes < 1 or attempts < 1:
        raise LocalProtocolError(f"READ with {packet_bytes}-byte packets, {attempts} attempts")
    start, end = _widen(offset_bytes, length_bytes, sector_bytes)
    if length_bytes == 0:
        return b""
    bad_at = start
    for attempt in range(1, attempts + 1):
        data, bad = yield from _read_once(
            kind, part, start, end - start, packet_bytes, sector_bytes
        )
        if bad is None:
            head = offset_bytes - start
            return data[head : head + length_bytes]
        bad_at = start + bad
        log.warning("reading 0x%X: checksum failure at 0x%X (attempt %d)", start, bad_at, attempt)
    raise RemoteProtocolError(
        f"reading {length_bytes} bytes at 0x{offset_bytes:X}: the packet at 0x{bad_at:X} "
        f"failed its checksum in all {attempts} attempts — the USB link corrupts data (try "
        "another cable or port, no hub)"
    )


def write_flash(
    kind: str, part: int, offset_bytes: int, data: bytes, *, packet_bytes: int
) -> Op[None]:
    """SDMMC_WRITE_DATA: ``data`` at ``offset_bytes``, zero-padded to whole 512-byte sectors.

    (eMMC: SDMMC_SWITCH_PART first, although the command names the partition too.) H: 0x62,
    storage, partition, u64 address, u64 length, u32 packet size; D: ACK; per packet H: ACK,
    data, u16 byte sum; D: CONT (NACK: the packet failed its checksum). The DA's CONT is not
    proof the bytes stuck: the transport reads back.
    """
    if kind == "nand":
        raise ReadOnlyError(
            "writing NAND through the legacy DA is not supported (bad blocks and spare areas "
            "need the DA's image download path): mount read-only"
        )
    if offset_bytes < 0 or offset_bytes % 512 or packet_bytes < 1:
        raise LocalProtocolError(f"SDMMC_WRITE_DATA at {offset_bytes}: not 512-aligned")
    if not data:
        return
    payload = data + bytes(-len(data) % 512)
    what = f"SDMMC_WRITE_DATA of {len(payload)} bytes at 0x{offset_bytes:X}"
    if kind == "emmc":
        yield from switch_partition(part)
    head = bytes([Cmd.SDMMC_WRITE_DATA, WRITE_STORAGE[kind], part])
    yield Send(head + struct.pack(">QQI", offset_bytes, len(payload), packet_bytes))
    reply = yield from recv_exact(1)
    if reply != ACK:
        raise TransportError(f"{what}: the DA refused the write (answer 0x{reply.hex()})")
    for pos in range(0, len(payload), packet_bytes):
        chunk = payload[pos : pos + packet_bytes]
        yield Send(ACK)
        yield Send(chunk)
        yield Send(_u16(byte_sum16(chunk)))
        reply = yield from recv_exact(1)
        last = pos + len(chunk) == len(payload)
        if reply == CONT or (last and reply == ACK):
            continue
        if reply == NACK:
            exc = TransportError(f"{what}: the packet at +0x{pos:X} failed the DA's checksum")
            exc.temporary = True
            raise exc
        raise RemoteProtocolError(f"{what}: expected CONT 0x69 at +0x{pos:X}, got 0x{reply.hex()}")


def read_pmt() -> Op[bytes]:
    """SDMMC_READ_PMT: D: ACK, u32 length; H: ACK; D: the table; H: ACK. NACK: no PMT (b"")."""
    yield Send(bytes([Cmd.SDMMC_READ_PMT]))
    reply = yield from recv_exact(1)
    if reply == NACK:
        return b""
    if reply != ACK:
        raise RemoteProtocolError(f"SDMMC_READ_PMT: expected ACK or NACK, got 0x{reply.hex()}")
    length = _bounded((yield from recv_int(4)), _MAX_PMT_BYTES, "SDMMC_READ_PMT length")
    yield Send(ACK)
    table = (yield from recv_exact(length)) if length else b""
    yield Send(ACK)
    return table


def get_usb_speed() -> Op[str]:
    """USB_CHECK_STATUS: D: ACK, speed byte (0 full speed, 1 high speed)."""
    yield Send(bytes([Cmd.USB_CHECK_STATUS]))
    yield from expect_ack("USB_CHECK_STATUS")
    (code,) = yield from recv_exact(1)
    return USB_SPEEDS.get(code, f"code {code}")


def switch_usb_speed() -> Op[None]:
    """USB_SETUP_PORT 0x01 (high speed): D: ACK; the phone then re-enumerates."""
    yield Send(bytes([Cmd.USB_SETUP_PORT, 0x01]))
    yield from expect_ack("USB_SETUP_PORT")


def finish(mode: int = 0) -> Op[None]:
    """FINISH: D: ACK; H: u32 mode (0 normal boot); D: ACK — the DA lets the phone go."""
    yield Send(bytes([Cmd.FINISH]))
    yield from expect_ack("FINISH")
    yield Send(_u32(mode))
    yield from expect_ack("FINISH (mode)")


# ---------------------------------------------------------------------------------------------
# Session
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegacySession(DaSession):
    """A legacy DA2 session (see :class:`~mtkfs.protocols.da_session.DaSession`).

    Attributes:
        packet_bytes: the READ packet size the host asks for (1 MiB eMMC, 4 KiB NOR).
        write_packet_bytes: SDMMC_WRITE_DATA's packet size.
        ram_size_bytes: DRAM size (from ENABLE_DRAM in BROM mode, else DA2's report), for logs.
    """

    packet_bytes: int = 1 << 20
    write_packet_bytes: int = 1 << 20
    ram_size_bytes: int = 0
    protocol: ClassVar[str] = "legacy"

    @property
    def read_packet_bytes(self) -> int:
        return self.packet_bytes

    @property
    def can_write(self) -> bool:
        return self.storage.kind != "nand"  # see write_flash

    def _part(self, region: str) -> int:
        return self.storage.region(region).part_id

    def read(self, region: str, offset_bytes: int, size_bytes: int) -> Op[bytes]:
        return read_flash(
            self.storage.kind,
            self._part(region),
            offset_bytes,
            size_bytes,
            packet_bytes=self.packet_bytes,
            sector_bytes=self.storage.block_size_bytes,
        )

    def write(self, region: str, offset_bytes: int, data: bytes) -> Op[None]:
        return write_flash(
            self.storage.kind,
            self._part(region),
            offset_bytes,
            data,
            packet_bytes=self.write_packet_bytes,
        )

    def read_pmt(self) -> Op[bytes]:
        """The raw MTK partition table the DA keeps (b"" when it has none)."""
        return read_pmt()

    def shutdown(self) -> Op[None]:
        return finish(0)

    @property
    def can_switch_usb_speed(self) -> bool:
        return True

    def switch_usb_speed(self) -> Op[None]:
        return switch_usb_speed()

    def get_usb_speed(self) -> Op[str]:
        return get_usb_speed()


def connect(
    info: DeviceInfo,
    da2_addr: int,
    da2: bytes,
    *,
    emi: EmiSettings | None = None,
    read_sync_byte: bool = True,
    packet_bytes: int | None = None,
    write_packet_bytes: int = 1 << 20,
) -> Op[LegacySession]:
    """From DA1's sync byte to a DA2 session: report → stage-2 config → (BROM: ENABLE_DRAM) →
    DA2 → flash report → USB speed. ``packet_bytes`` overrides the READ packet size.

    In BROM mode without ``emi`` it stops before DA2 with a UsageError naming ``--preloader``.
    """
    sync = yield from recv_sync(read_sync_byte=read_sync_byte)
    config = stage2_config(info, sync.storage_hint)
    result = yield from send_stage2_config(config, info.hw_code)
    agent, ram_bytes = "preloader", 0
    if result == STATUS_DRAM_NEEDED:
        if emi is None:
            raise UsageError(
                "the phone is in BROM mode, where the Download Agent must first set up DRAM "
                f"with the EMI settings of this phone's own preloader: {_FIX_EMI}"
            )
        agent, ram_bytes = "brom", (yield from enable_dram(emi, info.hw_code))
    elif result:
        raise status_error(result, "stage-2 configuration")
    yield from upload_da2(da2_addr, da2)
    flash = yield from recv_flash_report(info.hw_code)
    storage = storage_info(sync, flash)
    speed = yield from get_usb_speed()
    return LegacySession(
        agent,
        storage,
        speed,
        packet_bytes=packet_bytes or DEFAULT_PACKET_BYTES[storage.kind],
        write_packet_bytes=write_packet_bytes,
        ram_size_bytes=ram_bytes or flash.ram_size,
    )


def connect_entry(entry: DaEntry, info: DeviceInfo, emi: EmiSettings | None) -> Op[LegacySession]:
    """:func:`connect` for the agent ``entry`` of a DA file (the transport's entry point): the
    legacy DA2 goes *with* its signature, as the region stores it (mtkclient sends the whole
    region; DA1 checks it)."""
    return connect(info, entry.da2.load_addr, entry.da2.payload, emi=emi)
