"""The fake Android device's file system: a chroot that looks like a rooted MTK phone's ``/``.

Why a real chroot: the adb transport sends shell commands (``su -c 'dd if=… bs=… skip=…'``,
``ls /dev/block/by-name``, ``sha256sum``…). A fake that pattern-matched command strings would
only prove the transport agrees with the fake's guesses; here the commands run for real, under
Debian's static busybox (``/bin/busybox`` and applet links), against the fixture images of
:mod:`mtkfs.testing.disk`.

The device's flash *is* the layout's files: whole disks (``/dev/block/mmcblk0``,
``mmcblk0boot0/1``; ``sda``/``sdb``/``sdc`` for UFS) are hard links to the region files (a bind
mount when the temp folder sits on another file system), so a write through the device lands in
the layout and a test can compare with :meth:`~mtkfs.testing.disk.Layout.read`. Partitions must
be byte-range views of those same bytes, as the kernel's are; the simplest faithful view is a
loop device (``losetup --offset --sizelimit``) whose node is ``mknod``-ed into the chroot as
``mmcblk0pN``. Loop writes reach the image through its page cache when the last opener closes
the node, so reads through the whole-disk file see them (and vice versa). Needs root, which
``chroot`` needs anyway.

The shell is the host's ``dash`` (with the shared libraries it needs copied in), not busybox
``ash``: Debian's busybox is built with ``FEATURE_SH_STANDALONE``, so its shell runs its own
applets before looking at ``PATH`` and the device's ``/system/bin`` wrappers (``id``, ``dd``,
``su``…) could never shadow them. Android's own shell (mksh) is, like dash, a plain POSIX shell.

What is theatre, said plainly: every command runs as the host's root. The uid a program sees is
``$MTKFS_SIM_UID`` (2000 = the ``shell`` user unless the profile's adbd runs as root), set by the
fake and by the ``su`` scripts and reported by the ``id`` script; the ``dd`` wrapper refuses
``/dev/block`` paths for a non-zero uid, as a real phone's permissions would (``cat`` and
``busybox dd`` are not guarded). ``/proc`` and ``/sys`` are plain files written once: there is no
procfs in the chroot. ``reboot`` and friends are never linked (busybox's would act on the host);
a ``reboot`` script only records the request in ``/.sim/reboot.log``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from mtkfs.testing.disk import S650_DUMCHAR_NAMES, SECTOR_BYTES, Layout

__all__ = [
    "ANDROID6",
    "ANDROID12",
    "ANDROID12_USERDEBUG",
    "ANDROID44",
    "HOSTILE_BY_NAME",
    "HOSTILE_DUMCHAR",
    "PROFILES",
    "SHELL_UID",
    "BlockNode",
    "DeviceProfile",
    "DeviceRoot",
    "build_root",
    "dumchar_info",
    "plan_nodes",
]

log = logging.getLogger(__name__)

#: Android's ``shell`` user (AID_SHELL): who adbd runs commands as on a user build.
SHELL_UID = 2000

_MODERN_FEATURES = (
    "shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir", "apex", "abb", "abb_exec",
    "remount_shell", "track_app",
)  # fmt: skip


@dataclass(frozen=True)
class DeviceProfile:
    """How one Android generation's adbd and userland behave, as far as a transport can tell.

    Attributes:
        protocol_version: CNXN version; ``0x01000001`` lets both sides skip payload checksums.
        maxdata: largest payload this adbd accepts and sends (4096 on old devices).
        features: the CNXN banner's ``features=`` list; empty means no ``features=`` key at all,
            which makes the adb client fall back to legacy ``shell:`` and ``exec:``.
        exec_service: ``exec:`` exists (Android 5+; a raw PTY, stderr merged, no exit status).
        cooked_legacy_shell: ``shell:`` runs under a cooked PTY (LF→CRLF, echo; Android ≤ 6);
            later adbds put that PTY in raw mode.
        dd_byte_flags: ``dd`` accepts ``iflag=``/``oflag=`` (busybox); False = a toybox/toolbox
            dd in front of busybox that rejects them, so block-aligned ``bs/skip/count`` is the
            only way (the Android 12 profile rejects them too, on purpose: worst case).
        su: ``"magisk"`` (``su -c CMD``; also SuperSU), ``"aosp"`` (``su [WHO [CMD…]]``) or None.
        adbd_root: adbd itself runs as root (``id -u`` answers 0; ``sync:`` may read block devices).
        by_name_dirs: where ueventd-style ``by-name`` symlinks are made (absolute device paths).
        dumchar: the kernel has MTK's dum-char driver: ``/proc/dumchar_info`` and ``/proc/mtd``.
        hash_tools: ``sha256sum``/``md5sum``… exist (toybox on 6+, a rooting's busybox); False
            = a toolbox phone whose busybox lacks them too, so writes are verified by reading
            back.
        userdebug: a userdebug build: ``adb root`` restarts adbd as root.
    """

    name: str
    release: str
    sdk: int
    protocol_version: int
    maxdata: int
    features: tuple[str, ...]
    exec_service: bool
    cooked_legacy_shell: bool
    dd_byte_flags: bool
    su: str | None
    adbd_root: bool
    by_name_dirs: tuple[str, ...]
    dumchar: bool
    hash_tools: bool = True
    userdebug: bool = False
    product: str = "mtkfs_sim"

    @property
    def shell_uid(self) -> int:
        """The uid a command sees before any ``su``."""
        return 0 if self.adbd_root else SHELL_UID

    def banner(self) -> bytes:
        """The CNXN payload: ``device::`` + product properties (+ ``features=`` when any)."""
        props = (
            f"ro.product.name={self.product}_{self.name};"
            f"ro.product.model=mtkfs sim {self.name};"
            f"ro.product.device={self.product};"
        )
        if self.features:
            props += "features=" + ",".join(self.features)
        return b"device::" + props.encode()


ANDROID12 = DeviceProfile(
    name="android12", release="12", sdk=31, protocol_version=0x01000001, maxdata=1 << 20,
    features=_MODERN_FEATURES, exec_service=True, cooked_legacy_shell=False,
    dd_byte_flags=False, su="magisk", adbd_root=False,
    by_name_dirs=("/dev/block/by-name", "/dev/block/platform/bootdevice/by-name"), dumchar=False,
)  # fmt: skip
ANDROID6 = DeviceProfile(
    name="android6", release="6.0", sdk=23, protocol_version=0x01000000, maxdata=256 << 10,
    features=(), exec_service=True, cooked_legacy_shell=True, dd_byte_flags=False, su="aosp",
    adbd_root=False, by_name_dirs=("/dev/block/platform/mtk-msdc.0/11230000.msdc0/by-name",),
    dumchar=False,
)  # fmt: skip
ANDROID44 = DeviceProfile(
    name="android44", release="4.4.2", sdk=19, protocol_version=0x01000000, maxdata=4096,
    features=(), exec_service=False, cooked_legacy_shell=True, dd_byte_flags=False,
    su="magisk", adbd_root=False, by_name_dirs=(), dumchar=True, hash_tools=False,
)  # fmt: skip
#: Android 12 userdebug without su: root only through ``adb root``.
ANDROID12_USERDEBUG = replace(ANDROID12, name="android12-userdebug", su=None, userdebug=True)
PROFILES: dict[str, DeviceProfile] = {
    p.name: p for p in (ANDROID12, ANDROID6, ANDROID44, ANDROID12_USERDEBUG)
}

#: Extra by-name links a hostile device may carry: shell metacharacters, a newline, a leading
#: dash, and a link whose *target* climbs out of ``/dev/block`` (a name cannot hold ``/``).
HOSTILE_BY_NAME: dict[str, str] = {
    "a;reboot": "1",
    "$(id)": "1",
    "`reboot`": "1",
    "new\nline": "1",
    "-rf": "1",
    "escape": "../../x",
}
#: Extra ``/proc/dumchar_info`` rows of a hostile device (its names are free text).
HOSTILE_DUMCHAR: tuple[str, ...] = ("a;reboot", "$(id)", "../../x")

#: Seed 000's ``/proc/dumchar_info`` of the Lenovo S650: (name, size, start, MapTo).
_S650_DUMCHAR_ROWS: tuple[tuple[str, int, int, str], ...] = (
    ("preloader", 0x1400000, 0x0, "/dev/misc-sd"),
    ("mbr", 0x80000, 0x0, "/dev/block/mmcblk0"),
    ("ebr1", 0x80000, 0x80000, "/dev/block/mmcblk0p1"),
    ("pro_info", 0x300000, 0x100000, "/dev/block/mmcblk0"),
    ("nvram", 0x500000, 0x400000, "/dev/block/mmcblk0"),
    ("protect_f", 0xA00000, 0x900000, "/dev/block/mmcblk0p2"),
    ("protect_s", 0xA00000, 0x1300000, "/dev/block/mmcblk0p3"),
    ("seccfg", 0x20000, 0x1D00000, "/dev/block/mmcblk0"),
    ("uboot", 0x60000, 0x1D20000, "/dev/block/mmcblk0"),
    ("bootimg", 0x600000, 0x1D80000, "/dev/block/mmcblk0"),
    ("recovery", 0xC00000, 0x2380000, "/dev/block/mmcblk0"),
    ("sec_ro", 0x600000, 0x2F80000, "/dev/block/mmcblk0p4"),
    ("misc", 0x80000, 0x3580000, "/dev/block/mmcblk0"),
    ("logo", 0x300000, 0x3600000, "/dev/block/mmcblk0"),
    ("ebr2", 0x80000, 0x3900000, "/dev/block/mmcblk0"),
    ("expdb", 0xA00000, 0x3980000, "/dev/block/mmcblk0"),
    ("android", 0x40000000, 0x4380000, "/dev/block/mmcblk0p5"),
    ("cache", 0x8000000, 0x44380000, "/dev/block/mmcblk0p6"),
    ("usrdata", 0xC0000000, 0x4C380000, "/dev/block/mmcblk0p7"),
    ("fat", 0xC37A0000, 0x10C380000, "/dev/block/mmcblk0p8"),
    ("bmtpool", 0x1500000, 0xFEBF00A8, "/dev/block/mmcblk0"),
)
_DUMCHAR_FOOTER = (
    "Part_Name:Partition name you should open;\nSize:size of partition\n"
    "StartAddr:Start Address of partition;\nType:Type of partition(MTD=1,EMMC=2)\n"
    "MapTo:actual device you operate\n"
)

#: Region of a :class:`Layout` → (kernel disk name, major, minor of the disk).
_DISKS = {
    "user": ("mmcblk0", 179, 0),
    "boot1": ("mmcblk0boot0", 179, 32),
    "boot2": ("mmcblk0boot1", 179, 64),
    "lu0": ("sda", 8, 0),
    "lu1": ("sdb", 8, 16),
    "lu2": ("sdc", 8, 32),
}

#: Busybox applets linked into ``/bin``: a whitelist, because busybox's ``reboot``, ``kill``,
#: ``mount``… would act on the host (the chroot shares its kernel and pid namespace).
_APPLETS = (
    "ash", "cat", "dd", "ls", "readlink", "realpath", "sha1sum", "sha256sum", "sha512sum",
    "md5sum", "crc32", "sync", "echo", "printf", "head", "tail", "tr", "cut", "grep", "egrep",
    "sed", "awk", "wc", "od", "hexdump", "xxd", "base64", "stat", "test", "[", "[[", "true",
    "false", "sleep", "usleep", "mkdir", "rm", "rmdir", "cp", "mv", "ln", "touch", "chmod",
    "env", "expr", "seq", "basename", "dirname", "find", "sort", "uniq", "tee", "cmp", "uname",
    "date", "xargs", "which", "stty", "tty", "truncate", "mktemp", "yes", "timeout", "pwd", "du",
    "df", "strings", "blockdev",
)  # fmt: skip

_ID = """\
#!/bin/sh
# The fake runs everything as the host's root; the uid a program *sees* is $MTKFS_SIM_UID.
uid=${MTKFS_SIM_UID:-2000}
case $uid in 0) name=root ctx=su ;; 2000) name=shell ctx=shell ;; *) name=$uid ctx=shell ;; esac
case "$*" in
  -u|-g|-ru|-rg) echo "$uid" ;;
  -un|-nu|-gn|-ng) echo "$name" ;;
  "") echo "uid=$uid($name) gid=$uid($name) groups=$uid($name) context=u:r:$ctx:s0" ;;
  *) exec /bin/busybox id "$@" ;;
