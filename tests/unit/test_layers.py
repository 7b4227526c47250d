"""DESIGN.md's layer rules, enforced: imports point down the table only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mtkfs"

#: package → modules it must never import (directly).
FORBIDDEN = {
    "maps": (
        "trio",
        "pyfuse3",
        "usb",
        "serial",
        "os",
        "subprocess",
        "mtkfs.transports",
        "mtkfs.cache",
        "mtkfs.fuse",
        "mtkfs.daemon",
        "mtkfs.cli",
    ),
    "protocols": (
        "pathlib",
        "trio",
        "pyfuse3",
        "usb",
        "serial",
        "os",
        "socket",
        "subprocess",
        "mtkfs.links",
        "mtkfs.transports",
        "mtkfs.cache",
        "mtkfs.fuse",
        "mtkfs.daemon",
        "mtkfs.cli",
    ),
    "links": (
        "pyfuse3",
        "mtkfs.transports",
        "mtkfs.cache",
        "mtkfs.fuse",
        "mtkfs.daemon",
        "mtkfs.cli",
    ),
    "transports": ("pyfuse3", "mtkfs.cache", "mtkfs.fuse", "mtkfs.daemon", "mtkfs.cli"),
    "cache": ("pyfuse3", "mtkfs.fuse", "mtkfs.daemon", "mtkfs.cli"),
    "commit": ("pyfuse3", "mtkfs.fuse", "mtkfs.daemon", "mtkfs.cli"),
    "journal": ("trio", "pyfuse3", "mtkfs.cache", "mtkfs.fuse", "mtkfs.daemon", "mtkfs.cli"),
    "recovery": ("pyfuse3", "mtkfs.fuse", "mtkfs.daemon", "mtkfs.cli"),
    "volume": ("pyfuse3", "mtkfs.fuse", "mtkfs.daemon", "mtkfs.cli"),
    "fuse": ("mtkfs.daemon", "mtkfs.cli"),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    target = PACKAGE / layer
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    assert files
    for path in files:
        for name in imports_of(path):
            for banned in FORBIDDEN[layer]:
                assert name != banned and not name.startswith(banned + "."), (
                    f"{path.relative_to(PACKAGE)} imports {name}"
                )


def test_only_fuse_ops_raises_fuse_errors() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "ops.py" and path.parent.name == "fuse":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            assert name != "FUSEError", f"{path} uses FUSEError"
