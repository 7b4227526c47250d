"""``MNT/<name>.files/``: a parsed partition shown as a read-only folder, filled on first look.

The folder exists from mount time (detection said what the partition holds); its entries are
made when someone first lists or looks inside it: the partition is read through the chunk
cache, parsed in a worker thread (the parsers are sans-I/O and CPU-bound), and turned into
nodes. File contents are produced when a file is opened (decompression happens then, in a
thread). A corrupt file answers EIO; a parser that fails leaves an empty folder and a warning —
never a crashed daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from mtkfs.cache import ChunkCache
from mtkfs.content.view import ContentView, Entry, check_name
from mtkfs.errors import ContentError
from mtkfs.fuse.tree import Node, Tree
from mtkfs.generated import Generated
from mtkfs.volume import Volume

log = logging.getLogger(__name__)

#: Partitions larger than this are not parsed into a view (a mis-detected userdata would
#: otherwise be read whole into memory).
MAX_VIEW_BYTES = 512 << 20
#: Warnings kept per view (a damaged image can produce thousands).
MAX_WARNINGS = 100


def parser_for(kind: str) -> Callable[[bytes], ContentView] | None:
    """The parser of a detected kind, or None if mtkfs cannot show that kind as files."""
    if kind == "jffs2":
        from mtkfs.content.jffs2 import parse_jffs2

        return parse_jffs2
    if kind in ("android-boot", "vendor-boot"):
        from mtkfs.content.bootimg import parse_boot_image

        return parse_boot_image
    return None


@dataclass
class ViewState:
    """One view's life, for ``status.json``."""

    partition: str
    kind: str
    loaded: bool = False
    entries: int = 0
    bytes_read: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "loaded": self.loaded,
            "entries": self.entries,
            "bytes_read": self.bytes_read,
            "warnings": self.warnings,
        }


class ViewFile(Generated):
    """A file of a view: its size known from the parse, its bytes made on open."""

    def __init__(self, entry: Entry, where: str) -> None:
        self.entry = entry
        self.where = where

    def size_bytes(self) -> int:
        return self.entry.size_bytes

    async def render(self) -> bytes:
        make = self.entry.data
        if make is None:
            return b""
        try:
            data: bytes = await trio.to_thread.run_sync(make)
        except (ValueError, OSError, EOFError) as exc:
            raise ContentError(f"{self.where}: {exc}") from exc
        return data


def add_view(
    tree: Tree,
    parent: int,
    volume: Volume,
    cache: ChunkCache,
    kind: str,
    parse: Callable[[bytes], ContentView],
) -> ViewState:
    """The ``<name>.files`` folder of ``volume``, to be filled on first look."""
    state = ViewState(volume.name, kind)
    folder = tree.add_dir(parent, f"{volume.name}.files")

    async def load() -> None:
        if volume.size_bytes > MAX_VIEW_BYTES:
            _warn(state, f"{volume.size_bytes} bytes is too large to parse as {kind}")
            return
        data = await volume.read(cache, 0, volume.size_bytes)
        state.bytes_read = len(data)
        try:
            view = await trio.to_thread.run_sync(parse, data)
        except Exception as exc:  # a parser bug must not take the mount down
            log.exception("%s: parsing it as %s failed", volume.name, kind)
            _warn(state, f"parsing as {kind} failed: {exc}")
            return
        for warning in view.warnings:
            _warn(state, warning)
        state.entries = _populate(tree, folder, view, f"{volume.name}.files", state)
        state.loaded = True
        log.info("%s.files: %d entries (%s)", volume.name, state.entries, view.kind)

    folder.loader = load
    return state


def _populate(tree: Tree, folder: Node, view: ContentView, label: str, state: ViewState) -> int:
    """Nodes for the view's entries (parents first); returns how many were added."""
    inodes: dict[tuple[str, ...], int] = {(): folder.inode}
    added = 0
    for entry in view.entries:
        if not entry.path or not all(check_name(n) for n in entry.path):
            _warn(state, f"skipped an entry with an unusable name: {entry.path!r:.120}")
            continue
        parent = inodes.get(entry.path[:-1])
        if parent is None:
            _warn(state, f"skipped {'/'.join(entry.path)}: its folder is missing")
            continue
        name = entry.path[-1]
        where = f"{label}/{'/'.join(entry.path)}"
        try:
            if entry.kind == "dir":
                node = tree.add_dir(parent, name)
                inodes[entry.path] = node.inode
            elif entry.kind == "symlink":
                node = tree.add_symlink(
                    parent, name, entry.target.encode("utf-8", "surrogateescape")
                )
            else:
                node = tree.add_control(parent, name, ViewFile(entry, where))
        except ValueError:
            _warn(state, f"skipped {where}: the name appears twice")
            continue
        node.mode = entry.mode
        node.mtime_s = entry.mtime_s
        added += 1
    return added


def _warn(state: ViewState, text: str) -> None:
    if len(state.warnings) < MAX_WARNINGS:
        state.warnings.append(text)
        log.warning("%s.files: %s", state.partition, text)
    elif len(state.warnings) == MAX_WARNINGS:
        state.warnings.append("… more warnings not shown")
