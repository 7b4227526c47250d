"""An MT65xx phone's MBR numbers its big partitions only (``p2``…``p8``); its kernel's
``/proc/dumchar_info`` names every partition and says which ``mmcblk0pN`` each is. When the two
agree on every range the MBR can check, the mount shows the phone's names (seed 000's
``bootimg``, ``recovery``, ``nvram``…); when they disagree the flash's table wins, with warnings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from mtkfs.discover import discover_map
from mtkfs.maps.dumchar import parse_dumchar
from mtkfs.maps.model import Region
from mtkfs.testing.disk import Layout
from mtkfs.testing.sim_adbd_root import dumchar_info, plan_nodes


def _pread(path: Path, offset_bytes: int, size_bytes: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset_bytes)
        return f.read(size_bytes)


def _reader(layout: Layout) -> Callable[[str, int, int], Awaitable[bytes]]:
    async def read(region: str, offset_bytes: int, size_bytes: int) -> bytes:
        return _pread(layout.regions[region], offset_bytes, size_bytes)

    return read


def _regions(layout: Layout) -> dict[str, Region]:
    return {name: Region(name, path.stat().st_size) for name, path in layout.regions.items()}


async def test_seed_000_dumchar_names_the_s650_mbr(s650: Layout) -> None:
    regions = _regions(s650)
    table = parse_dumchar(dumchar_info(plan_nodes(s650), s650), regions)
    pmap = await discover_map(regions, _reader(s650), device_table=table)
    names = [p.name for p in pmap.partitions]
    assert {"bootimg", "recovery", "nvram", "android", "usrdata", "preloader"} <= set(names)
    assert not any(n.startswith("p") and n[1:].isdigit() for n in names)
    android = next(p for p in pmap.partitions if p.name == "android")
    mbr_p5 = s650.by_name("p5")
    assert (android.offset_bytes, android.size_bytes) == (mbr_p5.offset_bytes, mbr_p5.size_bytes)
    assert any("agrees with the MBR" in w for w in pmap.warnings)


async def test_a_dumchar_that_disagrees_leaves_the_mbr_in_charge(s650: Layout) -> None:
    regions = _regions(s650)
    text = dumchar_info(plan_nodes(s650), s650).replace(
        "0x0000000040000000   0x0000000004380000", "0x0000000040000000   0x0000000004400000"
    )
    assert text != dumchar_info(plan_nodes(s650), s650)
    table = parse_dumchar(text, regions)
    pmap = await discover_map(regions, _reader(s650), device_table=table)
    assert "p5" in [p.name for p in pmap.partitions]
    assert any("android" in w and "0x4400000" in w for w in pmap.warnings)
