"""What every partition map must be, whatever parser made it and whatever input it was fed.

The property tests of every parser (hypothesis: random and mutated input) end here, so the
invariants are stated once: names clean and unique, exposed partitions non-empty and inside
their region, unexposed ones empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mtkfs.maps.model import PartitionMap, Region
from mtkfs.maps.names import MAX_NAME_CHARS

#: What mtkfs.maps.names produces: a safe name, optionally with a ``~N`` uniqueness suffix.
_CLEAN_NAME = re.compile(rf"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]{{0,{MAX_NAME_CHARS - 1}}}(~[0-9]+)?")


def assert_sane_map(pmap: PartitionMap, regions: Mapping[str, Region]) -> None:
    """Fail the test unless ``pmap`` satisfies the invariants in the module docstring."""
    assert isinstance(pmap, PartitionMap)
    seen: set[str] = set()
    for part in pmap.partitions:
        assert _CLEAN_NAME.fullmatch(part.name), part.name
        assert part.name.lower() not in seen, f"duplicate name {part.name}"
        seen.add(part.name.lower())
        assert part.offset_bytes >= 0 and part.size_bytes >= 0, part
        assert all(isinstance(w, str) for w in part.warnings)
        if part.exposed:
            region = regions[part.region]
            assert part.size_bytes > 0 and part.end_bytes <= region.size_bytes, part
        else:
            assert part.size_bytes == 0, part
