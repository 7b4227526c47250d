"""Transports: a device (or image) as regions of bytes; see :mod:`mtkfs.transports.base`."""

from __future__ import annotations

from pathlib import Path

from mtkfs.errors import SourceError
from mtkfs.transports.base import Transport
from mtkfs.transports.image import ImageTransport

__all__ = ["ImageTransport", "Transport", "open_transport"]

#: Source prefixes that later transports will claim; a PATH never looks like these.
_SCHEMES = ("da:", "adb:", "uboot:", "sim:")


async def open_transport(source: str, *, writable: bool = False) -> Transport:
    """Open the transport a SOURCE string names (today: a PATH to an image or readback folder).

    ``writable`` only for ``-o rw`` mounts and journal commands: a read-only mount never opens
    the source for writing.
    """
    for scheme in _SCHEMES:
        if source.startswith(scheme):
            raise SourceError(
                f"{source}: the {scheme[:-1]} transport is not available in this version of "
                "mtkfs; mount a readback image or folder instead"
            )
    if source.startswith("image:"):
        source = source[len("image:") :]
    return ImageTransport.open(Path(source), writable=writable)
