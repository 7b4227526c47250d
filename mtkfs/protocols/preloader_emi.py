"""The DRAM (EMI) settings of a phone, taken from its preloader.

Why this exists: a phone in BROM mode has only its small on-chip SRAM running — nothing has set
up the DRAM controller yet, because that is the preloader's job and BROM mode means the
preloader did not run. DA1 fits in SRAM, but the Download Agent's second stage (DA2) is loaded
into DRAM, so before BOOT_TO the host must hand DA1 the EMI settings with INIT_EXT_RAM. Those
settings (memory type, timings, sizes of the exact DRAM chips soldered on the board) are per
phone model and live in that model's preloader: the ``MTK_BLOADER_INFO`` section near its end.
Settings of another phone make the DRAM set-up fail, or worse, leave a DRAM that seems to work
and corrupts what passes through it.

Inputs understood by :func:`extract_emi`:

* a preloader image (``preloader_<board>.bin`` of a firmware package), starting with a GFH
  ``FILE_INFO`` header;
* an eMMC Boot1 readback (``EMMC_BOOT`` header, the same preloader at 0x800);
* a bare EMI blob (starting at or containing ``MTK_BLOADER_INFO_v``).

In a GFH image the file length (GFH + 0x20) minus the signature length (GFH + 0x2C) gives the
preloader's end; its last u32 is the size of the EMI section just before it. Some preloaders
end with 0x800 more bytes whose last u32 is 0: then the size sits 0x800 bytes earlier.

Pure: bytes in, bytes out, no files (the caller reads them and passes a name for messages).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from mtkfs.errors import SourceError

__all__ = ["GFH_MAGIC", "IDENTIFIER", "MAX_EMI_BYTES", "EmiSettings", "extract_emi"]

#: GFH FILE_INFO header start: ``MMM``, GFH version 1, header size 0x38, type 0 (FILE_INFO).
GFH_MAGIC = b"MMM\x01\x38\x00\x00\x00"
#: Starts the EMI section; two ASCII decimal digits (the EMI version) follow it.
IDENTIFIER = b"MTK_BLOADER_INFO_v"
#: Marks where the legacy DA protocol's EMI settings start (0xC bytes further).
_BIN_MARKER = b"MTK_BIN"
_LEGACY_SKIP = 0xC
#: Real EMI sections are a few hundred bytes to a few KiB; more means a wrong file.
MAX_EMI_BYTES = 64 * 1024

_GFH_FILE_LENGTH_AT = 0x20
_GFH_SIGNATURE_LENGTH_AT = 0x2C
_GFH_MIN_BYTES = 0x30
_TRAILER_BYTES = 0x800
_U32 = struct.Struct("<I")

_FIX = (
    "give the phone's own preloader — preloader_<board>.bin from its firmware package, or Boot1 "
    "of a readback of this phone / MNT/regions/boot1.img of an earlier mtkfs mount made in "
    "preloader mode"
)


def _error(name: str, problem: str) -> SourceError:
    return SourceError(f"{name}: {problem}: {_FIX}")


@dataclass(frozen=True)
class EmiSettings:
    """A phone's EMI (DRAM) settings.

    Attributes:
        version: the EMI version (``MTK_BLOADER_INFO_v51`` → 51).
        blob: what the XFlash DA's INIT_EXT_RAM takes: from ``MTK_BLOADER_INFO_v`` to the end
            of the EMI section.
        name: the source's display name, for messages.
    """

    version: int
    blob: bytes
    name: str = field(default="EMI settings", compare=False)

    @property
    def legacy_blob(self) -> bytes:
        """What the legacy DA protocol takes: from 0xC bytes past ``MTK_BIN`` to the end.

        Raises SourceError when the section has no ``MTK_BIN`` marker (or nothing after it).
        """
        index = self.blob.find(_BIN_MARKER)
        start = index + _LEGACY_SKIP
        if index < 0 or start >= len(self.blob):
            raise _error(
                self.name,
                f"the EMI settings (v{self.version}) have no MTK_BIN section, which the legacy "
                "Download Agent protocol needs",
            )
        return self.blob[start:]


def _u32_at(window: bytes, offset: int) -> int:
    value: int = _U32.unpack_from(window, offset)[0]
    return value


def _gfh_emi_window(image: bytes, name: str) -> bytes:
    """The EMI section of a GFH-headed preloader ``image`` (starting at its GFH)."""
    if len(image) < _GFH_MIN_BYTES:
        raise _error(name, f"truncated: the preloader header has {len(image)} of 48 bytes")
    file_bytes = _u32_at(image, _GFH_FILE_LENGTH_AT)
    signature_bytes = _u32_at(image, _GFH_SIGNATURE_LENGTH_AT)
    if file_bytes > len(image):
        raise _error(
            name,
            f"truncated: the preloader header says {file_bytes} bytes, only {len(image)} are "
            "there (a partial copy?)",
        )
    if signature_bytes > file_bytes:
        raise _error(
            name,
            f"corrupt preloader header: signature length {signature_bytes} exceeds the file "
            f"length {file_bytes}",
        )
    window = image[: file_bytes - signature_bytes]
    if len(window) < _GFH_MIN_BYTES + 4:
        raise _error(name, f"the preloader is only {len(window)} bytes long: no EMI section")
    emi_bytes = _u32_at(window, len(window) - 4)
    if emi_bytes == 0:
        if len(window) < _TRAILER_BYTES + _GFH_MIN_BYTES + 4:
            raise _error(name, "the preloader's EMI section size is 0: it has no EMI section")
        window = window[:-_TRAILER_BYTES]
        emi_bytes = _u32_at(window, len(window) - 4)
    if emi_bytes == 0:
        raise _error(
            name,
            "the preloader's EMI section size is 0 (also before its 0x800-byte trailer): it has "
            "no EMI section",
        )
    if emi_bytes > len(window) - 4 - _GFH_MIN_BYTES:
        raise _error(
            name,
            f"corrupt preloader: its EMI section size {emi_bytes} does not fit in its "
            f"{len(window)} bytes",
        )
    return window[-emi_bytes - 4 : -4]


def extract_emi(data: bytes, name: str) -> EmiSettings:
    """The EMI settings in ``data``: a preloader image, a Boot1 readback or a bare EMI blob.

    ``name`` (usually the file's path) starts every error message. Raises SourceError, saying
    what is wrong and which file to give instead, for anything malformed or missing.
    """
    start = data.find(GFH_MAGIC)
    window = _gfh_emi_window(data[start:], name) if start >= 0 else data
    index = window.find(IDENTIFIER)
    if index < 0:
        raise _error(name, "no EMI settings (MTK_BLOADER_INFO) found")
    digits_at = index + len(IDENTIFIER)
    digits = window[digits_at : digits_at + 2]
    if len(digits) != 2 or not digits.isdigit():
        raise _error(
            name,
            f"corrupt EMI settings: {IDENTIFIER.decode()} is followed by {digits!r}, not a "
            "two-digit version",
        )
    blob = window[index:]
    if len(blob) > MAX_EMI_BYTES:
        raise _error(
            name,
            f"the EMI settings would be {len(blob)} bytes, more than the "
            f"{MAX_EMI_BYTES >> 10} KiB any phone has (not a preloader, or a corrupt one)",
        )
    return EmiSettings(int(digits), bytes(blob), name)
