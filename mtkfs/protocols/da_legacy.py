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

import logging
import struct
from dataclasses import dataclass
from typing import ClassVar

from mtkfs.errors import (
    LocalProtocolError,
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
from mtkfs.protocols.legacy_bringup import (
    enable_dram,
    recv_flash_report,
    recv_sync,
    send_stage2_config,
    stage2_config,
    storage_info,
    upload_da2,
)
from mtkfs.protocols.legacy_wire import (
    ACK,
    CONT,
    DEFAULT_PACKET_BYTES,
    FIX_EMI,
    HOST_OS_LINUX,
    HW_STORAGE,
    MAX_PAGE_BYTES,
    MAX_PMT_BYTES,
    NACK,
    NAND_ADDR_LOGICAL,
    NAND_PAGES_PER_PACKET,
    NAND_READ_PAGE_SPARE,
    READ_ATTEMPTS,
    STATUS_DRAM_NEEDED,
    USB_SPEEDS,
    WRITE_STORAGE,
    Cmd,
    bounded,
    command_ack,
    expect_ack,
    recv_int,
    status_error,
    u16,
    u32,
)
from mtkfs.protocols.preloader_emi import EmiSettings

log = logging.getLogger(__name__)
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
    if got_page != page or spare > MAX_PAGE_BYTES // 8:
        raise RemoteProtocolError(
            f"{what}: the DA reports {got_page}-byte pages with {spare}-byte spares; its flash "
            f"report said {page}-byte pages"
        )
    yield Send(u32(NAND_PAGES_PER_PACKET))
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
        yield Send(u16(byte_sum16(chunk)))
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
    length = bounded((yield from recv_int(4)), MAX_PMT_BYTES, "SDMMC_READ_PMT length")
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
    yield Send(u32(mode))
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
                f"with the EMI settings of this phone's own preloader: {FIX_EMI}"
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
