"""Transports: a device (or image) as regions of bytes; see :mod:`mtkfs.transports.base`."""

from __future__ import annotations

from pathlib import Path

from mtkfs.errors import SourceError, UsageError
from mtkfs.links.base import Link
from mtkfs.links.serial import open_serial
from mtkfs.links.usb import UsbLink
from mtkfs.protocols.dafile import DaFile
from mtkfs.transports.base import Transport
from mtkfs.transports.da import DaTransport, load_da_file
from mtkfs.transports.image import ImageTransport

__all__ = ["ImageTransport", "Transport", "open_transport"]

#: Source prefixes that later transports will claim; a PATH never looks like these.
_SCHEMES = ("adb:", "uboot:")


async def open_transport(
    source: str, *, writable: bool = False, da_file: Path | None = None
) -> Transport:
    """Open the transport a SOURCE string names: ``sim:``, ``da:``, or a PATH to an image or
    readback folder (``image:PATH`` when the path itself starts like a scheme).

    ``writable`` only for ``-o rw`` mounts and journal commands: a read-only mount never opens
    the source for writing. ``da_file``: the user's Download Agent (``--da``) for ``da:`` and
    ``sim:`` sources (a simulated phone makes its own when none is given).
    """
    if source.startswith("sim:"):
        return await _open_sim(source, writable=writable, da_file=da_file)
    if source.startswith("da:"):
        return await _open_da(source, writable=writable, da_file=da_file)
    for scheme in _SCHEMES:
        if source.startswith(scheme):
            raise SourceError(
                f"{source}: the {scheme[:-1]} transport is not available in this version of "
                "mtkfs; mount a readback image or folder instead"
            )
    if source.startswith("image:"):
        source = source[len("image:") :]
    return ImageTransport.open(Path(source), writable=writable)


async def _open_sim(source: str, *, writable: bool, da_file: Path | None) -> Transport:
    """``sim:NAME[:FOLDER]``: a simulated phone, reached through the real DA client path."""
    from mtkfs.testing.sim_mtk import parse_sim_source, start_phone, synthetic_da
    from mtkfs.testing.simlink import GeneratorLink

    profile, folder = parse_sim_source(source)
    da = load_da_file(da_file) if da_file is not None else synthetic_da(profile)
    phone = start_phone(profile, folder, writable=writable)
    link = GeneratorLink(phone.device(), f"a simulator backed by {folder}", on_close=phone.close)
    return await _connect_da(link, da, writable=writable)


async def _open_da(source: str, *, writable: bool, da_file: Path | None) -> Transport:
    """``da:`` (the one MediaTek phone on USB) or ``da:/dev/ttyACM0`` (a tty)."""
    if da_file is None:
        raise UsageError(
            f"{source} needs the phone's Download Agent: --da FILE (MTK_AllInOne_DA.bin or "
            "DA_PL.bin from its firmware package or SP Flash Tool; mtkfs ships none)"
        )
    da = load_da_file(da_file)
    target = source.removeprefix("da:")
    link: Link
    if target.startswith("/"):
        link = await open_serial(target)
    elif target in ("", "usb"):
        link = await UsbLink.open()
    else:
        raise SourceError(f"{source}: expected da: (USB) or da:/dev/ttyACMn (a tty)")
    return await _connect_da(link, da, writable=writable)


async def _connect_da(link: Link, da: DaFile, *, writable: bool) -> Transport:
    """Start the DA session over ``link``; the link is closed if that fails (or is cancelled)."""
    try:
        return await DaTransport.connect(link, da, writable=writable)
    except BaseException:
        await link.aclose()
        raise
