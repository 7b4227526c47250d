"""Wiring: open the source, find the map, build the tree, serve FUSE until unmounted.

Orchestration only (DESIGN.md): no parsing, no protocol, no errno decisions. Lifecycle:

1. open the transport and a chunk cache over it;
2. discover the partition map (through the cache);
3. build the inode tree and the pyfuse3 ``Operations``;
4. ``pyfuse3.init`` (this is the moment the mount appears) and tell the caller we are ready;
5. serve until the kernel unmounts us or SIGTERM/SIGINT/SIGHUP arrives — then unmount cleanly,
   so a stopped daemon never leaves a dead ``Transport endpoint is not connected`` mount behind.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from mtkfs import __version__
from mtkfs.cache import ChunkCache
from mtkfs.discover import discover_map
from mtkfs.errors import MountpointError, UsageError
from mtkfs.fuse.ops import MtkfsOperations
from mtkfs.fuse.tree import ROOT_INODE, Tree
from mtkfs.generated import Generated, Live, Static
from mtkfs.maps.model import PartitionMap, Region
from mtkfs.maps.report import map_report
from mtkfs.romfiles import PRELOADER_BIN, ChecksumFile, ScatterFile, preloader_image
from mtkfs.transports import open_transport
from mtkfs.transports.base import Transport
from mtkfs.volume import Volume

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 256 << 20

#: ``-o`` options we accept, and what becomes of them.
_PASSTHROUGH_OPTIONS = frozenset({"allow_other", "default_permissions"})


@dataclass(frozen=True)
class MountConfig:
    """Everything ``mtkfs mount`` was asked for.

    Attributes:
        source: the SOURCE argument (a PATH for now).
        mountpoint: absolute path of the mountpoint.
        options: ``-o`` options, already split.
        map_files: ``--map FILE`` (repeatable).
        no_map: ``--no-map``: show the whole regions only.
        cache_bytes: ``--cache-size``.
    """

    source: str
    mountpoint: Path
    options: tuple[str, ...] = ()
    map_files: tuple[Path, ...] = ()
    no_map: bool = False
    cache_bytes: int = DEFAULT_CACHE_BYTES
    log_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def fuse_options(options: tuple[str, ...], source_id: str) -> set[str]:
    """The libfuse option set for ``pyfuse3.init``; refuses what this version cannot honour."""
    # fsname shows in `mount` and `df`; only safe characters (a comma would split the options).
    label = re.sub(r"[^A-Za-z0-9._+:-]", "_", source_id.rsplit("/", 1)[-1])[:64]
    result = {"ro", f"fsname=mtkfs:{label}", "subtype=mtkfs"}
    for option in options:
        if option in ("", "ro"):
            continue
        if option == "rw":
            raise UsageError(
                "read-write mounts (-o rw) are not available in this version of mtkfs; "
                "mount read-only (the default)"
            )
        if option not in _PASSTHROUGH_OPTIONS:
            allowed = ", ".join(sorted({"ro", *_PASSTHROUGH_OPTIONS}))
            raise UsageError(f"unknown mount option -o {option} (supported: {allowed})")
        result.add(option)
    if "allow_other" in result:
        # Other users then reach the files; let the kernel enforce the modes we report.
        result.add("default_permissions")
    log.debug("fuse options for %s: %s", source_id, sorted(result))
    return result


def _dead_mount(mountpoint: Path) -> MountpointError:
    return MountpointError(
        f"{mountpoint} is a dead FUSE mount (its daemon is gone); clean it up with: "
        f"mtkfs umount {mountpoint}"
    )


def check_mountpoint(mountpoint: Path) -> None:
    """Refuse a missing, non-directory, already mounted or dead (stale FUSE) mountpoint."""
    try:
        st = mountpoint.stat()
    except FileNotFoundError as exc:
        raise MountpointError(
            f"mountpoint {mountpoint} does not exist; create it first: mkdir -p {mountpoint}"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise _dead_mount(mountpoint) from exc
        raise MountpointError(f"mountpoint {mountpoint}: {exc.strerror}") from exc
    if not mountpoint.is_dir():
        raise MountpointError(f"mountpoint {mountpoint} is not a folder")
    if os.path.ismount(mountpoint):
        try:
            # stat() may be answered from the kernel's attribute cache even when the daemon
            # is gone; listing the folder reaches the daemon and tells a dead mount apart.
            os.listdir(mountpoint)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise _dead_mount(mountpoint) from exc
        raise MountpointError(
            f"{mountpoint} is already a mount point; unmount it first (mtkfs umount "
            f"{mountpoint}) or choose another folder"
        )
    if st.st_uid != os.getuid() and os.getuid() != 0:
        raise MountpointError(f"mountpoint {mountpoint} belongs to another user")


def build_tree(
    transport: Transport,
    pmap: PartitionMap,
    control: dict[str, Generated],
    root_files: dict[str, Generated | Volume] | None = None,
) -> Tree:
    """The mount's layout (see :mod:`mtkfs.fuse.tree`)."""
    tree = Tree()
    for part in pmap.partitions:
        if part.exposed and part.size_bytes > 0:
            volume = Volume(part.name, part.region, part.offset_bytes, part.size_bytes)
            tree.add_volume(ROOT_INODE, f"{part.name}.img", volume)
    regions_dir = tree.add_dir(ROOT_INODE, "regions")
    for region in transport.regions.values():
        volume = Volume(region.name, region.name, 0, region.size_bytes)
        tree.add_volume(regions_dir.inode, f"{region.name}.img", volume)
    for name, content in (root_files or {}).items():
        if isinstance(content, Volume):
            tree.add_volume(ROOT_INODE, name, content)
        else:
            tree.add_control(ROOT_INODE, name, content)
    control_dir = tree.add_dir(ROOT_INODE, ".mtkfs")
    for name, content in control.items():
        tree.add_control(control_dir.inode, name, content)
    return tree


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


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


