"""The adb smart-socket client (protocols/adb.py, adb_sync.py) against emulated server bytes.

Device-side generators play the adb server (and adbd behind it) byte for byte: no network, no
adb binary. ``replay`` answers a host op from one fixed byte string and returns what the host
sent, for byte-exact checks; ``run_pair`` runs it against a scripted server that checks each
request and answers in small pieces, as a real socket may deliver them.
"""

from __future__ import annotations

import struct
import subprocess
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkfs.errors import (
    AuthRequiredError,
    DeviceGoneError,
    LocalProtocolError,
    RemoteProtocolError,
    SourceError,
    TransportError,
    UsageError,
)
from mtkfs.protocols import adb, adb_sync
from mtkfs.protocols.adb import ShellId, ShellResult
from mtkfs.protocols.base import Op, Recv, Send, run_pair

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
NONCE = "abcd"
MARKER = b"#mtkfs-exit-abcd:"


# ---------------------------------------------------------------------------------------------
# Helpers: the server side
# ---------------------------------------------------------------------------------------------


def framed(payload: str) -> bytes:
    data = payload.encode()
    return b"%04x" % len(data) + data


def block(text: bytes) -> bytes:
    return b"%04x" % len(text) + text


def replay(op: Op[T], answer: bytes) -> tuple[T, bytes]:
    """Drive ``op`` with ``answer`` as everything the server says; returns (result, host bytes)."""
    sent = bytearray()
    pos = 0
    try:
        request = next(op)
        while True:
            if isinstance(request, Send):
                sent += request.data
                reply: bytes | None = None
            else:
                assert pos + request.size <= len(answer), f"host waits for {request.size} more"
                reply = answer[pos : pos + request.size]
                pos += request.size
            request = op.send(reply)
    except StopIteration as stop:
        return stop.value, bytes(sent)


def read_request() -> Op[str]:
    length = yield Recv(4)
    assert length is not None
    payload = yield Recv(int(length, 16))
    assert payload is not None
    return payload.decode()


def server(requests: list[str], reply: bytes, piece: int = 3) -> Op[object]:
    """OKAY each expected request, then send ``reply`` ``piece`` bytes at a time."""
    for wanted in requests:
        assert (yield from read_request()) == wanted
        yield Send(b"OKAY")
    for start in range(0, len(reply), piece):
        yield Send(reply[start : start + piece])
    yield Recv(1 << 30)  # the host hangs up first
    return None


def shell_packet(ident: int, data: bytes = b"") -> bytes:
    return struct.pack("<BI", ident, len(data)) + data


def exit_packet(status: int) -> bytes:
    return shell_packet(ShellId.EXIT, bytes([status]))


def unpack_shell_packets(data: bytes) -> list[tuple[int, bytes]]:
    packets = []
    while data:
        ident, length = struct.unpack_from("<BI", data)
        packets.append((ident, data[5 : 5 + length]))
        data = data[5 + length :]
    return packets


# ---------------------------------------------------------------------------------------------
# Framing, OKAY/FAIL
# ---------------------------------------------------------------------------------------------


def test_requests_are_hex4_framed() -> None:
    assert adb.encode_request("host:version") == b"000chost:version"
    assert adb.encode_request("x" * 4000)[:4] == b"0fa0"


@pytest.mark.parametrize("payload", ["", "x" * 4001, "shell:a\nb", "a\0b"])
def test_bad_requests_are_refused_before_sending(payload: str) -> None:
    with pytest.raises(LocalProtocolError):
        adb.encode_request(payload)


@pytest.mark.parametrize("text", [b"0000", b"00ff", b"FFFF", b"aBcD"])
def test_hex4_lengths(text: bytes) -> None:
    assert adb.parse_hex4(text, "t") == int(text, 16)


@pytest.mark.parametrize("text", [b" +1f", b"0x1f", b"1_23", b"-001", b"12\n\n", b"OKAY"])
def test_hex4_is_strict(text: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="4-hex-digit"):
        adb.parse_hex4(text, "t")


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("device 'x' not found", SourceError),
        ("no devices/emulators found", SourceError),
        ("more than one device/emulator", UsageError),
        ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", AuthRequiredError),
        ("device offline", DeviceGoneError),
        ("closed", TransportError),
    ],
)
def test_fail_becomes_an_error_carrying_the_reason(reason: str, error: type[Exception]) -> None:
    answer = b"FAIL" + block(reason.encode())
    with pytest.raises(error) as caught:
        replay(adb.select_transport("x"), answer)
    assert type(caught.value) is error
    assert reason.split("\n")[0] in str(caught.value)
    assert "host:transport:x" in str(caught.value)


