"""A transport wrapper that misbehaves on purpose, for testing the write pipeline.

Real flash fails in ways a healthy image file never does: a write command is refused, a write is
acknowledged but the cells hold something else (only verification can notice), the cable is
pulled half way through a commit. :class:`FaultyTransport` does each of these at a chosen write,
so tests can check that mtkfs never reports such a write as done.

It is reachable from the command line as ``mtkfs mount --inject-faults SPEC`` (hidden; for the
test suite and for trying out the failsafe behaviour). SPEC is comma-separated:

``flip-bit@N``     the Nth write (1-based) stores its data with one bit flipped
``fail-write@N``   the Nth write is refused (TransportError), nothing stored
``drop@N``         the Nth write stores its first half, then the device is gone for good
``write-delay=S``  every write takes S more seconds (widens the window for kill tests)
``gone-read@N``    the Nth read finds the device gone, and so does everything after it (a
                   cable pulled during a dump)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import trio

from mtkfs.errors import DeviceGoneError, TransportError, UsageError
from mtkfs.transports.base import Transport, WrappingTransport

_ITEM = re.compile(
    r"^(flip-bit|fail-write|drop|gone-read)@([1-9]\d*)$|^write-delay=(\d+(?:\.\d*)?|\.\d+)$"
)


@dataclass(frozen=True)
class FaultSpec:
    """Which write misbehaves how (0 = never)."""

    flip_bit_at: int = 0
    fail_write_at: int = 0
    drop_at: int = 0
    write_delay_s: float = 0.0
    gone_read_at: int = 0


def parse_fault_spec(text: str) -> FaultSpec:
    """``flip-bit@3,write-delay=0.05`` → FaultSpec; UsageError on anything else."""
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _ITEM.match(item)
        if not match:
            raise UsageError(
                f"--inject-faults: cannot read {item!r} (use flip-bit@N, fail-write@N, drop@N, "
                "gone-read@N, write-delay=SECONDS)"
            )
        if match.group(3) is not None:
            values["write_delay_s"] = float(match.group(3))
        else:
            values[match.group(1).replace("-", "_") + "_at"] = int(match.group(2))
    return FaultSpec(
        flip_bit_at=int(values.get("flip_bit_at", 0)),
        fail_write_at=int(values.get("fail_write_at", 0)),
        drop_at=int(values.get("drop_at", 0)),
        write_delay_s=values.get("write_delay_s", 0.0),
        gone_read_at=int(values.get("gone_read_at", 0)),
    )


class FaultyTransport(WrappingTransport):
    """``inner``, except for the faults in ``spec``. Counts writes in :attr:`writes`."""

    def __init__(self, inner: Transport, spec: FaultSpec) -> None:
        super().__init__(inner)
        self.spec = spec
        self.writes = 0
        self.reads = 0
        self.gone = False

    def _check(self) -> None:
        if self.gone:
            raise DeviceGoneError("injected fault: the device is gone")

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        self._check()
        self.reads += 1
        if self.reads == self.spec.gone_read_at:
            self.gone = True
            raise DeviceGoneError(f"injected fault: device gone during read #{self.reads}")
        return await super().read(region, offset_bytes, size_bytes)

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        self._check()
        return await super().read_back(region, offset_bytes, size_bytes)

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        self._check()
        return await super().checksum(region, offset_bytes, size_bytes)

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        self._check()
        self.writes += 1
        if self.spec.write_delay_s:
            await trio.sleep(self.spec.write_delay_s)
        if self.writes == self.spec.fail_write_at:
            raise TransportError(f"injected fault: write #{self.writes} refused by the device")
        if self.writes == self.spec.drop_at:
            half = len(data) // 2 // self.write_unit_bytes * self.write_unit_bytes
            await self.inner.write(region, offset_bytes, data[:half])
            self.gone = True
            raise DeviceGoneError(f"injected fault: device gone during write #{self.writes}")
        if self.writes == self.spec.flip_bit_at:
            corrupted = bytearray(data)
            corrupted[len(data) // 2] ^= 0x10
            data = bytes(corrupted)
        await self.inner.write(region, offset_bytes, data)

    def stats(self) -> dict[str, int | float]:
        return {**self.inner.stats(), "fault_writes": self.writes}
