"""The static inode table: what the mount shows, built once at mount time.

Layout::

    /                       partition files <name>.img (exposed partitions only)
    /regions/<region>.img   each whole region (user, boot1, boot2, rpmb, flash…)
    /.mtkfs/map.json        the resolved map (same as ``mtkfs ls --json``)
    /.mtkfs/status.json     live state: cache counters, warnings, pid

Why static: the partition map is fixed for the life of a mount, so inode numbers, names and sizes
never change and the kernel may cache lookups and attributes for long. Control files are the one
dynamic thing; they are generated on open and served with ``direct_io`` so their size may change.
"""

from __future__ import annotations

import os
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
    """

    inode: int
    name: bytes
    parent: int
    volume: Volume | None = None
    content: Generated | None = None
    children: dict[bytes, int] | None = None

    @property
    def is_dir(self) -> bool:
        """Directories are the nodes with a children table."""
        return self.children is not None


@dataclass
class Tree:
    """All nodes by inode number, with helpers to build them."""

    nodes: dict[int, Node] = field(default_factory=dict)

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
        inode = max(self.nodes) + 1
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

    def volumes(self) -> list[Node]:
        """Every node that shows flash bytes."""
        return [n for n in self.nodes.values() if n.volume is not None]
