"""Hostile names become safe file names; small CLI helpers; the error table is complete."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtkfs.errors import UsageError, all_errors
from mtkfs.maps.names import MAX_NAME_CHARS, clean_name, unique_names
from mtkfs.units import human_size, parse_size

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("boot", "boot"),
        ("vbmeta_system_b", "vbmeta_system_b"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "p1"),
        (".mtkfs", "mtkfs"),
        ("a/b", "a_b"),
        ("nul\x00", "nul"),
        ("", "p1"),
        ("   ", "p1"),
        ("sp ace", "sp_ace"),
        ("x" * 200, "x" * MAX_NAME_CHARS),
        ("$(reboot)", "__reboot_"),
    ],
)
def test_clean_name(raw: str, clean: str) -> None:
    assert clean_name(raw, "p1") == clean


@given(st.text())
def test_clean_name_is_always_safe(raw: str) -> None:
    name = clean_name(raw, "p1")
    assert name and "/" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name) <= MAX_NAME_CHARS
    assert name.isascii()


def test_unique_names() -> None:
    names = ["boot", "boot", "BOOT", "system"]
    assert unique_names(names) == ["boot", "boot~2", "BOOT~3", "system"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("256M", 256 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("4096", 4096), ("2GiB", 2 << 30)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_junk() -> None:
    with pytest.raises(UsageError, match="not a size"):
        parse_size("lots")


def test_human_size() -> None:
    assert human_size(3145728) == "3.0 MiB"
    assert human_size(512) == "512 B"


def test_every_error_class_is_documented() -> None:
    table = (ROOT / "docs" / "errors.md").read_text()
    classes = all_errors()
    assert len(classes) >= 18  # the hierarchy as documented, found by walking it
    for cls in classes:
        assert f"`{cls.__name__}`" in table, f"{cls.__name__} missing from docs/errors.md"
