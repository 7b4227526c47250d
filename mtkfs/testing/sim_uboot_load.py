"""``loadx``/``loady``: cmd/load.c and common/xyzModem.c, the receiving side, timing included.

U-Boot's receiver sends ``C`` and then waits: a 2 s character timeout, a flush that lasts until
2 s of silence, a quarter second, and ``C`` again (about every 4 s; 90 s in all). Blocks are
acknowledged lazily (the ACK goes out when the next header is awaited), EOT is acknowledged
twice (one ACK is left over after the sender finished), three CAN or Ctrl-C cancel, and an
XMODEM block that ends in three 0x1A bytes loses all its trailing 0x1A (so the total is exact
for padded data, and short for data that really ends in 0x1A). Data lands in RAM, or in CFI
flash through ``flash_write`` when the address is there.
"""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

import trio

from mtkfs.testing.sim_uboot_board import Command, dectoul, hextoul

if TYPE_CHECKING:
    from mtkfs.testing.sim_uboot_machine import Machine

__all__ = ["LOAD_COMMANDS"]


# ---------------------------------------------------------------------------------------------
# loadx / loady: cmd/load.c and common/xyzModem.c, receiver side

SOH, STX, ETX, EOT, ACK, BSP, NAK, CAN, EOF = 0x01, 0x02, 0x03, 0x04, 0x06, 0x08, 0x15, 0x18, 0x1A
_TIMEOUT, _EOF, _CANCEL, _FRAME, _CKSUM, _SEQUENCE = -3, -4, -5, -6, -7, -8
_ERRORS = {
    _TIMEOUT: "Timed out",
    _EOF: "End of file",
    _CANCEL: "Cancelled",
    _FRAME: "Invalid framing",
    _CKSUM: "CRC/checksum error",
    _SEQUENCE: "Block sequence error",
}


class _XyzReceiver:
    """xyzModem.c's state machine, timeouts and all: a ``C`` every ~4 s while waiting (a 2 s
    character timeout, then a flush until 2 s of silence), ACKs sent lazily (when the next
    header is awaited), trailing 0x1A stripped from any XMODEM block ending in three."""

    def __init__(self, m: Machine, ymodem: bool) -> None:
        self.m = m
        self.ymodem = ymodem
        self.char_s = m.board.xyz_char_timeout_s
        self.crc_mode = True
        self.tx_ack = False
        self.at_eof = False
        self.first_xmodem_packet = False
        self.next_blk = 1
        self.blk = 0
        self.pkt = b""
        self.bufp = 0
        self.len = 0
        self.file_length = 0
        self.read_length = 0
        self.start = trio.current_time()

    async def putc(self, byte: int) -> None:
        await self.m.putc_raw(bytes([byte]))

    async def getc(self) -> int | None:
        return await self.m.getc_timeout(self.char_s)

    async def read(self, count: int) -> bytes | None:
        out = bytearray()
        rx = self.m.uart.rx
        while len(out) < count:
            if not rx and not await self.m.uart.wait_input(self.char_s):
                return None
            take = min(count - len(out), len(rx))
            out += rx[:take]
            del rx[:take]
        return bytes(out)

    async def flush(self) -> None:
        while await self.getc() is not None:
            pass

    def timed_out(self) -> bool:
        return trio.current_time() - self.start > self.m.board.xyz_initial_timeout_s

    async def get_hdr(self) -> int:
        if self.tx_ack:
            await self.putc(ACK)
            self.tx_ack = False
        cans = chars = 0
        while True:
            c = await self.getc()
            if c is None:
                await self.flush()
                await trio.sleep(0.25)
                return _TIMEOUT
            chars += 1
            if c in (SOH, STX):
                break
            if c in (CAN, ETX):
                cans += 1
                if cans == 3:
                    return _CANCEL
            elif c == EOT and chars == 1:
                await self.putc(ACK)
                return _EOF
        size = 128 if c == SOH else 1024
        rest = await self.read(2 + size + (2 if self.crc_mode else 1))
        if rest is None:
            return _TIMEOUT
        self.blk, cblk = rest[0], rest[1]
        self.pkt, self.bufp, self.len = rest[2 : 2 + size], 0, size
        if self.blk ^ cblk != 0xFF:
            await self.flush()
            return _FRAME
        check = rest[2 + size :]
        if self.crc_mode:
            if binascii.crc_hqx(self.pkt, 0) != int.from_bytes(check, "big"):
                return _CKSUM
        elif sum(self.pkt) & 0xFF != check[0]:
            return _CKSUM
        return 0

    async def open(self) -> int:
        await self.putc(ord("C"))
        if not self.ymodem:
            self.first_xmodem_packet = True
            return 0
        retries, crc_retries = 20, 10
        stat = 0
        while not self.timed_out():
            retries -= 1
            if retries <= 0:
                retries, crc_retries, self.crc_mode = 20, 10, True
            stat = await self.get_hdr()
            if stat == 0:
                if self.blk == 0:
                    name_end = self.pkt.find(b"\0")
                    digits = self.pkt[name_end + 1 :].split(b" ")[0].split(b"\0")[0]
                    self.file_length = int(digits) if digits.isdigit() else 0
                    self.tx_ack = True
                self.next_blk, self.len = 1, 0
                return 0
            if stat == _TIMEOUT:
                crc_retries -= 1
                if crc_retries <= 0:
                    self.crc_mode = False
                await trio.sleep(0.5)
                await self.putc(ord("C") if self.crc_mode else NAK)
            if stat == _CANCEL:
                break
        return stat or _TIMEOUT

    async def read_block(self) -> tuple[bytes, int]:
        """Up to 1024 bytes of file data (b"" at the end), and an error code (0: none)."""
        out = bytearray()
        size = 1024
        stat = _CANCEL
        while not self.at_eof and self.len >= 0 and size > 0:
            if self.len == 0:
                for _ in range(20):
                    if self.first_xmodem_packet and self.timed_out():
                        self.len = -1
                        return bytes(out), _TIMEOUT
                    stat = await self.get_hdr()
                    if stat == 0:
                        self.first_xmodem_packet = False
                        if self.blk == self.next_blk:
                            self.tx_ack = True
                            self.next_blk = (self.next_blk + 1) & 0xFF
                            self._trim()
                            break
                        if self.blk == (self.next_blk - 1) & 0xFF:
                            await self.putc(ACK)
                            continue
                        stat = _SEQUENCE
                    if stat == _CANCEL:
                        break
                    if stat == _EOF:
                        await self.putc(ACK)
                        if self.ymodem:
                            await self.putc(ord("C") if self.crc_mode else NAK)
                            stat = await self.get_hdr()
                            await self.putc(ACK)
                        else:
                            stat = 0
                        self.at_eof = True
                        break
                    await self.putc(ord("C") if self.crc_mode else NAK)
                if stat < 0 and (not self.first_xmodem_packet or stat != _TIMEOUT):
                    self.len = -1
                    return bytes(out), stat
            if not self.at_eof and self.len > 0:
                take = min(size, self.len)
                out += self.pkt[self.bufp : self.bufp + take]
                size -= take
                self.len -= take
                self.bufp += take
        return bytes(out), 0

    def _trim(self) -> None:
        padded = self.len >= 3 and self.pkt[self.len - 3 : self.len] == bytes([EOF] * 3)
        if (not self.ymodem or self.file_length == 0) and padded:
            while self.len and self.pkt[self.len - 1] == EOF:
                self.len -= 1
        if self.ymodem and self.file_length:
            self.read_length += self.len
            if self.read_length > self.file_length:
                self.len -= self.read_length - self.file_length

    async def terminate(self, abort: bool) -> None:
        if abort:
            await self.m.putc_raw(bytes([CAN] * 4 + [BSP] * 4))
            await self.flush()
            self.at_eof = True
        else:
            while self.m.uart.getc_nowait() is not None:
                pass
            await trio.sleep(0.25)


