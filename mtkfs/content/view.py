"""The shape every browsable format is turned into: a list of entries, shown by the mount as a
read-only folder ``MNT/<partition>.files/``.

Why one neutral shape: the parsers (jffs2, Android boot images…) stay sans-I/O and know
nothing of FUSE; the mount knows nothing of their formats. A parser gets the partition's bytes
and returns a :class:`ContentView`; file contents are produced on demand (``data()``), so
decompressing a 10 MiB file happens when it is opened, not when the folder is listed.

Names inside a partition are device data, hostile until checked: :func:`check_name` refuses
``/``, NUL, ``.``, ``..`` and over-long names, and parsers drop (with a warning) what fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

MAX_NAME_BYTES = 255

Kind = Literal["dir", "file", "symlink"]


@dataclass(frozen=True)
class Entry:
    """One file, folder or symlink of a view.

    ``path``: its components from the view's root (each passed :func:`check_name`).
    ``mode``: permission bits only (``0o7777``); the type is ``kind``.
    ``size_bytes``: a file's length (what ``data()`` returns), a symlink's target length.
    ``data``: a file's bytes, computed when called (may raise ValueError for a corrupt file:
    the mount then answers EIO for that file only).
    """

    path: tuple[str, ...]
    kind: Kind
    mode: int = 0o644
    mtime_s: float = 0.0
    size_bytes: int = 0
    target: str = ""
    data: Callable[[], bytes] | None = field(default=None, compare=False, repr=False)


@dataclass
class ContentView:
    """A parsed partition: its format, its entries (parents before children), and what was
    skipped or repaired on the way."""

    kind: str
    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_name(name: str) -> bool:
    """A name that can be one path component of the mount."""
    encoded = name.encode("utf-8", "surrogateescape")
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\0" not in name
        and len(encoded) <= MAX_NAME_BYTES
    )
