"""A partition (or whole region) as a fixed-size file of bytes over the chunk cache.

Tiny on purpose: this is where "a partition is a byte range of a region" becomes bounds checks,
and where the write policy is applied. Reads past the end return nothing — never the next
partition's bytes; writes past the end get ENOSPC; files never change size.

Write policy (DESIGN.md "Safety"): on an ``-o rw`` mount, partitions whose damage bricks a phone
or destroys what cannot be recreated — the preloader, the partition tables, calibration and
identity data (nvram, nvdata, proinfo, protect*), security state (seccfg, efuse, otp) and RPMB —
refuse writes unless the user names them with ``--unlock NAME``. Whole-region files
(``regions/*.img``) need ``--unlock-regions``, and even then cannot write into a protected
partition that was not unlocked. RPMB is never writable: it is authenticated storage, and a
plain write would at best fail and at worst burn its write counter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtkfs.cache import ChunkCache
from mtkfs.errors import OutOfRangeError, ProtectedPartitionError

if TYPE_CHECKING:
    from mtkfs.commit import WriteBack

#: Partition names that refuse writes unless unlocked (matched case-insensitively, whole name).
PROTECTED = re.compile(
    r"^(preloader.*|pgpt|sgpt|primary_gpt|secondary_gpt|mbr|ebr\d*|pmt|nvram|nvdata|nvcfg"
    r"|proinfo|pro_info|protect.*|seccfg|efuse|otp|rpmb)$",
    re.IGNORECASE,
)


#: ``--unlock tables``: the bytes of a region that belong to no partition. They hold the
#: partition tables themselves (MBR, the EBR chain, primary and backup GPT) and, on old MediaTek
#: phones mapped by MBR alone, whole partitions the MBR does not list (nvram, proinfo…).
#: ``mtkfs restore`` uses the same name for a dump's ``gaps/``.
TABLES = "tables"


def is_protected(name: str) -> bool:
    """True for partitions the Safety rules protect (see the module docstring)."""
    return PROTECTED.match(name) is not None


def is_never_writable(name: str) -> bool:
    """RPMB, under any spelling: no unlock opens it."""
    return name.lower() == "rpmb"


@dataclass(frozen=True)
class Guard:
    """A protected byte range inside a region file: ``[start, end)`` of partition ``name``."""

    start_bytes: int
    end_bytes: int
    name: str


@dataclass(frozen=True)
class Volume:
    """``size_bytes`` bytes of ``region`` starting at ``offset_bytes``.

    Attributes:
        name: partition (or region) name, for messages.
        region: the region it lives in.
        offset_bytes: start within the region.
        size_bytes: exposed size (never changes while mounted).
        locked: why writes are refused by policy (None: writable on an rw mount).
        guards: protected ranges inside this volume's region that writes must not touch.
    """

    name: str
    region: str
    offset_bytes: int
    size_bytes: int
    locked: str | None = None
    guards: tuple[Guard, ...] = ()

    async def read(self, cache: ChunkCache, offset_bytes: int, size_bytes: int) -> bytes:
        """Up to ``size_bytes`` from ``offset_bytes``; short at the end, empty past it."""
        if offset_bytes >= self.size_bytes or size_bytes <= 0:
            return b""
        size_bytes = min(size_bytes, self.size_bytes - offset_bytes)
        return await cache.read(
            self.region,
            self.offset_bytes + offset_bytes,
            size_bytes,
            limit_bytes=self.offset_bytes + self.size_bytes,
        )

    def check_writable(self) -> None:
        """Raise ProtectedPartitionError if policy refuses writes to this volume."""
        if self.locked is not None:
            raise ProtectedPartitionError(self.locked)

    async def write(self, writeback: WriteBack, offset_bytes: int, data: bytes) -> int:
        """Write ``data`` at ``offset_bytes``; returns how much fit (short at the end)."""
        self.check_writable()
        if not data:
            return 0
        if offset_bytes >= self.size_bytes:
            raise OutOfRangeError(
                f"{self.name}: write at {offset_bytes:#x} is past its end ({self.size_bytes} "
                "bytes); partition files never grow"
            )
        data = data[: self.size_bytes - offset_bytes]
        start = self.offset_bytes + offset_bytes
        end = start + len(data)
        for guard in self.guards:
            if start < guard.end_bytes and guard.start_bytes < end:
                raise ProtectedPartitionError(
                    f"this write to {self.name} at {offset_bytes:#x} would change protected "
                    f"partition {guard.name}; add --unlock {guard.name} if you really mean it"
                )
        await writeback.write(self.region, start, data)
        return len(data)

    async def sync(self, writeback: WriteBack) -> None:
        """Commit this volume's dirty chunks; VerifyError if any of them is not on the device."""
        await writeback.sync(self.region, self.offset_bytes, self.offset_bytes + self.size_bytes)
