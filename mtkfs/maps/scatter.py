"""SP Flash Tool scatter files → :class:`PartitionMap` (old brace format, YAML V1.1.x/V2, XML).

Why mtkfs reads scatter files at all: they are the one map every MTK firmware package carries, and
the only one for a user-area readback whose GPT is gone, for NAND phones (no GPT), and for the
boot regions (the preloader is in no table on the flash). ``--map FILE`` accepts them.

What makes them awkward, and what this reader does about it:

* Three syntaxes. The old text format (``NAME 0xADDR`` + ``{`` + ``}``, MT65xx) has no sizes and
  *linear* addresses: boot regions first, then the user area from the MBR's linear address on
  (formats.md §1.3). The YAML format (V1.1.x; "V2" is the same rows with flat general keys and a
  per-row ``storage_type``) has per-region ``physical_start_addr`` and sizes. SP Flash Tool v6's
  XML holds the same rows as elements, possibly for two storages at once (a "combo" file).
* ``0xFFFFnnnn`` start addresses mean "nnnn × 128 KiB before the end of the region" (sgpt,
  flashinfo, bmtpool, otp); the partition's size is its own ``partition_size`` within that area.
* YAML 1.1 would read ``0x80000`` as an int and a partition called ``no`` as a bool, so the YAML
  is loaded with PyYAML's ``BaseLoader`` (every scalar a string) and converted here, field by field.
* The text is hostile until checked (it may come from any forum download). Bad rows are skipped
  with a warning that names them; only a file with no usable row at all is an error.

Pure: text in, map out. :mod:`mtkfs.maps.scatter_write` writes V1.1.x files.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from mtkfs.errors import CorruptMapError, MapError, NoMapError
from mtkfs.maps import names
from mtkfs.maps.model import (
    Partition,
    PartitionMap,
    Region,
    is_reserved_marker,
    place,
    reserved_size_bytes,
)
from mtkfs.maps.scatter_write import write_scatter

__all__ = ["MAX_ROWS", "REGION_NAMES", "looks_like_scatter", "parse_scatter", "write_scatter"]

#: Real scatter files are 1–100 KB; refusing more bounds the work a hostile file can cause.
MAX_TEXT_CHARS = 8 << 20
#: Real layouts have < 200 rows; GPT's own limit here is 1024 entries (see gpt.MAX_ENTRIES).
MAX_ROWS = 1024
MAX_NUMBER_HEX_DIGITS = 16  # 64-bit addresses; anything longer is garbage, not a bigger flash
SECTOR_BYTES = 512

#: ``region:`` values → mtkfs region names (formats.md §3.2–3.3).
REGION_NAMES = {
    "EMMC_BOOT_1": "boot1", "EMMC_BOOT1": "boot1", "EMMC_BOOT1_BOOT2": "boot1",
    "EMMC_BOOT_2": "boot2", "EMMC_BOOT2": "boot2", "EMMC_RPMB": "rpmb", "EMMC_USER": "user",
    "EMMC_GP1": "gp1", "EMMC_GP2": "gp2", "EMMC_GP3": "gp3", "EMMC_GP4": "gp4",
    "UFS_LU0": "lu0", "UFS_LU0_LU1": "lu0", "UFS_LU1": "lu1", "UFS_LU2": "lu2", "NONE": "flash",
}  # fmt: skip
#: A UFS device read back as plain files (Boot1/Boot2/User) has these regions instead of LUs.
_UFS_AS_EMMC = {"lu0": "boot1", "lu1": "boot2", "lu2": "user"}
_RAW_FLASH_STORAGES = ("NAND", "NOR")
#: Old-format rows that live in the boot region at their linear address.
_BOOT_ROWS = frozenset({"PRELOADER", "DSP_BL"})

_OLD_HEADER = re.compile(r"(__NODL_)?(RSV_)?([A-Za-z0-9_]+)[ \t]+0[xX]([0-9A-Fa-f]+)[ \t]*(\{)?")
_YAML_ROW_KEY = re.compile(r"^[ \t]*(?:-[ \t]+)?(partition_index|partition_name)[ \t]*:", re.M)
_HEX = re.compile(r"0[xX]0*([0-9A-Fa-f]{1,16})")
_DECIMAL = re.compile(r"[0-9]{1,20}")
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.I)


@dataclass
class _Row:
    """One scatter row on its way to a :class:`Partition`.

    ``offset_bytes`` is None until a reserved-from-end row is resolved against its region;
    ``size_bytes`` None means "up to the next partition" (old format, or a YAML size of 0).
    """

    label: str
    raw_name: str
    region: str
    offset_bytes: int | None
    size_bytes: int | None
    reserve_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def looks_like_scatter(text: str) -> bool:
    """Cheap sniff for ``--map FILE``: old brace format, YAML rows or XML rows."""
    text = _normalise(text[:65536])
    if _old_format(text):
        return True
    return bool(_YAML_ROW_KEY.search(text)) or "<partition_index" in text


def parse_scatter(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """The partitions a scatter file declares, placed in the regions the source has.

    Raises:
        NoMapError: the text is not a scatter file at all.
        CorruptMapError: it is one but cannot be read (bad YAML/XML, broken old-format block).
        MapError: it holds no usable partition row, or too many rows.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise MapError(f"scatter file is {len(text)} characters; over {MAX_TEXT_CHARS} is refused")
    text = _normalise(text)
    if _old_format(text):
        return _parse_old(text, regions)
    if text.lstrip().startswith("<") and "<partition_index" in text:
        return _parse_xml(text, regions)
    if _YAML_ROW_KEY.search(text):
        return _parse_yaml(text, regions)
    raise NoMapError("not a scatter file: no 'NAME 0xADDRESS' block, no partition_name rows")


