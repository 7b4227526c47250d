"""SP Flash Tool's ``Checksum.ini``: 16-bit byte sums of the images next to a scatter file.

Why mtkfs writes it: SP Flash Tool checks every downloadable image against this file when it
exists, which catches a truncated or wrong file before it reaches the phone (seed 001 ends with
"add a Checksum.ini"). Why it reads it: to verify images dropped into a firmware folder.

The value is the sum of all bytes of the image modulo 0x10000, written ``0x%04X``
(formats.md §4). Images are gigabytes, so :class:`ByteSum16` computes it without a Python loop.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping

from mtkfs.errors import CorruptMapError

#: zlib's Adler-32 modulus: its low half is (1 + sum of bytes) mod 65521.
ADLER_MODULUS = 65521
#: 256 ≡ 1 (mod 255), so a little-endian integer ≡ the sum of its bytes (mod 255).
DIGIT_MODULUS = 255
#: Longest piece whose byte sum (≤ 255 × 65520) is below 65521 × 255, so CRT recovers it exactly.
PIECE_BYTES = 65520
_CRT_INVERSE = pow(ADLER_MODULUS, -1, DIGIT_MODULUS)  # 65521⁻¹ mod 255

ENABLE_SECTION = "IsEnableChecksum"
SUMS_SECTION = "CheckSum"
_SECTION = re.compile(r"\[([^\]]*)\]")
_VALUE = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{1,16})")


class ByteSum16:
    """Incremental ``sum(data) % 0x10000`` that runs at C speed.

    Why not ``sum(data)``: that iterates byte by byte in the interpreter (~200 MB/s here), and a
    user area is tens of gigabytes. The stdlib has no byte-sum primitive, but it has two exact
    pieces of one, both implemented in C:

    * ``zlib.adler32(piece) & 0xFFFF`` is ``(1 + Σ) mod 65521``;
    * ``int.from_bytes(piece, "little") % 255`` is ``Σ mod 255``, because 256 ≡ 1 (mod 255).

    65521 and 255 are coprime, so the Chinese remainder theorem gives ``Σ mod (65521 × 255)`` —
    which *is* Σ as long as the piece is at most 65520 bytes (Σ ≤ 255 × 65520 < 65521 × 255).
    Per-piece sums then add up exactly. About twice as fast as ``sum()``; no dependency.
    """

    def __init__(self) -> None:
        self._total = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data``'s bytes; chunk boundaries do not matter."""
        view = memoryview(data).cast("B")
        total = self._total
        for start in range(0, len(view), PIECE_BYTES):
            piece = view[start : start + PIECE_BYTES]
            mod_adler = ((zlib.adler32(piece) & 0xFFFF) - 1) % ADLER_MODULUS
            mod_digit = int.from_bytes(piece, "little") % DIGIT_MODULUS
            k = (mod_digit - mod_adler) * _CRT_INVERSE % DIGIT_MODULUS
            total += mod_adler + ADLER_MODULUS * k
        self._total = total & 0xFFFF

    @property
    def value(self) -> int:
        """The sum so far, modulo 0x10000."""
        return self._total


def write_checksum_ini(sums: Mapping[str, int]) -> str:
    """``Checksum.ini`` for ``{partition name: 16-bit sum}``, in the given order, LF endings.

    Names are scatter partition names (SP Flash Tool looks keys up case-sensitively by them).
    """
    lines = [f"[{ENABLE_SECTION}]", "CHECKSUM_SWITCH=1", f"[{SUMS_SECTION}]"]
    for name, value in sums.items():
        if not name or name != name.strip() or any(c in name for c in "=[];#\r\n"):
            raise ValueError(f"{name!r} cannot be a Checksum.ini key")
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"checksum of {name} is {value}, not a 16-bit value")
        lines.append(f"{name}=0x{value:04X}")
    return "\n".join(lines) + "\n"


def parse_checksum_ini(text: str) -> dict[str, int]:
    """The ``[CheckSum]`` entries of a ``Checksum.ini``, key case preserved.

    Tolerant of what Windows tools write: a BOM, CRLF, ``;``/``#`` comments, spaces around
    ``=``, and other sections (MD5 "V2" sums, DA entries), which are skipped.

    Raises:
        CorruptMapError: a line that is neither a section, a ``key=value`` pair nor a comment, or
            a ``[CheckSum]`` value that is not a number.
    """
    sums: dict[str, int] = {}
    section = ""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if match := _SECTION.fullmatch(line):
            section = match.group(1).strip()
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise CorruptMapError(f"Checksum.ini line {number}: not 'name=value': {line[:40]!r}")
        if section.lower() != SUMS_SECTION.lower():
            continue
        match = _VALUE.fullmatch(value.split(";", 1)[0].strip())
        if match is None:
            raise CorruptMapError(
                f"Checksum.ini line {number}: {key[:40]!r} has no hex checksum: {value[:40]!r}"
            )
        sums[key] = int(match.group(1), 16)
    return sums
