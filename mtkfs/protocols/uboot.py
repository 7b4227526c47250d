"""A U-Boot serial console, host side, sans-I/O: commands as text, answers parsed strictly.

mtkfs reads a device's flash through U-Boot's own shell when nothing better is available: a
back-end command (``sf read``, ``mmc read``, ``virtio read``, ``nand read``) copies a chunk of
flash into a RAM staging buffer, ``crc32`` checksums it there, and ``md`` prints it as hex for
the host to parse; writes go the other way with ``loady`` and the back-end's erase and write.
This module builds those commands and reads their answers; it never touches the line —
:mod:`mtkfs.transports.uboot_console` owns the timing. Facts come from
``../shared/reference/uboot.md`` and U-Boot 2023.01's source (cmd/mem.c,
lib/display_options.c, common/hash.c, cmd/load.c, cmd/bdinfo.c), checked on Debian 12's
qemu_arm64 build.

Why the rules below:

* **One line end, ``\\r``.** ``\\r\\n`` is two lines, and U-Boot re-runs the last repeatable
  command (md, crc32, sf write…) on an empty one. Ctrl-C, not Enter, is the safe wake-up.
* **The echo is checked.** U-Boot echoes what it receives; a difference means characters were
  lost and the command that ran is not the one typed (:class:`EchoMismatchError`).
* **md is parsed by position, never "close enough".** At 115200 baud a 64 KiB dump is 270 000
  characters; one flipped bit must not become a wrong byte in a backup. Each line must carry
  the expected address, exactly as many words of exactly the right width, a separator U-Boot
  really prints, and an ASCII column that agrees with the bytes (:func:`parse_md`). What that
  cannot see (a flipped digit between two unprintable bytes), the chunk's ``crc32`` catches.
* **Device text is hostile** (DESIGN.md): parsers raise only :mod:`mtkfs.errors` types —
  RemoteProtocolError for garbage, TransportError for failures U-Boot reports,
  LocalProtocolError for our own misuse — and commands are built from validated integers.

The flash back-ends and partition listings live in :mod:`.uboot_flash`, RAM staging in
:mod:`.uboot_board`, the shared text rules in :mod:`.uboot_text`; all are re-exported here, so
callers import this module only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mtkfs.errors import LocalProtocolError, RemoteProtocolError, TransportError
from mtkfs.protocols.uboot_board import (
    FDT_GUARD_BYTES,
    RELOC_MARGIN_BYTES,
    BoardInfo,
    choose_staging,
    parse_bdinfo,
    parse_env,
)
from mtkfs.protocols.uboot_flash import (
    BLOCK_BYTES,
    NAND_BAD_COMMAND,
    NAND_INFO_COMMAND,
    MmcInfo,
    SpiFlash,
    check_blocks_result,
    check_flash_copy_result,
    check_flash_erase_result,
    check_nand_erase_result,
    check_nand_result,
    check_protect_result,
    check_sf_result,
    flash_erase_command,
    mmc_dev_command,
    mmc_read_command,
    mmc_write_command,
    nand_erase_command,
    nand_read_command,
    nand_write_command,
    parse_blk_info,
    parse_mmc_info,
    parse_mtdparts_devices,
    parse_mtdparts_listing,
    parse_nand_bad,
    parse_nand_erase_bytes,
    parse_part_list,
    parse_sf_probe,
    parse_virtio_info,
    protect_off_command,
    sf_erase_command,
    sf_probe_command,
    sf_read_command,
    sf_write_command,
    virtio_read_command,
    virtio_write_command,
)
from mtkfs.protocols.uboot_text import (
    MAX_PROMPT_CHARS,
    autoboot_seen,
    checked_int,
    failure_message,
    find_error,
    find_reset,
    hex_arg,
    is_md_line,
    learn_prompt,
    printable,
    printed_size_range,
    text_lines,
)

__all__ = [
    "BLOCK_BYTES",
    "CTRL_C",
    "FDT_GUARD_BYTES",
    "LINE_END",
    "LOAD_READY",
    "MAX_ECHO_PIECE_BYTES",
    "MAX_PROMPT_CHARS",
    "MD_LINE_BYTES",
    "NAND_BAD_COMMAND",
    "NAND_INFO_COMMAND",
    "RELOC_MARGIN_BYTES",
    "BoardInfo",
    "ByteOrder",
    "EchoMismatchError",
    "MdParseError",
    "MmcInfo",
    "SpiFlash",
    "autoboot_seen",
    "check_blocks_result",
    "check_crc32",
    "check_flash_copy_result",
    "check_flash_erase_result",
    "check_nand_erase_result",
    "check_nand_result",
    "check_protect_result",
    "check_sf_result",
    "choose_staging",
    "cmp_command",
    "cp_command",
    "crc32_command",
    "detect_byte_order",
    "end_marker",
    "failure_message",
    "find_error",
    "find_reset",
    "flash_erase_command",
    "format_md",
    "is_md_line",
    "learn_prompt",
    "loadx_command",
    "loady_command",
    "md_ascii",
    "md_command",
    "mmc_dev_command",
    "mmc_read_command",
    "mmc_write_command",
    "mw_command",
    "nand_erase_command",
    "nand_read_command",
    "nand_write_command",
    "parse_bdinfo",
    "parse_blk_info",
    "parse_cmp",
    "parse_crc32",
    "parse_env",
    "parse_load_total",
    "parse_marked_status",
    "parse_md",
    "parse_mmc_info",
    "parse_mtdparts_devices",
    "parse_mtdparts_listing",
    "parse_nand_bad",
    "parse_nand_erase_bytes",
    "parse_part_list",
    "parse_sf_probe",
    "parse_virtio_info",
    "printable",
    "printed_size_range",
    "protect_off_command",
    "sf_erase_command",
    "sf_probe_command",
    "sf_read_command",
    "sf_write_command",
    "split_command_output",
    "text_lines",
    "virtio_read_command",
    "virtio_write_command",
    "with_end_marker",
]

ByteOrder = Literal["little", "big"]

#: One terminator, never ``\r\n``: the ``\n`` would be an empty line, which repeats the last
#: repeatable command.
LINE_END: bytes = b"\r"
#: Aborts a running command and cancels a half-typed line; at the prompt, prints a fresh one.
CTRL_C: bytes = b"\x03"
#: Commands are typed in pieces this long, each echo awaited (U-Boot's test/py max_fifo_fill):
#: small UART FIFOs and USB-serial bridges drop characters from longer bursts.
MAX_ECHO_PIECE_BYTES = 16
#: md prints 16 payload bytes per line whatever the width (DISP_LINE_LEN).
MD_LINE_BYTES = 16
#: What loadx/loady/loadb print once they wait for the host's transfer.
LOAD_READY = "## Ready for binary"

_MD_SUFFIX = {1: "b", 2: "w", 4: "l", 8: "q"}
_MD_SEPARATORS = ("  ", "    ")  # two spaces since v2021.10, four before
_NONCE = re.compile(r"[0-9a-fA-F]{1,32}")


class EchoMismatchError(RemoteProtocolError):
    """U-Boot's echo of a command differs from what was typed: characters were lost on the
    line, so what ran (if anything) is not what was meant. Resynchronise and retry."""


class MdParseError(RemoteProtocolError):
    """An ``md`` dump failed the strict check (line noise, a lost or repeated line, a reset):
    re-dump the chunk. The message names the line, the address expected and what was wrong."""


# ---------------------------------------------------------------------------------------------
# Console framing
# ---------------------------------------------------------------------------------------------


def _check_command(command: str) -> str:
    if not command or not command.isprintable() or not command.isascii():
        raise LocalProtocolError(f"not a U-Boot command line: {command!r:.80}")
    return command


def end_marker(nonce: str) -> str:
    """``__mtkfs_<nonce>__``: a string no U-Boot output contains by chance (nonce: hex)."""
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise LocalProtocolError(f"end-marker nonce must be 1-32 hex digits, got {nonce!r}")
    return f"__mtkfs_{nonce}__"


def with_end_marker(command: str, nonce: str) -> str:
    """``command; echo __mtkfs_<nonce>__$?``: Hush runs both, and the echo marks the end of the
    output and carries the command's exit status (``md.x`` fails silently: only $? tells)."""
    return f"{_check_command(command)}; echo {end_marker(nonce)}$?"


