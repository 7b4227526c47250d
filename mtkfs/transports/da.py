"""A MediaTek phone in BROM or preloader mode, through its Download Agent, as regions.

What opening does, once per mount (never per read — mtkclient's re-handshakes are one of the
things users complain about):

1. BROM/preloader identification (:func:`mtkfs.protocols.brom.identify`): hw code, chip, mode,
   security bits; a device that needs authorisation stops here, before any DA byte is sent;
2. the user's DA file picks the agent for this chip (:mod:`mtkfs.protocols.dafile`); DA1 is
   uploaded (SEND_DA with its checksum checked) and started;
3. the DA session in the protocol the chip and DA file call for — XFlash, legacy or XML
   (:data:`CONNECTORS`, each behind :class:`mtkfs.protocols.da_session.DaSession`): bring-up,
   DRAM from the preloader's EMI settings when the DA came up from BROM, DA2, storage info;
   then, on a full-speed USB link, the switch to high speed.

The storage info's regions (eMMC boot1/boot2/rpmb/gp*/user, UFS LUs, NOR/NAND ``flash``) are the
transport's regions. Reads and writes are single DA commands of any length (the chunk cache
coalesces misses into commands of up to ``max_request_bytes``); one command at a time on the
link (a trio.Lock). No DA protocol has a checksum command, so verification reads back (the DA
reads the flash each time: nothing caches between us and the cells).

A command that fails half way (timeout, a cut link, garbage where a frame header belongs) leaves
nobody knowing where in the byte stream the DA is, so the session is dropped and none of that
command's bytes are delivered. When the transport was given a way to ``reopen`` the link (every
real source is), the next command reconnects — a new handshake, DA upload and bring-up with the
phone that came back — but only serves it if it is the *same* phone (ME ID and storage layout;
a chip that reports no ME ID is matched by chip and layout alone);
reads are retried that way a few times before a reader sees EIO. Writes are never retried here:
the commit pipeline above decides what a failed write means (its failsafe).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from mtkfs.errors import (
    MtkfsError,
    ReadOnlyError,
    ReconnectError,
    SourceError,
    TransportError,
    UsageError,
)
from mtkfs.links.base import Link, drive
from mtkfs.maps.detect import table_region_of
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.maps.names import clean_name, unique_names
from mtkfs.protocols import brom, da_legacy, da_xflash, da_xml
from mtkfs.protocols.base import Op
from mtkfs.protocols.da_session import DaSession
from mtkfs.protocols.dafile import MAX_DA_FILE_BYTES, DaEntry, DaFile, parse_da_file
from mtkfs.protocols.preloader_emi import EmiSettings, extract_emi
from mtkfs.transports.base import Transport
from mtkfs.units import human_size

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long the phone may stay silent where bytes are due (``--io-timeout``): each wait for one
#: frame — at most a DA packet, 1 MiB, ~25 ms over USB 2.0 — not a whole command.
DEFAULT_IO_TIMEOUT_S = 10.0
#: Attempts a read gets (reconnecting in between) before the reader sees EIO.
READ_ATTEMPTS = 3
#: Bring-ups a reconnect tries (a flaky link can fail one) before the command fails.
RECONNECT_ATTEMPTS = 2
#: After a failed reconnect, commands fail at once for this long instead of each trying again
#: (a kernel readahead burst would otherwise pay one handshake timeout per request).
RECONNECT_BACKOFF_S = 1.0

LinkOpener = Callable[[], Awaitable[Link]]


def _read_user_file(path: Path, max_bytes: int, what: str, too_big: str) -> bytes:
    """A file the user named (``--da``, ``--preloader``), read whole but at most
    ``max_bytes + 1`` bytes: pointing the option at a disk image or a device node costs no
    more than that before the error. The parsers themselves stay pure."""
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise SourceError(f"{what} {path}: no such file") from exc
    except OSError as exc:
        raise SourceError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise SourceError(f"{what} {path}: larger than {human_size(max_bytes)}: {too_big}")
    return data


def load_da_file(path: Path, *, max_bytes: int = MAX_DA_FILE_BYTES) -> DaFile:
    """Read and parse the user's DA file (``--da``)."""
    data = _read_user_file(path, max_bytes, "DA file", "not a Download Agent (those are a few MiB)")
    return parse_da_file(data, str(path))


