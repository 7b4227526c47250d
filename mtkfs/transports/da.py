"""A MediaTek phone in BROM or preloader mode, through its Download Agent (XFlash), as regions.

What opening does, once per mount (never per read — mtkclient's re-handshakes are one of the
things users complain about):

1. BROM/preloader identification (:func:`mtkfs.protocols.brom.identify`): hw code, chip, mode,
   security bits; a device that needs authorisation stops here, before any DA byte is sent;
2. the user's DA file picks the agent for this chip (:mod:`mtkfs.protocols.dafile`); DA1 is
   uploaded (SEND_DA with its checksum checked) and started;
3. the XFlash session (:func:`mtkfs.protocols.da_xflash.connect`): bring-up, DRAM from the
   preloader's EMI settings when the DA came up from BROM, DA2, packet lengths, storage info.

The storage info's regions (eMMC boot1/boot2/rpmb/gp*/user, UFS LUs) are the transport's regions.
Reads and writes are single XFlash commands of any length (the chunk cache coalesces misses into
commands of up to ``max_request_bytes``); one command at a time on the link (a trio.Lock).
There is no checksum command on XFlash, so verification reads back (the DA reads the flash each
time: nothing caches between us and the cells).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

import trio

from mtkfs.errors import (
    DeviceGoneError,
    MtkfsError,
    ReadOnlyError,
    SourceError,
    TransportError,
    UsageError,
)
from mtkfs.links.base import Link, drive
from mtkfs.maps.model import Region
from mtkfs.protocols import brom, da_xflash
from mtkfs.protocols.base import Op
from mtkfs.protocols.dafile import MAX_DA_FILE_BYTES, DaFile, parse_da_file
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Per-read timeout for commands that move bulk data (a 64 MiB command at 40 MB/s takes ~2 s).
_DATA_TIMEOUT_S = 30.0
#: Handshake and short commands.
_COMMAND_TIMEOUT_S = 5.0


def load_da_file(path: Path, *, max_bytes: int = MAX_DA_FILE_BYTES) -> DaFile:
    """Read and parse the user's DA file (``--da``); the parser itself stays pure.

    Reads at most ``max_bytes + 1`` bytes, so pointing ``--da`` at a disk image or a device node
    costs no more than that before the error.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise SourceError(f"DA file {path}: no such file") from exc
    except OSError as exc:
        raise SourceError(f"cannot read DA file {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise SourceError(
            f"DA file {path}: larger than {max_bytes} bytes: not a Download Agent (those are a "
            "few MiB)"
        )
    return parse_da_file(data, str(path))


