"""What a mount shows: the inode tree, and the JSON files that describe the mount.

Kept out of ``daemon.py`` (which only orchestrates the lifecycle) so that the layout — which
files exist, what ``status.json`` and ``stats.json`` say — is one readable place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from mtkfs import __version__
from mtkfs.cache import ChunkCache
from mtkfs.commit import WriteBack
from mtkfs.content.detect import Detected
from mtkfs.content.scan import ScanStats
from mtkfs.content.views import ViewState, add_view, parser_for
from mtkfs.fuse.tree import ROOT_INODE, Tree
from mtkfs.generated import Generated, Live, Static
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.maps.report import map_report
from mtkfs.romfiles import PRELOADER_BIN, ChecksumFile, ScatterFile, preloader_image
from mtkfs.transports.base import Transport
from mtkfs.volume import TABLES, Guard, Volume, is_never_writable, is_protected


def json_bytes(data: Mapping[str, Any]) -> bytes:
    """Pretty JSON with a trailing newline (these files are read by people too)."""
    return (json.dumps(data, indent=2) + "\n").encode()


async def rom_files(
    pmap: PartitionMap, regions: Mapping[str, Region], cache: ChunkCache
) -> dict[str, Generated | Volume]:
    """``scatter.txt``, ``Checksum.ini`` and ``preloader.bin`` for eMMC/UFS maps (SP Flash
    Tool has no use for them on a NOR/NAND MTD map or with ``--no-map``)."""
    if not any(p.region != "flash" for p in pmap.partitions):
        return {}
    preloader_bin = await preloader_image(pmap, cache)
    files: dict[str, Generated | Volume] = {
        "scatter.txt": ScatterFile(pmap, regions, cache),
        "Checksum.ini": ChecksumFile(pmap, regions, cache, preloader_bin),
    }
    if preloader_bin is not None:
        files[PRELOADER_BIN] = preloader_bin
    return files


def _gaps(parts: list[Partition], region_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of a region covered by none of ``parts``."""
    gaps = []
    position = 0
    for part in sorted(parts, key=lambda p: p.offset_bytes):
        if part.offset_bytes > position:
            gaps.append((position, part.offset_bytes))
        position = max(position, part.offset_bytes + part.size_bytes)
    if position < region_bytes:
        gaps.append((position, region_bytes))
    return gaps


def partition_lock(name: str, unlock: Collection[str]) -> str | None:
    """Why writes to partition ``name`` are refused, or None if they are allowed."""
    if is_never_writable(name):
        return f"{name}: RPMB is authenticated storage and is never written by mtkfs"
    if is_protected(name) and name not in unlock:
        return (
            f"{name} is a protected partition (a mistake here can brick the device or lose "
            f"its calibration); add --unlock {name} if you really mean to write it"
        )
    return None