async def _load_serial_ymodem(m: Machine, offset: int, ymodem: bool) -> int | None:
    """load_serial_ymodem(): bytes stored at ``offset`` (RAM or CFI flash), None if aborted."""
    from mtkfs.testing.sim_uboot_nor import cfi_write

    receiver = _XyzReceiver(m, ymodem)
    err = await receiver.open()
    if err:
        await m.puts(f"\n{_ERRORS.get(err, 'Unknown error')}\n")
        return None
    size = 0
    while True:
        data, err = await receiver.read_block()
        if data:
            store = offset + size
            if m.mem.cfi_bank(store) is not None:
                error = cfi_write(m, store, data)
                if error:
                    await receiver.terminate(True)
                    await m.puts("\n" + error)
                    return None
            else:
                m.mem.write(store, data)
            size += len(data)
        if err or not data:
            break
    if err:
        await receiver.terminate(err != _CANCEL)
        await m.puts(f"\n{_ERRORS.get(err, 'Unknown error')}\n")
        return None
    await receiver.terminate(False)
    await m.puts(f"## Total Size      = 0x{size:08x} = {size} Bytes\n")
    m.env["filesize"] = f"{size:x}"
    return size


async def do_load_serial_bin(m: Machine, argv: list[str], repeat: bool) -> int:
    """``loadx``/``loady [addr [baud]]``: the Ready line, then the receiver."""
    offset = hextoul(m.env["loadaddr"]) if "loadaddr" in m.env else m.board.ram_banks[0][0]
    current = dectoul(m.env.get("baudrate", "115200"))
    baud = current
    if len(argv) >= 2:
        offset = hextoul(argv[1])
    if len(argv) == 3:
        baud = dectoul(argv[2]) or current
    if baud != current:
        await m.puts(f"## Switch baudrate to {baud} bps and press ENTER ...\n")
        await trio.sleep(0.05)
        await m.set_baud(baud)
        while await m.getc() != 0x0D:
            pass
    kind = "ymodem" if argv[0].startswith("loady") else "xmodem"
    await m.puts(f"## Ready for binary ({kind}) download to 0x{offset:08X} at {baud} bps...\n")
    size = await _load_serial_ymodem(m, offset, kind == "ymodem")
    if size is None:
        await m.puts(f"## Binary ({kind}) download aborted\n")
        rc = 1
    else:
        await m.puts(f"## Start Addr      = 0x{offset:08X}\n")
        m.load_addr = offset
        rc = 0
    if baud != current:
        await m.puts(f"## Switch baudrate to {current} bps and press ESC ...\n")
        await trio.sleep(0.05)
        await m.set_baud(current)
        while await m.getc() != 0x1B:
            pass
    return rc


LOAD_COMMANDS = [
    Command(
        "loadx",
        3,
        False,
        "load binary file over serial line (xmodem mode)",
        "[ off ] [ baud ]\n    - load binary file over serial line with offset 'off' "
        "and baudrate 'baud'",
        do_load_serial_bin,
    ),
    Command(
        "loady",
        3,
        False,
        "load binary file over serial line (ymodem mode)",
        "[ off ] [ baud ]\n    - load binary file over serial line with offset 'off' "
        "and baudrate 'baud'",
        do_load_serial_bin,
    ),
]
