"""Recognise a map the user hands us (``--map FILE``) from its content, and parse it.

Why by content: users name these files anything (``MT6582_Android_scatter.txt``, ``dumchar.txt``,
``log.txt``, ``PGPT``), and a wrong guess from the name would quietly produce a wrong map.
Text formats are tried from the most to the least specific signature; binary files are partition
table images (a PGPT dump, the first MiBs of a user area, a PMT block) probed GPT → MBR → PMT
exactly as the device itself would be.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mtkfs.errors import NoMapError
from mtkfs.maps.dumchar import looks_like_dumchar, parse_dumchar
from mtkfs.maps.gpt import read_gpt
from mtkfs.maps.mbr import read_mbr
from mtkfs.maps.model import PartitionMap, Region, reader_from_bytes, run_reader
from mtkfs.maps.mtd import (
    looks_like_mtd_bootlog,
    looks_like_mtdparts,
    looks_like_proc_mtd,
    parse_mtd_bootlog,
    parse_mtdparts,
    parse_proc_mtd,
)
from mtkfs.maps.pmt import read_pmt
from mtkfs.maps.scatter import looks_like_scatter, parse_scatter

TextParser = Callable[[str, Mapping[str, Region]], PartitionMap]

#: (format name, recogniser, parser), most specific first.
TEXT_FORMATS: tuple[tuple[str, Callable[[str], bool], TextParser], ...] = (
    ("scatter", looks_like_scatter, parse_scatter),
    ("dumchar_info", looks_like_dumchar, parse_dumchar),
    ("MTD boot log", looks_like_mtd_bootlog, parse_mtd_bootlog),
    ("/proc/mtd", looks_like_proc_mtd, parse_proc_mtd),
    ("mtdparts", looks_like_mtdparts, parse_mtdparts),
)

KNOWN_FORMATS = (
    "a scatter file, /proc/dumchar_info, /proc/mtd, kernel boot-log MTD lines, an mtdparts= "
    "string, or a GPT/MBR/PMT image"
)


def is_text(data: bytes) -> bool:
    """Text maps are ASCII/UTF-8 without NUL bytes; table images are full of them."""
    head = data[:65536]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at 64 KiB is still text.
        return exc.start >= len(head) - 4
    return True


def table_region_of(regions: Mapping[str, Region]) -> Region | None:
    """Where on-flash tables live: ``user`` (eMMC), else a UFS phone's user LU (``lu2`` on
    MediaTek: LU0/LU1 hold the preloaders), else the only region, else none."""
    if "user" in regions:
        return regions["user"]
    if "lu2" in regions:
        return regions["lu2"]
    if len(regions) == 1:
        return next(iter(regions.values()))
    return None


def parse_table_image(data: bytes, region: Region, boot: Region | None) -> PartitionMap:
    """A binary partition-table image read as if it were the start of ``region``."""
    read = reader_from_bytes({region.name: data})
    for make in (read_gpt, read_mbr):
        try:
            return run_reader(make(region), read)
        except NoMapError:
            continue
    return run_reader(read_pmt(region, boot_region=boot), read)


def parse_map_bytes(data: bytes, regions: Mapping[str, Region]) -> tuple[str, PartitionMap]:
    """(format name, map) of a map file's content, for the regions of the source it describes."""
    if is_text(data):
        text = data.decode("utf-8", errors="replace")
        for name, looks_like, parse in TEXT_FORMATS:
            if looks_like(text):
                return name, parse(text, regions)
        raise NoMapError(f"not a partition map mtkfs knows; expected {KNOWN_FORMATS}")
    region = table_region_of(regions)
    if region is None:
        raise NoMapError("a partition table image needs a user region (User / mmcblk0.img)")
    try:
        return "table image", parse_table_image(data, region, regions.get("boot1"))
    except NoMapError as exc:
        raise NoMapError(f"no GPT, MBR or PMT in it; expected {KNOWN_FORMATS}") from exc