#: A Boot1 area is 4 MiB on most eMMCs; a preloader file a few hundred KiB.
MAX_PRELOADER_BYTES = 16 << 20


def load_preloader_emi(path: Path) -> EmiSettings:
    """The EMI settings of ``--preloader`` (read at once: a wrong file fails before the phone
    is touched)."""
    data = _read_user_file(
        path,
        MAX_PRELOADER_BYTES,
        "preloader",
        "not a preloader or Boot1 image (give preloader_<board>.bin or a Boot1/boot1.img)",
    )
    return extract_emi(data, str(path))


class DaTransport(Transport):
    """Regions of a phone's storage through its Download Agent. Open with :meth:`connect`."""

    def __init__(
        self,
        link: Link,
        info: brom.DeviceInfo,
        session: DaSession,
        *,
        writable: bool,
        da_file: DaFile | None = None,
        emi: EmiSettings | None = None,
        reopen: LinkOpener | None = None,
        io_timeout_s: float = DEFAULT_IO_TIMEOUT_S,
    ) -> None:
        """A transport over a session :meth:`connect` set up; ``reopen`` (with ``da_file``) lets
        it reconnect after the link failed."""
        self.link = link
        self.info = info
        self.session = session
        self.regions = {r.name: Region(r.name, r.size_bytes) for r in session.storage.regions}
        self.device_id = device_id_of(info)
        # "MT6765 in preloader mode on /dev/ttyACM0 (XFlash DA; emmc: boot1, boot2, user)": the
        # chip says what, the link where (messages embed it: "… has 2 unfinished writes").
        self.description = (
            f"{info.chip.name} in {info.mode} mode on {link.description} "
            f"({session.protocol} DA; {session.storage.kind}: {', '.join(self.regions)})"
        )
        self.mtime_s = 0.0
        # One USB 2.0 command moves ~40 MB/s after ~1 ms: 256 KiB chunks keep random reads
        # cheap, coalesced commands of 8 MiB keep sequential ones at the link's speed.
        self.chunk_bytes = 256 << 10
        self.max_request_bytes = 8 << 20
        self.readahead_max_bytes = 16 << 20
        self.kernel_readahead_bytes = self.chunk_bytes
        self.writable = writable
        self.write_unit_bytes = session.write_unit_bytes
        self.io_timeout_s = io_timeout_s
        self._da_file = da_file
        self._emi = emi
        self._reopen = reopen if da_file is not None else None
        self._lock = trio.Lock()
        #: Why the session cannot be trusted any more (None while it can).
        self.broken: str | None = None
        self._retry_after = 0.0
        self.commands = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.reconnects = 0
        self.failed_commands = 0
        self.failed_bring_ups = 0

    @classmethod
    async def connect(
        cls,
        link: Link,
        da_file: DaFile,
        *,
        emi: EmiSettings | None = None,
        writable: bool = False,
        reopen: LinkOpener | None = None,
        io_timeout_s: float = DEFAULT_IO_TIMEOUT_S,
    ) -> DaTransport:
        """Identify the device, upload the DA, start its session (see the module doc).

        ``reopen`` gives a fresh link to the same port (after a replug); without it a lost
        session stays lost. The link is not closed here if this fails: the caller owns it.
        """
        link, info, session = await bring_up(link, da_file, emi=emi, timeout_s=io_timeout_s)
        return cls(
            link,
            info,
            session,
            writable=writable,
            da_file=da_file,
            emi=emi,
            reopen=reopen,
            io_timeout_s=io_timeout_s,
        )

    async def _command(self, make_op: Callable[[], Op[T]]) -> T:
        """Run one DA command (built by ``make_op`` from the current session); reconnect first
        if an earlier command broke the session; a failure half way breaks it (module doc)."""
        async with self._lock:
            if self.broken is not None:
                await self._reconnect()
            self.commands += 1
            try:
                return await drive(make_op(), self.link, timeout_s=self.io_timeout_s)
            except (MtkfsError, OSError) as exc:
                # Even an error status: whether the DA expects more bytes after it is not
                # certain for every command, so nothing more is asked of this session.
                self.broken = str(exc)
                self.failed_commands += 1
                log.warning("DA session lost: %s", exc)
                raise

    async def _reconnect(self) -> None:
        """Bring a new session up on a reopened link, if it is the same phone; else raise."""
        assert self.broken is not None
        if self._reopen is None or self._da_file is None:
            raise ReconnectError(
                f"the DA session was lost earlier ({self.broken}); unmount, replug the phone "
                "and mount again"
            )
        if trio.current_time() < self._retry_after:
            raise ReconnectError(
                f"the DA session was lost ({self.broken}); replug the phone switched off "
                "(mtkfs reconnects on the next read)"
            )
        await _close_quietly(self.link)
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            link: Link | None = None
            try:
                link = await self._reopen()
                link, info, session = await bring_up(
                    link, self._da_file, emi=self._emi, timeout_s=self.io_timeout_s
                )
                self._check_same_phone(info, session)
                break
            except ReconnectError:
                await _close_quietly(link)
                self._retry_after = trio.current_time() + RECONNECT_BACKOFF_S
                raise  # another phone: no point trying again
            except (MtkfsError, OSError) as exc:
                await _close_quietly(link)
                self.failed_bring_ups += 1
                log.warning("reconnecting, attempt %d: %s", attempt, exc)
                if attempt == RECONNECT_ATTEMPTS:
                    self._retry_after = trio.current_time() + RECONNECT_BACKOFF_S
                    raise ReconnectError(
                        f"the DA session was lost ({self.broken}) and reconnecting failed "
                        f"({exc}); replug the phone switched off (mtkfs reconnects on the "
                        "next read)"
                    ) from exc
            except BaseException:
                await _close_quietly(link)
                raise
        assert link is not None  # the loop either broke out with a session or raised
        self.link, self.info, self.session = link, info, session
        self.broken = None
        self.reconnects += 1
        log.warning("reconnected to %s (reconnect %d)", self.device_id, self.reconnects)

    def _check_same_phone(self, info: brom.DeviceInfo, session: DaSession) -> None:
        """A different phone (or the same one repartitioned at the eMMC level) must not be
        served under this mount: its bytes would land in this mount's cache and journal."""
        layout = {r.name: r.size_bytes for r in session.storage.regions}
        if device_id_of(info) != self.device_id or layout != {
            name: region.size_bytes for name, region in self.regions.items()
        }:
            raise ReconnectError(
                f"a different phone came back ({device_id_of(info)}, regions "
                f"{', '.join(f'{k}={v}' for k, v in layout.items())}); this mount serves "
                f"{self.device_id}: unmount and mount the other phone on its own"
            )

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        size_bytes = max(0, min(size_bytes, self.regions[region].size_bytes - offset_bytes))

        def make_op() -> Op[bytes]:
            return self.session.read(region, offset_bytes, size_bytes)

        attempts = READ_ATTEMPTS if self._reopen is not None else 1
        for attempt in range(1, attempts + 1):
            try:
                data = await self._command(make_op)
            except (MtkfsError, OSError) as exc:
                # Retry only what failed on a live session: if reconnecting itself failed,
                # the phone is not there and another try now would fail the same way.
                if attempt == attempts or isinstance(exc, ReconnectError):
                    raise TransportError(
                        f"reading {region}+{offset_bytes:#x} ({size_bytes} bytes) failed: {exc}"
                    ) from exc
                log.info("retrying %s+%#x (attempt %d): %s", region, offset_bytes, attempt, exc)
                continue
            self.bytes_read += len(data)
            return data
        raise AssertionError("unreachable")

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.description} was opened read-only")
        if not self.session.can_write:
            raise ReadOnlyError(
                f"the {self.session.protocol} DA cannot write {self.session.storage.kind} "
                "storage here: mount read-only"
            )
        if offset_bytes % self.write_unit_bytes or len(data) % self.write_unit_bytes:
            raise TransportError(
                f"unaligned write {region}+{offset_bytes:#x} ({len(data)} bytes): the DA writes "
                f"whole {self.write_unit_bytes}-byte blocks"
            )

        def make_op() -> Op[None]:
            return self.session.write(region, offset_bytes, data)

        await self._command(make_op)
        self.bytes_written += len(data)

    def device_report(self) -> dict[str, Any]:
        """Chip, mode, security bits, the DA protocol and the storage it reported."""
        info, session = self.info, self.session
        return {
            "chip": info.chip.name,
            "hw_code": f"{info.hw_code:#06x}",
            "hw_sub_code": f"{info.hw_sub_code:#06x}",
            "hw_version": f"{info.hw_ver:#06x}",
            "sw_version": f"{info.sw_ver:#06x}",
            "mode": info.mode,
            "target_config": {
                "raw": f"{info.target_config.raw:#x}",
                "bits": info.target_config.names(),
            },
            "me_id": info.me_id.hex(),
            "soc_id": info.soc_id.hex(),
            "protocol": session.protocol,
            "connection_agent": session.connection_agent,
            "usb_speed": session.usb_speed,
            "storage": {
                "kind": session.storage.kind,
                "block_size": session.storage.block_size_bytes,
                "cid": session.storage.cid.hex(),
                "regions": {r.name: r.size_bytes for r in session.storage.regions},
            },
            "link": self.link.description,
        }

    async def device_table(self) -> PartitionMap | None:
        """The DA's own partition table, placed in the region that holds the flash's table.
        Best effort: a DA that fails the command costs a warning, not the mount."""
        if self.session.device_table() is None:
            return None
        region = table_region_of(self.regions)
        if region is None:
            return None
        try:
            rows = await self._command(lambda: self.session.device_table() or _no_rows())
        except (MtkfsError, OSError) as exc:
            log.warning("the DA's partition table could not be read: %s", exc)
            return None
        kept = [
            (clean_name(n, f"p{i}"), o, z)
            for i, (n, o, z) in enumerate(rows, start=1)
            if z > 0 and o >= 0
        ]
        names = unique_names(name for name, _, _ in kept)
        partitions = tuple(
            Partition(name, region.name, offset, size, origin="da")
            for name, (_, offset, size) in zip(names, kept, strict=True)
        )
        return PartitionMap(
            partitions, f"READ-PARTITION-TABLE (the {self.session.protocol} DA's own view)"
        )

    def stats(self) -> dict[str, int | float]:
        return {
            "da_commands": self.commands,
            "da_failed_commands": self.failed_commands,
            "da_reconnects": self.reconnects,
            "da_failed_reconnects": self.failed_bring_ups,
            "da_bytes_read": self.bytes_read,
            "da_bytes_written": self.bytes_written,
        }

    async def aclose(self) -> None:
        """Leave the phone sane: SHUTDOWN (it reboots normally), then close the link."""
        try:
            async with self._lock:
                if self.broken is None:
                    await drive(
                        self.session.shutdown(), self.link, timeout_s=min(self.io_timeout_s, 5.0)
                    )
        except Exception as exc:  # the device may already be gone; closing must not fail
            log.debug("DA shutdown: %s", exc)
        await self.link.aclose()


