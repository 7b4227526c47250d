"""The adb transport's parsing of what the phone says — hostile text in, only validated paths
and numbers out — and its choice of server and dd block size."""

from __future__ import annotations

import pytest

from mtkfs.errors import SourceError
from mtkfs.transports.adb import (
    parse_by_name,
    parse_partitions,
    read_block_bytes,
    server_address,
)


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
