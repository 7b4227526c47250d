"""A source opened for a one-shot job (``dump``, ``export-rom``, ``restore``): transport, chunk
cache (with the persistent store when asked), partition map.

Why a module of its own: the mount daemon and the backup commands open a device the same way —
link model and fault injection wrapped around the transport, ``--cache-dir`` so an interrupted
job resumes, the map found by the same discovery — and two copies of that would drift.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mtkfs.cache import ChunkCache
from mtkfs.discover import discover_map
from mtkfs.diskcache import DiskCache
from mtkfs.errors import NoMapError
from mtkfs.maps.model import PartitionMap
from mtkfs.testing.faults import FaultyTransport, parse_fault_spec
from mtkfs.transports import SourceOptions, open_transport
from mtkfs.transports.base import Transport
from mtkfs.transports.linkmodel import LinkModelTransport, LinkSpec

log = logging.getLogger(__name__)

#: Memory for cached chunks of a one-shot job: enough for readahead over a fast link.
JOB_CACHE_BYTES = 128 << 20


async def open_chunk_cache(
    transport: Transport,
    stack: contextlib.AsyncExitStack,
    *,
    cache_dir: Path | None,
    trust_cache: bool,
    cache_bytes: int,
) -> ChunkCache:
    """The chunk cache over ``transport``, with the persistent store when ``cache_dir`` is set
    (closed, and so flushed, when ``stack`` unwinds)."""
    disk = None
    if cache_dir is not None:
        disk = await DiskCache.open(
            cache_dir,
            device_id=transport.device_id,
            chunk_bytes=transport.chunk_bytes,
            regions=transport.regions,
        )
        stack.push_async_callback(disk.aclose)
        if not transport.has_checksum and not trust_cache:
            log.warning(
                "--cache-dir: %s cannot checksum data on the device, so chunks kept from an "
                "earlier session are read again; pass --trust-cache to use them as they are",
                transport.description,
            )
    return ChunkCache(
        transport,
        chunk_bytes=transport.chunk_bytes,
        max_bytes=cache_bytes,
        max_request_bytes=transport.max_request_bytes,
        readahead_max_bytes=transport.readahead_max_bytes,
        disk=disk,
        trust_disk=trust_cache,
    )


async def open_wrapped_transport(
    source: str,
    stack: contextlib.AsyncExitStack,
    *,
    writable: bool,
    options: SourceOptions,
    inject_faults: str | None = None,
    link_model: LinkSpec | None = None,
) -> Transport:
    """``source`` opened (closed when ``stack`` unwinds), inside the hidden fault injector and
    the link model when asked: what a mount and a one-shot job both read through."""
    transport = await open_transport(source, writable=writable, options=options)
    stack.push_async_callback(transport.aclose)
    if inject_faults is not None:
        transport = FaultyTransport(transport, parse_fault_spec(inject_faults))
    if link_model is not None:
        transport = LinkModelTransport(transport, link_model)
    return transport


async def run_job(
    cache: ChunkCache, work: Callable[[], Awaitable[None]], *, stop_on_signals: bool = False
) -> str:
    """Run ``work`` with the cache's readahead alive; the name of the signal that stopped it
    ("" when it ran to its end).

    Why: readahead needs a nursery, and an exception leaving a nursery comes out wrapped in an
    ExceptionGroup — which the CLI would print as a traceback instead of one line (an
    MtkfsError) or exit 130 (Ctrl-C). Here it comes out as itself. With ``stop_on_signals``,
    SIGINT/SIGTERM cancel ``work`` (which saves its state as it unwinds) instead of raising.
    """
    caught: list[BaseException] = []
    said: list[str] = []
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            if stop_on_signals:
                await nursery.start(_cancel_on_signal, scope, said)  # listening before work
            cache.start(nursery)
            try:
                await work()
            except BaseException as exc:  # re-raised below, outside the nursery
                caught.append(exc)
            nursery.cancel_scope.cancel()
    if caught and not (said and isinstance(caught[0], trio.Cancelled)):
        raise caught[0]
    return said[0] if said else ""


async def _cancel_on_signal(
    scope: trio.CancelScope,
    said: list[str],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            said.append(signal.Signals(signum).name)
            scope.cancel()
            return


@dataclass(frozen=True)
class JobOptions:
    """How to open a source for a job (the command line's source, map and cache flags)."""

    source: str
    source_options: SourceOptions = field(default_factory=SourceOptions)
    map_files: tuple[Path, ...] = ()
    no_map: bool = False
    cache_dir: Path | None = None
    trust_cache: bool = False
    cache_bytes: int = JOB_CACHE_BYTES
    link_model: LinkSpec | None = None
    inject_faults: str | None = None


@dataclass
class Session:
    """An opened source."""

    transport: Transport
    cache: ChunkCache
    pmap: PartitionMap


@contextlib.asynccontextmanager
async def open_session(
    options: JobOptions, *, writable: bool = False, need_map: bool = True
) -> AsyncIterator[Session]:
    """Open ``options.source`` and find its map; everything is closed on exit.

    ``need_map`` False: a source without any recognised table gets an empty map instead of
    :class:`~mtkfs.errors.NoMapError` (a blank target of ``restore``).
    """
    async with contextlib.AsyncExitStack() as stack:
        transport = await open_wrapped_transport(
            options.source,
            stack,
            writable=writable,
            options=options.source_options,
            inject_faults=options.inject_faults,
            link_model=options.link_model,
        )
        cache = await open_chunk_cache(
            transport,
            stack,
            cache_dir=options.cache_dir,
            trust_cache=options.trust_cache,
            cache_bytes=options.cache_bytes,
        )
        try:
            pmap = await discover_map(
                transport.regions,
                cache.read,
                map_files=options.map_files,
                no_map=options.no_map,
                device_table=await transport.device_table(),
                probe_limit_bytes=transport.probe_limit_bytes,
            )
        except NoMapError:
            if need_map:
                raise
            pmap = PartitionMap((), "none (no partition table found)")
        for warning in pmap.warnings:
            log.warning("%s", warning)
        yield Session(transport, cache, pmap)
