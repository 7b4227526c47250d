"""MediaTek chips as the BootROM names them: the facts a client needs per hw_code.

Why a table: the BootROM only says a 16-bit ``hw_code`` (GET_HW_CODE). Which Download Agent entry
fits (``da_code``: the DA file indexes entries by *that* code, e.g. BROM 0x0766 → DA 0x6765), where
the watchdog is (to stop the phone rebooting mid-handshake), where DA1 is loaded, and which DA
protocol the chip speaks, are per-chip facts (gathered from mtkclient's brom_config and vendor
docs; see docs/transports/da.md). Unknown chips fall back to mtkclient's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chip:
    """One chip.

    Attributes:
        hw_code: what GET_HW_CODE returns.
        name: marketing name (``MT6765``).
        da_code: the hw_code of its entries in a DA file.
        watchdog_addr: the watchdog control register (written 0x22000064 to stop it); None on
            chips whose BootROM already keeps it off (64-bit BROMs).
        watchdog_16bit: the watchdog register takes a 16-bit write (MT6575/77).
        da_payload_addr: where DA1 is loaded when the DA file does not say.
        protocol: the DA protocol family the chip's DAs speak: ``legacy``, ``xflash`` or ``xml``.
    """

    hw_code: int
    name: str
    da_code: int
    watchdog_addr: int | None = 0x10007000
    watchdog_16bit: bool = False
    da_payload_addr: int = 0x200000
    protocol: str = "xflash"


#: Known chips by BROM hw_code (extend from mtkclient's brom_config facts, never guesses).
CHIPS: dict[int, Chip] = {
    chip.hw_code: chip
    for chip in (
        Chip(0x6582, "MT6582", 0x6582, protocol="legacy"),
        Chip(0x0321, "MT6735", 0x6735, protocol="legacy"),
        Chip(0x0766, "MT6765", 0x6765),
        Chip(0x0707, "MT6768", 0x6768),
        Chip(0x0989, "MT6833", 0x6833),
        Chip(0x1208, "MT6789", 0x6789, protocol="xml"),
    )
}


def chip_for(hw_code: int) -> Chip:
    """The chip with ``hw_code``; an unknown one gets mtkclient's defaults (DA code = hw_code)."""
    known = CHIPS.get(hw_code)
    if known is not None:
        return known
    return Chip(hw_code, f"unknown chip {hw_code:#06x}", hw_code, protocol="legacy")