def test_fail_reasons_cannot_inject_control_characters() -> None:
    with pytest.raises(TransportError) as caught:
        replay(adb.host_version(), b"FAIL" + block(b"bad\x1b[2J\x07thing"))
    assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value)


def test_something_other_than_an_adb_server() -> None:
    with pytest.raises(RemoteProtocolError, match="OKAY or FAIL"):
        replay(adb.host_version(), b"HTTP/1.1 400")


# ---------------------------------------------------------------------------------------------
# Host services
# ---------------------------------------------------------------------------------------------


def test_host_version() -> None:
    assert run_pair(adb.host_version(), server(["host:version"], block(b"0029"))) == 41


def test_host_version_must_be_hex() -> None:
    with pytest.raises(RemoteProtocolError, match="hex digits"):
        replay(adb.host_version(), b"OKAY" + block(b"v29"))


DEVICES_L = (
    b"127.0.0.1:16555        device product:sdk_phone model:Pixel_3 device:generic "
    b"transport_id:1\n"
    b"0123456789ABCDEF       unauthorized usb:1-1 transport_id:2\n"
    b"emulator-5554\toffline\n"
    b"ZY22 no permissions (user in plugdev group; are your udev rules wrong?); see "
    b"[http://developer.android.com/tools/device.html] usb:1-4 transport_id:5\n"
    b"(no serial number)     device usb:1-2 transport_id:7\n"
)


def test_devices_l_parses_serial_state_and_attributes() -> None:
    devices = run_pair(adb.host_devices(), server(["host:devices-l"], block(DEVICES_L)))
    assert [(d.serial, d.state) for d in devices] == [
        ("127.0.0.1:16555", "device"),
        ("0123456789ABCDEF", "unauthorized"),
        ("emulator-5554", "offline"),
        (
            "ZY22",
            "no permissions (user in plugdev group; are your udev rules wrong?); see "
            "[http://developer.android.com/tools/device.html]",
        ),
        ("", "device"),
    ]
    first = devices[0]
    assert first.online and first.transport_id == 1
    assert first.attrs == {
        "product": "sdk_phone",
        "model": "Pixel_3",
        "device": "generic",
        "transport_id": "1",
    }
    assert devices[3].attrs == {"usb": "1-4", "transport_id": "5"}
    assert not devices[1].online and devices[2].transport_id is None


def test_devices_parsing_skips_hostile_and_odd_lines() -> None:
    text = (
        b"\n   \n"
        b"lonely\n"  # no state
        b"bad\x1bserial device\n"  # a serial that could not go back into a request
        + b"x"
        * 5000
        + b" device\n"
        b"a;reboot device model:\x1b[2Jx transport_id:99999999999999999\n"
        b"\xff\xfe device\n"
        b"good device\r\n"
    )
    devices = adb.parse_devices(text)
    assert [d.serial for d in devices] == ["a;reboot", "good"]
    assert devices[0].attrs["model"] == "?[2Jx"
    assert devices[0].transport_id is None  # absurd numbers are not ids


def test_device_lists_are_bounded() -> None:
    text = b"".join(b"s%d device\n" % i for i in range(1000))
    assert len(adb.parse_devices(text)) == adb.MAX_DEVICES


def test_track_devices_reads_one_block_per_change() -> None:
    def tracking() -> Op[list[list[adb.AdbDevice]]]:
        yield from adb.track_devices()
        lists = []
        for _ in range(3):
            lists.append((yield from adb.next_device_list()))
        return lists

    updates = (
        block(b"") + block(b"127.0.0.1:16555\toffline\n") + block(b"127.0.0.1:16555\tdevice\n")
    )
    lists = run_pair(tracking(), server(["host:track-devices"], updates, piece=1))
    assert [[d.state for d in devices] for devices in lists] == [[], ["offline"], ["device"]]


def test_track_devices_long_format_request() -> None:
    _, sent = replay(adb.track_devices(long_format=True), b"OKAY")
    assert sent == framed("host:track-devices-l")


FEATURES = b"shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir,apex,abb,abb_exec,remount_shell"


