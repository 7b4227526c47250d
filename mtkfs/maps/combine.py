"""Combining maps: several ``--map`` files, and a map file checked against the on-flash table.

Rules (docs/maps.md):

* Maps the user hands us (``--map FILE``, repeatable) are authoritative: their partitions are what
  the mount shows. Several are merged; a name defined twice the same way is kept once, defined
  differently it keeps the first definition and says so.
* When the device also carries a table (GPT, MBR/EBR, PMT) the two are *cross-checked*: every
  disagreement is a warning in plain words (which partition, what each side says, which one mtkfs
  uses). Nothing is silently preferred.
* Matching across formats goes by name — with MediaTek's historical aliases (``bootimg`` is
  ``boot``, ``android`` is ``system``…) — and, for MBR tables whose partitions have no names, by
  the Linux partition number a dumchar row carries (``/dev/block/mmcblk0p5`` ↔ ``p5``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from mtkfs.maps.model import Partition, PartitionMap
from mtkfs.maps.names import unique_names

#: Old MTK names (dumchar, old scatters) → the names GPT-era tables use for the same partition.
ALIASES = {
    "bootimg": "boot",
    "android": "system",
    "usrdata": "userdata",
    "sec_ro": "secro",
    "uboot": "lk",
    "pro_info": "proinfo",
}


def canonical(name: str) -> str:
    """The name used to match partitions across map formats."""
    lowered = name.lower()
    return ALIASES.get(lowered, lowered)


def _same_range(a: Partition, b: Partition) -> bool:
    return (a.region, a.offset_bytes, a.size_bytes) == (b.region, b.offset_bytes, b.size_bytes)


def merge(maps: Sequence[tuple[str, PartitionMap]]) -> PartitionMap:
    """Merge user-supplied maps (label, map) in order; the first definition of a name wins."""
    if len(maps) == 1:
        return maps[0][1]
    kept: list[Partition] = []
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for label, pmap in maps:
        warnings.extend(f"{label}: {w}" for w in pmap.warnings)
        for part in pmap.partitions:
            key = canonical(part.name)
            if key not in sources:
                sources[key] = label
                kept.append(part)
                continue
            first = next(p for p in kept if canonical(p.name) == key)
            if not _same_range(first, part):
                warnings.append(
                    f"{part.name}: {label} puts it at {part.region}+{part.offset_bytes:#x} "
                    f"({part.size_bytes:#x} bytes) but {sources[key]} at {first.region}+"
                    f"{first.offset_bytes:#x} ({first.size_bytes:#x} bytes); using {sources[key]}"
                )
    names = unique_names(p.name for p in kept)
    parts = tuple(replace(p, name=n) for p, n in zip(kept, names, strict=True))
    origin = " + ".join(pmap.origin for _, pmap in maps)
    return PartitionMap(parts, origin, tuple(warnings))


def counterpart(part: Partition, table: PartitionMap) -> Partition | None:
    """The partition of ``table`` that is ``part`` (by name or alias; an MBR's by number)."""
    key = canonical(part.name)
    for other in table.partitions:
        if other.region == part.region and canonical(other.name) == key:
            return other
    # MBR partitions are only numbered: match dumchar's mmcblk0pN rows by number.
    if part.number is not None and part.extra.get("mapto"):
        for other in table.partitions:
            if other.origin in ("mbr", "ebr") and other.number == part.number:
                return other
    return None


def names_unnamed_mbr(flash: PartitionMap, table: PartitionMap) -> PartitionMap | None:
    """``table`` when it names every partition of ``flash``, an MBR/EBR map of numbers only
    (``p2``…``p8``), at the same ranges; else None.

    Why: an MT65xx phone's MBR holds only the big partitions, unnamed, while its kernel's
    ``/proc/dumchar_info`` names them all (``bootimg``, ``recovery``, ``nvram``…) and says which
    ``mmcblk0pN`` each one is. When the two agree on every range the MBR can check, the phone's
    list is the one a person wants to see; when they disagree, the flash wins (cross_check).
    """
    numbered = [p for p in flash.partitions if p.origin != "boot-region"]  # + the preloader
    if not numbered or not table.partitions:
        return None
    if any(p.origin not in ("mbr", "ebr") or p.name != f"p{p.number}" for p in numbered):
        return None
    named = {id(counterpart(other, flash)): other for other in table.partitions}
    for part in numbered:
        other = named.get(id(part))
        if other is None or not _same_range(part, other):
            return None
    return table


def cross_check(chosen: PartitionMap, label: str, table: PartitionMap) -> list[str]:
    """Warnings for every disagreement between the map in use and the device's own table."""
    table_name = table.origin.split(" ", 1)[0]
    warnings: list[str] = []
    matched: set[int] = set()
    for part in chosen.partitions:
        other = counterpart(part, table)
        if other is None:
            continue
        matched.add(id(other))
        if (part.offset_bytes, part.size_bytes) != (other.offset_bytes, other.size_bytes):
            warnings.append(
                f"{part.name}: {label} says offset {part.offset_bytes:#x} size "
                f"{part.size_bytes:#x}, the {table_name} on the device says offset "
                f"{other.offset_bytes:#x} size {other.size_bytes:#x} ({other.name}); "
                f"using {label}"
            )
    regions = {p.region for p in chosen.partitions}
    for other in table.partitions:
        if id(other) not in matched and other.region in regions:
            warnings.append(
                f"{other.name}: in the {table_name} on the device ({other.region}+"
                f"{other.offset_bytes:#x}, {other.size_bytes:#x} bytes) but not in {label}; "
                "not shown"
            )
    return warnings
