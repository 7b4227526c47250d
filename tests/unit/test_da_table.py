"""The partition table a DA reports itself (XML READ-PARTITION-TABLE) cross-checks the one
mtkfs reads from the flash: agreement is silent, every difference is a warning that names both
sides, and with no table on the flash the DA's is used (said so)."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

from mtkfs.discover import discover_map
from mtkfs.protocols.dafile import parse_da_file
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.gpt_write import GptPartition, write_gpt
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_xflash import MemoryStore
from mtkfs.testing.sim_xml import XmlSim
from mtkfs.testing.simlink import GeneratorLink
from mtkfs.transports.da import DaTransport

MiB = 1 << 20
DA = parse_da_file(build_for_codes([0x6833], v6=True), "MTK_DA_V6.bin")
PARTS = (GptPartition("nvram", 1 * MiB, 4 * MiB), GptPartition("system_a", 5 * MiB, 16 * MiB))


def gpt_lu(parts: tuple[GptPartition, ...], size_bytes: int = 64 * MiB) -> bytes:
    """A user LU with a GPT in 4096-byte sectors (written by the fixture writer)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lu2"
        with path.open("wb") as f:
            f.truncate(size_bytes)
        write_gpt(path, parts, sector_bytes=4096, key="test")
        return path.read_bytes()


async def transport_with(table: tuple[tuple[str, int, int], ...], lu2: bytes) -> DaTransport:
    store = MemoryStore.from_bytes({"lu0": b"\0" * MiB, "lu1": b"\0" * MiB, "lu2": lu2}, kind="ufs")
    xml = XmlSim(store, partition_table=table)
    brom = SimBrom(hw_code=0x0989, da_device=lambda da: xml.serve())
    return await DaTransport.connect(GeneratorLink(brom.run()), DA)


async def test_agreeing_tables_give_no_warning() -> None:
    rows = tuple((p.name, p.offset_bytes, p.size_bytes) for p in PARTS)
    transport = await transport_with(rows, gpt_lu(PARTS))
    table = await transport.device_table()
    assert table is not None and [p.name for p in table.partitions] == ["nvram", "system_a"]
    pmap = await discover_map(transport.regions, transport.read, device_table=table)
    assert "4096-byte sectors" in pmap.origin
    assert pmap.warnings == ()
    await transport.aclose()


async def test_a_disagreeing_da_table_is_a_warning_naming_both() -> None:
    rows = (("nvram", 1 * MiB, 4 * MiB), ("system_a", 6 * MiB, 15 * MiB), ("extra", 0, MiB))
    transport = await transport_with(rows, gpt_lu(PARTS))
    pmap = await discover_map(
        transport.regions, transport.read, device_table=await transport.device_table()
    )
    text = "\n".join(pmap.warnings)
    assert "system_a" in text and "0x600000" in text and "READ-PARTITION-TABLE" in text
    assert "extra" in text and "not shown" in text
    assert [p.name for p in pmap.partitions] == ["nvram", "system_a"]  # the flash's table wins
    await transport.aclose()


async def test_without_a_table_on_the_flash_the_das_is_used() -> None:
    rows = (("nvram", 1 * MiB, 4 * MiB), ("bad/../name", 8 * MiB, MiB))
    transport = await transport_with(rows, bytes(64 * MiB))
    pmap = await discover_map(
        transport.regions, transport.read, device_table=await transport.device_table()
    )
    assert [p.name for p in pmap.partitions] == ["nvram", "bad_.._name"]
    assert all("/" not in p.name for p in pmap.partitions)  # device text never a path
    assert any("using READ-PARTITION-TABLE" in w for w in pmap.warnings)
    await transport.aclose()


def test_gpt_writer_crc_is_valid() -> None:
    lu = gpt_lu(PARTS)
    header = lu[4096 : 4096 + 92]
    stored = struct.unpack_from("<I", header, 16)[0]
    assert zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:]) == stored
