"""The partition-map data model and the sans-I/O reading protocol every map parser uses.

Rules:

* Nothing under ``mtkfs/maps/`` does I/O or imports trio. A parser that must look at the device
  (GPT, an EBR chain) is a *generator*: it yields :class:`Need` ("give me these bytes of this
  region") and receives the bytes back through ``send``. Short answers mean the region ended.
  The caller — :func:`run_reader` for in-memory bytes, ``mtkfs.discover`` for a live transport —
  does the reading. This keeps every parser a pure function of the bytes it saw, which is what
  makes them testable against hostile input (and fuzzable).
* A :class:`Partition` is a byte range of a :class:`Region`. Offsets and sizes are bytes, never
  sectors, once they leave a parser: sector sizes differ (512 eMMC, 4096 UFS) and mixing them is
  the classic bug of this field.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Region:
    """One addressable flash area: ``user``, ``boot1``, ``boot2``, ``rpmb``, ``lu0``, ``flash``."""

    name: str
    size_bytes: int


@dataclass(frozen=True)
class Partition:
    """A named byte range of one region, as a map declares it.

    Attributes:
        name: cleaned, unique name (see :mod:`mtkfs.maps.names`); the mount shows ``<name>.img``.
        region: the region it lives in.
        offset_bytes: start within the region.
        size_bytes: size *as exposed*: clamped to the region when the map overshoots it.
        declared_size_bytes: size as the map declares it, before clamping.
        number: the partition's number in its table (GPT entry index, Linux ``pN``), if any.
        origin: which table produced it (``gpt``, ``gpt-backup``, ``mbr``, ``ebr``…).
        exposed: False when nothing of it exists in the source (it lies past the image's end);
            such partitions are listed with a warning but never shown as files of zeros.
        warnings: human-readable problems found with this entry.
        extra: table-specific facts kept for ``map.json`` (type GUID, MBR type byte, …).
    """

    name: str
    region: str
    offset_bytes: int
    size_bytes: int
    declared_size_bytes: int | None = None
    number: int | None = None
    origin: str = ""
    exposed: bool = True
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def end_bytes(self) -> int:
        """First byte after the partition (exclusive end)."""
        return self.offset_bytes + self.size_bytes

    def with_warning(self, message: str) -> Partition:
        """A copy carrying one more warning."""
        return replace(self, warnings=(*self.warnings, message))


@dataclass(frozen=True)
class PartitionMap:
    """The resolved partitions of a source plus how they were found.

    Attributes:
        partitions: in table order.
        origin: human description of the table used (``GPT (primary, 512-byte sectors)``).
        warnings: problems that concern the table as a whole.
    """

    partitions: tuple[Partition, ...]
    origin: str
    warnings: tuple[str, ...] = ()

    def by_name(self, name: str) -> Partition:
        """The partition called ``name`` (KeyError if none)."""
        for part in self.partitions:
            if part.name == name:
                return part
        raise KeyError(name)


@dataclass(frozen=True)
class Need:
    """A parser's request: ``size_bytes`` bytes of ``region`` starting at ``offset_bytes``.

    The answer may be shorter than asked when the region ends (a truncated image).
    """

    region: str
    offset_bytes: int
    size_bytes: int


#: A map parser: yields what it needs to see, receives those bytes, returns the map.
MapReader = Generator[Need, bytes, PartitionMap]


def run_reader(reader: MapReader, read: Callable[[Need], bytes]) -> PartitionMap:
    """Drive a map parser with a synchronous ``read`` (tests, ``--map FILE``)."""
    try:
        need = next(reader)
        while True:
            need = reader.send(read(need))
    except StopIteration as stop:
        result: PartitionMap = stop.value
        return result


def reader_from_bytes(regions: Mapping[str, bytes]) -> Callable[[Need], bytes]:
    """A ``read`` callable over in-memory regions, for :func:`run_reader`."""

    def read(need: Need) -> bytes:
        data = regions.get(need.region, b"")
        if need.offset_bytes < 0 or need.size_bytes < 0:
            return b""
        return data[need.offset_bytes : need.offset_bytes + need.size_bytes]

    return read


def clamp_to_region(part: Partition, region_size_bytes: int, *, quiet: bool = False) -> Partition:
    """Fit a declared partition into a region that may be shorter than the table says.

    Why: readback images are often truncated (the user stopped the readback early, or read only
    part of the chip). A partition that starts past the end is kept in the map — the user must
    learn it is missing — but marked ``exposed=False`` so the mount never invents zeros for it.
    One that runs past the end is cut at the end and flagged. ``quiet`` clamps without a warning,
    for tables that legitimately say "to the end of the device" (MTK's 0xFFFFFFFF sizes).
    """
    declared = part.size_bytes if part.declared_size_bytes is None else part.declared_size_bytes
    part = replace(part, declared_size_bytes=declared)
    if part.offset_bytes >= region_size_bytes:
        return replace(
            part,
            size_bytes=0,
            exposed=False,
            warnings=(
                *part.warnings,
                f"missing: starts at byte {part.offset_bytes:#x} but {part.region} ends at "
                f"{region_size_bytes:#x} (truncated image?); not exposed",
            ),
        )
    if part.offset_bytes + declared > region_size_bytes:
        available = region_size_bytes - part.offset_bytes
        part = replace(part, size_bytes=available)
        if not quiet:
            part = part.with_warning(
                f"truncated: {part.region} ends {available:#x} bytes into this partition "
                f"(declared {declared:#x}); only those bytes are exposed"
            )
    return part


#: Readback files that hold each region, for messages about a region the source lacks.
_REGION_FILES = {
    "boot1": "Boot1 / mmcblk0boot0.img",
    "boot2": "Boot2 / mmcblk0boot1.img",
    "rpmb": "RPMB / mmcblk0rpmb.img",
    "user": "User / mmcblk0.img",
}


def place(part: Partition, regions: Mapping[str, Region], *, quiet: bool = False) -> Partition:
    """Fit a partition from a map into the regions the source actually has.

    Text maps (dumchar_info, scatter files, MTD lists) name regions the source may not have: a
    user-area readback alone has no ``boot1`` for the preloader row. Such partitions stay in the
    map, marked ``exposed=False`` with a warning that says which file would provide them. The rest
    go through :func:`clamp_to_region`.
    """
    region = regions.get(part.region)
    if region is None:
        have = ", ".join(sorted(regions)) or "none"
        where = _REGION_FILES.get(part.region)
        hint = f" (add the {where} readback)" if where else ""
        return replace(
            part,
            declared_size_bytes=part.size_bytes
            if part.declared_size_bytes is None
            else part.declared_size_bytes,
            size_bytes=0,
            exposed=False,
            warnings=(
                *part.warnings,
                f"missing: lives in region {part.region}, which this source does not have "
                f"(it has: {have}){hint}; not exposed",
            ),
        )
    return clamp_to_region(part, region.size_bytes, quiet=quiet)


#: MTK's "reserved from the end of the region" start addresses: 0xFFFF0000 | n, n × 128 KiB.
RESERVED_MARKER_MASK = 0xFFFF0000
RESERVED_BLOCK_BYTES = 0x20000


def is_reserved_marker(address: int) -> bool:
    """True for MTK's 0xFFFFnnnn start addresses (bmtpool, otp, sgpt, flashinfo…)."""
    return address & 0xFFFFFFFF_FFFF0000 == RESERVED_MARKER_MASK


def reserved_size_bytes(address: int) -> int:
    """How many bytes before the region's end a 0xFFFFnnnn marker reserves (nnnn × 128 KiB)."""
    return (address & 0xFFFF) * RESERVED_BLOCK_BYTES
