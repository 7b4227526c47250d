"""``mtkfs service INSTANCE``: what ``mtkfs@INSTANCE.service`` runs when udev sees a device.

Why an instance name and not a device path: the instance must survive the phone's
re-enumeration between BROM, preloader and DA (new PID, new bus address, sometimes a new tty),
so it names the USB *port* (``usb-1-4``, udev's ``%k`` of the USB device), an adb serial
(``adb-0123456789ABCDEF``), or a name the user configured (``uboot-camera``). From it and
``/etc/mtkfs/mtkfs.conf`` (plus ``mtkfs.conf.d/*.conf``) this module builds an ordinary
``mtkfs mount --foreground`` of the right source at ``/run/mtkfs/INSTANCE``.

Why the service watches the device itself instead of ``BindsTo=`` its device unit: that
unit disappears for a moment at every re-enumeration, and systemd would stop the mount in the
middle of the DA handshake. So the service polls whether its device is present and unmounts
once it has been absent for ``gone_after`` seconds (default 15).

The instance name comes from udev (device text); it is validated before it becomes a path
or part of a source, and config values only ever become argv elements, never shell text.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import logging
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from mtkfs.errors import MountpointError, UsageError
from mtkfs.fstab import Flag
from mtkfs.links.usb_ids import identity_of

log = logging.getLogger(__name__)

CONFIG_DIR_ENV = "MTKFS_CONFIG_DIR"
DEFAULT_CONFIG_DIR = Path("/etc/mtkfs")
CONFIG_NAME = "mtkfs.conf"
DEFAULT_MOUNT_ROOT = Path("/run/mtkfs")
DEFAULT_GONE_AFTER_S = 15.0
POLL_S = 1.0

#: Keys that belong to the service, not to ``mtkfs mount``.
SERVICE_KEYS = frozenset({"source", "mode", "options", "mount_root", "gone_after"})
#: Keys that hold several values (space- or comma-separated), each becoming one option.
LIST_KEYS = frozenset({"map", "unlock"})

#: systemd's escaped instance (``%i``): no ``/``, no ``\\``, no leading dot; one of ours.
_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,95}")
_USB_PORT = re.compile(r"usb-(\d{1,3}-\d{1,3}(?:\.\d{1,3}){0,6})")
_ADB_SERIAL = re.compile(r"adb-([A-Za-z0-9._:-]{1,64})")


@dataclass(frozen=True)
class Presence:
    """How to tell whether the instance's device is still attached."""

    kind: str  # "usb" (a sysfs port), "adb" (a serial), "path" (a tty or image), "always"
    target: str = ""


@dataclass(frozen=True)
class ServicePlan:
    """One instance, resolved: the mount to run and how to watch its device."""

    instance: str
    source: str
    mountpoint: Path
    mount_argv: tuple[str, ...]  # the ``mtkfs mount`` options, before ``-- SOURCE MNT``
    presence: Presence
    gone_after_s: float


def config_dir(environ: dict[str, str] | None = None) -> Path:
    """``$MTKFS_CONFIG_DIR`` (tests, other layouts), else ``/etc/mtkfs``."""
    env = os.environ if environ is None else environ
    return Path(env.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR)


def load_config(folder: Path) -> configparser.ConfigParser:
    """``mtkfs.conf`` then ``mtkfs.conf.d/*.conf`` in name order (later ones win). Missing
    files are fine: a phone on USB needs no configuration at all."""
    parser = configparser.ConfigParser(interpolation=None, default_section="defaults")
    files = [folder / CONFIG_NAME, *sorted((folder / f"{CONFIG_NAME}.d").glob("*.conf"))]
    try:
        parser.read([f for f in files if f.is_file()], encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"configuration in {folder} cannot be read: {exc}") from exc
    return parser


def check_instance(instance: str) -> str:
    if not _INSTANCE.fullmatch(instance) or ".." in instance:
        raise UsageError(
            f"instance name {instance!r} is not one mtkfs accepts (letters, digits, . _ : -); "
            "expected usb-PORT (e.g. usb-1-4), adb-SERIAL or a configured name"
        )
    return instance


def plan(
    instance: str, config: configparser.ConfigParser, mount_options: Mapping[str, Flag]
) -> ServicePlan:
    """The mount for ``instance``: its source, mountpoint and ``mtkfs mount`` options."""
    check_instance(instance)
    section = config[instance] if config.has_section(instance) else config[config.default_section]
    source = section.get("source", "").strip()
    presence = Presence("always")
    if usb := _USB_PORT.fullmatch(instance):
        source = source or f"da:usb:{usb.group(1)}"
        presence = Presence("usb", usb.group(1))
    elif adb := _ADB_SERIAL.fullmatch(instance):
        source = source or f"adb:{adb.group(1)}"
        presence = Presence("adb", adb.group(1))
    elif not source:
        raise UsageError(
            f"no source for instance {instance!r}: add a [{instance}] section with "
            "'source = …' to /etc/mtkfs/mtkfs.conf (or a file in mtkfs.conf.d/)"
        )
    else:
        presence = _presence_of(source)
    root = Path(section.get("mount_root", str(DEFAULT_MOUNT_ROOT)))
    if not root.is_absolute():
        raise UsageError(f"mount_root = {root}: must be an absolute path")
    try:
        gone_after_s = float(section.get("gone_after", str(DEFAULT_GONE_AFTER_S)))
    except ValueError as exc:
        raise UsageError(f"gone_after = {section.get('gone_after')!r}: not seconds") from exc
    return ServicePlan(
        instance=instance,
        source=source,
        mountpoint=root / instance,
        mount_argv=tuple(_mount_argv(section, mount_options)),
        presence=presence,
        gone_after_s=max(0.0, gone_after_s),
    )


