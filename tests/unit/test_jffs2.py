"""jffs2 parser: real mkfs.jffs2 images (both byte orders, every compressor mkfs has), nodes
appended as a running device would (overwrites, deletions, damage), word-swapped dumps, hostile
trees and fuzzed bytes."""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkfs.content.jffs2 import (
    COMPR_NONE,
    COMPR_RTIME,
    COMPR_ZERO,
    COMPR_ZLIB,
    jffs2_crc,
    looks_like_jffs2,
    parse_jffs2,
)
from mtkfs.content.view import ContentView, Entry
from mtkfs.testing.content import pseudo_random
from mtkfs.testing.jffs2_build import (
    DT_DIR,
    align4,
    dirent_node,
    dirents,
    inode_node,
    mkfs_jffs2,
    pad_erased,
    word_swap,
)
from mtkfs.testing.tools import find_tool

try:
    find_tool("mkfs.jffs2")
    HAVE_MKFS = True
except FileNotFoundError:
    HAVE_MKFS = False

needs_mkfs = pytest.mark.skipif(not HAVE_MKFS, reason="mkfs.jffs2 missing (apt: mtd-utils)")

#: Seed 003's camera: ROOTFS is 0x1d0000–0x3b0000 of its 16 MiB NOR, 64 KiB erase blocks.
ROOTFS_BYTES = 0x1E0000
ERASE_BYTES = 0x10000
MTIME_S = 1420070400
S_IFREG = stat.S_IFREG

#: mkfs.jffs2 options per compressor: each run leaves exactly one compressor enabled.
COMPRESSORS = {
    "none": ("-x", "zlib", "-x", "rtime"),
    "zlib": ("-x", "rtime"),
    "rtime": ("-x", "zlib"),
    "lzo": ("-X", "lzo", "-x", "zlib", "-x", "rtime"),
}


def source_tree(root: Path) -> Path:
    """A camera-like root file system, with every kind of entry the parser must handle."""
    files = {
        "etc/back.bin": pseudo_random("back.bin", 1500) + b"ssid=cam\x00" * 40,
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
        "etc/init.d/rcS": b"#!/bin/sh\nmount -a\n",
        "bin/busybox": pseudo_random("busybox", 300_000),
        "usr/share/big.log": b"".join(b"line %06d: all is well\n" % i for i in range(40_000)),
        "home/empty": b"",
        "home/café.txt": "ünïcode\n".encode(),
        "home/page": b"\x00" * 4096 + b"tail",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    (root / "bin/busybox").chmod(0o755)
    (root / "etc/init.d/rcS").chmod(0o750)
    (root / "home/page").chmod(0o4711)
    (root / "mnt/empty_dir").mkdir(parents=True)
    (root / "bin/sh").symlink_to("busybox")
    (root / "etc/back.lnk").symlink_to("/etc/back.bin")
    os.mkfifo(root / "home/fifo")
    for i, path in enumerate(sorted([root, *root.rglob("*")])):
        os.utime(path, (MTIME_S + i, MTIME_S + i), follow_symlinks=False)
    return root


def assert_same_tree(view: ContentView, root: Path) -> None:
    """Every dir, file and symlink of ``root`` (fifos aside) is in the view, equal in bytes,
    permission bits, mtime and target; and nothing else is."""
    expected: dict[tuple[str, ...], Path] = {}
    for path in root.rglob("*"):
        if stat.S_ISFIFO(path.lstat().st_mode):
            continue
        expected[path.relative_to(root).parts] = path
    got = {e.path: e for e in view.entries}
    assert sorted(got) == sorted(expected)
    for parts, path in expected.items():
        entry, st_ = got[parts], path.lstat()
        assert entry.mtime_s == st_.st_mtime, parts
        if path.is_symlink():
            assert entry.kind == "symlink"
            assert entry.target == os.readlink(path)
            continue
        assert entry.mode == stat.S_IMODE(st_.st_mode), parts
        if path.is_dir():
            assert entry.kind == "dir"
        else:
            assert entry.kind == "file" and entry.data is not None
            assert entry.size_bytes == st_.st_size
            assert entry.data() == path.read_bytes(), parts


def entries_by_path(view: ContentView) -> dict[str, Entry]:
    return {"/".join(e.path): e for e in view.entries}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_tree(tmp_path_factory.mktemp("jffs2src") / "root")


@pytest.fixture(scope="module")
def images(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], bytes]:
    """(endian, compressor) → a ROOTFS partition: mkfs output padded with erased flash."""
    if not HAVE_MKFS:
        pytest.skip("mkfs.jffs2 missing (apt: mtd-utils)")
    out = tmp_path_factory.mktemp("jffs2img")
    built = {}
    for endian in "<>":
        for compr, options in COMPRESSORS.items():
            raw = mkfs_jffs2(tree, out / f"{compr}{endian}.img", endian=endian, options=options)
            built[endian, compr] = pad_erased(raw, ROOTFS_BYTES)
    return built