esac
"""

_SU_MAGISK = """\
#!/bin/sh
# Magisk/SuperSU-style su: su [-] [-mm] [root|0] [-c COMMAND]
export MTKFS_SIM_UID=0
while [ $# -gt 0 ]; do
  case "$1" in
    -c|--command) exec /bin/sh -c "$2" ;;
    -|-l|--login|-mm|-M|--mount-master|-p|--preserve-environment|root|0) shift ;;
    *) echo "su: invalid argument: $1" >&2; exit 2 ;;
  esac
done
exec /bin/sh
"""

_SU_AOSP = """\
#!/bin/sh
# AOSP userdebug su (system/extras/su): su [WHO [COMMAND...]]; no -c.
who=${1:-root}
case "$who" in
  root|0) uid=0 ;;
  shell|2000) uid=2000 ;;
  *[!0-9]*|'') echo "su: unknown user $who" >&2; exit 1 ;;
  *) uid=$who ;;
esac
[ $# -gt 0 ] && shift
export MTKFS_SIM_UID=$uid
[ $# -eq 0 ] && exec /bin/sh
exec "$@"
"""

_DD_TEMPLATE = """\
#!/bin/sh
# dd as the device's shell user would run it: permissions and force_ro, then busybox dd.
for arg in "$@"; do
  case "$arg" in
    {byte_flags}
    if=/dev/block/*|of=/dev/block/*)
      if [ "${{MTKFS_SIM_UID:-2000}}" != 0 ]; then
        echo "dd: ${{arg#*=}}: Permission denied" >&2; exit 1
      fi ;;
  esac
  case "$arg" in
    of=*)
      real=$(readlink -f "${{arg#of=}}")
      case "$real" in
        */dev/block/mmcblk0boot[01])
          if [ "$(cat "/sys/block/${{real##*/}}/force_ro" 2>/dev/null)" = 1 ]; then
            echo "dd: ${{arg#of=}}: Read-only file system" >&2; exit 1
          fi ;;
      esac ;;
  esac
done
exec /bin/busybox dd "$@"
"""
_DD_NO_BYTE_FLAGS = """iflag=*|oflag=*) echo "dd: unknown argument '${arg%%=*}'" >&2; exit 1 ;;"""

_BLOCKDEV = """\
#!/bin/sh
# Whole disks are regular files here; answer for them what blockdev answers for a block device.
op=$1 dev=$2
if [ $# -eq 2 ] && [ -f "$dev" ]; then
  case "$op" in
    --getsize64) stat -L -c %s "$dev"; exit ;;
    --getsz) echo $(( $(stat -L -c %s "$dev") / 512 )); exit ;;
    --getss|--getpbsz) echo 512; exit ;;
    --flushbufs|--setro|--setrw|--rereadpt) exit 0 ;;
  esac
