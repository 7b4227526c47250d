"""The command-line options that say how to reach a device source, shared by every command
that opens one (``mount``, ``ls``, ``journal``), and their round trip into the daemon's argv."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mtkfs.transports import SourceOptions
from mtkfs.transports.da import DEFAULT_IO_TIMEOUT_S


def add_source_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("phones (da: and sim: sources)")
    group.add_argument(
        "--da",
        type=Path,
        metavar="FILE",
        help="the phone's Download Agent (MTK_AllInOne_DA.bin, DA_PL.bin… from its firmware "
        "package or SP Flash Tool) for da: sources; sim: phones make their own",
    )
    group.add_argument(
        "--preloader",
        type=Path,
        metavar="FILE",
        help="the phone's own preloader (preloader_<board>.bin, Boot1 of a readback, or "
        "regions/boot1.img of an earlier mount): its DRAM settings, needed in BROM mode",
    )
    group.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the phone to be plugged in (polls fast: a preloader listens "
        "for only a few seconds); default: it must be there already",
    )
    group.add_argument(
        "--io-timeout",
        type=float,
        default=DEFAULT_IO_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long a silent phone is waited for before the command fails and mtkfs "
        f"reconnects (default {DEFAULT_IO_TIMEOUT_S:g})",
    )
    group.add_argument("--sim-faults", metavar="SPEC", help=argparse.SUPPRESS)
    board = parser.add_argument_group("boards at a U-Boot prompt (uboot: sources)")
    board.add_argument(
        "--flash",
        metavar="KIND",
        help="which flash U-Boot reads: sf[:BUS:CS], mmc[:DEV], virtio[:DEV], "
        "nand:SIZE:ERASE, mem:BASE:SIZE[:ERASE] (memory-mapped NOR); default: probe sf, mmc, "
        "virtio",
    )
    board.add_argument(
        "--ram",
        metavar="ADDR",
        help="RAM address U-Boot may use as a staging buffer (default: $loadaddr or "
        "$kernel_addr_r, checked against bdinfo)",
    )
    board.add_argument(
        "--chunk-size",
        metavar="SIZE",
        help="bytes U-Boot dumps per command (default 64k; 4k to 1M, a multiple of 512): "
        "smaller chunks lose less to a garbled line on a noisy UART",
    )
    board.add_argument(
        "--stop-key",
        metavar="TEXT",
        help="what stops a keyed autoboot (CONFIG_AUTOBOOT_KEYED builds: e.g. 'tpl'); default "
        "Ctrl-C, which any ordinary countdown accepts",
    )
    board.add_argument(
        "--prompt",
        metavar="TEXT",
        help="the board's prompt, if learning it fails (e.g. 'MStar # ')",
    )


def source_options(args: argparse.Namespace) -> SourceOptions:
    """The parsed options, with paths made absolute (the daemon runs elsewhere)."""
    return SourceOptions(
        da_file=None if args.da is None else args.da.absolute(),
        preloader=None if args.preloader is None else args.preloader.absolute(),
        io_timeout_s=max(0.05, args.io_timeout),
        wait_s=max(0.0, args.wait),
        sim_faults=args.sim_faults,
        flash=args.flash,
        ram=args.ram,
        prompt=args.prompt,
        chunk_size=args.chunk_size,
        stop_key=args.stop_key,
    )


def source_argv(options: SourceOptions) -> list[str]:
    """``options`` as command-line arguments again (for the background daemon)."""
    argv = ["--io-timeout", repr(options.io_timeout_s)]
    if options.da_file is not None:
        argv += ["--da", str(options.da_file)]
    if options.preloader is not None:
        argv += ["--preloader", str(options.preloader)]
    if options.wait_s:
        argv += ["--wait", repr(options.wait_s)]
    if options.sim_faults is not None:
        argv += ["--sim-faults", options.sim_faults]
    uboot_flags = {
        "--flash": options.flash,
        "--ram": options.ram,
        "--prompt": options.prompt,
        "--chunk-size": options.chunk_size,
        "--stop-key": options.stop_key,
    }
    for flag, value in uboot_flags.items():
        if value is not None:
            argv += [flag, value]
    return argv


def add_map_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--map",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="partition map to use (repeatable): scatter file, dumchar_info, /proc/mtd, "
        "boot log, mtdparts=, or a GPT/MBR/PMT image; checked against the source's own table",
    )
    group.add_argument(
        "--no-map", action="store_true", help="no partition files, only the whole regions"
    )


def cache_dir_of(args: argparse.Namespace, source: str | None = None) -> Path | None:
    """``--cache-dir``; for a ``uboot:`` source, the user's cache folder unless
    ``--no-cache-dir``: a console dump is hours, and must survive an interrupted copy."""
    if args.no_cache_dir:
        return None
    if args.cache_dir is not None:
        return Path(args.cache_dir).absolute()
    if str(args.source if source is None else source).startswith("uboot:"):
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "mtkfs" / "chunks"
    return None
