"""pyfuse3 ``Operations`` for mtkfs: thin handlers over the tree, the volumes and the cache.

Rules:

* This is the only module that turns errors into ``FUSEError``. Every handler is wrapped by
  :func:`translate_errors`: an :class:`~mtkfs.errors.MtkfsError` becomes its ``errno``; anything
  else is logged once with its traceback and becomes EIO — because pyfuse3 tears the whole mount
  down if any other exception escapes a handler (pyfuse3 issue #93). With ``MTKFS_STRICT=1`` (the
  test suite sets it) unexpected exceptions propagate instead, so bugs fail tests loudly.
* Read-only unless the mount has a :class:`~mtkfs.commit.WriteBack` (``-o rw``). Then partition
  files take writes (the volume applies the protection policy), ``fsync`` and ``close`` commit
  them and report EIO if the device did not verify them, and the layout stays fixed: create,
  remove, rename, truncate and extend get EPERM (EROFS on a read-only mount).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, TypeVar

import pyfuse3
import trio

from mtkfs.cache import ChunkCache
from mtkfs.commit import WriteBack
from mtkfs.errors import FixedLayoutError, MtkfsError, ReadOnlyError
from mtkfs.fuse.tree import Node, Tree

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: The partition table is fixed for the mount's life: let the kernel cache names and sizes.
_STATIC_TIMEOUT_S = 300.0


def _perm(node: Node, default: int) -> int:
    """The permission bits shown: a view entry's own, else the mount's ``default``."""
    return default if node.mode is None else node.mode & 0o7777


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


def _drop_kernel_pages(inode: int) -> None:
    """Worker thread: make the kernel forget its cached pages of ``inode``.

    A thread because the kernel may wait for a read of that inode in flight, which the event
    loop must stay free to answer (pyfuse3's advice for ``invalidate_inode``).
    """
    try:
        pyfuse3.invalidate_inode(pyfuse3.InodeT(inode))
    except OSError as exc:  # ENOENT: the kernel holds nothing of it
        log.debug("invalidate inode %d: %s", inode, exc)


@dataclass
class _OpenFile:
    """An open file handle: the node, a content snapshot for control files, and whether it
    was opened for writing (its close then commits)."""

    node: Node
    snapshot: bytes | None = None
    writing: bool = False


class MtkfsOperations(pyfuse3.Operations):
    """Serve a :class:`Tree`: read-only, or read-write through a :class:`WriteBack`.

    Attributes:
        tree: the inode table.
        cache: the chunk cache volumes read through.
        writeback: the write pipeline of an ``-o rw`` mount (None: read-only).
        mtime_ns: timestamp shown on every entry (the source's mtime).
    """

    supports_dot_lookup = True
    # Write-through: every write(2) reaches us, so fsync/close know exactly what to commit.
    enable_writeback_cache = False

    def __init__(
        self,
        tree: Tree,
        cache: ChunkCache,
        *,
        mtime_s: float,
        writeback: WriteBack | None = None,
    ) -> None:
        super().__init__()
        self.tree = tree
        self.cache = cache
        self.writeback = writeback
        self.mtime_ns = int(mtime_s * 1e9)
        self.uid = os.getuid()
        self.gid = os.getgid()
        self._open: dict[int, _OpenFile] = {}
        self._next_fh = 1
        self._load_lock = trio.Lock()

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
            attr.st_mode = pyfuse3.ModeT(stat.S_IFDIR | _perm(node, 0o555))
            attr.st_nlink = 2
            size = 0
        elif node.symlink is not None:
            attr.st_mode = pyfuse3.ModeT(stat.S_IFLNK | 0o777)
            attr.st_nlink = 1
            size = len(node.symlink)
        else:
            writable = (
                self.writeback is not None
                and node.volume is not None
                and node.volume.locked is None
            )
            attr.st_mode = pyfuse3.ModeT(stat.S_IFREG | _perm(node, 0o644 if writable else 0o444))
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
        mtime_ns = self.mtime_ns if node.mtime_s is None else int(node.mtime_s * 1e9)
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime_ns
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

    def _refuse_layout_change(self, what: str) -> NoReturn:
        """Create/remove/rename/resize: EROFS on a read-only mount, EPERM on an rw one."""
        if self.writeback is None:
            raise ReadOnlyError(f"{what}: the mount is read-only")
        raise FixedLayoutError(
            f"{what}: partition files are the device's partition table; they cannot be created, "
            "removed, renamed, truncated or extended (write with dd conv=notrunc)"
        )

    async def _loaded(self, node: Node) -> Node:
        """A ``.files`` folder is filled on first look; concurrent looks wait for the one fill."""
        if node.loader is not None:
            async with self._load_lock:
                if node.loader is not None:
                    loader, node.loader = node.loader, None
                    await loader()
        return node

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
        await self._loaded(parent)
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
        node = await self._loaded(self._node(fh))
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
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.symlink is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.symlink

    @translate_errors
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if node.symlink is not None:
            raise pyfuse3.FUSEError(errno.ELOOP)
        name = node.name.decode(errors="replace")
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing or flags & os.O_TRUNC:
            if self.writeback is None:
                raise ReadOnlyError(f"{name}: the mount is read-only (mount with -o rw to write)")
            if node.volume is None:
                raise ReadOnlyError(f"{name} is generated by mtkfs and cannot be written")
            node.volume.check_writable()
            if self.writeback.failsafe is not None:
                raise ReadOnlyError(
                    f"{name}: the mount turned read-only after a failed write "
                    f"({self.writeback.failsafe})"
                )
            if flags & os.O_TRUNC:
                self._refuse_layout_change(f"open {name} with O_TRUNC")
        fh = self._next_fh
        self._next_fh += 1
        if node.content is not None:
            self._open[fh] = _OpenFile(node, await node.content.render())
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), direct_io=True)
        self._open[fh] = _OpenFile(node, writing=writing)
        # keep_cache: nothing can change the bytes under a read-only mount, so the kernel's
        # page cache may keep what it read across opens (a second `cp` costs no device reads).
        # On an rw mount the same bytes show through several files (a partition and its
        # region), so each open starts from a fresh page cache.
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=self.writeback is None)

    @translate_errors
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        if handle.snapshot is not None:
            return handle.snapshot[off : off + size]
        volume = handle.node.volume
        assert volume is not None
        return await volume.read(self.cache, off, size)

    @translate_errors
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        volume = handle.node.volume
        if self.writeback is None or volume is None or not handle.writing:
            raise pyfuse3.FUSEError(errno.EBADF)
        written = await volume.write(self.writeback, off, buf)
        start = volume.offset_bytes + off
        await self._drop_stale_pages(volume.region, start, start + written, keep=handle.node)
        return written

    async def _drop_stale_pages(
        self, region: str, start: int, end: int, *, keep: Node | None = None
    ) -> None:
        """The kernel caches pages per file, and the same bytes show through several files (a
        partition, its region, preloader.bin). ``keep_cache`` off only drops them at the next
        open: make the other *open* files showing ``[start, end)`` of ``region`` forget theirs.
        """
        inodes = set()
        for handle in self._open.values():
            volume = handle.node.volume
            if handle.node is keep or volume is None or volume.region != region:
                continue
            if volume.offset_bytes < end and start < volume.offset_bytes + volume.size_bytes:
                inodes.add(handle.node.inode)
        for inode in sorted(inodes):
            await trio.to_thread.run_sync(_drop_kernel_pages, inode)

    async def _sync(self, handle: _OpenFile, *, any_mode: bool = False) -> None:
        """Commit the file's dirty chunks: for handles opened for writing, or any handle."""
        if self.writeback is None or handle.node.volume is None:
            return
        if handle.writing or any_mode:
            try:
                await handle.node.volume.sync(self.writeback)
            except MtkfsError:
                # Open files may still cache the bytes that did not verify (the writer's own
                # pages too): reads must show what the device holds.
                for failure in list(self.writeback.failures.values()):
                    end = failure.offset_bytes + failure.size_bytes
                    await self._drop_stale_pages(failure.region, failure.offset_bytes, end)
                raise

    @translate_errors
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        # fsync(2) makes the *file's* data durable, whichever descriptor it is called on:
        # `sync FILE` opens it read-only while the writer still holds its own descriptor.
        await self._sync(self._handle(fh), any_mode=True)

    @translate_errors
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        # close(2) returns what flush returns: this is where a failed commit reaches `dd`/`cp`.
        await self._sync(self._handle(fh))

    @translate_errors
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        handle = self._open.pop(fh, None)
        if handle is not None:
            # Nobody hears release's answer; flush already reported. Commit what is left
            # (written through a dup'ed descriptor after the last flush).
            try:
                await self._sync(handle)
            except MtkfsError as exc:
                log.warning("commit on release of %s: %s", handle.node.name.decode(), exc)

    @translate_errors
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        current = await self._full_attr(node)
        name = node.name.decode(errors="replace")
        if fields.update_size and attr.st_size != current.st_size:
            self._refuse_layout_change(f"resize {name} to {attr.st_size} bytes")
        if fields.update_mode or fields.update_uid or fields.update_gid:
            self._refuse_layout_change(f"change owner or mode of {name}")
        # Same size, or only times: accept and ignore (dd and cp touch these).
        return current

    @translate_errors
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._refuse_layout_change(f"create {name.decode(errors='replace')}")

    @translate_errors
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_layout_change(f"create {name.decode(errors='replace')}")

    @translate_errors
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_layout_change(f"create folder {name.decode(errors='replace')}")

    @translate_errors
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_layout_change(f"create link {name.decode(errors='replace')}")

    @translate_errors
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._refuse_layout_change(f"create link {new_name.decode(errors='replace')}")

    @translate_errors
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse_layout_change(f"remove {name.decode(errors='replace')}")

    @translate_errors
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        self._refuse_layout_change(f"remove {name.decode(errors='replace')}")

    @translate_errors
    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._refuse_layout_change(f"rename {name_old.decode(errors='replace')}")

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
