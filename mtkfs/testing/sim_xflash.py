"""A simulated XFlash Download Agent (DA1 + DA2), device side, speaking the real byte protocol.

It stands in for a phone after BROM's JUMP_DA: it sends DA1's 0xC0, answers the bring-up, serves
device-control queries, INIT_EXT_RAM, BOOT_TO, READ_DATA, WRITE_DATA, SWITCH_USB_SPEED and
SHUTDOWN frame by frame as :mod:`mtkfs.protocols.da_xflash` describes them, from a
:class:`FlashStore` — in memory (sparse, so a 15 GB user area costs nothing) or a folder of readback
images (``Boot1``/``Boot2``/``User``, read with ``pread``, never loaded whole).

:meth:`XFlashSim.serve` is a device generator (:mod:`mtkfs.protocols.base`): ``run_pair`` runs it
against a host operation in memory, ``mtkfs.links.base.run_device`` over any link (memory, pty).
Like a phone, the simulator keeps its state between runs: after SWITCH_USB_SPEED the generator
ends (the phone re-enumerates) and the next ``serve()`` continues in stage 2 without a handshake.

A host that breaks the protocol (bad magic, a frame too long, an ack that is not an ack) makes the
simulator raise LocalProtocolError naming what it got — in a test, the host's bug surfaces where
it happened instead of as a hang. Faults (:class:`SimFaults`) make it misbehave the ways phones do:
corrupt or failed read chunks, a stall (it stops answering), a disconnect mid-read (the generator
ends), wrong statuses, writes acknowledged but lost or altered.
"""

from __future__ import annotations

import abc
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from mtkfs.errors import LocalProtocolError, SourceError
from mtkfs.protocols.base import Op, Recv, Send, byte_sum16, recv_exact
from mtkfs.protocols.da_xflash import (
    DT_PROTOCOL_FLOW,
    HEADER_BYTES,
    MAGIC,
    SYNC_SIGNAL,
    Cmd,
    Ctrl,
    send_frame,
)
from mtkfs.protocols.preloader_emi import extract_emi
from mtkfs.protocols.xflash_status import (
    STATUS_CHECKSUM_ERROR,
    STATUS_DL_FORBIDDEN,
    STATUS_EMI_VERSION,
    STATUS_EXCEED_RANGE,
    STATUS_MMC_ERROR,
    STATUS_PARTITION_NOT_FOUND,
    STATUS_UNKNOWN_STORAGE,
    STATUS_UNSUPPORTED_CMD,
    STATUS_UNSUPPORTED_CTRL,
)
from mtkfs.protocols.xflash_storage import STORAGE_IDS, region_address
from mtkfs.transports.image import region_for_file_name

__all__ = [
    "FlashStore",
    "ImageFilesStore",
    "MemoryStore",
    "SimFaults",
    "XFlashSim",
    "boot1_emi",
]

_U32 = struct.Struct("<I")
#: Regions a storage kind reports, in the order of its GET_*_INFO record.
_REGIONS = {
    "emmc": ("boot1", "boot2", "rpmb", "gp1", "gp2", "gp3", "gp4", "user"),
    "ufs": ("lu0", "lu1", "lu2"),
    "nand": ("flash",),
    "nor": ("flash",),
}
#: Largest frame the simulated DA accepts from the host outside of data chunks (DA2 images
#: included): a real DA's buffers are bounded too.
_MAX_HOST_FRAME_BYTES = 32 * 1024 * 1024
_STATUS_INVALID_PARAMETERS = 0xC0030007
#: How much of boot1 :func:`boot1_emi` looks at: a whole Boot1 area on most eMMCs.
_BOOT1_SCAN_BYTES = 4 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Backing stores
# ---------------------------------------------------------------------------------------------


