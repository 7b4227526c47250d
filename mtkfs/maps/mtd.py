"""MTD partition lists: ``/proc/mtd``, the kernel's boot-log lines, and ``mtdparts=`` strings.

Why three parsers: NOR/NAND boards (cameras, routers, MTK NAND phones) carry no partition table
on the flash; the layout lives in the kernel (device tree, board file or command line). Users
have one of its three printouts (formats.md §6):

* ``/proc/mtd`` — sizes only, no offsets: they are inferred as cumulative, with a warning;
* the boot log (``Creating N MTD partitions on "DEV":`` then ``0xSTART-0xEND : "NAME"``, end
  exclusive) or U-Boot's ``mtd list`` — real offsets, the best of the three;
* ``mtdparts=`` from ``/proc/cmdline``, ``bootargs`` or U-Boot's ``mtdparts`` variable — the
  kernel's own grammar, parsed the way ``cmdlinepart.c`` does (``memparse``: ``0x`` hex, a
  leading ``0`` is *octal*, ``k/m/g/t/p/e`` suffixes).

Region rule, common to all three: an MTD device goes to the source's region of the same name if
there is one; otherwise the *first* device of the text is the usual single dump (``flash``) and
any further device keeps its own name, so it is reported missing unless the source has it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mtkfs.errors import CorruptMapError, NoMapError
from mtkfs.maps import names
from mtkfs.maps.dumchar import overlap_warnings
from mtkfs.maps.model import Partition, PartitionMap, Region, place

#: Bounds on hostile text: more partitions than this is not a flash layout.
MAX_PARTITIONS = 1024
#: The longest number memparse is allowed to read (2**64 is 20 decimal digits, 22 octal).
MAX_NUMBER_CHARS = 24
MAX_NUMBER = 2**64
DEFAULT_REGION = "flash"

_PROC_MTD = re.compile(
    r'^\s*mtd([0-9]{1,5}):\s+([0-9A-Fa-f]{1,16})\s+([0-9A-Fa-f]{1,16})\s+"(.*)"\s*$'
)
_CREATING = re.compile(r'Creating ([0-9]{1,6}) MTD partitions on "([^"]{0,256})"')
_RANGE = re.compile(r'0x([0-9A-Fa-f]{1,16})-0x([0-9A-Fa-f]{1,16})\s*:\s*"([^"]*)"')
#: U-Boot's ``mtd list`` names each device on a line ``* nand0`` before its ``  - 0x…`` lines.
_UBOOT_DEVICE = re.compile(r"^\*\s+(\S{1,256})\s*$")
_MTDPARTS_KEY = "mtdparts="
_SUFFIXES = "kmgtpe"
_DEC = frozenset("0123456789")
_OCT = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_FLAGS = {"ro": "read_only", "lk": "locked", "slc": "slc"}


@dataclass
class _Entry:
    """One partition as a text declares it, before regions and names are applied.

    ``size_bytes`` None means "the rest of the device" (mtdparts ``-``).
    """

    raw_name: str
    device: str | None
    offset_bytes: int
    size_bytes: int | None
    mtd_index: int
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --- /proc/mtd ---------------------------------------------------------------------------------


def looks_like_proc_mtd(text: str) -> bool:
    """True when some line is a ``/proc/mtd`` row (``mtd0: 00040000 00020000 "name"``)."""
    return any(_PROC_MTD.match(line) for line in text.splitlines())


def parse_proc_mtd(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """Partitions from ``/proc/mtd``, at offsets inferred as cumulative sizes in listed order.

    Why inferred: ``/proc/mtd`` prints no offsets. Partitions of one chip are normally listed in
    order without gaps; when a row's inferred offset is not a multiple of its erase size, that
    assumption is visibly wrong and the partition says so. A first row as large as all the
    others together is the whole chip (``CONFIG_MTD_PARTITIONED_MASTER``): it is kept as a
    partition covering the chip, and the others start at 0.
    """
    rows: list[tuple[int, int, int, str]] = []
    for line in text.splitlines():
        match = _PROC_MTD.match(line)
        if match is None:
            continue
        _check_count(len(rows))
        number, size_hex, erase_hex, raw_name = match.groups()
        rows.append((int(number), int(size_hex, 16), int(erase_hex, 16), raw_name))
    if not rows:
        raise NoMapError('no /proc/mtd rows (mtdN: SIZE ERASESIZE "NAME")')
    warnings = [
        "/proc/mtd gives no offsets: they are inferred as the sizes added up in listed order "
        "(this assumes one flash chip and no gaps); a boot log or mtdparts= gives real ones"
    ]
    master = len(rows) >= 3 and rows[0][1] == sum(row[1] for row in rows[1:])
    device = rows[0][3] if master else None
    entries: list[_Entry] = []
    offset_bytes = 0
    for position, (number, size_bytes, erase_bytes, raw_name) in enumerate(rows):
        entry = _Entry(raw_name, device, offset_bytes, size_bytes, number)
        entry.extra["erase_bytes"] = erase_bytes
        if position == 0 and master:
            entry.extra["master"] = True
            entry.warnings.append(
                "as large as all the other partitions together: taken as the whole chip"
            )
            entries.append(entry)
            continue
        if erase_bytes and erase_bytes & (erase_bytes - 1) == 0 and offset_bytes % erase_bytes:
            entry.warnings.append(
                f"inferred offset {offset_bytes:#x} is not a multiple of the erase size "
                f"{erase_bytes:#x}: the list probably has a gap or mixes chips"
            )
        if position and number <= rows[position - 1][0]:
            entry.warnings.append(f"listed after mtd{rows[position - 1][0]}, out of order")
        entries.append(entry)
        offset_bytes += size_bytes
    return _build(entries, regions, f"/proc/mtd ({len(entries)} partitions)", warnings)


# --- boot log ----------------------------------------------------------------------------------


def looks_like_mtd_bootlog(text: str) -> bool:
    """True when the text holds the kernel's ``Creating N MTD partitions`` or range lines."""
    return any(_CREATING.search(line) or _RANGE.search(line) for line in text.splitlines())


