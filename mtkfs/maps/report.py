"""The partition map as plain data: ``mtkfs ls --json`` and ``.mtkfs/map.json`` print this.

One function for both so the file in the mount and the CLI can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mtkfs.maps.model import PartitionMap, Region


def map_report(
    source: str,
    regions: Iterable[Region],
    pmap: PartitionMap,
    contents: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-ready description of regions, partitions and warnings.

    Keys per partition: ``name``, ``region``, ``offset``, ``size`` (exposed bytes), plus
    ``declared_size``, ``end``, ``number``, ``origin``, ``exposed``, ``file`` (its name in the
    mount, or null), ``warnings``, table-specific ``extra`` facts, and ``content``: what the
    partition holds (:class:`mtkfs.content.detect.Detected`), null when not detected.
    """
    contents = contents or {}
    partitions = []
    for part in pmap.partitions:
        declared = part.size_bytes if part.declared_size_bytes is None else part.declared_size_bytes
        partitions.append(
            {
                "name": part.name,
                "region": part.region,
                "offset": part.offset_bytes,
                "size": part.size_bytes,
                "declared_size": declared,
                "end": part.end_bytes,
                "number": part.number,
                "origin": part.origin,
                "exposed": part.exposed,
                "file": f"{part.name}.img" if part.exposed else None,
                "warnings": list(part.warnings),
                "extra": dict(part.extra),
                "content": contents[part.name].as_dict() if part.name in contents else None,
            }
        )
    return {
        "source": source,
        "map": pmap.origin,
        "regions": [{"name": r.name, "size": r.size_bytes} for r in regions],
        "partitions": partitions,
        "warnings": list(pmap.warnings),
    }
