"""What is mounted where, from ``/proc/self/mountinfo`` — without touching the mount itself.

Why not ``os.stat``/``os.path.ismount``: on a FUSE mount those ask the daemon, which hangs when
the daemon is the caller (before its loop runs) and fails on a dead mount. The kernel's table
answers in both cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo: the device number (``major:minor``) and the filesystem type."""

    device: str
    fstype: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo`` octal."""
    return field.encode().decode("unicode_escape")


def mount_entry(path: Path) -> MountEntry | None:
    """The topmost mount whose target is ``path`` (None when nothing is mounted there)."""
    # Resolve symlinks in the parent only: resolving the mountpoint itself would ask the mount.
    absolute = Path(os.path.abspath(path))
    target = os.path.join(os.path.realpath(absolute.parent), absolute.name)
    found: MountEntry | None = None
    try:
        with open("/proc/self/mountinfo") as info:
            for line in info:
                fields = line.split()
                if "-" not in fields:
                    continue
                sep = fields.index("-")
                if len(fields) > sep + 1 and _unescape(fields[4]) == target:
                    found = MountEntry(fields[2], fields[sep + 1])
    except OSError:
        return None
    return found
