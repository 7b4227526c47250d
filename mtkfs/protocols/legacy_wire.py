"""The legacy Download Agent's wire vocabulary: answer bytes, command ids, status codes and the
few byte-level helpers every exchange uses (big-endian throughout).

Split from :mod:`mtkfs.protocols.da_legacy` (which re-exports what its callers use), as
``xflash_status`` is from ``da_xflash``: pure tables and codecs, no exchange logic.
"""

from __future__ import annotations

import enum
import struct

from mtkfs.errors import (
    AuthRequiredError,
    MtkfsError,
    OutOfRangeError,
    RemoteProtocolError,
    TransportError,
)
from mtkfs.protocols.base import Op, Send, recv_exact

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

MAX_IDS = 64
MAX_EMI_BYTES = 64 * 1024
MAX_PMT_BYTES = 1 << 20
MAX_PAGE_BYTES = 16 * 1024

FIX_EMI = (
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
DRAM_STATUSES = frozenset({0xBB9, 0xBBA, 0xBBE, 0xBBF, 0xBC0, 0xBC3})
CHECKSUM_STATUSES = frozenset({0x411, 0xBF9, 0xC53})
#: mtkclient's "SECURITY" group: SLA/DAA/SBC failures and forbidden read-back/download.
SECURITY_STATUSES = range(0x1770, 0x1900)


def status_name(status: int) -> str:
    """``"INVALID_RANGE (0x0BE0)"``."""
    return f"{STATUS_NAMES.get(status, 'unknown status')} (0x{status:04X})"


def status_error(status: int, what: str) -> MtkfsError:
    """The exception for DA error ``status`` answering ``what``, saying what to do."""
    text = f"{what}: the Download Agent answered {status_name(status)}"
    exc: MtkfsError
    if status == 0xBE0:
        exc = OutOfRangeError(f"{text}: the request lies beyond the end of that flash area")
    elif status in CHECKSUM_STATUSES:
        exc = TransportError(f"{text}: a packet was corrupted on the way; retrying may help")
        exc.temporary = True
    elif status in DRAM_STATUSES:
        exc = TransportError(f"{text}: DRAM could not be set up with these EMI settings; {FIX_EMI}")
    elif status in SECURITY_STATUSES:
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


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def u32(value: int) -> bytes:
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


def bounded(value: int, limit: int, what: str) -> int:
    if value > limit:
        raise RemoteProtocolError(
            f"{what}: the DA announces {value}, at most {limit} is plausible (corrupted bytes, "
            "or a DA that does not speak this protocol)"
        )
    return value
