"""Links: ttys over a real pty, run_device, and the USB link against a fake pyusb device.

What matters for every link is the :class:`~mtkfs.links.base.Link` contract the protocols stand
on: bytes arrive in order whatever the chunking, ``recv_exactly`` keeps its timeout (a silent
device is a TransportTimeout, never a hang) and loses nothing when it expires, and a closed or
vanished peer is a DeviceGoneError. The USB tests use a fake device that behaves like a bulk
pipe — packets of wMaxPacketSize, a short packet ending a transfer, overflow on a request that
is not whole packets — so the ZLP and read-sizing rules are checked against USB's, not ours.
"""

from __future__ import annotations

import array
import errno
import hashlib
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
import usb.core
import usb.util

from mtkfs.errors import DeviceGoneError, SourceError, TransportError, TransportTimeout
from mtkfs.links import usb as usblink
from mtkfs.links.base import Link, drive, run_device
from mtkfs.links.pty import open_pty_pair
from mtkfs.links.serial import SerialLink, SerialUrlLink, open_serial
from mtkfs.links.usb import (
    UsbLink,
    UsbMode,
    find_endpoints,
    find_mtk_devices,
    map_usb_error,
    needs_zlp,
    read_request_bytes,
    wait_for_device,
)
from mtkfs.protocols.base import Op, Recv, Send

# -- a toy protocol: length-prefixed payload, answered by its digest, its complement, a status --

_INVERT = bytes(255 - i for i in range(256))


def toy_host(payload: bytes) -> Op[bytes]:
    """Send a payload; expect sha256, the complemented payload, and status 00 00."""
    yield Send(struct.pack(">I", len(payload)))
    yield Send(payload, zlp=True)
    digest = yield Recv(32)
    assert digest == hashlib.sha256(payload).digest()
    back = yield Recv(len(payload))
    assert back is not None
    status = yield Recv(2)
    assert status == b"\x00\x00"
    return back.translate(_INVERT)


def toy_device(served: list[int] | None = None) -> Op[None]:
    """Serve toy requests until the link goes away (replies split in odd pieces)."""
    try:
        while True:
            header = yield Recv(4)
            assert header is not None
            (size,) = struct.unpack(">I", header)
            payload = yield Recv(size)
            assert payload is not None
            yield Send(hashlib.sha256(payload).digest())
            inverted = payload.translate(_INVERT)
            for start in range(0, size, 1_000_003):
                yield Send(inverted[start : start + 1_000_003])
            yield Send(b"\x00\x00")
            if served is not None:
                served.append(size)
    finally:
        if served is not None:
            served.append(-1)  # the generator was closed


def silent_device() -> Op[None]:
    """Reads one request header and then never answers."""
    yield Recv(4)
    yield Recv(1 << 30)


ALL_BYTES = bytes(range(256))


