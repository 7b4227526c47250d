"""pyfuse3 ``Operations`` for mtkfs: thin handlers over the tree, the volumes and the cache.

Rules:

* This is the only module that turns errors into ``FUSEError``. Every handler is wrapped by
  :func:`translate_errors`: an :class:`~mtkfs.errors.MtkfsError` becomes its ``errno``; anything
  else is logged once with its traceback and becomes EIO — because pyfuse3 tears the whole mount
  down if any other exception escapes a handler (pyfuse3 issue #93). With ``MTKFS_STRICT=1`` (the
  test suite sets it) unexpected exceptions propagate instead, so bugs fail tests loudly.
* Read-only in this version: opens for writing get EROFS (the mount is also made with ``ro``).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from mtkfs.cache import ChunkCache
from mtkfs.errors import MtkfsError, ReadOnlyError
from mtkfs.fuse.tree import Node, Tree

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: The partition table is fixed for the mount's life: let the kernel cache names and sizes.
_STATIC_TIMEOUT_S = 300.0


def translate_errors(
    handler: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Make a handler raise only ``FUSEError`` (see the module rules)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except MtkfsError as exc:
            log.warning("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from exc
        except Exception as exc:
            if os.environ.get("MTKFS_STRICT") == "1":
                raise
            log.exception("unexpected error in %s; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from exc

    return wrapper


@dataclass
class _OpenFile:
    """An open file handle: the node, plus a content snapshot for control files."""

    node: Node
    snapshot: bytes | None = None


class MtkfsOperations(pyfuse3.Operations):
    """Serve a :class:`Tree` read-only.

    Attributes:
        tree: the inode table.
        cache: the chunk cache volumes read through.
        mtime_ns: timestamp shown on every entry (the source's mtime).
    """

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, tree: Tree, cache: ChunkCache, *, mtime_s: float) -> None:
        super().__init__()
        self.tree = tree
        self.cache = cache
        self.mtime_ns = int(mtime_s * 1e9)
        self.uid = os.getuid()
        self.gid = os.getgid()
        self._open: dict[int, _OpenFile] = {}
        self._next_fh = 1

    # -- helpers -------------------------------------------------------------------------------

    def _node(self, inode: int) -> Node:
        node = self.tree.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attr(self, node: Node, size_bytes: int = 0) -> pyfuse3.EntryAttributes:
        """Attributes of ``node``; generated files take their size from ``size_bytes``."""
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = pyfuse3.InodeT(node.inode)
        attr.generation = 0
        timeout = _STATIC_TIMEOUT_S
        if node.is_dir:
            attr.st_mode = pyfuse3.ModeT(stat.S_IFDIR | 0o555)
            attr.st_nlink = 2
            size = 0
        else:
            attr.st_mode = pyfuse3.ModeT(stat.S_IFREG | 0o444)
            attr.st_nlink = 1
            if node.volume is not None:
                size = node.volume.size_bytes
            else:
                size = size_bytes
                timeout = 0.0  # generated: always ask again
        attr.st_size = size
        attr.st_blocks = (size + 511) // 512
        attr.st_blksize = 1 << 16
        attr.st_uid = self.uid
        attr.st_gid = self.gid
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.mtime_ns
        attr.entry_timeout = timeout
        attr.attr_timeout = timeout
        return attr

    async def _full_attr(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes with the true size of a generated file (rendering it if need be)."""
        if node.content is None:
            return self._attr(node)
        size = node.content.size_bytes()
        if size is None:
            size = len(await node.content.render())
        return self._attr(node, size)

    def _handle(self, fh: int) -> _OpenFile:
        handle = self._open.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    # -- handlers ------------------------------------------------------------------------------

    @translate_errors
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._attr(parent)
        if name == b"..":
            return self._attr(self._node(parent.parent))
        if parent.children is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        inode = parent.children.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._full_attr(self.tree.nodes[inode])

    @translate_errors
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return await self._full_attr(self._node(inode))

    @translate_errors
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        if not self._node(inode).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return pyfuse3.FileHandleT(inode)

    @translate_errors
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        node = self._node(fh)
        assert node.children is not None
        # Offsets are positions in name order + 1: stable, because the tree never changes.
        entries = sorted(node.children.items())
        for position in range(start_id, len(entries)):
            name, inode = entries[position]
            # Directory listings only need names and types: never render generated files here.
            attr = self._attr(self.tree.nodes[inode])
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name), attr, position + 1):
                break

    @translate_errors
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    @translate_errors
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise ReadOnlyError(f"{node.name.decode(errors='replace')} is read-only")
        fh = self._next_fh
        self._next_fh += 1
        if node.content is not None:
            self._open[fh] = _OpenFile(node, await node.content.render())
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), direct_io=True)
        self._open[fh] = _OpenFile(node)
        # keep_cache: nothing can change the bytes under a read-only mount, so the kernel's
        # page cache may keep what it read across opens (a second `cp` costs no device reads).
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)

    @translate_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        if handle.snapshot is not None:
            return handle.snapshot[off : off + size]
        volume = handle.node.volume
        assert volume is not None
        return await volume.read(self.cache, off, size)

    @translate_errors
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        self._open.pop(fh, None)

    @translate_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = pyfuse3.StatvfsData()
        block_bytes = 4096
        total = sum(n.volume.size_bytes for n in self.tree.volumes() if n.volume is not None)
        stats.f_bsize = block_bytes
        stats.f_frsize = block_bytes
        stats.f_blocks = (total + block_bytes - 1) // block_bytes
        stats.f_bfree = stats.f_bavail = 0
        stats.f_files = len(self.tree.nodes)
        stats.f_ffree = stats.f_favail = 0
        stats.f_namemax = 255
        return stats