def device_id_of(info: brom.DeviceInfo) -> str:
    """``da:<chip>:<ME ID>``: ME_ID/SOC_ID are per device, so the journal and the disk cache
    follow the phone, not the USB port it happens to be plugged into."""
    ident = (info.me_id or info.soc_id or b"").hex() or "unknown"
    chip = info.chip.names[0] if info.chip.names else f"{info.hw_code:#06x}"
    return f"da:{chip}:{ident}"


async def bring_up(
    link: Link, da_file: DaFile, *, emi: EmiSettings | None, timeout_s: float
) -> tuple[Link, brom.DeviceInfo, DaSession]:
    """Steps 1–3 of the module doc over ``link``: identify, upload DA1, start the session;
    then, on a full-speed USB link, the switch to high speed. Returns the link to use from
    then on (a new one after a speed switch; ``link`` is closed then)."""
    command_timeout_s = min(timeout_s, 5.0)
    info = await drive(brom.identify(preloader_prefix=True), link, timeout_s=command_timeout_s)
    log.info(
        "%s (BROM code %#06x) in %s mode, target config %s",
        info.chip.name,
        info.hw_code,
        info.mode,
        info.target_config.names() or "open",
    )
    entry = da_file.select(info.hw_code, info.hw_sub_code, info.hw_ver, info.sw_ver)
    protocol = da_file.protocol_for(info.chip)
    connector = CONNECTORS.get(protocol)
    if connector is None:
        raise UsageError(
            f"{da_file.name} speaks the {protocol} DA protocol for {info.chip.name}; this "
            f"version of mtkfs speaks {', '.join(CONNECTORS)}"
        )
    da1 = entry.da1
    brom.check_security(info, da_signed=da1.sig_len_bytes > 0)
    await drive(
        brom.send_da(da1.load_addr, da1.payload, da1.sig_len_bytes), link, timeout_s=timeout_s
    )
    jump = brom.jump_da64 if info.chip.brom64 else brom.jump_da
    await drive(jump(da1.load_addr), link, timeout_s=command_timeout_s)
    session = await drive(connector(entry, info, emi), link, timeout_s=timeout_s)
    log.info("DA up: %s", session.describe())
    if session.usb_speed == "full-speed":
        link, session = await _to_high_speed(link, session, timeout_s=command_timeout_s)
    return link, info, session


