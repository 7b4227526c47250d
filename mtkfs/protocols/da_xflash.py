"""The XFlash ("V5") Download Agent protocol, host side, sans-I/O.

Once BROM has jumped to DA1, the DA speaks in *frames* (both directions, little-endian)::

    u32 magic 0xFEEEEEEF | u32 data_type (1 protocol flow, 2 DA log message) | u32 length | payload

Every command is a small, fixed dance of frames and *statuses* (a frame whose payload is a u16 or
u32; 0 — or a u32 equal to the magic — means OK, errors are 0xC00x_xxxx). Each operation below is
a generator in the :mod:`mtkfs.protocols.base` convention, so it runs against the simulator in
memory (:mod:`mtkfs.testing.sim_xflash`) and over any link unchanged.

Facts come from ``../shared/reference/mtkclient.md`` §4.2, mtkclient's ``xflash_lib.py`` and the
independent penumbra client; where they are inferences, the docstring says so. Design choices that
answer the complaints about mtkclient (§7, §8):

* a frame's header and payload are two Sends, and a payload is always *one* Send however large
  (mtkclient's 512-byte writes are its 3 MB/s write bottleneck; the link layer chunks if it must);
* every length the device announces is checked against what can legitimately come *before*
  anything is allocated, so a corrupted header is a RemoteProtocolError, not a 4 GiB buffer;
* READ_DATA reads each chunk exactly and checks every per-chunk status, so a short or failed read
  is an error, never silently short data; reads are widened to whole sectors, so any byte range
  works across packet boundaries;
* statuses become exceptions of :mod:`mtkfs.errors` whose messages say what to do.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
    UsageError,
)
from mtkfs.protocols.base import Op, Send, byte_sum16, recv_exact
from mtkfs.protocols.brom import DeviceInfo
from mtkfs.protocols.da_session import DaSession
from mtkfs.protocols.dafile import DaEntry
from mtkfs.protocols.preloader_emi import EmiSettings

# Statuses and storage records live in their own modules; `X as X` re-exports the names that
# callers (the simulator, the tests) import from here.
from mtkfs.protocols.xflash_status import STATUS_UNSUPPORTED_CTRL as STATUS_UNSUPPORTED_CTRL
from mtkfs.protocols.xflash_status import status_error as status_error
from mtkfs.protocols.xflash_storage import StorageInfo as StorageInfo
from mtkfs.protocols.xflash_storage import StorageRegion as StorageRegion
from mtkfs.protocols.xflash_storage import address_param as address_param
from mtkfs.protocols.xflash_storage import need_bytes
from mtkfs.protocols.xflash_storage import parse_emmc_info as parse_emmc_info
from mtkfs.protocols.xflash_storage import parse_nand_info as parse_nand_info
from mtkfs.protocols.xflash_storage import parse_nor_info as parse_nor_info
from mtkfs.protocols.xflash_storage import parse_ufs_info as parse_ufs_info
from mtkfs.protocols.xflash_storage import region_address as region_address

log = logging.getLogger(__name__)

MAGIC = 0xFEEEEEEF
DT_PROTOCOL_FLOW = 1
DT_MESSAGE = 2
HEADER_BYTES = 12
#: DA1's first word after JUMP_DA: one raw byte, before any frame.
SYNC_BYTE = b"\xc0"
#: ``b"SYNC"`` as a little-endian u32: the bring-up's first frame and DA1's answer to it.
SYNC_SIGNAL = 0x434E5953
#: What SWITCH_USB_SPEED is told (mtkclient: "0E8D2001", the high-speed DA's USB id).
USB_HIGH_SPEED_MAGIC = 0x0E8D2001

_HEADER = struct.Struct("<III")
#: Status frames carry 2 or 4 bytes; a few words at most is tolerated (mtkclient reads the first).
_MAX_STATUS_BYTES = 64
#: Device-control answers are small records (storage info ≈ 200 bytes, version strings).
_MAX_CONTROL_BYTES = 64 * 1024
#: DA log lines (type 2 frames) are skipped; a longer one is a corrupted header.
_MAX_MESSAGE_BYTES = 64 * 1024
#: Packet lengths beyond this are not plausible for a DA buffer in SRAM/DRAM.
_MAX_PACKET_BYTES = 64 * 1024 * 1024


class Cmd(enum.IntEnum):
    """Command ids (the u32 of a command frame)."""

    FORMAT = 0x010003
    WRITE_DATA = 0x010004
    READ_DATA = 0x010005
    SHUTDOWN = 0x010007
    BOOT_TO = 0x010008
    DEVICE_CTRL = 0x010009
    INIT_EXT_RAM = 0x01000A
    SWITCH_USB_SPEED = 0x01000B
    SETUP_ENVIRONMENT = 0x010100
    SETUP_HW_INIT_PARAMS = 0x010101
    SYNC_SIGNAL = SYNC_SIGNAL


class Ctrl(enum.IntEnum):
    """Device-control codes (the u32 after DEVICE_CTRL): set-ctrls 0x02xxxx, get-ctrls 0x04xxxx."""

    SET_BATTERY_OPT = 0x020002
    SET_CHECKSUM_LEVEL = 0x020003
    SET_RESET_KEY = 0x020004
    SET_META_BOOT_MODE = 0x020006
    GET_EMMC_INFO = 0x040001
    GET_NAND_INFO = 0x040002
    GET_NOR_INFO = 0x040003
    GET_UFS_INFO = 0x040004
    GET_DA_VERSION = 0x040005
    GET_PACKET_LENGTH = 0x040007
    GET_RANDOM_ID = 0x040008
    GET_CONNECTION_AGENT = 0x04000A
    GET_USB_SPEED = 0x04000B
    GET_RAM_INFO = 0x04000C
    GET_CHIP_ID = 0x04000D
    SLA_ENABLED_STATUS = 0x040016


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """SETUP_ENVIRONMENT's five u32s (values as mtkclient sends them).

    ``system_os`` 1 = Linux, 0 = Windows. (One MediaTek DA source sets a 64 KiB read packet for
    Linux hosts and 2 MiB for Windows; mtkfs says what it is and reads GET_PACKET_LENGTH.)
    """

    da_log_level: int = 2
    log_channel: int = 1  # 1 UART, 2 USB (log frames interleave), 3 both
    system_os: int = 1
    ufs_provision: int = 0

    def encode(self) -> bytes:
        return struct.pack(
            "<5I", self.da_log_level, self.log_channel, self.system_os, self.ufs_provision, 0
        )


@dataclass(frozen=True)
class PacketLengths:
    """GET_PACKET_LENGTH: the DA's buffer sizes. Writes go in ``write_bytes`` chunks; reads
    arrive in ``read_bytes`` chunks (one ack round trip each)."""

    write_bytes: int
    read_bytes: int


@dataclass(frozen=True)
class ChipId:
    """GET_CHIP_ID (the DA's view of the chip, e.g. hw_code 0x6765)."""

    hw_code: int
    hw_sub_code: int
    hw_version: int
    sw_version: int
    chip_evolution: int


# ---------------------------------------------------------------------------------------------
# Frames and statuses
# ---------------------------------------------------------------------------------------------


def encode_frame_header(length: int, data_type: int = DT_PROTOCOL_FLOW) -> bytes:
    """The 12-byte header announcing a ``length``-byte payload."""
    return _HEADER.pack(MAGIC, data_type, length)


def send_frame(payload: bytes) -> Op[None]:
    """One frame: the header, then the whole payload as a single Send (never sliced here)."""
    yield Send(encode_frame_header(len(payload)))
    yield Send(payload)


def recv_frame(max_bytes: int, what: str) -> Op[bytes]:
    """The next protocol-flow frame's payload (DA log frames are logged and skipped).

    A header announcing more than ``max_bytes`` is refused before anything is read or allocated.
    """
    while True:
        magic, data_type, length = _HEADER.unpack((yield from recv_exact(HEADER_BYTES)))
        if magic != MAGIC:
            raise RemoteProtocolError(
                f"{what}: frame magic is 0x{magic:08X}, not 0x{MAGIC:08X} — the link lost sync "
                "or the device is not running an XFlash DA; replug the phone"
            )
        if data_type == DT_MESSAGE:
            if length > _MAX_MESSAGE_BYTES:
                raise RemoteProtocolError(f"{what}: DA log frame of {length} bytes")
            text = (yield from recv_exact(length))[4:] if length else b""
            log.debug("DA log: %s", text.decode("utf-8", "replace").rstrip("\0\r\n"))
            continue
        if data_type != DT_PROTOCOL_FLOW:
            raise RemoteProtocolError(f"{what}: unknown frame type {data_type}")
        if length > max_bytes:
            raise RemoteProtocolError(
                f"{what}: frame announces {length} bytes where at most {max_bytes} can come; "
                "refusing it (corrupted header or a DA that does not match this client)"
            )
        return (yield from recv_exact(length)) if length else b""


def parse_status(payload: bytes, what: str) -> int:
    """A status frame's value: 0 for OK (a u32 equal to the magic also means OK)."""
    if len(payload) == 2:
        value = int.from_bytes(payload, "little")
    elif len(payload) >= 4 and len(payload) % 4 == 0:
        value = int.from_bytes(payload[:4], "little")
    else:
        raise RemoteProtocolError(f"{what}: a status of {len(payload)} bytes ({payload.hex()})")
    return 0 if value == MAGIC else value


def recv_status(what: str) -> Op[int]:
    """The next status frame's value (0 = OK); raises nothing for error values."""
    return parse_status((yield from recv_frame(_MAX_STATUS_BYTES, what)), what)


def expect_ok(what: str) -> Op[None]:
    """The next status frame, which must be OK; otherwise the mapped exception."""
    status = yield from recv_status(what)
    if status != 0:
        raise status_error(status, what)


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def _name(code: int) -> str:
    for enum_type in (Cmd, Ctrl):
        try:
            return enum_type(code).name
        except ValueError:
            pass
    return f"0x{code:06X}"


def send_cmd(cmd: int) -> Op[None]:
    """A command frame, then its status (OK, or the mapped exception)."""
    yield from send_frame(_u32(cmd))
    yield from expect_ok(_name(cmd))


def send_param(what: str, *payloads: bytes) -> Op[None]:
    """One frame per payload, then a single status (mtkclient's ``send_param``): the shape of
    every parameter exchange — setups, EMI, DA2, set-ctrls, each WRITE_DATA chunk."""
    for payload in payloads:
        yield from send_frame(payload)
    yield from expect_ok(what)


def _devctrl_start(ctrl: int) -> Op[int]:
    yield from send_cmd(Cmd.DEVICE_CTRL)
    yield from send_frame(_u32(ctrl))
    return (yield from recv_status(_name(ctrl)))


def devctrl_get_optional(ctrl: int) -> Op[bytes | None]:
    """A get-ctrl's data, or None when the DA answers "unsupported ctrl code" (older DAs lack
    some queries; callers fall back)."""
    status = yield from _devctrl_start(ctrl)
    if status == STATUS_UNSUPPORTED_CTRL:
        return None
    if status != 0:
        raise status_error(status, _name(ctrl))
    data = yield from recv_frame(_MAX_CONTROL_BYTES, _name(ctrl))
    yield from expect_ok(_name(ctrl))
    return data


def devctrl_get(ctrl: int) -> Op[bytes]:
    """DEVICE_CTRL → status → ctrl code → status → data frame → status; returns the data."""
    data = yield from devctrl_get_optional(ctrl)
    if data is None:
        raise status_error(STATUS_UNSUPPORTED_CTRL, _name(ctrl))
    return data


def devctrl_set(ctrl: int, param: bytes) -> Op[None]:
    """DEVICE_CTRL → status → ctrl code → status → parameter frame → status."""
    status = yield from _devctrl_start(ctrl)
    if status != 0:
        raise status_error(status, _name(ctrl))
    yield from send_param(_name(ctrl), param)


# ---------------------------------------------------------------------------------------------
# Bring-up and stage 2
# ---------------------------------------------------------------------------------------------


def bring_up(env: Environment = Environment(), *, read_sync_byte: bool = True) -> Op[None]:
    """DA1's bring-up: [0xC0] → SYNC_SIGNAL → SETUP_ENVIRONMENT → SETUP_HW_INIT_PARAMS → SYNC.

    The command frames of the two setups get no status of their own; each parameter frame does
    (mtkclient, penumbra and an MT6765 script agree). ``read_sync_byte=False`` when the BROM
    layer has already consumed DA1's 0xC0.
    """
    if read_sync_byte:
        byte = yield from recv_exact(1)
        if byte != SYNC_BYTE:
            raise RemoteProtocolError(
                f"DA1 did not start: expected its sync byte 0xC0, got 0x{byte.hex()} — the DA "
                "file may not fit this chip, or the device rebooted; replug and retry"
            )
    yield from send_frame(_u32(SYNC_SIGNAL))
    yield from send_param("SETUP_ENVIRONMENT", _u32(Cmd.SETUP_ENVIRONMENT), env.encode())
    yield from send_param("SETUP_HW_INIT_PARAMS", _u32(Cmd.SETUP_HW_INIT_PARAMS), _u32(0))
    status = yield from recv_status("DA1 sync")
    if status != SYNC_SIGNAL:
        raise (
            status_error(status, "DA1 hardware init")
            if status
            else RemoteProtocolError("DA1 answered its bring-up with OK instead of SYNC")
        )


def set_checksum_level(level: int = 0) -> Op[None]:
    """SET_CHECKSUM_LEVEL (0 none, 1 USB, 2 storage, 3 both). mtkfs uses 0, as mtkclient does:
    what the other levels add to the read/write exchanges is not documented."""
    yield from devctrl_set(Ctrl.SET_CHECKSUM_LEVEL, _u32(level))


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def get_connection_agent() -> Op[str]:
    """``"brom"`` (DRAM is off: INIT_EXT_RAM before BOOT_TO) or ``"preloader"`` (DRAM is up)."""
    agent = _text((yield from devctrl_get(Ctrl.GET_CONNECTION_AGENT)))
    if agent not in ("brom", "preloader"):
        raise RemoteProtocolError(f"GET_CONNECTION_AGENT: unknown agent {agent!r}")
    return agent


def init_ext_ram(emi: bytes) -> Op[None]:
    """INIT_EXT_RAM → status → frame(u32 length) → frame(EMI settings) → status."""
    if not emi:
        raise LocalProtocolError("INIT_EXT_RAM needs the EMI settings (empty given)")
    yield from send_cmd(Cmd.INIT_EXT_RAM)
    what = "INIT_EXT_RAM (DRAM setup from the preloader's EMI settings)"
    yield from send_param(what, _u32(len(emi)), emi)


def boot_to(addr: int, da2: bytes) -> Op[None]:
    """BOOT_TO → status → frame(u64 addr, u64 length) → frame(DA2) → status → status.

    The last status (0 or SYNC) comes once DA2 runs. If it never comes the driver's timeout
    fires: DA2 did not start, usually because DRAM was not set up (BROM mode without EMI).
    """
    yield from send_cmd(Cmd.BOOT_TO)
    yield from send_param("BOOT_TO (DA1 checking stage 2)", struct.pack("<QQ", addr, len(da2)), da2)
    status = yield from recv_status("BOOT_TO (stage 2 starting)")
    if status not in (0, SYNC_SIGNAL):
        raise status_error(status, "BOOT_TO (stage 2 starting)")


def sla_enabled() -> Op[bool]:
    """SLA_ENABLED_STATUS ≠ 0; a DA without the query has no DA-level SLA."""
    data = yield from devctrl_get_optional(Ctrl.SLA_ENABLED_STATUS)
    return data is not None and int.from_bytes(data[:4], "little") != 0


def check_sla() -> Op[None]:
    """AuthRequiredError when the DA demands SLA (mtkfs never forges the signature)."""
    if (yield from sla_enabled()):
        raise AuthRequiredError(
            "the Download Agent requires SLA authentication (SLA_ENABLED_STATUS is set): it "
            "wants a vendor-signed challenge mtkfs does not forge. Use the phone maker's own "
            "DA/flash tool with its authorisation, or a DA without SLA for this phone"
        )


def get_packet_length() -> Op[PacketLengths]:
    """GET_PACKET_LENGTH; 1 MiB each when the DA lacks it (mtkclient's read fallback)."""
    data = yield from devctrl_get_optional(Ctrl.GET_PACKET_LENGTH)
    if data is None:
        return PacketLengths(1 << 20, 1 << 20)
    need_bytes(data, 8, "GET_PACKET_LENGTH")
    write_bytes, read_bytes = struct.unpack_from("<II", data)
    for value in (write_bytes, read_bytes):
        if not 512 <= value <= _MAX_PACKET_BYTES:
            raise RemoteProtocolError(f"GET_PACKET_LENGTH: implausible packet length {value}")
    return PacketLengths(write_bytes, read_bytes)


def _storage_query(
    ctrl: Ctrl, parse: Callable[[bytes], StorageInfo | None]
) -> Op[StorageInfo | None]:
    """One GET_*_INFO; None when the DA lacks the query or reports the storage absent."""
    data = yield from devctrl_get_optional(ctrl)
    if data is None or not any(data):
        return None
    return parse(data)


def get_emmc_info() -> Op[StorageInfo | None]:
    return (yield from _storage_query(Ctrl.GET_EMMC_INFO, parse_emmc_info))


def get_ufs_info() -> Op[StorageInfo | None]:
    return (yield from _storage_query(Ctrl.GET_UFS_INFO, parse_ufs_info))


def get_nand_info() -> Op[StorageInfo | None]:
    return (yield from _storage_query(Ctrl.GET_NAND_INFO, parse_nand_info))


def get_nor_info() -> Op[StorageInfo | None]:
    return (yield from _storage_query(Ctrl.GET_NOR_INFO, parse_nor_info))


def get_storage_info() -> Op[StorageInfo]:
    """The phone's storage: eMMC, then UFS, NAND, NOR — the first the DA reports present."""
    for query in (get_emmc_info, get_ufs_info, get_nand_info, get_nor_info):
        info = yield from query()
        if info is not None and info.regions:
            return info
    raise TransportError(
        "the Download Agent reports no eMMC, UFS, NAND or NOR storage: it could not initialise "
        "the flash (a DA for another chip, or DRAM/EMI settings from another phone?)"
    )


def get_chip_id() -> Op[ChipId]:
    data = yield from devctrl_get(Ctrl.GET_CHIP_ID)
    need_bytes(data, 10, "GET_CHIP_ID")
    return ChipId(*struct.unpack_from("<5H", data))


def get_da_version() -> Op[str]:
    return _text((yield from devctrl_get(Ctrl.GET_DA_VERSION)))


def get_usb_speed() -> Op[str]:
    """``"full-speed"``, ``"high-speed"``…; DAs that answer a number give ``"code N"``."""
    data = yield from devctrl_get(Ctrl.GET_USB_SPEED)
    text = _text(data)
    if text.replace("-", "").isalpha():
        return text
    return f"code {int.from_bytes(data[:4], 'little')}"


def switch_usb_speed() -> Op[None]:
    """SWITCH_USB_SPEED → status → frame(u32 0x0E8D2001) → status; the phone then re-enumerates
    at high speed and the link must be reopened (the DA session survives)."""
    yield from send_cmd(Cmd.SWITCH_USB_SPEED)
    yield from send_param("SWITCH_USB_SPEED", _u32(USB_HIGH_SPEED_MAGIC))


def shutdown(*, reboot: bool = False) -> Op[None]:
    """SHUTDOWN → status → frame(8×u32) → status: power off (or reboot), USB released.

    The first word is mtkclient's ``has_flags`` / penumbra's ``is_dev_reboot``; all others zero
    (watchdog off, synchronous, normal boot mode, RTC kept running, USB disconnected).
    """
    yield from send_cmd(Cmd.SHUTDOWN)
    yield from send_param("SHUTDOWN", struct.pack("<8I", int(reboot), 0, 0, 0, 0, 0, 0, 0))


@dataclass(frozen=True)
class XFlashSession(DaSession):
    """What :func:`connect` learnt, and the XFlash operations on it (see
    :class:`~mtkfs.protocols.da_session.DaSession`)."""

    packet_lengths: PacketLengths
    protocol: ClassVar[str] = "xflash"

    @property
    def read_packet_bytes(self) -> int:
        return self.packet_lengths.read_bytes

    def read(self, region: str, offset_bytes: int, size_bytes: int) -> Op[bytes]:
        storage_id, part_id = self.storage.address(region)
        return read_data(
            storage_id,
            part_id,
            offset_bytes,
            size_bytes,
            sector_bytes=self.storage.block_size_bytes,
        )

    def write(self, region: str, offset_bytes: int, data: bytes) -> Op[None]:
        storage_id, part_id = self.storage.address(region)
        return write_data(
            storage_id,
            part_id,
            offset_bytes,
            data,
            write_packet_bytes=self.packet_lengths.write_bytes,
            sector_bytes=self.storage.block_size_bytes,
        )

    def shutdown(self) -> Op[None]:
        return shutdown()

    @property
    def can_switch_usb_speed(self) -> bool:
        return True

    def switch_usb_speed(self) -> Op[None]:
        return switch_usb_speed()

    def get_usb_speed(self) -> Op[str]:
        return get_usb_speed()


def connect(
    da2_addr: int, da2: bytes, *, emi: bytes | None = None, read_sync_byte: bool = True
) -> Op[XFlashSession]:
    """From DA1's sync byte to a stage-2 session ready for READ_DATA/WRITE_DATA.

    bring-up → SET_CHECKSUM_LEVEL 0 → GET_CONNECTION_AGENT → (BROM: INIT_EXT_RAM) → BOOT_TO →
    SLA check → GET_PACKET_LENGTH (DA2's, which differ from DA1's) → storage info → USB speed.
    In BROM mode without ``emi`` it stops *before* sending DA2, with a message naming
    ``--preloader``.
    """
    yield from bring_up(read_sync_byte=read_sync_byte)
    yield from set_checksum_level(0)
    agent = yield from get_connection_agent()
    if agent == "brom":
        if not emi:
            raise UsageError(
                "the phone is in BROM mode, where the Download Agent must first set up DRAM "
                "with the EMI settings of this phone's own preloader: give --preloader FILE "
                "(preloader_<board>.bin from its firmware package, Boot1 of a readback, or "
                "regions/boot1.img of an earlier mount), or connect in preloader mode instead "
                "(switch the phone off and plug it in without holding any button)"
            )
        yield from init_ext_ram(emi)
    yield from boot_to(da2_addr, da2)
    yield from check_sla()
    packets = yield from get_packet_length()
    storage = yield from get_storage_info()
    speed = yield from get_usb_speed()
    return XFlashSession(agent, storage, speed, packet_lengths=packets)


def connect_entry(entry: DaEntry, info: DeviceInfo, emi: EmiSettings | None) -> Op[XFlashSession]:
    """:func:`connect` for the agent ``entry`` of a DA file (the transport's uniform entry
    point, shared by every protocol module): DA2 goes without its signature, DRAM gets the
    whole EMI section."""
    del info  # XFlash needs nothing of the BROM's answers here
    return connect(entry.da2.load_addr, entry.da2_unsigned, emi=emi.blob if emi else None)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _ack(one_send: bool) -> Op[None]:
    """The host's ack of a read chunk: frame(u32 0), header and payload as two Sends (PR #97:
    MT6771 hangs otherwise); ``one_send`` for MT6781, which wants them in one write."""
    if one_send:
        yield Send(encode_frame_header(4) + _u32(0))
    else:
        yield from send_frame(_u32(0))


def read_data(
    storage_id: int,
    part_id: int,
    offset_bytes: int,
    length_bytes: int,
    *,
    sector_bytes: int = 512,
    ack_one_send: bool = False,
) -> Op[bytes]:
    """READ_DATA: exactly ``length_bytes`` at ``offset_bytes`` of a region.

    The request is widened to whole ``sector_bytes`` (storage block size; 1 = exact bytes) and
    trimmed afterwards. The exchange: READ_DATA → status → frame(56-byte address) → status →
    status, then until everything has come: D: data frame (at most what is left; a 2/4-byte frame
    where more is due is the DA's error flag, followed by one status), H: ack, D: status. The
    per-chunk status is what penumbra reads; mtkclient tolerates it as a zero "flag".
    """
    if offset_bytes < 0 or length_bytes < 0 or sector_bytes < 1:
        raise LocalProtocolError(f"READ_DATA of {length_bytes} bytes at {offset_bytes}")
    if length_bytes == 0:
        return b""
    start = offset_bytes - offset_bytes % sector_bytes
    end = -(-(offset_bytes + length_bytes) // sector_bytes) * sector_bytes
    what = f"READ_DATA of {end - start} bytes at 0x{start:X}"
    yield from send_cmd(Cmd.READ_DATA)
    yield from send_frame(address_param(storage_id, part_id, start, end - start))
    yield from expect_ok(what + " (address)")
    yield from expect_ok(what)
    data = bytearray()
    while len(data) < end - start:
        remaining = end - start - len(data)
        chunk = yield from recv_frame(remaining, f"{what}, chunk at +0x{len(data):X}")
        if not chunk:
            raise RemoteProtocolError(f"{what}: empty data frame at +0x{len(data):X}")
        if len(chunk) <= 4 and len(chunk) < remaining:
            # The DA's error flag in place of a chunk; then the status ending the command, which
            # mtkclient reads too (inferred: no client documents it beyond that).
            flag = parse_status(chunk, what)
            if flag == 0:
                raise RemoteProtocolError(
                    f"{what}: an OK status where data was due at +0x{len(data):X}"
                )
            yield from recv_status(what + " (after its error flag)")
            raise status_error(flag, f"{what}, at +0x{len(data):X}")
        data += chunk
        yield from _ack(ack_one_send)
        yield from expect_ok(f"{what}, chunk at +0x{len(data) - len(chunk):X}")
    head = offset_bytes - start
    if head == 0 and len(data) == length_bytes:
        return bytes(data)
    return bytes(data[head : head + length_bytes])


def write_data(
    storage_id: int,
    part_id: int,
    offset_bytes: int,
    data: bytes,
    *,
    write_packet_bytes: int,
    sector_bytes: int = 512,
) -> Op[None]:
    """WRITE_DATA: ``data`` at ``offset_bytes``, padded with zeros to whole 512-byte sectors.

    WRITE_DATA → status → frame(56-byte address) → status; per chunk of ``write_packet_bytes``:
    frame(u32 0), frame(u32 byte sum & 0xFFFF), frame(chunk) → status; then a final status. A
    chunk's payload is one Send. Padding overwrites the rest of a partial last sector: callers
    that care pass whole sectors (the transport reads-modifies-writes). The DA's OK is not proof
    the bytes stuck (mtkclient #232): verify by reading back.
    """
    if offset_bytes < 0 or offset_bytes % sector_bytes:
        raise LocalProtocolError(f"WRITE_DATA at {offset_bytes}: not {sector_bytes}-aligned")
    if write_packet_bytes < 1:
        raise LocalProtocolError(f"WRITE_DATA with a packet length of {write_packet_bytes}")
    if not data:
        return
    pad = -len(data) % sector_bytes
    payload = data + bytes(pad) if pad else data
    what = f"WRITE_DATA of {len(payload)} bytes at 0x{offset_bytes:X}"
    yield from send_cmd(Cmd.WRITE_DATA)
    yield from send_param(what, address_param(storage_id, part_id, offset_bytes, len(payload)))
    for pos in range(0, len(payload), write_packet_bytes):
        chunk = payload[pos : pos + write_packet_bytes]
        checksum = byte_sum16(chunk)
        yield from send_param(f"{what}, chunk at +0x{pos:X}", _u32(0), _u32(checksum), chunk)
    yield from expect_ok(what + " (final)")
