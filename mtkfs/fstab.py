"""``mount -t fuse.mtkfs`` and ``/etc/fstab``: mount(8)'s way of calling us, translated.

For a ``fuse.mtkfs`` mount, mount(8) runs ``/sbin/mount.fuse3``, which runs
``mtkfs SOURCE MOUNTPOINT -o OPTIONS`` through ``/bin/sh``: no subcommand, and every option —
ours, the kernel's, mount(8)'s — in one comma-separated list. This module turns that into an
``mtkfs mount`` command line, and translates ``-o`` lists of ``mtkfs mount`` itself the same
way, so the two forms are one thing: ``-o ro,map=FILE`` is ``-o ro --map FILE`` in both.

What arrives (util-linux 2.38 + fuse3 3.14, found by running a probe in place of mtkfs):
mount(8) strips its own options (``defaults``, ``noauto``, ``nofail``, ``user``, ``_netdev``,
``x-*``, ``comment=``…), always puts ``ro`` or ``rw`` first — an fstab line without ``ro``
arrives as ``rw``, as for every file system, so that ``rw`` is ignored and writes take the
word ``writable`` (:func:`read_only_unless_writable`) — and passes VFS flags such as ``nodev``,
``noatime``, ``relatime``; mount.fuse3 appends ``dev,suid`` when run as root. Called by hand,
mount.fuse3 strips less, so the mount(8) options are dropped here too. The VFS flags are dropped:
partition files have no device nodes, no set-id or exec bits and no access times, and libfuse
mounts ``nodev,nosuid`` anyway.

Pure functions over argument lists: option values are argv elements, never seen by a shell.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mtkfs.errors import UsageError

#: Options that stay ``-o`` options (``daemon.fuse_options`` checks them again).
FUSE_OPTIONS = ("ro", "rw", "allow_other", "default_permissions")

#: mount(8), fstab and systemd options: not ours, dropped if they reach us.
MOUNT_OPTIONS = frozenset(
    {"defaults", "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "group", "_netdev"}
)
MOUNT_OPTION_PREFIXES = ("x-", "comment=")

#: Generic VFS flags, meaningless for partition files (see the module docstring).
VFS_FLAGS = frozenset(
    {
        *("dev", "nodev", "suid", "nosuid", "exec", "noexec", "async", "dirsync"),
        *("atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime"),
        *("strictatime", "nostrictatime", "lazytime", "nolazytime"),
    }
)

#: Options refused with a reason rather than as unknown.
REFUSED = {
    "sync": "mtkfs commits writes on fsync/close and after commit_interval seconds (default 5); "
    "use commit_interval=SECONDS",
    "foreground": "mount(8) would wait until the unmount; run `mtkfs mount --foreground` instead",
}

#: ``mtkfs mount`` options not offered fstab-style (``foreground``: see REFUSED).
_NOT_OPTIONS = frozenset({"help", "foreground"})

#: Options whose value may list several, ``unlock=nvram:proinfo`` (names never hold a colon).
_LISTS = {"unlock": ":"}


@dataclass(frozen=True)
class Flag:
    """An ``mtkfs mount`` option written fstab-style: ``cache_size=64M`` is ``--cache-size``."""

    option: str
    metavar: str | None  # None: a switch, written without a value (``no_map``)


def mount_flags(mount_parser: argparse.ArgumentParser) -> dict[str, Flag]:
    """Every long option of ``mtkfs mount`` by its fstab name, ``--foo-bar`` → ``foo_bar``.

    Read off the parser, so an option added to ``mtkfs mount`` works in fstab at once; hidden
    options (``help=SUPPRESS``) are left out.
    """
    flags: dict[str, Flag] = {}
    for action in mount_parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.help == argparse.SUPPRESS:
            continue
        name = longs[0][2:].replace("-", "_")
        if name in _NOT_OPTIONS:
            continue
        metavar = None if action.nargs == 0 else str(action.metavar or "VALUE")
        flags[name] = Flag(longs[0], metavar)
    return flags


def split_options(text: str) -> list[str]:
    """Split an ``-o`` list at commas outside double quotes — libmount's syntax, which lets a
    value hold commas: ``link_model="latency=1ms,bandwidth=40MB/s"`` — dropping the quotes and
    empty items. Values keep their spaces: ``prompt="=> "``."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise UsageError(f"-o {text}: a double quote is not closed")
    items.append("".join(current))
    return [item for item in items if item.strip()]