def parse_mtd_bootlog(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """Partitions from the kernel's boot-log MTD lines or U-Boot's ``mtd list``.

    Decorations before the range (``[    1.234]``, ``<5>``, U-Boot's ``  - ``) are skipped by
    searching for the range itself. A device announced a second time means the log holds more
    than one boot: the later listing replaces everything before it, with a warning.
    """
    entries: list[_Entry] = []
    warnings: list[str] = []
    device: str | None = None
    announced: int | None = None
    found = 0
    listed: set[str | None] = set()  # devices that have partitions so far

    def close_device() -> None:
        if announced is not None and announced != found:
            warnings.append(
                f'the log announces {announced} MTD partitions on "{_shown(device)}" but lists '
                f"{found}; the {found} listed are used"
            )

    for line in text.splitlines():
        header = _CREATING.search(line)
        uboot = _UBOOT_DEVICE.match(line.strip())
        if header or uboot:
            close_device()
            new_device = header.group(2) if header else uboot.group(1) if uboot else None
            if new_device in listed:
                warnings.append(
                    f'"{_shown(new_device)}" is listed again (the log holds more than one boot '
                    "or listing); the later listing is used"
                )
                entries.clear()
                listed.clear()
            device, found = new_device, 0
            announced = int(header.group(1)) if header else None
            continue
        match = _RANGE.search(line)
        if match is None:
            continue
        _check_count(len(entries))
        start_hex, end_hex, raw_name = match.groups()
        start, end = int(start_hex, 16), int(end_hex, 16)
        entry = _Entry(raw_name, device, start, max(end - start, 0), len(entries))
        if end < start:
            entry.warnings.append(f"ends ({end:#x}) before it starts ({start:#x})")
        entries.append(entry)
        listed.add(device)
        found += 1
    close_device()
    if not entries:
        raise NoMapError('no MTD partition lines (0xSTART-0xEND : "NAME") in the log')
    return _build(entries, regions, _origin("MTD boot log", entries), warnings)


# --- mtdparts= ---------------------------------------------------------------------------------


def looks_like_mtdparts(text: str) -> bool:
    """True for an ``mtdparts=`` token anywhere, or a bare ``<mtd-id>:<partdefs>`` string."""
    return _mtdparts_value(text) is not None


def parse_mtdparts(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """Partitions from an ``mtdparts=`` definition, with the kernel's ``cmdlinepart`` grammar.

    ``mtd_index`` counts partitions in the order of the string: the kernel numbers devices in
    probe order, which matches it for the usual single chip.

    Raises:
        NoMapError: no mtdparts definition in the text.
        CorruptMapError: the definition breaks the grammar (Linux rejects it too).
    """
    value = _mtdparts_value(text)
    if value is None:
        raise NoMapError("no mtdparts= definition (mtdparts=<mtd-id>:<size>[@<offset>](<name>),…)")
    if not value:
        raise NoMapError("mtdparts= is empty")
    entries: list[_Entry] = []
    pos = 0
    while pos < len(value):
        pos = _parse_mtddef(value, pos, entries)
        if pos < len(value):
            if value[pos] != ";":
                raise CorruptMapError(
                    f"mtdparts: unexpected {value[pos]!r} at character {pos + 1}; expected "
                    "',' between partitions or ';' between devices"
                )
            pos += 1
    if not entries:
        raise NoMapError("mtdparts= defines no partitions")
    return _build(entries, regions, _origin("mtdparts", entries), [])


def _mtdparts_value(text: str) -> str | None:
    """The definition after the last ``mtdparts=`` token (cmdline, U-Boot env), or a bare one."""
    tokens = text.split()
    keyed = [token for token in tokens if _MTDPARTS_KEY in token]
    if keyed:
        token = keyed[-1]
        start = token.find(_MTDPARTS_KEY) + len(_MTDPARTS_KEY)
        while token.startswith(_MTDPARTS_KEY, start):  # U-Boot's variable: mtdparts=mtdparts=…
            start += len(_MTDPARTS_KEY)
        return token[start:].strip("\"'")
    if len(tokens) != 1:
        return None
    value = tokens[0].strip("\"'")
    colon = _id_colon(value, 0, len(value))
    if colon < 0 or value[colon + 1 : colon + 2] not in ("-", *_DEC):
        return None
    return value


def _id_colon(value: str, pos: int, end: int) -> int:
    """Where ``<mtd-id>`` ends: the last ``:`` before the first ``;`` and ``(`` (ids may hold
    colons, names may too — the kernel's rule). Each search stops at the device's own end."""
    semicolon = value.find(";", pos, end)
    end = end if semicolon < 0 else semicolon
    paren = value.find("(", pos, end)
    return value.rfind(":", pos, end if paren < 0 else paren)


def _parse_mtddef(value: str, pos: int, entries: list[_Entry]) -> int:
    """Parse ``<mtd-id>:<partdef>[,<partdef>]…`` at ``pos``; returns where it stopped."""
    colon = _id_colon(value, pos, len(value))
    if colon < 0:
        raise CorruptMapError(f"mtdparts: no '<mtd-id>:' at character {pos + 1}")
    device = value[pos:colon]
    if not device:
        raise CorruptMapError(f"mtdparts: empty mtd-id at character {pos + 1}")
    pos = colon + 1
    offset_bytes = 0
    number = 0
    while True:
        _check_count(len(entries))
        warnings: list[str] = []
        size_bytes: int | None
        if value.startswith("-", pos):
            size_bytes, pos = None, pos + 1
        else:
            size_bytes, pos = _memparse(value, pos, warnings, "size")
            if size_bytes == 0:
                raise CorruptMapError(
                    f"mtdparts: partition {number} of {_shown(device)} has size 0"
                )
        if value.startswith("@", pos):
            offset_bytes, pos = _memparse(value, pos + 1, warnings, "offset")
        raw_name = f"Partition_{number:03d}"  # the kernel's name for an unnamed partition
        if value.startswith("(", pos):
            close = value.find(")", pos + 1)
            if close < 0:
                raise CorruptMapError(f"mtdparts: no closing ')' after character {pos + 1}")
            raw_name, pos = value[pos + 1 : close], close + 1
        entry = _Entry(raw_name, device, offset_bytes, size_bytes, len(entries), warnings=warnings)
        entry.extra["read_only"] = False
        pos = _parse_flags(value, pos, entry.extra)
        entries.append(entry)
        number += 1
        if size_bytes is not None:
            offset_bytes += size_bytes
        if not value.startswith(",", pos):
            return pos
        if size_bytes is None:
            raise CorruptMapError(
                f"mtdparts: '-' (the rest of {_shown(device)}) must be its last partition, but "
                f"more follow {_shown(raw_name)!r}; Linux rejects this too"
            )
        pos += 1


def _parse_flags(value: str, pos: int, extra: dict[str, Any]) -> int:
    """Skip ``ro``, ``lk``, ``slc`` after a partdef, in that order, as the kernel does."""
    for flag, key in _FLAGS.items():
        if value.startswith(flag, pos):
            extra[key] = True
            pos += len(flag)
    return pos


def _memparse(value: str, pos: int, warnings: list[str], what: str) -> tuple[int, int]:
    """Linux ``memparse``: ``0x`` hex, leading ``0`` octal, else decimal; one K..E suffix.

    Why octal matters: ``mtdparts=nand0:0100k(x)`` is 64 KiB on a real kernel, not 100; such a
    number gets a warning, and ``08`` (not octal) is refused as Linux refuses it.
    """
    if value.startswith(("0x", "0X"), pos) and value[pos + 2 : pos + 3] in _HEX:
        base, digits, start = 16, _HEX, pos + 2
    elif value.startswith("0", pos):
        base, digits, start = 8, _OCT, pos
    elif value[pos : pos + 1] in _DEC:
        base, digits, start = 10, _DEC, pos
    else:
        raise CorruptMapError(f"mtdparts: expected a number ({what}) at character {pos + 1}")
    end = start
    while end < len(value) and value[end] in digits:
        end += 1
        if end - start > MAX_NUMBER_CHARS:
            raise CorruptMapError(f"mtdparts: the {what} at character {pos + 1} is too long")
    if base == 8 and value[end : end + 1] in _DEC:
        raise CorruptMapError(
            f"mtdparts: {what} {value[pos : end + 1]!r} starts with 0, so Linux reads it as "
            "octal, where 8 and 9 are not digits"
        )
    number = int(value[start:end], base)
    octal = base == 8 and number != 0
    suffix = value[end : end + 1].lower()
    if suffix and suffix in _SUFFIXES:
        number <<= 10 * (_SUFFIXES.index(suffix) + 1)
        end += 1
    text = value[pos:end]
    if number >= MAX_NUMBER:
        raise CorruptMapError(f"mtdparts: the {what} {text!r} does not fit in 64 bits")
    if octal:
        warnings.append(
            f"{what} {text!r} starts with 0, so it is octal, as Linux reads it: {number:#x} bytes"
        )
    return number, end


# --- shared ------------------------------------------------------------------------------------


def _build(
    entries: list[_Entry], regions: Mapping[str, Region], origin: str, warnings: list[str]
) -> PartitionMap:
    """Regions, names and placement for the entries of any of the three formats."""
    region_of: dict[str | None, str] = {}
    for entry in entries:
        if entry.device in region_of:
            continue
        if entry.device is not None and entry.device in regions:
            region_of[entry.device] = entry.device
        elif not region_of:
            region_of[entry.device] = DEFAULT_REGION
        else:
            region_of[entry.device] = names.clean_name(entry.device or "", "mtd")
    cleaned = names.unique_names(
        names.clean_name(entry.raw_name, f"mtd{entry.mtd_index}") for entry in entries
    )
    parts: list[Partition] = []
    for entry, name in zip(entries, cleaned, strict=True):
        region_name = region_of[entry.device]
        region = regions.get(region_name)
        notes = list(entry.warnings)
        size_bytes = entry.size_bytes
        if size_bytes is None:
            if region is None:
                size_bytes = 0
                notes.append(f"runs to the end of {region_name}, whose size is unknown")
            else:
                size_bytes = max(region.size_bytes - entry.offset_bytes, 0)
        extra = dict(entry.extra)
        extra["mtd_index"] = entry.mtd_index
        if entry.device is not None:
            extra["mtd_device"] = _shown(entry.device)
        if entry.size_bytes is None:
            extra["to_end"] = True
        part = place(
            Partition(
                name=name,
                region=region_name,
                offset_bytes=entry.offset_bytes,
                size_bytes=size_bytes,
                number=entry.mtd_index,
                origin="mtd",
                warnings=tuple(notes),
                extra=extra,
            ),
            regions,
        )
        if part.exposed and part.size_bytes == 0:
            part = replace(part, exposed=False).with_warning("has a size of 0 bytes; not exposed")
        parts.append(part)
    warnings = [*warnings, *overlap_warnings(p for p in parts if not p.extra.get("master"))]
    return PartitionMap(tuple(parts), origin, tuple(warnings))


def _origin(kind: str, entries: list[_Entry]) -> str:
    """``MTD boot log (6 partitions on "NOR_FLASH")``, one count per device."""
    counts: dict[str | None, int] = {}
    for entry in entries:
        counts[entry.device] = counts.get(entry.device, 0) + 1
    parts = []
    for device, count in counts.items():
        noun = "partition" if count == 1 else "partitions"
        parts.append(f'{count} {noun} on "{_shown(device)}"' if device else f"{count} {noun}")
    return f"{kind} ({', '.join(parts)})"


def _shown(text: str | None) -> str:
    """A device-supplied string safe to print: printable characters only, bounded."""
    if text is None:
        return "?"
    return "".join(c if c.isprintable() else "?" for c in text[:64])


def _check_count(count: int) -> None:
    if count >= MAX_PARTITIONS:
        raise CorruptMapError(f"more than {MAX_PARTITIONS} MTD partitions: not a flash layout")
