"""``mtkfs export-rom SOURCE DIR``: a folder SP Flash Tool can load and flash, made from any source.

It does what seed 001 does by hand, in one pass:

* ``<PLATFORM>_Android_scatter.txt``: the V1.1.x scatter of the source's map
  (:mod:`mtkfs.maps.scatter_write`: download rules, EXT4_IMG vs NORMAL_ROM, reserved rows);
* ``preloader.bin``: the boot area after its 2 KiB ``EMMC_BOOT`` header (SV5_BL_BIN; seed 001:
  ``dd bs=512 skip=4 if=Boot1``) — SP Flash Tool writes its own header;
* ``<name>.img`` of every downloadable NORMAL_ROM partition, raw (holes where it is zero);
* ``<name>.img`` of every EXT4_IMG partition as an Android sparse image holding only the blocks
  the file system uses (what ext2simg does; seed 001 ran it per partition) — a 2 GiB system
  with 300 MiB of files becomes a ~300 MiB file, and SP Flash Tool flashes it as it is;
* ``Checksum.ini``: SP Flash Tool's 16-bit sums of those files, as stored.

Calibration and identity (proinfo, nvram, protect*, seccfg…) are not downloaded and not
exported (the scatter rules). A userdata larger than 1 GiB is left out unless ``--all`` (its
row is then marked not downloadable, so SP Flash Tool does not look for the file).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from mtkfs.backup.dump import HUGE_BYTES, USER_DATA_NAMES
from mtkfs.backup.sink import Sink
from mtkfs.content.ext4_used import ext4_used_ranges
from mtkfs.content.sparse_write import write_sparse
from mtkfs.errors import MtkfsError, UsageError
from mtkfs.maps import names
from mtkfs.maps.checksum import ByteSum16, write_checksum_ini
from mtkfs.maps.model import Partition
from mtkfs.maps.scatter_write import write_scatter
from mtkfs.progress import Progress
from mtkfs.romfiles import PRELOADER_BIN, downloadable, fs_types, preloader_image
from mtkfs.session import JobOptions, Session, open_session, run_job
from mtkfs.units import human_size

log = logging.getLogger(__name__)

STEP_BYTES = 1 << 20


@dataclass(frozen=True)
class ExportRequest:
    """What ``mtkfs export-rom`` was asked for."""

    job: JobOptions
    out_dir: Path
    platform: str = "MT6xxx"
    project: str = "mtkfs"
    everything: bool = False
    progress: str = "auto"


def scatter_name(platform: str) -> str:
    """SP Flash Tool looks for ``*_Android_scatter.txt``."""
    return f"{names.clean_name(platform, 'MT6xxx')}_Android_scatter.txt"


async def run_export(request: ExportRequest) -> int:
    out = request.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*_Android_scatter.txt")) or (out / "Checksum.ini").exists():
        raise UsageError(f"{out} already holds a ROM; choose an empty folder")
    async with open_session(request.job) as session:
        pmap, regions, cache = session.pmap, session.transport.regions, session.cache
        if not pmap.partitions:
            raise UsageError("export-rom needs a partition map (this source has none; --map)")
        types = await fs_types(pmap, cache)
        rows = downloadable(pmap, regions)
        left_out = frozenset(
            p.name
            for p in rows
            if not request.everything
            and USER_DATA_NAMES.match(p.name)
            and p.size_bytes > HUGE_BYTES
        )
        rows = [p for p in rows if p.name not in left_out]
        progress = Progress(sum(p.size_bytes for p in rows), mode=request.progress)
        for name in sorted(left_out):
            size = human_size(pmap.by_name(name).size_bytes)
            progress.message(f"left out {name} ({size}): add --all to export it")
        sums: dict[str, int] = {}

        async def export_all() -> None:
            for part in rows:
                if part.name.lower() == "preloader":
                    value = await _export_preloader(session, part, out, progress)
                    if value is not None:
                        sums[part.name] = value
                elif types.get(part.name) == "ext4":
                    sums[part.name] = await _export_ext4(session, part, out, progress)
                else:
                    sums[part.name] = await _export_raw(session, part, out, progress)

        try:
            await run_job(cache, export_all)
        finally:
            progress.close()
        scatter = write_scatter(
            pmap,
            regions,
            fs_types=types,
            platform=request.platform,
            project=request.project,
            left_out=left_out,
        )
        (out / scatter_name(request.platform)).write_text(scatter)
        (out / "Checksum.ini").write_text(write_checksum_ini(sums))
        progress.message(
            f"exported {len(sums)} image(s) to {out}: {scatter_name(request.platform)}, "
            "Checksum.ini; load the scatter in SP Flash Tool ('Download Only' keeps this "
            "phone's calibration partitions)"
        )
        return 0


async def _export_raw(session: Session, part: Partition, out: Path, progress: Progress) -> int:
    """``<name>.img``, raw; its Checksum.ini sum."""
    return await _copy(session, part.name, part.region, part.offset_bytes, part.size_bytes,
                       out / f"{part.name}.img", progress)  # fmt: skip


async def _export_preloader(
    session: Session, part: Partition, out: Path, progress: Progress
) -> int | None:
    volume = await preloader_image(session.pmap, session.cache)
    if volume is None:
        progress.message(
            "preloader: its boot area has no EMMC_BOOT header, so no preloader.bin was made; "
            "take the preloader from the phone's stock firmware"
        )
        return None
    return await _copy(session, part.name, volume.region, volume.offset_bytes,
                       volume.size_bytes, out / PRELOADER_BIN, progress)  # fmt: skip


async def _copy(
    session: Session,
    name: str,
    region: str,
    offset: int,
    size: int,
    path: Path,
    progress: Progress,
) -> int:
    progress.item(name, size)
    sink = await trio.to_thread.run_sync(Sink, path, "none")
    total = ByteSum16()
    try:
        for at in range(0, size, STEP_BYTES):
            data = await session.cache.read(
                region, offset + at, min(STEP_BYTES, size - at), limit_bytes=offset + size
            )
            await trio.to_thread.run_sync(sink.write, data)
            total.update(data)
            progress.advance(len(data))
    finally:
        await trio.to_thread.run_sync(sink.close)
    progress.done(path.name)
    return total.value


async def _export_ext4(session: Session, part: Partition, out: Path, progress: Progress) -> int:
    """``<name>.img`` as an Android sparse image of the used blocks; its Checksum.ini sum."""
    cache = session.cache

    async def read(offset: int, size: int) -> bytes:
        size = max(0, min(size, part.size_bytes - offset))
        end = part.offset_bytes + part.size_bytes
        return await cache.read(part.region, part.offset_bytes + offset, size, limit_bytes=end)

    try:
        usage = await ext4_used_ranges(read, part.size_bytes)
    except MtkfsError as exc:
        progress.message(f"{part.name}: {exc}; exported raw instead")
        return await _export_raw(session, part, out, progress)
    block = usage.block_bytes
    covered = part.size_bytes - part.size_bytes % block
    path = out / f"{part.name}.img"
    progress.item(part.name, covered)
    done = 0

    def moved(position: int) -> None:
        nonlocal done
        progress.advance(position - done)
        done = position

    with path.open("w+b") as f:
        stats = await write_sparse(
            f, read, size_bytes=covered, block_bytes=block, used=usage.used, on_progress=moved
        )
    moved(covered)
    total = ByteSum16()
    with path.open("rb") as written:
        while piece := written.read(4 << 20):
            total.update(piece)
    progress.done(
        f"sparse: {human_size(stats.file_bytes)} for {human_size(covered)} "
        f"({stats.raw_blocks} blocks of data)"
    )
    return total.value