def split_command_output(raw: str, command: str, prompt: str) -> str:
    """The output of ``command`` in ``raw``: everything received after typing it and
    :data:`LINE_END`, up to and including the next prompt.

    The first line must be the echo of ``command`` exactly (else :class:`EchoMismatchError`);
    the prompt must end ``raw`` at the start of a line. Returns the lines between, ``\\r``
    removed from their ends (``\\r\\n`` line ends; leading ``\\r`` on U-Boot 1.1.3), each
    ending in ``\\n``; ``""`` for a command that printed nothing.
    """
    if not prompt:
        raise LocalProtocolError("split_command_output needs the prompt")
    newline = raw.find("\n")
    echo = raw[:newline].strip("\r") if newline >= 0 else raw
    if newline < 0 or echo != command:
        raise EchoMismatchError(
            f"typed {printable(command, 80)!r}, U-Boot echoed {printable(echo, 80)!r}: "
            "characters were lost on the line"
        )
    rest = raw[newline + 1 :]
    if not rest.endswith(prompt):
        raise RemoteProtocolError(
            f"{printable(command, 80)!r}: the output does not end with the prompt {prompt!r}: "
            f"…{printable(rest[-80:])!r}"
        )
    body = rest[: len(rest) - len(prompt)].rstrip("\r")
    if not body:
        return ""
    if not body.endswith("\n"):
        raise RemoteProtocolError(
            f"{printable(command, 80)!r}: the prompt {prompt!r} is not at the start of a line"
        )
    return "".join(line + "\n" for line in text_lines(body[:-1]))


