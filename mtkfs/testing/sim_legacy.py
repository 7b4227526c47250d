"""A simulated legacy Download Agent (DA1 + DA2), device side, speaking the real byte protocol.

It stands in for an older MediaTek phone (MT6572…MT6580) after BROM's JUMP_DA: 0xC0 and DA1's
report, the stage-2 configuration, ENABLE_DRAM when it came up from BROM, DA2's upload and flash
report, then SDMMC_SWITCH_PART, READ, NAND_READPAGE, SDMMC_WRITE_DATA, READ_PMT, the USB speed
commands and FINISH — as :mod:`mtkfs.protocols.da_legacy` describes them — over a
:class:`~mtkfs.testing.sim_xflash.FlashStore` (eMMC areas, or one ``flash`` region for NOR and
NAND; NAND pages get a spare area the host must strip).

:meth:`LegacySim.serve` is a device generator (:mod:`mtkfs.protocols.base`). Like a phone it
keeps its state between runs: after USB_SETUP_PORT the generator ends (the phone re-enumerates)
and the next ``serve()`` continues with DA2's command loop, no new bring-up.

Strict: a host that breaks the protocol (a missing ACK, a wrong constant in the stage-2 config, a
length the DA cannot hold) makes the simulator raise LocalProtocolError naming what it got.
Requests a real DA would refuse (out of range, no such partition, wrong EMI) are refused the
DA's way: NACK and an error code. :class:`LegacyFaults` makes it misbehave: corrupted read
packets (with the checksum of the *original* bytes, so only a host that checks catches them),
failed reads, stalls, disconnects, writes acknowledged but lost or altered.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from mtkfs.errors import LocalProtocolError, SourceError
from mtkfs.protocols.base import Op, Recv, Send, byte_sum16, recv_exact
from mtkfs.protocols.preloader_emi import extract_emi
from mtkfs.testing.sim_xflash import FlashStore

__all__ = ["LegacyFaults", "LegacySim", "legacy_boot1_emi"]

ACK, NACK, CONT = b"\x5a", b"\xa5", b"\x69"
#: The DA's error codes the simulator answers with (names as in mtkfs.protocols.da_legacy).
INVALID_ARGUMENTS, UNSUPPORTED_OPERATION = 0x3EA, 0x410
DRAM_NEEDED, NAND_MARKER, DRAM_CALIBRATION_FAILED = 0xBC3, 0xBC4, 0xBBE
INVALID_RANGE, SDMMC_READ_FAILED, INVALID_STORAGE_TYPE = 0xBE0, 0xC51, 0xC6A
NOR_NOT_FOUND, EMMC_NOT_FOUND = 0xBC7, 0xC4D

_EMMC_PARTS = {"boot1": 1, "boot2": 2, "rpmb": 3, "gp1": 4, "gp2": 5, "gp3": 6, "gp4": 7, "user": 8}
_READ_STORAGE = {"nor": 0x00, "nand": 0x01, "emmc": 0x02}
_WRITE_STORAGE = {"emmc": 0x01, "nand": 0x10, "nor": 0x20}
#: Length of the chip-specific tail of the stage-2 config, per BROM hw code.
_STAGE2_EXTRA_BYTES = {
    0x6592: 4,
    0x6580: 24,
    0x8163: 24,
    0x8127: 28,
    0x6583: 4,
    0x6589: 4,
    0x6582: 4,
}
_EMI_SHAPES = {**dict.fromkeys((10, 11), "info"), **dict.fromkeys((12, 13), "header")}
_EMI_SHAPES.update(dict.fromkeys((15, 16, 17, 20, 21), "length"))
_MAX_DA2_BYTES = 16 << 20
_MAX_EMI_BYTES = 64 * 1024
#: mtkclient's note of what a DA announces as its EMI length when nothing else is known.
_DEFAULT_EMI_BYTES = 0xBC
_BOOT1_SCAN_BYTES = 4 * 1024 * 1024
_RAM_BYTES = 0x40000000


@dataclass
class LegacyFaults:
    """Ways to misbehave. Packet and command numbers count from 1 over the simulator's life.

    Attributes:
        corrupt_read_packet / corrupt_read_packets: send these READ packets with one bit
            flipped and the checksum of the original bytes.
        fail_read: refuse that READ/NAND_READPAGE command (NACK, SDMMC_READ_FAILED).
        stall_read_packet: stop answering before that packet (keeps swallowing host bytes).
        disconnect_read_packet: end the generator before that packet (the cable is pulled).
        corrupt_write_chunk: store that written packet with one bit flipped, answer CONT.
        drop_write_chunk: answer CONT for that packet, store nothing.
        stage2_status: answer the stage-2 config with this instead of 0 / 0xBC3.
        dram_status: ENABLE_DRAM's result instead of the real verdict.
    """

    corrupt_read_packet: int = 0
    corrupt_read_packets: frozenset[int] = frozenset()
    fail_read: int = 0
    stall_read_packet: int = 0
    disconnect_read_packet: int = 0
    corrupt_write_chunk: int = 0
    drop_write_chunk: int = 0
    stage2_status: int | None = None
    dram_status: int | None = None

    def corrupts(self, packet: int) -> bool:
        return packet == self.corrupt_read_packet or packet in self.corrupt_read_packets


def legacy_boot1_emi(store: FlashStore) -> bytes | None:
    """The legacy EMI blob (ENABLE_DRAM's bytes) of the preloader in ``store``'s boot1, None
    without one: what ``LegacySim(expected_emi=…)`` wants so the phone accepts only its own."""
    size = store.region_sizes().get("boot1", 0)
    if not size:
        return None
    try:
        return extract_emi(
            store.read("boot1", 0, min(size, _BOOT1_SCAN_BYTES)), "boot1"
        ).legacy_blob
    except SourceError:
        return None


class _Disconnect(Exception):
    """Internal: end the session as if the cable was pulled."""


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _stall() -> Op[None]:
    """A hung device: it reads whatever comes and never answers again."""
    while True:
        yield Recv(1)


def _spare(page_index: int, spare_bytes: int) -> bytes:
    """A page's spare area: recognisable bytes that must never reach a reader."""
    return (b"SPARE%08X" % page_index * (spare_bytes // 13 + 1))[:spare_bytes]


class LegacySim:
    """One simulated phone running a legacy DA.

    Args:
        store: its flash (``store.kind`` emmc, nor or nand).
        storage: must match ``store.kind`` when given.
        connection_agent: ``"preloader"`` (DRAM up) or ``"brom"`` (the stage-2 config is
            answered 0xBC3 and DA2 needs ENABLE_DRAM first).
        hw_code: the BROM hw code: decides the stage-2 config's chip tail.
        expected_emi: the phone's own legacy EMI blob (:func:`legacy_boot1_emi`): other
            settings make DRAM calibration fail, as on a real phone. None accepts any.
        usb_speed: USB_CHECK_STATUS's answer; USB_SETUP_PORT makes it ``high-speed``.
        read_packet_bytes: the largest READ packet the DA's buffer holds (larger: refused).
        pmt: READ_PMT's table; None: the DA has none (NACK).
        nand_page_bytes / nand_spare_bytes: the NAND geometry.

    Attributes a test may inspect: ``stage`` (0, 1 DA1, 2 DA2), ``config`` (the stage-2 config
    bytes), ``emi`` (as received), ``da2`` / ``da2_addr``, ``commands``, ``read_packet_sizes``,
    ``write_packet_sizes``, ``finish_mode``, ``shut_down``.
    """

    def __init__(
        self,
        store: FlashStore,
        *,
        storage: str | None = None,
        connection_agent: str = "preloader",
        hw_code: int = 0x6582,
        expected_emi: bytes | None = None,
        usb_speed: str = "high-speed",
        faults: LegacyFaults | None = None,
        read_packet_bytes: int = 1 << 20,
        pmt: bytes | None = b"",
        nand_page_bytes: int = 2048,
        nand_spare_bytes: int = 64,
    ) -> None:
        if storage is not None and storage != store.kind:
            raise ValueError(f"storage {storage!r} but the store is {store.kind!r}")
        if store.kind not in _READ_STORAGE or connection_agent not in ("brom", "preloader"):
            raise ValueError(f"{store.kind!r} storage, {connection_agent!r} agent")
        self.store = store
        self.kind = store.kind
        self.connection_agent = connection_agent
        self.hw_code = hw_code
        self.expected_emi = expected_emi
        self.usb_speed = usb_speed
        self.faults = faults or LegacyFaults()
        self.read_packet_bytes = read_packet_bytes
        self.pmt = pmt
        self.page_bytes = nand_page_bytes
        self.spare_bytes = nand_spare_bytes
        self.stage = 0
        self.dram_ready = connection_agent == "preloader"
        self.config = b""
        self.emi = b""
        self.da2 = b""
        self.da2_addr = 0
        self.current_part = 8
        self.commands: list[int] = []
        self.read_packet_sizes: list[int] = []
        self.write_packet_sizes: list[int] = []
        self.finish_mode: int | None = None
        self.shut_down = False
        self._read_packets = 0
        self._read_commands = 0
        self._write_chunks = 0

    # -- plumbing ------------------------------------------------------------------------------

    def _expect(self, wanted: bytes, what: str) -> Op[None]:
        got = yield from recv_exact(len(wanted))
        if got != wanted:
            raise LocalProtocolError(
                f"simulated legacy DA, {what}: expected {wanted.hex()}, host sent {got.hex()}"
            )

    def _nack(self, code: int) -> Op[None]:
        """Refuse a READ the DA's way: NACK, the host's NACK, the u32 error."""
        yield Send(NACK)
        yield from self._expect(NACK, "NACK after a refused command")
        yield Send(_u32(code))

    def _region_of(self, part: int) -> str | None:
        sizes = self.store.region_sizes()
        if self.kind != "emmc":
            return "flash" if part == 8 and "flash" in sizes else None
        for name, number in _EMMC_PARTS.items():
            if number == part and sizes.get(name, 0):
                return name
        return None

    # -- session -------------------------------------------------------------------------------

    def serve(self) -> Op[None]:
        """Run until FINISH, USB_SETUP_PORT or an injected disconnect."""
        if self.shut_down:
            return
        try:
            if self.stage == 0:
                yield from self._bring_up()
            while True:
                (cmd,) = yield from recv_exact(1)
                self.commands.append(cmd)
                if not (yield from self._dispatch(cmd)):
                    return
        except _Disconnect:
            return

    def _bring_up(self) -> Op[None]:
        yield Send(b"\xc0" + self._sync_report())
        yield from self._expect(ACK, "ACK of DA1's report")
        yield Send(bytes([3, 2, 0]))  # DA version 3.2, chip byte
        self.stage = 1
        yield from self._stage2_config()
        status = self.faults.stage2_status
        if status is None:
            status = 0 if self.dram_ready else DRAM_NEEDED
        yield Send(_u32(status))
        if status == DRAM_NEEDED:
            yield from self._enable_dram()
        elif status:
            yield from _stall()
        elif self.hw_code == 0x6592:
            yield Send(bytes(20))
        yield from self._receive_da2()
        yield Send(self._flash_report())
        self.stage = 2

    def _sync_report(self) -> bytes:
        nand = self.kind == "nand"
        report = (
            _u32(0 if nand else NAND_MARKER) + _u16(2) + (b"\x00\xec\x00\xda" if nand else bytes(4))
        )
        emmc_ids = struct.pack(">4I", 0x15010053, 0x454D4D43, 0x43494430, 1)
        return (
            report
            + _u32(0 if self.kind == "emmc" else EMMC_NOT_FOUND)
            + (emmc_ids if self.kind == "emmc" else bytes(16))
        )

    def _stage2_config(self) -> Op[None]:
        """18 bytes + the chip tail; the constant fields must be what every tool sends."""
        config = yield from recv_exact(18 + _STAGE2_EXTRA_BYTES.get(self.hw_code, 0))
        nor_chip, nor_cs, acccon = struct.unpack_from(">HBI", config, 2)
        ext_clock = config[16]
        if (nor_chip, nor_cs, acccon, ext_clock) != (0x0008, 0, 0x7007FFFF, 2):
            raise LocalProtocolError(f"simulated legacy DA1: stage-2 config {config.hex()}")
        self.config = config

    def _enable_dram(self) -> Op[None]:
        yield Send(_u32(0) + b"DRAMID-SIM-0001\x00" + _u32(NAND_MARKER) + _u16(0))
        yield from self._expect(b"\xe8", "ENABLE_DRAM")
        version = int.from_bytes((yield from recv_exact(4)), "big")
        shape = _EMI_SHAPES.get(version)
        if shape is None:
            yield Send(NACK)
            yield from _stall()
        yield Send(ACK)
        length = len(self.expected_emi) if self.expected_emi else _DEFAULT_EMI_BYTES
        yield Send((bytes(16) if shape == "info" else b"") + _u32(length))
        yield from self._expect(ACK, "ACK of the EMI length")
        if shape == "length" and self.hw_code != 0x8127:
            length = int.from_bytes((yield from recv_exact(4)), "big")
            if not 0 < length <= _MAX_EMI_BYTES:
                raise LocalProtocolError(f"simulated legacy DA1: EMI of {length} bytes")
        wire = yield from recv_exact(length)
        yield Send(_u16(byte_sum16(wire)))
        yield from self._expect(ACK + _u32(0x80000001), "ACK and DRAM apply word")
        emi = wire if shape != "header" else wire[4:]
        want = self.expected_emi if shape != "header" else (self.expected_emi or b"")[4:]
        good = self.expected_emi is None or emi == want
        if shape == "header" and wire[:4] != _u32(0x100):
            raise LocalProtocolError(f"simulated legacy DA1: EMI header {wire[:4].hex()}")
        status = self.faults.dram_status
        if status is None:
            status = 0 if good else DRAM_CALIBRATION_FAILED
        yield Send(_u32(status))
        if status:
            yield from _stall()  # DRAM calibration failed: the DA goes no further
        yield Send(bytes([2, 0]) + struct.pack(">Q", _RAM_BYTES))
        if version == 13:
            yield Send(bytes(20))
        self.emi, self.dram_ready = wire, True

    def _receive_da2(self) -> Op[None]:
        addr, size, packet = struct.unpack(">III", (yield from recv_exact(12)))
        if not 0 < size <= _MAX_DA2_BYTES or not packet:
            raise LocalProtocolError(f"simulated legacy DA1: DA2 of {size} bytes in {packet}")
        yield Send(ACK)
        image = bytearray()
        while len(image) < size:
            image += yield from recv_exact(min(packet, size - len(image)))
            yield Send(ACK)
        yield from self._expect(ACK, "ACK after DA2")
        if not self.dram_ready:
            yield from _stall()  # DA2 lives in DRAM, which nobody set up
        self.da2, self.da2_addr = bytes(image), addr
        yield Send(ACK)

    def _flash_report(self) -> bytes:
        sizes = self.store.region_sizes()
        flash = sizes.get("flash", 0)
        nor = flash if self.kind == "nor" else 0
        nor_report = struct.pack(
            ">I2sHI4HII", 0 if nor else NOR_NOT_FOUND, b"\0\0", 0, nor, 0, 0, 0, 0, 0, 0
        )
        nand = flash if self.kind == "nand" else 0
        nand_ids = (0xEC, 0xDA, 0x10, 0x95) if nand else (0, 0, 0, 0)
        nand_report = struct.pack(">IBHQH4H", 0, 0, nand_ids[0], nand, 4, *nand_ids)
        nand_report += struct.pack(">HHHBBB", self.page_bytes, self.spare_bytes, 64, 8, 5, 0)
        emmc = [sizes.get(name, 0) if self.kind == "emmc" else 0 for name in _EMMC_PARTS]
        emmc_report = struct.pack(">I8Q16s8s", 0, *emmc, b"SIMLEGACY-CID-01", b"FWV-0001")
        sd_report = struct.pack(">IQ16s", 0, 0, bytes(16))
        ram = struct.pack(">IIIBBQ16s", 0, 0x20000, 0, 2, 0, _RAM_BYTES, bytes(range(16)))
        extra = _u32(0) if self.hw_code == 0x8163 else b""
        passed = ACK + _u32(0) + _u32(0) + b"\xc1"
        return nor_report + nand_report + emmc_report + sd_report + ram + extra + passed

    # -- commands ------------------------------------------------------------------------------

    def _dispatch(self, cmd: int) -> Op[bool]:
        """Serve one command; False ends the session (FINISH, USB re-enumeration)."""
        handlers: dict[int, Callable[[], Op[None]]] = {
            0x60: self._switch_part,
            0xD6: self._read,
            0xDF: self._nand_read,
            0x62: self._write,
            0xA5: self._read_pmt,
            0x72: self._usb_status,
        }
        if cmd in handlers:
            yield from handlers[cmd]()
            return True
        if cmd == 0x70:
            yield from self._expect(b"\x01", "USB_SETUP_PORT speed")
            yield Send(ACK)
            self.usb_speed = "high-speed"
            return False
        if cmd == 0xD9:
            yield Send(ACK)
            self.finish_mode = int.from_bytes((yield from recv_exact(4)), "big")
            yield Send(ACK)
            self.shut_down = True
            return False
        raise LocalProtocolError(f"simulated legacy DA2: unknown command 0x{cmd:02X}")

    def _switch_part(self) -> Op[None]:
        yield Send(ACK)
        (part,) = yield from recv_exact(1)
        if self.kind == "emmc" and self._region_of(part) is not None:
            self.current_part = part
            yield Send(ACK)
        else:
            yield Send(NACK)

    def _read_request_error(self, storage: int, region: str | None, end: int, packet: int) -> int:
        if storage != _READ_STORAGE[self.kind]:
            return INVALID_STORAGE_TYPE
        if region is None or end > self.store.region_sizes()[region]:
            return INVALID_RANGE
        if packet > self.read_packet_bytes:
            return INVALID_ARGUMENTS
        self._read_commands += 1
        return SDMMC_READ_FAILED if self._read_commands == self.faults.fail_read else 0

    def _read(self) -> Op[None]:
        host_os, storage = yield from recv_exact(2)
        offset, length, packet = struct.unpack(">QQI", (yield from recv_exact(20)))
        if host_os not in (0x0B, 0x0C) or not packet or not length:
            raise LocalProtocolError(f"simulated legacy DA2: READ {host_os:#x}/{length}/{packet}")
        region = self._region_of(self.current_part if self.kind == "emmc" else 8)
        error = self._read_request_error(storage, region, offset + length, packet)
        if error:
            yield from self._nack(error)
            return
        assert region is not None
        yield Send(ACK)
        for pos in range(0, length, packet):
            size = min(packet, length - pos)
            yield from self._send_packet(self.store.read(region, offset + pos, size))

    def _send_packet(self, data: bytes) -> Op[None]:
        """One read packet, its checksum (of the original bytes), the host's ACK."""
        self._read_packets += 1
        number = self._read_packets
        if number == self.faults.disconnect_read_packet:
            raise _Disconnect
        if number == self.faults.stall_read_packet:
            yield from _stall()
        checksum = byte_sum16(data)
        if self.faults.corrupts(number):
            data = data[:-1] + bytes([data[-1] ^ 0x10])
        self.read_packet_sizes.append(len(data))
        yield Send(data)
        yield Send(_u16(checksum))
        yield from self._expect(ACK, f"ACK of read packet {number}")

    def _nand_read(self) -> Op[None]:
        header = yield from recv_exact(15)
        host_os, read_type, addr_type, offset, length, _zero = struct.unpack(">BBBIII", header)
        if (host_os, read_type, addr_type) != (0x0C, 0, 1) or not length:
            raise LocalProtocolError(f"simulated legacy DA2: NAND_READPAGE {header.hex()}")
        page, stride = self.page_bytes, self.page_bytes + self.spare_bytes
        error = 0 if self.kind == "nand" else INVALID_STORAGE_TYPE
        if not error and (offset % page or length % page):
            error = INVALID_ARGUMENTS
        error = error or self._read_request_error(1, "flash", offset + length, 0)
        if error:
            yield from self._nack(error)
            return
        yield Send(ACK + struct.pack(">III", page, self.spare_bytes, self.read_packet_bytes))
        pages = int.from_bytes((yield from recv_exact(4)), "big")
        if not 0 < pages * stride <= self.read_packet_bytes:
            raise LocalProtocolError(f"simulated legacy DA2: {pages} pages per NAND packet")
        yield Send(_u32(pages * stride))
        first = offset // page
        for index in range(first, first + length // page, pages):
            count = min(pages, first + length // page - index)
            raw = b"".join(
                self.store.read("flash", (index + i) * page, page)
                + _spare(index + i, self.spare_bytes)
                for i in range(count)
            )
            yield from self._send_packet(raw)

    def _write_request_error(
        self, storage: int, region: str | None, offset: int, length: int
    ) -> int:
        if self.kind == "nand":
            return UNSUPPORTED_OPERATION
        if storage != _WRITE_STORAGE[self.kind]:
            return INVALID_STORAGE_TYPE
        if region is None or offset + length > self.store.region_sizes()[region]:
            return INVALID_RANGE
        return INVALID_ARGUMENTS if offset % 512 or length % 512 or not length else 0

    def _write(self) -> Op[None]:
        storage, part = yield from recv_exact(2)
        offset, length, packet = struct.unpack(">QQI", (yield from recv_exact(20)))
        if not packet:
            raise LocalProtocolError("simulated legacy DA2: SDMMC_WRITE_DATA with 0-byte packets")
        region = self._region_of(part)
        if self._write_request_error(storage, region, offset, length):
            yield Send(NACK)
            return
        assert region is not None
        yield Send(ACK)
        for pos in range(0, length, packet):
            yield from self._expect(ACK, f"ACK before write packet at +0x{pos:X}")
            chunk = yield from recv_exact(min(packet, length - pos))
            checksum = int.from_bytes((yield from recv_exact(2)), "big")
            self.write_packet_sizes.append(len(chunk))
            if byte_sum16(chunk) != checksum:
                yield Send(NACK)
                return
            self._write_chunks += 1
            if self._write_chunks == self.faults.corrupt_write_chunk:
                chunk = chunk[:-1] + bytes([chunk[-1] ^ 0x80])
            if self._write_chunks != self.faults.drop_write_chunk:
                self.store.write(region, offset + pos, chunk)
            yield Send(CONT)

    def _read_pmt(self) -> Op[None]:
        if self.pmt is None:
            yield Send(NACK)
            return
        yield Send(ACK + _u32(len(self.pmt)))
        yield from self._expect(ACK, "ACK of the PMT length")
        if self.pmt:
            yield Send(self.pmt)
        yield from self._expect(ACK, "ACK of the PMT")

    def _usb_status(self) -> Op[None]:
        yield Send(ACK + bytes([0 if self.usb_speed == "full-speed" else 1]))
