"""YMODEM for U-Boot's ``loady``: the block-0 framing (sans-I/O) and the sender against the
console simulator, whose receiver follows common/xyzModem.c (checked against QEMU's U-Boot).

Why it matters: ``loadx`` strips 0x1A bytes from any block that ends in three of them, so a
flash chunk holding such a block would be written shifted; ``loady`` is told the length."""

from __future__ import annotations

import zlib

import pytest
import trio

from mtkfs.errors import LocalProtocolError
from mtkfs.links.tcp import TcpLink
from mtkfs.protocols import uboot, ymodem
from mtkfs.testing.disk import pseudo_random
from mtkfs.testing.sim_uboot import SimBoard, running_console
from mtkfs.transports.uboot_console import Console
from mtkfs.transports.uboot_load import send_ymodem

pytestmark = pytest.mark.timeout(120)

RAM = 0x40200000


def test_crc16_is_the_xmodem_variant() -> None:
    # The catalogue check value of CRC-16/XMODEM.
    assert ymodem.crc16_xmodem(b"123456789") == 0x31C3


def test_header_block_layout() -> None:
    block = ymodem.header_block("mtkfs.bin", 5000)
    body = b"mtkfs.bin\x005000".ljust(128, b"\0")
    assert block == b"\x01\x00\xff" + body + ymodem.crc16_xmodem(body).to_bytes(2, "big")
    assert len(block) == 133


def test_end_of_batch_block_is_all_nul() -> None:
    assert ymodem.end_of_batch_block() == b"\x01\x00\xff" + bytes(128) + b"\x00\x00"


@pytest.mark.parametrize(
    ("name", "size"), [("a b", 1), ("x;reset", 1), ("", 1), ("ok.bin", 0), ("ok.bin", -1)]
)
def test_header_block_refuses_unsafe_names_and_empty_files(name: str, size: int) -> None:
    with pytest.raises(LocalProtocolError):
        ymodem.header_block(name, size)


def _trap(size: int) -> bytes:
    """Random bytes with 0x1A 0x1A 0x1A ending every 1 KiB block: loadx would strip them."""
    data = bytearray(pseudo_random("ymodem/trap", size))
    for end in range(1024, size + 1, 1024):
        data[end - 3 : end] = b"\x1a\x1a\x1a"
    return bytes(data)


@pytest.mark.parametrize("size", [1, 1021, 3 * 1024, 5000])
def test_send_ymodem_stores_every_byte_at_once(size: int) -> None:
    """Exact length and CRC in RAM, 0x1A-ended blocks kept. The receiver's character
    timeout is set far beyond the sender's: a sender that waited for a C after block 0's ACK
    (which U-Boot sends only after that timeout) would fail here, not just be slow."""
    data = _trap(size)
    board = SimBoard(banner_delay_s=0.05, autoboot_step_s=0.1, boot_script_s=0.1,
                     xyz_char_timeout_s=60.0)  # fmt: skip

    async def main(url: str) -> tuple[str, str]:
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        link = await TcpLink.connect(host, int(port), what="simulated U-Boot")
        console = Console(link, io_timeout_s=5.0)
        await console.attach()
        command = uboot.loady_command(RAM)
        before = await console.start(command, uboot.LOAD_READY)
        after_ready = before.split(uboot.LOAD_READY, 1)[1].split("\n", 1)[-1]
        await send_ymodem(link, data, timeout_s=5.0, primed="C" in after_ready)
        loaded = await console.finish(command, before)
        crc = await console.run(uboot.crc32_command(RAM, size))
        await link.aclose()
        return loaded, crc

    with running_console(board) as sim:
        loaded, crc = trio.run(main, sim.url)
    assert uboot.parse_load_total(loaded) == size
    assert uboot.parse_crc32(crc)[2] == zlib.crc32(data)
