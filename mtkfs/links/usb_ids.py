"""The USB identities (VID:PID) a MediaTek phone shows in download mode, and what each means.

Why a module of its own: the table is data that grows on its own (another vendor's preloader
PID) and must stay exact (see :mod:`mtkfs.links.usb`: never "any 0e8d device"); it needs neither
pyusb nor trio, so whatever grants access to exactly these devices (a udev rule) can read it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["USB_IDENTITIES", "UsbIdentity", "UsbMode", "identity_of"]


class UsbMode(enum.StrEnum):
    """What the phone is running when it shows a given identity."""

    BROM = "brom"  # the boot ROM: always there, but DRAM is off
    PRELOADER = "preloader"  # the preloader's download mode: a short window after power-on
    DA = "da"  # a Download Agent that re-enumerated (high-speed switch)


@dataclass(frozen=True)
class UsbIdentity:
    """One VID:PID a MediaTek phone shows in download mode, and what it means."""

    vid: int
    pid: int
    mode: UsbMode
    name: str

    def __str__(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}"


#: Every identity mtkfs opens (mtkclient's ``usb_ids.py``, restated; reference/mtkclient.md
#: §2.1). USB-UART bridges are deliberately absent: they are not phones.
USB_IDENTITIES: tuple[UsbIdentity, ...] = (
    UsbIdentity(0x0E8D, 0x0003, UsbMode.BROM, "MediaTek BootROM"),
    UsbIdentity(0x0E8D, 0x2000, UsbMode.PRELOADER, "MediaTek preloader"),
    # The identity a DA is told to re-enumerate as (SWITCH_USB_SPEED 0x0E8D2001); also listed
    # as a preloader by mtkclient.
    UsbIdentity(0x0E8D, 0x2001, UsbMode.DA, "MediaTek Download Agent (high speed)"),
    UsbIdentity(0x0E8D, 0x20FF, UsbMode.PRELOADER, "MediaTek preloader"),
    UsbIdentity(0x0E8D, 0x3000, UsbMode.PRELOADER, "MediaTek preloader"),
    UsbIdentity(0x0E8D, 0x6000, UsbMode.PRELOADER, "MediaTek preloader"),
    UsbIdentity(0x1004, 0x6000, UsbMode.PRELOADER, "LG preloader"),
    UsbIdentity(0x22D9, 0x0006, UsbMode.PRELOADER, "OPPO preloader"),
    UsbIdentity(0x0FCE, 0xF200, UsbMode.BROM, "Sony BootROM"),
    UsbIdentity(0x0FCE, 0xD1E9, UsbMode.BROM, "Sony BootROM"),
    UsbIdentity(0x0FCE, 0xD1E2, UsbMode.BROM, "Sony BootROM"),
    UsbIdentity(0x0FCE, 0xD1EC, UsbMode.BROM, "Sony BootROM"),
    UsbIdentity(0x0FCE, 0xD1DD, UsbMode.BROM, "Sony BootROM"),
)
_BY_ID = {(i.vid, i.pid): i for i in USB_IDENTITIES}


def identity_of(vid: int, pid: int) -> UsbIdentity | None:
    """The table's entry for ``vid:pid``, or None for a device that is not a phone of ours."""
    return _BY_ID.get((vid, pid))
