"""``scatter.txt`` and ``Checksum.ini`` in the mount root: the folder SP Flash Tool expects.

Why generated: users turn readbacks into flashable folders by hand (seed 001: a scatter written
line by line, checksums computed with a hex editor). The mount already knows the map, so it can
write both files — from the same code (:mod:`mtkfs.maps.scatter`, :mod:`mtkfs.maps.checksum`) that
``mtkfs export-rom`` will use.

Cost model: ``scatter.txt`` needs the file-system type of each partition (EXT4_IMG vs NORMAL_ROM),
which costs one small read per partition; it is rendered on first ``stat``/``open`` and kept (the
mount is read-only, so it cannot go stale). ``Checksum.ini`` needs a 16-bit byte sum over every
*downloadable* partition — whole partitions, gigabytes — so it is computed only when the file is
first opened, once, and kept. Its size is known without computing it (every value is written as
exactly four hex digits), so ``ls -l`` never triggers the work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import trio

from mtkfs.cache import ChunkCache
from mtkfs.generated import Generated
from mtkfs.maps.checksum import ByteSum16, write_checksum_ini
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.maps.scatter import parse_scatter, write_scatter
from mtkfs.volume import Volume

log = logging.getLogger(__name__)

#: ext2/3/4 superblock magic 0xEF53, little-endian at byte 0x438 of the partition (seed 004's
#: "53 ef at 0x438" check).
_EXT4_MAGIC_OFFSET = 0x438
_EXT4_MAGIC = b"\x53\xef"
#: Bytes summed per cache read while computing checksums.
_SUM_STEP_BYTES = 4 << 20
#: An eMMC boot partition starts with a 2 KiB ``EMMC_BOOT`` header; SP Flash Tool's SV5_BL_BIN
#: preloader image is what follows it (seed 001: ``dd bs=512 skip=4 if=Boot1 of=preboot.img``).
_EMMC_BOOT_HEADER_BYTES = 2048
#: The file name the generated scatter gives the preloader.
PRELOADER_BIN = "preloader.bin"


async def fs_types(pmap: PartitionMap, cache: ChunkCache) -> dict[str, str]:
    """``{name: "ext4"}`` for the exposed partitions that hold an ext2/3/4 file system."""
    found: dict[str, str] = {}
    for part in pmap.partitions:
        if not part.exposed or part.size_bytes < _EXT4_MAGIC_OFFSET + 2:
            continue
        magic = await cache.read(part.region, part.offset_bytes + _EXT4_MAGIC_OFFSET, 2)
        if magic == _EXT4_MAGIC:
            found[part.name] = "ext4"
    return found


async def preloader_image(pmap: PartitionMap, cache: ChunkCache) -> Volume | None:
    """The SV5_BL_BIN view of the preloader: its boot area without the ``EMMC_BOOT`` header.

    Shown as ``preloader.bin`` next to ``scatter.txt`` so the scatter's file exists and
    ``Checksum.ini`` sums the bytes SP Flash Tool would load. None when there is no preloader
    with such a header (the raw ``preloader.img`` must never be flashed as the preloader).
    """
    for part in pmap.partitions:
        if part.name == "preloader" and part.exposed and part.offset_bytes == 0:
            head = await cache.read(part.region, 0, 9)
            if head == b"EMMC_BOOT" and part.size_bytes > _EMMC_BOOT_HEADER_BYTES:
                return Volume(
                    PRELOADER_BIN,
                    part.region,
                    _EMMC_BOOT_HEADER_BYTES,
                    part.size_bytes - _EMMC_BOOT_HEADER_BYTES,
                )
    return None


def downloadable(pmap: PartitionMap, regions: Mapping[str, Region]) -> list[Partition]:
    """Exposed partitions the generated scatter marks ``is_download: true``, in map order.

    Derived by parsing our own scatter back: one source of truth for the download rules.
    """
    flags = {
        p.name: bool(p.extra.get("is_download"))
        for p in parse_scatter(write_scatter(pmap, regions), regions).partitions
    }
    return [p for p in pmap.partitions if p.exposed and flags.get(p.name)]


class ScatterFile(Generated):
    """``scatter.txt``: rendered on first look, then fixed."""

    def __init__(self, pmap: PartitionMap, regions: Mapping[str, Region], cache: ChunkCache):
        self.pmap = pmap
        self.regions = regions
        self.cache = cache
        self._text: bytes | None = None
        self._lock = trio.Lock()

    def size_bytes(self) -> int | None:
        return None if self._text is None else len(self._text)

    async def render(self) -> bytes:
        async with self._lock:
            if self._text is None:
                types = await fs_types(self.pmap, self.cache)
                self._text = write_scatter(self.pmap, self.regions, fs_types=types).encode()
            return self._text


class ChecksumFile(Generated):
    """``Checksum.ini``: SP Flash Tool's 16-bit byte sums of the downloadable partitions.

    Each value sums the file the scatter names: ``<name>.img``, and for the preloader
    ``preloader.bin`` (see :func:`preloader_image`); a preloader without that file is left out.
    """

    def __init__(
        self,
        pmap: PartitionMap,
        regions: Mapping[str, Region],
        cache: ChunkCache,
        preloader_bin: Volume | None,
    ):
        self.cache = cache
        self.parts: list[Partition | Volume] = []
        for part in downloadable(pmap, regions):
            if part.name == "preloader":
                if preloader_bin is not None:
                    self.parts.append(replace(preloader_bin, name="preloader"))
            else:
                self.parts.append(part)
        placeholder = write_checksum_ini({p.name: 0 for p in self.parts}).encode()
        self._size_bytes = len(placeholder)
        self._text: bytes | None = None
        self._lock = trio.Lock()

    def size_bytes(self) -> int:
        return self._size_bytes

    async def render(self) -> bytes:
        async with self._lock:
            if self._text is None:
                sums = {p.name: await self._sum(p) for p in self.parts}
                self._text = write_checksum_ini(sums).encode()
                if len(self._text) != self._size_bytes:
                    raise AssertionError("Checksum.ini size changed after computing it")
            return self._text

    async def _sum(self, part: Partition | Volume) -> int:
        log.info("Checksum.ini: summing %s (%d bytes)", part.name, part.size_bytes)
        total = ByteSum16()
        for offset in range(0, part.size_bytes, _SUM_STEP_BYTES):
            size = min(_SUM_STEP_BYTES, part.size_bytes - offset)
            total.update(await self.cache.read(part.region, part.offset_bytes + offset, size))
        return total.value