def payload_of(size: int) -> bytes:
    """Every byte value (XON/XOFF, CR, LF, NUL, 0xFF…), in an order that is not periodic."""
    return (ALL_BYTES * (size // 256 + 1))[:size].translate(bytes(reversed(ALL_BYTES)))[::-1]


# -- ttys over a real pty ----------------------------------------------------------------------


@asynccontextmanager
async def served_over_pty(device_op: Op[None]) -> AsyncIterator[Link]:
    """The toy device served on a pty master; yields the host's serial link on the slave."""
    path, master = open_pty_pair()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_device, device_op, master)
            host = await open_serial(path)
            try:
                yield host
            finally:
                await host.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await master.aclose()


async def test_pty_serial_link_runs_the_toy_protocol_with_several_mib() -> None:
    payload = payload_of(5 * 1024 * 1024 + 3)
    with trio.fail_after(30):
        async with served_over_pty(toy_device()) as host:
            assert isinstance(host, SerialLink)
            assert await drive(toy_host(b"\x11\x13\r\n\x00\x03\x04\xff"), host) == (
                b"\x11\x13\r\n\x00\x03\x04\xff"  # XON, XOFF, CR, LF, ^C, ^D: all raw
            )
            assert await drive(toy_host(payload), host, timeout_s=20) == payload


async def test_pty_throughput_16_mib() -> None:
    """Host → simulator → host through the pty; prints MB/s (run with -s to see it)."""
    size = 16 * 1024 * 1024
    payload = payload_of(size)
    with trio.fail_after(60):
        async with served_over_pty(toy_device()) as host:
            start = time.perf_counter()
            assert await drive(toy_host(payload), host, timeout_s=30) == payload
            elapsed_s = time.perf_counter() - start
    rate = 2 * size / elapsed_s / 1e6  # both directions crossed the pty
    print(f"\npty: 2 x 16 MiB in {elapsed_s:.2f} s = {rate:.1f} MB/s")
    assert rate > 5  # an order of magnitude below what this machine does: a smoke alarm only


async def test_pty_silent_device_times_out_within_the_timeout() -> None:
    with trio.fail_after(10):
        async with served_over_pty(silent_device()) as host:
            start = time.monotonic()
            with pytest.raises(TransportTimeout, match=r"within 0\.3 s"):
                await drive(toy_host(b"anyone there?"), host, timeout_s=0.3)
            assert 0.29 <= time.monotonic() - start < 1.5


async def test_pty_timeout_loses_no_bytes() -> None:
    path, master = open_pty_pair()
    host = await open_serial(path)
    try:
        with trio.fail_after(10):
            await master.send(b"abc")
            with pytest.raises(TransportTimeout):
                await host.recv_exactly(5, 0.1)
            await master.send(b"de")
            assert await host.recv_exactly(5, 1) == b"abcde"
    finally:
        await host.aclose()
        await master.aclose()


async def test_pty_device_that_stops_reading_is_a_send_timeout() -> None:
    path, master = open_pty_pair()
    host = await open_serial(path)
    assert isinstance(host, SerialLink)
    host.write_timeout_s = 0.2
    try:
        with trio.fail_after(10):
            start = time.monotonic()
            with pytest.raises(TransportTimeout, match=r"took no bytes for 0\.2 s"):
                await host.send(payload_of(8 * 1024 * 1024))
            assert time.monotonic() - start < 2
    finally:
        await host.aclose()
        await master.aclose()


async def test_pty_device_going_away_is_device_gone() -> None:
    path, master = open_pty_pair()
    host = await open_serial(path)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def unplug() -> None:
                    await trio.sleep(0.05)
                    await master.aclose()

                nursery.start_soon(unplug)
                with pytest.raises(DeviceGoneError, match="device gone"):
                    await host.recv_exactly(10, 5)
            with pytest.raises(DeviceGoneError):
                await host.send(b"x" * 100)
    finally:
        await host.aclose()


async def test_closed_serial_link_is_device_gone_even_for_a_waiting_reader() -> None:
    path, master = open_pty_pair()
    host = await open_serial(path)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def close_soon() -> None:
                    await trio.sleep(0.05)
                    await host.aclose()

                nursery.start_soon(close_soon)
                with pytest.raises(DeviceGoneError, match="closed"):
                    await host.recv_exactly(10, 5)
            with pytest.raises(DeviceGoneError):
                await host.recv_exactly(1, 1)
            with pytest.raises(DeviceGoneError):
                await host.send(b"x")
            await host.aclose()  # idempotent
    finally:
        await master.aclose()


async def test_pty_simulator_survives_the_host_reconnecting() -> None:
    path, master = open_pty_pair()
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_device, toy_device(), master)
                for word in (b"first", b"second"):
                    host = await open_serial(path)
                    assert await drive(toy_host(word), host) == word
                    await host.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await master.aclose()


async def test_run_device_ends_with_device_gone_and_closes_the_generator() -> None:
    """The simulator's link going away ends run_device, and the generator's finally runs."""
    path, master = open_pty_pair()
    served: list[int] = []
    host = await open_serial(path)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    with pytest.raises(DeviceGoneError):
                        await run_device(toy_device(served), master)

                nursery.start_soon(serve)
                assert await drive(toy_host(b"ping"), host) == b"ping"
                await master.aclose()
    finally:
        await host.aclose()
        await master.aclose()
    assert served == [4, -1]  # one request, then the generator's finally ran


