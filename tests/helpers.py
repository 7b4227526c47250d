"""Capability probes for tests that need the real kernel: FUSE mounts and loop devices.

Mount tests call these instead of guessing, so that a machine without ``/dev/fuse`` (a container
without the device, a non-root user without a setuid ``fusermount3``) skips them with a reason
that says what is missing, rather than failing in ways that look like mtkfs bugs. ``pytest -ra``
prints those reasons in the summary.

Use (``tests/`` is on ``sys.path`` because ``tests/conftest.py`` lives there)::

    from helpers import fuse_available, skip_without_fuse, skip_without_loop

    pytestmark = [pytest.mark.fuse, skip_without_fuse]

    @pytest.mark.loop
    @skip_without_loop
    def test_loop_mount_system(...): ...
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest

__all__ = ["fuse_available", "loop_available", "skip_without_fuse", "skip_without_loop"]


def _openable(device: str) -> tuple[bool, str]:
    """Whether ``device`` exists and opens read-write (opening alone changes nothing)."""
    if not os.path.exists(device):
        return False, f"{device} does not exist"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"cannot open {device}: {exc.strerror}"
    os.close(fd)
    return True, ""


def fuse_available() -> tuple[bool, str]:
    """(True, "") when this process can make FUSE mounts; else (False, why not).

    Needs ``/dev/fuse`` present and openable and ``fusermount3`` on PATH (pyfuse3 unmounts
    through it); a non-root user also needs it setuid root.
    """
    ok, why = _openable("/dev/fuse")
    if not ok:
        return False, why
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        return False, "fusermount3 not on PATH (apt-get install fuse3)"
    if os.geteuid() != 0 and not os.stat(fusermount).st_mode & stat.S_ISUID:
        return False, f"{fusermount} is not setuid root and we are not root"
    return True, ""


def loop_available() -> tuple[bool, str]:
    """(True, "") when this process can attach loop devices (``mount -o loop``); else why not.

    Needs root and an openable ``/dev/loop-control`` (containers often lack either).
    """
    if os.geteuid() != 0:
        return False, "loop devices need root"
    return _openable("/dev/loop-control")


skip_without_fuse = pytest.mark.skipif(not fuse_available()[0], reason=fuse_available()[1])
skip_without_loop = pytest.mark.skipif(not loop_available()[0], reason=loop_available()[1])