class MountView:
    """The files of one mount over ``transport`` with map ``pmap``.

    ``writeback`` is the write pipeline of an rw mount; ``unlock`` and ``unlock_regions`` are
    the user's ``--unlock NAME`` and ``--unlock-regions``.
    """

    def __init__(
        self,
        mountpoint: Path,
        log_file: Path | None,
        transport: Transport,
        cache: ChunkCache,
        pmap: PartitionMap,
        *,
        writeback: WriteBack | None = None,
        unlock: Collection[str] = (),
        unlock_regions: bool = False,
        contents: Mapping[str, Detected] | None = None,
        detect_stats: ScanStats | None = None,
    ) -> None:
        self.mountpoint = mountpoint
        self.log_file = log_file
        self.transport = transport
        self.cache = cache
        self.pmap = pmap
        self.writeback = writeback
        self.unlock = frozenset(unlock)
        self.unlock_regions = unlock_regions
        self.contents = dict(contents or {})
        self.report = map_report(
            transport.description, transport.regions.values(), pmap, self.contents
        )
        self.started_s = time.time()
        self.views: dict[str, ViewState] = {}
        self.detect_stats = detect_stats or ScanStats()

    async def build_tree(self) -> Tree:
        """Partition files, ``regions/``, SP Flash Tool files, ``.mtkfs/``."""
        tree = Tree()
        for part in self.pmap.partitions:
            if part.exposed and part.size_bytes > 0:
                volume = Volume(
                    part.name,
                    part.region,
                    part.offset_bytes,
                    part.size_bytes,
                    locked=partition_lock(part.name, self.unlock),
                )
                tree.add_volume(ROOT_INODE, f"{part.name}.img", volume)
                detected = self.contents.get(part.name)
                parse = None if detected is None else parser_for(detected.kind)
                if detected is not None and parse is not None:
                    self.views[part.name] = add_view(
                        tree, ROOT_INODE, volume, self.cache, detected.kind, parse
                    )
        regions_dir = tree.add_dir(ROOT_INODE, "regions")
        for region in self.transport.regions.values():
            tree.add_volume(regions_dir.inode, f"{region.name}.img", self._region_volume(region))
        for name, content in (
            await rom_files(self.pmap, self.transport.regions, self.cache)
        ).items():
            if isinstance(content, Volume):
                locked = f"{name} is a view for SP Flash Tool; write preloader.img instead"
                tree.add_volume(ROOT_INODE, name, dataclasses.replace(content, locked=locked))
            else:
                tree.add_control(ROOT_INODE, name, content)
        control = tree.add_dir(ROOT_INODE, ".mtkfs")
        tree.add_control(control.inode, "map.json", Static(json_bytes(self.report)))
        tree.add_control(control.inode, "status.json", Live(lambda: json_bytes(self.status())))
        tree.add_control(control.inode, "stats.json", Live(lambda: json_bytes(self.stats())))
        return tree

    def _region_volume(self, region: Region) -> Volume:
        """``regions/<name>.img``: writable only with --unlock-regions, never into a protected
        partition that was not unlocked, never RPMB."""
        locked = None
        if is_never_writable(region.name):
            locked = partition_lock(region.name, self.unlock)
        elif not self.unlock_regions:
            locked = (
                f"regions/{region.name}.img is a whole region (every partition in it); "
                "writes need --unlock-regions"
            )
        parts = [p for p in self.pmap.partitions if p.region == region.name and p.exposed]
        guards = [
            Guard(p.offset_bytes, p.offset_bytes + p.size_bytes, p.name)
            for p in parts
            if partition_lock(p.name, self.unlock) is not None
        ]
        if TABLES not in self.unlock and parts:
            guards += [Guard(a, b, TABLES) for a, b in _gaps(parts, region.size_bytes)]
        return Volume(region.name, region.name, 0, region.size_bytes, locked, tuple(guards))

    def writes_status(self) -> dict[str, Any] | None:
        """The ``writes`` part of status.json (None on a read-only mount)."""
        wb = self.writeback
        if wb is None:
            return None
        return {
            "dirty_bytes": wb.dirty_bytes,
            "dirty_chunks": wb.dirty_chunks,
            "max_dirty_bytes": wb.max_dirty_bytes,
            **vars(wb.stats),
            "failures": [f.as_dict() for f in wb.failures.values()],
            "journal": str(wb.journal.folder),
            "backup_session": wb.backup_session,
            "unlocked": sorted(self.unlock),
            "unlock_regions": self.unlock_regions,
        }

    def status(self) -> dict[str, Any]:
        """``.mtkfs/status.json``: what this mount is and whether it is healthy."""
        totals = self.cache.stats.total()
        failsafe = None if self.writeback is None else self.writeback.failsafe
        return {
            "version": __version__,
            "pid": os.getpid(),
            "state": "mounted" if failsafe is None else "failsafe",
            "read_only": self.writeback is None or failsafe is not None,
            "failsafe": failsafe,
            "writes": self.writes_status(),
            "source": self.transport.description,
            "device": self.transport.device_report(),
            "mountpoint": str(self.mountpoint),
            "started": self.started_s,
            "partitions": sum(1 for p in self.pmap.partitions if p.exposed),
            "views": {name: view.as_dict() for name, view in self.views.items()},
            "log": str(self.log_file) if self.log_file else None,
            "cache": {
                "chunk_bytes": self.cache.chunk_bytes,
                "max_bytes": self.cache.max_bytes,
                "cached_bytes": self.cache.cached_bytes,
                "hits": totals.hits,
                "misses": totals.misses,
                "transport_reads": totals.transport_reads,
                "transport_bytes": totals.transport_bytes,
            },
            "warnings": self.report["warnings"]
            + [f"{p['name']}: {w}" for p in self.report["partitions"] for w in p["warnings"]],
        }

    def stats(self) -> dict[str, Any]:
        """``.mtkfs/stats.json``: counters of the cache, the disk cache and the transport."""
        disk = self.cache.disk
        return {
            "cache": {
                "chunk_bytes": self.cache.chunk_bytes,
                "max_bytes": self.cache.max_bytes,
                "cached_bytes": self.cache.cached_bytes,
                **self.cache.stats.as_dict(),
            },
            "disk_cache": None
            if disk is None
            else {"directory": str(disk.directory), **vars(disk.stats)},
            "transport": self.transport.stats(),
            "detection": vars(self.detect_stats),
        }
