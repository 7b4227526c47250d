"""Tools and files for the test images: running sgdisk/mkfs.ext4/debugfs reproducibly, sparse
files, and fixed UUIDs.

Why a module of its own: everything that makes a build deterministic whoever runs it (pinned
``mke2fs.conf``, fake clock, pinned inode times and owners, fixed UUIDs) lives here, apart from
the layouts in :mod:`mtkfs.testing.disk` that use it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "find_tool",
    "fixed_uuid",
    "mkfs_ext4",
    "pwrite",
    "run",
    "sparse_copy",
    "sparse_file",
    "write_tree",
]

_KiB = 1 << 10
_MiB = 1 << 20

#: Fixed clock for mkfs and for the files put into the file systems (1 Jan 2015, UTC).
_EPOCH_S = 1420070400

#: Namespace for the deterministic GUIDs/UUIDs of the images (its URL is part of every UUID:
#: it keeps naming ``disk``, the module these helpers were split from).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mtkfs.invalid/testing/disk")

#: Pinned mke2fs configuration: the host's /etc/mke2fs.conf varies between distributions
#: (orphan_file, …); images must not. Features are those of a Debian 12 ext4.
_MKE2FS_CONF = """\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t\tinode_ratio = 4096
\t}
\tfloppy = {
\t\tinode_ratio = 8192
\t}
"""


def find_tool(name: str) -> str:
    """Absolute path of a system tool, looking in the sbin directories too.

    Why: on Debian a normal user's PATH has no ``/usr/sbin``, where sgdisk, mkfs.ext4, parted
    and e2fsck live, although they work fine without root on image files.
    """
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found; install it (make deps: gdisk, e2fsprogs, parted, util-linux)"
        )
    return found


def run(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a tool and return its stderr; on failure raise with its output, which is what one
    needs to see."""
    full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
    proc = subprocess.run(
        list(args), env=full_env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{output}")
    return proc.stderr.decode(errors="replace")


def fixed_uuid(key: str) -> uuid.UUID:
    """A fixed UUID per key, so GPT GUIDs and file-system UUIDs don't change between builds."""
    return uuid.uuid5(_NAMESPACE, key)


def sparse_file(path: Path, size_bytes: int) -> None:
    """(Re)create ``path`` as a hole of ``size_bytes``: nothing from an earlier build survives."""
    path.unlink(missing_ok=True)
    with path.open("xb") as f:
        f.truncate(size_bytes)


def pwrite(path: Path, offset_bytes: int, data: bytes) -> None:
    """Write ``data`` at ``offset_bytes`` without touching anything else (or the file size)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if offset_bytes + len(data) > os.fstat(fd).st_size:
            raise ValueError(f"write past the end of {path}")
        written = os.pwrite(fd, data, offset_bytes)
        if written != len(data):
            raise OSError(f"short write to {path}")
    finally:
        os.close(fd)


def sparse_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` writing only its data extents (holes stay holes)."""
    sparse_file(target, source.stat().st_size)
    chunk_bytes = 4 * _MiB
    with source.open("rb") as src, target.open("r+b") as dst:
        size = os.fstat(src.fileno()).st_size
        extents: list[tuple[int, int]] = []
        position = 0
        try:
            while position < size:
                start = os.lseek(src.fileno(), position, os.SEEK_DATA)
                end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
                extents.append((start, end))
                position = end
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after position. Else: no SEEK_DATA.
                extents = [(0, size)]
        for start, end in extents:
            for offset in range(start, end, chunk_bytes):
                data = os.pread(src.fileno(), min(chunk_bytes, end - offset), offset)
                if data.count(0) != len(data):
                    os.pwrite(dst.fileno(), data, offset)


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Materialise ``files`` under ``root`` with fixed modes and times, for ``mkfs.ext4 -d``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        executable = rel.startswith(("bin/", "xbin/"))
        path.chmod(0o755 if executable else 0o644)
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        os.utime(path, (_EPOCH_S, _EPOCH_S))
    return root


def mkfs_ext4(
    tmp_dir: Path,
    image: Path,
    offset_bytes: int,
    size_bytes: int,
    *,
    label: str,
    key: str,
    tree: Path | None,
) -> None:
    """Make an ext4 of exactly ``size_bytes`` at ``offset_bytes`` inside ``image``.

    Lazy inode-table and journal init and no discard: mke2fs writes only metadata, so the image
    stays sparse (the fresh file's holes already read as the zeros it would have written).
    """
    conf = tmp_dir / "mke2fs.conf"
    if not conf.exists():
        conf.write_text(_MKE2FS_CONF)
    extended = ",".join(
        [
            f"offset={offset_bytes}",
            "lazy_itable_init=1",
            "lazy_journal_init=1",
            "nodiscard",
            "root_owner=0:0",
            f"hash_seed={fixed_uuid(key + '/hash_seed')}",
        ]
    )
    args = [find_tool("mkfs.ext4"), "-q", "-F", "-b", "4096", "-L", label]
    args += ["-U", str(fixed_uuid(key + "/uuid")), "-E", extended]
    if tree is not None:
        args += ["-d", str(tree)]
    args += [str(image), f"{size_bytes // _KiB}k"]
    env = {"MKE2FS_CONFIG": str(conf), "E2FSPROGS_FAKE_TIME": str(_EPOCH_S)}
    run(args, env=env)
    if tree is not None:
        _pin_inodes(tmp_dir, image, offset_bytes, tree, env)


def _pin_inodes(
    tmp_dir: Path, image: Path, offset_bytes: int, tree: Path, env: Mapping[str, str]
) -> None:
    """Give every inode ``mkfs.ext4 -d`` copied from ``tree`` a fixed ctime and root ownership.

    Why: ``-d`` copies each source file's ctime, which nobody can set (``utime`` moves it to
    now), and its owner, which is whoever runs the build; without this the image would differ
    from build to build and from user to user (and Android's /system is root's). The e2fsprogs
    tools take ``FILE?offset=N`` to work on a file system inside a bigger image.
    """
    commands = []
    for path in sorted(tree.rglob("*")):
        quoted = f'"/{path.relative_to(tree).as_posix()}"'
        commands += [f"sif {quoted} {field} {value}" for field, value in _PINNED_INODE_FIELDS]
    script = tmp_dir / "pin-inodes.debugfs"
    script.write_text("\n".join(commands) + "\n")
    target = f"{image}?offset={offset_bytes}"
    output = run([find_tool("debugfs"), "-w", "-f", str(script), target], env=env)
    errors = [line for line in output.splitlines() if line and not line.startswith("debugfs")]
    if errors:
        raise RuntimeError(f"debugfs could not fix up {target}:\n" + "\n".join(errors))


_PINNED_INODE_FIELDS = (("ctime", f"@{_EPOCH_S}"), ("uid", "0"), ("gid", "0"))
