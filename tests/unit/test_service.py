"""``mtkfs service``'s planning (instance → source, mountpoint, mount options), the device
presence checks, and sd_notify — without a mount (tests/mount/test_systemd_service.py mounts)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from mtkfs import service
from mtkfs.cli import build_parser
from mtkfs.cli_systemd import _mount_option_table
from mtkfs.errors import UsageError
from mtkfs.notify import Notifier

TABLE = _mount_option_table(build_parser())


def _config(tmp_path: Path, text: str, dropin: str = "") -> service.configparser.ConfigParser:
    (tmp_path / "mtkfs.conf").write_text(text)
    if dropin:
        (tmp_path / "mtkfs.conf.d").mkdir()
        (tmp_path / "mtkfs.conf.d" / "50-local.conf").write_text(dropin)
    return service.load_config(tmp_path)


def test_option_table_comes_from_the_mount_parser() -> None:
    switches = {name for name, flag in TABLE.items() if flag.metavar is None}
    assert {"no_map", "no_cache_dir", "unlock_regions", "trust_cache"} <= switches
    assert {"map", "unlock", "da", "preloader", "cache_dir", "flash", "journal_dir"} <= (
        TABLE.keys() - switches
    )
    assert not {"foreground", "ready_fd", "inject_faults"} & TABLE.keys()


def test_usb_instance_needs_no_configuration(tmp_path: Path) -> None:
    plan = service.plan("usb-1-4.2", service.load_config(tmp_path), TABLE)
    assert plan.source == "da:usb:1-4.2"
    assert plan.mountpoint == Path("/run/mtkfs/usb-1-4.2")
    assert plan.presence == service.Presence("usb", "1-4.2")
    assert plan.mount_argv == ("-o", "ro")
    assert plan.gone_after_s == 15


def test_defaults_sections_and_dropins(tmp_path: Path) -> None:
    conf = _config(
        tmp_path,
        "[defaults]\nda = /srv/DA.bin\ncache_dir = /var/cache/mtkfs\noptions = allow_other\n"
        "[usb-1-4]\nmode = rw\nunlock = boot, recovery\nno_map = no\ntrust_cache = yes\n",
        dropin="[usb-1-4]\nmap = /etc/a.txt /etc/b.txt\n",
    )
    plan = service.plan("usb-1-4", conf, TABLE)
    argv = list(plan.mount_argv)
    assert argv[:2] == ["-o", "rw,allow_other"]
    # The section's own keys first (files in order), then [defaults]; no_map = no is dropped.
    assert argv[2:] == [
        "--unlock=boot", "--unlock=recovery", "--trust-cache", "--map=/etc/a.txt",
        "--map=/etc/b.txt", "--da=/srv/DA.bin", "--cache-dir=/var/cache/mtkfs",
    ]  # fmt: skip
    # The whole argv parses as a mount command line.
    build_parser().parse_args(["mount", *argv, "--", plan.source, str(plan.mountpoint)])
    other = service.plan("usb-2-1", conf, TABLE)
    assert "--da=/srv/DA.bin" in other.mount_argv
    assert not any(a.startswith("--unlock") for a in other.mount_argv)


def test_configured_and_adb_instances(tmp_path: Path) -> None:
    conf = _config(
        tmp_path,
        "[uboot-cam]\nsource = uboot:/dev/mtkfs-uboot-cam?baud=115200\nflash = sf\n"
        "[lab]\nsource = uboot:socket://10.0.0.5:5555\n",
    )
    cam = service.plan("uboot-cam", conf, TABLE)
    assert cam.presence == service.Presence("path", "/dev/mtkfs-uboot-cam")
    assert cam.mount_argv == ("-o", "ro", "--flash=sf")
    assert service.plan("lab", conf, TABLE).presence.kind == "always"
    adb = service.plan("adb-0123456789ABCDEF", conf, TABLE)
    assert adb.source == "adb:0123456789ABCDEF"
    assert adb.presence == service.Presence("adb", "0123456789ABCDEF")


@pytest.mark.parametrize(
    ("instance", "conf", "says"),
    [
        ("../etc", "", "not one mtkfs accepts"),
        ("a/b", "", "not one mtkfs accepts"),
        ("x;reboot", "", "not one mtkfs accepts"),
        ("usb-1-4..", "", "not one mtkfs accepts"),
        ("board", "", "no source for instance 'board'"),
        ("b", "[b]\nsource = sim:mt6765\nmode = rwx\n", "expected ro or rw"),
        ("b", "[b]\nsource = sim:mt6765\ncahce_dir = /x\n", "unknown key 'cahce_dir'"),
        ("b", "[b]\nsource = sim:mt6765\nlog = /x\n", "unknown key 'log'"),
        ("b", "[b]\nsource = sim:mt6765\nno_map = maybe\n", "expected yes or no"),
        ("b", "[b]\nsource = sim:mt6765\nmount_root = run\n", "absolute"),
        ("b", "[b]\nsource = sim:mt6765\ngone_after = soon\n", "not seconds"),
    ],
)
def test_bad_instances_and_configuration(
    instance: str, conf: str, says: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=says.replace("(", r"\(")):
        service.plan(instance, _config(tmp_path, conf), TABLE)


def test_unreadable_configuration_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be read"):
        _config(tmp_path, "this is not ini\n")


def test_usb_presence_by_sysfs(tmp_path: Path) -> None:
    port = tmp_path / "1-4"
    port.mkdir()
    assert not service.usb_port_present("1-4", tmp_path)
    (port / "idVendor").write_text("0e8d\n")
    (port / "idProduct").write_text("2000\n")
    assert service.usb_port_present("1-4", tmp_path)
    (port / "idProduct").write_text("6001\n")  # something else now sits on that port
    assert not service.usb_port_present("1-4", tmp_path)


async def test_gone_watcher_waits_out_a_re_enumeration(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    wait = service.gone_watcher(service.Presence("path", str(device)), 0.5, poll_s=0.05)
    assert wait is not None
    async with trio.open_nursery() as nursery:
        result: list[str] = []

        async def watch() -> None:
            result.append(await wait())

        nursery.start_soon(watch)
        device.unlink()
        await trio.sleep(0.2)  # back before gone_after: a re-enumeration, not an unplug
        device.touch()
        await trio.sleep(0.7)
        assert not result
        device.unlink()
        await trio.sleep(1.0)
        assert result and result[0].startswith(f"path {device} gone")
    assert service.gone_watcher(service.Presence("always"), 1) is None


def test_notify_sends_datagrams_to_a_path_and_an_abstract_socket(tmp_path: Path) -> None:
    abstract = f"mtkfs-test-{os.getpid()}"
    for name, address in ((str(tmp_path / "n.sock"),) * 2, (f"@{abstract}", f"\0{abstract}")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
            notifier = Notifier({"NOTIFY_SOCKET": name})
            notifier.ready("mounted 3 partitions\nof x")
            notifier.stopping("bye")
            assert sock.recv(1024) == b"READY=1\nSTATUS=mounted 3 partitions of x"
            assert sock.recv(1024) == b"STOPPING=1\nSTATUS=bye"


def test_notify_without_a_socket_does_nothing_and_a_dead_socket_is_not_fatal(
    tmp_path: Path,
) -> None:
    quiet = Notifier({})
    quiet.ready("x")
    assert not quiet.enabled and quiet.sent == []
    dead = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    dead.status("x")  # logged, not raised
    assert dead.sent == []
    assert Notifier({"NOTIFY_SOCKET": "relative"}).address is None


def test_watchdog_interval_is_half_and_only_for_us() -> None:
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval_s == 10.0
    mine = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval_s == 2.0
    assert Notifier({**mine, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "x"}).watchdog_interval_s is None