def test_device_features_by_serial() -> None:
    features = run_pair(
        adb.device_features("127.0.0.1:16555"),
        server(["host-serial:127.0.0.1:16555:features"], block(FEATURES)),
    )
    assert features == frozenset(FEATURES.decode().split(","))
    assert "shell_v2" in features


def test_features_of_the_only_device_and_of_the_server() -> None:
    assert run_pair(adb.device_features(), server(["host:features"], block(b"cmd"))) == {"cmd"}
    server_side = server(["host:host-features"], block(b"shell_v2,push_sync"))
    assert run_pair(adb.server_features(), server_side) == {"shell_v2", "push_sync"}


def test_odd_feature_names_are_dropped() -> None:
    assert adb.parse_features(b"shell_v2,,bad name;rm,cmd\n,\x1b") == {"shell_v2", "cmd"}
    assert adb.parse_features(b"") == frozenset()


@pytest.mark.parametrize("serial", ["", "a b", "a\nb", "x" * 256, "é"])
def test_serials_are_checked_before_use(serial: str) -> None:
    with pytest.raises(UsageError):
        replay(adb.select_transport(serial), b"OKAY")


def test_transport_any() -> None:
    _, sent = replay(adb.select_transport(None), b"OKAY")
    assert sent == framed("host:transport-any")


def test_unknown_serial_is_a_source_error() -> None:
    answer = b"FAIL" + block(b"device 'nope' not found")
    with pytest.raises(SourceError, match="nope"):
        replay(adb.shell_v2("nope", "id -u"), answer)


# ---------------------------------------------------------------------------------------------
# shell,v2
# ---------------------------------------------------------------------------------------------


def test_shell_packet_codec() -> None:
    assert adb.encode_shell_packet(ShellId.STDOUT, b"ab") == b"\x01\x02\x00\x00\x00ab"
    assert adb.encode_shell_packet(ShellId.CLOSE_STDIN) == b"\x04\x00\x00\x00\x00"
    assert [int(i) for i in ShellId] == [0, 1, 2, 3, 4, 5, 255]


def test_shell_v2_separates_stdout_stderr_and_exit_status() -> None:
    output = (
        shell_packet(ShellId.STDOUT, b"hello ")
        + shell_packet(ShellId.STDERR, b"warning\n")
        + shell_packet(ShellId.STDOUT, b"")
        + shell_packet(ShellId.STDOUT, b"world\n")
        + exit_packet(5)
    )
    device = server(["host:transport:SER", "shell,v2,raw:echo hi"], output, piece=1)
    result = run_pair(adb.shell_v2("SER", "echo hi"), device)
    assert result == ShellResult(b"hello world\n", b"warning\n", 5)
    with pytest.raises(TransportError, match="exit status 5: warning"):
        result.check("probe")
    assert ShellResult(b"ok", b"", 0).check("probe") == b"ok"


def test_shell_v2_always_closes_stdin() -> None:
    _, sent = replay(adb.shell_v2("S", "id -u"), b"OKAY" * 2 + exit_packet(0))
    prefix = framed("host:transport:S") + framed("shell,v2,raw:id -u")
    assert sent == prefix + shell_packet(ShellId.CLOSE_STDIN)


@pytest.mark.parametrize("size", [0, 1, 4091, 4092, 10_000, 600_000])
def test_shell_v2_feeds_stdin_then_close_stdin(size: int) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    command = "dd of=/dev/block/mmcblk0p5 bs=4096 seek=3 conv=notrunc 2>/dev/null"

    def adbd() -> Op[object]:
        assert (yield from read_request()) == "host:transport:S"
        yield Send(b"OKAY")
        assert (yield from read_request()) == "shell,v2,raw:" + command
        yield Send(b"OKAY")
        got = bytearray()
        while True:
            header = yield Recv(5)
            assert header is not None
            ident, length = struct.unpack("<BI", header)
            if ident == ShellId.CLOSE_STDIN:
                break
            assert ident == ShellId.STDIN and 0 < length <= 4091
            got += (yield Recv(length)) or b""
        assert got == data
        yield Send(exit_packet(0))
        return None

    result = run_pair(adb.shell_v2("S", command, stdin=data), adbd())
    assert result == ShellResult(b"", b"", 0)


