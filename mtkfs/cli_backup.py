"""Command line for backups: ``mtkfs dump``, ``mtkfs export-rom`` and ``mtkfs restore``.

Orchestration only (the work is in :mod:`mtkfs.backup`); every MtkfsError becomes one line on
stderr and its exit code, as everywhere. Progress goes to stderr: bars on a terminal, plain
lines in a pipe or a log.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import trio

from mtkfs.backup.dump import DumpRequest, run_dump
from mtkfs.backup.restore import RestoreRequest, run_restore
from mtkfs.backup.rom import ExportRequest, run_export
from mtkfs.cli_source import add_map_args, add_source_args, cache_dir_of, source_options
from mtkfs.cli_writes import add_journal_dir
from mtkfs.session import JobOptions
from mtkfs.transports.linkmodel import parse_link_spec
from mtkfs.volume import TABLES

_EPILOG_DUMP = """\
examples:
  mtkfs dump da:usb -o backup/                 all partitions but userdata, plus the tables
  mtkfs dump da:usb boot recovery -o backup/   only these
  mtkfs dump User --all --compress zstd -o b/  a readback file, userdata included, compressed
  mtkfs dump uboot:/dev/ttyUSB0 -o nor/        hours over a console: Ctrl-C and rerun resumes

The folder gets NAME.img per partition (.gz/.zst when compressed), gaps/ (the partition-table
areas), manifest.json (where each came from, sha256, resume points) and SHA256SUMS
(`sha256sum -c SHA256SUMS`). Exit status: 0 done, 130 interrupted (run it again to continue).
"""


def _wrap(text: str) -> str:
    """A description for a parser whose epilog keeps its own line breaks."""
    return textwrap.fill(text, width=78)


def _add_job_args(parser: argparse.ArgumentParser) -> None:
    """Source, map, cache and progress options shared by the backup commands."""
    add_map_args(parser)
    add_source_args(parser)
    group = parser.add_argument_group("cache and progress")
    group.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="keep fetched chunks on disk under DIR (uboot: sources do by default)",
    )
    group.add_argument("--no-cache-dir", action="store_true", help="keep no chunks on disk")
    group.add_argument(
        "--trust-cache", action="store_true", help="use kept chunks without asking the device"
    )
    group.add_argument(
        "--progress",
        choices=("auto", "bars", "lines", "off"),
        default="auto",
        help="bars on a terminal, plain lines otherwise (auto, the default)",
    )
    group.add_argument("--link-model", metavar="SPEC", help="charge a modelled link (tests)")
    group.add_argument("--inject-faults", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help="verbose logging, tracebacks")


def job_options(args: argparse.Namespace, source: str) -> JobOptions:
    return JobOptions(
        source=source,
        source_options=source_options(args),
        map_files=tuple(args.map),
        no_map=args.no_map,
        cache_dir=cache_dir_of(args, source),
        trust_cache=args.trust_cache,
        link_model=None if args.link_model is None else parse_link_spec(args.link_model),
        inject_faults=args.inject_faults,
    )


def add_backup_commands(sub: Any) -> None:
    """Add ``dump``, ``export-rom`` and ``restore`` to the top-level subcommands ``sub``."""
    dump = sub.add_parser(
        "dump",
        help="copy partitions into a folder: progress, sha256 manifest, resumable",
        description=_wrap(
            "Copy the partitions of SOURCE (default: all, except a userdata larger "
            "than 1 GiB, plus the partition-table areas) into DIR through the same transport and "
            "cache as a mount. Interrupted (Ctrl-C, unplugged)? Run the same command again: "
            "finished files are kept, partial ones continue where they were made durable."
        ),
        epilog=_EPILOG_DUMP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dump.add_argument("source", metavar="SOURCE")
    dump.add_argument(
        "parts", nargs="*", metavar="PART", help="partitions (or region:NAME) to dump"
    )
    dump.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    dump.add_argument("--all", action="store_true", help="include a huge userdata too")
    dump.add_argument(
        "--compress",
        choices=("none", "gzip", "zstd"),
        default="none",
        help="compress each file on the fly (zstd: fast; gzip: opens anywhere)",
    )
    _add_job_args(dump)

    export = sub.add_parser(
        "export-rom",
        help="make an SP Flash Tool ROM folder (scatter, preloader.bin, sparse ext4, Checksum.ini)",
        description="Turn SOURCE (a phone, a readback, a dd image) into a folder SP Flash Tool "
        "loads: a V1.1.x scatter file from the map, preloader.bin (the boot area after its "
        "2 KiB EMMC_BOOT header), raw images of the other downloadable partitions, ext4 "
        "partitions as Android sparse images of their used blocks, and Checksum.ini. "
        "Calibration and identity partitions (proinfo, nvram, protect*, seccfg…) are not "
        "downloaded by the scatter and not exported.",
    )
    export.add_argument("source", metavar="SOURCE")
    export.add_argument("output", metavar="DIR", type=Path)
    export.add_argument("--all", action="store_true", help="include a userdata over 1 GiB")
    export.add_argument(
        "--platform", default="MT6xxx", help="the scatter's platform, e.g. MT6752 (names the file)"
    )
    export.add_argument("--project", default="mtkfs", help="the scatter's project name")
    _add_job_args(export)

    restore = sub.add_parser(
        "restore",
        help="write a dump (or a scatter ROM folder) back, verified, after showing the plan",
        description=_wrap(
            "Write the files of DIR — an mtkfs dump (manifest.json) or an SP Flash "
            "Tool ROM folder (*scatter*.txt, Checksum.ini; sparse images are expanded) — to TARGET "
            "(any source, opened read-write). The plan is always printed first. Every file is "
            "checked against its sha256/Checksum.ini before anything is written; each partition "
            "is written through the journal and verified on the device. Refused, with nothing "
            "written: size mismatches with the target's own table, protected partitions you named "
            "without --unlock. A blank target (no table) takes the dump's offsets."
        ),
        epilog="examples:\n"
        "  mtkfs restore backup/ da:usb --dry-run          show the plan, check the files\n"
        "  mtkfs restore backup/ da:usb boot recovery       only these\n"
        "  mtkfs restore backup/ blank/ --unlock-all        a whole phone onto a blank image\n"
        "\nThe overwritten bytes are kept as a backup session: `mtkfs journal rollback "
        "TARGET` undoes a restore.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_argument("folder", metavar="DIR", type=Path)
    restore.add_argument("target", metavar="TARGET")
    restore.add_argument("parts", nargs="*", metavar="PART", help="only these items")
    restore.add_argument(
        "--unlock",
        action="append",
        default=[],
        metavar="NAME",
        help=f"allow protected partition NAME (preloader, nvram, proinfo…), or '{TABLES}' for "
        "the partition-table areas; repeatable",
    )
    restore.add_argument(
        "--unlock-all",
        action="store_true",
        help="allow every protected partition and the tables (a whole phone onto a blank "
        "chip); RPMB is never written",
    )
    restore.add_argument(
        "-n", "--dry-run", action="store_true", help="plan and check the files; write nothing"
    )
    add_journal_dir(restore)
    _add_job_args(restore)


def cmd_dump(args: argparse.Namespace) -> int:
    request = DumpRequest(
        job=job_options(args, args.source),
        out_dir=args.output.absolute(),
        names=tuple(args.parts),
        everything=args.all,
        compression=args.compress,
        progress=args.progress,
    )
    return trio.run(run_dump, request)


def cmd_restore(args: argparse.Namespace) -> int:
    request = RestoreRequest(
        folder=args.folder.absolute(),
        target=job_options(args, args.target),
        names=tuple(args.parts),
        unlock=tuple(args.unlock),
        unlock_all=args.unlock_all,
        dry_run=args.dry_run,
        progress=args.progress,
        journal_dir=None if args.journal_dir is None else args.journal_dir.absolute(),
    )
    return trio.run(run_restore, request)


def cmd_export_rom(args: argparse.Namespace) -> int:
    request = ExportRequest(
        job=job_options(args, args.source),
        out_dir=args.output.absolute(),
        platform=args.platform,
        project=args.project,
        everything=args.all,
        progress=args.progress,
    )
    return trio.run(run_export, request)
