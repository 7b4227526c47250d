"""``mtkfs dump``: copy partitions (and the table areas) of any source into a folder, with
progress, a sha256 manifest, optional gzip/zstd, and resume after an interruption.

What is dumped by default: every partition the map exposes, except a huge user-data area
(``userdata``/``usrdata``/``intsd``/``fat`` above 1 GiB: hours of link time, and often encrypted
— ``--all`` or naming it adds it), plus the *gaps*: unpartitioned space of each region up to
64 MiB, which is where the partition tables live (the GPT's first sectors and its backup, the
MBR). A restore to a blank chip needs them.

Resume: each output is written as ``FILE.part`` and made durable at checkpoints (every
:data:`CHECKPOINT_BYTES` or :data:`CHECKPOINT_S`, and on SIGINT/SIGTERM); the manifest records
the point. Running the same command again continues each partial file from its checkpoint
(re-hashing the kept part locally) and skips finished ones, so the link carries only what was
not yet written. With ``--cache-dir`` (default for ``uboot:``) chunks read ahead but not written
come back from the persistent cache too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from mtkfs.backup import manifest as mf
from mtkfs.backup.sink import COMPRESSIONS, Sink
from mtkfs.errors import BackupError, MtkfsError, SourceError, UsageError
from mtkfs.maps.model import PartitionMap, Region
from mtkfs.progress import Progress
from mtkfs.session import JobOptions, Session, open_session, run_job
from mtkfs.units import human_size

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 64 << 20
CHECKPOINT_S = 5.0
MAX_GAP_BYTES = 64 << 20
HUGE_BYTES = 1 << 30
USER_DATA_NAMES = re.compile(r"^(userdata|usrdata|intsd|fat)$", re.IGNORECASE)
#: Exit code of an interrupted dump (like a shell's for SIGINT): run it again to continue.
INTERRUPTED = 130


@dataclass(frozen=True)
class DumpRequest:
    """What ``mtkfs dump`` was asked for."""

    job: JobOptions
    out_dir: Path
    names: tuple[str, ...] = ()
    everything: bool = False
    compression: str = "none"
    progress: str = "auto"


def gaps_of(pmap: PartitionMap, regions: Mapping[str, Region]) -> list[mf.Item]:
    """Unpartitioned ranges of each region, up to :data:`MAX_GAP_BYTES` each."""
    found = []
    for region in regions.values():
        parts = sorted(
            (p for p in pmap.partitions if p.region == region.name and p.exposed),
            key=lambda p: p.offset_bytes,
        )
        position = 0
        ranges = []
        for part in parts:
            if part.offset_bytes > position:
                ranges.append((position, part.offset_bytes))
            position = max(position, part.offset_bytes + part.size_bytes)
        if position < region.size_bytes:
            ranges.append((position, region.size_bytes))
        for start, end in ranges:
            if end - start <= MAX_GAP_BYTES:
                name = f"{region.name}@{start:#x}"
                found.append(mf.Item(name, "gap", region.name, start, end - start,
                                     f"gaps/{region.name}@{start:#x}.bin"))  # fmt: skip
    return found


def select(
    pmap: PartitionMap, regions: Mapping[str, Region], names: Iterable[str], everything: bool
) -> tuple[list[mf.Item], list[str]]:
    """The items to dump and notes on what was left out (said to the user)."""
    names = list(names)
    parts = {p.name: p for p in pmap.partitions if p.exposed and p.size_bytes > 0}
    items: list[mf.Item] = []
    notes: list[str] = []
    if names:
        for name in names:
            if name.startswith("region:"):
                region = regions.get(name.removeprefix("region:"))
                if region is None:
                    raise UsageError(
                        f"{name}: no such region (this source has: "
                        f"{', '.join('region:' + r for r in regions)})"
                    )
                items.append(mf.Item(name, "region", region.name, 0, region.size_bytes,
                                     f"regions/{mf.safe_file_name(region.name)}.img"))  # fmt: skip
            elif name in parts:
                part = parts[name]
                file = f"{mf.safe_file_name(name)}.img"
                items.append(mf.Item(name, "partition", part.region, part.offset_bytes,
                                     part.size_bytes, file))  # fmt: skip
            else:
                raise UsageError(
                    f"{name}: no such partition (this source has: {', '.join(parts) or 'none'}; "
                    "and region:NAME for a whole region)"
                )
        return items, notes
    for part in parts.values():
        if not everything and USER_DATA_NAMES.match(part.name) and part.size_bytes > HUGE_BYTES:
            notes.append(
                f"left out {part.name} ({human_size(part.size_bytes)}): add --all, or name it"
            )
            continue
        items.append(mf.Item(part.name, "partition", part.region, part.offset_bytes,
                             part.size_bytes, f"{mf.safe_file_name(part.name)}.img"))  # fmt: skip
    if not parts:
        for region in regions.values():
            items.append(mf.Item(f"region:{region.name}", "region", region.name, 0,
                                 region.size_bytes, f"regions/{region.name}.img"))  # fmt: skip
    else:
        items += gaps_of(pmap, regions)
    return items, notes


def _merge(old: mf.Manifest | None, new: mf.Manifest, out_dir: Path) -> mf.Manifest:
    """Continue ``old`` (a previous run into the same folder) where it is the same dump."""
    if old is None:
        return new
    if old.device_id != new.device_id:
        raise BackupError(
            f"{out_dir} holds a dump of another device ({old.source}); choose an empty folder"
        )
    if old.compression != new.compression:
        raise BackupError(
            f"{out_dir} holds a dump made with compression {old.compression}; run it again "
            f"with the same option or choose an empty folder"
        )
    for item in new.items:
        before = old.item(item.name)
        if before is None:
            continue
        if (before.region, before.offset, before.size) != (item.region, item.offset, item.size):
            raise BackupError(
                f"{out_dir}: {item.name} was dumped from {before.region}+{before.offset:#x} "
                f"({before.size} bytes), the map now says {item.region}+{item.offset:#x} "
                f"({item.size} bytes); choose an empty folder"
            )
    known = {i.name for i in old.items}
    old.items += [i for i in new.items if i.name not in known]
    return old


async def run_dump(request: DumpRequest) -> int:
    """Run a dump; 0 when everything is done, :data:`INTERRUPTED` after SIGINT/SIGTERM."""
    if request.compression not in COMPRESSIONS:
        raise UsageError(f"--compress {request.compression}: use none, gzip or zstd")
    out_dir = request.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    async with open_session(request.job) as session:
        transport = session.transport
        regions = transport.regions
        items, notes = select(session.pmap, regions, request.names, request.everything)
        for item in items:
            item.file += COMPRESSIONS[request.compression]
        fresh = mf.Manifest(
            source=transport.description,
            device_id=transport.device_id,
            map=session.pmap.origin,
            compression=request.compression,
            regions={n: r.size_bytes for n, r in regions.items()},
            items=items,
        )
        manifest = _merge(mf.load(out_dir), fresh, out_dir)
        # This run's items, as the (possibly continued) manifest holds them.
        names = {i.name for i in items}
        wanted = [i for i in manifest.items if i.name in names]
        _check_space(out_dir, wanted, request.compression)
        progress = Progress(sum(i.size for i in wanted), mode=request.progress)
        for note in notes:
            progress.message(note)
        link_before = _link_bytes(session)

        async def dump_all() -> None:
            for item in wanted:
                await _dump_item(session, item, out_dir, manifest, progress)

        try:
            stopped_by = await run_job(session.cache, dump_all, stop_on_signals=True)
        except (MtkfsError, OSError):
            progress.close()
            _record_session(manifest, session, started, link_before, "failed")
            await trio.to_thread.run_sync(manifest.save, out_dir)
            progress.message("what was written is kept: run the same command again to continue")
            raise
        progress.close()
        _record_session(manifest, session, started, link_before, stopped_by)
        manifest.save(out_dir)
        manifest.save_sums(out_dir)
        done = [i for i in wanted if i.status == "done"]
        moved = manifest.sessions[-1]["link_bytes"]
        summary = (
            f"{len(done)} of {len(wanted)} item(s), {human_size(sum(i.size for i in done))}, "
            f"in {out_dir}; {human_size(moved)} over the link in {time.time() - started:.1f} s"
        )
        if stopped_by:
            progress.message(
                f"interrupted ({stopped_by}): {summary}. Run the same command again to continue."
            )
            return INTERRUPTED
        progress.message(f"dumped {summary}; manifest.json and SHA256SUMS written")
        return 0


def _record_session(
    manifest: mf.Manifest, session: Session, started: float, link_before: int, stop: str
) -> None:
    """What this run did, for the manifest (``stop``: the signal or ``failed``; "" = done)."""
    manifest.sessions.append(
        {
            "started": started,
            "finished": time.time(),
            "interrupted": bool(stop),
            "stopped_by": stop or None,
            "link_bytes": _link_bytes(session) - link_before,
            "disk_cache_hits": session.cache.stats.total().disk_hits,
            "transport": session.transport.stats(),
        }
    )


def _link_bytes(session: Session) -> int:
    """Bytes fetched from the device: the link model's count where there is one (it includes
    every command), else what the cache fetched from the transport."""
    stats = session.transport.stats()
    if "link_bytes" in stats:
        return int(stats["link_bytes"])
    return session.cache.stats.total().transport_bytes


def _check_space(out_dir: Path, items: list[mf.Item], compression: str) -> None:
    if compression != "none":
        return
    needed = sum(i.size - i.done_bytes for i in items if i.status != "done")
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise UsageError(
            f"the dump needs {human_size(needed)} but {out_dir} has {human_size(free)} free; "
            "use --compress zstd (or gzip), dump fewer partitions, or choose another folder"
        )


async def _dump_item(
    session: Session, item: mf.Item, out_dir: Path, manifest: mf.Manifest, progress: Progress
) -> None:
    final = out_dir / item.file
    if item.status == "done":
        if await trio.to_thread.run_sync(_still_intact, final, item):
            progress.item(item.name, item.size, already_bytes=item.size)
            progress.done("already dumped, file checked")
            return
        progress.message(f"{item.name}: {final.name} changed since it was dumped; dumping again")
        item.status, item.done_bytes, item.file_bytes = "pending", 0, 0
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    resume = item.status == "partial" and part.exists()
    sink = await trio.to_thread.run_sync(
        lambda: Sink(
            part,
            manifest.compression,
            resume_raw=item.done_bytes if resume else 0,
            resume_file=item.file_bytes if resume else 0,
        )
    )
    position = sink.raw_bytes
    progress.item(item.name, item.size, already_bytes=position)
    step = _step_bytes(session)
    last_checkpoint_s = time.monotonic()
    checkpoint_at = position + CHECKPOINT_BYTES
    try:
        while position < item.size:
            size = min(step, item.size - position)
            data = await session.cache.read(
                item.region, item.offset + position, size, limit_bytes=item.offset + item.size
            )  # readahead stops at the item's end: the next item may be elsewhere or skipped
            if len(data) != size:
                raise SourceError(
                    f"{item.name}: the source ended at {item.region}+{item.offset + position:#x}"
                )
            await trio.to_thread.run_sync(sink.write, data)
            position += size
            progress.advance(size)
            if position >= checkpoint_at or time.monotonic() - last_checkpoint_s >= CHECKPOINT_S:
                await _checkpoint(session, sink, item, manifest, out_dir)
                last_checkpoint_s = time.monotonic()
                checkpoint_at = position + CHECKPOINT_BYTES
    except BaseException:
        # Interrupted, or the device failed: what was written is good, so keep it for the
        # next run (unless the output disk itself is the problem).
        with trio.CancelScope(shield=True):
            try:
                await _checkpoint(session, sink, item, manifest, out_dir)
            except OSError as exc:
                log.warning("%s: could not record the resume point: %s", item.name, exc)
            await trio.to_thread.run_sync(sink.abandon)
        raise
    raw_bytes, file_bytes = await trio.to_thread.run_sync(sink.close)
    os.replace(part, final)
    item.status = "done"
    item.done_bytes, item.file_bytes = raw_bytes, file_bytes
    item.sha256 = sink.raw_hash.hexdigest()
    item.file_sha256 = sink.file_hash.hexdigest()
    await trio.to_thread.run_sync(manifest.save, out_dir)
    progress.done(f"sha256 {item.sha256[:16]}…")


async def _checkpoint(
    session: Session, sink: Sink, item: mf.Item, manifest: mf.Manifest, out_dir: Path
) -> None:
    """Make the output durable up to here and record it (the resume point)."""
    raw_bytes, file_bytes = await trio.to_thread.run_sync(sink.checkpoint)
    item.status = "partial"
    item.done_bytes, item.file_bytes = raw_bytes, file_bytes
    if session.cache.disk is not None:
        await session.cache.disk.flush()
    await trio.to_thread.run_sync(manifest.save, out_dir)


def _still_intact(path: Path, item: mf.Item) -> bool:
    """Whether a finished file is still what was written (a local read, no link time)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(4 << 20):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == item.file_sha256


def _step_bytes(session: Session) -> int:
    """Bytes asked of the cache per step: 1 MiB over fast links (readahead keeps the link busy
    meanwhile); one chunk over a slow one, so progress and checkpoints move every chunk."""
    transport = session.transport
    if transport.probe_limit_bytes is not None:
        return transport.chunk_bytes
    return max(transport.chunk_bytes, 1 << 20)
