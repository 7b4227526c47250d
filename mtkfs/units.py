"""Sizes as people type and read them (``256M`` in, ``3.0 MiB`` out)."""

from __future__ import annotations

import re

from mtkfs.errors import UsageError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``256M``, ``1G``, ``512k``, ``4096`` → bytes (binary units, as dd and cache sizes use)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"not a size: {text!r} (examples: 256M, 1G, 65536)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def human_size(size_bytes: int) -> str:
    """Bytes as a short binary-unit string (``3.0 MiB``)."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