# -- real images ---------------------------------------------------------------------------------


@needs_mkfs
@pytest.mark.parametrize("compr", list(COMPRESSORS))
@pytest.mark.parametrize("endian", ["<", ">"], ids=["le", "be"])
def test_mkfs_image_reads_back_byte_equal(
    images: dict[tuple[str, str], bytes], tree: Path, endian: str, compr: str
) -> None:
    view = parse_jffs2(images[endian, compr])
    assert view.kind == "jffs2"
    assert_same_tree(view, tree)
    assert entries_by_path(view)["etc/back.bin"].data is not None
    # The only thing not shown is the fifo, and that is said once.
    assert len(view.warnings) == 1 and "fifos" in view.warnings[0]


@needs_mkfs
@pytest.mark.parametrize("endian", ["<", ">"], ids=["le", "be"])
def test_compressors_were_really_used(images: dict[tuple[str, str], bytes], endian: str) -> None:
    """Each image holds nodes of its compressor (mkfs silently falls back to none otherwise)."""
    offset = 56  # of compr in struct jffs2_raw_inode
    ids = {"none": 0, "rtime": 2, "zlib": 6, "lzo": 7}
    for compr, compr_id in ids.items():
        image = images[endian, compr]
        magic = (0x1985).to_bytes(2, "little" if endian == "<" else "big")
        inode_type = (0xE002).to_bytes(2, "little" if endian == "<" else "big")
        found = set()
        pos = image.find(magic + inode_type)
        while pos >= 0:
            found.add(image[pos + offset])
            pos = image.find(magic + inode_type, pos + 4)
        assert compr_id in found, (compr, found)


@needs_mkfs
def test_looks_like_jffs2_from_the_head(images: dict[tuple[str, str], bytes]) -> None:
    le, be = images["<", "zlib"], images[">", "zlib"]
    assert looks_like_jffs2(le[:4096]) == "jffs2-le"
    assert looks_like_jffs2(be[:4096]) == "jffs2-be"
    assert looks_like_jffs2(word_swap(le[:4096])) == "jffs2-le-wordswapped"
    assert looks_like_jffs2(word_swap(be[:4096])) == "jffs2-be-wordswapped"
    # An erased block first, then the file system: found from what follows the 0xFF.
    assert looks_like_jffs2(b"\xff" * 2048 + le[:2048]) == "jffs2-le"
    assert looks_like_jffs2(b"\xff" * 4096) is None
    assert looks_like_jffs2(bytes(4096)) is None
    assert looks_like_jffs2(pseudo_random("noise", 4096)) is None
    assert looks_like_jffs2(b"") is None


@needs_mkfs
@pytest.mark.parametrize("endian", ["<", ">"], ids=["le", "be"])
def test_word_swapped_dump_is_detected_and_read(
    images: dict[tuple[str, str], bytes], tree: Path, endian: str
) -> None:
    view = parse_jffs2(word_swap(images[endian, "zlib"]))
    assert any("word-swapped" in w for w in view.warnings)
    assert_same_tree(view, tree)


@needs_mkfs
def test_partition_starting_erased(images: dict[tuple[str, str], bytes], tree: Path) -> None:
    """Nodes are found anywhere on 4-byte alignment: a file system after erased blocks."""
    image = b"\xff" * (3 * ERASE_BYTES) + images["<", "zlib"][: -3 * ERASE_BYTES]
    assert_same_tree(parse_jffs2(image), tree)


