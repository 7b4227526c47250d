"""Command line for writes: ``mtkfs status`` and ``mtkfs journal show|replay|rollback|prune``.

Kept apart from :mod:`mtkfs.cli` (mount, umount, ls) so each stays readable; the same rules
apply: orchestration only, every MtkfsError becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from mtkfs import recovery
from mtkfs.cli_source import add_source_args, source_options
from mtkfs.errors import JournalError, MountpointError
from mtkfs.journal import Journal, default_journal_root
from mtkfs.mounts import mount_entry
from mtkfs.transports import open_transport
from mtkfs.transports.base import Transport
from mtkfs.units import human_size


def add_write_commands(sub: Any) -> None:
    """Add ``status`` and ``journal`` to the top-level subcommands ``sub``."""
    status = sub.add_parser(
        "status",
        help="is a mount healthy? (dirty data, failed writes, failsafe read-only)",
        description="Print the state of an mtkfs mount. Exit status 0: healthy; 7: the mount "
        "turned read-only after a write the device did not verify.",
    )
    status.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    journal = sub.add_parser(
        "journal",
        help="show, finish (replay) or undo (rollback) journalled writes of a source",
        description="Every write to a device is journalled (old and new bytes) before the "
        "device sees it. After a crash, an unplugged device or a failed verify, the unfinished "
        "writes wait here for your decision; a read-write mount refuses to start until then.",
    )
    actions = journal.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="list unfinished writes and backup sessions")
    show.add_argument("source", metavar="SOURCE")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    replay = actions.add_parser(
        "replay", help="finish unfinished writes: write their new bytes and verify"
    )
    replay.add_argument("source", metavar="SOURCE")
    rollback = actions.add_parser(
        "rollback",
        help="undo: unfinished writes first, then the newest backup session (or --session)",
        description="Write back old bytes, newest first: first the unfinished writes, then the "
        "original content saved by the newest backup session that was not rolled back yet "
        "(every partition it touched, or only PART...). Run it again to undo older sessions.",
    )
    rollback.add_argument("source", metavar="SOURCE")
    rollback.add_argument("partitions", nargs="*", metavar="PART", help="only these partitions")
    rollback.add_argument("--session", metavar="ID", help="restore this backup session")
    rollback.add_argument(
        "--pending-only", action="store_true", help="only undo the unfinished writes"
    )
    rollback.add_argument(
        "--force",
        action="store_true",
        help="also restore chunks that changed after the session (by a newer mount or "
        "another tool); without it they are skipped and listed",
    )
    prune = actions.add_parser("prune", help="delete backup sessions to free disk space")
    prune.add_argument("source", metavar="SOURCE")
    prune.add_argument(
        "--keep", type=int, default=0, metavar="N", help="keep the newest N sessions (default 0)"
    )
    for action in (show, replay, rollback, prune):
        add_journal_dir(action)
        add_source_args(action)
        action.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")


def add_journal_dir(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--journal-dir",
        type=Path,
        metavar="DIR",
        help=f"where write journals live (default {default_journal_root()})",
    )


# -- status --------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    mountpoint: Path = args.mountpoint.absolute()
    entry = mount_entry(mountpoint)
    if entry is None or entry.fstype != "fuse.mtkfs":
        raise MountpointError(f"{mountpoint} is not an mtkfs mount")
    try:
        status = json.loads((mountpoint / ".mtkfs" / "status.json").read_text())
    except (OSError, ValueError) as exc:
        raise MountpointError(
            f"{mountpoint} does not answer ({exc}); if its daemon is gone: mtkfs umount "
            f"{mountpoint}"
        ) from exc
    healthy = status.get("failsafe") is None
    if args.json:
        json.dump(status, sys.stdout, indent=2)
        print()
        return 0 if healthy else JournalError.exit_code
    mode = "read-only" if status.get("writes") is None else "read-write"
    print(f"{mountpoint}: {status['source']}")
    if healthy:
        print(f"state:  mounted {mode}, healthy")
    else:
        print("state:  FAILSAFE read-only: a write was not verified on the device")
        print(f"        {status['failsafe']}")
    writes = status.get("writes")
    if writes is not None:
        print(
            f"writes: {human_size(writes['written_bytes'])} written, "
            f"{writes['committed_chunks']} chunk(s) committed and verified, "
            f"{human_size(writes['dirty_bytes'])} not yet committed"
        )
        for failure in writes["failures"]:
            names = ",".join(failure["partitions"]) or failure["region"]
            print(
                f"  failed: {names} at {failure['region']}+{failure['offset']:#x} "
                f"({failure['size']} bytes): {failure['reason']}"
            )
        print(f"journal: {writes['journal']}")
        if not healthy:
            print(
                "what now: unmount, then `mtkfs journal show SOURCE` and `mtkfs journal "
                "replay SOURCE` (write again) or `mtkfs journal rollback SOURCE` (undo)"
            )
    for warning in status.get("warnings", []):
        print(f"warning: {warning}")
    return 0 if healthy else JournalError.exit_code


# -- journal -------------------------------------------------------------------------------------


async def _journal(args: argparse.Namespace) -> int:
    writes = args.action in ("replay", "rollback")
    root = args.journal_dir.absolute() if args.journal_dir else default_journal_root()
    transport = await open_transport(args.source, writable=writes, options=source_options(args))
    try:
        journal = Journal.open(root, transport.device_id, transport.description)
        try:
            return await _journal_action(args, transport, journal)
        finally:
            journal.close()
    finally:
        await transport.aclose()


async def _journal_action(args: argparse.Namespace, transport: Transport, journal: Journal) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    if args.action == "show":
        report = await recovery.show(transport, journal)
        if args.json:
            json.dump(report, sys.stdout, indent=2)
            print()
        else:
            _print_journal(report)
        return JournalError.exit_code if report["unfinished"] else 0
    if args.action == "replay":
        count = await recovery.replay(transport, journal, progress)
        print(f"replayed {count} unfinished write(s); each verified on the device")
        return 0
    if args.action == "rollback":
        count = await recovery.rollback_pending(transport, journal, progress)
        print(f"rolled back {count} unfinished write(s)")
        if not args.pending_only:
            session = recovery.pick_session(journal, args.session)
            if session is None:
                print("no backup session left to restore")
            else:
                restored = await recovery.restore_session(
                    transport, journal, session, args.partitions, progress, force=args.force
                )
                what = ", ".join(args.partitions) or "every partition it touched"
                print(
                    f"restored backup session {session.id} ({what}): {restored.changed} chunk(s) "
                    "written back and verified"
                )
                if restored.skipped:
                    print(
                        f"skipped {len(restored.skipped)} chunk(s) changed after that session "
                        f"(by a newer mount or another tool): {', '.join(restored.skipped[:8])}"
                        f"{' …' if len(restored.skipped) > 8 else ''}; roll back newer sessions "
                        "first, or pass --force to overwrite those changes",
                        file=sys.stderr,
                    )
                    return JournalError.exit_code
        return 0
    result = recovery.prune(journal, args.keep)
    print(f"removed {result.sessions} backup session(s), {human_size(result.bytes)}")
    return 0


def _print_journal(report: dict[str, Any]) -> None:
    print(f"source:  {report['source']}")
    print(f"journal: {report['journal']}")
    pending = report["unfinished"]
    if not pending:
        print("unfinished writes: none")
    else:
        print(f"unfinished writes: {len(pending)}")
        print(f"  {'TXN':>5} {'PARTITION':<16} {'REGION':<6} {'OFFSET':>12} {'SIZE':>10} STATE")
        for e in pending:
            names = ",".join(e["partitions"]) or "-"
            state = f"{e['state']}, device holds {e['device_holds']}"
            print(
                f"  {e['txn']:>5} {names:<16} {e['region']:<6} {e['offset']:>#12x} "
                f"{human_size(e['size']):>10} {state}"
            )
            if e["reason"]:
                print(f"        {e['reason']}")
        source = report["device_id"].removeprefix("image:")
        print(
            f"decide: mtkfs journal replay {source}   (write the new bytes)\n"
            f"        mtkfs journal rollback {source} --pending-only   (put the old ones back)"
        )
    backups = report["backups"]
    print(f"backup sessions: {len(backups) or 'none'}")
    for b in backups:
        parts = ", ".join(b["partitions"]) or "-"
        print(f"  {b['id']}  {b['state']:<11} {human_size(b['bytes']):>10}  {parts}")


def cmd_journal(args: argparse.Namespace) -> int:
    return trio.run(_journal, args)
