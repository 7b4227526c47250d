"""The fake Android device (mtkfs.testing.sim_adbd) against Debian's real adb client and server.

Why through the real CLI: the fake is only worth something if the real adb server accepts it
and drives it the way it drives a phone (shell v2 on modern devices, legacy ``shell:`` and
``exec:`` on old ones, ``sync:`` for push/pull). A few tests speak the wire protocol directly
(no server) to pin what the server hides: the banner, maxdata, checksums, refusals.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mtkfs.testing.disk import Layout
from mtkfs.testing.sim_adbd import (
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_WRTE,
    AdbServer,
    FakeDevice,
    Message,
    adb_server,
    decode_header,
    encode_message,
    running_device,
)
from mtkfs.testing.sim_adbd_root import HOSTILE_BY_NAME, HOSTILE_DUMCHAR

pytestmark = pytest.mark.timeout(120)

needs_adb = pytest.mark.skipif(shutil.which("adb") is None, reason="adb not installed")

_MiB = 1 << 20


@pytest.fixture
def server() -> Iterator[AdbServer]:
    with adb_server() as srv:
        yield srv


def _online(server: AdbServer, device: FakeDevice) -> FakeDevice:
    server.connect(device.serial)
    return device


def _shell(
    server: AdbServer, device: FakeDevice, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``adb -s SERIAL ARGS…`` through the real client."""
    return server.adb("-s", device.serial, *args, input=stdin)


def _su_dd(skip_mib: int, count_mib: int) -> str:
    """Read whole MiBs of the user area as root, the way the transport will."""
    dd = f"dd if=/dev/block/mmcblk0 bs=1048576 skip={skip_mib} count={count_mib} 2>/dev/null"
    return f"su -c '{dd}'"


# --------------------------------------------------------------------------------------------
# Android 12: shell v2, exec:, sync v2, by-name