class FlashStore(abc.ABC):
    """The simulated phone's flash: named regions of fixed sizes.

    Attributes:
        kind: ``emmc`` (regions boot1, boot2, rpmb, gp1-4, user), ``ufs`` (lu0-lu2), ``nand`` or
            ``nor`` (one region ``flash``).
    """

    kind: str = "emmc"

    @abc.abstractmethod
    def region_sizes(self) -> Mapping[str, int]:
        """Region name → size in bytes."""

    @abc.abstractmethod
    def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """Exactly ``size_bytes`` (the simulator checks bounds before asking)."""

    @abc.abstractmethod
    def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """Store ``data`` (within bounds)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release files; idempotent."""

    def __enter__(self) -> FlashStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemoryStore(FlashStore):
    """Regions in memory, sparse: pages never written read as zeros and cost nothing, so tests can
    simulate a realistic 15 GB user area holding a GPT and a few partitions."""

    PAGE_BYTES = 64 * 1024

    def __init__(
        self,
        sizes: Mapping[str, int],
        *,
        kind: str = "emmc",
        content: Mapping[str, bytes] | None = None,
    ) -> None:
        unknown = set(sizes) - set(_REGIONS[kind])
        if unknown:
            raise ValueError(f"{kind} has no regions {sorted(unknown)}")
        self.kind = kind
        self._sizes = dict(sizes)
        self._pages: dict[tuple[str, int], bytearray] = {}
        for region, data in (content or {}).items():
            self.write(region, 0, data)

    @classmethod
    def from_bytes(cls, regions: Mapping[str, bytes], *, kind: str = "emmc") -> MemoryStore:
        """A store whose regions are exactly these bytes."""
        return cls({name: len(data) for name, data in regions.items()}, kind=kind, content=regions)

    def region_sizes(self) -> Mapping[str, int]:
        return self._sizes

    def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        out = bytearray()
        end = offset_bytes + size_bytes
        pos = offset_bytes
        while pos < end:
            index, within = divmod(pos, self.PAGE_BYTES)
            take = min(self.PAGE_BYTES - within, end - pos)
            page = self._pages.get((region, index))
            out += page[within : within + take] if page is not None else bytes(take)
            pos += take
        return bytes(out)

    def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        if offset_bytes + len(data) > self._sizes[region]:
            raise ValueError(f"write past the end of {region}")
        done = 0
        while done < len(data):
            index, within = divmod(offset_bytes + done, self.PAGE_BYTES)
            take = min(self.PAGE_BYTES - within, len(data) - done)
            page = self._pages.setdefault((region, index), bytearray(self.PAGE_BYTES))
            page[within : within + take] = data[done : done + take]
            done += take


class ImageFilesStore(FlashStore):
    """Regions backed by image files (``pread``/``pwrite`` on one fd each; sparse files stay
    sparse, nothing is loaded whole).

    ``writable=False`` opens the files read-only and refuses writes, so a session-wide fixture
    image cannot be changed by accident.
    """

    def __init__(
        self, files: Mapping[str, Path], *, kind: str = "emmc", writable: bool = False
    ) -> None:
        unknown = set(files) - set(_REGIONS[kind])
        if unknown:
            raise ValueError(f"{kind} has no regions {sorted(unknown)}")
        self.kind = kind
        self.writable = writable
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        try:
            for region, path in files.items():
                fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
                self._fds[region] = fd
                self._sizes[region] = os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_folder(cls, folder: Path, *, writable: bool = False) -> ImageFilesStore:
        """An eMMC from a readback folder: ``Boot1``, ``Boot2``, ``User``, ``RPMB`` (any case,
        optional ``.bin``/``.img``) or ``mmcblk0*.img``, named as ``mtkfs.transports.image``
        names them."""
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            region = region_for_file_name(path.name)
            if region is not None and path.is_file():
                files.setdefault(region, path)
        if not files:
            raise ValueError(f"{folder} holds no readback files (Boot1, Boot2, User, LU0…)")
        kind = "ufs" if any(name.startswith("lu") for name in files) else "emmc"
        return cls(files, kind=kind, writable=writable)

    def region_sizes(self) -> Mapping[str, int]:
        return self._sizes

    def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        data = os.pread(self._fds[region], size_bytes, offset_bytes)
        while len(data) < size_bytes:  # short reads happen; past EOF cannot (bounds checked)
            more = os.pread(self._fds[region], size_bytes - len(data), offset_bytes + len(data))
            if not more:
                raise OSError(f"{region}: image shrank under the simulator")
            data += more
        return data

    def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        if not self.writable:
            raise PermissionError(f"{region}: image opened read-only")
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fds[region], view, offset_bytes)
            view, offset_bytes = view[written:], offset_bytes + written

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