async def test_open_serial_errors_say_what_to_do() -> None:
    with pytest.raises(SourceError, match="no such port"):
        await open_serial("/dev/does-not-exist-mtkfs")
    path, master = open_pty_pair()
    first = await open_serial(path)
    try:
        with pytest.raises(SourceError, match="in use by another program"):
            await open_serial(path)
    finally:
        await first.aclose()
        await master.aclose()


async def test_pyserial_url_without_a_descriptor_uses_worker_threads() -> None:
    link = await open_serial("loop://")
    assert isinstance(link, SerialUrlLink)
    try:
        with trio.fail_after(10):
            await link.send(b"round trip")
            assert await link.recv_exactly(5, 1) == b"round"
            assert await link.recv_exactly(5, 1) == b" trip"
            start = time.monotonic()
            with pytest.raises(TransportTimeout):
                await link.recv_exactly(1, 0.25)
            assert time.monotonic() - start < 1.5
    finally:
        await link.aclose()
    with pytest.raises(DeviceGoneError):
        await link.recv_exactly(1, 1)


# -- USB: the pure rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "packet", "requested", "expected"),
    [
        (1024, 512, True, True),  # whole packets: the device needs the ZLP to see the end
        (1000, 512, True, False),  # the short last packet ends the transfer already
        (0, 512, True, True),  # an explicit ZLP
        (1024, 512, False, False),  # not asked for
        (64, 64, True, True),  # full-speed packets
        (1024, 0, True, False),  # no packets at all (tty, pty)
    ],
)
def test_zlp_rule(size: int, packet: int, requested: bool, expected: bool) -> None:
    assert needs_zlp(size, packet, requested=requested) is expected


@pytest.mark.parametrize(
    ("wanted", "packet", "expected"),
    [
        (1, 512, 512),
        (4, 512, 512),
        (512, 512, 512),
        (513, 512, 1024),
        (3 * 1024 * 1024, 512, 1024 * 1024),
        (100, 64, 128),
        (0, 512, 512),
    ],
)
def test_read_requests_are_whole_packets_and_no_more(
    wanted: int, packet: int, expected: int
) -> None:
    assert read_request_bytes(wanted, packet) == expected


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (
            usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT),
            TransportTimeout,
            "timeout",
        ),
        (usb.core.USBError("No such device", -4, errno.ENODEV), DeviceGoneError, "unplugged"),
        (usb.core.USBError("Pipe error", -9, errno.EPIPE), DeviceGoneError, "stalled"),
        (usb.core.USBError("Access denied", -3, errno.EACCES), SourceError, "udev rule"),
        (usb.core.USBError("Resource busy", -6, errno.EBUSY), SourceError, "another program"),
        (usb.core.USBError("Input/Output Error", -1, errno.EIO), TransportError, "Input/Output"),
        (usb.core.NoBackendError("No backend available"), SourceError, "libusb-1.0"),
    ],
)
def test_usb_errors_are_mapped_with_a_message(
    exc: BaseException, kind: type[Exception], words: str
) -> None:
    mapped = map_usb_error(exc, "USB 0e8d:0003", "reading")
    assert type(mapped) is kind
    assert words in str(mapped)


# -- USB: a fake pyusb device ------------------------------------------------------------------


@dataclass
class FakeEndpoint:
    bEndpointAddress: int
    bmAttributes: int
    wMaxPacketSize: int = 512


@dataclass
class FakeInterface:
    bInterfaceNumber: int
    bInterfaceClass: int
    eps: list[FakeEndpoint]
    bAlternateSetting: int = 0

    def endpoints(self) -> list[FakeEndpoint]:
        return self.eps


@dataclass
class FakeConfig:
    intfs: list[FakeInterface]

    def interfaces(self) -> list[FakeInterface]:
        return self.intfs


def cdc_acm(packet: int = 512) -> list[FakeInterface]:
    """What a MediaTek BROM shows: a comm interface with an interrupt endpoint, a data pair."""
    return [
        FakeInterface(0, 0x02, [FakeEndpoint(0x83, 0x03, 16)]),
        FakeInterface(
            1, 0x0A, [FakeEndpoint(0x81, 0x02, packet), FakeEndpoint(0x01, 0x02, packet)]
        ),
    ]