fi
exec /bin/busybox blockdev "$@"
"""

_GETPROP = """\
#!/bin/sh
# No property service here: read the generated /system/build.prop.
if [ $# -eq 0 ]; then
  sed -n 's/^\\([^#=][^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/p' /system/build.prop; exit 0
fi
grep -m 1 "^$1=" /system/build.prop | cut -d = -f 2-
"""

_BUSYBOX_WITHOUT_HASHES = """\
#!/bin/sh
# A busybox built without its hash applets (as many a rooting kit's was).
case "$1" in *sum) echo "$1: applet not found" >&2; exit 127 ;; esac
exec /bin/busybox "$@"
"""

_REBOOT = """\
#!/bin/sh
# Never reboot the host: record the request for the test to find.
echo "reboot $*" >> /.sim/reboot.log
"""


@dataclass(frozen=True)
class BlockNode:
    """One block device of the fake phone: a whole disk or a partition (``number`` ≥ 1).

    ``offset_bytes``/``size_bytes`` locate it in ``image`` (the layout's region file);
    ``partname`` is its GPT name (None on an MBR) and ``label`` the name by-name links use.
    """

    name: str
    disk: str
    number: int
    image: Path
    offset_bytes: int
    size_bytes: int
    major: int
    minor: int
    partname: str | None = None
    label: str | None = None

    @property
    def device_path(self) -> str:
        return f"/dev/block/{self.name}"


@dataclass
class DeviceRoot:
    """A built device root; :meth:`close` detaches its loop devices and deletes it."""

    path: Path
    profile: DeviceProfile
    nodes: tuple[BlockNode, ...]
    _loops: list[str] = field(default_factory=list)
    _binds: list[Path] = field(default_factory=list)

    def argv(self, command: str | None) -> list[str]:
        """The host argv running ``command`` in the device (an interactive shell if None)."""
        shell = ["/bin/sh"] if command is None else ["/bin/sh", "-c", command]
        return [shutil.which("chroot") or "/usr/sbin/chroot", str(self.path), *shell]

    def env(self) -> dict[str, str]:
        """A clean, Android-like environment: nothing of the host leaks into the device."""
        return {
            "PATH": "/sbin:/system/bin:/bin",
            "HOME": "/data/local/tmp",
            "TMPDIR": "/data/local/tmp",
            "ANDROID_ROOT": "/system",
            "ANDROID_DATA": "/data",
            "MTKFS_SIM_UID": str(self.profile.shell_uid),
        }

    def resolve(self, device_path: str, *, follow_last: bool = True) -> Path:
        """The host path of ``device_path``, following symlinks as the chroot would.

        Why: ``sync:`` is served by the fake itself (adbd's own code, not a shell command), so
        it must resolve by-name links the way the kernel does under chroot — absolute targets
        restart at the device root, ``..`` never climbs above it.
        """
        pending = [p for p in device_path.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while pending:
            name = pending.pop(0)
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.path.joinpath(*resolved, name)
            if (pending or follow_last) and candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), device_path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(name)
        return self.path.joinpath(*resolved)

    def close(self) -> None:
        """Detach loops, undo bind mounts, delete the tree; safe to call twice."""
        while self._loops:
            loop = self._loops.pop()
            subprocess.run(["losetup", "--detach", loop], check=False, capture_output=True)
        while self._binds:
            subprocess.run(["umount", str(self._binds.pop())], check=False, capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)


def build_root(
    profile: DeviceProfile,
    layout: Layout,
    *,
    hostile: bool = False,
    parent: Path | None = None,
) -> DeviceRoot:
    """Build the device root for ``layout`` under ``parent`` (a temp folder by default).

    ``hostile`` adds :data:`HOSTILE_BY_NAME` links and :data:`HOSTILE_DUMCHAR` rows. On any
    failure everything made so far is undone.
    """
    path = Path(tempfile.mkdtemp(prefix="mtkfs-adbd-", dir=parent))
    root = DeviceRoot(path, profile, plan_nodes(layout))
    try:
        _make_userland(root)
        _make_block_devices(root)
        _make_by_name(root, hostile)
        _make_proc(root, layout, hostile)
        _make_sys(root)
    except BaseException:
        root.close()
        raise
    return root


def plan_nodes(layout: Layout) -> tuple[BlockNode, ...]:
    """Whole disks for every region, then partitions as the kernel would number them.

    A GPT layout numbers partitions in table order and names them; an MBR readback (the
    S650: partitions called ``p2``…) keeps its numbers, gets dumchar names, and gains ``p1``,
    the extended container, which Linux shows as 1 KiB.
    """
    nodes: list[BlockNode] = []
    disk_of: dict[str, tuple[str, int, int]] = {}
    for region, image in layout.regions.items():
        if region not in _DISKS:
            raise ValueError(f"no adb device has a {region!r} region")
        disk, major, minor = disk_of[region] = _DISKS[region]
        nodes.append(BlockNode(disk, disk, 0, image, 0, image.stat().st_size, major, minor))
    mbr = all(re.fullmatch(r"p\d+", p.name) for p in layout.partitions)
    parts: list[tuple[int, str, int, int, str | None]] = []
    for index, part in enumerate(layout.partitions, start=1):
        number = int(part.name[1:]) if mbr else index
        parts.append((number, part.region, part.offset_bytes, part.size_bytes, part.name))
    if mbr and "user" in layout.regions:
        parts += [(n, "user", start, 1024, None) for n, start in _extended(layout.regions["user"])]
    for number, region, offset, size, name in sorted(parts):
        disk, major, minor = disk_of[region]
        sep = "p" if disk[-1].isdigit() else ""
        label = S650_DUMCHAR_NAMES.get(name or "") if mbr else name
        nodes.append(
            BlockNode(
                f"{disk}{sep}{number}", disk, number, layout.regions[region], offset, size,
                major, minor + number, None if mbr else name, label,
            )
        )  # fmt: skip
    return tuple(nodes)


def _extended(image: Path) -> list[tuple[int, int]]:
    """(number, byte offset) of the extended-partition slots of the MBR in ``image``."""
    with image.open("rb") as f:
        mbr = f.read(SECTOR_BYTES)
    found = []
    for slot in range(4):
        part_type, start_lba = struct.unpack_from("<4xB3xI", mbr, 0x1BE + 16 * slot)
        if part_type in (0x05, 0x0F, 0x85):
            found.append((slot + 1, start_lba * SECTOR_BYTES))
    return found


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _make_userland(root: DeviceRoot) -> None:
    """Busybox and its whitelisted applets, Android's wrappers, the usual directories."""
    bin_dir = root.path / "bin"
    bin_dir.mkdir()
    busybox = shutil.which("busybox")
    if busybox is None:
        raise FileNotFoundError("busybox not found (apt-get install busybox-static)")
    _copy_program(busybox, root.path, bin_dir / "busybox")
    for applet in _APPLETS:
        if root.profile.hash_tools or not applet.endswith("sum"):
            (bin_dir / applet).symlink_to("busybox")
    _copy_program(shutil.which("dash") or "/bin/dash", root.path, bin_dir / "sh")
    for folder in ("sbin", "system/xbin", "data/local/tmp", "sdcard", "cache", "etc", ".sim"):
        (root.path / folder).mkdir(parents=True, exist_ok=True)
    (root.path / "data/local/tmp").chmod(0o771)
    system_bin = root.path / "system/bin"
    byte_flags = "" if root.profile.dd_byte_flags else _DD_NO_BYTE_FLAGS
    scripts = {
        "id": _ID,
        "dd": _DD_TEMPLATE.format(byte_flags=byte_flags),
        "blockdev": _BLOCKDEV,
        "getprop": _GETPROP,
        "reboot": _REBOOT,
    }
    if not root.profile.hash_tools:
        scripts["busybox"] = _BUSYBOX_WITHOUT_HASHES
    if root.profile.su is not None:
        scripts["su"] = _SU_MAGISK if root.profile.su == "magisk" else _SU_AOSP
    for name, text in scripts.items():
        _write(system_bin / name, text, 0o755)
    (system_bin / "sh").symlink_to("/bin/busybox")
    _write(root.path / "system/build.prop", _build_prop(root.profile))
    dev = root.path / "dev"
    dev.mkdir()
    for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        os.mknod(dev / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        (dev / name).chmod(0o666)


def _copy_program(program: str, root: Path, target: Path) -> None:
    """Copy ``program`` to ``target`` with the shared libraries ``ldd`` lists (none if static)."""
    shutil.copy2(program, target)
    listing = subprocess.run(["ldd", program], check=False, capture_output=True, text=True)
    for library in re.findall(r"(/\S+) \(0x", listing.stdout):
        copy = root / library.lstrip("/")
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(library), copy)


def _build_prop(profile: DeviceProfile) -> str:
    return (
        f"ro.build.version.release={profile.release}\nro.build.version.sdk={profile.sdk}\n"
        f"ro.build.type={'userdebug' if profile.userdebug else 'user'}\n"
        f"ro.debuggable={int(profile.userdebug)}\n"
        f"ro.secure={0 if profile.adbd_root else 1}\n"
        f"ro.product.name={profile.product}_{profile.name}\n"
        f"ro.product.model=mtkfs sim {profile.name}\nro.product.device={profile.product}\n"
        "ro.product.manufacturer=mtkfs\nro.board.platform=mt6752\n"
    )


def _make_block_devices(root: DeviceRoot) -> None:
    """Disks as hard links (or bind mounts) of the region files; partitions as loop nodes."""
    block = root.path / "dev/block"
    block.mkdir(parents=True)
    for node in root.nodes:
        target = block / node.name
        if node.number == 0:
            _link_disk(root, node.image, target)
            continue
        loop = _attach_loop(node.image, node.offset_bytes, node.size_bytes)
        root._loops.append(loop)
        os.mknod(target, stat.S_IFBLK | 0o600, os.stat(loop).st_rdev)


def _link_disk(root: DeviceRoot, image: Path, target: Path) -> None:
    try:
        os.link(image, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        target.touch()
        subprocess.run(["mount", "--bind", str(image), str(target)], check=True)
        root._binds.append(target)


def _attach_loop(image: Path, offset_bytes: int, size_bytes: int) -> str:
    """A new loop device showing ``size_bytes`` of ``image`` from ``offset_bytes``."""
    done = subprocess.run(
        ["losetup", "--find", "--show", "--offset", str(offset_bytes),
         "--sizelimit", str(size_bytes), str(image)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout.strip()


def _make_by_name(root: DeviceRoot, hostile: bool) -> None:
    """ueventd's links: label → absolute partition path, in every by-name folder."""
    dirs = root.profile.by_name_dirs or (("/dev/block/by-name",) if hostile else ())
    partitions = [n for n in root.nodes if n.number and n.label]
    first = next((n for n in root.nodes if n.number), None)
    for folder in dirs:
        where = root.path / folder.lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        for node in partitions:
            (where / str(node.label)).symlink_to(node.device_path)
        if hostile and first is not None:
            for name, target in HOSTILE_BY_NAME.items():
                link = target if "/" in target else first.device_path
                (where / name).symlink_to(link)


def _make_proc(root: DeviceRoot, layout: Layout, hostile: bool) -> None:
    proc = root.path / "proc"
    lines = ["major minor  #blocks  name", ""]
    lines += [f"{n.major:4d}  {n.minor:7d} {n.size_bytes // 1024:10d} {n.name}" for n in root.nodes]
    _write(proc / "partitions", "\n".join(lines) + "\n", 0o444)
    _write(proc / "mounts", _mounts(root), 0o444)
    _write(proc / "sys/vm/drop_caches", "0\n")
    if root.profile.dumchar:
        _write(proc / "dumchar_info", dumchar_info(root.nodes, layout, hostile), 0o444)
        _write(proc / "mtd", "dev:    size   erasesize  name\n", 0o444)


def dumchar_info(nodes: tuple[BlockNode, ...], layout: Layout, hostile: bool = False) -> str:
    """``/proc/dumchar_info`` as MTK's driver prints it: the S650 seed's rows for the S650,
    else one row per partition after a ``preloader`` row for the boot area."""
    if {p.name for p in layout.partitions} == set(S650_DUMCHAR_NAMES):
        rows = list(_S650_DUMCHAR_ROWS)
    else:
        boot = layout.regions.get("boot1")
        rows = [("preloader", boot.stat().st_size, 0, "/dev/misc-sd")] if boot else []
        rows += [
            (str(n.label), n.size_bytes, n.offset_bytes, n.device_path)
            for n in nodes
            if n.number and n.label
        ]
    if hostile:
        rows += [(name, 0x80000, 0x80000, "/dev/block/mmcblk0") for name in HOSTILE_DUMCHAR]
    text = "Part_Name\tSize\tStartAddr\tType\tMapTo\n"
    text += "".join(f"{n:<10}   0x{s:016x}   0x{a:016x}   2   {m}\n" for n, s, a, m in rows)
    return text + _DUMCHAR_FOOTER


def _mounts(root: DeviceRoot) -> str:
    """A plausible ``/proc/mounts``: the system, data and cache partitions are in use."""
    lines = ["rootfs / rootfs ro,relatime 0 0", "proc /proc proc rw,relatime 0 0"]
    mount_points = {"system": "/system", "android": "/system", "system_a": "/system",
                    "userdata": "/data", "usrdata": "/data", "cache": "/cache"}  # fmt: skip
    for node in root.nodes:
        point = mount_points.get(str(node.label))
        if point:
            options = "ro" if point == "/system" else "rw,nosuid,nodev"
            lines.append(f"{node.device_path} {point} ext4 {options},relatime 0 0")
    return "\n".join(lines) + "\n"


def _make_sys(root: DeviceRoot) -> None:
    """``/sys/class/block/X/{size,start,partition,ro,uevent}`` (sizes in 512-byte sectors),
    ``/sys/block/DISK`` links, and ``force_ro`` = 1 for the eMMC boot areas."""
    sys_block = root.path / "sys/block"
    sys_block.mkdir(parents=True)
    for node in root.nodes:
        folder = root.path / "sys/class/block" / node.name
        uevent = f"MAJOR={node.major}\nMINOR={node.minor}\nDEVNAME={node.name}\n"
        _write(folder / "size", f"{node.size_bytes // SECTOR_BYTES}\n", 0o444)
        _write(folder / "ro", "0\n", 0o444)
        if node.number:
            _write(folder / "start", f"{node.offset_bytes // SECTOR_BYTES}\n", 0o444)
            _write(folder / "partition", f"{node.number}\n", 0o444)
            uevent += f"DEVTYPE=partition\nPARTN={node.number}\n"
            if node.partname is not None:
                uevent += f"PARTNAME={node.partname}\n"
        else:
            uevent += "DEVTYPE=disk\n"
            (sys_block / node.name).symlink_to(f"../class/block/{node.name}")
            if "boot" in node.name:
                _write(folder / "force_ro", "1\n")
        _write(folder / "uevent", uevent, 0o444)
