"""Command line for plug-in mounting: ``mtkfs service | detect | install-systemd``.

``service`` is what ``mtkfs@.service`` runs; ``detect`` lists what is plugged in and the
SOURCE to use for it; ``install-systemd`` puts the udev rules, the unit and the example
configuration in place (see :mod:`mtkfs.service`, :mod:`mtkfs.systemd_files`,
docs/systemd.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import trio

from mtkfs.errors import MtkfsError
from mtkfs.notify import Notifier

log = logging.getLogger(__name__)


def add_systemd_commands(sub: Any) -> None:
    service = sub.add_parser(
        "service",
        help="run the mount of one plugged-in device (what mtkfs@.service runs)",
        description="Mount the device named by INSTANCE at /run/mtkfs/INSTANCE in the "
        "foreground, reporting to systemd (READY=1, STATUS=, STOPPING=1). INSTANCE is "
        "usb-PORT (the phone on that USB port, e.g. usb-1-4), adb-SERIAL, or a section of "
        "/etc/mtkfs/mtkfs.conf ($MTKFS_CONFIG_DIR overrides the folder). Stops on SIGTERM "
        "(commit, unmount, exit 0) or when the device has been gone for gone_after seconds.",
    )
    service.add_argument("instance", metavar="INSTANCE")
    service.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")

    detect = sub.add_parser(
        "detect",
        help="list attached phones and boards, with the SOURCE to mount each",
        description="List MediaTek phones in BROM/preloader/DA mode on USB (bus, port, mode), "
        "phones the adb server knows (it is not started), and U-Boot boards configured in "
        "/etc/mtkfs/mtkfs.conf — each with the SOURCE for mtkfs mount and its service name.",
    )
    detect.add_argument("--json", action="store_true", help="machine-readable output")
    detect.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")

    install = sub.add_parser(
        "install-systemd",
        help="install (or --uninstall) the udev rules, mtkfs@.service and mtkfs.conf",
        description="Write 60-mtkfs.rules to PREFIX/etc/udev/rules.d, mtkfs@.service to "
        "PREFIX/etc/systemd/system and the example mtkfs.conf to PREFIX/etc/mtkfs (an existing "
        "one is kept), then reload udev and systemd when PREFIX is /.",
    )
    install.add_argument("--prefix", type=Path, default=Path("/"), help="root to install under")
    install.add_argument(
        "--mtkfs", type=Path, help="absolute path of the mtkfs executable the unit runs"
    )
    install.add_argument("--uninstall", action="store_true", help="remove what was installed")
    install.add_argument("--no-reload", action="store_true", help="do not reload udev/systemd")
    install.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


# -- service ----------------------------------------------------------------------------------


def _mount_option_table(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``mtkfs mount``'s options by their configuration-file names (the fstab names)."""
    from mtkfs.fstab import mount_flags, subcommands

    return dict(mount_flags(subcommands(parser)["mount"]))


def cmd_service(args: argparse.Namespace) -> int:
    from mtkfs import cli, service
    from mtkfs.daemon import serve

    if not args.debug:
        # The journal is the service's log: what was mounted, what went away, at INFO.
        logging.getLogger().setLevel(logging.INFO)
    notifier = Notifier()
    try:
        parser = cli.build_parser()
        config = service.load_config(service.config_dir())
        plan = service.plan(args.instance, config, _mount_option_table(parser))
        service.prepare_mountpoint(plan.mountpoint)
    except MtkfsError as exc:
        notifier.notify(STATUS=f"FAILED: {exc}", ERRNO=exc.errno)
        raise
    argv = ["mount", "--foreground", *plan.mount_argv]
    if args.debug:
        argv.append("--debug")
    mount_args = parser.parse_args([*argv, "--", plan.source, str(plan.mountpoint)])
    log.info("service %s: mtkfs %s -- %s %s", plan.instance, " ".join(argv), plan.source,
             plan.mountpoint)  # fmt: skip
    try:
        mount_config = cli._mount_config(mount_args)
        until_gone = service.gone_watcher(plan.presence, plan.gone_after_s)
        trio.run(
            lambda: serve(mount_config, lambda: None, notifier=notifier, until_gone=until_gone)
        )
    except MtkfsError as exc:
        notifier.notify(STATUS=f"FAILED: {exc}", ERRNO=exc.errno)
        raise
    finally:
        service.remove_mountpoint(plan.mountpoint)
    return 0


# -- detect -----------------------------------------------------------------------------------


