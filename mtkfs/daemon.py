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

import contextlib
import errno
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio

from mtkfs.commit import WriteBack
from mtkfs.content.samples import SampleReader
from mtkfs.content.scan import ScanStats, detect_partitions
from mtkfs.discover import discover_map
from mtkfs.diskcache import DiskCache
from mtkfs.errors import JournalPendingError, MountpointError, MtkfsError, UsageError
from mtkfs.fuse.ops import MtkfsOperations
from mtkfs.journal import Journal, default_journal_root
from mtkfs.maps.model import PartitionMap
from mtkfs.mounts import mount_entry
from mtkfs.mountview import MountView
from mtkfs.notify import Notifier
from mtkfs.session import open_chunk_cache, open_wrapped_transport
from mtkfs.transports import SourceOptions
from mtkfs.transports.base import Transport
from mtkfs.transports.linkmodel import LinkSpec
from mtkfs.volume import TABLES, is_never_writable

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 256 << 20
DEFAULT_MAX_DIRTY_BYTES = 64 << 20
DEFAULT_COMMIT_INTERVAL_S = 5.0

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
        log_file: ``--log``.
        link_model: ``--link-model``: charge a modelled link's latency and bandwidth (tests,
            benchmarks, and "what would this cost over USB/UART" experiments).
        cache_dir: ``--cache-dir``: persistent chunk store, so interrupted copies resume.
        trust_cache: ``--trust-cache``: use persisted chunks without asking the device.
        unlock: ``--unlock NAME``: protected partitions the user allows writes to.
        unlock_regions: ``--unlock-regions``: allow writes through ``regions/*.img``.
        max_dirty_bytes: ``--max-dirty``: written data held before writers wait for a commit.
        commit_interval_s: ``--commit-interval``: commit data dirty this long (0: only on
            fsync, close and unmount).
        journal_dir: ``--journal-dir`` (None: :func:`mtkfs.journal.default_journal_root`).
        inject_faults: hidden ``--inject-faults SPEC`` (tests; see mtkfs.testing.faults).
        source_options: ``--da``, ``--preloader``, ``--wait``, ``--io-timeout``: how to reach
            a phone.
    """

    source: str
    mountpoint: Path
    options: tuple[str, ...] = ()
    map_files: tuple[Path, ...] = ()
    no_map: bool = False
    cache_bytes: int = DEFAULT_CACHE_BYTES
    log_file: Path | None = None
    link_model: LinkSpec | None = None
    cache_dir: Path | None = None
    trust_cache: bool = False
    unlock: tuple[str, ...] = ()
    unlock_regions: bool = False
    max_dirty_bytes: int = DEFAULT_MAX_DIRTY_BYTES
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S
    journal_dir: Path | None = None
    inject_faults: str | None = None
    source_options: SourceOptions = field(default_factory=SourceOptions)

    @property
    def read_write(self) -> bool:
        """``-o rw`` was given."""
        return "rw" in self.options

    @property
    def journal_root(self) -> Path:
        """Where this mount's journal lives."""
        return self.journal_dir or default_journal_root()


def fuse_options(options: tuple[str, ...], source_id: str) -> set[str]:
    """The libfuse option set for ``pyfuse3.init``; refuses what this version cannot honour."""
    # fsname shows in `mount` and `df`; only safe characters (a comma would split the options).
    label = re.sub(r"[^A-Za-z0-9._+:-]", "_", source_id.rsplit("/", 1)[-1])[:64]
    if "rw" in options and "ro" in options:
        raise UsageError("-o ro and -o rw contradict each other; pick one")
    mode = "rw" if "rw" in options else "ro"
    result = {mode, f"fsname=mtkfs:{label}", "subtype=mtkfs"}
    for option in options:
        if option in ("", "ro", "rw"):
            continue
        if option not in _PASSTHROUGH_OPTIONS:
            allowed = ", ".join(sorted({"ro", "rw", *_PASSTHROUGH_OPTIONS}))
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


def open_journal(
    transport: Transport, config: MountConfig, stack: contextlib.AsyncExitStack
) -> Journal | None:
    """The journal of an rw mount (locked for the mount's life); refuses a device with
    unfinished journalled writes. A read-only mount only warns about those."""
    if not config.read_write:
        pending = Journal.peek(config.journal_root, transport.device_id)
        if pending:
            log.warning(
                "%s has %d unfinished journalled write(s); see `mtkfs journal show %s`",
                transport.description,
                len(pending),
                config.source,
            )
        return None
    journal = Journal.open(config.journal_root, transport.device_id, transport.description)
    stack.callback(journal.close)
    pending = journal.unfinished()
    if pending:
        parts = sorted({p for e in pending for p in e.partitions}) or ["?"]
        raise JournalPendingError(
            f"{transport.description} has {len(pending)} unfinished journalled write(s) from an "
            f"earlier mount (partitions: {', '.join(parts)}); it cannot be mounted read-write "
            f"until you decide: `mtkfs journal show {config.source}`, then `mtkfs journal "
            f"replay {config.source}` to finish them or `mtkfs journal rollback "
            f"{config.source}` to undo them"
        )
    return journal


def check_unlocks(config: MountConfig, pmap: PartitionMap) -> None:
    """``--unlock NAME`` must name a partition of this map, and never RPMB."""
    names = {p.name for p in pmap.partitions if p.exposed}
    for name in config.unlock:
        if name == TABLES:
            continue
        if is_never_writable(name):
            raise UsageError(f"--unlock {name}: RPMB is never writable through mtkfs")
        if name not in names:
            raise UsageError(
                f"--unlock {name}: this device has no partition of that name (it has: "
                f"{', '.join(sorted(names)) or 'none'}; and '{TABLES}' for the partition "
                "tables and unpartitioned space of regions/*.img)"
            )
    if (config.unlock or config.unlock_regions) and not config.read_write:
        log.warning("--unlock and --unlock-regions only matter with -o rw")


async def serve(
    config: MountConfig,
    on_ready: Callable[[], None],
    *,
    notifier: Notifier | None = None,
    until_gone: Callable[[], Awaitable[str]] | None = None,
) -> None:
    """Mount ``config.source`` at ``config.mountpoint`` and serve until unmounted.

    ``notifier``: systemd's notify socket (READY=1 once the mount answers, STATUS=, STOPPING=1,
    WATCHDOG=1); by default whatever ``$NOTIFY_SOCKET`` says, so ``mtkfs mount -f`` under a
    ``Type=notify`` unit works too. ``until_gone``: returns when the device has gone for
    good (``mtkfs service``); the mount is then taken down like on SIGTERM.
    """
    notifier = notifier or Notifier()
    check_mountpoint(config.mountpoint)
    notifier.status(f"opening {config.source}")
    async with contextlib.AsyncExitStack() as stack:
        transport = await open_wrapped_transport(
            config.source,
            stack,
            writable=config.read_write,
            options=config.source_options,
            inject_faults=config.inject_faults,
            link_model=config.link_model,
        )
        options = fuse_options(config.options, transport.device_id)
        journal = open_journal(transport, config, stack)
        cache = await open_chunk_cache(
            transport,
            stack,
            cache_dir=config.cache_dir,
            trust_cache=config.trust_cache,
            cache_bytes=config.cache_bytes,
        )
        pmap = await discover_map(
            transport.regions,
            cache.read,
            map_files=config.map_files,
            no_map=config.no_map,
            device_table=await transport.device_table(),
            probe_limit_bytes=transport.probe_limit_bytes,
        )
        check_unlocks(config, pmap)
        detect_stats = ScanStats()
        samples = SampleReader(
            transport, cache.disk, trust_disk=config.trust_cache, stats=detect_stats
        )
        await samples.load()
        contents = await detect_partitions(transport, pmap, reader=samples)
        for warning in pmap.warnings:
            log.warning("%s", warning)
        for part in pmap.partitions:
            for warning in part.warnings:
                log.warning("%s: %s", part.name, warning)
        writeback = None
        if journal is not None:
            writeback = WriteBack(
                cache,
                journal,
                max_dirty_bytes=config.max_dirty_bytes,
                partitions={
                    p.name: (p.region, p.offset_bytes, p.size_bytes)
                    for p in pmap.partitions
                    if p.exposed
                },
            )
        view = MountView(
            config.mountpoint,
            config.log_file,
            transport,
            cache,
            pmap,
            writeback=writeback,
            unlock=config.unlock,
            unlock_regions=config.unlock_regions,
            contents=contents,
            detect_stats=detect_stats,
        )
        tree = await view.build_tree()
        count = sum(1 for p in pmap.partitions if p.exposed)
        mounted = (
            f"mounted {count} partition{'s' if count != 1 else ''} of {transport.description} "
            f"at {config.mountpoint} ({'rw' if config.read_write else 'ro'})"
        )
        if writeback is not None:
            writeback.on_status = lambda text: notifier.status(f"{mounted}; {text}")
        ops = MtkfsOperations(tree, cache, mtime_s=transport.mtime_s, writeback=writeback)
        try:
            pyfuse3.init(ops, str(config.mountpoint), options)
        except RuntimeError as exc:
            raise MountpointError(f"cannot mount at {config.mountpoint}: {exc}") from exc
        log.info("mounted %s at %s", transport.description, config.mountpoint)
        try:
            async with trio.open_nursery() as nursery:
                cache.start(nursery)
                nursery.start_soon(_stop_on_signal, notifier)
                nursery.start_soon(
                    _when_serving, config.mountpoint, transport, on_ready, notifier, mounted
                )
                if notifier.watchdog_interval_s:
                    nursery.start_soon(_watchdog, notifier, notifier.watchdog_interval_s)
                if until_gone is not None:
                    nursery.start_soon(_stop_when_gone, until_gone, notifier)
                if cache.disk is not None:
                    nursery.start_soon(_flush_periodically, cache.disk)
                if writeback is not None and config.commit_interval_s > 0:
                    nursery.start_soon(_commit_periodically, writeback, config.commit_interval_s)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            # Always unmount: a daemon that exits (signal, error) must not leave a dead mount.
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", config.mountpoint)
            notifier.status(f"unmounted {config.mountpoint}")
            if writeback is not None:
                # Then commit what is still dirty (SIGTERM with files open; the timer's
                # leftovers). After a failed write it is kept in the journal instead.
                with trio.CancelScope(shield=True):
                    await writeback.close()


async def _when_serving(
    mountpoint: Path,
    transport: Transport,
    on_ready: Callable[[], None],
    notifier: Notifier,
    mounted: str,
) -> None:
    """Once the kernel has finished the FUSE handshake: tune readahead, then report ready.

    A ``stat`` of the mountpoint from a worker thread round-trips through our own loop, so when
    it returns the kernel has processed our INIT reply — which would otherwise reset the
    readahead set before it.
    """
    try:
        await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError as exc:
        log.warning("mountpoint %s does not answer: %s", mountpoint, exc)
    else:
        _tune_kernel_readahead(mountpoint, transport)
    on_ready()
    notifier.ready(mounted)


#: Largest read the kernel sends a FUSE daemon (libfuse 3 negotiates 256 pages).
_FUSE_MAX_REQUEST_KB = 1024


def _tune_kernel_readahead(mountpoint: Path, transport: Transport) -> None:
    """Set the mount's kernel readahead (its ``read_ahead_kb``) to what suits the transport.

    The kernel sizes FUSE read requests by the mount's readahead window (default 128 KiB).
    For a local image per-request overhead dominates a Python daemon, and 1 MiB requests read
    about twice as fast; over a link, a kernel window larger than a chunk only fetches bytes past
    the end of small files. Needs root; without it the kernel default stays.
    """
    target_kb = max(4, min(_FUSE_MAX_REQUEST_KB, transport.kernel_readahead_bytes // 1024))
    entry = mount_entry(mountpoint)
    if entry is None:
        return
    path = Path(f"/sys/class/bdi/{entry.device}/read_ahead_kb")
    try:
        path.write_text(f"{target_kb}\n")
        log.debug("%s = %d", path, target_kb)
    except OSError as exc:
        log.debug("cannot set %s (%s); kernel readahead stays at its default", path, exc)


async def _commit_periodically(writeback: WriteBack, interval_s: float) -> None:
    """Commit data that has been dirty for ``interval_s``: bounds what a crash can lose."""
    while True:
        await trio.sleep(interval_s / 2)
        try:
            await writeback.commit_older_than(interval_s)
        except MtkfsError as exc:
            # The mount is failsafe now; the next fsync/close of that file reports EIO.
            log.error("timed commit failed: %s", exc)


async def _flush_periodically(disk: DiskCache, interval_s: float = 5.0) -> None:
    """Bound what a crash can lose from the persistent cache to a few seconds of fetching."""
    while True:
        await trio.sleep(interval_s)
        await disk.flush()


async def _stop_on_signal(notifier: Notifier) -> None:
    """SIGTERM/SIGINT/SIGHUP end the FUSE loop; ``serve`` then unmounts cleanly."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("signal %s: unmounting", name)
            notifier.stopping(f"{name}: committing written data and unmounting")
            pyfuse3.terminate()
            return


async def _stop_when_gone(until_gone: Callable[[], Awaitable[str]], notifier: Notifier) -> None:
    """The device left for good (unplugged): take the mount down as on SIGTERM."""
    why = await until_gone()
    log.warning("device gone (%s): unmounting", why)
    notifier.stopping(f"device gone ({why}): unmounting")
    pyfuse3.terminate()


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    """``WATCHDOG=1`` while the event loop runs (``WatchdogSec=`` in the unit)."""
    while True:
        notifier.watchdog()
        await trio.sleep(interval_s)
