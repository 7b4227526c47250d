"""A simulated phone whose link fails on purpose: cut transfers and garbled frame headers.

What a USB link to a phone really does wrong: a transfer stops half way (the cable moved, the
phone browned out, the hub reset the port), or the phone reboots in the middle of a command. A
corrupted USB packet is not one of them — every bulk packet carries a CRC16 and the host
controller retries it; what reaches libusb is a transfer *error*, never changed bytes — so a
corrupted payload is not injected here. A garbled frame *header* is, because it stands for the
other way a host loses sync with a device: bytes it takes for a header that are not one.

:func:`faulty_device` wraps a device-side generator (the same Send/Recv convention as the
simulators) and spoils one frame in every ``every`` the device sends, up to ``limit`` faults:

``cut``     the device sends part of a frame header or of its payload, then reboots (its
            generator ends: over an in-memory link the host reads "disconnected", over a pty it
            waits for bytes that never come and times out)
``garble``  one bit of a frame header flipped (its magic, type or length), then the device
            reboots — a phone whose USB controller reset while the host misread

The :class:`WireFaults` counters are shared by every phone plugged in during a mount (each
reconnect powers a new simulated phone on), so ``limit`` bounds the faults of the whole run.

The same SPEC also carries faults of the phone's DA and flash (:class:`FlashFaults`, counted per
power-on; each protocol's simulator applies them): ``corrupt-write=N`` stores the Nth written
chunk with one bit flipped and reports success, ``drop-write=N`` reports success and stores
nothing — writes that "succeed" but do not stick, which only verification can catch;
``corrupt-read=N`` sends the Nth read packet with a bit flipped (the legacy DA's packet checksum
must catch it; XFlash reads carry none, so there it is not used).

SPEC for ``--sim-faults`` (hidden; for tests) and ``sim_mtk --faults``:
``every=N,limit=M,kinds=cut+garble,seed=S,corrupt-write=N,drop-write=N,corrupt-read=N``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from mtkfs.errors import UsageError
from mtkfs.protocols.base import Op, Recv, Send
from mtkfs.protocols.da_xflash import HEADER_BYTES, MAGIC

KINDS = ("cut", "garble")
_MAGIC_BYTES = MAGIC.to_bytes(4, "little")


@dataclass(frozen=True)
class FlashFaults:
    """Which read packet / written chunk of each power-on misbehaves (0 = none)."""

    corrupt_read: int = 0
    corrupt_write: int = 0
    drop_write: int = 0


@dataclass
class WireFaults:
    """When to misbehave (``every`` frames, at most ``limit`` times) and what happened so far."""

    every: int = 0
    limit: int = 0
    kinds: tuple[str, ...] = KINDS
    seed: int = 1
    flash: FlashFaults = field(default_factory=FlashFaults)
    frames: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    def due(self) -> str | None:
        """Count one frame header; the fault to inject into it, if it is its turn."""
        if self.every <= 0 or self.total >= self.limit:
            return None
        self.frames += 1
        if self.frames % self.every:
            return None
        kind = self.kinds[self.total % len(self.kinds)]
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind


_ITEM = re.compile(
    r"^(every|limit|seed|corrupt-write|drop-write|corrupt-read)=(\d+)$|^kinds=([a-z+]+)$"
)


def parse_wire_faults(text: str) -> WireFaults:
    """``every=40,limit=200,kinds=cut+garble`` → WireFaults; UsageError on anything else."""
    numbers: dict[str, int] = {}
    kinds = KINDS
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _ITEM.match(item)
        if match is None:
            raise UsageError(
                f"--sim-faults: cannot read {item!r} (use every=N, limit=N, seed=N, "
                f"kinds={'+'.join(KINDS)}, corrupt-write=N, drop-write=N, corrupt-read=N)"
            )
        if match.group(3) is not None:
            kinds = tuple(match.group(3).split("+"))
            unknown = set(kinds) - set(KINDS)
            if unknown or not kinds:
                raise UsageError(f"--sim-faults: unknown kinds {sorted(unknown)} (use {KINDS})")
        else:
            numbers[match.group(1)] = int(match.group(2))
    every = numbers.get("every", 0)
    return WireFaults(
        every=every,
        limit=numbers.get("limit", 1 << 62 if every else 0),
        kinds=kinds,
        seed=numbers.get("seed", 1),
        flash=FlashFaults(
            corrupt_read=numbers.get("corrupt-read", 0),
            corrupt_write=numbers.get("corrupt-write", 0),
            drop_write=numbers.get("drop-write", 0),
        ),
    )


def _is_header(data: bytes) -> bool:
    return len(data) == HEADER_BYTES and data[:4] == _MAGIC_BYTES


def faulty_device(device: Op[object], faults: WireFaults) -> Op[object]:
    """``device``, except for the faults ``faults`` schedules (see the module doc)."""
    try:
        request = next(device)
        while True:
            if isinstance(request, Send) and _is_header(request.data):
                kind = faults.due()
                if kind is not None:
                    yield from _spoil(kind, request.data, device, faults.rng)
                    return None
            reply = yield request
            request = device.send(reply)
    except StopIteration as stop:
        return stop.value
    finally:
        device.close()


def _spoil(kind: str, header: bytes, device: Op[object], rng: random.Random) -> Op[None]:
    """Send the spoilt frame; the caller then ends the device (it reboots)."""
    if kind == "garble":
        bit = rng.randrange(HEADER_BYTES * 8)
        spoilt = bytearray(header)
        spoilt[bit // 8] ^= 1 << (bit % 8)
        yield Send(bytes(spoilt))
        return
    if rng.random() < 0.5:
        yield Send(header[: rng.randrange(HEADER_BYTES)])
        return
    # Cut the payload instead: the header goes out whole, then part of what follows it.
    yield Send(header)
    following = device.send(None)
    if isinstance(following, Send) and following.data:
        yield Send(following.data[: rng.randrange(len(following.data))])
    elif isinstance(following, Recv):
        return
