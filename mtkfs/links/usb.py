"""The USB link: a MediaTek phone's CDC-ACM data interface, driven with pyusb (libusb).

Why pyusb and not ``/dev/ttyACM0``: the kernel's cdc_acm tty appears a moment after the device
(too late for a preloader that listens for a second or two), ModemManager probes it with AT
commands that wreck a handshake, and a tty cannot send the zero-length packets BROM's SEND_DA
wants. So mtkfs detaches cdc_acm and talks to the bulk endpoints itself — as mtkclient does; the
tty path (:mod:`mtkfs.links.serial`) remains for ``da:/dev/ttyACM0`` and UART bridges.

Rules this module keeps (and tests/unit/test_links.py checks with a fake device):

* **Exact identities.** Devices are found by the VID:PID table
  (:data:`~mtkfs.links.usb_ids.USB_IDENTITIES`), never by
  "any 0e8d device": gpsd already claims a MediaTek GPS (0e8d:3329), and generic USB-UART
  bridges (FTDI, CH34x, CP210x) are never ours to grab — reach those through a tty.
* **Every pyusb call runs in a worker thread** (:func:`trio.to_thread.run_sync`) behind one
  ``trio.CapacityLimiter(1)`` per device: libusb blocks, and one device's calls must never
  interleave (a read racing a write on the same handshake byte is a failed handshake).
* **Reads ask for exactly what is needed, rounded up to whole packets.** Rounding up is
  required (a device that sends a full 512-byte packet into a 4-byte request overflows);
  asking for *more* than needed is forbidden: a device that sends exactly N×512 bytes and then
  waits for our acknowledgement would leave a larger request hanging until its timeout. Bytes
  beyond the request's need (the rest of a packet) wait in an internal buffer, so
  ``recv_exactly`` works across USB packet boundaries and across calls.
* **Zero-length packets** follow a write only when the protocol asks (``zlp=True``) *and* the
  write is a whole number of packets — otherwise its last short packet already ends the
  transfer, and an extra ZLP would be read by the device as an empty message.
* **Errors** become mtkfs errors: a libusb timeout is TransportTimeout; ENODEV and a stalled
  pipe are DeviceGoneError; EACCES is a SourceError that tells the user about the udev rule.

A caveat that shapes the protocols above this link: when libusb times out part-way through a
transfer, pyusb drops the bytes that did arrive. After a TransportTimeout the stream position is
unknown; the transport must resynchronise (re-handshake), never just read on.
"""

from __future__ import annotations

import array
import errno
import logging
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio
import usb.core
import usb.util

from mtkfs.errors import (
    DeviceGoneError,
    MtkfsError,
    SourceError,
    TransportError,
    TransportTimeout,
)
from mtkfs.links.base import Link
from mtkfs.links.usb_ids import USB_IDENTITIES, UsbIdentity, UsbMode, identity_of