@dataclass
class FakeUsbDevice:
    """A pyusb ``Device`` look-alike with bulk-pipe semantics on its IN endpoint."""

    idVendor: int = 0x0E8D
    idProduct: int = 0x0003
    bus: int | None = 1
    address: int | None = 7
    port_numbers: tuple[int, ...] = (4,)
    interfaces: list[FakeInterface] = field(default_factory=cdc_acm)
    kernel_drivers: set[int] = field(default_factory=lambda: {0, 1})
    packet: int = 512
    fail: dict[str, BaseException] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    writes: list[bytes] = field(default_factory=list)
    read_requests: list[int] = field(default_factory=list)
    packets: deque[bytes] = field(default_factory=deque)

    def queue(self, message: bytes) -> None:
        """The device sends ``message``: full packets, then a short one if any is left."""
        for start in range(0, len(message), self.packet):
            self.packets.append(message[start : start + self.packet])

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def get_active_configuration(self) -> FakeConfig:
        self._maybe_fail("get_active_configuration")
        return FakeConfig(self.interfaces)

    def set_configuration(self) -> None:
        self.calls.append(("set_configuration",))

    def set_interface_altsetting(self, interface: int, alternate_setting: int) -> None:
        self.calls.append(("altsetting", interface, alternate_setting))

    def is_kernel_driver_active(self, interface: int) -> bool:
        return interface in self.kernel_drivers

    def detach_kernel_driver(self, interface: int) -> None:
        self._maybe_fail("detach_kernel_driver")
        self.kernel_drivers.discard(interface)
        self.calls.append(("detach", interface))

    def attach_kernel_driver(self, interface: int) -> None:
        self.kernel_drivers.add(interface)
        self.calls.append(("attach", interface))

    def ctrl_transfer(
        self,
        bmRequestType: int,
        bRequest: int,
        wValue: int = 0,
        wIndex: int = 0,
        data_or_wLength: Any = None,
        timeout: int | None = None,
    ) -> int:
        self.calls.append(("ctrl", bmRequestType, bRequest, wValue, wIndex, data_or_wLength))
        self._maybe_fail("ctrl_transfer")
        return len(data_or_wLength or b"")

    def write(self, endpoint: int, data: Any, timeout: int | None = None) -> int:
        assert endpoint == 0x01 and timeout and timeout > 0
        self._maybe_fail("write")
        self.writes.append(bytes(data))
        return len(data)

    def read(
        self, endpoint: int, size_or_buffer: int, timeout: int | None = None
    ) -> array.array[int]:
        assert endpoint == 0x81 and timeout and timeout > 0
        self._maybe_fail("read")
        self.read_requests.append(size_or_buffer)
        if not self.packets:
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
        out = bytearray()
        while self.packets and len(out) < size_or_buffer:
            packet = self.packets[0]
            if len(out) + len(packet) > size_or_buffer:
                raise usb.core.USBError("Overflow", -8, errno.EOVERFLOW)
            out += self.packets.popleft()
            if len(packet) < self.packet:
                break  # a short packet ends the transfer
        return array.array("B", out)


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record usb.util's claim/release (pyusb does them through the device's private context)."""
    log: list[tuple[str, int]] = []
    monkeypatch.setattr(usb.util, "claim_interface", lambda dev, n: log.append(("claim", n)))
    monkeypatch.setattr(usb.util, "release_interface", lambda dev, n: log.append(("release", n)))
    monkeypatch.setattr(usb.util, "dispose_resources", lambda dev: log.append(("dispose", 0)))
    return log


def fake_bus(
    monkeypatch: pytest.MonkeyPatch, present: Callable[[], Iterable[FakeUsbDevice]]
) -> None:
    """Make ``usb.core.find`` see the devices ``present()`` returns at each call."""

    def find(find_all: bool = False, custom_match: Any = None, **match: Any) -> Any:
        devices = [
            d
            for d in present()
            if all(getattr(d, k) == v for k, v in match.items())
            and (custom_match is None or custom_match(d))
        ]
        return devices if find_all else (devices[0] if devices else None)

    monkeypatch.setattr(usb.core, "find", find)


def test_endpoint_discovery_picks_the_cdc_data_pair() -> None:
    eps = find_endpoints(FakeConfig(cdc_acm()))
    assert (eps.comm_interface, eps.data_interface) == (0, 1)
    assert (eps.ep_in, eps.ep_out, eps.out_packet_bytes) == (0x81, 0x01, 512)
    # An interface layout with the data pair in interface 2 (0e8d:6000) and a vendor interface.
    odd = [
        FakeInterface(0, 0xFF, [FakeEndpoint(0x82, 0x02), FakeEndpoint(0x02, 0x02)]),
        FakeInterface(1, 0x02, []),
        FakeInterface(2, 0x0A, [FakeEndpoint(0x05, 0x02, 64), FakeEndpoint(0x86, 0x02, 64)]),
    ]
    eps = find_endpoints(FakeConfig(odd))
    assert (eps.data_interface, eps.ep_in, eps.ep_out, eps.in_packet_bytes) == (2, 0x86, 0x05, 64)
    # The bulk pair in an alternate setting (alt 0 empty): the link selects it on open.
    alt = [FakeInterface(1, 0x0A, []), *cdc_acm()[1:]]
    alt[1].bAlternateSetting = 1
    assert find_endpoints(FakeConfig(alt)).data_alt_setting == 1
    with pytest.raises(SourceError, match="no CDC data interface"):
        find_endpoints(FakeConfig([FakeInterface(0, 0x0A, [FakeEndpoint(0x81, 0x03)])]))


async def test_open_detaches_claims_and_sets_the_line(claims: list[tuple[str, int]]) -> None:
    dev = FakeUsbDevice()
    dev.fail["ctrl_transfer"] = usb.core.USBError("Pipe error", -9, errno.EPIPE)  # ignored
    link = await UsbLink.open(dev)
    assert link.max_packet_bytes == 512
    assert link.description == "USB 0e8d:0003 bus 1 port 1-4 (MediaTek BootROM)"
    assert ("detach", 0) in dev.calls and ("detach", 1) in dev.calls
    assert claims == [("claim", 0), ("claim", 1)]
    ctrl = [c for c in dev.calls if c[0] == "ctrl"]
    line_coding = struct.pack("<IBBB", 115200, 0, 0, 8)
    assert ctrl == [("ctrl", 0x21, 0x20, 0, 0, line_coding), ("ctrl", 0x21, 0x22, 2, 0, None)]
    assert len(line_coding) == 7
    await link.aclose()
    await link.aclose()
    assert claims[2:] == [("release", 0), ("release", 1), ("dispose", 0)]
    assert dev.kernel_drivers == {0, 1}  # cdc_acm gets its tty back


async def test_open_errors_tell_the_user_what_to_do(
    claims: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = FakeUsbDevice()
    dev.fail["detach_kernel_driver"] = usb.core.USBError("Access denied", -3, errno.EACCES)
    with pytest.raises(SourceError, match=r"udev rule.*or run mtkfs as root"):
        await UsbLink.open(dev)
    fake_bus(monkeypatch, list)
    with pytest.raises(SourceError, match="no MediaTek phone"):
        await UsbLink.open()
    fake_bus(monkeypatch, lambda: [FakeUsbDevice(address=7), FakeUsbDevice(address=8)])
    with pytest.raises(SourceError, match="several MediaTek phones"):
        await UsbLink.open()

    def no_backend(**kwargs: Any) -> None:
        raise usb.core.NoBackendError("No backend available")

    monkeypatch.setattr(usb.core, "find", no_backend)
    with pytest.raises(SourceError, match="apt install libusb"):
        await UsbLink.open()


async def test_open_selects_by_port_or_by_bus_and_address(
    claims: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    brom = FakeUsbDevice(address=7, port_numbers=(4,))
    other = FakeUsbDevice(idProduct=0x2000, address=9, port_numbers=(2, 1))
    unknown = FakeUsbDevice(idVendor=0x0E8D, idProduct=0x1234, address=11)
    fake_bus(monkeypatch, lambda: [brom, other, unknown])
    link = await UsbLink.open(port_path="1-2.1")
    assert "0e8d:2000" in link.description and "preloader" in link.description
    await link.aclose()
    link = await UsbLink.open(bus=1, address=11)  # explicit address: any identity goes
    assert "0e8d:1234" in link.description
    await link.aclose()


async def test_send_adds_a_zlp_only_when_asked_and_on_a_packet_boundary(
    claims: list[tuple[str, int]],
) -> None:
    dev = FakeUsbDevice()
    link = await UsbLink.open(dev)
    await link.send(b"\xa0")
    await link.send(b"x" * 1024, zlp=True)
    await link.send(b"y" * 1000, zlp=True)
    await link.send(b"z" * 1024)
    big = payload_of(2 * 1024 * 1024 + 512)
    await link.send(big, zlp=True)
    assert [len(w) for w in dev.writes] == [
        1,
        1024,
        0,  # the ZLP
        1000,
        1024,
        1024 * 1024,
        1024 * 1024,
        512,
        0,
    ]
    assert b"".join(dev.writes[5:8]) == big


async def test_recv_buffers_across_packets_and_never_over_asks(
    claims: list[tuple[str, int]],
) -> None:
    dev = FakeUsbDevice()
    link = await UsbLink.open(dev)
    # Handshake-sized replies: one byte per transfer, read with whole-packet requests.
    for byte in b"\x5f\xf5\xaf\xfa":
        dev.queue(bytes([byte]))
    assert [await link.recv_exactly(1, 1) for _ in range(4)] == [b"\x5f", b"\xf5", b"\xaf", b"\xfa"]
    # A status and a value in one short transfer: the surplus waits in the buffer.
    dev.queue(b"\x00\x00\x07\x66")
    assert await link.recv_exactly(2, 1) == b"\x00\x00"
    assert await link.recv_exactly(2, 1) == b"\x07\x66"
    # 3 MiB + 100 bytes of flash in full packets, then a short one; read in odd sizes.
    data = payload_of(3 * 1024 * 1024 + 100)
    dev.queue(data)
    dev.read_requests.clear()
    got = bytearray()
    for size in (5, 1_000_000, 2_000_000, len(data) - 3_000_005):
        got += await link.recv_exactly(size, 1)
    assert got == data
    assert all(r % 512 == 0 and r <= 1024 * 1024 for r in dev.read_requests)
    # An exact number of packets and no ZLP, with more data queued behind it: a request for
    # more than needed would have swallowed the next message's first packet.
    dev.queue(b"A" * 1024)
    dev.queue(b"B" * 10)
    assert await link.recv_exactly(1024, 1) == b"A" * 1024
    assert await link.recv_exactly(10, 1) == b"B" * 10
    await link.aclose()


async def test_usb_timeouts_and_device_loss(claims: list[tuple[str, int]]) -> None:
    dev = FakeUsbDevice()
    link = await UsbLink.open(dev)
    dev.queue(b"ab")
    with pytest.raises(TransportTimeout, match=r"3 bytes did not come within 0\.2 s"):
        await link.recv_exactly(3, 0.2)
    dev.queue(b"c")
    assert await link.recv_exactly(3, 1) == b"abc"  # bytes from before the timeout kept
    dev.fail["read"] = usb.core.USBError(
        "No such device (it may have been disconnected)", -4, errno.ENODEV
    )
    with pytest.raises(DeviceGoneError, match="unplugged"):
        await link.recv_exactly(1, 1)
    dev.fail["write"] = usb.core.USBError("Pipe error", -9, errno.EPIPE)
    with pytest.raises(DeviceGoneError, match="stalled"):
        await link.send(b"x")
    await link.aclose()
    with pytest.raises(DeviceGoneError, match="closed"):
        await link.send(b"x")


async def test_usb_link_drives_a_protocol_against_the_fake(
    claims: list[tuple[str, int]],
) -> None:
    """drive() over the USB link: the fake answers the toy request as the device would."""
    dev = FakeUsbDevice()
    link = await UsbLink.open(dev)
    payload = payload_of(4096)
    dev.queue(hashlib.sha256(payload).digest())
    dev.queue(payload.translate(_INVERT))  # 8 full packets: no ZLP, the status follows
    dev.queue(b"\x00\x00")
    assert await drive(toy_host(payload), link) == payload
    assert dev.writes == [struct.pack(">I", 4096), payload, b""]  # the payload got its ZLP
    await link.aclose()


def test_find_mtk_devices_matches_the_exact_table(monkeypatch: pytest.MonkeyPatch) -> None:
    present = [
        FakeUsbDevice(idProduct=0x0003, address=2),
        FakeUsbDevice(idProduct=0x2000, address=3, port_numbers=(1, 3)),
        FakeUsbDevice(idProduct=0x2001, address=4),
        FakeUsbDevice(idVendor=0x0FCE, idProduct=0xF200, address=5),
        FakeUsbDevice(idProduct=0x3329, address=6),  # a HOLUX GPS: MediaTek's vendor id, not ours
        FakeUsbDevice(idVendor=0x0403, idProduct=0x6001, address=8),  # an FTDI bridge
        FakeUsbDevice(idProduct=0x0004, address=9),
    ]
    fake_bus(monkeypatch, lambda: present)
    found = find_mtk_devices()
    assert [(c.address, c.mode) for c in found] == [
        (2, UsbMode.BROM),
        (3, UsbMode.PRELOADER),
        (4, UsbMode.DA),
        (5, UsbMode.BROM),
    ]
    assert found[1].port_path == "1-1.3"
    assert {str(i) for i in usblink.USB_IDENTITIES} >= {"0e8d:0003", "0e8d:2000", "0e8d:2001"}
    assert all(i.vid in (0x0E8D, 0x1004, 0x22D9, 0x0FCE) for i in usblink.USB_IDENTITIES)


async def test_wait_for_device_polls_until_the_phone_appears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    polls = 0

    def present() -> list[FakeUsbDevice]:
        nonlocal polls
        polls += 1
        if polls < 4:
            return [FakeUsbDevice(idProduct=0x3329)]  # only the GPS for now
        return [FakeUsbDevice(idProduct=0x2000, port_numbers=(4,))]

    fake_bus(monkeypatch, present)
    with trio.fail_after(5):
        start = time.monotonic()
        found = await wait_for_device(3.0, poll_s=0.01)
    assert found.mode is UsbMode.PRELOADER and polls == 4
    assert time.monotonic() - start < 1.0  # polled fast: a preloader window is short
    with trio.fail_after(5), pytest.raises(SourceError, match=r"on port 9-9 within 0.2 s"):
        await wait_for_device(0.2, poll_s=0.01, port_path="9-9")


async def test_usb_link_follows_a_reenumeration_on_the_same_port(
    monkeypatch: pytest.MonkeyPatch, claims: list[tuple[str, int]]
) -> None:
    """SWITCH_USB_SPEED: the phone leaves and comes back with a new address (as the DA's
    0e8d:2001); the old device is still listed for a moment and must not be reopened."""
    old = FakeUsbDevice(idProduct=0x0003, address=7, port_numbers=(4,))
    link = await UsbLink.open(old)
    assert link.can_reenumerate and link.port_path == "1-4"
    polls = 0
    elsewhere = FakeUsbDevice(idProduct=0x2001, address=9, port_numbers=(5,))

    def present() -> list[FakeUsbDevice]:
        nonlocal polls
        polls += 1
        if polls < 3:
            return [old, elsewhere]
        return [FakeUsbDevice(idProduct=0x2001, address=8, port_numbers=(4,)), elsewhere]

    fake_bus(monkeypatch, present)
    with trio.fail_after(5):
        new = await link.reenumerated(3.0)
    assert isinstance(new, UsbLink) and new.port_path == "1-4" and polls == 3
    assert "2001" in new.description
    with pytest.raises(DeviceGoneError):
        await link.send(b"x")  # the old link was closed
    fake_bus(monkeypatch, lambda: [elsewhere])
    with trio.fail_after(5), pytest.raises(DeviceGoneError, match="did not come back"):
        await new.reenumerated(0.2)
