"""Detection samples kept in the cache dir: reused when the device agrees, read again otherwise."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.content.samples import FILE_NAME, SampleReader, decode, encode
from mtkfs.content.scan import ScanStats, detect_partitions
from mtkfs.diskcache import DiskCache
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.transports.base import Transport

KiB = 1 << 10
SIZE = 256 * KiB


class Device(Transport):
    """An in-memory flash that counts reads and, optionally, answers checksum commands."""

    def __init__(self, data: bytearray, *, checksums: bool = True) -> None:
        self.data = data
        self.regions = {"user": Region("user", len(data))}
        self.device_id = "memory:samples"
        self.description = "memory"
        self.chunk_bytes = 16 * KiB
        self.mtime_s = 0.0
        self.has_checksum = checksums
        self.reads = 0
        self.checksums = 0

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        self.reads += 1
        return bytes(self.data[offset_bytes : offset_bytes + size_bytes])

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        if not self.has_checksum:
            return None
        self.checksums += 1
        return zlib.crc32(self.data[offset_bytes : offset_bytes + size_bytes])

    async def aclose(self) -> None:
        return None


def layout() -> PartitionMap:
    return PartitionMap(
        (
            Partition("boot", "user", 0, 64 * KiB),
            Partition("system", "user", 64 * KiB, 128 * KiB),
            Partition("cache", "user", 192 * KiB, 64 * KiB),
        ),
        "test",
    )


def flash() -> bytearray:
    data = bytearray(b"\xff" * SIZE)
    data[0:8] = b"ANDROID!"
    data[64 * KiB + 0x438 : 64 * KiB + 0x43A] = b"\x53\xef"
    return data


async def detect_once(
    device: Device, root: Path, *, trust: bool = False
) -> tuple[dict[str, str], ScanStats]:
    disk = await DiskCache.open(
        root, device_id=device.device_id, chunk_bytes=device.chunk_bytes, regions=device.regions
    )
    try:
        stats = ScanStats()
        reader = SampleReader(device, disk, trust_disk=trust, stats=stats)
        await reader.load()
        found = await detect_partitions(device, layout(), reader=reader)
        return {name: d.kind for name, d in found.items()}, stats
    finally:
        await disk.aclose()


async def test_a_remount_revalidates_instead_of_reading(tmp_path: Path) -> None:
    device = Device(flash())
    first, stats = await detect_once(device, tmp_path)
    assert stats.reads == device.reads > 0 and stats.reused == 0
    reads = device.reads
    second, stats = await detect_once(device, tmp_path)
    assert second == first
    assert device.reads == reads  # nothing read again
    assert stats.reused == stats.revalidations == device.checksums == reads


async def test_a_changed_partition_is_read_again_and_detected_anew(tmp_path: Path) -> None:
    device = Device(flash())
    first, _ = await detect_once(device, tmp_path)
    assert first["cache"] == "erased"
    device.data[192 * KiB : 192 * KiB + 8] = b"ANDROID!"  # flashed between mounts
    second, stats = await detect_once(device, tmp_path)
    assert second["cache"] != "erased"
    assert stats.reads == 1  # only the sample that changed
    assert second["boot"] == first["boot"]


async def test_without_a_checksum_command_samples_are_read_again(tmp_path: Path) -> None:
    device = Device(flash(), checksums=False)
    await detect_once(device, tmp_path)
    reads = device.reads
    _, stats = await detect_once(device, tmp_path)
    assert device.reads == 2 * reads and stats.reused == 0
    _, stats = await detect_once(device, tmp_path, trust=True)  # --trust-cache
    assert device.reads == 2 * reads and stats.reused == reads


def spoil(root: Path, damage: str) -> None:
    """Damage the kept samples file by hand."""
    (path,) = root.glob(f"*/{FILE_NAME}")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    else:
        raw = bytearray(b"\x00garbage" * 10)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
async def test_a_damaged_samples_file_is_ignored(tmp_path: Path, damage: str) -> None:
    device = Device(flash())
    first, _ = await detect_once(device, tmp_path)
    spoil(tmp_path, damage)
    again, stats = await detect_once(device, tmp_path)
    assert again == first and stats.reused == 0 and stats.reads > 0


def test_round_trip() -> None:
    samples = {("user", 0, 4): b"abcd", ("boot1", 4096, 2): b"\x00\xff"}
    assert decode(encode(samples)) == samples


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_files_raise_value_error_only(raw: bytes) -> None:
    for payload in (raw, encode({("user", 0, 3): b"abc"})[:12] + raw):
        try:
            decode(payload)
        except (ValueError, UnicodeDecodeError):
            pass
