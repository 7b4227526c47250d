"""jffs2 without a kernel MTD: a partition's bytes → a :class:`ContentView` of its tree.

Why a parser of our own: jefferson (MIT) only extracts to a directory and guesses the byte order
from the first two bytes; dissect.jffs (AGPL) reads little-endian only. This one is sans-I/O,
reads every byte order (and the word-swapped dumps U-Boot's ``md.l`` leaves, seed 003), and
decompresses a file only when it is opened.

What it does, after the kernel (``fs/jffs2``): nodes start 4-byte aligned with magic 0x1985; a
header whose CRC fails is stray bytes (look 4 bytes further), a node whose body CRC fails is
skipped whole (its header vouches for its length), and a node with the ACCURATE bit cleared was
made obsolete by the kernel. Per inode the node with the highest version gives the metadata;
data nodes are laid in version order (the newest bytes of a range win), then cut to the latest
size. Per (parent, name) the dirent with the highest version wins; inode 0 there is a deletion.

Damage never raises from :func:`parse_jffs2`; it becomes warnings (counted per kind). A data
node whose data CRC fails is dropped, as the kernel does (a write cut by power loss leaves the
older bytes in place); if no other node covers its range, the file's ``data()`` raises
ValueError rather than showing zeros where data was lost. Inodes no directory leads to (deleted
files not yet garbage-collected, or damage) are not shown: one warning counts them. Device
nodes, fifos and sockets are skipped with a warning.
"""

from __future__ import annotations

import array
import logging
import stat
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from mtkfs.content.view import ContentView, Entry, check_name

__all__ = ["jffs2_crc", "looks_like_jffs2", "parse_jffs2"]

log = logging.getLogger(__name__)

MAGIC = 0x1985
NODE_ACCURATE = 0x2000
FEATURE_MASK = 0xC000
FEATURE_INCOMPAT = 0xC000
NODETYPE_DIRENT = 0xE001
NODETYPE_INODE = 0xE002
#: Clean marker, padding, erase-block summary, xattr and xref: nothing the tree needs.
SKIPPED_NODETYPES = frozenset({0x2003, 0x2004, 0x2006, 0xE008, 0xE009})
ROOT_INO = 1

COMPR_NONE = 0x00
COMPR_ZERO = 0x01
COMPR_RTIME = 0x02
COMPR_ZLIB = 0x06
COMPR_LZO = 0x07
COMPR_NAMES = {3: "rubinmips", 4: "copy", 5: "dynrubin", 8: "lzma", 0x15: "lzma"}

HEADER_BYTES = 12
INODE_BYTES = 68
DIRENT_BYTES = 40
#: A compressed data node holds one page (4 KiB; 64 KiB on some kernels): more is damage.
MAX_NODE_DATA_BYTES = 1 << 20
#: A file larger than this is listed but not produced (``data()`` raises): a damaged size
#: field must not make the daemon allocate gigabytes.
MAX_FILE_BYTES = 256 << 20
#: Folders nested deeper than this are not shown (a crafted chain would cost quadratic memory).
MAX_DEPTH = 256
#: A symlink target longer than this (PATH_MAX - 1) is damage.
MAX_TARGET_BYTES = 4095
#: Examples kept per kind of warning.
EXAMPLES = 5

#: (name, struct byte order, word-swapped) for every way a jffs2 image can reach us.
ORDERS = (
    ("jffs2-le", "<", False),
    ("jffs2-be", ">", False),
    ("jffs2-le-wordswapped", "<", True),
    ("jffs2-be-wordswapped", ">", True),
)
#: Where the magic's bytes sit in each order: (bytes, offset inside the 4-byte group).
_MAGIC_AT = {
    "jffs2-le": (b"\x85\x19", 0),
    "jffs2-be": (b"\x19\x85", 0),
    "jffs2-le-wordswapped": (b"\x19\x85", 2),
    "jffs2-be-wordswapped": (b"\x85\x19", 2),
}
#: Header candidates examined per order while voting (bounds a garbage partition's cost).
_VOTE_CANDIDATES = 4096
#: Valid headers after which an order has clearly won.
_VOTE_ENOUGH = 16