def test_crc_is_the_kernels() -> None:
    """crc32(0, buf, len) without the final xor: a known value of the kernel's function."""
    assert jffs2_crc(b"") == 0
    assert jffs2_crc(b"123456789") == zlib.crc32(b"123456789", 0xFFFFFFFF) ^ 0xFFFFFFFF
    assert jffs2_crc(b"123456789") == 0x2DFD2D88


def test_nothing_there() -> None:
    for data in (b"", b"\xff" * 65536, bytes(65536), pseudo_random("x", 65536)):
        view = parse_jffs2(data)
        assert view.entries == [] and view.warnings


# -- a device that ran for a while ---------------------------------------------------------------


def appended(image: bytes, used_bytes: int, nodes: list[bytes]) -> bytes:
    """``nodes`` written into the erased space after the first ``used_bytes`` of ``image``."""
    start = align4(used_bytes)
    blob = b"".join(nodes)
    assert image[start : start + len(blob)] == b"\xff" * len(blob)
    return image[:start] + blob + image[start + len(blob) :]


@needs_mkfs
@pytest.mark.parametrize("endian", ["<", ">"], ids=["le", "be"])
def test_newest_nodes_win(tree: Path, tmp_path: Path, endian: str) -> None:
    raw = mkfs_jffs2(tree, tmp_path / "fs.img", endian=endian)
    image = pad_erased(raw, ROOTFS_BYTES)
    names = {d.name: d for d in dirents(raw, endian)}
    back, passwd, etc = names[b"back.bin"], names[b"passwd"], names[b"etc"]
    old_back = (tree / "etc/back.bin").read_bytes()
    new_ino = max(d.ino for d in names.values()) + 1
    top = 1000  # above every version mkfs wrote
    nodes = [
        # back.bin: bytes 100..104 rewritten (zlib), then the whole file cut to 1000 bytes.
        inode_node(endian, ino=back.ino, version=top, mode=S_IFREG | 0o600,
                   isize=len(old_back), offset=100, data=b"NEW!", compr=COMPR_ZLIB),
        inode_node(endian, ino=back.ino, version=top + 1, mode=S_IFREG | 0o600,
                   isize=1000, mtime_s=MTIME_S + 999),
        # An even newer write whose data CRC fails (power cut): the older bytes stay.
        inode_node(endian, ino=back.ino, version=top + 2, mode=S_IFREG | 0o600,
                   isize=1000, offset=0, data=b"LOST", bad_data_crc=True),
        # A newer node the kernel made obsolete: ignored.
        inode_node(endian, ino=back.ino, version=top + 3, mode=S_IFREG | 0o777,
                   isize=5, data=b"obsol", obsolete=True),
        # passwd deleted; a new file made in its folder, then written twice (holes between).
        dirent_node(endian, pino=passwd.pino, version=top, ino=0, name=b"passwd"),
        dirent_node(endian, pino=etc.ino, version=top + 1, ino=new_ino, name=b"new.conf"),
        inode_node(endian, ino=new_ino, version=1, mode=S_IFREG | 0o640, isize=12_000,
                   offset=8192, data=b"B" * 100),
        inode_node(endian, ino=new_ino, version=2, mode=S_IFREG | 0o640, isize=12_000,
                   offset=8192 + 50, data=b"C" * 10, compr=COMPR_RTIME, packed=b"C\x09"),
        inode_node(endian, ino=new_ino, version=3, mode=S_IFREG | 0o640, isize=12_000,
                   offset=8192, data=b"", dsize=20, compr=COMPR_ZERO),
    ]  # fmt: skip
    view = parse_jffs2(appended(image, len(raw), nodes))
    files = entries_by_path(view)
    assert "etc/passwd" not in files
    back_entry = files["etc/back.bin"]
    assert back_entry.data is not None
    assert back_entry.size_bytes == 1000
    assert back_entry.mode == 0o600 and back_entry.mtime_s == MTIME_S + 999
    assert back_entry.data() == old_back[:100] + b"NEW!" + old_back[104:1000]
    new = files["etc/new.conf"]
    assert new.data is not None and new.size_bytes == 12_000 and new.mode == 0o640
    assert new.data() == bytes(8192 + 20) + b"B" * 30 + b"C" * 10 + b"B" * 40 + bytes(3708)
    assert any("bad data CRC" in w for w in view.warnings)


