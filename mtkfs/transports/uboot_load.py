"""Host → board RAM over the console: ``loadx`` with an XMODEM-1K sender.

Why XMODEM-1K through the ``xmodem`` package (PyPI): U-Boot's ``loadx`` receives it on every
build that has serial loading; each 1 KiB block carries a CRC-16 and is acknowledged, so line
noise costs a resend, not wrong bytes; and the package is small, pure Python and maintained.
It is synchronous (``getc``/``putc`` callbacks), so it runs in a worker thread that calls back
into trio for every read and write of the link. YMODEM (``loady``) adds only a file-name block
— no gain for raw ranges. The ~11 KB/s this gets at 115200 baud is four times what ``md`` reads.

Known limit (seen on U-Boot 2023.01 under QEMU): ``loadx`` strips trailing 0x1A bytes from
*any* block whose last three bytes are 0x1A, not only the padded last one, so data with such a
block lands shifted in RAM. The transport checks ``crc32`` of the RAM against the bytes it sent
before anything is erased, so such a write fails (EIO) without touching the flash; ``loady``
(which sends the length) is the fix to come.
"""

from __future__ import annotations

import io
import logging

import trio
import xmodem  # type: ignore[import-untyped]

from mtkfs.errors import TransportError, TransportTimeout
from mtkfs.links.base import Link

log = logging.getLogger(__name__)

BLOCK_BYTES = 1024


#: Five CANs in a row make U-Boot's receiver give up at once ("download aborted").
CANCEL = b"\x18" * 5


async def send_xmodem(
    link: Link, data: bytes, *, timeout_s: float = 10.0, primed: bool = False
) -> None:
    """Send ``data`` to a receiver that is already waiting (``loadx`` printed its Ready line).

    ``primed``: the receiver's first ``C`` (CRC mode, please) already arrived with the Ready
    line; without it the sender would wait for the next one (U-Boot repeats it every ~4 s).
    On failure the receiver is cancelled, so the console is back at its prompt promptly;
    TransportError then.
    """
    token = trio.lowlevel.current_trio_token()
    pending = bytearray(b"C" if primed else b"")

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

    if not await trio.to_thread.run_sync(transfer):
        await link.send(CANCEL)
        raise TransportError(f"XMODEM transfer of {len(data)} bytes to U-Boot failed")


def xmodem_pad(size_bytes: int) -> int:
    """Bytes ``loadx`` writes for ``size_bytes`` sent: whole 1 KiB blocks."""
    return -(-size_bytes // BLOCK_BYTES) * BLOCK_BYTES