class DaTransport(Transport):
    """Regions of a phone's storage through an XFlash Download Agent. Open with :meth:`connect`."""

    def __init__(
        self,
        link: Link,
        info: brom.DeviceInfo,
        session: da_xflash.DaSession,
        *,
        writable: bool,
    ) -> None:
        self.link = link
        self.info = info
        self.session = session
        storage = session.storage
        self.regions = {r.name: Region(r.name, r.size_bytes) for r in storage.regions}
        ident = (info.me_id or info.soc_id or b"").hex() or "unknown"
        chip = info.chip.names[0] if info.chip.names else f"{info.hw_code:#06x}"
        # ME_ID/SOC_ID are per device: the journal and the disk cache follow the phone, not the
        # USB port it happens to be plugged into.
        self.device_id = f"da:{chip}:{ident}"
        # "MT6765 in preloader mode on /dev/ttyACM0 (XFlash DA; emmc: boot1, boot2, user)": the
        # chip says what, the link where (messages embed it: "… has 2 unfinished writes").
        self.description = (
            f"{info.chip.name} in {info.mode} mode on {link.description} "
            f"(XFlash DA; {storage.kind}: {', '.join(self.regions)})"
        )
        self.mtime_s = 0.0
        # One USB 2.0 command moves ~40 MB/s after ~1 ms: 256 KiB chunks keep random reads
        # cheap, coalesced commands of 8 MiB keep sequential ones at the link's speed.
        self.chunk_bytes = 256 << 10
        self.max_request_bytes = 8 << 20
        self.readahead_max_bytes = 16 << 20
        self.kernel_readahead_bytes = self.chunk_bytes
        self.writable = writable
        self.write_unit_bytes = max(512, storage.block_size_bytes)
        self._lock = trio.Lock()
        #: Why the session cannot be trusted any more (None while it can).
        self.broken: str | None = None
        self.commands = 0
        self.bytes_read = 0
        self.bytes_written = 0

    @classmethod
    async def connect(
        cls,
        link: Link,
        da_file: DaFile,
        *,
        preloader: bytes | None = None,
        writable: bool = False,
    ) -> DaTransport:
        """Identify the device, upload the DA, start the XFlash session (see the module doc)."""
        info = await drive(brom.identify(preloader_prefix=True), link, timeout_s=_COMMAND_TIMEOUT_S)
        log.info(
            "%s (BROM code %#06x) in %s mode, target config %s",
            info.chip.name,
            info.hw_code,
            info.mode,
            info.target_config.names() or "open",
        )
        entry = da_file.select(info.hw_code, info.hw_sub_code, info.hw_ver, info.sw_ver)
        if da_file.protocol_for(info.chip) != "xflash":
            raise UsageError(
                f"{da_file.name} speaks the {da_file.protocol_for(info.chip)} DA protocol for "
                f"{info.chip.name}; this version of mtkfs speaks XFlash only"
            )
        da1 = entry.da1
        brom.check_security(info, da_signed=da1.sig_len_bytes > 0)
        await drive(
            brom.send_da(da1.load_addr, da1.payload, da1.sig_len_bytes),
            link,
            timeout_s=_DATA_TIMEOUT_S,
        )
        jump = brom.jump_da64 if info.chip.brom64 else brom.jump_da
        await drive(jump(da1.load_addr), link, timeout_s=_COMMAND_TIMEOUT_S)
        session = await drive(
            da_xflash.connect(entry.da2.load_addr, entry.da2_unsigned, emi=preloader),
            link,
            timeout_s=_DATA_TIMEOUT_S,
        )
        log.info(
            "DA up (%s agent), %s storage, packets %d/%d bytes",
            session.connection_agent,
            session.storage.kind,
            session.packet_lengths.write_bytes,
            session.packet_lengths.read_bytes,
        )
        return cls(link, info, session, writable=writable)

    async def _command(self, op: Op[T]) -> T:
        """Run one DA command; a failure in the middle of one breaks the session for good.

        Why: after a timeout, a disconnect or garbage on the link, nobody knows where in the
        byte stream the DA is. Carrying on would parse data as headers, or hand a reader bytes
        of the wrong offset — so every later command fails (EIO) instead, and the message says
        to replug. Never wrong bytes.
        """
        async with self._lock:
            if self.broken is not None:
                raise DeviceGoneError(
                    f"the DA session was lost earlier ({self.broken}); unmount, replug the "
                    "phone and mount again"
                )
            self.commands += 1
            try:
                return await drive(op, self.link, timeout_s=_DATA_TIMEOUT_S)
            except (MtkfsError, OSError) as exc:
                # Even an error status: whether the DA expects more bytes after it is not
                # certain for every command, so nothing more is asked of this session.
                self.broken = str(exc)
                log.error("DA session lost: %s", exc)
                raise

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        storage_id, part_id = self.session.storage.address(region)
        size_bytes = max(0, min(size_bytes, self.regions[region].size_bytes - offset_bytes))
        data = await self._command(
            da_xflash.read_data(
                storage_id,
                part_id,
                offset_bytes,
                size_bytes,
                sector_bytes=self.session.storage.block_size_bytes,
            )
        )
        self.bytes_read += len(data)
        return data

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.description} was opened read-only")
        if offset_bytes % self.write_unit_bytes or len(data) % self.write_unit_bytes:
            raise TransportError(
                f"unaligned write {region}+{offset_bytes:#x} ({len(data)} bytes): the DA writes "
                f"whole {self.write_unit_bytes}-byte blocks"
            )
        storage_id, part_id = self.session.storage.address(region)
        await self._command(
            da_xflash.write_data(
                storage_id,
                part_id,
                offset_bytes,
                data,
                write_packet_bytes=self.session.packet_lengths.write_bytes,
                sector_bytes=self.session.storage.block_size_bytes,
            )
        )
        self.bytes_written += len(data)

    def stats(self) -> dict[str, int | float]:
        return {
            "da_commands": self.commands,
            "da_bytes_read": self.bytes_read,
            "da_bytes_written": self.bytes_written,
        }

    async def aclose(self) -> None:
        """Leave the phone sane: SHUTDOWN (it reboots normally), then close the link."""
        try:
            async with self._lock:
                if self.broken is None:
                    await drive(da_xflash.shutdown(), self.link, timeout_s=_COMMAND_TIMEOUT_S)
        except Exception as exc:  # the device may already be gone; closing must not fail
            log.debug("DA shutdown: %s", exc)
        await self.link.aclose()
