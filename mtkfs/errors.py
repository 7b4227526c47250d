"""The one exception hierarchy of mtkfs.

Why one hierarchy: every layer raises these, and exactly two places translate them —
``fuse/ops.py`` turns them into ``FUSEError(exc.errno)`` and ``cli.py`` turns them into a
one-line message and ``exc.exit_code``. Nothing else inspects errno values, so the errno and the
exit code of a failure are decided here, once. ``docs/errors.md`` is the table; a test checks that
every class below appears in it.

Exit codes (documented in docs/errors.md and the man page):

====  =================================================================
  1   unexpected failure (a bug: please report it with ``--debug``)
  2   usage error (bad arguments)
  3   the source cannot be opened (missing file, unknown folder layout)
  4   no usable partition map (none found, corrupt, or inconsistent)
  5   the mountpoint cannot be used (missing, not a folder, in use)
  6   the transport failed (device gone, I/O error, timeout)
  7   the write journal needs the user (unfinished writes, a failsafe mount)
  8   the device refuses without authorisation (secure boot, SLA, DAA)
====  =================================================================

Codes 2–5 are "do not restart" codes for systemd: retrying cannot help.
"""

from __future__ import annotations

import errno as _errno


class MtkfsError(Exception):
    """Base of every error mtkfs raises on purpose.

    Attributes:
        errno: what a FUSE request that hits this error returns to the kernel.
        exit_code: what the CLI exits with when this error ends a command.
        temporary: a retry may succeed (only transports retry, see DESIGN.md).
    """

    errno: int = _errno.EIO
    exit_code: int = 1
    temporary: bool = False


class UsageError(MtkfsError):
    """The command line is wrong (unknown option value, bad size, conflicting flags)."""

    errno = _errno.EINVAL
    exit_code = 2


class SourceError(MtkfsError):
    """The source named on the command line cannot be opened or is not understood."""

    errno = _errno.ENOENT
    exit_code = 3


class MapError(MtkfsError):
    """No usable partition map: none found, or what was found contradicts itself."""

    errno = _errno.EINVAL
    exit_code = 4


class NoMapError(MapError):
    """The source holds no partition table mtkfs recognises."""


class CorruptMapError(MapError):
    """A partition table was found but fails its checks (CRC, bounds, loops)."""


class MountpointError(MtkfsError):
    """The mountpoint is missing, not a folder, already mounted, or a stale mount."""

    errno = _errno.EBUSY
    exit_code = 5


class TransportError(MtkfsError):
    """Reading or writing the device failed."""

    errno = _errno.EIO
    exit_code = 6


class TransportTimeout(TransportError):
    """The device did not answer in time."""

    errno = _errno.ETIMEDOUT
    temporary = True


class DeviceGoneError(TransportError):
    """The device disappeared (unplugged, rebooted, file removed)."""

    errno = _errno.ENODEV


class ReconnectError(DeviceGoneError):
    """A lost session could not be brought back (yet): no phone there, or another phone."""


class ProtocolError(TransportError):
    """The two sides of a protocol disagree."""

    errno = _errno.EPROTO


class LocalProtocolError(ProtocolError):
    """We broke the protocol (a bug in mtkfs)."""


class RemoteProtocolError(ProtocolError):
    """The device broke the protocol (or the link corrupted bytes)."""


class AuthRequiredError(TransportError):
    """The device demands authorisation mtkfs will not forge: secure boot (SBC), serial link
    authentication (SLA), Download Agent authentication (DAA), a DA that must be signed."""

    errno = _errno.EACCES
    exit_code = 8


class ReadOnlyError(MtkfsError):
    """A write was attempted on a read-only mount, source, or failsafe mount."""

    errno = _errno.EROFS


class ProtectedPartitionError(MtkfsError):
    """A write to a critical partition that was not unlocked with ``--unlock NAME``."""

    # EPERM rather than EROFS: the mount is writable, this one file is not, by policy.
    errno = _errno.EPERM


class OutOfRangeError(MtkfsError):
    """A request falls outside a partition or region."""

    # ENOSPC is what dd/cp report sensibly for "write past the end of a fixed-size file".
    errno = _errno.ENOSPC


class FixedLayoutError(MtkfsError):
    """Partition files cannot be created, removed, renamed, truncated or extended."""

    # EPERM: the mount is writable, but its layout is the device's partition table, by policy.
    errno = _errno.EPERM


class BusyError(MtkfsError):
    """The operation conflicts with one in progress."""

    errno = _errno.EBUSY


class VerifyError(TransportError):
    """Data read back after a write differs from what was written."""

    errno = _errno.EIO


class BadBlockError(TransportError):
    """A raw-NAND bad block lies in the range: its bytes cannot be served or written in place
    (the bootloader skips bad blocks, so what it returns there is the next block's data)."""

    errno = _errno.EIO


class SparseImageError(SourceError):
    """An Android sparse image whose headers do not add up (truncated, or lying sizes)."""

    errno = _errno.EIO


class Ext4Error(SourceError):
    """An ext2/3/4 file system whose superblock, descriptors or bitmaps do not add up (or that
    uses a layout mtkfs does not read): its used blocks cannot be listed."""

    errno = _errno.EIO


class ContentError(MtkfsError):
    """A file inside a ``<name>.files/`` view cannot be produced (corrupt compressed data,
    a partition too large to parse): that file answers EIO, the rest of the view stays."""

    errno = _errno.EIO


class JournalError(MtkfsError):
    """The write journal needs the user's decision before writes may continue."""

    errno = _errno.EIO
    exit_code = 7


class JournalPendingError(JournalError):
    """A device has unfinished journalled writes: replay or roll them back first."""

    errno = _errno.EROFS


class JournalCorruptError(JournalError):
    """A journal file is damaged (its checksum does not match)."""


def all_errors() -> list[type[MtkfsError]]:
    """Every class of the hierarchy, base first (for the docs/errors.md completeness test)."""
    found: list[type[MtkfsError]] = []
    pending: list[type[MtkfsError]] = [MtkfsError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


class BackupError(MtkfsError):
    """A dump or ROM folder cannot be used: a file is missing, damaged, or not what its
    manifest (or Checksum.ini) says; or the folder belongs to another device."""

    errno = _errno.EINVAL
    exit_code = 9


class PlanError(BackupError):
    """A restore plan that must not run: size mismatches, protected partitions not unlocked."""

    exit_code = 10
