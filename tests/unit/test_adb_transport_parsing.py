"""The adb transport's parsing of what the phone says — hostile text in, only validated paths
and numbers out — and its choice of server and dd block size."""

from __future__ import annotations

import pytest
import trio

from mtkfs.errors import LocalProtocolError, SourceError, TransportError
from mtkfs.protocols.adb import sh_quote
from mtkfs.transports.adb import (
    parse_by_name,
    parse_partitions,
    parse_props,
    read_block_bytes,
    server_address,
)
from mtkfs.transports.adb_shell import (
    HASH_TOOLS,
    Shell,
    hash_probe_command,
    parse_digest,
    parse_hash_probe,
    temp_file_name,
)

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def test_server_address_follows_the_adb_environment() -> None:
    assert server_address({}) == ("127.0.0.1", 5037)
    assert server_address({"ANDROID_ADB_SERVER_PORT": "5099"}) == ("127.0.0.1", 5099)
    assert server_address({"ADB_SERVER_SOCKET": "tcp:10.0.0.2:5038"}) == ("10.0.0.2", 5038)
    assert server_address({"ADB_SERVER_SOCKET": "tcp:5040"}) == ("127.0.0.1", 5040)
    for bad in ({"ADB_SERVER_SOCKET": "localfilesystem:/x"}, {"ANDROID_ADB_SERVER_PORT": "x"}):
        with pytest.raises(SourceError):
            server_address(bad)


@pytest.mark.parametrize(
    ("offset", "size", "block"),
    [(0, 8 << 20, 1 << 20), (1 << 20, 512, 512), (4096, 12288, 4096), (3 << 19, 1 << 20, 1 << 19)],
)
def test_dd_block_divides_offset_and_length(offset: int, size: int, block: int) -> None:
    assert read_block_bytes(offset, size) == block


def test_partitions_keep_only_known_whole_disks() -> None:
    text = """major minor  #blocks  name

 179        0    7597184 mmcblk0
 179        1          4 mmcblk0p1
 179       32       2048 mmcblk0boot1
 179       16       2048 mmcblk0boot0
 259        0   noise   sda
   8        0  124928000 sdc
   7        0      1024 loop0
"""
    assert parse_partitions(text) == {
        "mmcblk0": 7597184 * 1024,
        "mmcblk0boot1": 2048 * 1024,
        "mmcblk0boot0": 2048 * 1024,
        "sdc": 124928000 * 1024,
    }


def test_by_name_links_pointing_outside_dev_block_are_dropped() -> None:
    listing = """/dev/block/by-name:
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 boot -> /dev/block/mmcblk0p7
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 a;reboot -> /dev/block/mmcblk0p8
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 $(id) -> /dev/block/mmcblk0p9
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 evil -> /dev/block/../../proc/kcore
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 evil2 -> /dev/block/mmcblk0p5;rm
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 other -> /data/x
lrwxrwxrwx 1 root root 20 2026-01-01 00:00 userdata -> /dev/block/sdc40
"""
    links = parse_by_name(listing)
    assert links == {
        "boot": "mmcblk0p7",
        "a;reboot": "mmcblk0p8",  # a name is data: cleaned before it becomes a file name
        "$(id)": "mmcblk0p9",
        "userdata": "sdc40",
    }
    # What reaches a command is the target alone, and only in this validated shape:
    assert all(t.startswith(("mmcblk0p", "sd")) and t.isalnum() for t in links.values())


def test_the_hash_probe_takes_the_best_tool_that_answers_right() -> None:
    command = hash_probe_command()
    assert all(tool in command for tool, _ in HASH_TOOLS) and "\n" not in command
    both = f"sha256sum=\ntoybox sha256sum={EMPTY_SHA256}  -\nmd5sum={EMPTY_MD5}  -\n"
    assert parse_hash_probe(both) == ("toybox sha256sum", "sha256")
    only_md5 = f"sha256sum=sha256sum: not found\nmd5sum={EMPTY_MD5}  -"
    assert parse_hash_probe(only_md5) == ("md5sum", "md5")
    # A tool that prints the wrong digest of nothing is never trusted; none → read back.
    assert parse_hash_probe(f"sha256sum={EMPTY_MD5}  -\nmd5sum=0000  -") is None
    assert parse_hash_probe("") is None


def test_a_digest_must_be_exactly_one_hash_of_the_right_length() -> None:
    assert parse_digest(f"{EMPTY_SHA256}  -\n", "sha256") == bytes.fromhex(EMPTY_SHA256)
    for bad in ("", "zz" * 32 + "  -", EMPTY_MD5 + "  -", "dd: error"):
        with pytest.raises(TransportError):
            parse_digest(bad, "sha256")


def test_properties_are_kept_short_and_printable() -> None:
    text = (
        "ro.build.version.sdk=19\nro.product.model=S650\x1b[2J\njunk line\n"
        "ro.evil;rm=1\nro.build.version.release=" + "x" * 500 + "\n"
    )
    props = parse_props(text)
    assert props["ro.build.version.sdk"] == "19"
    assert "\x1b" not in props["ro.product.model"]
    assert "ro.evil;rm" not in props
    assert len(props["ro.build.version.release"]) <= 90


def test_temp_files_are_ours_only() -> None:
    name = temp_file_name("read")
    assert name.startswith("/data/local/tmp/mtkfs-read-") and name.endswith(".bin")
    assert temp_file_name("read") != name

    async def never(op: object) -> None:
        raise AssertionError("no command may be sent")

    shell = Shell(never, "serial", "shell", "su -c")
    with pytest.raises(LocalProtocolError):
        trio.run(shell.pull_via_file, "true", "/data/local/tmp/../../x;reboot", 1)


@pytest.mark.parametrize(
    ("style", "prefix"), [("adbd", ""), ("su -c", "su -c "), ("su 0", "su 0 sh -c ")]
)
def test_root_wrapping_quotes_the_command_once(style: str, prefix: str) -> None:
    record: list[str] = []
    shell = Shell(lambda op: None, "serial", "shell,v2", style, record=record)
    command = "echo 'a b'"
    expected = command if style == "adbd" else prefix + sh_quote(command)
    assert shell.wrap(command) == expected
    assert record == [expected]
