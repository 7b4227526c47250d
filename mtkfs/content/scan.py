"""Detection over a transport: read each partition's samples (a few KiB) and classify them.

Why straight from the transport and not through the chunk cache: the cache fetches whole
chunks (64 KiB over a U-Boot console, where that is 22 seconds), and detection needs 4 KiB.
With ``--cache-dir`` the samples are kept and revalidated at the next mount instead of read
again (:mod:`mtkfs.content.samples`). A partition that cannot be read is reported as such;
detection never fails a mount.
"""

from __future__ import annotations

import logging

from mtkfs.content.detect import Detected, detect, sample_ranges
from mtkfs.content.samples import SampleReader, ScanStats
from mtkfs.errors import MtkfsError
from mtkfs.maps.model import PartitionMap
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

__all__ = ["ScanStats", "detect_partitions"]


async def detect_partitions(
    transport: Transport,
    pmap: PartitionMap,
    stats: ScanStats | None = None,
    reader: SampleReader | None = None,
) -> dict[str, Detected]:
    """Every exposed partition's :class:`Detected`, by name. ``reader``: where samples come
    from (kept ones from the cache dir); by default straight from ``transport``."""
    reader = reader or SampleReader(transport, stats=stats)
    unit = transport.write_unit_bytes
    found: dict[str, Detected] = {}
    for part in pmap.partitions:
        if not part.exposed or part.size_bytes <= 0:
            continue
        samples = []
        try:
            for offset, size in sample_ranges(part.size_bytes, unit):
                samples.append(await reader.read(part.region, part.offset_bytes + offset, size))
        except MtkfsError as exc:
            log.warning("%s: cannot read it to tell what it holds: %s", part.name, exc)
            found[part.name] = Detected("unread", f"not readable: {exc}")
            continue
        found[part.name] = detect(samples[0], tuple(samples[1:]))
    await reader.save()
    return found