__all__ = [
    "USB_IDENTITIES",
    "CdcEndpoints",
    "UsbCandidate",
    "UsbIdentity",
    "UsbLink",
    "UsbMode",
    "find_endpoints",
    "find_mtk_devices",
    "map_usb_error",
    "needs_zlp",
    "read_request_bytes",
    "wait_for_device",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


_CLASS_COMM = 0x02  # CDC Communications interface (cdc_acm binds here)
_CLASS_CDC_DATA = 0x0A  # CDC Data interface: the bulk pipe pair
#: SET_LINE_CODING payload: 115200 baud, 1 stop bit, no parity, 8 data bits. The rate means
#: nothing on USB; some firmwares only want *a* line coding before they talk.
_LINE_CODING = struct.pack("<IBBB", 115200, 0, 0, 8)
#: SET_CONTROL_LINE_STATE value: RTS, no DTR — what mtkclient sends (known to work on BROM and
#: preloaders; reference/mtkclient.md §2.2).
_CONTROL_LINE_STATE = 0x0002
_CONTROL_TIMEOUT_MS = 500
#: Largest single bulk read or write. Bounds how long one libusb call runs (1 MiB is ~25 ms at
#: high speed, ~1 s at full speed), and so how late a cancel can be.
_MAX_TRANSFER_BYTES = 1024 * 1024
#: Longest one libusb call may wait (an infinite or long recv is served in slices of this).
_CALL_SLICE_S = 5.0

PERMISSION_HINT = (
    "permission denied on the USB device. Give your user access with a udev rule for its "
    'VID:PID (a line such as SUBSYSTEM=="usb", ATTR{idVendor}=="0e8d", '
    'ATTR{idProduct}=="2000", TAG+="uaccess" in /etc/udev/rules.d/70-mtkfs.rules; then '
    "'udevadm control --reload' and replug the phone) or run mtkfs as root"
)


class UsbEndpoint(Protocol):
    """The endpoint descriptor fields mtkfs reads (pyusb's ``usb.core.Endpoint``)."""

    bEndpointAddress: int
    bmAttributes: int
    wMaxPacketSize: int


class UsbInterface(Protocol):
    """The interface descriptor fields mtkfs reads (pyusb's ``usb.core.Interface``)."""

    bInterfaceNumber: int
    bInterfaceClass: int
    bAlternateSetting: int

    def endpoints(self) -> Sequence[UsbEndpoint]: ...


class UsbConfiguration(Protocol):
    def interfaces(self) -> Sequence[UsbInterface]: ...


class UsbDevice(Protocol):
    """The subset of pyusb's ``usb.core.Device`` this link uses (and test fakes provide)."""

    idVendor: int
    idProduct: int
    bus: int | None
    address: int | None

    def get_active_configuration(self) -> UsbConfiguration: ...
    def set_configuration(self) -> None: ...
    def set_interface_altsetting(self, interface: int, alternate_setting: int) -> None: ...
    def is_kernel_driver_active(self, interface: int) -> bool: ...
    def detach_kernel_driver(self, interface: int) -> None: ...
    def attach_kernel_driver(self, interface: int) -> None: ...
    def ctrl_transfer(
        self,
        bmRequestType: int,
        bRequest: int,
        wValue: int = 0,
        wIndex: int = 0,
        data_or_wLength: Any = None,
        timeout: int | None = None,
    ) -> Any: ...
    def write(self, endpoint: int, data: Any, timeout: int | None = None) -> int: ...
    def read(self, endpoint: int, size_or_buffer: int, timeout: int | None = None) -> Any: ...


@dataclass(frozen=True)
class UsbCandidate:
    """A phone found on the bus, ready to open.

    ``port_path`` (``1-4.2``, as in sysfs and udev's ``%k``) survives the re-enumeration
    between BROM, preloader and DA; bus addresses do not.
    """

    identity: UsbIdentity
    bus: int
    address: int
    port_path: str
    device: UsbDevice = field(compare=False, repr=False)

    @property
    def mode(self) -> UsbMode:
        return self.identity.mode

    @property
    def description(self) -> str:
        where = f"port {self.port_path}" if self.port_path else f"address {self.address}"
        return f"USB {self.identity} bus {self.bus} {where} ({self.identity.name})"


# -- pure rules (tested directly) ------------------------------------------------------------


def needs_zlp(size_bytes: int, max_packet_bytes: int, *, requested: bool) -> bool:
    """Whether a write of ``size_bytes`` must be followed by a zero-length packet.

    Only when the protocol asked and the write ends on a packet boundary: a short last packet
    already terminates the transfer. ``requested`` with an empty write is an explicit ZLP.
    """
    return requested and max_packet_bytes > 0 and size_bytes % max_packet_bytes == 0


def read_request_bytes(wanted_bytes: int, max_packet_bytes: int) -> int:
    """How much one bulk read asks for: ``wanted_bytes`` rounded up to whole packets, capped.

    Never more than the rounding (see the module docstring: a bigger request can hang until
    its timeout on a device that waits for us after an exact number of packets).
    """
    packet = max_packet_bytes or 512
    rounded = -(-max(wanted_bytes, 1) // packet) * packet
    cap = max(packet, _MAX_TRANSFER_BYTES // packet * packet)
    return min(rounded, cap)


def map_usb_error(exc: BaseException, description: str, action: str) -> MtkfsError:
    """Turn a pyusb/libusb failure into the mtkfs error that says what happened and what to do."""
    if isinstance(exc, usb.core.NoBackendError):
        return SourceError("libusb-1.0 is not installed (Debian/Ubuntu: apt install libusb-1.0-0)")
    code = getattr(exc, "errno", None)
    if isinstance(exc, usb.core.USBTimeoutError) or code == errno.ETIMEDOUT:
        return TransportTimeout(f"{description}: USB timeout while {action}")
    if code == errno.ENODEV:
        return DeviceGoneError(
            f"{description}: device gone while {action} (unplugged, rebooted, or re-enumerated "
            "in another mode)"
        )
    if code == errno.EPIPE:
        return DeviceGoneError(
            f"{description}: endpoint stalled while {action} (the phone stopped talking; "
            "replug it in BROM/preloader mode)"
        )
    if code == errno.EACCES:
        return SourceError(f"{description}: {PERMISSION_HINT}")
    if code == errno.EBUSY:
        return SourceError(
            f"{description}: the interface is claimed by another program "
            "(another mtkfs? mtkclient? SP Flash Tool?)"
        )
    return TransportError(f"{description}: USB error while {action}: {exc}")


# -- discovery ---------------------------------------------------------------------------------


def _port_path(dev: UsbDevice) -> str:
    try:
        ports = getattr(dev, "port_numbers", None)
    except (usb.core.USBError, NotImplementedError):
        ports = None
    if not ports:
        return ""
    return f"{dev.bus}-" + ".".join(str(p) for p in ports)


def _candidate(dev: UsbDevice, identity: UsbIdentity) -> UsbCandidate:
    return UsbCandidate(identity, dev.bus or 0, dev.address or 0, _port_path(dev), dev)


def find_mtk_devices() -> list[UsbCandidate]:
    """Every attached device whose VID:PID is in :data:`USB_IDENTITIES` (blocking: sysfs).

    Reads descriptors only; no device is opened, so it is cheap enough to poll.
    """
    try:
        found = usb.core.find(
            find_all=True, custom_match=lambda d: identity_of(d.idVendor, d.idProduct) is not None
        )
        devices: list[UsbDevice] = list(found or ())
    except (usb.core.NoBackendError, usb.core.USBError) as exc:
        raise map_usb_error(exc, "USB", "listing devices") from exc
    return [
        _candidate(dev, identity)
        for dev in devices
        if (identity := identity_of(dev.idVendor, dev.idProduct)) is not None
    ]


async def wait_for_device(
    timeout_s: float,
    poll_s: float = 0.05,
    *,
    port_path: str | None = None,
    modes: frozenset[UsbMode] | None = None,
) -> UsbCandidate:
    """Poll for a phone until one appears (``--wait``); returns it for :meth:`UsbLink.open`.

    Polls fast (every 50 ms) because a preloader listens for only a second or two after it
    enumerates: open and handshake at once after this returns. SourceError after ``timeout_s``.
    """
    with trio.move_on_after(timeout_s):
        while True:
            for candidate in await trio.to_thread.run_sync(find_mtk_devices):
                if port_path is not None and candidate.port_path != port_path:
                    continue
                if modes is not None and candidate.mode not in modes:
                    continue
                log.info("found %s", candidate.description)
                return candidate
            await trio.sleep(poll_s)
    where = f" on port {port_path}" if port_path else ""
    raise SourceError(
        f"no MediaTek phone in BROM/preloader mode appeared{where} within {timeout_s:g} s "
        "(power it off, then plug it in while holding Volume-Down for BROM; check 'lsusb' for "
        + ", ".join(str(i) for i in USB_IDENTITIES[:3])
        + ")"
    )


# -- the link ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CdcEndpoints:
    """Where a phone's bulk pipe is: interface numbers, endpoint addresses, packet sizes."""

    comm_interface: int | None
    data_interface: int
    data_alt_setting: int
    ep_in: int
    ep_out: int
    in_packet_bytes: int
    out_packet_bytes: int


def _is_bulk(ep: UsbEndpoint) -> bool:
    return ep.bmAttributes & 0x03 == 0x02


def find_endpoints(config: UsbConfiguration) -> CdcEndpoints:
    """The CDC data interface (class 0x0A) with one bulk IN and one bulk OUT endpoint, and the
    communications interface (class 0x02) if there is one. SourceError if there is no data pipe.
    """
    comm: int | None = None
    data: tuple[UsbInterface, UsbEndpoint, UsbEndpoint] | None = None
    for intf in config.interfaces():
        if intf.bInterfaceClass == _CLASS_COMM and comm is None:
            comm = intf.bInterfaceNumber
        if intf.bInterfaceClass != _CLASS_CDC_DATA or data is not None:
            continue
        bulk = [ep for ep in intf.endpoints() if _is_bulk(ep)]
        ins = [ep for ep in bulk if ep.bEndpointAddress & 0x80]
        outs = [ep for ep in bulk if not ep.bEndpointAddress & 0x80]
        if ins and outs:
            data = (intf, ins[0], outs[0])
    if data is None:
        raise SourceError("the USB device has no CDC data interface with bulk IN and OUT")
    intf, ep_in, ep_out = data
    return CdcEndpoints(
        comm_interface=comm,
        data_interface=intf.bInterfaceNumber,
        data_alt_setting=intf.bAlternateSetting,
        ep_in=ep_in.bEndpointAddress,
        ep_out=ep_out.bEndpointAddress,
        in_packet_bytes=ep_in.wMaxPacketSize,
        out_packet_bytes=ep_out.wMaxPacketSize,
    )


class UsbLink(Link):
    """Bulk IN/OUT of a phone's CDC data interface. Open with :meth:`open`."""

    def __init__(
        self,
        dev: UsbDevice,
        endpoints: CdcEndpoints,
        description: str,
        *,
        limiter: trio.CapacityLimiter | None = None,
        detached: Sequence[int] = (),
        claimed: Sequence[int] = (),
    ) -> None:
        """Wrap a device :meth:`open` has set up; ``detached``/``claimed`` are undone on close."""
        self._dev = dev
        self._eps = endpoints
        self.description = description
        self.max_packet_bytes = endpoints.out_packet_bytes
        self.write_timeout_s = 5.0  # per ≤ 1 MiB piece: a device that stops reading
        self._rx = bytearray()
        self._limiter = limiter if limiter is not None else trio.CapacityLimiter(1)
        self._detached = list(detached)
        self._claimed = list(claimed)
        self._closed = False

    @classmethod
    async def open(
        cls,
        target: UsbCandidate | UsbDevice | None = None,
        *,
        bus: int | None = None,
        address: int | None = None,
        port_path: str | None = None,
    ) -> UsbLink:
        """Open a phone: a candidate from :func:`wait_for_device`, a pyusb device, the device at
        ``bus``/``address`` (any VID:PID: for phones missing from the table), the phone on
        ``port_path``, or the only phone attached. Detaches cdc_acm, claims the interfaces and
        sends the CDC line setup.
        """
        if isinstance(target, UsbCandidate):
            dev, description = target.device, target.description
        elif target is not None:
            dev, description = target, _describe(target)
        else:
            dev, description = await trio.to_thread.run_sync(_select, bus, address, port_path)
        where = _port_path(dev)
        limiter = trio.CapacityLimiter(1)  # the device's one worker thread, from the start
        try:
            endpoints, detached, claimed = await trio.to_thread.run_sync(
                _setup, dev, limiter=limiter
            )
        except (usb.core.USBError, usb.core.NoBackendError) as exc:
            raise map_usb_error(exc, description, "opening") from exc
        link = cls(dev, endpoints, description, limiter=limiter, detached=detached, claimed=claimed)
        link.port_path = where
        log.debug(
            "%s: data interface %d, IN 0x%02x OUT 0x%02x, %d-byte packets",
            description,
            endpoints.data_interface,
            endpoints.ep_in,
            endpoints.ep_out,
            endpoints.out_packet_bytes,
        )
        return link

    async def _call(self, action: str, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise DeviceGoneError(f"{self.description}: link closed")
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except (usb.core.USBError, usb.core.NoBackendError) as exc:
            raise map_usb_error(exc, self.description, action) from exc

    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        """Bulk-write ``data`` in ≤ 1 MiB transfers, then a ZLP if :func:`needs_zlp` says so."""
        view = memoryview(data)
        timeout_ms = _timeout_ms(self.write_timeout_s)
        sent = 0
        while sent < len(view):
            piece = view[sent : sent + _MAX_TRANSFER_BYTES]
            written = await self._call("writing", self._write, piece, timeout_ms)
            if written <= 0:
                raise TransportError(f"{self.description}: bulk write accepted no bytes")
            sent += written
        if needs_zlp(len(view), self.max_packet_bytes, requested=zlp):
            await self._call("writing", self._write, view[:0], timeout_ms)
        elif not view:
            await trio.lowlevel.checkpoint()

    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        """Read exactly ``size`` bytes within ``timeout_s``; surplus stays buffered."""
        deadline = trio.current_time() + timeout_s
        while len(self._rx) < size:
            remaining_s = deadline - trio.current_time()
            if remaining_s <= 0:
                raise self._timed_out(size, timeout_s)
            request = read_request_bytes(size - len(self._rx), self._eps.in_packet_bytes)
            timeout_ms = _timeout_ms(min(remaining_s, _CALL_SLICE_S))
            try:
                chunk = await self._call("reading", self._read, request, timeout_ms)
            except TransportTimeout:
                if remaining_s <= _CALL_SLICE_S:
                    raise self._timed_out(size, timeout_s) from None
                continue  # a slice of a long wait ran out; wait on
            self._rx += chunk
        data = bytes(self._rx[:size])
        del self._rx[:size]
        if not size:
            await trio.lowlevel.checkpoint()
        return data

    def _timed_out(self, size: int, timeout_s: float) -> TransportTimeout:
        return TransportTimeout(
            f"{self.description}: {size} bytes did not come within {timeout_s:g} s "
            f"({len(self._rx)} came)"
        )

    def _write(self, piece: memoryview, timeout_ms: int) -> int:
        buffer = array.array("B")
        buffer.frombytes(piece)  # pyusb would convert a memoryview byte by byte
        return self._dev.write(self._eps.ep_out, buffer, timeout_ms)

    def _read(self, request_bytes: int, timeout_ms: int) -> bytes:
        return bytes(self._dev.read(self._eps.ep_in, request_bytes, timeout_ms))

    can_reenumerate = True
    #: The physical port (``1-4.2``): what survives a re-enumeration ("" if unknown).
    port_path = ""

    async def reenumerated(self, timeout_s: float) -> UsbLink:
        """After SWITCH_USB_SPEED the phone leaves the bus and comes back at high speed, with a
        new address (and, for the DA, PID 0x2001): find it again on the same port and open it.
        """
        await self.aclose()
        if not self.port_path:
            raise DeviceGoneError(
                f"{self.description}: re-enumerated, but its USB port is unknown: replug it"
            )
        # The old device stays listed for a moment after it leaves: wait for a new address.
        old_address = self._dev.address
        with trio.move_on_after(timeout_s):
            while True:
                for candidate in await trio.to_thread.run_sync(find_mtk_devices):
                    if candidate.port_path == self.port_path and candidate.address != old_address:
                        return await UsbLink.open(candidate)
                await trio.sleep(0.05)
        raise DeviceGoneError(
            f"{self.description} switched to USB high speed but did not come back on port "
            f"{self.port_path} within {timeout_s:g} s: replug the phone"
        )

    async def aclose(self) -> None:
        """Release the interfaces and give them back to cdc_acm; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        # After any call in flight (the limiter); none can start now that _closed is set.
        await trio.to_thread.run_sync(self._release, limiter=self._limiter)

    def _release(self) -> None:
        for number in self._claimed:
            _quietly(usb.util.release_interface, self._dev, number)
        for number in self._detached:
            _quietly(self._dev.attach_kernel_driver, number)
        _quietly(usb.util.dispose_resources, self._dev)


def _timeout_ms(timeout_s: float) -> int:
    """libusb milliseconds; never 0 (libusb's "forever"), never infinite."""
    if not math.isfinite(timeout_s):
        timeout_s = _CALL_SLICE_S
    return max(1, math.ceil(timeout_s * 1000))


def _quietly(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except (usb.core.USBError, NotImplementedError, ValueError) as exc:
        log.debug("ignored while closing: %s", exc)


def _describe(dev: UsbDevice) -> str:
    identity = identity_of(dev.idVendor, dev.idProduct)
    if identity is not None:
        return _candidate(dev, identity).description
    return f"USB {dev.idVendor:04x}:{dev.idProduct:04x} bus {dev.bus} address {dev.address}"


def _select(bus: int | None, address: int | None, port_path: str | None) -> tuple[UsbDevice, str]:
    """Pick the device to open (blocking: enumerates). SourceError if none or several."""
    if bus is not None and address is not None:
        try:
            dev: UsbDevice | None = usb.core.find(bus=bus, address=address)
        except (usb.core.NoBackendError, usb.core.USBError) as exc:
            raise map_usb_error(exc, "USB", "listing devices") from exc
        if dev is None:
            raise SourceError(f"no USB device at bus {bus} address {address}")
        if identity_of(dev.idVendor, dev.idProduct) is None:
            log.warning("%s is not a known MediaTek download-mode identity", _describe(dev))
        return dev, _describe(dev)
    candidates = [c for c in find_mtk_devices() if port_path is None or c.port_path == port_path]
    if not candidates:
        where = f" on port {port_path}" if port_path else ""
        raise SourceError(
            f"no MediaTek phone in BROM/preloader mode found{where} "
            "(plug it in switched off and run the command at once: a preloader listens for "
            "only a few seconds)"
        )
    if len(candidates) > 1:
        listing = "; ".join(c.description for c in candidates)
        raise SourceError(f"several MediaTek phones attached ({listing}): pick one by USB port")
    return candidates[0].device, candidates[0].description


def _setup(dev: UsbDevice) -> tuple[CdcEndpoints, list[int], list[int]]:
    """Configure, detach kernel drivers, claim, line setup (blocking; in the worker thread)."""
    try:
        config = dev.get_active_configuration()
    except usb.core.USBError as exc:
        if exc.errno in (errno.EACCES, errno.ENODEV):
            raise
        dev.set_configuration()  # unconfigured device: take its first configuration
        config = dev.get_active_configuration()
    eps = find_endpoints(config)
    interfaces = [n for n in (eps.comm_interface, eps.data_interface) if n is not None]
    detached: list[int] = []
    for number in interfaces:
        try:
            if dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
                detached.append(number)
        except NotImplementedError:  # not Linux: no kernel driver to detach
            pass
    claimed: list[int] = []
    for number in interfaces:
        try:
            usb.util.claim_interface(dev, number)
            claimed.append(number)
        except usb.core.USBError:
            if number == eps.data_interface:
                raise
            log.debug("could not claim communications interface %d; going on", number)
    if eps.data_alt_setting:  # the bulk pair lives in an alternate setting: select it
        dev.set_interface_altsetting(eps.data_interface, eps.data_alt_setting)
    control_index = eps.comm_interface if eps.comm_interface is not None else 0
    for request, value, payload in (
        (0x20, 0, _LINE_CODING),  # SET_LINE_CODING
        (0x22, _CONTROL_LINE_STATE, None),  # SET_CONTROL_LINE_STATE
    ):
        try:
            dev.ctrl_transfer(0x21, request, value, control_index, payload, _CONTROL_TIMEOUT_MS)
        except usb.core.USBError as exc:  # ignored, as mtkclient does: many firmwares STALL it
            log.debug("CDC request 0x%02x ignored: %s", request, exc)
    return eps, detached, claimed
