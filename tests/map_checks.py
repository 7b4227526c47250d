"""What every partition map must be, whatever parser made it and whatever input it was fed.

The property tests of every parser (hypothesis: random and mutated input) end here, so the
invariants are stated once: names clean and unique, exposed partitions non-empty and inside
their region, unexposed ones empty.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hypothesis import strategies as st

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


_MUTATIONS = ("delete", "dup", "swap", "line", "digit", "cut", "junk", "token")


@st.composite
def mutated_text(draw: st.DrawFn, base: str, tokens: st.SearchStrategy[str]) -> str:
    """``base`` (a valid map printout) with a few line- and character-level mutations.

    Lines deleted, duplicated, swapped or inserted; digits changed; characters cut; random text
    or format-specific ``tokens`` (field separators, ``0x``, device paths…) inserted — the
    damage copy-paste, log prefixes and truncated captures do to real printouts.
    """
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            lines = [draw(st.text(max_size=40))]
        op = draw(
            st.sampled_from(["delete", "dup", "swap", "line", "digit", "cut", "junk", "token"])
        )
        i = draw(st.integers(0, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "line":
            lines.insert(i, draw(st.text(max_size=80)))
        else:
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            if op == "digit":
                lines[i] = line[:at] + draw(st.sampled_from("0123456789abcdefF")) + line[at + 1 :]
            elif op == "cut":
                lines[i] = line[:at] + line[at + draw(st.integers(1, 12)) :]
            elif op == "junk":
                lines[i] = line[:at] + draw(st.text(max_size=8)) + line[at:]
            else:
                lines[i] = line[:at] + draw(tokens) + line[at:]
    return "\n".join(lines)