@needs_adb
def test_shell_user_and_su(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        listing = server.adb("devices", "-l").stdout.decode()
        assert f"{dev.serial}" in listing and "product:mtkfs_sim_android12" in listing
        assert _shell(server, dev, "shell", "id", "-u").stdout == b"2000\n"
        assert _shell(server, dev, "shell", "su -c 'id -u'").stdout == b"0\n"
        assert dev.commands == ["id -u", "su -c 'id -u'"]
        assert all(s.startswith("shell,v2,") for s in dev.services)


@needs_adb
def test_exec_out_dd_is_byte_exact(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        done = _shell(server, dev, "exec-out", _su_dd(1, 2))
        assert done.returncode == 0
        assert done.stdout == _region_bytes(p70a, "user", 1 * _MiB, 2 * _MiB)
        # The shell user may not read block devices: the data stream is simply empty.
        plain = _shell(server, dev, "exec-out", "dd if=/dev/block/mmcblk0 count=1 2>/dev/null")
        assert plain.stdout == b""


@needs_adb
def test_shell_v2_separates_stderr_and_returns_status(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        done = _shell(server, dev, "shell", "echo out; echo err >&2; exit 5")
        assert (done.returncode, done.stdout, done.stderr) == (5, b"out\n", b"err\n")


@needs_adb
def test_by_name_links_reach_the_partitions(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        names = _shell(server, dev, "shell", "ls /dev/block/by-name").stdout.split()
        assert sorted(n.decode() for n in names) == sorted(p.name for p in p70a.partitions)
        link = _shell(server, dev, "shell", "readlink /dev/block/by-name/boot").stdout
        assert link == b"/dev/block/mmcblk0p7\n"
        size = _shell(server, dev, "shell", "cat /sys/class/block/mmcblk0p7/size").stdout
        assert int(size) * 512 == p70a.by_name("boot").size_bytes
        boot = _shell(
            server, dev, "exec-out",
            "su -c 'dd if=/dev/block/by-name/boot bs=65536 count=4 2>/dev/null'",
        )  # fmt: skip
        assert boot.stdout == p70a.read("boot", 0, 4 * 65536)


@needs_adb
def test_toybox_dd_rejects_byte_flags(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        done = _shell(server, dev, "shell", "su -c 'dd if=/dev/block/mmcblk0 iflag=skip_bytes'")
        assert done.returncode == 1 and b"unknown argument" in done.stderr


@needs_adb
def test_push_and_pull_through_sync(server: AdbServer, p70a: Layout, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    (tmp_path / "up.bin").write_bytes(payload)
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        pushed = _shell(server, dev, "push", str(tmp_path / "up.bin"), "/data/local/tmp/up.bin")
        assert pushed.returncode == 0, pushed
        remote = _shell(server, dev, "shell", "sha256sum /data/local/tmp/up.bin").stdout
        assert remote.split()[0].decode() == hashlib.sha256(payload).hexdigest()
        pulled = _shell(server, dev, "pull", "/data/local/tmp/up.bin", str(tmp_path / "down"))
        assert pulled.returncode == 0 and (tmp_path / "down").read_bytes() == payload
        # adbd runs as the shell user: it cannot open block devices for sync.
        denied = _shell(server, dev, "pull", "/dev/block/mmcblk0p1", str(tmp_path / "p1"))
        assert denied.returncode != 0 and b"Permission denied" in denied.stdout + denied.stderr


@needs_adb
def test_write_through_shell_stdin_then_read_back(server: AdbServer, p70a_rw: Layout) -> None:
    data = os.urandom(24 * 1024)
    nvram = p70a_rw.by_name("nvram")
    write = "su -c 'dd of=/dev/block/mmcblk0p2 bs=4096 seek=3 conv=notrunc 2>/dev/null'"
    with running_device("android12", p70a_rw) as dev:
        _online(server, dev)
        done = _shell(server, dev, "shell", write, stdin=data)
        assert done.returncode == 0, done
        assert p70a_rw.read("nvram", 3 * 4096, len(data)) == data
        start = (nvram.offset_bytes + 3 * 4096) // 4096
        read = f"su -c 'dd if=/dev/block/mmcblk0 bs=4096 skip={start} count=6 2>/dev/null'"
        assert _shell(server, dev, "exec-out", read).stdout == data


@needs_adb
def test_root_service_answers_production_build(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        done = _shell(server, dev, "root")
        assert b"adbd cannot run as root in production builds" in done.stdout + done.stderr


# --------------------------------------------------------------------------------------------
# Older Androids: no shell v2, cooked PTY, dumchar


@needs_adb
def test_android44_legacy_shell_mangles_and_loses_status(server: AdbServer, s650: Layout) -> None:
    with running_device("android44", s650) as dev:
        _online(server, dev)
        done = _shell(server, dev, "shell", "echo out; echo err >&2; exit 5")
        assert (done.returncode, done.stdout, done.stderr) == (0, b"out\r\nerr\r\n", b"")
        assert dev.services[-1].startswith("shell:")
        assert _shell(server, dev, "exec-out", "id").returncode != 0  # no exec: before 5.0


@needs_adb
def test_android44_dumchar_info(server: AdbServer, s650: Layout, tmp_path: Path) -> None:
    with running_device("android44", s650) as dev:
        _online(server, dev)
        pulled = _shell(server, dev, "pull", "/proc/dumchar_info", str(tmp_path / "dumchar"))
        assert pulled.returncode == 0, pulled
        text = (tmp_path / "dumchar").read_text()
        assert text.startswith("Part_Name\tSize\tStartAddr\tType\tMapTo\n")
        row = "android      0x0000000040000000   0x0000000004380000   2   /dev/block/mmcblk0p5\n"
        assert row in text
        shown = _shell(server, dev, "shell", "cat /proc/dumchar_info").stdout
        assert shown == text.replace("\n", "\r\n").encode()
        p5 = _shell(server, dev, "shell", "cat /sys/class/block/mmcblk0p5/start").stdout
        assert int(p5) * 512 == s650.by_name("p5").offset_bytes


@needs_adb
def test_android6_exec_merges_and_aosp_su(server: AdbServer, p70a: Layout) -> None:
    with running_device("android6", p70a) as dev:
        _online(server, dev)
        merged = _shell(server, dev, "exec-out", "echo out; echo err >&2; exit 5")
        assert (merged.returncode, merged.stdout) == (0, b"out\nerr\n")
        assert _shell(server, dev, "shell", "su 0 id -u").stdout == b"0\r\n"
        assert _shell(server, dev, "shell", "su -c id").stdout.startswith(b"su: unknown user")
        block = _shell(server, dev, "exec-out", "su 0 dd if=/dev/block/mmcblk0 bs=4096 count=1")
        assert block.stdout.startswith(_region_bytes(p70a, "user", 0, 4096))


# --------------------------------------------------------------------------------------------
# Hostile names, replug, faults


@needs_adb
def test_hostile_names_are_listed(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a, hostile=True) as dev:
        _online(server, dev)
        listing = _shell(server, dev, "shell", "ls -1 /dev/block/by-name").stdout.split(b"\n")
        # busybox ls shows unprintable bytes as '?'; the exact names come from find -print0.
        for name in HOSTILE_BY_NAME:
            assert name.replace("\n", "?").encode() in listing
        exact = _shell(server, dev, "shell", "cd /dev/block/by-name && find . -print0").stdout
        assert {f"./{name}".encode() for name in HOSTILE_BY_NAME} <= set(exact.split(b"\0"))
        escape = _shell(server, dev, "shell", "readlink /dev/block/by-name/escape").stdout
        assert escape == b"../../x\n"
        assert len(dev.commands) == 3 and not any("reboot" in c for c in dev.commands)
        assert not (dev.root.path / ".sim/reboot.log").exists()


@needs_adb
def test_hostile_dumchar_rows(server: AdbServer, s650: Layout) -> None:
    with running_device("android44", s650, hostile=True) as dev:
        _online(server, dev)
        text = _shell(server, dev, "shell", "cat /proc/dumchar_info").stdout
        assert all(f"\r\n{name} ".encode() in text for name in HOSTILE_DUMCHAR)


@needs_adb
def test_replug_comes_back_with_the_same_serial(server: AdbServer, s650: Layout) -> None:
    with running_device("android44", s650) as dev:
        _online(server, dev)
        dev.replug()
        deadline = time.monotonic() + 30
        while dev.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.wait_for(dev.serial, 30)
        assert dev.connections == 2
        assert _shell(server, dev, "shell", "echo back").stdout == b"back\r\n"


@needs_adb
def test_fault_corrupt_store_flips_one_bit(server: AdbServer, p70a_rw: Layout) -> None:
    data = os.urandom(8192)
    with running_device("android12", p70a_rw) as dev:
        _online(server, dev)
        dev.faults.corrupt_store = True
        write = "su -c 'dd of=/dev/block/mmcblk0p2 bs=4096 conv=notrunc 2>/dev/null'"
        assert _shell(server, dev, "shell", write, stdin=data).returncode == 0
        stored = p70a_rw.read("nvram", 0, len(data))
        assert stored[0] == data[0] ^ 1 and stored[1:] == data[1:]


@needs_adb
def test_fault_truncate_output(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        dev.faults.truncate_output = 1000
        done = _shell(server, dev, "shell", _su_dd(0, 1))
        assert (done.returncode, done.stdout) == (0, _region_bytes(p70a, "user", 0, 1000))


@needs_adb
def test_fault_disconnect_mid_transfer(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        dev.faults.disconnect_after_bytes = 100_000
        done = _shell(server, dev, "exec-out", _su_dd(0, 2))
        # The real client reports success with a short stream: length checks are on us.
        assert len(done.stdout) < 100_000
        assert done.stdout == _region_bytes(p70a, "user", 0, len(done.stdout))
        assert dev.faults.disconnect_after_bytes is None
        server.wait_for(dev.serial, 30)  # the server reconnects by itself
        assert _shell(server, dev, "shell", "echo again").stdout == b"again\n"


@needs_adb
def test_fault_slow_okay_and_duplicate_clse(server: AdbServer, p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        _online(server, dev)
        dev.faults.slow_okay_s = 0.2
        dev.faults.duplicate_clse = True
        started = time.monotonic()
        for word in ("one", "two"):
            done = _shell(server, dev, "shell", f"echo {word}")
            assert done.stdout == f"{word}\n".encode()
        assert time.monotonic() - started >= 0.4


# --------------------------------------------------------------------------------------------
# The wire itself, without the adb server


def test_header_round_trip_and_checks() -> None:
    wire = encode_message(Message(A_OPEN, 7, 0, b"shell:id\0"))
    command, arg0, arg1, length, check = decode_header(wire[:24], 4096)
    assert (command, arg0, arg1, length) == (A_OPEN, 7, 0, 9)
    assert check == sum(b"shell:id\0")
    with pytest.raises(ValueError, match="magic"):
        decode_header(wire[:20] + b"\0\0\0\0", 4096)
    with pytest.raises(ValueError, match="exceeds"):
        decode_header(wire[:24], 4)


class _WireHost:
    """A minimal host end of the wire protocol, to see what the server hides."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.sock.sendall(encode_message(Message(command, arg0, arg1, data)))

    def receive(self) -> tuple[Message, int]:
        header = self._exactly(24)
        command, arg0, arg1, length, check = decode_header(header, 1 << 20)
        return Message(command, arg0, arg1, self._exactly(length)), check

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "device hung up"
            data += chunk
        return data


def test_wire_handshake_maxdata_and_refusal(s650: Layout) -> None:
    with running_device("android44", s650) as dev:
        host = _WireHost(dev.port)
        host.send(A_CNXN, 0x01000001, 1 << 20, b"host::features=shell_v2\0")
        reply, _ = host.receive()
        assert (reply.command, reply.arg0, reply.arg1) == (A_CNXN, 0x01000000, 4096)
        assert reply.data.startswith(b"device::ro.product.name=") and b"features" not in reply.data
        host.send(A_OPEN, 1, 0, b"exec:id\0")  # no exec: on Android 4.4
        refused, _ = host.receive()
        assert (refused.command, refused.arg0, refused.arg1) == (A_CLSE, 0, 1)
        host.send(A_OPEN, 2, 0, b"shell:cat /proc/dumchar_info\0")
        okay, _ = host.receive()
        assert okay.command == A_OKAY and okay.arg1 == 2
        received = b""
        while True:
            message, check = host.receive()
            if message.command == A_CLSE:
                break
            assert message.command == A_WRTE and len(message.data) <= 4096
            assert check == sum(message.data)  # version 0x01000000: checksums are real
            received += message.data
            host.send(A_OKAY, 2, okay.arg0)
        assert received.startswith(b"Part_Name\tSize\tStartAddr\tType\tMapTo\r\n")


def test_device_cleans_up_loops_and_root(p70a: Layout) -> None:
    with running_device("android12", p70a) as dev:
        root = dev.root.path
        assert (root / "dev/block/mmcblk0p19").exists()
    assert not root.exists()
    loops = subprocess.run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(p70a.regions["user"]) not in loops


def _region_bytes(layout: Layout, region: str, offset: int, size: int) -> bytes:
    with layout.regions[region].open("rb") as f:
        f.seek(offset)
        return f.read(size)