def parse_marked_status(output: str, nonce: str) -> tuple[str, int]:
    """(the output before the end-marker line, the exit status after the marker).

    The marker line must be the last non-empty line of ``output``, and hold nothing but the
    marker and a decimal status; RemoteProtocolError otherwise (the command never finished,
    or line noise hit the marker).
    """
    marker = end_marker(nonce)
    trimmed = output.rstrip("\r\n")
    start = trimmed.rfind(marker)
    if start < 0 or (start > 0 and trimmed[start - 1] not in "\r\n"):
        raise RemoteProtocolError(
            f"no end marker {marker} at a line start in the output: …{printable(trimmed[-120:])!r}"
        )
    status = trimmed[start + len(marker) :]
    if not re.fullmatch(r"-?\d{1,5}", status):
        raise RemoteProtocolError(f"garbled end marker line: {printable(trimmed[start:])!r}")
    return trimmed[:start], int(status)


# ---------------------------------------------------------------------------------------------
# md: memory as hex text
# ---------------------------------------------------------------------------------------------


def _check_md_args(address: int, size_bytes: int, width_bytes: int) -> None:
    if width_bytes not in _MD_SUFFIX:
        raise LocalProtocolError(f"md width must be 1, 2, 4 or 8 bytes, not {width_bytes!r}")
    checked_int(address, "md address", align=width_bytes)
    checked_int(size_bytes, "md size in bytes", minimum=width_bytes, align=width_bytes)


def md_command(address: int, size_bytes: int, width_bytes: int) -> str:
    """``md.b|md.w|md.l|md.q ADDRESS COUNT``: hex, the count in objects (size / width).
    The address must be aligned to the width: unaligned word reads fault on many targets."""
    _check_md_args(address, size_bytes, width_bytes)
    return f"md.{_MD_SUFFIX[width_bytes]} {address:x} {size_bytes // width_bytes:x}"