@dataclass
class SimFaults:
    """Ways to misbehave. Chunk numbers count from 1 over the simulator's life (so "the 5th
    chunk" may fall in the second READ_DATA); 0 = never.

    Attributes:
        corrupt_read_chunk: send that read chunk with one bit flipped (no checksum catches it).
        fail_read_chunk: send a 4-byte error flag (MMC error) instead of that chunk.
        stall_read_chunk: stop sending before that chunk (keeps swallowing host bytes).
        disconnect_read_chunk: end the generator before that chunk (the cable is pulled).
        corrupt_write_chunk: store that written chunk with one bit flipped, report success.
        drop_write_chunk: report success for that written chunk, store nothing.
        statuses: command id or ctrl code → the status to answer it with instead of OK (the
            first status after the command or ctrl-code frame).
        final_statuses: command id → the status its *last* status frame carries (INIT_EXT_RAM
            after the EMI blob, BOOT_TO once stage 2 should run, WRITE_DATA's final, SHUTDOWN).
    """

    corrupt_read_chunk: int = 0
    fail_read_chunk: int = 0
    stall_read_chunk: int = 0
    disconnect_read_chunk: int = 0
    corrupt_write_chunk: int = 0
    drop_write_chunk: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    final_statuses: dict[int, int] = field(default_factory=dict)


def boot1_emi(store: FlashStore) -> bytes | None:
    """The EMI settings (XFlash INIT_EXT_RAM blob) of the preloader in ``store``'s boot1, None
    when it has no boot1 or no readable EMI section: what ``XFlashSim(expected_emi=…)`` wants
    to make the simulated phone accept only its own DRAM settings."""
    size = store.region_sizes().get("boot1", 0)
    if not size:
        return None
    try:
        return extract_emi(store.read("boot1", 0, min(size, _BOOT1_SCAN_BYTES)), "boot1").blob
    except SourceError:
        return None


def recv_host_frame(max_bytes: int, what: str, who: str = "simulated DA") -> Op[bytes]:
    """The device side of the XFlash frame (the XML DA's too): a strict simulator names what
    the host got wrong instead of waiting on bytes that will never make sense."""
    header = yield from recv_exact(HEADER_BYTES)
    magic, data_type, length = struct.unpack("<III", header)
    if magic != MAGIC or data_type != DT_PROTOCOL_FLOW:
        raise LocalProtocolError(
            f"{who}, {what}: host sent header {header.hex(' ')} (bad magic or type)"
        )
    if length > max_bytes:
        raise LocalProtocolError(
            f"{who}, {what}: host frame of {length} bytes, at most {max_bytes} allowed"
        )
    return (yield from recv_exact(length)) if length else b""


class _Disconnect(Exception):
    """Internal: end the session as if the cable was pulled."""


def _status(value: int) -> Op[None]:
    yield from send_frame(_U32.pack(value))


def _stall() -> Op[None]:
    """A hung device: it reads whatever comes and never answers again."""
    while True:
        yield Recv(1)


# ---------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------