#: Each DA protocol's way from DA1's first byte to a stage-2 session (da_session.py).
CONNECTORS: dict[str, Callable[[DaEntry, brom.DeviceInfo, EmiSettings | None], Op[DaSession]]] = {
    "xflash": da_xflash.connect_entry,
    "legacy": da_legacy.connect_entry,
    "xml": da_xml.connect_entry,
}

#: How long a phone may take to leave the bus and come back at high speed.
REENUMERATION_TIMEOUT_S = 10.0


async def _to_high_speed(
    link: Link, session: DaSession, *, timeout_s: float
) -> tuple[Link, DaSession]:
    """A BROM enumerates at USB full speed (12 Mbit/s, ~1 MB/s): SWITCH_USB_SPEED makes the DA
    re-enumerate at high speed, and the session goes on over the new link, no new handshake.
    Where the link cannot follow (a tty), the phone stays slow and the user is told why."""
    if not link.can_reenumerate or not session.can_switch_usb_speed:
        log.warning(
            "the phone runs at USB full speed (12 Mbit/s, about 1 MB/s) and %s cannot follow "
            "a switch to high speed (%s DA): use da: (libusb) instead of a tty for big reads",
            link.description,
            session.protocol,
        )
        return link, session
    await drive(session.switch_usb_speed(), link, timeout_s=timeout_s)
    new_link = await link.reenumerated(REENUMERATION_TIMEOUT_S)
    try:
        speed = await drive(session.get_usb_speed(), new_link, timeout_s=timeout_s)
    except BaseException:
        await _close_quietly(new_link)
        raise
    log.info("USB speed switched: %s on %s", speed, new_link.description)
    if speed == "full-speed":
        log.warning(
            "the phone is still at USB full speed after the switch (a full-speed hub or port?): "
            "plug it straight into a USB 2.0/3.x port of the computer for ~40x the speed"
        )
    return new_link, replace(session, usb_speed=speed)


def _no_rows() -> Op[tuple[tuple[str, int, int], ...]]:
    return ()
    yield  # a generator that exchanges nothing


async def _close_quietly(link: Link | None) -> None:
    if link is None:
        return
    try:
        await link.aclose()
    except Exception as exc:  # closing a link to a vanished device may fail; nothing to do
        log.debug("closing %s: %s", link.description, exc)