def test_stdin_is_batched_into_few_sends() -> None:
    chunks = list(adb.encode_stdin(b"\xaa" * (1 << 20)))
    assert 3 <= len(chunks) <= 5
    packets = unpack_shell_packets(b"".join(chunks))
    assert packets[-1] == (ShellId.CLOSE_STDIN, b"")
    assert b"".join(data for _, data in packets) == b"\xaa" * (1 << 20)


def test_exact_length_read() -> None:
    output = shell_packet(ShellId.STDOUT, b"abc") + shell_packet(ShellId.STDOUT, b"de")
    result, _ = replay(
        adb.shell_v2("S", "dd", expect_stdout_bytes=5), b"OKAY" * 2 + output + exit_packet(0)
    )
    assert result.stdout == b"abcde"


def test_exact_length_read_too_short() -> None:
    output = shell_packet(ShellId.STDOUT, b"abc") + exit_packet(0)
    with pytest.raises(TransportError, match="returned 3 of 5 bytes"):
        replay(adb.shell_v2("S", "dd", expect_stdout_bytes=5), b"OKAY" * 2 + output)


def test_exact_length_read_failed_command_reports_its_stderr() -> None:
    output = shell_packet(ShellId.STDERR, b"dd: /dev/block/x: Permission denied") + exit_packet(1)
    with pytest.raises(TransportError, match="exit status 1: dd: /dev/block/x: Permission"):
        replay(adb.shell_v2("S", "dd", expect_stdout_bytes=5), b"OKAY" * 2 + output)


def test_exact_length_read_too_long_stops_before_reading_the_surplus() -> None:
    # The surplus packet's header announces 1 MiB that never comes: the host must not wait.
    output = shell_packet(ShellId.STDOUT, b"abcde") + struct.pack("<BI", ShellId.STDOUT, 1 << 20)
    with pytest.raises(RemoteProtocolError, match="more than the 5 bytes"):
        replay(adb.shell_v2("S", "dd", expect_stdout_bytes=5), b"OKAY" * 2 + output)