def test_lost_data_raises_instead_of_showing_zeros() -> None:
    e = "<"
    image = b"".join(
        [
            dirent_node(e, pino=1, version=1, ino=2, name=b"ok"),
            inode_node(e, ino=2, version=1, mode=S_IFREG | 0o644, isize=8, data=b"12345678"),
            inode_node(e, ino=2, version=2, mode=S_IFREG | 0o644, isize=8, data=b"abcd",
                       bad_data_crc=True),
            dirent_node(e, pino=1, version=2, ino=3, name=b"lost"),
            inode_node(e, ino=3, version=1, mode=S_IFREG | 0o644, isize=8, data=b"1234"),
            inode_node(e, ino=3, version=2, mode=S_IFREG | 0o644, isize=8, offset=4,
                       data=b"5678", bad_data_crc=True),
            dirent_node(e, pino=1, version=3, ino=4, name=b"bomb"),
            inode_node(e, ino=4, version=1, mode=S_IFREG | 0o644, isize=8, data=b"x" * 8,
                       compr=COMPR_ZLIB, packed=b"\x78\x9c garbage not deflate"),
            dirent_node(e, pino=1, version=4, ino=5, name=b"rubin"),
            inode_node(e, ino=5, version=1, mode=S_IFREG | 0o644, isize=8, data=b"x" * 8,
                       compr=5, packed=b"\x00" * 8),
            dirent_node(e, pino=1, version=5, ino=6, name=b"huge"),
            inode_node(e, ino=6, version=1, mode=S_IFREG | 0o644, isize=0xFFFF_FFF0),
        ]
    )  # fmt: skip
    files = entries_by_path(parse_jffs2(pad_erased(image, 65536)))
    ok = files["ok"].data
    assert ok is not None and ok() == b"12345678"
    for name, message in [
        ("lost", "bad data CRC"),
        ("bomb", "zlib"),
        ("rubin", "dynrubin"),
        ("huge", "more than"),
    ]:
        make = files[name].data
        assert make is not None
        with pytest.raises(ValueError, match=message):
            make()


# -- hostile trees -------------------------------------------------------------------------------


def test_hostile_names_loops_and_orphans() -> None:
    e = ">"
    d, f = stat.S_IFDIR | 0o755, S_IFREG | 0o644
    nodes = [
        dirent_node(e, pino=1, version=1, ino=2, name=b"a", dtype=DT_DIR),
        inode_node(e, ino=2, version=1, mode=d, isize=0),
        dirent_node(e, pino=2, version=1, ino=3, name=b"b", dtype=DT_DIR),
        inode_node(e, ino=3, version=1, mode=d, isize=0),
        # b contains a again (a loop), the root, and itself.
        dirent_node(e, pino=3, version=2, ino=2, name=b"back_to_a", dtype=DT_DIR),
        dirent_node(e, pino=3, version=3, ino=1, name=b"root", dtype=DT_DIR),
        dirent_node(e, pino=3, version=4, ino=3, name=b"self", dtype=DT_DIR),
        # Names that must never reach the mount.
        *(
            dirent_node(e, pino=2, version=10 + i, ino=4, name=bad)
            for i, bad in enumerate([b".", b"..", b"x/y", b"nul\x00"])
        ),
        dirent_node(e, pino=2, version=20, ino=4, name=b"fine\xff"),  # not UTF-8: kept
        inode_node(e, ino=4, version=1, mode=f, isize=3, data=b"abc"),
        # A name for an inode with no node, an inode with no name, a folder under nowhere.
        dirent_node(e, pino=1, version=2, ino=77, name=b"dangling"),
        inode_node(e, ino=5, version=1, mode=f, isize=3, data=b"xyz"),
        dirent_node(e, pino=99, version=1, ino=4, name=b"under_nowhere"),
        # A device node and a fifo: not shown.
        dirent_node(e, pino=1, version=3, ino=6, name=b"console"),
        inode_node(e, ino=6, version=1, mode=stat.S_IFCHR | 0o600, isize=0),
        # Symlinks: a fine one, an empty one, one with a NUL.
        dirent_node(e, pino=1, version=4, ino=7, name=b"ln"),
        inode_node(e, ino=7, version=1, mode=stat.S_IFLNK | 0o777, isize=3, data=b"a/b"),
        dirent_node(e, pino=1, version=5, ino=8, name=b"ln_empty"),
        inode_node(e, ino=8, version=1, mode=stat.S_IFLNK | 0o777, isize=0),
        dirent_node(e, pino=1, version=6, ino=9, name=b"ln_nul"),
        inode_node(e, ino=9, version=1, mode=stat.S_IFLNK | 0o777, isize=3, data=b"a\x00b"),
    ]
    view = parse_jffs2(pad_erased(b"".join(nodes), 65536))
    paths = ["/".join(entry.path) for entry in view.entries]
    assert paths == ["a", "ln", "a/b", "a/fine\udcff"]
    assert entries_by_path(view)["ln"].target == "a/b"
    text = "\n".join(view.warnings)
    for expected in ["loop", "unusable names (skipped): 4", "no valid node", "no folder leads to",
                     "device nodes", "empty or NUL"]:  # fmt: skip
        assert expected in text, expected


