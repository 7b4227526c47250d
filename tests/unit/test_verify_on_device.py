"""How a write is verified on the device: its checksum command, else its hash of the range,
else a read-back — and a disagreement of any of them is a VerifyError naming the range."""

from __future__ import annotations

import hashlib
import zlib

import pytest

from mtkfs.commit import verify_on_device
from mtkfs.errors import VerifyError
from mtkfs.maps.model import Region
from mtkfs.transports.base import Transport


class Device(Transport):
    """Holds ``stored``; answers by CRC, by hash or by bytes as configured, counting each."""

    def __init__(self, stored: bytes, *, crc: bool = False, hash_name: str | None = None):
        self.regions = {"user": Region("user", len(stored))}
        self.device_id = self.description = "test device"
        self.chunk_bytes, self.mtime_s = 4096, 0.0
        self.stored, self.has_checksum, self.hash_name = stored, crc, hash_name
        self.asked: list[str] = []

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        self.asked.append("read")
        return self.stored[offset_bytes : offset_bytes + size_bytes]

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        self.asked.append("crc")
        return zlib.crc32(self.stored[offset_bytes : offset_bytes + size_bytes])

    async def digest(
        self, region: str, offset_bytes: int, size_bytes: int
    ) -> tuple[str, bytes] | None:
        self.asked.append("digest")
        if self.hash_name is None:
            return None
        data = self.stored[offset_bytes : offset_bytes + size_bytes]
        return self.hash_name, hashlib.new(self.hash_name, data).digest()

    async def aclose(self) -> None:
        pass


NEW = bytes(range(256)) * 16


@pytest.mark.parametrize(
    ("device", "asked"),
    [
        (Device(NEW, crc=True), ["crc"]),
        (Device(NEW, hash_name="sha256"), ["digest"]),
        (Device(NEW, hash_name="md5"), ["digest"]),
        (Device(NEW), ["digest", "read"]),
    ],
    ids=["checksum", "sha256", "md5", "read-back"],
)
async def test_each_way_accepts_the_right_bytes_and_asks_once(
    device: Device, asked: list[str]
) -> None:
    await verify_on_device(device, "user", 0, NEW)
    assert device.asked == asked


@pytest.mark.parametrize("hash_name", [None, "sha256", "md5"])
async def test_one_flipped_bit_is_caught_whichever_way(hash_name: str | None) -> None:
    stored = bytearray(NEW)
    stored[1000] ^= 0x10
    device = Device(bytes(stored), hash_name=hash_name)
    with pytest.raises(VerifyError, match=r"user\+0x0"):
        await verify_on_device(device, "user", 0, NEW)