def detect_usb() -> tuple[list[dict[str, Any]], str | None]:
    """MediaTek phones on USB (descriptors only, nothing opened), or why they cannot be listed."""
    from mtkfs.links.usb import find_mtk_devices

    try:
        found = find_mtk_devices()
    except MtkfsError as exc:
        return [], str(exc)
    rows = []
    for dev in found:
        port = dev.port_path
        rows.append(
            {
                "kind": "usb",
                "mode": str(dev.identity.mode),
                "id": str(dev.identity),
                "name": dev.identity.name,
                "bus": dev.bus,
                "address": dev.address,
                "port": port,
                "source": f"da:usb:{port}" if port else "da:usb",
                "service": f"mtkfs@usb-{port}.service" if port else None,
            }
        )
    return rows, None


async def detect_adb() -> tuple[list[dict[str, Any]], str | None]:
    """Phones the adb server knows, if one runs (mtkfs never starts one just to look)."""
    from mtkfs.protocols import adb
    from mtkfs.transports.adb import server_address
    from mtkfs.transports.adb_shell import runner

    try:
        address = server_address()
        devices = await runner(address, 5.0)(adb.host_devices())
    except MtkfsError as exc:
        return [], f"adb server: {exc}"
    rows = []
    for dev in devices:
        rows.append(
            {
                "kind": "adb",
                "mode": dev.state,
                "serial": dev.serial,
                "model": dev.attrs.get("model", ""),
                "usb": dev.attrs.get("usb", ""),
                "source": f"adb:{dev.serial}",
                "service": f"mtkfs@adb-{dev.serial}.service",
                "usable": dev.online,
            }
        )
    return rows, None


def detect_configured() -> tuple[list[dict[str, Any]], str | None]:
    """Boards configured in mtkfs.conf (their ``source``), and whether their port is there."""
    from mtkfs import service

    try:
        config = service.load_config(service.config_dir())
    except MtkfsError as exc:
        return [], str(exc)
    rows = []
    for name in config.sections():
        source = config[name].get("source", "").strip()
        if not source:
            continue
        presence = service._presence_of(source)
        present = None if presence.kind == "always" else Path(presence.target).exists()
        rows.append(
            {
                "kind": "configured",
                "mode": "uboot" if source.startswith("uboot:") else source.split(":", 1)[0],
                "name": name,
                "source": source,
                "service": f"mtkfs@{name}.service",
                "present": present,
            }
        )
    return rows, None


def cmd_detect(args: argparse.Namespace) -> int:
    usb, usb_note = detect_usb()
    adb_rows, adb_note = trio.run(detect_adb)
    configured, conf_note = detect_configured()
    notes = [n for n in (usb_note, adb_note, conf_note) if n]
    devices = [*usb, *adb_rows, *configured]
    if args.json:
        json.dump({"devices": devices, "notes": notes}, sys.stdout, indent=2)
        print()
        return 0
    if not devices:
        print("nothing found: no MediaTek phone in BROM/preloader mode on USB, no adb device")
    for row in devices:
        if row["kind"] == "usb":
            where = f"bus {row['bus']} port {row['port'] or '?'}"
            print(f"usb    {row['mode']:<10} {row['id']}  {where:<18} {row['source']}")
        elif row["kind"] == "adb":
            state = "" if row["usable"] else f"  ({row['mode']}: not usable yet)"
            print(f"adb    {row['model'] or '-':<10} {row['serial']:<24} {row['source']}{state}")
        else:
            here = {True: "present", False: "absent", None: ""}[row["present"]]
            print(f"conf   {row['name']:<10} {here:<24} {row['source']}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


# -- install-systemd --------------------------------------------------------------------------


def cmd_install_systemd(args: argparse.Namespace) -> int:
    from mtkfs import systemd_files

    mtkfs_path = args.mtkfs.absolute() if args.mtkfs else systemd_files.find_mtkfs()
    prefix = args.prefix.absolute()
    if args.uninstall:
        done = systemd_files.uninstall(prefix, mtkfs_path)
    else:
        done = systemd_files.install(prefix, mtkfs_path)
    if prefix == Path("/") and not args.no_reload:
        done += systemd_files.run_reload()
    for line in done or ["nothing to do"]:
        print(line)
    if not args.uninstall:
        print(
            f"next: add yourself to the {systemd_files.ACCESS_GROUP} group, plug in a phone in "
            "BROM/preloader mode, then `mtkfs detect` and `ls /run/mtkfs/`"
        )
    return 0