def test_stdout_is_bounded_and_stderr_truncated() -> None:
    noisy = shell_packet(ShellId.STDERR, b"e" * 100) + shell_packet(ShellId.STDERR, b"f" * 100)
    op = adb.shell_v2("S", "x", max_stdout_bytes=4, max_stderr_bytes=150)
    result, _ = replay(
        op, b"OKAY" * 2 + noisy + shell_packet(ShellId.STDOUT, b"1234") + exit_packet(0)
    )
    assert result.stderr == b"e" * 100 + b"f" * 50 and result.stdout == b"1234"
    with pytest.raises(RemoteProtocolError, match="more than the 4 bytes"):
        replay(adb.shell_v2("S", "x", max_stdout_bytes=4), b"OKAY" * 2 + shell_packet(1, b"12345"))


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (shell_packet(ShellId.STDIN, b"x"), "unexpected packet id 0"),
        (shell_packet(9, b"x"), "unexpected packet id 9"),
        (shell_packet(ShellId.EXIT, b"\x00\x00"), "exit packet of 2 bytes"),
        (struct.pack("<BI", ShellId.STDERR, 0xFFFFFFFF), "corrupt header"),
    ],
)
def test_broken_shell_packets(packet: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        replay(adb.shell_v2("S", "x"), b"OKAY" * 2 + packet)


@pytest.mark.parametrize("command", ["", "a\nb", "a\0b"])
def test_commands_are_single_lines(command: str) -> None:
    with pytest.raises(LocalProtocolError):
        replay(adb.shell_v2("S", command), b"")


# ---------------------------------------------------------------------------------------------
# exec:, legacy shell:, root:
# ---------------------------------------------------------------------------------------------

DD = "dd if=/dev/block/mmcblk0 bs=4096 skip=2 count=1 2>/dev/null"


def test_exec_read_with_end_marker_and_exit_status() -> None:
    data = bytes(range(256)) * 16 + MARKER  # binary data may contain anything, even the marker
    device = server(
        ["host:transport:S", f"exec:{DD}; echo '#mtkfs-exit-abcd:'$?"], data + MARKER + b"0\n"
    )
    result = run_pair(adb.exec_read("S", DD, len(data), nonce=NONCE), device)
    assert result == ShellResult(data, b"", 0)
    answer = b"OKAY" * 2 + b"\x00" * 8 + MARKER + b"1\n"
    assert replay(adb.exec_read("S", DD, 8, nonce=NONCE), answer)[0].exit_status == 1


def test_exec_read_refuses_surplus_bytes() -> None:
    leaked = b"\x00" * 8 + b"1+0 records in\n" + MARKER + b"0\n"
    with pytest.raises(RemoteProtocolError, match="stderr not redirected"):
        replay(adb.exec_read("S", DD, 8, nonce=NONCE), b"OKAY" * 2 + leaked)


@pytest.mark.parametrize("missing", [1, 3, len(MARKER) + 1])
def test_exec_read_short_by_a_few_bytes(missing: int) -> None:
    answer = b"OKAY" * 2 + b"\x00" * (64 - missing) + MARKER + b"0\n" + b"\x00" * 8
    with pytest.raises(RemoteProtocolError, match="more or fewer than the 64 bytes"):
        replay(adb.exec_read("S", DD, 64, nonce=NONCE), answer)


@pytest.mark.parametrize(("status", "error"), [(b"0", "returned 45 of 64"), (b"1", "status 1")])
def test_exec_read_short_by_the_trailer(status: bytes, error: str) -> None:
    trailer = MARKER + status + b"\n"
    answer = b"OKAY" * 2 + b"\x00" * (64 - len(trailer)) + trailer
    with pytest.raises(TransportError, match=error):
        replay(adb.exec_read("S", DD, 64, nonce=NONCE), answer)


def test_markers_are_random_and_checked() -> None:
    assert adb.new_marker() != adb.new_marker()
    with pytest.raises(LocalProtocolError):
        adb.new_marker("x'; reboot")


def test_legacy_shell_is_text_with_crlf_undone() -> None:
    output = b"line1\r\nline2\r\n\r\n" + MARKER + b"0\r\n"
    command = "cat /proc/dumchar_info; mtkfs_s=$?; echo; echo '#mtkfs-exit-abcd:'$mtkfs_s"
    device = server(["host:transport:S", f"shell:{command}"], output, piece=5)
    result = run_pair(adb.legacy_shell("S", "cat /proc/dumchar_info", nonce=NONCE), device)
    assert result == ShellResult(b"line1\nline2\n", b"", 0)


def test_legacy_shell_without_final_newline_and_a_fake_marker() -> None:
    output = b"23#mtkfs-exit-ffff:0\r\n" + b"\r\n" + MARKER + b"127\r\n"
    result, _ = replay(adb.legacy_shell("S", "getprop", nonce=NONCE), b"OKAY" * 2 + output)
    assert result == ShellResult(b"23#mtkfs-exit-ffff:0\n", b"", 127)


def run_on_host_sh(op: Op[ShellResult], pty: bool = False) -> bytes:
    """What the device would answer ``op``: its service's command run by the host's /bin/sh
    (LF → CRLF where a cooked PTY would do it). Checks that the marker commands are valid sh."""
    sent = bytearray()
    request = next(op)
    for reply in (None, b"OKAY", None, b"OKAY"):  # transport request, OKAY, service, OKAY
        assert isinstance(request, Send) == (reply is None)
        sent += request.data if isinstance(request, Send) else b""
        request = op.send(reply)
    op.close()
    command = sent[len(framed("host:transport:S")) + 4 :].decode().split(":", 1)[1]
    done = subprocess.run(["/bin/sh", "-c", command], check=False, capture_output=True, timeout=10)
    return b"OKAY" * 2 + (done.stdout.replace(b"\n", b"\r\n") if pty else done.stdout)


@pytest.mark.parametrize(
    ("command", "output", "status"),
    [("printf 'a\\nb'; (exit 7)", b"a\nb", 7), ("echo x; true", b"x\n", 0), ("false", b"", 1)],
)
def test_marker_commands_work_in_a_real_shell(command: str, output: bytes, status: int) -> None:
    answer = run_on_host_sh(adb.legacy_shell("S", command, nonce=NONCE), pty=True)
    result, _ = replay(adb.legacy_shell("S", command, nonce=NONCE), answer)
    assert result == ShellResult(output, b"", status)
    answer = run_on_host_sh(adb.exec_read("S", command, len(output), nonce=NONCE))
    result, _ = replay(adb.exec_read("S", command, len(output), nonce=NONCE), answer)
    assert result == ShellResult(output, b"", status)


def test_legacy_shell_output_is_bounded() -> None:
    with pytest.raises(RemoteProtocolError, match="more than 10 bytes"):
        replay(adb.legacy_shell("S", "yes", max_bytes=10, nonce=NONCE), b"OKAY" * 2 + b"y\r\n" * 20)


def test_root_reply() -> None:
    device = server(["host:transport:S", "root:"], b"adbd is already running as root\n")
    assert run_pair(adb.root("S"), device) == "adbd is already running as root"
    with pytest.raises(RemoteProtocolError, match="overlong"):
        replay(adb.root("S"), b"OKAY" * 2 + b"x" * 600)


# ---------------------------------------------------------------------------------------------
# sync:
# ---------------------------------------------------------------------------------------------

SYNC_OPEN = b"OKAY" * 2
QUIT = b"QUIT\x00\x00\x00\x00"


def sync_prefix(serial: str = "S") -> bytes:
    return framed(f"host:transport:{serial}") + framed("sync:")


def test_sync_stat() -> None:
    reply = struct.pack("<4sIII", b"STAT", 0o100644, 10 << 20, 1_700_000_000)
    result, sent = replay(adb_sync.sync_stat("S", "/sdcard/x"), SYNC_OPEN + reply)
    assert result == adb_sync.SyncStat(0o100644, 10 << 20, 1_700_000_000)
    assert result.exists and not result.is_block_device
    assert sent == sync_prefix() + b"STAT\x09\x00\x00\x00/sdcard/x" + QUIT
    missing, _ = replay(adb_sync.sync_stat("S", "/nope"), SYNC_OPEN + b"STAT" + bytes(12))
    assert not missing.exists
    block_dev, _ = replay(
        adb_sync.sync_stat("S", "/dev/block/sda"),
        SYNC_OPEN + b"STAT" + struct.pack("<III", 0o60600, 0, 0),
    )
    assert block_dev.is_block_device


def test_sync_stat_with_a_wrong_answer() -> None:
    with pytest.raises(RemoteProtocolError, match="not STAT"):
        replay(adb_sync.sync_stat("S", "/x"), SYNC_OPEN + b"FAIL" + bytes(12))


def data_chunks(data: bytes, size: int = 64 * 1024) -> bytes:
    return b"".join(
        b"DATA" + struct.pack("<I", len(data[i : i + size])) + data[i : i + size]
        for i in range(0, len(data), size)
    )


def test_sync_recv_reassembles_data_chunks() -> None:
    data = bytes(i % 253 for i in range(200_000))
    answer = data_chunks(data) + b"DONE\x00\x00\x00\x00"
    device = server(["host:transport:S", "sync:"], answer, piece=4093)
    assert run_pair(adb_sync.sync_recv("S", "/data/local/tmp/r.bin"), device) == data
    result, sent = replay(adb_sync.sync_recv("S", "/e"), SYNC_OPEN + b"DONE\x00\x00\x00\x00")
    assert result == b"" and sent == sync_prefix() + b"RECV\x02\x00\x00\x00/e" + QUIT


def test_sync_recv_fail_carries_the_device_message() -> None:
    answer = SYNC_OPEN + b"FAIL" + struct.pack("<I", 25) + b"open failed: No such file"
    with pytest.raises(TransportError, match="open failed: No such file"):
        replay(adb_sync.sync_recv("S", "/x"), answer)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (b"DATA" + struct.pack("<I", 65537), RemoteProtocolError, "64 KiB"),
        (b"DENT" + bytes(4), RemoteProtocolError, "unexpected message"),
        (b"FAIL" + struct.pack("<I", 1 << 20), RemoteProtocolError, "FAIL message"),
        (data_chunks(b"x" * 11), TransportError, "larger than 10 bytes"),
    ],
)
def test_sync_recv_refuses_bad_answers(answer: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        replay(adb_sync.sync_recv("S", "/x", max_bytes=10), SYNC_OPEN + answer)


def test_sync_send_streams_chunks_then_done_with_mtime() -> None:
    data = bytes(i % 251 for i in range(150_000))

    def adbd() -> Op[object]:
        assert (yield from read_request()) == "host:transport:S"
        yield Send(b"OKAY")
        assert (yield from read_request()) == "sync:"
        yield Send(b"OKAY")
        header = yield Recv(8)
        assert header is not None and header[:4] == b"SEND"
        spec = yield Recv(struct.unpack("<I", header[4:])[0])
        assert spec == b"/data/local/tmp/w.bin,33188"
        got = bytearray()
        while True:
            header = yield Recv(8)
            assert header is not None
            ident, number = struct.unpack("<4sI", header)
            if ident == b"DONE":
                assert number == 1_700_000_000
                break
            assert ident == b"DATA" and number <= 64 * 1024
            got += (yield Recv(number)) or b""
        assert got == data
        yield Send(b"OKAY\x00\x00\x00\x00")
        quit_message = yield Recv(8)
        assert quit_message == QUIT
        return None

    op = adb_sync.sync_send("S", "/data/local/tmp/w.bin", data, mtime_s=1_700_000_000)
    assert run_pair(op, adbd()) is None


def test_sync_send_fail() -> None:
    answer = SYNC_OPEN + b"FAIL" + struct.pack("<I", 17) + b"Permission denied"
    with pytest.raises(TransportError, match="Permission denied"):
        replay(adb_sync.sync_send("S", "/system/x", b"data"), answer)
    with pytest.raises(RemoteProtocolError, match="OKAY or FAIL"):
        replay(adb_sync.sync_send("S", "/system/x", b""), SYNC_OPEN + b"DATA" + bytes(4))


@pytest.mark.parametrize("path", ["relative", "/a\nb", "/a\0b", "/" + "x" * 1024, "/a,b"])
def test_sync_paths_are_checked(path: str) -> None:
    with pytest.raises(LocalProtocolError):
        replay(adb_sync.sync_send("S", path, b""), SYNC_OPEN)


# ---------------------------------------------------------------------------------------------
# Service choice, quoting, device paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "sdk", "service"),
    [
        ({"shell_v2", "cmd"}, None, "shell,v2"),
        ({"shell_v2"}, 19, "shell,v2"),
        (set(), 23, "exec"),
        (set(), 21, "exec"),
        ({"cmd"}, 24, "exec"),
        (set(), 19, "shell"),
        (set(), None, "shell"),
    ],
)
def test_pick_shell(features: set[str], sdk: int | None, service: str) -> None:
    assert adb.pick_shell(features, sdk) == service


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [("", "''"), ("abc", "'abc'"), ("a'b", "'a'\\''b'"), ("$(reboot)", "'$(reboot)'")],
)
def test_sh_quote_examples(arg: str, quoted: str) -> None:
    assert adb.sh_quote(arg) == quoted