def md_ascii(data: bytes) -> str:
    """md's ASCII column for ``data``: printable ASCII as itself, everything else ``.``."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in data)


@dataclass(frozen=True)
class _MdRow:
    words: tuple[int, ...]
    ascii: str | None  # None: the line had no ASCII column
    spaces: int  # spaces between the last word and the ASCII column


def _md_rows(text: str, address: int, size_bytes: int, width_bytes: int) -> list[_MdRow]:
    """md lines → words, checked by position: address, word count and widths, separator."""
    lines = text_lines(text)
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    per_line = MD_LINE_BYTES // width_bytes
    digits = 2 * width_bytes
    word = re.compile(rf" [0-9a-f]{{{digits}}}")
    expected_lines = -(-size_bytes // MD_LINE_BYTES)
    rows: list[_MdRow] = []
    for index in range(expected_lines):
        line_address = address + index * MD_LINE_BYTES
        line_no = index + 1

        def fail(what: str, line_no: int = line_no, at: int = line_address) -> MdParseError:
            return MdParseError(f"md line {line_no} (expected address {at:#x}): {what}")

        if index >= len(lines):
            raise fail(f"the dump ends after {len(lines)} line(s) of {expected_lines}")
        line = lines[index]
        head = f"{line_address:08x}:"
        if not line.startswith(head):
            raise fail(f"the line starts {printable(line[: len(head) + 2])!r}, not {head!r}")
        count = min(per_line, (size_bytes - index * MD_LINE_BYTES) // width_bytes)
        position = len(head)
        words: list[int] = []
        for _ in range(count):
            piece = line[position : position + 1 + digits]
            if not word.fullmatch(piece):
                raise fail(
                    f"word {len(words) + 1} of {count} is {printable(piece)!r}, not a space and "
                    f"{digits} lowercase hex digits"
                )
            words.append(int(piece[1:], 16))
            position += 1 + digits
        rest = line[position:]
        ascii_chars = count * width_bytes
        if not rest:
            rows.append(_MdRow(tuple(words), None, 0))
            continue
        gap = rest[: len(rest) - ascii_chars] if len(rest) >= ascii_chars else rest
        if len(rest) < ascii_chars + 2 or gap.strip(" "):
            raise fail(f"after {count} words comes {printable(rest)!r}, not spaces and ASCII")
        rows.append(_MdRow(tuple(words), rest[len(gap) :], len(gap)))
    if len(lines) > expected_lines:
        raise MdParseError(
            f"md line {expected_lines + 1} (expected none after address "
            f"{address + (expected_lines - 1) * MD_LINE_BYTES:#x}): unexpected text after the "
            f"last line of the dump: {printable(lines[expected_lines], 100)!r}"
        )
    _check_md_layout(rows, address, width_bytes)
    return rows


def _check_md_layout(rows: list[_MdRow], address: int, width_bytes: int) -> None:
    """One layout for the whole dump: every line with an ASCII column or none; one separator
    (2 or 4 spaces); only the last line short, padded to the column or not (old builds)."""
    if not rows:
        return
    with_ascii = {row.ascii is not None for row in rows}
    if len(with_ascii) != 1:
        first = rows[0].ascii is not None
        line_no = next(i for i, row in enumerate(rows, 1) if (row.ascii is not None) != first)
        raise MdParseError(
            f"md line {line_no} (expected address {address + (line_no - 1) * MD_LINE_BYTES:#x}): "
            "the ASCII column is missing on some lines only"
        )
    if rows[0].ascii is None:
        return
    per_line = MD_LINE_BYTES // width_bytes
    separator: int | None = None
    for line_no, row in enumerate(rows, 1):
        missing = per_line - len(row.words)
        padding = missing * (2 * width_bytes + 1)
        allowed = {len(s) for s in _MD_SEPARATORS} if separator is None else {separator}
        options = {gap: gap for gap in allowed}
        if missing:
            options.update({gap + padding: gap for gap in allowed})
        if row.spaces not in options:
            at = address + (line_no - 1) * MD_LINE_BYTES
            raise MdParseError(
                f"md line {line_no} (expected address {at:#x}): {row.spaces} spaces before the "
                f"ASCII column (expected {' or '.join(str(n) for n in sorted(options))})"
            )
        separator = options[row.spaces]


def parse_md(
    text: str, address: int, size_bytes: int, width_bytes: int, byte_order: ByteOrder
) -> bytes:
    """The ``size_bytes`` bytes that ``md`` printed in ``text``, checked strictly.

    Every line is ``%08x:`` (more digits above 4 GiB) with the expected address (+16 per
    line), exactly 16/width words of exactly 2×width lowercase hex digits (fewer only on the
    last line), then nothing or a 2- or 4-space separator (after space padding, on a short
    last line of a build since v2013.04) and the ASCII column, which must match the bytes.
    Lines may start with ``\\r``. Words are numbers in the CPU's byte order, so ``byte_order``
    ("little" on ARM and MIPSel) turns them back into memory order; ``md.b`` is memory order.
    Raises MdParseError naming the line, the expected address and the problem.
    """
    _check_md_args(address, size_bytes, width_bytes)
    if byte_order not in ("little", "big"):
        raise LocalProtocolError(f"byte order must be 'little' or 'big', not {byte_order!r}")
    out = bytearray()
    for line_no, row in enumerate(_md_rows(text, address, size_bytes, width_bytes), 1):
        chunk = b"".join(w.to_bytes(width_bytes, byte_order) for w in row.words)
        if row.ascii is not None and row.ascii != md_ascii(chunk):
            at = address + (line_no - 1) * MD_LINE_BYTES
            raise MdParseError(
                f"md line {line_no} (expected address {at:#x}): the ASCII column "
                f"{printable(row.ascii)!r} does not match the hex (expected "
                f"{md_ascii(chunk)!r}): line noise, or the wrong byte order"
            )
        out += chunk
    return bytes(out)


def format_md(
    data: bytes,
    address: int,
    width_bytes: int,
    byte_order: ByteOrder,
    *,
    separator: str = "  ",
    pad_short: bool = True,
) -> str:
    """What ``md`` prints for ``data`` at ``address`` (U-Boot 2023.01 by default), lines joined
    with ``\\n``: the inverse of :func:`parse_md`, for tests and the simulator. ``separator``
    ``"    "`` and ``pad_short=False`` give the older layouts (before v2021.10, v2013.04)."""
    if separator not in _MD_SEPARATORS:
        raise LocalProtocolError(f"md separator must be 2 or 4 spaces, not {separator!r}")
    if byte_order not in ("little", "big"):
        raise LocalProtocolError(f"byte order must be 'little' or 'big', not {byte_order!r}")
    _check_md_args(address, max(len(data), width_bytes), width_bytes)
    if len(data) % width_bytes:
        raise LocalProtocolError(f"{len(data)} bytes is not a whole number of {width_bytes}")
    per_line = MD_LINE_BYTES // width_bytes
    lines = []
    for offset in range(0, len(data), MD_LINE_BYTES):
        chunk = data[offset : offset + MD_LINE_BYTES]
        words = [
            int.from_bytes(chunk[i : i + width_bytes], byte_order)
            for i in range(0, len(chunk), width_bytes)
        ]
        line = f"{address + offset:08x}:" + "".join(f" {w:0{2 * width_bytes}x}" for w in words)
        if pad_short:
            line += " " * ((per_line - len(words)) * (2 * width_bytes + 1))
        lines.append(line + separator + md_ascii(chunk))
    return "\n".join(lines)


def detect_byte_order(md_b_text: str, md_l_text: str, address: int) -> ByteOrder:
    """The CPU's byte order from ``md.b ADDRESS 4`` and ``md.l ADDRESS 1`` of the same 4
    bytes: the word printed in memory order means big-endian, reversed means little-endian.
    RemoteProtocolError "ambiguous" if the bytes read the same both ways (``11 22 22 11``):
    write another pattern, or look elsewhere, and retry."""
    memory = parse_md(md_b_text, address, 4, 1, "big")
    (row,) = _md_rows(md_l_text, address, 4, 4)
    if row.ascii is not None and row.ascii != md_ascii(memory):
        raise RemoteProtocolError(
            f"md.l at {address:#x} shows ASCII {printable(row.ascii)!r}, md.b showed "
            f"{md_ascii(memory)!r}: the memory changed between the reads, or line noise"
        )
    as_big = row.words[0].to_bytes(4, "big")
    if as_big == as_big[::-1]:
        raise RemoteProtocolError(
            f"byte order is ambiguous at {address:#x}: {memory.hex(' ')} reads the same both "
            "ways; retry with another pattern or address"
        )
    if as_big == memory:
        return "big"
    if as_big[::-1] == memory:
        return "little"
    raise RemoteProtocolError(
        f"md.l at {address:#x} shows {as_big.hex()}, md.b showed {memory.hex(' ')}: the memory "
        "changed between the reads, or line noise"
    )


# ---------------------------------------------------------------------------------------------
# crc32, cp, cmp, mw, loadx/loady
# ---------------------------------------------------------------------------------------------


def crc32_command(address: int, size_bytes: int) -> str:
    """``crc32 ADDRESS SIZE`` (hex): the zlib/IEEE CRC-32 of RAM (or memory-mapped flash)."""
    return (
        f"crc32 {hex_arg(address, 'crc32 address')} {hex_arg(size_bytes, 'crc32 size', minimum=1)}"
    )


_CRC32 = re.compile(
    r"[cC][rR][cC]32 for ([0-9a-f]{1,16}) \.\.\. ([0-9a-f]{1,16}) ==> ([0-9a-f]{8})"
)


def parse_crc32(text: str) -> tuple[int, int, int]:
    """(start, end inclusive, crc) of the one ``crc32 for 40000000 ... 4000001f ==> f70818ce``
    line in ``text`` (multi-hash builds; ``CRC32 for …`` on the small crc-only path). Strict:
    lowercase hex, exactly 8 CRC digits, nothing else on the line."""
    found = [m for line in text_lines(text) if (m := _CRC32.fullmatch(line.strip(" ")))]
    if len(found) != 1:
        if not found and find_error(text) is not None:
            raise TransportError(f"crc32: U-Boot says {failure_message(text)!r}")
        raise RemoteProtocolError(
            f"crc32: expected one 'crc32 for X ... Y ==> CRC' line, found {len(found)} in "
            f"{printable(text)!r}"
        )
    start, end, crc = (int(group, 16) for group in found[0].groups())
    return start, end, crc


def check_crc32(text: str, address: int, size_bytes: int) -> int:
    """The CRC of :func:`parse_crc32`, after checking it covers exactly our range."""
    start, end, crc = parse_crc32(text)
    if (start, end) != (address, address + size_bytes - 1):
        raise RemoteProtocolError(
            f"crc32 covered {start:#x}..{end:#x}, not {address:#x}..{address + size_bytes - 1:#x}"
        )
    return crc


def _width_suffix(width_bytes: int) -> str:
    if width_bytes not in _MD_SUFFIX:
        raise LocalProtocolError(f"width must be 1, 2, 4 or 8 bytes, not {width_bytes!r}")
    return _MD_SUFFIX[width_bytes]


def cp_command(src: int, dst: int, size_bytes: int, width_bytes: int = 1) -> str:
    """``cp.b|w|l|q SRC DST COUNT`` (count in objects). Into CFI flash it programs the flash
    and prints ``Copy to Flash... done`` (see check_flash_copy_result); RAM copies are silent."""
    suffix = _width_suffix(width_bytes)
    count = checked_int(size_bytes, "cp size in bytes", minimum=width_bytes, align=width_bytes)
    return (
        f"cp.{suffix} {hex_arg(src, 'cp source', align=width_bytes)} "
        f"{hex_arg(dst, 'cp destination', align=width_bytes)} {count // width_bytes:x}"
    )


def cmp_command(first: int, second: int, size_bytes: int, width_bytes: int = 1) -> str:
    """``cmp.b|w|l|q FIRST SECOND COUNT`` (count in objects)."""
    suffix = _width_suffix(width_bytes)
    count = checked_int(size_bytes, "cmp size in bytes", minimum=width_bytes, align=width_bytes)
    return (
        f"cmp.{suffix} {hex_arg(first, 'cmp address', align=width_bytes)} "
        f"{hex_arg(second, 'cmp address', align=width_bytes)} {count // width_bytes:x}"
    )


def mw_command(address: int, value: int, width_bytes: int = 4, count: int = 1) -> str:
    """``mw.b|w|l|q ADDRESS VALUE [COUNT]``: the value is a number in the CPU's byte order."""
    suffix = _width_suffix(width_bytes)
    if not 0 <= checked_int(value, "mw value") < 1 << (8 * width_bytes):
        raise LocalProtocolError(f"mw value {value:#x} does not fit {width_bytes} bytes")
    return (
        f"mw.{suffix} {hex_arg(address, 'mw address', align=width_bytes)} {value:x} "
        f"{hex_arg(count, 'mw count', minimum=1)}"
    )