def translate(text: str, flags: Mapping[str, Flag]) -> list[str]:
    """One ``-o`` list as ``mtkfs mount`` arguments: FUSE options stay in ``-o``, mount(8)'s
    and the VFS flags go, ours become their ``--options``; anything else is a UsageError."""
    kept: list[str] = []
    argv: list[str] = []
    for item in split_options(text):
        bare = item.strip()
        if bare in FUSE_OPTIONS:
            kept.append(bare)
            continue
        if bare in MOUNT_OPTIONS or bare in VFS_FLAGS or bare.startswith(MOUNT_OPTION_PREFIXES):
            continue
        written, has_value, value = item.partition("=")
        written = written.strip()
        name = written.replace("-", "_")
        if name in REFUSED:
            raise UsageError(f"mount option {written}: {REFUSED[name]}")
        flag = flags.get(name)
        if flag is None:
            raise UsageError(f"unknown mount option {bare}; supported: {supported(flags)}")
        if flag.metavar is None:
            if has_value:
                raise UsageError(f"mount option {written} takes no value: write just {name}")
            argv.append(flag.option)
            continue
        values = value.split(_LISTS[name]) if name in _LISTS else [value]
        if not all(values):
            raise UsageError(f"mount option {written} needs a value: {name}={flag.metavar}")
        # One token, --option=VALUE: a value starting with "-" is not taken for an option.
        argv += [f"{flag.option}={v}" for v in values]
    return (["-o", ",".join(kept)] if kept else []) + argv


def supported(flags: Mapping[str, Flag]) -> str:
    """The option names for error messages: ``ro, rw, …, map=FILE, no_map, …``."""
    ours = [name if f.metavar is None else f"{name}={f.metavar}" for name, f in flags.items()]
    return ", ".join([*FUSE_OPTIONS, *ours])


def helper_argv(argv: Sequence[str], commands: Collection[str]) -> list[str] | None:
    """``SOURCE MOUNTPOINT -o OPTIONS...`` — how mount.fuse3 runs us — as ``mount`` arguments;
    None when ``argv`` is anything else.

    At least one ``-o`` is required: mount(8) always passes one (``ro`` or ``rw`` at least),
    and without it a mistyped subcommand (``mtkfs stauts MNT``) would be taken for a source.
    """
    if len(argv) < 3 or argv[0] in commands or any(a.startswith("-") for a in argv[:2]):
        return None
    lists: list[str] = []
    rest = list(argv[2:])
    while rest:
        if rest[0] == "-o" and len(rest) > 1:
            lists.append(rest[1])
            rest = rest[2:]
        elif rest[0].startswith("-o") and len(rest[0]) > 2:
            lists.append(rest[0][2:])
            rest = rest[1:]
        else:
            return None
    options = [o for text in lists for o in ["-o", read_only_unless_writable(text)]]
    return ["mount", *options, "--", argv[0], argv[1]]


def read_only_unless_writable(text: str) -> str:
    """mount(8)'s ``-o`` list with its ``rw`` ignored, and ``writable`` turned into ``rw``.

    mount(8) passes ``rw`` for every line that does not say ``ro`` — the default of every file
    system, not a decision. mtkfs is read-only unless asked (a phone's flash is not a scratch
    disk), so through mount(8) writes take the explicit word ``writable``.
    """
    items = split_options(text)
    kept = ["rw" if item.strip() == "writable" else item for item in items if item.strip() != "rw"]
    return ",".join(f'"{item}"' if "," in item else item for item in kept)


def expand_mount_options(argv: Sequence[str], flags: Mapping[str, Flag]) -> list[str]:
    """``mount`` arguments with each ``-o LIST`` (``-oLIST``, ``-o=LIST``) translated.

    Any token starting with ``-o`` is the ``-o`` option to argparse too: it never takes one
    as another option's value. Everything after ``--`` is left alone.
    """
    out: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            out += argv[index:]
            break
        if token == "-o" and index + 1 < len(argv):
            out += translate(argv[index + 1], flags)
            index += 2
            continue
        if token.startswith("-o") and len(token) > 2:
            out += translate(token[2:].removeprefix("="), flags)
        else:
            out.append(token)
        index += 1
    return out


def command_line(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """The ``mtkfs`` arguments to parse: the mount.fuse3 form turned into ``mount``, and the
    ``-o`` lists of ``mount`` translated. Other commands pass unchanged."""
    commands = subcommands(parser)
    argv = helper_argv(argv, commands) or list(argv)
    if argv[:1] == ["mount"] and "mount" in commands:
        return [argv[0], *expand_mount_options(argv[1:], mount_flags(commands["mount"]))]
    return argv


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
