"""Detection samples kept in the persistent cache, so a remount does not read them again.

Why: detection reads a few KiB per partition straight from the transport. Over a U-Boot
console that is one ``md`` dump per sample (seconds each), paid at every mount. With
``--cache-dir`` the samples are kept in the device's cache folder (``samples.bin``) and, at the
next mount, revalidated with the device's own checksum command (one short command each, the same
rule as for cached chunks) or taken as they are with ``--trust-cache``. A sample that fails
revalidation, or a transport without a checksum command, means a fresh read.

``samples.bin``: ``MAGIC``, then records (``<H`` region name length, name, ``<QII`` offset,
length, CRC-32 of the data, the data), then a CRC-32 of everything before it. Anything that does
not parse exactly is ignored as a whole: the samples are only a shortcut.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass

from mtkfs.diskcache import DiskCache
from mtkfs.errors import MtkfsError
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

FILE_NAME = "samples.bin"
MAGIC = b"MTKFSSM1"
_NAME_LEN = struct.Struct("<H")
_RECORD = struct.Struct("<QII")
_CRC = struct.Struct("<I")

SampleKey = tuple[str, int, int]  # region, offset in bytes, length in bytes


@dataclass
class ScanStats:
    """What detection cost: transport reads and bytes, and samples reused from the cache dir."""

    reads: int = 0
    bytes_read: int = 0
    reused: int = 0
    revalidations: int = 0


def encode(samples: dict[SampleKey, bytes]) -> bytes:
    """The ``samples.bin`` payload for ``samples``."""
    out = bytearray(MAGIC)
    for (region, offset, length), data in sorted(samples.items()):
        name = region.encode()
        if length != len(data):
            raise ValueError(f"sample {region}+{offset:#x}: {len(data)} bytes, not {length}")
        out += _NAME_LEN.pack(len(name)) + name
        out += _RECORD.pack(offset, length, zlib.crc32(data)) + data
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


def decode(payload: bytes) -> dict[SampleKey, bytes]:
    """Samples from a ``samples.bin`` payload; ValueError when it is not exactly one."""
    if len(payload) < len(MAGIC) + _CRC.size or not payload.startswith(MAGIC):
        raise ValueError("not a samples file")
    body, (crc,) = payload[: -_CRC.size], _CRC.unpack(payload[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise ValueError("samples file checksum mismatch")
    samples: dict[SampleKey, bytes] = {}
    at = len(MAGIC)
    while at < len(body):
        if at + _NAME_LEN.size > len(body):
            raise ValueError("truncated record")
        (name_len,) = _NAME_LEN.unpack_from(body, at)
        at += _NAME_LEN.size
        name = body[at : at + name_len].decode("ascii")
        at += name_len
        if at + _RECORD.size > len(body):
            raise ValueError("truncated record")
        offset, length, data_crc = _RECORD.unpack_from(body, at)
        at += _RECORD.size
        data = body[at : at + length]
        at += length
        if len(data) != length or zlib.crc32(data) != data_crc:
            raise ValueError(f"sample {name}+{offset:#x} is damaged")
        samples[(name, offset, length)] = data
    return samples


class SampleReader:
    """Reads detection samples: kept ones when the device still holds those bytes, else from
    the transport (counted in :attr:`stats`)."""

    def __init__(
        self,
        transport: Transport,
        disk: DiskCache | None = None,
        *,
        trust_disk: bool = False,
        stats: ScanStats | None = None,
    ) -> None:
        self.transport = transport
        self.disk = disk
        self.trust_disk = trust_disk
        self.stats = stats or ScanStats()
        self._kept: dict[SampleKey, bytes] = {}
        self._used: dict[SampleKey, bytes] = {}

    async def load(self) -> None:
        """Read the kept samples of an earlier session (if any)."""
        if self.disk is None:
            return
        payload = await self.disk.load_blob(FILE_NAME)
        if payload is None:
            return
        try:
            self._kept = decode(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            log.info("cache %s: %s unusable (%s); reading samples again", self.disk.directory,
                     FILE_NAME, exc)  # fmt: skip

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """``size_bytes`` at ``offset_bytes`` of ``region``."""
        key = (region, offset_bytes, size_bytes)
        kept = self._kept.get(key)
        if kept is not None and await self._still_valid(key, kept):
            self.stats.reused += 1
            self._used[key] = kept
            return kept
        data = await self.transport.read(region, offset_bytes, size_bytes)
        self.stats.reads += 1
        self.stats.bytes_read += size_bytes
        if len(data) == size_bytes:
            self._used[key] = data
        return data

    async def save(self) -> None:
        """Keep the samples read in this session for the next one (only when they changed)."""
        if self.disk is None or self._used == self._kept:
            return
        await self.disk.store_blob(FILE_NAME, encode(self._used))

    async def _still_valid(self, key: SampleKey, kept: bytes) -> bool:
        if self.trust_disk:
            return True
        if not self.transport.has_checksum:
            return False
        self.stats.revalidations += 1
        region, offset, size = key
        try:
            return await self.transport.checksum(region, offset, size) == zlib.crc32(kept)
        except MtkfsError as exc:
            log.info("%s+%#x: cannot revalidate a sample (%s); reading it", region, offset, exc)
            return False
