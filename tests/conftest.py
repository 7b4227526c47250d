"""Fixtures shared by every test tier: realistic readback images of two real phones.

The images are built once per session (about a second, a few tens of MB on disk although they
look like 15 GB and 7 GB) by :mod:`mtkfs.testing.disk` and are shared: treat ``p70a`` and
``s650`` as read-only. A test that writes (``-o rw`` mounts, commit tests) takes ``p70a_rw`` /
``s650_rw``, a private sparse copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import mounting
import pytest

from mtkfs.testing.disk import Layout, build_p70a, build_s650, build_ufs


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Journals and logs of the whole run go to a private folder, never the real user's."""
    state = tmp_path_factory.mktemp("state")
    os.environ["XDG_STATE_HOME"] = str(state)
    mounting.ENV["XDG_STATE_HOME"] = str(state)
    return state


@pytest.fixture(scope="session")
def p70a(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """Lenovo P-70A SP Flash Tool readback (``Boot1``, ``Boot2``, ``User`` with a GPT)."""
    return build_p70a(tmp_path_factory.mktemp("p70a"))


@pytest.fixture(scope="session")
def s650(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """Lenovo S650 ``dd`` readback (``mmcblk0.img`` with MTK MBR+EBR, ``mmcblk0boot{0,1}.img``)."""
    return build_s650(tmp_path_factory.mktemp("s650"))


@pytest.fixture(scope="session")
def ufs(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A UFS phone's readback: ``LU0``/``LU1`` boot LUs, ``LU2`` with a 4096-byte-sector GPT."""
    return build_ufs(tmp_path_factory.mktemp("ufs"))


@pytest.fixture
def p70a_rw(p70a: Layout, tmp_path: Path) -> Layout:
    """A private, writable copy of :func:`p70a` (sparse; the session image stays pristine)."""
    return p70a.copy_to(tmp_path / "p70a")


@pytest.fixture
def s650_rw(s650: Layout, tmp_path: Path) -> Layout:
    """A private, writable copy of :func:`s650` (sparse; the session image stays pristine)."""
    return s650.copy_to(tmp_path / "s650")