def jffs2_crc(data: bytes | memoryview) -> int:
    """The kernel's ``crc32(0, data, len)``: CRC-32 seeded with 0 and without the final xor,
    i.e. zlib's CRC-32 with both inversions undone."""
    return zlib.crc32(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def looks_like_jffs2(head: bytes) -> str | None:
    """ "jffs2-le", "jffs2-be", "jffs2-le-wordswapped", "jffs2-be-wordswapped", or None.

    ``head`` is the first few KiB of a partition. Every 4-byte-aligned node header (a clean
    marker at 0, or any node after erased 0xFF) votes for the byte order under which its header
    CRC holds; one valid CRC-32 is already strong evidence. A partition whose head is all
    erased cannot be told apart and gives None.
    """
    return _detect(head)


def parse_jffs2(data: bytes) -> ContentView:
    """The tree of the jffs2 in ``data`` (a whole partition; erased areas 0xFF)."""
    notes = _Notes()
    order = _detect(data)
    view = ContentView("jffs2")
    if order is None:
        view.warnings.append("no jffs2 node found (no valid header in any byte order)")
        return view
    _name, endian, swapped = next(o for o in ORDERS if o[0] == order)
    if swapped:
        data = _unswap(data)
        view.warnings.append(
            "word-swapped dump (every 32-bit word byte-reversed, as U-Boot md.l output saved in"
            " text order): parsed after swapping it back"
        )
    inodes, dirents = _scan(data, endian, notes)
    view.entries = _tree(data, inodes, dirents, notes)
    view.warnings.extend(notes.render())
    return view


# -- byte order --------------------------------------------------------------------------------


def _detect(raw: bytes) -> str | None:
    votes = dict.fromkeys(_MAGIC_AT, 0)
    for name, endian, swapped in ORDERS:
        pattern, phase = _MAGIC_AT[name]
        pos = raw.find(pattern)
        seen = 0
        while pos >= 0 and seen < _VOTE_CANDIDATES and votes[name] < _VOTE_ENOUGH:
            start = pos - phase
            if start % 4 == 0 and start + HEADER_BYTES <= len(raw):
                seen += 1
                header = raw[start : start + HEADER_BYTES]
                if _header_ok(_unswap(header) if swapped else header, endian):
                    votes[name] += 1
            pos = raw.find(pattern, pos + 1)
    best = max(votes, key=lambda name: votes[name])
    return best if votes[best] else None


def _header_ok(header: bytes, endian: str) -> bool:
    magic, nodetype, totlen, hdr_crc = struct.unpack_from(endian + "HHII", header)
    packed = struct.pack(endian + "HHI", magic, nodetype | NODE_ACCURATE, totlen)
    return bool(magic == MAGIC and totlen >= HEADER_BYTES and jffs2_crc(packed) == hdr_crc)


def _unswap(raw: bytes) -> bytes:
    """Reverse the bytes of every 32-bit word (a trailing partial word is dropped)."""
    words = array.array("I")
    words.frombytes(raw[: len(raw) - len(raw) % 4])
    words.byteswap()
    return words.tobytes()


# -- scanning ----------------------------------------------------------------------------------


class _DataNode(NamedTuple):  # a tuple: made once per node, and there can be 100 000 of them
    version: int
    offset: int
    dsize: int
    compr: int
    start: int  # of the compressed bytes in the partition
    csize: int


@dataclass(slots=True)
class _Inode:
    nodes: list[_DataNode] = field(default_factory=list)
    lost: list[tuple[int, int]] = field(default_factory=list)  # ranges of nodes with bad data
    version: int = -1
    mode: int = 0
    isize: int = 0
    mtime_s: int = 0


class _Dirent(NamedTuple):
    version: int
    ino: int


class _Notes:
    """Warnings counted per kind, with a few examples each: a damaged image can hold thousands
    of bad nodes, and one line per kind says more than a thousand lines."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(example)

    def render(self) -> list[str]:
        lines = []
        for kind, count in self.counts.items():
            shown = ", ".join(self.examples[kind]) + (", …" if count > EXAMPLES else "")
            lines.append(f"{kind}: {count} ({shown})")
        return lines


_INODE = {e: struct.Struct(e + "HHIIIIIHHIIIIIIIBBHII") for e in "<>"}
_DIRENT = {e: struct.Struct(e + "HHIIIIIIBBHII") for e in "<>"}
_HEADER = {e: struct.Struct(e + "HHII") for e in "<>"}


def _scan(
    buf: bytes, endian: str, notes: _Notes
) -> tuple[dict[int, _Inode], dict[tuple[int, bytes], _Dirent]]:
    """Every valid node of ``buf``: data nodes per inode, the newest dirent per (parent, name)."""
    inodes: dict[int, _Inode] = {}
    dirents: dict[tuple[int, bytes], _Dirent] = {}
    magic = struct.pack(endian + "H", MAGIC)
    header = _HEADER[endian]
    size = len(buf)
    pos = buf.find(magic)
    while pos >= 0:
        if pos % 4:
            pos = buf.find(magic, pos + 4 - pos % 4)
            continue
        if pos + HEADER_BYTES > size:
            break
        _magic, nodetype, totlen, hdr_crc = header.unpack_from(buf, pos)
        if nodetype & NODE_ACCURATE:
            crc = jffs2_crc(buf[pos : pos + 8])
        else:  # the kernel obsoletes a node by clearing this bit; the CRC was made with it set
            crc = jffs2_crc(struct.pack(endian + "HHI", MAGIC, nodetype | NODE_ACCURATE, totlen))
        if crc != hdr_crc or totlen < HEADER_BYTES or pos + totlen > size:
            kind = "stray magic bytes (bad header CRC)" if crc != hdr_crc else "truncated nodes"
            notes.add(kind, f"at {pos:#x}")
            pos = buf.find(magic, pos + 4)
            continue
        if not nodetype & NODE_ACCURATE:
            pass  # obsolete: superseded or deleted, as the kernel marked it
        elif nodetype == NODETYPE_INODE:
            _inode_node(buf, pos, totlen, endian, inodes, notes)
        elif nodetype == NODETYPE_DIRENT:
            _dirent_node(buf, pos, totlen, endian, dirents, notes)
        elif nodetype not in SKIPPED_NODETYPES and nodetype & FEATURE_MASK == FEATURE_INCOMPAT:
            notes.add("unknown incompatible nodes (the tree may be incomplete)", f"{nodetype:#x}")
        pos = buf.find(magic, pos + ((totlen + 3) & ~3))
    return inodes, dirents


def _inode_node(
    buf: bytes, pos: int, totlen: int, endian: str, inodes: dict[int, _Inode], notes: _Notes
) -> None:
    if totlen < INODE_BYTES:
        notes.add("inode nodes too short", f"at {pos:#x}")
        return
    fields = _INODE[endian].unpack_from(buf, pos)
    ino, version, mode, _uid, _gid, isize, _atime, mtime = fields[4:12]
    offset, csize, dsize, compr, _ucompr, _flags, data_crc, node_crc = fields[13:]
    if jffs2_crc(buf[pos : pos + INODE_BYTES - 8]) != node_crc:
        notes.add("inode nodes with a bad node CRC (skipped)", f"at {pos:#x}")
        return
    start = pos + INODE_BYTES
    if (
        ino == 0
        or INODE_BYTES + csize > totlen
        or (compr != COMPR_ZERO and dsize > MAX_NODE_DATA_BYTES)
    ):
        notes.add("inode nodes with impossible fields (skipped)", f"at {pos:#x}")
        return
    inode = inodes.get(ino)
    if inode is None:
        inode = inodes[ino] = _Inode()
    if jffs2_crc(buf[start : start + csize]) != data_crc:
        notes.add("data nodes with a bad data CRC (skipped)", f"inode {ino} at {pos:#x}")
        inode.lost.append((offset, offset + dsize))
        return
    if version >= inode.version:
        inode.version, inode.mode, inode.isize, inode.mtime_s = version, mode, isize, mtime
    if dsize:
        inode.nodes.append(_DataNode(version, offset, dsize, compr, start, csize))


def _dirent_node(
    buf: bytes,
    pos: int,
    totlen: int,
    endian: str,
    dirents: dict[tuple[int, bytes], _Dirent],
    notes: _Notes,
) -> None:
    if totlen < DIRENT_BYTES:
        notes.add("dirent nodes too short", f"at {pos:#x}")
        return
    fields = _DIRENT[endian].unpack_from(buf, pos)
    pino, version, ino, _mctime, nsize, _type, _unused, node_crc, name_crc = fields[4:]
    if jffs2_crc(buf[pos : pos + DIRENT_BYTES - 8]) != node_crc:
        notes.add("dirent nodes with a bad node CRC (skipped)", f"at {pos:#x}")
        return
    name = buf[pos + DIRENT_BYTES : pos + DIRENT_BYTES + nsize]
    if not nsize or DIRENT_BYTES + nsize > totlen or jffs2_crc(name) != name_crc:
        notes.add("dirent nodes with a bad name (skipped)", f"at {pos:#x}")
        return
    key = (pino, name)
    known = dirents.get(key)
    if known is None or version >= known.version:
        dirents[key] = _Dirent(version, ino)


# -- the tree ----------------------------------------------------------------------------------


def _tree(
    buf: bytes,
    inodes: dict[int, _Inode],
    dirents: dict[tuple[int, bytes], _Dirent],
    notes: _Notes,
) -> list[Entry]:
    """Entries reachable from the root, folders before what they hold (breadth first)."""
    children: dict[int, list[tuple[bytes, int]]] = {}
    for (pino, raw_name), dirent in dirents.items():
        if dirent.ino:  # 0: the name was deleted
            children.setdefault(pino, []).append((raw_name, dirent.ino))
    entries: list[Entry] = []
    shown_dirs = {ROOT_INO}
    reached = {ROOT_INO}
    queue: deque[tuple[int, tuple[str, ...]]] = deque([(ROOT_INO, ())])
    while queue:
        dir_ino, path = queue.popleft()
        for raw_name, ino in sorted(children.get(dir_ino, ())):
            name = raw_name.decode("utf-8", "surrogateescape")
            where = "/".join((*path, name))
            if not check_name(name):
                notes.add("unusable names (skipped)", repr(raw_name)[:60])
                continue
            inode = inodes.get(ino)
            if inode is None or inode.version < 0:
                notes.add("names of inodes with no valid node (skipped)", where)
                continue
            reached.add(ino)
            entry = _entry(buf, (*path, name), ino, inode, notes)
            if entry is None:
                continue
            if entry.kind == "dir":
                if ino in shown_dirs:
                    notes.add("folders reached twice, a loop or a hard link (skipped)", where)
                    continue
                if len(entry.path) >= MAX_DEPTH:
                    notes.add(f"folders deeper than {MAX_DEPTH} (skipped)", where[:120])
                    continue
                shown_dirs.add(ino)
                queue.append((ino, entry.path))
            entries.append(entry)
    orphans = [ino for ino in inodes if ino not in reached]
    for ino in orphans:
        notes.add("inodes no folder leads to (deleted or damaged; not shown)", str(ino))
    return entries


def _entry(
    buf: bytes, path: tuple[str, ...], ino: int, inode: _Inode, notes: _Notes
) -> Entry | None:
    perm = stat.S_IMODE(inode.mode)
    mtime = float(inode.mtime_s)
    if stat.S_ISDIR(inode.mode):
        return Entry(path, "dir", perm, mtime)
    if stat.S_ISREG(inode.mode):
        make = partial(_file_bytes, buf, tuple(inode.nodes), tuple(inode.lost), inode.isize)
        return Entry(path, "file", perm, mtime, inode.isize, data=make)
    where = "/".join(path)
    if stat.S_ISLNK(inode.mode):
        try:
            if inode.isize > MAX_TARGET_BYTES:
                raise ValueError(f"a target of {inode.isize} bytes")
            raw = _file_bytes(buf, tuple(inode.nodes), tuple(inode.lost), inode.isize)
        except ValueError as exc:
            notes.add("symlinks whose target cannot be read (skipped)", f"{where}: {exc}")
            return None
        if not raw or b"\0" in raw:
            notes.add("symlinks with an empty or NUL-bearing target (skipped)", where)
            return None
        target = raw.decode("utf-8", "surrogateescape")
        return Entry(path, "symlink", perm, mtime, len(raw), target=target)
    notes.add("device nodes, fifos and sockets (not shown)", where)
    return None


# -- file data ---------------------------------------------------------------------------------


def _file_bytes(
    buf: bytes, nodes: tuple[_DataNode, ...], lost: tuple[tuple[int, int], ...], size: int
) -> bytes:
    """The first ``size`` bytes of a file: its data nodes laid in version order over zeros."""
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{size} bytes is more than mtkfs shows of one jffs2 file")
    if lost:
        _check_lost(nodes, lost, size)
    out = bytearray(size)
    for node in sorted(nodes, key=lambda n: n.version):
        if node.offset >= size:
            continue
        end = min(node.offset + node.dsize, size)
        if node.compr == COMPR_ZERO:
            out[node.offset : end] = bytes(end - node.offset)
        else:
            out[node.offset : end] = _decompress(buf, node)[: end - node.offset]
    return bytes(out)


def _check_lost(nodes: tuple[_DataNode, ...], lost: tuple[tuple[int, int], ...], size: int) -> None:
    """Raise if a range held by a node with a bad data CRC is not covered by a valid node."""
    covered = sorted((n.offset, n.offset + n.dsize) for n in nodes)
    for lost_start, lost_end in lost:
        start, end = lost_start, min(lost_end, size)
        for node_start, node_end in covered:
            if node_start > start:
                break
            start = max(start, node_end)
        if start < end:
            raise ValueError(f"bytes {start}–{end} were in a node with a bad data CRC")


def _decompress(buf: bytes, node: _DataNode) -> bytes:
    packed = buf[node.start : node.start + node.csize]
    if node.compr == COMPR_NONE:
        data = packed
    elif node.compr == COMPR_ZLIB:
        try:
            data = zlib.decompressobj().decompress(packed, node.dsize)
        except zlib.error as exc:
            raise ValueError(f"zlib data at {node.start:#x}: {exc}") from exc
    elif node.compr == COMPR_RTIME:
        data = _rtime(packed, node.dsize)
    elif node.compr == COMPR_LZO:
        data = _lzo(packed, node.dsize)
    else:
        name = COMPR_NAMES.get(node.compr, f"unknown ({node.compr})")
        raise ValueError(f"compression {name} at {node.start:#x} is not supported")
    if len(data) != node.dsize:
        raise ValueError(f"data node at {node.start:#x}: {len(data)} bytes, not {node.dsize}")
    return data


def _lzo(packed: bytes, dsize: int) -> bytes:
    try:
        from lzallright import LZOCompressor, LZOError
    except ImportError as exc:
        raise ValueError("lzo-compressed data needs the lzallright package") from exc
    try:
        return LZOCompressor.decompress(packed, dsize)
    except LZOError as exc:
        raise ValueError(f"lzo data: {exc.args[0]}") from exc


def _rtime(packed: bytes, dsize: int) -> bytes:
    """jffs2's "rtime" run-length coding: (byte, repeat) pairs, where ``repeat`` bytes are
    copied from just after the previous occurrence of ``byte``."""
    out = bytearray(dsize)
    after_last = [0] * 256
    outpos = pos = 0
    while outpos < dsize:
        if pos + 2 > len(packed):
            raise ValueError("rtime data ends early")
        value, repeat = packed[pos], packed[pos + 1]
        pos += 2
        out[outpos] = value
        outpos += 1
        back = after_last[value]
        after_last[value] = outpos
        if not repeat:
            continue
        if outpos + repeat > dsize:
            raise ValueError("rtime data runs past its page")
        if back + repeat <= outpos:
            out[outpos : outpos + repeat] = out[back : back + repeat]
            outpos += repeat
        else:  # overlapping: byte by byte, each copy may read what the previous one wrote
            for _ in range(repeat):
                out[outpos] = out[back]
                outpos += 1
                back += 1
    return bytes(out)
