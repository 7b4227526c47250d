"""The simulated phones' storage folders: built when missing, rebuilt when an older mtkfs built
them, and never touched when they hold the user's own readback."""

from __future__ import annotations

from pathlib import Path

import pytest

import mtkfs.testing.disk as disk
from mtkfs.errors import SourceError
from mtkfs.testing import sim_mtk


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    built: list[Path] = []

    def fake_build(folder: Path) -> None:
        built.append(folder)
        (folder / "User").write_bytes(b"new")

    monkeypatch.setattr(disk, "build_p70a", fake_build)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return built


def test_default_folders_are_built_and_rebuilt_when_outdated(builds: list[Path]) -> None:
    profile, folder = sim_mtk.parse_sim_source("sim:mt6765")
    assert profile.name == "mt6765" and folder.name == "mt6765"
    sim_mtk.ensure_storage(folder)
    sim_mtk.ensure_storage(folder)
    assert builds == [folder]  # built once
    (folder / ".mtkfs-sim-format").write_text("1\n")
    sim_mtk.ensure_storage(folder)
    assert builds == [folder, folder]
    (folder / ".mtkfs-sim-format").unlink()  # built before markers existed
    sim_mtk.ensure_storage(folder)
    assert len(builds) == 3


def test_a_users_readback_folder_is_never_rebuilt(builds: list[Path], tmp_path: Path) -> None:
    mine = tmp_path / "my-readback"
    mine.mkdir()
    (mine / "User").write_bytes(b"mine")
    sim_mtk.ensure_storage(mine)
    assert builds == [] and (mine / "User").read_bytes() == b"mine"
    empty = tmp_path / "empty"
    sim_mtk.ensure_storage(empty)
    assert builds == [empty]


def test_unknown_phone_names_list_the_known_ones() -> None:
    with pytest.raises(SourceError, match="mt6765-brom"):
        sim_mtk.parse_sim_source("sim:mt9999")
