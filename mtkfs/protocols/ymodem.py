"""YMODEM's batch framing, sans-I/O: the file header block and the end-of-batch block.

Why mtkfs needs YMODEM and not plain XMODEM for U-Boot: ``loadx`` (common/xyzModem.c) cannot
tell padding from data. It strips *every* trailing 0x1A from any block whose last three bytes
are 0x1A — not only the padded last block — so a chunk of flash that happens to hold such a
block lands shorter and shifted in RAM (seen on U-Boot 2023.01 under QEMU). ``loady`` gets the
file length in block 0 and then trims only past that length, so every byte arrives.

The data blocks between the two are ordinary XMODEM-1K blocks (sequence 1, 2, …, CRC-16), sent
by the ``xmodem`` package; this module adds only what that package lacks. Layout (Chuck
Forsberg's YMODEM spec, as U-Boot parses it): ``SOH 00 FF`` + 128 bytes + CRC-16/XMODEM big
endian; the 128 bytes hold ``name NUL decimal-length`` padded with NUL; an all-NUL block 0
ends the batch.
"""

from __future__ import annotations

import binascii
import re

from mtkfs.errors import LocalProtocolError

SOH = 0x01
ACK = b"\x06"
NAK = b"\x15"
CRC_REQUEST = b"C"
HEADER_PAYLOAD_BYTES = 128

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0): ``binascii.crc_hqx`` with a zero start."""
    return binascii.crc_hqx(data, 0)


def _block_zero(payload: bytes) -> bytes:
    body = payload.ljust(HEADER_PAYLOAD_BYTES, b"\0")
    return bytes([SOH, 0x00, 0xFF]) + body + crc16_xmodem(body).to_bytes(2, "big")


def header_block(name: str, size_bytes: int) -> bytes:
    """Block 0 announcing one file of ``size_bytes`` (decimal, as every receiver parses it).

    U-Boot skips the name and reads the length; a length of 0 would switch its 0x1A
    stripping back on, so an empty file is refused here rather than sent wrong.
    """
    if not _SAFE_NAME.fullmatch(name):
        raise LocalProtocolError(f"YMODEM file name {name!r} is not a plain short name")
    if size_bytes <= 0:
        raise LocalProtocolError(f"YMODEM needs a positive file length, not {size_bytes}")
    return _block_zero(name.encode("ascii") + b"\0" + str(size_bytes).encode("ascii"))


def end_of_batch_block() -> bytes:
    """The all-NUL block 0 that tells the receiver no more files follow."""
    return _block_zero(b"")
