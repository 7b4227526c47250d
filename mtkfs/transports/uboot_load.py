"""Host → board RAM over the console: ``loady`` with a YMODEM-1K sender.

Why YMODEM: ``loadx`` (XMODEM) cannot tell padding from data — U-Boot strips all trailing
0x1A bytes from *any* block whose last three bytes are 0x1A, so a flash chunk holding such a
block would land shorter and shifted (seen on U-Boot 2023.01 under QEMU). ``loady`` is told the
length in block 0 and trims only past it, so every byte arrives
(:mod:`mtkfs.protocols.ymodem`). Each 1 KiB block carries a CRC-16 and is acknowledged, so line
noise costs a resend, not wrong bytes.

The data blocks are sent by the ``xmodem`` package (PyPI: small, pure Python, maintained),
which speaks XMODEM-1K but not YMODEM's block 0; this module adds the two block-0 exchanges.
The package is synchronous (``getc``/``putc`` callbacks), so it runs in a worker thread that
calls back into trio for every read and write of the link.

Timing that matters: after acknowledging block 0, U-Boot waits for block 1 *without* sending
another ``C``; a sender that waits for one (as lrzsz's ``sb`` does) stalls until U-Boot's
character timeout, seconds per load. So block 1 follows the ACK at once.
"""

from __future__ import annotations

import io
import logging

import trio
import xmodem  # type: ignore[import-untyped]

from mtkfs.errors import TransportError, TransportTimeout
from mtkfs.links.base import Link
from mtkfs.protocols import ymodem

log = logging.getLogger(__name__)

BLOCK_BYTES = 1024

#: Five CANs in a row make U-Boot's receiver give up at once ("download aborted").
CANCEL = b"\x18" * 5

#: Attempts at one block-0 exchange before the transfer is abandoned.
BLOCK_ZERO_ATTEMPTS = 10

#: Bytes skipped while waiting for an answer (stray Cs, echo of an earlier line) before
#: the receiver is taken to be something else.
MAX_STRAY_BYTES = 64


async def send_ymodem(
    link: Link, data: bytes, *, timeout_s: float = 10.0, primed: bool = False
) -> None:
    """Send ``data`` as one YMODEM file to a receiver that is already waiting (``loady``
    printed its Ready line).

    ``primed``: the receiver's first ``C`` (CRC mode, please) already arrived with the Ready
    line. On failure the receiver is cancelled, so the console is back at its prompt
    promptly; TransportError then.
    """
    try:
        if not primed:
            await _await(link, ymodem.CRC_REQUEST, timeout_s)
        await _block_zero(link, ymodem.header_block("mtkfs.bin", len(data)), timeout_s)
        if not await _send_data_blocks(link, data, timeout_s):
            raise TransportError(f"YMODEM transfer of {len(data)} bytes to U-Boot failed")
        # After EOT's ACK the receiver asks (C) for the next file's header: none.
        await _await(link, ymodem.CRC_REQUEST, timeout_s)
        await _block_zero(link, ymodem.end_of_batch_block(), timeout_s)
    except (TransportError, TransportTimeout):
        await link.send(CANCEL)
        raise


async def _await(link: Link, wanted: bytes, timeout_s: float, *, also: bytes = b"") -> bytes:
    """The first of ``wanted``/``also`` (single bytes) to arrive, skipping a few others."""
    for _ in range(MAX_STRAY_BYTES):
        byte = await link.recv_exactly(1, timeout_s)
        if byte in wanted or (also and byte in also):
            return byte
        if byte == CANCEL[:1]:
            raise TransportError("U-Boot cancelled the YMODEM transfer")
    raise TransportError(f"U-Boot's YMODEM receiver never answered {wanted!r}")


async def _block_zero(link: Link, block: bytes, timeout_s: float) -> None:
    """Send a block 0 until it is acknowledged (a NAK or C asks for it again)."""
    for _ in range(BLOCK_ZERO_ATTEMPTS):
        await link.send(block)
        answer = await _await(link, ymodem.ACK, timeout_s, also=ymodem.NAK + ymodem.CRC_REQUEST)
        if answer == ymodem.ACK:
            return
    raise TransportError("U-Boot's YMODEM receiver refused block 0 repeatedly")


async def _send_data_blocks(link: Link, data: bytes, timeout_s: float) -> bool:
    """Blocks 1… and EOT through the ``xmodem`` package, started at once (see module doc)."""
    token = trio.lowlevel.current_trio_token()
    pending = bytearray(ymodem.CRC_REQUEST)

    def getc(size: int, timeout: float = 1) -> bytes | None:
        if pending:
            head = bytes(pending[:size])
            del pending[:size]
            return head
        try:
            got: bytes = trio.from_thread.run(link.recv_exactly, size, timeout, trio_token=token)
        except TransportTimeout:
            return None
        return got

    def putc(chunk: bytes, timeout: float = 1) -> int:
        del timeout
        trio.from_thread.run(link.send, chunk, trio_token=token)
        return len(chunk)

    modem = xmodem.XMODEM(getc, putc, mode="xmodem1k")
    logging.getLogger("xmodem").setLevel(logging.WARNING)

    def transfer() -> bool:
        return bool(modem.send(io.BytesIO(data), retry=16, timeout=timeout_s, quiet=True))

    return await trio.to_thread.run_sync(transfer)
