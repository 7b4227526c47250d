"""XFlash Download Agent status codes: their names, and the exception (with advice) for each.

Split from :mod:`mtkfs.protocols.da_xflash`, which re-exports the names its callers use. A status
is a frame whose payload is a u16 or u32: 0 is OK, errors are 0xC00x_xxxx, and the group (the
second byte) says what failed (mtkclient's ``error.py``).
"""

from __future__ import annotations

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    MtkfsError,
    OutOfRangeError,
    RemoteProtocolError,
    TransportError,
)

STATUS_ERROR = 0xC0010001
STATUS_UNSUPPORTED_CMD = 0xC0010003
STATUS_UNSUPPORTED_CTRL = 0xC0010004
STATUS_PROTOCOL_ERROR = 0xC0010005
STATUS_DL_FORBIDDEN = 0xC0020004
STATUS_CHECKSUM_ERROR = 0xC0040003
STATUS_PARTITION_NOT_FOUND = 0xC0040006
STATUS_UNKNOWN_STORAGE = 0xC0040009
STATUS_EXCEED_RANGE = 0xC004000B
STATUS_MMC_ERROR = 0xC0040030
STATUS_EMI_VERSION = 0xC0040050
STATUS_UFS_ERROR = 0xC0040060
STATUS_DA_HASH_MISMATCH = 0xC0070004
#: Progress codes of FORMAT (not errors there; unexpected anywhere else).
STATUS_CONTINUE = 0x40040004
STATUS_COMPLETE = 0x40040005

#: Status → short name (mtkclient's ``error.py`` table, the codes a client meets).
_STATUS_NAMES = {
    STATUS_ERROR: "error",
    0xC0010002: "abort",
    STATUS_UNSUPPORTED_CMD: "unsupported command",
    STATUS_UNSUPPORTED_CTRL: "unsupported ctrl code",
    STATUS_PROTOCOL_ERROR: "protocol error",
    0xC0010006: "protocol buffer overflow",
    0xC0010007: "insufficient buffer",
    0xC001000B: "invalid stage",
    0xC001000C: "not implemented",
    0xC0020003: "device not supported",
    STATUS_DL_FORBIDDEN: "download forbidden",
    0xC0020005: "image too large",
    0xC0020007: "image verify fail",
    0xC002000C: "write data not allowed",
    0xC002000D: "format not allowed",
    0xC002002D: "anti-rollback violation",
    0xC0020049: "remote security policy disabled",
    0xC002004C: "DA anti-rollback error",
    0xC0020053: "DA version anti-rollback error",
    0xC0030007: "invalid parameters",
    0xC0040001: "unsupported operation",
    STATUS_CHECKSUM_ERROR: "checksum error",
    STATUS_PARTITION_NOT_FOUND: "partition not found",
    STATUS_UNKNOWN_STORAGE: "unknown storage type",
    STATUS_EXCEED_RANGE: "exceed available range",
    STATUS_MMC_ERROR: "MMC error",
    0xC0040040: "NAND error",
    0xC0040042: "NAND timeout",
    0xC0040043: "NAND bad block",
    0xC0040045: "NAND page program failed",
    STATUS_EMI_VERSION: "EMI setting version error",
    STATUS_UFS_ERROR: "UFS error",
    0xC0050005: "external RAM exception",
    0xC0050007: "read data exception",
    0xC0050008: "write data exception",
    0xC0070001: "DA version mismatch",
    STATUS_DA_HASH_MISMATCH: "DA hash mismatch",
    STATUS_CONTINUE: "continue",
    STATUS_COMPLETE: "complete",
}


def status_name(status: int) -> str:
    """``"exceed available range (0xC004000B)"``: the DA's meaning and the code."""
    name = _STATUS_NAMES.get(status, "unknown status")
    return f"{name} (0x{status:08X})"


def status_error(status: int, what: str) -> MtkfsError:
    """The exception for a non-OK status answering ``what``, with a message saying what to do.

    The group (second byte) decides the class: 0xC002 security → AuthRequiredError, 0xC004
    storage → TransportError (a checksum error is temporary: the link garbled a packet),
    0xC001 → protocol errors; "exceed available range" → OutOfRangeError.
    """
    text = f"{what}: the Download Agent answered {status_name(status)}"
    group = status & 0xFFFF0000
    exc: MtkfsError
    if status == STATUS_EXCEED_RANGE:
        exc = OutOfRangeError(f"{text}: the request lies beyond the end of that flash area")
    elif status in (0xC002002D, 0xC002004C, 0xC0020053):
        exc = AuthRequiredError(
            f"{text}: the phone's anti-rollback version is newer than this DA's; use the DA "
            "from the phone's current firmware package"
        )
    elif group == 0xC0020000 or status == STATUS_DA_HASH_MISMATCH:
        exc = AuthRequiredError(
            f"{text}: the device's security policy (secure boot, SLA, DAA, a signed DA) forbids "
            "this, and mtkfs does not bypass it; use the phone maker's signed DA in preloader "
            "mode, with the authorisation it requires"
        )
    elif status in (STATUS_UNSUPPORTED_CMD, STATUS_UNSUPPORTED_CTRL):
        exc = RemoteProtocolError(
            f"{text}: this DA lacks the command; try the DA file from the phone's own firmware "
            "(MTK_AllInOne_DA.bin / DA_PL.bin of a matching version)"
        )
    elif status in (STATUS_PROTOCOL_ERROR, 0xC0010006, 0xC0010007):
        exc = LocalProtocolError(
            f"{text}: the DA could not parse what mtkfs sent (a bug, or bytes corrupted on the "
            "link); replug the phone and retry, and report it with --debug if it repeats"
        )
    elif status == STATUS_EMI_VERSION:
        exc = TransportError(
            f"{text}: the EMI (DRAM) settings do not fit this DA or phone; pass the preloader "
            "of this exact phone model with --preloader"
        )
    elif status == STATUS_CHECKSUM_ERROR:
        exc = TransportError(f"{text}: a packet was corrupted on the way; retrying may help")
        exc.temporary = True
    elif group in (0xC0040000, 0xC0050000):
        exc = TransportError(
            f"{text}: the flash or the DA failed this operation; retry, and if it repeats at "
            "the same place the storage may be failing"
        )
    else:
        exc = RemoteProtocolError(f"{text}; replug the phone and retry")
    return exc
