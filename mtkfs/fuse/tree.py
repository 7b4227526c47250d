"""The static inode table: what the mount shows, built once at mount time.

Layout::

    /                       partition files <name>.img (exposed partitions only)
    /regions/<region>.img   each whole region (user, boot1, boot2, rpmb, flash…)
    /.mtkfs/map.json        the resolved map (same as ``mtkfs ls --json``)
    /.mtkfs/status.json     live state: cache counters, warnings, pid
    /<name>.files/          what a jffs2 or boot-image partition holds (filled on first look)

Why static: the partition map is fixed for the life of a mount, so inode numbers, names and sizes
never change and the kernel may cache lookups and attributes for long. Control files are the one
dynamic thing; they are generated on open and served with ``direct_io`` so their size may change.
The ``.files`` folders are filled once, on first look (parsing a partition means reading all of
it, which over a slow link must not happen at mount time); after that they are static too.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mtkfs.generated import Generated
from mtkfs.volume import Volume

ROOT_INODE = 1  # pyfuse3.ROOT_INODE; repeated here so this module needs no pyfuse3 import


@dataclass
class Node:
    """One entry of the tree.

    Attributes:
        inode: its inode number (stable for the mount's life).
        name: file name in its parent (bytes, as FUSE wants).
        parent: parent's inode number (root is its own parent).
        volume: for partition/region files, the byte range they show.
        content: for generated files, what produces their bytes.
        children: for directories, name → inode.
        loader: for a directory filled on first look: fills it (then set to None).
        symlink: a symlink's target.
        mode: permission bits shown instead of the mount's own (files inside a ``.files``
            view show the modes they have there).
        mtime_s: modification time shown instead of the source's.
    """

    inode: int
    name: bytes
    parent: int
    volume: Volume | None = None
    content: Generated | None = None
    children: dict[bytes, int] | None = None
    loader: Callable[[], Awaitable[None]] | None = None
    symlink: bytes | None = None
    mode: int | None = None
    mtime_s: float | None = None

    @property
    def is_dir(self) -> bool:
        """Directories are the nodes with a children table."""
        return self.children is not None


@dataclass
class Tree:
    """All nodes by inode number, with helpers to build them."""

    nodes: dict[int, Node] = field(default_factory=dict)
    #: The next inode number (a counter: a big ``.files`` view adds thousands of nodes).
    _next_inode: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.nodes[ROOT_INODE] = Node(ROOT_INODE, b"", ROOT_INODE, children={})

    def _add(
        self,
        parent: int,
        name: str,
        *,
        volume: Volume | None = None,
        content: Generated | None = None,
        children: dict[bytes, int] | None = None,
    ) -> Node:
        if self._next_inode == 0:
            self._next_inode = max(self.nodes) + 1
        inode = self._next_inode
        self._next_inode += 1
        encoded = os.fsencode(name)
        parent_node = self.nodes[parent]
        assert parent_node.children is not None, "parent must be a directory"
        if encoded in parent_node.children:
            raise ValueError(f"duplicate name {name!r} in the mount tree")
        node = Node(inode, encoded, parent, volume=volume, content=content, children=children)
        self.nodes[inode] = node
        parent_node.children[encoded] = inode
        return node

    def add_dir(self, parent: int, name: str) -> Node:
        """A directory under ``parent``."""
        return self._add(parent, name, children={})

    def add_volume(self, parent: int, name: str, volume: Volume) -> Node:
        """A fixed-size file showing a byte range."""
        return self._add(parent, name, volume=volume)

    def add_control(self, parent: int, name: str, content: Generated) -> Node:
        """A generated file (JSON status, scatter.txt and the like)."""
        return self._add(parent, name, content=content)

    def add_symlink(self, parent: int, name: str, target: bytes) -> Node:
        """A symlink (inside a ``.files`` view)."""
        node = self._add(parent, name)
        node.symlink = target
        return node

    def volumes(self) -> list[Node]:
        """Every node that shows flash bytes."""
        return [n for n in self.nodes.values() if n.volume is not None]