_CMP_TOTAL = re.compile(r"Total of (\d+) (byte|halfword|word|double word)\(s\) were the same")
_CMP_DIFF = re.compile(r"\S.* at 0x[0-9a-f]+ \((?:0x[0-9a-f]+|0+)\) != .* at 0x[0-9a-f]+ ")


def parse_cmp(text: str, count: int | None = None) -> bool:
    """True if ``cmp`` found no difference: ``Total of N byte(s) were the same`` (N equal to
    ``count`` objects when given) and no ``byte at 0x… (0x..) != byte at 0x… (0x..)`` line.
    False on a difference; RemoteProtocolError or TransportError if neither line is there."""
    lines = text_lines(text)
    if any(_CMP_DIFF.match(line) for line in lines):
        return False
    totals = [m for line in lines if (m := _CMP_TOTAL.fullmatch(line.strip()))]
    if len(totals) != 1:
        if find_error(text) is not None:
            raise TransportError(f"cmp: U-Boot says {failure_message(text)!r}")
        raise RemoteProtocolError(f"cmp: no single 'Total of N …' line in {printable(text)!r}")
    if count is not None and int(totals[0].group(1)) != count:
        raise RemoteProtocolError(
            f"cmp compared {totals[0].group(1)} objects without reporting a difference, "
            f"expected {count}"
        )
    return True