#: ``mtkfs mount`` options the service sets itself.
_SERVICE_DECIDES = frozenset({"log"})


def _mount_argv(section: configparser.SectionProxy, table: Mapping[str, Flag]) -> list[str]:
    """The section as ``mtkfs mount`` options; the key names are the fstab ones
    (:func:`mtkfs.fstab.mount_flags`: ``--cache-dir`` → ``cache_dir``)."""
    argv: list[str] = []
    mode = section.get("mode", "ro").strip()
    if mode not in ("ro", "rw"):
        raise UsageError(f"mode = {mode!r}: expected ro or rw")
    fuse = [mode, *(o for o in re.split(r"[\s,]+", section.get("options", "")) if o)]
    argv += ["-o", ",".join(fuse)]
    for key, value in section.items():
        if key in SERVICE_KEYS:
            continue
        flag = table.get(key) if key not in _SERVICE_DECIDES else None
        if flag is None:
            known = sorted(SERVICE_KEYS | (table.keys() - _SERVICE_DECIDES))
            raise UsageError(f"unknown key {key!r} in mtkfs.conf; known keys: {', '.join(known)}")
        if flag.metavar is None:
            if _boolean(key, value):
                argv.append(flag.option)
            continue
        items = [v for v in re.split(r"[\s,]+", value) if v] if key in LIST_KEYS else [value]
        # One token, --option=VALUE: a value starting with "-" is never taken for an option.
        argv += [f"{flag.option}={item.strip()}" for item in items]
    return argv


def _boolean(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off", ""):
        return False
    raise UsageError(f"{key} = {value!r}: expected yes or no")


def _presence_of(source: str) -> Presence:
    """A configured source's device: a tty or image path is watched; sockets and sims not."""
    target = source.split(":", 1)[1] if source.startswith(("uboot:", "da:")) else source
    target = target.split("?", 1)[0]
    if target.startswith("/"):
        return Presence("path", target)
    return Presence("always")


# -- the device's presence --------------------------------------------------------------------


def usb_port_present(port: str, sysfs: Path = Path("/sys/bus/usb/devices")) -> bool:
    """A phone of ours (by VID:PID) sits at USB ``port`` (sysfs, as udev's ``%k``)."""
    try:
        vid = int((sysfs / port / "idVendor").read_text().strip(), 16)
        pid = int((sysfs / port / "idProduct").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return identity_of(vid, pid) is not None


async def adb_serial_present(serial: str) -> bool:
    """The adb server lists ``serial`` (in any state: an unauthorized phone is still there)."""
    from mtkfs.protocols import adb
    from mtkfs.transports.adb import server_address
    from mtkfs.transports.adb_shell import runner

    try:
        devices = await runner(server_address(), 5.0)(adb.host_devices())
    except Exception as exc:  # any failure to ask counts as "not seen"
        log.debug("adb server: %s", exc)
        return False
    return any(d.serial == serial for d in devices)


async def is_present(presence: Presence) -> bool:
    if presence.kind == "usb":
        return await trio.to_thread.run_sync(usb_port_present, presence.target)
    if presence.kind == "adb":
        return await adb_serial_present(presence.target)
    if presence.kind == "path":
        return await trio.to_thread.run_sync(os.path.exists, presence.target)
    return True


def gone_watcher(
    presence: Presence, gone_after_s: float, poll_s: float = POLL_S
) -> Callable[[], Awaitable[str]] | None:
    """A coroutine function that returns (with why) once the device has been absent for
    ``gone_after_s`` in a row; None when there is nothing to watch."""
    if presence.kind == "always":
        return None

    async def wait() -> str:
        absent_since: float | None = None
        while True:
            if await is_present(presence):
                absent_since = None
            else:
                now = trio.current_time()
                absent_since = now if absent_since is None else absent_since
                if now - absent_since >= gone_after_s:
                    return f"{presence.kind} {presence.target} gone for {gone_after_s:g} s"
            await trio.sleep(poll_s)

    return wait


# -- the mountpoint ---------------------------------------------------------------------------


def prepare_mountpoint(mountpoint: Path) -> None:
    """Create ``/run/mtkfs/INSTANCE``; clear a dead mount left by a killed daemon of ours (a
    restart must not fail on the wreck of the previous run)."""
    try:
        mountpoint.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise MountpointError(f"cannot create {mountpoint}: {exc.strerror or exc}") from exc
    try:
        os.listdir(mountpoint)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountpointError(f"{mountpoint}: {exc.strerror or exc}") from exc
        log.warning("%s: removing the dead mount of an earlier run", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def remove_mountpoint(mountpoint: Path) -> None:
    """The folder goes when the mount goes (only if empty: never anything else's)."""
    with contextlib.suppress(OSError):
        if not os.path.ismount(mountpoint):
            mountpoint.rmdir()
