"""jffs2 images for the tests: ``mkfs.jffs2`` for whole file systems, and a small node encoder
for what mkfs cannot make (a file overwritten later, a deleted name, damage).

Why an encoder: mkfs.jffs2 writes fresh images only, where every inode has one version. A
device that ran for a while holds newer nodes after the old ones; the encoder appends such
nodes into the erased space, as the kernel would, so the "newest version wins" rules are tested
on real layouts. It writes the kernel's structures (``include/uapi/linux/jffs2.h``) directly.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkfs.content.jffs2 import (
    COMPR_NONE,
    COMPR_ZLIB,
    MAGIC,
    NODE_ACCURATE,
    NODETYPE_DIRENT,
    NODETYPE_INODE,
    jffs2_crc,
)
from mtkfs.testing.tools import find_tool, run

__all__ = [
    "DirentInfo",
    "align4",
    "dirent_node",
    "dirents",
    "inode_node",
    "mkfs_jffs2",
    "pad_erased",
    "word_swap",
]

#: Directory entry types (``DT_*``) by ``stat`` file type.
DT_DIR = 4
DT_REG = 8
DT_LNK = 10


def align4(n: int) -> int:
    return (n + 3) & ~3


def _node(endian: str, nodetype: int, body_after_header: bytes) -> bytes:
    """Common header + body, padded with 0xFF to 4 bytes as mkfs.jffs2 does."""
    totlen = 12 + len(body_after_header)
    head = struct.pack(endian + "HHI", MAGIC, nodetype | NODE_ACCURATE, totlen)
    node = head + struct.pack(endian + "I", jffs2_crc(head)) + body_after_header
    if not nodetype & NODE_ACCURATE:  # an obsolete node: the kernel clears the bit afterwards
        node = struct.pack(endian + "HH", MAGIC, nodetype) + node[4:]
    return node + b"\xff" * (align4(len(node)) - len(node))


def inode_node(
    endian: str,
    *,
    ino: int,
    version: int,
    mode: int,
    isize: int,
    offset: int = 0,
    data: bytes = b"",
    compr: int = COMPR_NONE,
    dsize: int | None = None,
    mtime_s: int = 1420070400,
    packed: bytes | None = None,
    bad_data_crc: bool = False,
    obsolete: bool = False,
) -> bytes:
    """One inode node holding ``data`` at ``offset`` (compressed as ``compr`` says, or the
    given ``packed`` bytes as they are)."""
    if packed is None:
        packed = zlib.compress(data) if compr == COMPR_ZLIB else data
    dsize = len(data) if dsize is None else dsize
    fields = struct.pack(
        endian + "IIIHHIIIIIIIBBH",
        ino, version, mode, 0, 0, isize, mtime_s, mtime_s, mtime_s,
        offset, len(packed), dsize, compr, 0, 0,
    )  # fmt: skip
    data_crc = jffs2_crc(packed) ^ (1 if bad_data_crc else 0)
    header = struct.pack(endian + "HHI", MAGIC, NODETYPE_INODE, 68 + len(packed))
    header += struct.pack(endian + "I", jffs2_crc(header))
    node_crc = jffs2_crc(header + fields)
    body = fields + struct.pack(endian + "II", data_crc, node_crc) + packed
    nodetype = NODETYPE_INODE & ~NODE_ACCURATE if obsolete else NODETYPE_INODE
    return _node(endian, nodetype, body)


def dirent_node(
    endian: str, *, pino: int, version: int, ino: int, name: bytes, dtype: int = DT_REG
) -> bytes:
    """One dirent: ``name`` in folder ``pino`` is inode ``ino`` (0: the name is deleted)."""
    fields = struct.pack(endian + "IIIIBBH", pino, version, ino, 1420070400, len(name), dtype, 0)
    header = struct.pack(endian + "HHI", MAGIC, NODETYPE_DIRENT, 40 + len(name))
    header += struct.pack(endian + "I", jffs2_crc(header))
    node_crc = jffs2_crc(header + fields)
    body = fields + struct.pack(endian + "II", node_crc, jffs2_crc(name)) + name
    return _node(endian, NODETYPE_DIRENT, body)


@dataclass(frozen=True)
class DirentInfo:
    pino: int
    version: int
    ino: int
    name: bytes
    offset_bytes: int


def dirents(image: bytes, endian: str) -> Iterator[DirentInfo]:
    """The dirents of a fresh mkfs.jffs2 image (nodes back to back, 0xFF between blocks)."""
    pos = 0
    while pos + 12 <= len(image):
        magic, nodetype, totlen = struct.unpack_from(endian + "HHI", image, pos)
        if magic != MAGIC:
            pos += 4
            continue
        if nodetype == NODETYPE_DIRENT:
            pino, version, ino, _mctime, nsize = struct.unpack_from(
                endian + "IIIIB", image, pos + 12
            )
            name = image[pos + 40 : pos + 40 + nsize]
            yield DirentInfo(pino, version, ino, name, pos)
        pos += align4(totlen)


def word_swap(image: bytes) -> bytes:
    """Every 32-bit word byte-reversed: what U-Boot ``md.l`` output turns into when its words
    are written back in the order they were printed (seed 003)."""
    return b"".join(image[i : i + 4][::-1] for i in range(0, len(image) - len(image) % 4, 4))


def pad_erased(image: bytes, size_bytes: int) -> bytes:
    """``image`` followed by erased NOR (0xFF) up to ``size_bytes``."""
    if len(image) > size_bytes:
        raise ValueError(f"{len(image)} bytes do not fit in {size_bytes}")
    return image + b"\xff" * (size_bytes - len(image))


def mkfs_jffs2(
    root: Path,
    out: Path,
    *,
    endian: str,
    erase_bytes: int = 64 << 10,
    options: Sequence[str] = (),
) -> bytes:
    """``mkfs.jffs2`` of the tree at ``root`` (``endian`` "<" or ">"; ``options`` e.g.
    ``("-x", "zlib")``); returns the image bytes."""
    order = "-l" if endian == "<" else "-b"
    args = [find_tool("mkfs.jffs2"), order, "-e", str(erase_bytes), "-r", str(root), "-o", str(out)]
    run([*args, *options])
    return out.read_bytes()