def _normalise(text: str) -> str:
    """Drop a BOM and turn CRLF/CR into LF: Windows editors add both to scatter files."""
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _significant_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of the lines that are neither blank nor comments."""
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line and not line.startswith(("#", "//")):
            yield number, line


def _old_format(text: str) -> bool:
    """formats.md §3.1 detection: the first real line is ``NAME 0xADDR``, then ``{``."""
    lines = _significant_lines(text)
    first = next(lines, None)
    if first is None or not (match := _OLD_HEADER.fullmatch(first[1])):
        return False
    return bool(match.group(5)) or next(lines, (0, ""))[1].startswith("{")


def _number(value: Any) -> int | None:
    """A scatter number (``0x…`` hex or decimal) as int; None for anything else."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if match := _HEX.fullmatch(value):
        return int(match.group(1), 16)
    return int(value) if _DECIMAL.fullmatch(value) else None


def _flag(value: Any, default: bool) -> bool:
    """``true``/``false`` (any case) as bool; anything else is the default."""
    text = value.strip().lower() if isinstance(value, str) else ""
    return {"true": True, "false": False}.get(text, default)


def _label(value: Any, fallback: str) -> str:
    """A value from the file made safe to print in a warning or the map's origin."""
    return names.clean_name(value, fallback) if isinstance(value, str) else fallback


def _parse_old(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """The old brace format: linear addresses, no sizes, ``__NODL_``/``RSV_`` prefixes."""
    blocks: list[tuple[int, str, str, str, int]] = []  # line, nodl, rsv, NAME, address
    expect_brace = in_block = False
    for number, line in _significant_lines(text):
        if in_block:
            in_block = line != "}"
        elif expect_brace:
            if not line.startswith("{"):
                raise CorruptMapError(f"scatter line {number}: expected '{{', got {line[:40]!r}")
            expect_brace, in_block = False, line not in ("{}", "{ }")
        elif match := _OLD_HEADER.fullmatch(line):
            if len(blocks) >= MAX_ROWS:
                raise MapError(f"scatter file has more than {MAX_ROWS} blocks; refused")
            nodl, rsv, name, digits, brace = match.groups()
            digits = digits.lstrip("0") or "0"
            address = int(digits, 16) if len(digits) <= MAX_NUMBER_HEX_DIGITS else -1
            blocks.append((number, nodl or "", rsv or "", name, address))
            expect_brace, in_block = not brace, bool(brace)
        else:
            raise CorruptMapError(
                f"scatter line {number}: expected 'NAME 0xADDRESS', got {line[:40]!r}"
            )
    if expect_brace or in_block:
        raise CorruptMapError("scatter file ends inside a block (missing '{' or '}')")
    nand = "flash" in regions and "user" not in regions
    mbr_linear = next((b[4] for b in blocks if b[3].upper() == "MBR" and b[4] >= 0), None)
    warnings: list[str] = []
    if not nand and mbr_linear is None:
        warnings.append("no MBR row: user-area rows' linear addresses are taken as user offsets")
    rows: list[_Row] = []
    for index, (number, nodl, rsv, name, address) in enumerate(blocks):
        label = f"block {index} ({_label(name, '?')}, line {number})"
        if address < 0:
            warnings.append(f"{label}: address has too many digits; skipped")
            continue
        row = _Row(label, name.lower(), "flash" if nand else "user", address, None)
        row.extra = {
            "row": index,
            "linear_start_addr": address,
            "is_download": not nodl,
            "is_reserved": bool(rsv),
            "name_as_written": f"{nodl}{rsv}{name}",
        }
        if is_reserved_marker(address):
            row.offset_bytes, row.reserve_bytes = None, reserved_size_bytes(address)
            row.size_bytes = row.reserve_bytes
            row.extra["is_reserved"] = True
        elif not nand and name.upper() in _BOOT_ROWS:
            row.region = "boot1"
        elif not nand and mbr_linear is not None:
            if address < mbr_linear:
                warnings.append(
                    f"{label}: linear address {address:#x} is before the MBR's "
                    f"({mbr_linear:#x}); skipped"
                )
                continue
            row.offset_bytes = address - mbr_linear
        rows.append(row)
    return _build(rows, regions, f"scatter (old text format, {len(blocks)} rows)", warnings)


def _parse_yaml(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """YAML V1.1.x (nested ``info:``) and V2 (flat general keys, ``storage_type`` per row)."""
    try:
        document = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise CorruptMapError(f"scatter file is not valid YAML{where}: {problem}") from exc
    except RecursionError as exc:
        raise CorruptMapError("scatter file is nested too deeply to be a scatter file") from exc
    items = document if isinstance(document, list) else [document]
    mappings = [item for item in items if isinstance(item, dict)]
    general: dict[str, Any] = {}
    for item in mappings:
        if "general" in item or "config_version" in item:
            general.update(item)
            info = item.get("info")
            if isinstance(info, list) and info and isinstance(info[0], dict):
                general.update(info[0])
            break
    table = [m for m in mappings if "partition_name" in m or "partition_index" in m]
    return _from_table(table, general, regions, "scatter")


def _parse_xml(text: str, regions: Mapping[str, Region]) -> PartitionMap:
    """SP Flash Tool v6 XML: ``<partition_index name="SYSn">`` elements, per storage section.

    Why DTDs are refused before parsing: a scatter needs none, and entity declarations are how
    hostile XML makes a parser expand kilobytes into gigabytes.
    """
    if _DTD.search(text):
        raise CorruptMapError("scatter XML declares a DOCTYPE or ENTITY; refused")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise CorruptMapError(f"scatter file is not valid XML at line {exc.position[0]}") from exc
    general: dict[str, Any] = {}
    for element in root.iter("general"):
        general.update((e.tag, (e.text or "").strip()) for e in element.iter() if not len(e))
    container, warnings = root, []
    sections = [(str(s.get("name", "")).upper(), s) for s in root.iter("storage_type")]
    if sections:
        wanted = "UFS" if any(r.startswith("lu") for r in regions) else "EMMC"
        storage, container = next((s for s in sections if s[0] == wanted), sections[0])
        general["storage"] = storage
        if len(sections) > 1:
            warnings.append(f"scatter XML has {len(sections)} storage sections; used {storage}")
    table = []
    for element in container.iter("partition_index"):
        row = {child.tag: (child.text or "").strip() for child in element}
        table.append({**row, "partition_index": element.get("name", "")})
    return _from_table(table, general, regions, "scatter XML", warnings)


def _from_table(
    table: list[dict[str, Any]],
    general: Mapping[str, Any],
    regions: Mapping[str, Region],
    kind: str,
    warnings: list[str] | None = None,
) -> PartitionMap:
    """YAML/XML rows (string → string mappings) to a map."""
    warnings = list(warnings or [])
    if len(table) > MAX_ROWS:
        raise MapError(f"scatter file has {len(table)} rows; over {MAX_ROWS} is refused")
    storage = _label(general.get("storage"), "?").upper()
    ufs_as_emmc = "user" in regions and "lu2" not in regions
    rows: list[_Row] = []
    for index, entry in enumerate(table):
        row = _yaml_row(index, entry, storage, ufs_as_emmc, warnings)
        if row is not None:
            rows.append(row)
    if ufs_as_emmc and any(r.extra.get("region_name", "").startswith("UFS_") for r in rows):
        warnings.append(
            "UFS rows placed in the plain-file regions: UFS_LU0 → boot1, "
            "UFS_LU1 → boot2, UFS_LU2 → user"
        )
    version = _label(general.get("config_version"), "?")
    platform = _label(general.get("platform"), "?")
    origin = f"{kind} {version} ({platform}, {storage}, {len(table)} rows)"
    return _build(rows, regions, origin, warnings)


def _yaml_row(
    index: int, entry: Mapping[str, Any], storage: str, ufs_as_emmc: bool, warnings: list[str]
) -> _Row | None:
    """One YAML/XML row, or None (with a warning naming it) when it cannot be used."""
    raw_name = entry.get("partition_name")
    label = f"{_label(entry.get('partition_index'), f'row {index}')} ({_label(raw_name, '?')})"
    if not isinstance(raw_name, str) or not raw_name.strip():
        warnings.append(f"{label}: no partition_name; skipped")
        return None
    numbers: dict[str, int | None] = {}
    for key in ("physical_start_addr", "linear_start_addr", "partition_size"):
        numbers[key] = _number(entry.get(key))
        if key in entry and numbers[key] is None:
            warnings.append(
                f"{label}: {key} {_label(entry.get(key), '?')!r} is not a number; skipped"
            )
            return None
    start = numbers["physical_start_addr"]
    start = numbers["linear_start_addr"] if start is None else start
    if start is None:
        warnings.append(f"{label}: no start address; skipped")
        return None
    row_storage = _label(entry.get("storage") or entry.get("storage_type"), storage).upper()
    region_name = entry.get("region")
    region_name = region_name.strip().upper() if isinstance(region_name, str) else ""
    # A named eMMC/UFS region wins over the storage field; only NONE or no region means "flash"
    # on NAND/NOR, so that what write_scatter wrote always reads back to the same region.
    if not region_name or region_name == "NONE":
        raw_flash = any(s in row_storage for s in _RAW_FLASH_STORAGES)
        region = "flash" if raw_flash or region_name == "NONE" else "user"
        region = "lu2" if region == "user" and "UFS" in row_storage else region
    elif region_name in REGION_NAMES:
        region = REGION_NAMES[region_name]
    else:
        warnings.append(f"{label}: unknown region {_label(region_name, '?')!r}; skipped")
        return None
    region = _UFS_AS_EMMC.get(region, region) if ufs_as_emmc else region
    size = numbers["partition_size"]
    row = _Row(label, raw_name.strip(), region, start, size or None)
    if is_reserved_marker(start):
        row.offset_bytes, row.reserve_bytes = None, reserved_size_bytes(start) or size or 0
        row.size_bytes = size or row.reserve_bytes
        if row.size_bytes > row.reserve_bytes:
            row.warnings.append(
                f"declares {row.size_bytes:#x} bytes but its start {start:#x} "
                f"reserves only {row.reserve_bytes:#x} before the region's end"
            )
    row.extra = {
        "partition_index": _label(entry.get("partition_index"), ""),
        "file_name": file_name[:256]
        if isinstance(file_name := entry.get("file_name"), str)
        else "",
        "is_download": _flag(entry.get("is_download"), True),
        "type": _label(entry.get("type"), ""),
        "operation_type": _label(entry.get("operation_type"), ""),
        "region_name": _label(region_name, ""),
        "storage": row_storage,
        "is_reserved": _flag(entry.get("is_reserved"), False),
        "linear_start_addr": numbers["linear_start_addr"],
    }
    return row


def _build(
    rows: list[_Row], regions: Mapping[str, Region], origin: str, warnings: list[str]
) -> PartitionMap:
    """Resolve reserved-from-end rows and missing sizes, name, place and check the rows."""
    if not rows:
        raise MapError(
            f"{origin}: no usable partition row" + "".join(f"; {w}" for w in warnings[:3])
        )
    for row in rows:
        if row.offset_bytes is None:
            region = regions.get(row.region)
            end = region.size_bytes if region is not None else 0
            row.offset_bytes = max(end - row.reserve_bytes, 0)
            if region is not None and row.reserve_bytes > end:
                row.offset_bytes = end  # place() then reports it as missing
                row.warnings.append(
                    f"reserves {row.reserve_bytes:#x} bytes before the end of "
                    f"{row.region}, which is only {end:#x} long"
                )
    starts: dict[str, list[int]] = {}
    for row in rows:
        starts.setdefault(row.region, []).append(row.offset_bytes or 0)
    for row in rows:
        if row.size_bytes is None:
            start = row.offset_bytes or 0
            later = [s for s in starts[row.region] if s > start]
            region = regions.get(row.region)
            end = min(later) if later else (region.size_bytes if region else start)
            row.size_bytes = max(end - start, 0)
    cleaned = [names.clean_name(row.raw_name, f"sys{i}") for i, row in enumerate(rows)]
    parts: list[Partition] = []
    for row, name, wanted in zip(rows, names.unique_names(cleaned), cleaned, strict=True):
        if name != wanted:
            row.warnings.append(f"duplicate name {wanted!r}; shown as {name!r}")
        part = Partition(
            name,
            row.region,
            row.offset_bytes or 0,
            row.size_bytes or 0,
            origin="scatter",
            warnings=tuple(row.warnings),
            extra=row.extra,
        )
        part = place(part, regions)
        if part.exposed and part.size_bytes == 0:
            part = replace(part, exposed=False).with_warning(
                "empty: no bytes before the next partition; not exposed"
            )
        elif part.exposed and part.offset_bytes % SECTOR_BYTES:
            part = part.with_warning(f"start {part.offset_bytes:#x} is not {SECTOR_BYTES}-aligned")
        parts.append(part)
    return PartitionMap(
        partitions=tuple(_mark_overlaps(parts)), origin=origin, warnings=tuple(warnings)
    )


def _mark_overlaps(parts: list[Partition]) -> list[Partition]:
    """Warn on every exposed partition that starts inside an earlier one of its region."""
    marked = list(parts)
    by_region: dict[str, list[int]] = {}
    for index, part in enumerate(parts):
        if part.exposed:
            by_region.setdefault(part.region, []).append(index)
    for indexes in by_region.values():
        indexes.sort(key=lambda i: (parts[i].offset_bytes, i))
        reach_end, reach_name = 0, ""
        for i in indexes:
            part = parts[i]
            if part.offset_bytes < reach_end:
                marked[i] = part.with_warning(
                    f"overlaps {reach_name} (which ends at {reach_end:#x})"
                )
            if part.end_bytes > reach_end:
                reach_end, reach_name = part.end_bytes, part.name
    return marked
