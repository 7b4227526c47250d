"""``mount -t fuse.mtkfs`` and fstab options: mount.fuse3's ``mtkfs SOURCE MNT -o LIST`` becomes
``mtkfs mount``, and every fstab-style option means exactly its ``--option``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mtkfs import daemon, fstab
from mtkfs.cli import build_parser, main
from mtkfs.errors import UsageError

PARSER = build_parser()
FLAGS = fstab.mount_flags(fstab.subcommands(PARSER)["mount"])

#: A sample value per metavar, valid for the option's type.
SAMPLES = {
    "FILE": "/srv/img/scatter.txt",
    "DIR": "/var/cache/mtkfs",
    "SECONDS": "2.5",
    "SIZE": "64M",
    "NAME": "nvram",
    "KIND": "sf:0:0",
    "ADDR": "0x40000000",
    "TEXT": "=> ",
    "SPEC": "usb2",
}


def parse(*argv: str) -> argparse.Namespace:
    return PARSER.parse_args(fstab.command_line(argv, PARSER))


def translate(text: str) -> list[str]:
    return fstab.translate(text, FLAGS)


# -- the mount.fuse3 calling convention ----------------------------------------------------------


def test_mount_fuse_form_becomes_mount() -> None:
    # What mount.fuse3 ran for `mount -t fuse.mtkfs da:usb:1-4 /mnt/phone -o ro` (as root).
    argv = fstab.command_line(["da:usb:1-4", "/mnt/phone", "-o", "ro,dev,suid"], PARSER)
    assert argv == ["mount", "-o", "ro", "--", "da:usb:1-4", "/mnt/phone"]
    args = PARSER.parse_args(argv)
    assert (args.command, args.source, args.mountpoint) == (
        "mount",
        "da:usb:1-4",
        Path("/mnt/phone"),
    )
    assert args.options == ["ro"]


def test_mount_fuse_form_takes_several_and_glued_option_lists() -> None:
    argv = ["/img/user.bin", "/mnt/p", "-o", "ro,map=/a", "-omap=/b", "-o", "cache_size=1G"]
    args = parse(*argv)
    assert args.map == [Path("/a"), Path("/b")]
    assert args.options == ["ro"] and args.cache_size == "1G"


def test_mount_fuse_form_is_read_only_unless_writable() -> None:
    # mount(8) passes rw for every line without ro: its default, not the user's decision.
    assert parse("/img/user.bin", "/mnt/p", "-o", "rw,noauto,map=/a").options == []
    assert PARSER.parse_args(
        fstab.command_line(["/img/user.bin", "/mnt/p", "-o", "rw,writable"], PARSER)
    ).options == ["rw"]
    # Commas inside quotes survive the rewrite (the whole item is quoted again).
    assert fstab.read_only_unless_writable('rw,link_model="a=1,b=2",writable') == (
        '"link_model=a=1,b=2",rw'
    )
    # The plain command is unchanged: -o rw is a decision there.
    assert parse("mount", "-o", "rw", "img", "/mnt").options == ["rw"]


@pytest.mark.parametrize(
    "argv",
    [
        ["ls", "img", "-o", "ro"],  # a subcommand is a subcommand, even with -o
        ["stauts", "/mnt/phone"],  # a typo: no -o, so not taken for a source
        ["img", "/mnt"],
        ["--version"],
        ["-o", "ro", "img", "/mnt"],
        ["img", "-o", "ro", "/mnt"],
        ["img", "/mnt", "-o", "ro", "--debug"],  # mount.fuse3 passes nothing but -o
        ["img", "/mnt", "-o"],
    ],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert fstab.command_line(argv, PARSER) == argv


def test_a_mistyped_subcommand_is_still_an_argparse_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["stauts", "/mnt/phone"])
    assert exc.value.code == 2
    assert "invalid choice: 'stauts'" in capsys.readouterr().err


# -- every mtkfs option, fstab-style --------------------------------------------------------------


def test_the_documented_options_are_all_there() -> None:
    documented = {
        "map", "no_map", "cache_dir", "no_cache_dir", "cache_size", "trust_cache", "unlock",
        "unlock_regions", "max_dirty", "commit_interval", "journal_dir", "link_model", "log",
        "debug", "da", "preloader", "wait", "io_timeout", "flash", "ram", "prompt",
        "chunk_size", "stop_key",
    }  # fmt: skip
    assert documented <= set(FLAGS)
    # Never from fstab: the helper must return; hidden options stay hidden.
    assert not {"foreground", "help", "ready_fd", "inject_faults", "sim_faults"} & set(FLAGS)
    assert all(f.metavar is None or f.metavar in SAMPLES for f in FLAGS.values()), FLAGS


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_each_option_means_its_flag(name: str) -> None:
    flag = FLAGS[name]
    if flag.metavar is None:
        fstab_style = parse("mount", "-o", f"ro,{name}", "img", "/mnt")
        flag_style = parse("mount", "-o", "ro", flag.option, "img", "/mnt")
        assert getattr(fstab_style, flag.option[2:].replace("-", "_")) is True
    else:
        value = SAMPLES[flag.metavar]
        fstab_style = parse("mount", "-o", f"ro,{name}={value}", "img", "/mnt")
        flag_style = parse("mount", "-o", "ro", f"{flag.option}={value}", "img", "/mnt")
    assert fstab_style == flag_style
    assert fstab_style != parse("mount", "-o", "ro", "img", "/mnt")


def test_translation_is_exact() -> None:
    assert translate("ro,map=/a,no_map,cache-size=1G,unlock=nvram") == [
        "-o", "ro", "--map=/a", "--no-map", "--cache-size=1G", "--unlock=nvram",
    ]  # fmt: skip
    assert translate("rw,allow_other,default_permissions") == [
        "-o",
        "rw,allow_other,default_permissions",
    ]


def test_values_are_single_arguments_never_split_or_taken_for_options() -> None:
    args = parse("img", "/mnt", "-o", "ro,prompt=-> ,journal_dir=/a b/$(id);x,da=--help")
    assert args.prompt == "-> "
    assert args.journal_dir == Path("/a b/$(id);x")
    assert args.da == Path("--help")


def test_values_with_equals_and_quoted_commas() -> None:
    args = parse("img", "/mnt", "-o", 'ro,link_model="latency=1ms,bandwidth=40MB/s",map=/x=y')
    assert args.link_model == "latency=1ms,bandwidth=40MB/s"
    assert args.map == [Path("/x=y")]
    with pytest.raises(UsageError, match="not closed"):
        translate('ro,prompt="=> ')


def test_repeatable_options_keep_their_order() -> None:
    args = parse(
        "mount", "--map", "/first", "-o", "rw,map=/second,unlock=nvram:proinfo", "-o",
        "map=/third,unlock=seccfg", "--unlock", "tables", "img", "/mnt",
    )  # fmt: skip
    assert args.map == [Path("/first"), Path("/second"), Path("/third")]
    assert args.unlock == ["nvram", "proinfo", "seccfg", "tables"]


def test_empty_items_are_ignored() -> None:
    assert translate(",,ro,,map=/a,") == ["-o", "ro", "--map=/a"]
    assert translate("") == []
    assert translate(" , ") == []


# -- what is not ours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # What mount(8) + mount.fuse3 actually passed a probe in place of mtkfs:
        "ro,dev,suid",  # -o ro, as root
        "rw,noexec,nosuid,nodev",  # -o user: mount(8) adds noexec,nosuid,nodev
        "rw,nodev,nosuid,noexec,noatime,relatime,dirsync,strictatime,nodiratime,lazytime",
        # mount.fuse3 called by hand strips less:
        "defaults,owner,group,x-systemd.automount,x-systemd.idle-timeout=5min,comment=phone",
        "noauto,auto,nofail,user,nouser,users,_netdev,x-mount.mkdir,exec,atime,async",
    ],
)
def test_mount_and_vfs_options_are_dropped(text: str) -> None:
    kept = [o for o in fstab.split_options(text) if o in ("ro", "rw")]
    assert translate(text) == (["-o", ",".join(kept)] if kept else [])


def test_unknown_options_are_named_with_the_supported_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UsageError) as exc:
        translate("ro,loop,map=/a")
    message = str(exc.value)
    assert message.startswith("unknown mount option loop; supported: ro, rw, allow_other")
    for name in ("default_permissions", "map=FILE", "no_map", "cache_size=SIZE", "unlock=NAME"):
        assert name in message
    # Through the command line: one line, exit 2, before anything is mounted.
    assert main(["/img", "/mnt", "-o", "ro,fsname=x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtkfs: error: unknown mount option fsname=x; supported:")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no_map=1", "no_map takes no value"),
        ("map", "map needs a value: map=FILE"),
        ("map=", "map needs a value: map=FILE"),
        ("unlock=nvram::proinfo", "unlock needs a value: unlock=NAME"),
        ("sync", "commit_interval=SECONDS"),
        ("foreground", "mtkfs mount --foreground"),
    ],
)
def test_misused_options_say_how_to_write_them(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        translate(text)


def test_argparse_still_checks_what_the_options_mean() -> None:
    with pytest.raises(SystemExit):
        parse("img", "/mnt", "-o", "ro,no_map,map=/a")  # --map and --no-map exclude each other
    with pytest.raises(SystemExit):
        parse("img", "/mnt", "-o", "ro,wait=soon")  # --wait takes seconds


def test_kept_options_are_the_ones_the_daemon_accepts() -> None:
    assert set(fstab.FUSE_OPTIONS) == {"ro", "rw", *daemon._PASSTHROUGH_OPTIONS}


# -- plain `mtkfs mount`: the same options ------------------------------------------------------


def test_plain_mount_accepts_the_same_options() -> None:
    fstab_style = parse("mount", "img", "/mnt", "-o", "map=/s/scatter.txt,ro,cache_size=64M")
    flag_style = parse("mount", "img", "/mnt", "--map", "/s/scatter.txt", "-o", "ro")
    flag_style.cache_size = "64M"
    assert fstab_style == flag_style
    assert parse("mount", "-o=rw,allow_other", "img", "/mnt").options == ["rw,allow_other"]
    assert parse("mount", "-o", "rw", "-o", "allow_other", "img", "/mnt").options == [
        "rw",
        "allow_other",
    ]


def test_after_double_dash_nothing_is_translated() -> None:
    args = parse("mount", "-o", "ro", "--", "-o", "map=/a")
    assert (args.source, args.mountpoint, args.map) == ("-o", Path("map=/a"), [])