@pytest.mark.parametrize("arg", ["a\nb", "\0", "x\0y"])
def test_sh_quote_refuses_nul_and_newline(arg: str) -> None:
    with pytest.raises(UsageError, match="NUL or newline"):
        adb.sh_quote(arg)


def _printed_by_sh(arg: str) -> bytes:
    done = subprocess.run(
        ["/bin/sh", "-c", "printf %s " + adb.sh_quote(arg)],
        capture_output=True,
        timeout=10,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize("arg", ["a;reboot", "`id`", "$(touch x)", "'\"'\\", " -n ", "*", "\r"])
def test_sh_quote_hostile_examples_stay_literal(arg: str) -> None:
    assert _printed_by_sh(arg) == arg.encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(st.characters(codec="utf-8", exclude_characters="\0\n")))
def test_sh_quote_round_trips_through_sh(arg: str) -> None:
    assert _printed_by_sh(arg) == arg.encode()


@pytest.mark.parametrize(
    "path",
    [
        "/dev/block/mmcblk0p5",
        "/dev/block/sdc12",
        "/dev/block/mmcblk0boot0",
        "/dev/block/by-name/boot",
        "/dev/block/platform/mtk-msdc.0/11230000.msdc0/by-name/nvram",
        "/dev/block/platform/bootdevice/by-name/md1img_a",
    ],
)
def test_safe_device_path_accepts(path: str) -> None:
    assert adb.safe_device_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "/dev/block/../x",
        "/dev/block/x/..",
        "/dev/block/./x",
        "/dev/block//x",
        "/dev/block/",
        "/dev/block",
        "/dev/blockx",
        "/dev/block/a;b",
        "/dev/block/$(x)",
        "/dev/block/`id`",
        "/dev/block/a b",
        "/dev/block/x\n",
        "/dev/block/x\nreboot",
        "/dev/block/ä",
        "dev/block/mmcblk0",
        "mmcblk0p5",
        "/proc/x",
        "/dev/block/" + "a" * 300,
    ],
)
def test_safe_device_path_rejects(path: str) -> None:
    with pytest.raises(UsageError, match="refusing device path"):
        adb.safe_device_path(path)