def loadx_command(ram: int) -> str:
    """``loadx ADDRESS``: receive an XMODEM(-1K) transfer into RAM (or CFI flash)."""
    return f"loadx {hex_arg(ram, 'loadx address')}"


def loady_command(ram: int) -> str:
    """``loady ADDRESS``: receive a YMODEM transfer into RAM (or CFI flash)."""
    return f"loady {hex_arg(ram, 'loady address')}"


_LOAD_TOTAL = re.compile(r"## Total Size\s*=\s*0x([0-9a-f]+) = (\d+) Bytes")


def parse_load_total(text: str) -> int:
    """The byte count of ``## Total Size      = 0x000186a0 = 100000 Bytes`` after a load.
    XMODEM (loadx) counts whole padded blocks; YMODEM (loady) the length it was told.
    TransportError on ``## Binary (xmodem) download aborted``."""
    if "download aborted" in text or find_error(text) is not None:
        raise TransportError(f"load: U-Boot says {failure_message(text)!r}")
    found = [m for line in text_lines(text) if (m := _LOAD_TOTAL.search(line))]
    if len(found) != 1:
        raise RemoteProtocolError(f"load: no single '## Total Size' line in {printable(text)!r}")
    in_hex, in_decimal = int(found[0].group(1), 16), int(found[0].group(2))
    if in_hex != in_decimal:
        raise RemoteProtocolError(f"load: total size {in_hex:#x} != {in_decimal}: line noise")
    return in_hex