def test_deep_folders_are_cut() -> None:
    e = "<"
    nodes = []
    for depth in range(300):
        ino = depth + 2
        nodes.append(dirent_node(e, pino=ino - 1, version=1, ino=ino, name=b"d", dtype=DT_DIR))
        nodes.append(inode_node(e, ino=ino, version=1, mode=stat.S_IFDIR | 0o755, isize=0))
    view = parse_jffs2(b"".join(nodes))
    assert max(len(entry.path) for entry in view.entries) < 300
    assert any("deeper" in w for w in view.warnings)


# -- damage --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small real image (zlib and rtime nodes, a symlink) for the fuzzer."""
    if not HAVE_MKFS:
        pytest.skip("mkfs.jffs2 missing (apt: mtd-utils)")
    root = tmp_path_factory.mktemp("small") / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/back.bin").write_bytes(b"config=1\n" * 900)
    (root / "etc/rand").write_bytes(pseudo_random("small", 6000))
    (root / "sh").symlink_to("etc/rand")
    return mkfs_jffs2(root, tmp_path_factory.mktemp("smallimg") / "s.img", endian="<")


def read_everything(view: ContentView) -> None:
    """What the mount would do with a view: every file read, each either right-sized or a
    ValueError."""
    assert isinstance(view, ContentView)
    for entry in view.entries:
        if entry.data is not None:
            try:
                assert len(entry.data()) == entry.size_bytes
            except ValueError:
                pass


@needs_mkfs
@pytest.mark.timeout(120)
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
    cut=st.integers(0, 1 << 20),
    swap=st.booleans(),
)
def test_fuzzed_images_never_raise(
    small_image: bytes, edits: list[tuple[int, int]], cut: int, swap: bool
) -> None:
    image = bytearray(small_image)
    for offset, value in edits:
        image[offset % len(image)] = value
    data = bytes(image[: cut % (len(image) + 1)])
    read_everything(parse_jffs2(word_swap(data) if swap else data))


@needs_mkfs
def test_every_truncation_point_of_a_node(small_image: bytes) -> None:
    """Cut inside the first data nodes at every 4-byte step: partial views, no exception."""
    for cut in range(0, min(len(small_image), 4096), 4):
        view = parse_jffs2(small_image[:cut])
        read_everything(view)


@needs_mkfs
def test_crc_correct_garbage(small_image: bytes) -> None:
    """Fields that pass every CRC but lie (sizes, offsets, compressors): refit the CRCs after
    each change, so the parser's own checks are what stands."""
    e = "<"
    for compr in (COMPR_NONE, COMPR_ZERO, COMPR_ZLIB, COMPR_RTIME, 7, 3, 0x15, 0xFF):
        for dsize in (0, 1, 4096, 1 << 20, 0xFFFFFFFF):
            node = inode_node(e, ino=1000, version=5, mode=S_IFREG | 0o644, isize=dsize,
                              offset=0, data=b"\x01\x02", dsize=dsize, compr=compr)  # fmt: skip
            image = dirent_node(e, pino=1, version=1, ino=1000, name=b"f") + node
            read_everything(parse_jffs2(small_image + image))