class XFlashSim:
    """One simulated phone running an XFlash DA.

    Args:
        store: its flash.
        connection_agent: ``"preloader"`` (DRAM up) or ``"brom"`` (BOOT_TO hangs unless
            INIT_EXT_RAM came first, as a DA2 without DRAM does).
        sla_enabled: SLA_ENABLED_STATUS answers 1 and READ/WRITE are refused (download
            forbidden) — a DA that wants a signed challenge.
        write_packet_bytes / read_packet_bytes: GET_PACKET_LENGTH; chunk sizes of WRITE_DATA /
            READ_DATA. ``read_packet_bytes=None``: 64 KiB for a Linux host (SETUP_ENVIRONMENT
            system_os 1) and 2 MiB otherwise, as one MediaTek DA source sets them.
        usb_speed: GET_USB_SPEED's answer; SWITCH_USB_SPEED makes it ``high-speed``.
        boot_to_reply: the status DA2 announces itself with (SYNC or 0; clients accept both).
        expected_emi: the phone's own EMI settings (see :func:`boot1_emi`): INIT_EXT_RAM with
            any other settings fails (EMI setting error) and DRAM stays off, as a wrong
            preloader makes a real phone fail. None accepts any settings.
        faults: misbehaviour, changeable between runs.

    Attributes a test may inspect: ``stage`` (0 not started, 1 DA1, 2 DA2), ``env`` (the five
    SETUP_ENVIRONMENT words), ``emi``, ``da2``, ``checksum_level``, ``commands`` (every command
    id and ctrl code received, in order), ``data_frame_sizes`` (sizes of the WRITE_DATA data
    frames received), ``shut_down``.
    """

    def __init__(
        self,
        store: FlashStore,
        *,
        connection_agent: str = "preloader",
        sla_enabled: bool = False,
        write_packet_bytes: int = 2 * 1024 * 1024,
        read_packet_bytes: int | None = None,
        usb_speed: str = "high-speed",
        boot_to_reply: int = SYNC_SIGNAL,
        chip_id: tuple[int, int, int, int, int] = (0x6765, 0x8A00, 0xCA00, 0x0000, 0x0000),
        da_version: str = "mtkfs-sim 1.0",
        verify_write_checksum: bool = True,
        faults: SimFaults | None = None,
        expected_emi: bytes | None = None,
    ) -> None:
        if connection_agent not in ("brom", "preloader"):
            raise ValueError(f"connection_agent {connection_agent!r}")
        self.store = store
        self.connection_agent = connection_agent
        self.sla_enabled = sla_enabled
        self.write_packet_bytes = write_packet_bytes
        self._read_packet_bytes = read_packet_bytes
        self.usb_speed = usb_speed
        self.boot_to_reply = boot_to_reply
        self.chip_id = chip_id
        self.da_version = da_version
        self.verify_write_checksum = verify_write_checksum
        self.faults = faults or SimFaults()
        self.expected_emi = expected_emi
        self.stage = 0
        self.env: tuple[int, ...] = ()
        self.emi = b""
        self.da2 = b""
        self.dram_ready = connection_agent == "preloader"
        self.checksum_level = 0
        self.commands: list[int] = []
        self.data_frame_sizes: list[int] = []
        self.shut_down = False
        self._read_chunks = 0
        self._write_chunks = 0

    @property
    def read_packet_bytes(self) -> int:
        if self._read_packet_bytes is not None:
            return self._read_packet_bytes
        linux = len(self.env) >= 3 and self.env[2] == 1
        return 64 * 1024 if linux else 2 * 1024 * 1024

    # -- plumbing ------------------------------------------------------------------------------

    def _recv_frame(self, max_bytes: int, what: str) -> Op[bytes]:
        return (yield from recv_host_frame(max_bytes, what))

    def _recv_u32(self, what: str) -> Op[int]:
        data = yield from self._recv_frame(4, what)
        if len(data) != 4:
            raise LocalProtocolError(f"simulated DA, {what}: expected a u32, got {data.hex()}")
        value: int = _U32.unpack(data)[0]
        return value

    def _first_status(self, code: int) -> Op[bool]:
        """Answer a command/ctrl frame: OK, or the injected status (then False: stop there)."""
        status = self.faults.statuses.get(code, 0)
        yield from _status(status)
        return status == 0

    def _final(self, cmd: int, value: int = 0) -> int:
        return self.faults.final_statuses.get(cmd, value)

    # -- session -------------------------------------------------------------------------------

    def serve(self) -> Op[None]:
        """Run until SHUTDOWN, SWITCH_USB_SPEED or an injected disconnect."""
        if self.shut_down:
            return
        try:
            if self.stage == 0:
                yield Send(b"\xc0")
                yield from self._bring_up()
                self.stage = 1
            while True:
                cmd = yield from self._recv_u32("command")
                self.commands.append(cmd)
                if not (yield from self._dispatch(cmd)):
                    return
        except _Disconnect:
            return

    def _bring_up(self) -> Op[None]:
        if (yield from self._recv_u32("sync")) != SYNC_SIGNAL:
            raise LocalProtocolError("simulated DA1: the host's first frame is not SYNC_SIGNAL")
        for cmd, size in ((Cmd.SETUP_ENVIRONMENT, 20), (Cmd.SETUP_HW_INIT_PARAMS, 4)):
            got = yield from self._recv_u32(cmd.name)
            if got != cmd:
                raise LocalProtocolError(f"simulated DA1: expected {cmd.name}, got 0x{got:X}")
            param = yield from self._recv_frame(64, cmd.name + " parameter")
            if len(param) != size:
                raise LocalProtocolError(f"simulated DA1: {cmd.name} with {len(param)} bytes")
            if cmd == Cmd.SETUP_ENVIRONMENT:
                self.env = struct.unpack("<5I", param)
            yield from _status(0)
        yield from _status(SYNC_SIGNAL)

    def _dispatch(self, cmd: int) -> Op[bool]:
        """Serve one command; False ends the session."""
        handlers: dict[int, Callable[[], Op[None]]] = {
            Cmd.DEVICE_CTRL: self._device_ctrl,
            Cmd.INIT_EXT_RAM: self._init_ext_ram,
            Cmd.BOOT_TO: self._boot_to,
            Cmd.READ_DATA: self._read_data,
            Cmd.WRITE_DATA: self._write_data,
        }
        if cmd in (Cmd.READ_DATA, Cmd.WRITE_DATA) and self.stage < 2:
            yield from _status(STATUS_UNSUPPORTED_CMD)  # storage I/O is DA2's
            return True
        if cmd in handlers:
            yield from handlers[cmd]()
            return True
        if cmd in (Cmd.SHUTDOWN, Cmd.SWITCH_USB_SPEED):
            if not (yield from self._first_status(cmd)):
                return True
            param = yield from self._recv_frame(64, Cmd(cmd).name + " parameter")
            status = self._final(cmd)
            yield from _status(status)
            if status:
                return True
            if cmd == Cmd.SHUTDOWN:
                if len(param) < 28:
                    raise LocalProtocolError(f"simulated DA: SHUTDOWN with {len(param)} bytes")
                self.shut_down = True
            else:
                self.usb_speed = "high-speed"
            return False  # powered off, or re-enumerating at high speed
        yield from _status(STATUS_UNSUPPORTED_CMD)
        return True

    # -- commands ------------------------------------------------------------------------------

    def _device_ctrl(self) -> Op[None]:
        yield from _status(0)
        ctrl = yield from self._recv_u32("ctrl code")
        self.commands.append(ctrl)
        setters = (
            Ctrl.SET_CHECKSUM_LEVEL,
            Ctrl.SET_RESET_KEY,
            Ctrl.SET_BATTERY_OPT,
            Ctrl.SET_META_BOOT_MODE,
        )
        answer = self._get_ctrl(ctrl)
        if ctrl in setters:
            if not (yield from self._first_status(ctrl)):
                return
            param = yield from self._recv_frame(256, "set-ctrl parameter")
            if ctrl == Ctrl.SET_CHECKSUM_LEVEL and len(param) == 4:
                self.checksum_level = _U32.unpack(param)[0]
            yield from _status(0)
        elif answer is None:
            yield from _status(STATUS_UNSUPPORTED_CTRL)
        elif (yield from self._first_status(ctrl)):
            yield from send_frame(answer)
            yield from _status(0)

    def _get_ctrl(self, ctrl: int) -> bytes | None:
        """A get-ctrl's answer, None for codes this DA does not know."""
        sizes = self.store.region_sizes()
        kind = self.store.kind
        if ctrl == Ctrl.GET_EMMC_INFO:
            record = struct.pack("<II8Q", 1, 512, *(sizes.get(r, 0) for r in _REGIONS["emmc"]))
            return (record + b"SIMEMMC-CID-0001" + bytes(16)) if kind == "emmc" else bytes(104)
        if ctrl == Ctrl.GET_UFS_INFO:
            record = struct.pack("<II3Q", 1, 4096, *(sizes.get(r, 0) for r in _REGIONS["ufs"]))
            return (record + b"SIMUFS-CID-00001" + bytes(120)) if kind == "ufs" else bytes(168)
        if ctrl == Ctrl.GET_NAND_INFO:
            size = sizes.get("flash", 0)
            record = struct.pack(
                "<4I2QB12s", 1, 2048, 128 * 1024, 64, size, size, 0, b"SIMNAND-ID01"
            )
            return record if kind == "nand" else bytes(len(record))
        if ctrl == Ctrl.GET_NOR_INFO:
            record = struct.pack("<IIQ", 1, 256, sizes.get("flash", 0))
            return record if kind == "nor" else bytes(16)
        simple: dict[int, bytes] = {
            Ctrl.GET_CONNECTION_AGENT: self.connection_agent.encode(),
            Ctrl.GET_PACKET_LENGTH: struct.pack(
                "<II", self.write_packet_bytes, self.read_packet_bytes
            ),
            Ctrl.GET_USB_SPEED: self.usb_speed.encode(),
            Ctrl.GET_CHIP_ID: struct.pack("<5H", *self.chip_id),
            Ctrl.GET_DA_VERSION: self.da_version.encode(),
            Ctrl.SLA_ENABLED_STATUS: _U32.pack(int(self.sla_enabled)),
            Ctrl.GET_RANDOM_ID: bytes(range(16)),
            Ctrl.GET_RAM_INFO: struct.pack(
                "<6I", 0, 0x200000, 0x40000, 1, 0x40000000, 0x80000000 if self.dram_ready else 0
            ),
        }
        return simple.get(ctrl)

    def _init_ext_ram(self) -> Op[None]:
        if not (yield from self._first_status(Cmd.INIT_EXT_RAM)):
            return
        size = yield from self._recv_u32("EMI length")
        emi = yield from self._recv_frame(size, "EMI settings")
        if len(emi) != size or not emi:
            raise LocalProtocolError(f"simulated DA: EMI of {len(emi)} bytes, {size} announced")
        status = self._final(Cmd.INIT_EXT_RAM)
        if status == 0 and self.expected_emi is not None and emi != self.expected_emi:
            status = STATUS_EMI_VERSION  # DRAM calibration fails with another phone's settings
        yield from _status(status)
        if status == 0:
            self.emi, self.dram_ready = emi, True

    def _boot_to(self) -> Op[None]:
        if not (yield from self._first_status(Cmd.BOOT_TO)):
            return
        param = yield from self._recv_frame(16, "BOOT_TO address")
        if len(param) != 16:
            raise LocalProtocolError(f"simulated DA: BOOT_TO parameter of {len(param)} bytes")
        _addr, size = struct.unpack("<QQ", param)
        image = yield from self._recv_frame(min(size, _MAX_HOST_FRAME_BYTES), "BOOT_TO image")
        if len(image) != size:
            raise LocalProtocolError(f"simulated DA: BOOT_TO image of {len(image)}/{size} bytes")
        yield from _status(0)  # image received
        if not self.dram_ready:
            yield from _stall()  # stage 2 lives in DRAM, which nobody set up
        self.da2, self.stage = image, 2
        yield from _status(self._final(Cmd.BOOT_TO, self.boot_to_reply))

    def _address(self, what: str) -> Op[tuple[int, str, int, int]]:
        """Receive the 56-byte address; (status, region, offset, length) after checking it."""
        param = yield from self._recv_frame(64, what + " address")
        if len(param) != 56:
            raise LocalProtocolError(f"simulated DA: {what} address of {len(param)} bytes")
        storage, part, offset, length = struct.unpack_from("<IIQQ", param)
        kind = self.store.kind
        if storage != STORAGE_IDS[kind]:
            return STATUS_UNKNOWN_STORAGE, "", 0, 0
        for region in self.store.region_sizes():
            if region_address(kind, region)[1] == part:
                break
        else:
            return STATUS_PARTITION_NOT_FOUND, "", 0, 0
        if offset + length > self.store.region_sizes()[region]:
            return STATUS_EXCEED_RANGE, region, offset, length
        if self.sla_enabled:
            return STATUS_DL_FORBIDDEN, region, offset, length
        return 0, region, offset, length

    def _read_data(self) -> Op[None]:
        if not (yield from self._first_status(Cmd.READ_DATA)):
            return
        status, region, offset, length = yield from self._address("READ_DATA")
        yield from _status(0)  # parameter received
        yield from _status(status)
        if status:
            return
        done = 0
        faults = self.faults
        while done < length:
            self._read_chunks += 1
            number = self._read_chunks
            if number == faults.disconnect_read_chunk:
                raise _Disconnect
            if number == faults.stall_read_chunk:
                yield from _stall()
            if number == faults.fail_read_chunk:
                yield from _status(STATUS_MMC_ERROR)  # the 4-byte error flag…
                yield from _status(STATUS_MMC_ERROR)  # …and the status that ends the command
                return
            size = min(self.read_packet_bytes, length - done)
            chunk = self.store.read(region, offset + done, size)
            if number == faults.corrupt_read_chunk:
                chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
            yield from send_frame(chunk)
            ack = yield from self._recv_frame(4, "read ack")
            if ack != bytes(4):
                raise LocalProtocolError(f"simulated DA: read ack {ack.hex()} is not u32 0")
            yield from _status(0)
            done += size

    def _write_data(self) -> Op[None]:
        if not (yield from self._first_status(Cmd.WRITE_DATA)):
            return
        status, region, offset, length = yield from self._address("WRITE_DATA")
        if status == 0 and (offset % 512 or length % 512):
            status = _STATUS_INVALID_PARAMETERS  # mtkfs always sends whole sectors
        yield from _status(status)
        if status:
            return
        done = 0
        faults = self.faults
        while done < length:
            flag = yield from self._recv_u32("write chunk flag")
            checksum = yield from self._recv_u32("write chunk checksum")
            if flag != 0:
                raise LocalProtocolError(f"simulated DA: write chunk flag {flag}, not 0")
            limit = min(self.write_packet_bytes, length - done)
            chunk = yield from self._recv_frame(limit, "write chunk")
            self.data_frame_sizes.append(len(chunk))
            if not chunk:
                raise LocalProtocolError("simulated DA: empty write chunk")
            if self.verify_write_checksum and byte_sum16(chunk) != checksum:
                yield from _status(STATUS_CHECKSUM_ERROR)
                return
            self._write_chunks += 1
            if self._write_chunks == faults.corrupt_write_chunk:
                chunk = chunk[:-1] + bytes([chunk[-1] ^ 0x80])
            if self._write_chunks != faults.drop_write_chunk:
                self.store.write(region, offset + done, chunk)
            yield from _status(0)
            done += len(chunk)
        yield from _status(self._final(Cmd.WRITE_DATA))
