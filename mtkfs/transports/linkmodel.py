"""A link model: any transport made to cost what a real link costs, and counted.

Why: how fast mtkfs is on a phone depends on how many commands it sends and how many bytes it
moves, and on links whose costs differ by six orders of magnitude — a local image (GB/s), a USB 2.0
Download Agent or adb (~40 MB/s, about a millisecond per command), a U-Boot console at 115200 baud
(~2.8 KB/s of payload). Wrapping a fast transport (an image) in :class:`LinkModelTransport` makes
those costs reproducible on any machine, so tests and benchmarks *measure* efficiency (commands,
bytes, link time against the ideal) instead of guessing it.

The model is deliberately simple: the link is one pipe that carries one command at a time, and a
command costs ``latency_s + bytes / bandwidth`` from the moment it gets the pipe. Time is trio
time, so tests run it on a ``MockClock`` in no real time at all; a real mount (``mtkfs mount
--link-model SPEC``) waits in real time.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from mtkfs.errors import UsageError
from mtkfs.transports.base import Transport, WrappingTransport

__all__ = ["PRESETS", "LinkModelTransport", "LinkSpec", "parse_link_spec"]


@dataclass(frozen=True)
class LinkSpec:
    """What one command costs on a link.

    Attributes:
        latency_s: fixed cost of every command (round trip, command echo, prompt).
        bandwidth_bytes_per_s: payload bytes per second (``math.inf``: free).
        chunk_bytes: the unit the cache should fetch in over this link (None: the inner
            transport's); small on slow links so a random read does not drag in seconds of data.
        checksum: whether the device can checksum a range (U-Boot ``crc32``, DA checksum).
        checksum_latency_s: cost of one checksum command (None: ``latency_s``).
    """

    latency_s: float
    bandwidth_bytes_per_s: float
    chunk_bytes: int | None = None
    checksum: bool = True
    checksum_latency_s: float | None = None

    def transfer_s(self, size_bytes: int, commands: int = 0) -> float:
        """Link time of ``commands`` commands moving ``size_bytes`` in all (no commands: ideal)."""
        return commands * self.latency_s + size_bytes / self.bandwidth_bytes_per_s

    def summary(self) -> str:
        """One short human line: ``1 ms, 40 MB/s, chunk 16 KiB``."""
        parts = [f"{self.latency_s * 1e3:g} ms"]
        rate = self.bandwidth_bytes_per_s
        unit, scale = next(((u, s) for u, s in _RATE_NAMES if rate >= s), _RATE_NAMES[-1])
        parts.append("unlimited" if math.isinf(rate) else f"{rate / scale:.3g} {unit}")
        if self.chunk_bytes:
            parts.append(f"chunk {self.chunk_bytes // 1024} KiB")
        if not self.checksum:
            parts.append("no checksum")
        return ", ".join(parts)


#: U-Boot console: 115200 baud is 11520 chars/s (8N1); ``md.l`` prints ~4.1 chars per payload
#: byte (address, hex words, ASCII column). Each command's echo and prompt cost ~30 ms.
_UBOOT_BYTES_PER_S = 11520 / 4.1

#: Named links, as users and benchmarks think of them.
PRESETS: dict[str, LinkSpec] = {
    # A USB 2.0 Download Agent or adb link; 256 KiB is the unit such transports read in.
    "usb2": LinkSpec(latency_s=1e-3, bandwidth_bytes_per_s=40e6, chunk_bytes=256 * 1024),
    "uboot": LinkSpec(latency_s=30e-3, bandwidth_bytes_per_s=_UBOOT_BYTES_PER_S, chunk_bytes=16384),
    "local": LinkSpec(latency_s=0.0, bandwidth_bytes_per_s=math.inf),
}

_RATE_NAMES = (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3), ("B/s", 1.0))
_EXAMPLE = "examples: usb2, uboot, local, latency=1ms,bandwidth=40MB/s,chunk=16K"
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
# Link speeds are quoted in decimal units; binary ones are accepted for those who think in them.
_RATE_UNITS = {
    **{f"{p}B/s": f for p, f in (("", 1), ("K", 1e3), ("k", 1e3), ("M", 1e6), ("G", 1e9))},
    **{f"{p}iB/s": float(f) for p, f in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30))},
}
# Chunk sizes are binary, like dd's and the cache's; the cache needs a power of two anyway.
_SIZE_UNITS = {"": 1, "K": 1 << 10, "k": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20}
_FLAGS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


def _quantity(part: str, value: str, units: dict[str, float], example: str) -> float:
    """A number with one of ``units`` (a bare 0 needs none), or a UsageError naming ``part``."""
    match = re.fullmatch(_NUMBER + r"\s*(\S*)", value)
    if match is not None:
        number, unit = float(match.group(1)), match.group(2)
        if unit in units:
            return number * units[unit]
        if number == 0 and not unit:
            return 0.0
    raise UsageError(f"link model: bad {part!r} (expected e.g. {example}; {_EXAMPLE})")


def parse_link_spec(text: str) -> LinkSpec:
    """``usb2``, ``uboot``, ``local``, or ``latency=1ms,bandwidth=40MB/s[,chunk=16K]``.

    A preset may come first and be refined: ``uboot,latency=50ms``. Keys: ``latency``,
    ``bandwidth`` (``unlimited`` allowed), ``chunk``, ``checksum`` (on/off),
    ``checksum_latency``. Without a preset, ``latency`` and ``bandwidth`` are required: a
    link model that silently defaulted either would measure the wrong link.
    """
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise UsageError(f"link model: empty spec or empty item in {text!r} ({_EXAMPLE})")
    spec: LinkSpec | None = None
    if "=" not in parts[0]:
        spec = PRESETS.get(parts[0].lower())
        if spec is None:
            names = ", ".join(PRESETS)
            raise UsageError(f"link model: unknown preset {parts[0]!r} (presets: {names})")
        parts = parts[1:]
    values: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key in values:
            raise UsageError(f"link model: bad or repeated item {part!r} ({_EXAMPLE})")
        values[key] = value.strip()
    if spec is None:
        missing = [k for k in ("latency", "bandwidth") if k not in values]
        if missing:
            raise UsageError(
                f"link model: {' and '.join(missing)} missing in {text!r} ({_EXAMPLE})"
            )
        spec = LinkSpec(latency_s=0.0, bandwidth_bytes_per_s=math.inf)
    for key, value in values.items():
        spec = _apply(spec, key, value, f"{key}={value}")
    return spec


def _apply(spec: LinkSpec, key: str, value: str, part: str) -> LinkSpec:
    """``spec`` with one ``key=value`` item applied."""
    if key == "latency":
        return replace(spec, latency_s=_quantity(part, value, _TIME_UNITS, "latency=1ms"))
    if key == "checksum_latency":
        seconds = _quantity(part, value, _TIME_UNITS, "checksum_latency=5ms")
        return replace(spec, checksum_latency_s=seconds)
    if key == "bandwidth":
        if value.lower() in ("unlimited", "inf"):
            return replace(spec, bandwidth_bytes_per_s=math.inf)
        rate = _quantity(part, value, _RATE_UNITS, "bandwidth=40MB/s")
        if rate <= 0:
            raise UsageError(f"link model: {part!r}: bandwidth must be positive ({_EXAMPLE})")
        return replace(spec, bandwidth_bytes_per_s=rate)
    if key == "chunk":
        match = re.fullmatch(r"(\d+)\s*(\S*)", value)
        unit_bytes = _SIZE_UNITS.get(match.group(2)) if match else None
        chunk = int(match.group(1)) * unit_bytes if match and unit_bytes else 0
        if chunk < 512 or chunk & (chunk - 1):
            raise UsageError(
                f"link model: bad {part!r}: chunk is a power of two ≥ 512 bytes (chunk=16K)"
            )
        return replace(spec, chunk_bytes=chunk)
    if key == "checksum":
        flag = _FLAGS.get(value.lower())
        if flag is None:
            raise UsageError(f"link model: {part!r}: checksum is on or off (checksum=off)")
        return replace(spec, checksum=flag)
    known = "latency, bandwidth, chunk, checksum, checksum_latency"
    raise UsageError(f"link model: unknown key in {part!r} (keys: {known}; {_EXAMPLE})")


#: Wire bytes of a checksum command's answer (``crc32 for … ==> 1a2b3c4d`` is short).
_CHECKSUM_REPLY_BYTES = 16
#: Link time one command may hold the pipe: a random reader queued behind it waits that long.
_COMMAND_BUDGET_S = 0.25
#: Link time readahead may bet on a reader staying sequential (bytes it may fetch in vain).
_READAHEAD_BUDGET_S = 0.5


def _whole_chunks(spec: LinkSpec, budget_s: float, chunk_bytes: int, cap_bytes: int) -> int:
    """Whole chunks the link moves in ``budget_s``, at most ``cap_bytes`` (0: not even one)."""
    budget = spec.bandwidth_bytes_per_s * budget_s
    return int(min(budget, cap_bytes)) // chunk_bytes * chunk_bytes


class LinkModelTransport(WrappingTransport):
    """``inner``'s regions and bytes, delivered at ``spec``'s cost over one serial pipe.

    Attributes (counters, also in :meth:`stats`):
        commands: read commands sent; ``checksum_commands``: checksum commands sent.
        bytes: payload bytes read; ``busy_s``: link time charged (reads and checksums).
        commands_by_region, bytes_by_region: the same per region.
    """

    def __init__(self, inner: Transport, spec: LinkSpec) -> None:
        super().__init__(inner)
        self.spec = spec
        self.description = f"link model ({spec.summary()}) over {inner.description}"
        self.chunk_bytes = spec.chunk_bytes or inner.chunk_bytes
        # Size commands and readahead as a real transport over this link would: by link time,
        # never beyond what the inner transport allows. On U-Boot that is one chunk, no readahead.
        self.max_request_bytes = max(
            self.chunk_bytes,
            _whole_chunks(spec, _COMMAND_BUDGET_S, self.chunk_bytes, inner.max_request_bytes),
        )
        self.readahead_max_bytes = _whole_chunks(
            spec, _READAHEAD_BUDGET_S, self.chunk_bytes, inner.readahead_max_bytes
        )
        self.has_checksum = spec.checksum
        # The link, not per-request overhead, is the limit: kernel reads of one chunk.
        self.kernel_readahead_bytes = self.chunk_bytes
        self.write_commands = 0
        self.write_bytes = 0
        self.commands = 0
        self.checksum_commands = 0
        self.bytes = 0
        self.busy_s = 0.0
        self.commands_by_region: dict[str, int] = {}
        self.bytes_by_region: dict[str, int] = {}
        # One pipe: a real console or bulk endpoint carries one command at a time, so concurrent
        # readers queue (trio.Lock is FIFO-fair) and their costs add up.
        self._pipe = trio.Lock()

    async def _charge(self, started_s: float, cost_s: float) -> None:
        """Hold the pipe until ``cost_s`` after the command started.

        Measured from the start, not added after the inner call: the inner transport's own time
        (a pread) overlaps the modelled transfer, as the device works while bytes travel.
        """
        self.busy_s += cost_s
        await trio.sleep_until(started_s + cost_s)

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        return await self._read(self.inner.read, region, offset_bytes, size_bytes)

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        return await self._read(self.inner.read_back, region, offset_bytes, size_bytes)

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """The inner write, charged like a read of the same size (one command, the bytes)."""
        async with self._pipe:
            started_s = trio.current_time()
            self.write_commands += 1
            try:
                await self.inner.write(region, offset_bytes, data)
            except Exception:
                await self._charge(started_s, self.spec.latency_s)
                raise
            await self._charge(started_s, self.spec.transfer_s(len(data), commands=1))
            self.write_bytes += len(data)

    async def _read(
        self,
        inner_read: Callable[[str, int, int], Awaitable[bytes]],
        region: str,
        offset_bytes: int,
        size_bytes: int,
    ) -> bytes:
        async with self._pipe:
            started_s = trio.current_time()
            self.commands += 1
            self.commands_by_region[region] = self.commands_by_region.get(region, 0) + 1
            try:
                data = await inner_read(region, offset_bytes, size_bytes)
            except Exception:
                # A failed command still cost its round trip.
                await self._charge(started_s, self.spec.latency_s)
                raise
            await self._charge(started_s, self.spec.transfer_s(len(data), commands=1))
            self.bytes += len(data)
            self.bytes_by_region[region] = self.bytes_by_region.get(region, 0) + len(data)
            return data

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        """CRC-32 of the range as the device would compute it: one short command, not the bytes.

        The device's own compute time is not charged (it is small next to a serial line).
        """
        if not self.spec.checksum:
            return None
        latency_s = self.spec.checksum_latency_s
        if latency_s is None:
            latency_s = self.spec.latency_s
        async with self._pipe:
            started_s = trio.current_time()
            self.checksum_commands += 1
            # The device computes it from what it holds, past any cache of the inner transport.
            data = await self.inner.read_back(region, offset_bytes, size_bytes)
            cost_s = latency_s + _CHECKSUM_REPLY_BYTES / self.spec.bandwidth_bytes_per_s
            await self._charge(started_s, cost_s)
            return zlib.crc32(data)

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.inner.stats())
        out.update(
            link_commands=self.commands,
            link_checksum_commands=self.checksum_commands,
            link_bytes=self.bytes,
            link_write_commands=self.write_commands,
            link_write_bytes=self.write_bytes,
            link_busy_s=self.busy_s,
            link_latency_s=self.spec.latency_s,
        )
        if not math.isinf(self.spec.bandwidth_bytes_per_s):  # JSON has no infinity
            out["link_bandwidth_bytes_per_s"] = self.spec.bandwidth_bytes_per_s
        for region, count in self.commands_by_region.items():
            out[f"link_commands.{region}"] = count
        for region, size in self.bytes_by_region.items():
            out[f"link_bytes.{region}"] = size
        return out
