"""What every Download Agent protocol offers once its session is up: one interface, three
dialects (XFlash, legacy, XML).

Why one interface: the transport, the cache, the write pipeline and the reconnect logic are the
same for every generation of MediaTek phone (DESIGN.md: protocol + link = regions). Only the
bytes differ, so each protocol module supplies

* a ``connect(...) -> Op[<its session>]`` that runs from DA1's first byte (after BROM's
  JUMP_DA) to a stage-2 session ready for storage I/O, and
* a session class (a subclass of :class:`DaSession`) whose methods build the operations the
  transport drives over the link: :meth:`~DaSession.read`, :meth:`~DaSession.write`,
  :meth:`~DaSession.shutdown`, and the USB speed switch where the protocol has one.

Sessions are immutable values: a speed switch or a reconnect makes a new one.
Everything here is sans-I/O (no link, no clock).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from mtkfs.errors import LocalProtocolError
from mtkfs.protocols.base import Op
from mtkfs.protocols.xflash_storage import StorageInfo

__all__ = ["DaSession", "StorageInfo"]


@dataclass(frozen=True)
class DaSession(abc.ABC):
    """A stage-2 DA session: what the phone's storage is and how to move its bytes.

    Attributes:
        connection_agent: ``"brom"`` or ``"preloader"``: where the DA was loaded from (from
            BROM it had to set DRAM up with the preloader's EMI settings).
        storage: kind, block size, regions (names as mtkfs shows them: ``user``, ``boot1``,
            ``boot2``, ``rpmb``, ``gp1``…, ``lu0``…, ``flash``) with sizes.
        usb_speed: ``"high-speed"``, ``"full-speed"``…, or ``""`` where the protocol cannot
            tell.
    """

    connection_agent: str
    storage: StorageInfo
    usb_speed: str

    #: ``"xflash"``, ``"legacy"`` or ``"xml"``; also what ``mtkfs detect`` prints.
    protocol: ClassVar[str] = ""

    @property
    def read_packet_bytes(self) -> int:
        """The DA's read packet: a coalesced read command should be a multiple of it."""
        return 1 << 20

    @property
    def write_unit_bytes(self) -> int:
        """Writes are whole multiples of this, aligned (the storage's block)."""
        return max(512, self.storage.block_size_bytes)

    @property
    def can_write(self) -> bool:
        """Whether :meth:`write` works on this storage at all (checked before any byte is
        sent, so a refusal never costs the session)."""
        return True

    @abc.abstractmethod
    def read(self, region: str, offset_bytes: int, size_bytes: int) -> Op[bytes]:
        """Exactly ``size_bytes`` of ``region`` from ``offset_bytes`` (any alignment: the
        protocol widens to its blocks and trims), across as many DA packets as it takes; every
        packet checked as the protocol allows (a checksum where it has one)."""

    @abc.abstractmethod
    def write(self, region: str, offset_bytes: int, data: bytes) -> Op[None]:
        """Store ``data`` (whole :attr:`write_unit_bytes`, aligned) at ``offset_bytes``.
        Returning means the DA acknowledged it; the transport verifies by reading back."""

    @abc.abstractmethod
    def shutdown(self) -> Op[None]:
        """Leave the phone sane on unmount (power off or reboot, USB released)."""

    def device_table(self) -> Op[tuple[tuple[str, int, int], ...]] | None:
        """The partition table the DA reports itself — ``(name, byte offset in the table
        region, size)`` — for cross-checking the one mtkfs reads from the flash; None where the
        protocol has no such command (device text: names are cleaned by the maps)."""
        return None

    @property
    def can_switch_usb_speed(self) -> bool:
        """Whether :meth:`switch_usb_speed` exists in this protocol."""
        return False

    def switch_usb_speed(self) -> Op[None]:
        """Tell the DA to re-enumerate at high speed (the link must then be reopened)."""
        raise LocalProtocolError(f"the {self.protocol} DA protocol has no USB speed switch")

    def get_usb_speed(self) -> Op[str]:
        """Ask the DA its USB speed again (after a switch)."""
        raise LocalProtocolError(f"the {self.protocol} DA protocol cannot report its USB speed")

    def describe(self) -> str:
        """One line for logs: ``XFlash DA (brom agent), emmc: boot1, boot2, user``."""
        names = ", ".join(r.name for r in self.storage.regions)
        return f"{self.protocol} DA ({self.connection_agent} agent), {self.storage.kind}: {names}"