async def serve(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Mount ``config.source`` at ``config.mountpoint`` and serve until unmounted."""
    check_mountpoint(config.mountpoint)
    transport = open_transport(config.source)
    try:
        options = fuse_options(config.options, transport.device_id)
        cache = ChunkCache(
            transport, chunk_bytes=transport.chunk_bytes, max_bytes=config.cache_bytes
        )
        if config.no_map:
            pmap = PartitionMap((), "none (--no-map)")
        else:
            pmap = await discover_map(transport.regions, cache.read, map_files=config.map_files)
        for warning in pmap.warnings:
            log.warning("%s", warning)
        for part in pmap.partitions:
            for warning in part.warnings:
                log.warning("%s: %s", part.name, warning)
        report = map_report(transport.description, transport.regions.values(), pmap)
        started_s = time.time()

        def status() -> bytes:
            return _json_bytes(
                {
                    "version": __version__,
                    "pid": os.getpid(),
                    "state": "mounted",
                    "read_only": True,
                    "source": transport.description,
                    "mountpoint": str(config.mountpoint),
                    "started": started_s,
                    "partitions": sum(1 for p in pmap.partitions if p.exposed),
                    "log": str(config.log_file) if config.log_file else None,
                    "cache": {
                        "chunk_bytes": cache.chunk_bytes,
                        "max_bytes": cache.max_bytes,
                        "cached_bytes": cache.cached_bytes,
                        **vars(cache.stats),
                    },
                    "warnings": report["warnings"]
                    + [f"{p['name']}: {w}" for p in report["partitions"] for w in p["warnings"]],
                }
            )

        map_json = _json_bytes(report)
        tree = build_tree(
            transport,
            pmap,
            {"map.json": Static(map_json), "status.json": Live(status)},
            await rom_files(pmap, transport.regions, cache),
        )
        ops = MtkfsOperations(tree, cache, mtime_s=transport.mtime_s)
        try:
            pyfuse3.init(ops, str(config.mountpoint), options)
        except RuntimeError as exc:
            raise MountpointError(f"cannot mount at {config.mountpoint}: {exc}") from exc
        log.info("mounted %s at %s", transport.description, config.mountpoint)
        try:
            on_ready()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            # Always unmount: a daemon that exits (signal, error) must not leave a dead mount.
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", config.mountpoint)
    finally:
        await transport.aclose()


async def _stop_on_signal() -> None:
    """SIGTERM/SIGINT/SIGHUP end the FUSE loop; ``serve`` then unmounts cleanly."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return
