"""Transports: a device (or image) as regions of bytes; see :mod:`mtkfs.transports.base`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtkfs.errors import SourceError, UsageError
from mtkfs.links.base import Link
from mtkfs.links.serial import open_serial
from mtkfs.links.usb import UsbLink, wait_for_device
from mtkfs.protocols.dafile import DaFile
from mtkfs.transports.base import Transport
from mtkfs.transports.da import (
    DEFAULT_IO_TIMEOUT_S,
    DaTransport,
    LinkOpener,
    load_da_file,
    load_preloader_emi,
)
from mtkfs.transports.image import ImageTransport

__all__ = ["ImageTransport", "SourceOptions", "Transport", "open_transport"]

#: Source prefixes that later transports will claim; a PATH never looks like these.


@dataclass(frozen=True)
class SourceOptions:
    """How to reach a device source (the options ``mount``, ``ls`` and ``journal`` share).

    Attributes:
        da_file: ``--da``: the user's Download Agent (``da:``; ``sim:`` phones make their own).
        preloader: ``--preloader``: the phone's preloader (or a Boot1 readback, or a bare EMI
            blob), whose DRAM settings a DA needs when the phone is in BROM mode.
        io_timeout_s: ``--io-timeout``: how long a silent device is waited for.
        wait_s: ``--wait``: how long to wait for a phone to be plugged in (0: it must be there).
        sim_faults: hidden ``--sim-faults``: wire faults of a simulated phone (tests; see
            :mod:`mtkfs.testing.wirefaults`).
        flash, ram, prompt, chunk_size, stop_key: ``--flash``, ``--ram``, ``--prompt``,
            ``--chunk-size``, ``--stop-key`` for ``uboot:`` sources.
    """

    da_file: Path | None = None
    preloader: Path | None = None
    io_timeout_s: float = DEFAULT_IO_TIMEOUT_S
    wait_s: float = 0.0
    sim_faults: str | None = None
    flash: str | None = None
    ram: str | None = None
    prompt: str | None = None
    chunk_size: str | None = None
    stop_key: str | None = None


async def open_transport(
    source: str, *, writable: bool = False, options: SourceOptions | None = None
) -> Transport:
    """Open the transport a SOURCE string names: ``sim:``, ``da:``, ``adb:``, or a PATH to an
    image or readback folder (``image:PATH`` when the path itself starts like a scheme).

    ``writable`` only for ``-o rw`` mounts and journal commands: a read-only mount never opens
    the source for writing.
    """
    options = options or SourceOptions()
    if source.startswith("sim:"):
        return await _open_sim(source, writable=writable, options=options)
    if source.startswith("da:"):
        return await _open_da(source, writable=writable, options=options)
    if source.startswith("adb:"):
        from mtkfs.transports.adb import AdbTransport

        # At least 30 s: the first `su` can wait for the user to tap "grant" on the phone.
        serial = source.removeprefix("adb:") or None
        return await AdbTransport.open(
            serial, writable=writable, io_timeout_s=max(options.io_timeout_s, 30.0)
        )
    if source.startswith("uboot:"):
        return await _open_uboot(source, writable=writable, options=options)
    if source.startswith("image:"):
        source = source[len("image:") :]
    return ImageTransport.open(Path(source), writable=writable)


async def _open_sim(source: str, *, writable: bool, options: SourceOptions) -> Transport:
    """``sim:NAME[:FOLDER]``: a simulated phone, reached through the real DA client path.

    Reopening the link (after a fault) is replugging: the same storage, a phone freshly in its
    BROM/preloader again.
    """
    from mtkfs.testing.sim_mtk import parse_sim_source, start_phone, synthetic_da
    from mtkfs.testing.simlink import GeneratorLink
    from mtkfs.testing.wirefaults import WireFaults, faulty_device, parse_wire_faults

    profile, folder = parse_sim_source(source)
    da = load_da_file(options.da_file) if options.da_file is not None else synthetic_da(profile)
    faults = parse_wire_faults(options.sim_faults) if options.sim_faults else WireFaults()

    async def plug_in() -> Link:
        phone = start_phone(profile, folder, writable=writable, faults=faults.flash)
        return GeneratorLink(
            faulty_device(phone.device(), faults),
            f"a simulator backed by {folder}",
            on_close=phone.close,
            reenumerate=lambda: faulty_device(phone.da.serve(), faults),
        )

    return await _connect_da(plug_in, da, writable=writable, options=options)


async def _open_da(source: str, *, writable: bool, options: SourceOptions) -> Transport:
    """``da:`` or ``da:usb`` (the one phone on USB), ``da:usb:PORT`` (the phone on that USB
    port, e.g. ``1-4``), ``da:/dev/ttyACM0`` (a tty)."""
    target = source.removeprefix("da:")
    opener: LinkOpener
    if target.startswith("/"):
        opener = _serial_opener(target)
    elif target in ("", "usb") or target.startswith("usb:"):
        opener = _usb_opener(target.removeprefix("usb").removeprefix(":") or None, options)
    else:
        raise SourceError(
            f"{source}: expected da: or da:usb (the phone on USB), da:usb:PORT (e.g. "
            "da:usb:1-4, the USB port as in /sys/bus/usb/devices) or da:/dev/ttyACMn (a tty)"
        )
    if options.da_file is None:
        raise UsageError(
            f"{source} needs the phone's Download Agent: --da FILE (MTK_AllInOne_DA.bin or "
            "DA_PL.bin from its firmware package or SP Flash Tool; mtkfs ships none)"
        )
    da = load_da_file(options.da_file)
    return await _connect_da(opener, da, writable=writable, options=options)


def _serial_opener(path: str) -> LinkOpener:
    async def open_tty() -> Link:
        return await open_serial(path)

    return open_tty


def _usb_opener(port_path: str | None, options: SourceOptions) -> LinkOpener:
    """The first open waits up to ``--wait`` for the phone; reopening (after a replug) only
    looks once: the read that asked gets EIO at once if the phone is not back."""
    first = True

    async def open_usb() -> Link:
        nonlocal first
        wait_s, first = (options.wait_s if first else 0.0), False
        if wait_s > 0:
            return await UsbLink.open(await wait_for_device(wait_s, port_path=port_path))
        return await UsbLink.open(port_path=port_path)

    return open_usb


async def _connect_da(
    opener: LinkOpener, da: DaFile, *, writable: bool, options: SourceOptions
) -> Transport:
    """Open the link and start the DA session; the link is closed if that fails."""
    emi = None if options.preloader is None else load_preloader_emi(options.preloader)
    link = await opener()
    try:
        return await DaTransport.connect(
            link,
            da,
            writable=writable,
            emi=emi,
            reopen=opener,
            io_timeout_s=options.io_timeout_s,
        )
    except BaseException:
        await link.aclose()
        raise


async def _open_uboot(source: str, *, writable: bool, options: SourceOptions) -> Transport:
    """``uboot:PORT``: a tty path (``?baud=N``) or a pyserial URL (``socket://``, ``rfc2217://``)."""
    from mtkfs.transports.uboot import DEFAULT_CHUNK_BYTES, UbootOptions, UbootTransport
    from mtkfs.transports.uboot_flash import parse_flash_option, parse_size

    target = source.removeprefix("uboot:")
    if not target:
        raise SourceError("uboot: needs the console: uboot:/dev/ttyUSB0?baud=115200 or a URL")
    uboot_options = UbootOptions(
        flash=None if options.flash is None else parse_flash_option(options.flash),
        ram_address=None if options.ram is None else parse_size(options.ram, "--ram"),
        prompt=options.prompt,
        stop_key=options.stop_key,
        chunk_bytes=(
            DEFAULT_CHUNK_BYTES
            if options.chunk_size is None
            else parse_size(options.chunk_size, "--chunk-size")
        ),
        io_timeout_s=options.io_timeout_s,
        wait_s=max(options.wait_s, 30.0),
    )
    return await UbootTransport.open(target, writable=writable, options=uboot_options)
