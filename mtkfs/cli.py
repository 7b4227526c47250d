"""Command line: ``mtkfs mount | umount | ls | status | journal``.

Orchestration only. Every :class:`~mtkfs.errors.MtkfsError` ends the command with one line on
stderr (``mtkfs: error: …``) and its documented exit code — never a traceback; ``--debug`` shows
the traceback for bug reports.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from mtkfs import __version__, fstab
from mtkfs.cache import ChunkCache
from mtkfs.cli_backup import add_backup_commands, cmd_dump, cmd_export_rom, cmd_restore
from mtkfs.cli_source import (
    add_map_args,
    add_source_args,
    cache_dir_of,
    source_argv,
    source_options,
)
from mtkfs.cli_systemd import add_systemd_commands, cmd_detect, cmd_install_systemd, cmd_service
from mtkfs.cli_writes import add_journal_dir, add_write_commands, cmd_journal, cmd_status
from mtkfs.content.scan import detect_partitions
from mtkfs.daemon import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_COMMIT_INTERVAL_S,
    DEFAULT_MAX_DIRTY_BYTES,
    MountConfig,
    check_mountpoint,
    serve,
)
from mtkfs.discover import discover_map
from mtkfs.errors import MountpointError, MtkfsError, UsageError
from mtkfs.log import setup_logging
from mtkfs.maps.report import map_report
from mtkfs.mounts import mount_entry
from mtkfs.transports import open_transport
from mtkfs.transports.linkmodel import parse_link_spec
from mtkfs.units import human_size, parse_size

log = logging.getLogger(__name__)


_NOTIFY_VARIABLES = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


def default_log_file() -> Path:
    """Where a background daemon logs (its stderr goes nowhere)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mtkfs" / "mtkfs.log"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtkfs",
        description="Show a device's flash (or a readback image) as a folder of partition files.",
    )
    parser.add_argument("--version", action="version", version=f"mtkfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser(
        "mount",
        help="mount a source as a folder of partition files",
        description="Mount SOURCE at MOUNTPOINT. SOURCE is a readback image file (dd of "
        "mmcblk0, SP Flash Tool User, NOR dump), a block device, a folder of readback files "
        "(Boot1/Boot2/RPMB/User or mmcblk0*.img), or sim:NAME[:FOLDER] (a simulated phone "
        "reached through the real BROM + Download Agent client). Read-only unless -o rw; "
        "writes are journalled, written and verified on the device before fsync/close report "
        "success.",
    )
    mount.add_argument("source", metavar="SOURCE")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    mount.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTIONS",
        help="comma-separated mount options: ro (default), rw, allow_other, default_permissions, "
        "and the options below written fstab-style: map=FILE, cache_size=SIZE, no_map…",
    )
    add_map_args(mount)
    add_source_args(mount)
    writes = mount.add_argument_group("writes (with -o rw)")
    writes.add_argument(
        "--unlock",
        action="append",
        default=[],
        metavar="NAME",
        help="allow writes to protected partition NAME (preloader, nvram, proinfo, seccfg, "
        "the partition tables…); repeatable. RPMB is never writable",
    )
    writes.add_argument(
        "--unlock-regions",
        action="store_true",
        help="allow writes through regions/*.img (still not into locked protected partitions)",
    )
    writes.add_argument(
        "--max-dirty",
        default=str(DEFAULT_MAX_DIRTY_BYTES),
        metavar="SIZE",
        help="written data held in memory before writers wait for a commit (default 64M)",
    )
    writes.add_argument(
        "--commit-interval",
        type=float,
        default=DEFAULT_COMMIT_INTERVAL_S,
        metavar="SECONDS",
        help="commit data written this long ago even without fsync/close (default 5; 0: never)",
    )
    add_journal_dir(writes)
    writes.add_argument("--inject-faults", metavar="SPEC", help=argparse.SUPPRESS)
    mount.add_argument(
        "--cache-size",
        default=str(DEFAULT_CACHE_BYTES),
        metavar="SIZE",
        help="memory for cached chunks, e.g. 256M (default), 1G",
    )
    mount.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="keep fetched chunks on disk under DIR, so an interrupted copy resumes without "
        "reading them again (revalidated with the device's checksum where it has one); "
        "uboot: sources do this by default in $XDG_CACHE_HOME/mtkfs/chunks",
    )
    mount.add_argument(
        "--no-cache-dir",
        action="store_true",
        help="keep no chunks on disk, not even for a uboot: source",
    )
    mount.add_argument(
        "--trust-cache",
        action="store_true",
        help="with --cache-dir: use stored chunks without asking the device to confirm them",
    )
    mount.add_argument(
        "--link-model",
        metavar="SPEC",
        help="charge a modelled link per command, for tests and what-if measurements: "
        "usb2, uboot, or e.g. 'latency=1ms,bandwidth=40MB/s'",
    )
    mount.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr"
    )
    mount.add_argument("--log", type=Path, metavar="FILE", help="log file of a background mount")
    mount.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    umount = sub.add_parser("umount", help="unmount cleanly (also cleans up a dead mount)")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    umount.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="wait for the daemon"
    )
    umount.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    ls = sub.add_parser("ls", help="print the partition table of a source")
    ls.add_argument("source", metavar="SOURCE")
    add_map_args(ls)
    add_source_args(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")

    info = sub.add_parser(
        "info",
        help="what a device says about itself (chip, mode, security, DA protocol, storage)",
        description="Connect to SOURCE, print what it reports about itself and its storage, "
        "and let it go — nothing is mounted. A phone is shut down by its DA afterwards (replug "
        "it to mount it).",
    )
    info.add_argument("source", metavar="SOURCE")
    add_source_args(info)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")

    add_write_commands(sub)
    add_backup_commands(sub)
    add_systemd_commands(sub)
    return parser


# -- mount ---------------------------------------------------------------------------------------


def _mount_config(args: argparse.Namespace) -> MountConfig:
    options = tuple(o.strip() for group in args.options for o in group.split(",") if o.strip())
    return MountConfig(
        source=args.source,
        mountpoint=args.mountpoint.absolute(),
        options=options,
        map_files=tuple(args.map),
        no_map=args.no_map,
        cache_bytes=parse_size(args.cache_size),
        log_file=args.log,
        link_model=None if args.link_model is None else parse_link_spec(args.link_model),
        cache_dir=cache_dir_of(args),
        trust_cache=args.trust_cache,
        unlock=tuple(args.unlock),
        unlock_regions=args.unlock_regions,
        max_dirty_bytes=parse_size(args.max_dirty),
        commit_interval_s=max(0.0, args.commit_interval),
        journal_dir=None if args.journal_dir is None else args.journal_dir.absolute(),
        inject_faults=args.inject_faults,
        source_options=source_options(args),
    )


def cmd_mount(args: argparse.Namespace) -> int:
    config = _mount_config(args)
    if args.foreground:
        return _mount_foreground(config, args.ready_fd)
    # Background: validate what we can here (fast, readable errors), then re-run ourselves in
    # the foreground in a new session and wait until it says the mount is ready or failed.
    check_mountpoint(config.mountpoint)
    log_file = (args.log or default_log_file()).absolute()
    read_fd, write_fd = os.pipe()
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log_stream:
            child = subprocess.Popen(
                _daemon_argv(
                    config, log_file, write_fd, debug=args.debug, link_model=args.link_model
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_stream,
                pass_fds=(write_fd,),
                start_new_session=True,
                # We are the process a service manager watches, not the daemon: it must not
                # claim READY=1 for us (run `mtkfs mount -f` under a Type=notify unit).
                env={k: v for k, v in os.environ.items() if k not in _NOTIFY_VARIABLES},
            )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "r") as ready:
        message = ready.readline().strip()
    if message == "READY":
        return 0
    if message.startswith("ERROR "):
        code, _, text = message[len("ERROR ") :].partition(" ")
        print(f"mtkfs: error: {text}", file=sys.stderr)
        return int(code)
    status = child.wait()
    print(
        f"mtkfs: error: the mount daemon exited before the mount was ready (status {status}); "
        f"see {log_file} or run again with --foreground --debug",
        file=sys.stderr,
    )
    return 1


def _daemon_argv(
    config: MountConfig, log_file: Path, ready_fd: int, *, debug: bool, link_model: str | None
) -> list[str]:
    """The command line of the background daemon: this same mount, in the foreground."""
    argv = [sys.executable, "-m", "mtkfs", "mount", "--foreground", "--ready-fd", str(ready_fd)]
    argv += ["--log", str(log_file), "--cache-size", str(config.cache_bytes)]
    if config.options:
        argv += ["-o", ",".join(config.options)]
    for map_file in config.map_files:
        argv += ["--map", str(map_file.absolute())]
    if config.no_map:
        argv.append("--no-map")
    if link_model is not None:
        argv += ["--link-model", link_model]
    if config.cache_dir is not None:
        argv += ["--cache-dir", str(config.cache_dir)]
    else:
        argv += ["--no-cache-dir"]  # a uboot: source would otherwise take the default
    if config.trust_cache:
        argv.append("--trust-cache")
    for name in config.unlock:
        argv += ["--unlock", name]
    if config.unlock_regions:
        argv.append("--unlock-regions")
    argv += ["--max-dirty", str(config.max_dirty_bytes)]
    argv += ["--commit-interval", repr(config.commit_interval_s)]
    if config.journal_dir is not None:
        argv += ["--journal-dir", str(config.journal_dir)]
    if config.inject_faults is not None:
        argv += ["--inject-faults", config.inject_faults]
    argv += source_argv(config.source_options)
    if debug:
        argv.append("--debug")
    # "--" so that a source or mountpoint starting with "-" is never taken for an option.
    return [*argv, "--", config.source, str(config.mountpoint)]


def _mount_foreground(config: MountConfig, ready_fd: int | None) -> int:
    def report(line: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            os.write(ready_fd, (line + "\n").encode())
            os.close(ready_fd)
            ready_fd = None

    try:
        trio.run(serve, config, lambda: report("READY"))
    except MtkfsError as exc:
        report(f"ERROR {exc.exit_code} " + " ".join(str(exc).split()))
        raise
    except BaseException:
        report("ERROR 1 unexpected failure; run with --foreground --debug to see why")
        raise
    return 0


# -- umount --------------------------------------------------------------------------------------


def _daemon_pid(mountpoint: Path) -> int | None:
    try:
        status = json.loads((mountpoint / ".mtkfs" / "status.json").read_text())
        return int(status["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmd_umount(args: argparse.Namespace) -> int:
    mountpoint: Path = args.mountpoint.absolute()
    entry = mount_entry(mountpoint)
    if entry is None:
        raise MountpointError(f"{mountpoint} is not mounted")
    if entry.fstype != "fuse.mtkfs":
        raise MountpointError(
            f"{mountpoint} is a {entry.fstype} mount, not an mtkfs one; use umount(8) for it"
        )
    pid = _daemon_pid(mountpoint)
    result = subprocess.run(
        ["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        stale = "not connected" in result.stderr
        busy = "busy" in result.stderr
        if busy:
            raise MountpointError(
                f"{mountpoint} is busy: something still uses it (a loop mount, a shell inside "
                f"it); see `fuser -vm {mountpoint}`, stop that, then retry"
            )
        if not stale:
            raise MountpointError(f"cannot unmount {mountpoint}: {result.stderr.strip()}")
        # The daemon is gone; a lazy unmount removes the dead entry.
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        print(f"mtkfs: removed dead mount {mountpoint}", file=sys.stderr)
        return 0
    if pid is not None:
        deadline = time.monotonic() + args.timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            print(f"mtkfs: warning: daemon {pid} still running after unmount", file=sys.stderr)
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own child, in tests) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


# -- ls ------------------------------------------------------------------------------------------


async def _ls_report(args: argparse.Namespace) -> dict[str, Any]:
    transport = await open_transport(args.source, options=source_options(args))
    try:
        cache = ChunkCache(transport, chunk_bytes=1 << 16, max_bytes=16 << 20)
        pmap = await discover_map(
            transport.regions,
            cache.read,
            map_files=args.map,
            no_map=args.no_map,
            device_table=await transport.device_table(),
            probe_limit_bytes=transport.probe_limit_bytes,
        )
        contents = await detect_partitions(transport, pmap)
        return map_report(transport.description, transport.regions.values(), pmap, contents)
    finally:
        await transport.aclose()


def cmd_ls(args: argparse.Namespace) -> int:
    report = trio.run(_ls_report, args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(f"source: {report['source']}")
    print(f"map:    {report['map']}")
    regions = ", ".join(f"{r['name']} {human_size(r['size'])}" for r in report["regions"])
    print(f"regions: {regions}")
    print()
    print(f"{'#':>3}  {'NAME':<16} {'REGION':<6} {'OFFSET':>14} {'SIZE':>14} {'':>10}  CONTENT")
    for part in report["partitions"]:
        number = "" if part["number"] is None else str(part["number"])
        mark = "" if part["exposed"] else "  (missing)"
        content = part["content"]["detail"] if part["content"] else ""
        print(
            f"{number:>3}  {part['name']:<16} {part['region']:<6} {part['offset']:>#14x} "
            f"{part['size']:>#14x} {human_size(part['size']):>10}  {content}{mark}"
        )
        for warning in part["warnings"]:
            print(f"{'':>5}! {warning}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    return 0


# -- info ----------------------------------------------------------------------------------------


async def _info_report(args: argparse.Namespace) -> dict[str, Any]:
    transport = await open_transport(args.source, options=source_options(args))
    try:
        return {
            "source": transport.description,
            "device_id": transport.device_id,
            "regions": {name: region.size_bytes for name, region in transport.regions.items()},
            "device": transport.device_report(),
        }
    finally:
        await transport.aclose()


def cmd_info(args: argparse.Namespace) -> int:
    report = trio.run(_info_report, args)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    device = report["device"]
    print(f"source:    {report['source']}")
    print(f"device id: {report['device_id']}")
    if device.get("kind") == "adb":
        print(f"phone:     {device['model'] or 'unknown model'}, Android {device['android']} "
              f"(SDK {device['sdk']})")  # fmt: skip
        print(f"service:   {device['shell']}, root by {device['root']}")
    elif device.get("kind") == "uboot":
        print(
            f"console:   prompt {device['prompt']!r}, {device['byte_order']}-endian, md width "
            f"{device['md_width']} bytes, staging RAM at {device['staging_ram']}"
        )
        print(f"flash:     {device['flash_description'] or device['flash']}")
    elif device:
        security = device["target_config"]
        print(f"chip:      {device['chip']} (hw code {device['hw_code']})")
        print(f"mode:      {device['mode']}")
        print(
            f"security:  {', '.join(security['bits']) or 'none'} (target config {security['raw']})"
        )
        print(f"protocol:  {device['protocol']} DA, loaded from {device['connection_agent']}")
        print(f"usb:       {device['usb_speed'] or 'unknown'} on {device['link']}")
        storage = device["storage"]
        print(f"storage:   {storage['kind']}, {storage['block_size']}-byte blocks")
    for name, size in report["regions"].items():
        print(f"  {name:<8} {size:>16} bytes  {human_size(size):>10}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # `mount -t fuse.mtkfs` and fstab run `mtkfs SOURCE MOUNTPOINT -o OPTIONS`: see fstab.py.
        argv = fstab.command_line(sys.argv[1:] if argv is None else argv, parser)
    except UsageError as exc:
        print(f"mtkfs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    setup_logging(debug=debug, log_file=getattr(args, "log", None))
    commands = {
        "mount": cmd_mount,
        "umount": cmd_umount,
        "ls": cmd_ls,
        "info": cmd_info,
        "status": cmd_status,
        "journal": cmd_journal,
        "service": cmd_service,
        "detect": cmd_detect,
        "install-systemd": cmd_install_systemd,
        "dump": cmd_dump,
        "restore": cmd_restore,
        "export-rom": cmd_export_rom,
    }
    try:
        return commands[args.command](args)
    except MtkfsError as exc:
        if debug:
            log.exception("failed")
        print(f"mtkfs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if debug:
            log.exception("failed")
        if exc.errno == errno.EACCES:
            print(f"mtkfs: error: permission denied: {exc.filename} (try sudo)", file=sys.stderr)
        else:
            print(f"mtkfs: error: {exc}", file=sys.stderr)
        return 1
