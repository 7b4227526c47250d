"""Turn partition names from a device into safe, unique file names.

Names come from the device (GPT entries are 36 UTF-16 characters the device chose; later maps
come from text the device printed). They are hostile until cleaned: they become file names in the
mount and keys in JSON, so they must not hold ``/``, NUL, control characters, be ``.``/``..``,
start with a dot (hidden, and ``.mtkfs`` is ours), be empty, or be unbounded. Two entries may also
carry the same name (seen on A/B devices with a bad table); the second gets a suffix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_NAME_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


def clean_name(raw: str, fallback: str) -> str:
    """One device-supplied name made safe; ``fallback`` (``p7``) when nothing usable is left."""
    name = _UNSAFE.sub("_", raw.strip().replace("\x00", ""))
    name = name.lstrip(".")[:MAX_NAME_CHARS]
    if not name.strip("_"):
        return fallback
    return name


def unique_names(names: Iterable[str]) -> list[str]:
    """Make names unique (case-insensitively, for the sake of users on case-folding copies).

    Later duplicates get ``~2``, ``~3``… — a character :func:`clean_name` never produces, so a
    suffixed name can't collide with a real one.
    """
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}~{n}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out
