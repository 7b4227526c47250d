"""A source opened for a one-shot job (``dump``, ``export-rom``, ``restore``): transport, chunk
cache (with the persistent store when asked), partition map.

Why a module of its own: the mount daemon and the backup commands open a device the same way —
link model and fault injection wrapped around the transport, ``--cache-dir`` so an interrupted
job resumes, the map found by the same discovery — and two copies of that would drift.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

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
        transport: Transport = await open_transport(
            options.source, writable=writable, options=options.source_options
        )
        stack.push_async_callback(transport.aclose)
        if options.inject_faults is not None:
            transport = FaultyTransport(transport, parse_fault_spec(options.inject_faults))
        if options.link_model is not None:
            transport = LinkModelTransport(transport, options.link_model)
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
