"""How U-Boot reaches each kind of flash: moving a range between flash and a RAM buffer.

Every back-end answers the same three questions for the transport (:mod:`.uboot`):

* :meth:`Backend.probe` — which regions, how big (``sf probe``, ``mmc info``, ``virtio info``…);
  run again after a board reset, since U-Boot forgets its flash selection;
* :meth:`Backend.load` — copy ``[offset, offset+size)`` of a region into RAM and say where the
  bytes are (memory-mapped NOR needs no copy: the flash *is* an address);
* :meth:`Backend.store` — copy RAM into the flash, erasing first where the flash needs it.

Each command's own success text is checked (``Read: OK``, ``N blocks read: OK``) — but text is
not proof, only the CRC of what the flash holds afterwards is (QEMU's CFI NOR prints "done" for
writes that did not stick): the transport verifies every write with ``crc32``.

Units: ``sf``, ``nand`` and memory work in bytes; ``mmc`` and ``virtio`` in 512-byte blocks
(:attr:`Backend.align_bytes`). All numbers typed are hex.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

from mtkfs.errors import BadBlockError, SourceError, TransportError, UsageError
from mtkfs.protocols import uboot
from mtkfs.transports.uboot_console import Console

BLOCK_BYTES = 512


class Backend(abc.ABC):
    """One flash device as U-Boot reaches it."""

    #: ``--flash`` name (``sf``, ``mmc``…), for messages and ``mtkfs info``.
    kind: str
    #: Reads and writes start and end on multiples of this (the transport widens and slices).
    align_bytes: int = 16
    #: Writes must cover whole erase blocks of this size (0: no erase needed, e.g. eMMC).
    erase_bytes: int = 0
    #: What ``probe`` found, for ``mtkfs info``.
    description: str = ""

    @abc.abstractmethod
    async def probe(self, con: Console) -> dict[str, int]:
        """Select the device; its regions and their sizes in bytes."""

    @abc.abstractmethod
    async def load(self, con: Console, region: str, offset: int, size: int, ram: int) -> int:
        """Copy the range into RAM at ``ram``; the address where its bytes now are."""

    @abc.abstractmethod
    async def store(self, con: Console, region: str, offset: int, size: int, ram: int) -> None:
        """Write ``size`` bytes from RAM at ``ram`` into the region at ``offset`` (aligned to
        :attr:`erase_bytes` where that is not 0): erase, then write."""


async def _checked(con: Console, command: str) -> str:
    """Run ``command``; TransportError with U-Boot's words if its output shows an error."""
    output = await con.run(command)
    problem = uboot.find_error(output)
    if problem is not None:
        raise TransportError(f"U-Boot: {command!r} failed: {output.strip()[-200:]}")
    return output


class SfBackend(Backend):
    """SPI NOR through ``sf``: ``sf probe [bus:cs]``, ``sf read``, ``sf erase`` + ``sf write``."""

    kind = "sf"
    align_bytes = 16

    def __init__(self, select: str = "") -> None:
        if select and not re.fullmatch(r"\d{1,2}(:\d{1,2})?", select):
            raise UsageError(f"--flash sf:{select}: expected sf, sf:CS or sf:BUS:CS (numbers)")
        self.select = select

    async def probe(self, con: Console) -> dict[str, int]:
        output = await con.run(f"sf probe {self.select}".strip())
        chip = uboot.parse_sf_probe(output)
        self.erase_bytes = chip.erase_bytes
        self.description = (
            f"SPI NOR {chip.name}, {chip.size_bytes} bytes, {chip.erase_bytes}-byte erase blocks"
        )
        return {"flash": chip.size_bytes}

    async def load(self, con: Console, region: str, offset: int, size: int, ram: int) -> int:
        output = await con.run(uboot.sf_read_command(ram, offset, size))
        uboot.check_sf_result(output, "Read", offset, size)
        return ram

    async def store(self, con: Console, region: str, offset: int, size: int, ram: int) -> None:
        output = await con.run(uboot.sf_erase_command(offset, size))
        uboot.check_sf_result(output, "Erased", offset, size)
        output = await con.run(uboot.sf_write_command(ram, offset, size))
        uboot.check_sf_result(output, "Written", offset, size)


class _BlockBackend(Backend):
    """Block devices in 512-byte blocks (eMMC, virtio)."""

    align_bytes = BLOCK_BYTES


class MmcBackend(_BlockBackend):
    """eMMC/SD through ``mmc``: the user area and, on eMMC, the two boot partitions
    (``mmc dev N 1|2``), each its own region."""

    kind = "mmc"
    _HWPART = {"user": 0, "boot1": 1, "boot2": 2}

    def __init__(self, dev: int = 0) -> None:
        self.dev = dev
        self._selected: int | None = None

    async def _select(self, con: Console, hwpart: int) -> None:
        if self._selected != hwpart:
            await _checked(con, uboot.mmc_dev_command(self.dev, hwpart))
            self._selected = hwpart

    async def probe(self, con: Console) -> dict[str, int]:
        self._selected = None
        await self._select(con, 0)
        info = uboot.parse_mmc_info(await _checked(con, "mmc info"))
        regions = {"user": info.user_bytes}
        for region, size in (("boot1", info.boot_bytes), ("boot2", info.boot_bytes)):
            if size:
                regions[region] = size
        self.description = f"eMMC/SD device {self.dev}, user area {info.user_bytes} bytes"
        return regions

    async def load(self, con: Console, region: str, offset: int, size: int, ram: int) -> int:
        await self._select(con, self._HWPART[region])
        count = size // BLOCK_BYTES
        output = await con.run(uboot.mmc_read_command(ram, offset // BLOCK_BYTES, count))
        uboot.check_blocks_result(output, "read", count)
        return ram

    async def store(self, con: Console, region: str, offset: int, size: int, ram: int) -> None:
        await self._select(con, self._HWPART[region])
        count = size // BLOCK_BYTES
        output = await con.run(uboot.mmc_write_command(ram, offset // BLOCK_BYTES, count))
        uboot.check_blocks_result(output, "written", count)

    def forget(self) -> None:
        """After a reset U-Boot has no device selected."""
        self._selected = None


class VirtioBackend(_BlockBackend):
    """A virtio block device (QEMU): ``virtio scan``, ``virtio read|write``; region ``user``."""

    kind = "virtio"

    def __init__(self, dev: int = 0) -> None:
        self.dev = dev

    async def probe(self, con: Console) -> dict[str, int]:
        await con.run("virtio scan")
        if self.dev:
            await _checked(con, f"virtio dev {self.dev:x}")
        size = uboot.parse_virtio_info(await _checked(con, "virtio info"))
        self.description = f"virtio block device {self.dev}, {size} bytes"
        return {"user": size}

    async def load(self, con: Console, region: str, offset: int, size: int, ram: int) -> int:
        count = size // BLOCK_BYTES
        output = await con.run(uboot.virtio_read_command(ram, offset // BLOCK_BYTES, count))
        uboot.check_blocks_result(output, "read", count)
        return ram

    async def store(self, con: Console, region: str, offset: int, size: int, ram: int) -> None:
        count = size // BLOCK_BYTES
        output = await con.run(uboot.virtio_write_command(ram, offset // BLOCK_BYTES, count))
        uboot.check_blocks_result(output, "written", count)


class NandBackend(Backend):
    """Raw NAND through ``nand``. U-Boot skips bad blocks, so the bytes it returns for a range
    holding one come from further on and would land at the wrong offset: such a range is
    refused (BadBlockError, not retried). The table comes from ``nand bad`` at probe time, so
    the refusal costs no transfer; a block that went bad since is caught by the "Skipping bad
    block" line of the read itself. Erasing and writing skip bad blocks the same way, so a
    write over one is refused before anything is erased."""

    kind = "nand"
    align_bytes = 16

    def __init__(self, size_bytes: int, erase_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.erase_bytes = erase_bytes
        self.bad_blocks: set[int] = set()

    async def probe(self, con: Console) -> dict[str, int]:
        await _checked(con, "nand device 0")
        actual = uboot.parse_nand_erase_bytes(await con.run(uboot.NAND_INFO_COMMAND))
        if actual != self.erase_bytes:
            # Erasing in the wrong unit fails at best and wipes a neighbour at worst.
            raise UsageError(
                f"--flash nand:…:{self.erase_bytes}: U-Boot's nand info says the erase block "
                f"is {actual} bytes; use --flash nand:{self.size_bytes}:{actual}"
            )
        self.bad_blocks = set(
            uboot.parse_nand_bad(await con.run(uboot.NAND_BAD_COMMAND), self.erase_bytes)
        )
        bad = f", {len(self.bad_blocks)} bad" if self.bad_blocks else ""
        self.description = f"NAND, {self.size_bytes} bytes, {self.erase_bytes}-byte blocks{bad}"
        return {"flash": self.size_bytes}

    def _refuse_bad(self, offset: int, size: int, found: list[int] | None = None) -> None:
        self.bad_blocks.update(found or ())
        first = offset - offset % self.erase_bytes
        inside = [b for b in sorted(self.bad_blocks) if first <= b < offset + size]
        if inside:
            raise BadBlockError(
                f"NAND bad block at {', '.join(f'{b:#x}' for b in inside)} inside "
                f"{offset:#x}+{size:#x}: U-Boot skips bad blocks, so these bytes would come "
                "from the next good block; this range is not served (copy around it with "
                "dd conv=noerror,sync)"
            )

    async def load(self, con: Console, region: str, offset: int, size: int, ram: int) -> int:
        self._refuse_bad(offset, size)
        output = await con.run(uboot.nand_read_command(ram, offset, size))
        self._refuse_bad(offset, size, uboot.check_nand_result(output, "read", size))
        return ram

    async def store(self, con: Console, region: str, offset: int, size: int, ram: int) -> None:
        self._refuse_bad(offset, size)
        output = await con.run(uboot.nand_erase_command(offset, size))
        self._refuse_bad(offset, size, uboot.check_nand_erase_result(output, offset, size))
        output = await con.run(uboot.nand_write_command(ram, offset, size))
        self._refuse_bad(offset, size, uboot.check_nand_result(output, "written", size))


class MemBackend(Backend):
    """Memory-mapped (CFI parallel) NOR at ``base``: read in place with ``md``/``crc32``;
    written with ``protect off`` + ``erase`` + ``cp.b`` — whose "done" proves nothing."""

    kind = "mem"
    align_bytes = 16

    def __init__(self, base: int, size_bytes: int, erase_bytes: int) -> None:
        self.base = base
        self.size_bytes = size_bytes
        self.erase_bytes = erase_bytes

    async def probe(self, con: Console) -> dict[str, int]:
        self.description = f"memory-mapped NOR at {self.base:#x}, {self.size_bytes} bytes"
        return {"flash": self.size_bytes}

    async def load(self, con: Console, region: str, offset: int, size: int, ram: int) -> int:
        return self.base + offset

    async def store(self, con: Console, region: str, offset: int, size: int, ram: int) -> None:
        start = self.base + offset
        await con.run(f"protect off {start:x} +{size:x}")
        output = await con.run(f"erase {start:x} +{size:x}")
        if uboot.find_error(output) is not None:
            raise TransportError(f"U-Boot: erase {start:#x}+{size:#x}: {output.strip()[-200:]}")
        await con.run(f"cp.b {ram:x} {start:x} {size:x}")


@dataclass(frozen=True)
class FlashSpec:
    """A parsed ``--flash`` value (None fields: probe for them)."""

    kind: str
    arg: str = ""


def parse_flash_option(text: str) -> FlashSpec:
    """``sf[:BUS:CS]``, ``mmc[:DEV]``, ``virtio[:DEV]``, ``nand:SIZE:ERASE``,
    ``mem:BASE:SIZE[:ERASE]`` (numbers hex with 0x, or decimal with k/M suffixes)."""
    kind, _, arg = text.partition(":")
    if kind not in ("sf", "mmc", "virtio", "nand", "mem"):
        raise UsageError(
            f"--flash {text}: expected sf[:BUS:CS], mmc[:DEV], virtio[:DEV], nand:SIZE:ERASE or "
            "mem:BASE:SIZE[:ERASE]"
        )
    return FlashSpec(kind, arg)


def parse_size(text: str, what: str) -> int:
    """``0x5000000``, ``16M``, ``128k``, ``4096`` → bytes."""
    match = re.fullmatch(r"(0x[0-9a-fA-F]{1,16}|\d{1,20})([kKmMgG]?)", text.strip())
    if match is None:
        raise UsageError(f"{what}: {text!r} is not a number (0x… hex, or decimal with k/M/G)")
    value = int(match.group(1), 0)
    return value << {"": 0, "k": 10, "m": 20, "g": 30}[match.group(2).lower()]


def make_backend(spec: FlashSpec) -> Backend:
    """The back-end a ``--flash`` value names."""
    fields = spec.arg.split(":") if spec.arg else []
    if spec.kind == "sf":
        return SfBackend(spec.arg)
    if spec.kind in ("mmc", "virtio"):
        dev = int(fields[0]) if fields and fields[0].isdigit() else 0
        if fields and not fields[0].isdigit():
            raise UsageError(f"--flash {spec.kind}:{spec.arg}: the device is a number")
        return MmcBackend(dev) if spec.kind == "mmc" else VirtioBackend(dev)
    if spec.kind == "nand":
        if len(fields) != 2:
            raise UsageError("--flash nand:SIZE:ERASE (e.g. nand:128M:128k): U-Boot's nand "
                             "command does not print the chip size")  # fmt: skip
        return NandBackend(parse_size(fields[0], "nand size"), parse_size(fields[1], "erase"))
    if len(fields) not in (2, 3):
        raise UsageError("--flash mem:BASE:SIZE[:ERASE] (e.g. mem:0x5000000:16M:128k)")
    erase = parse_size(fields[2], "erase size") if len(fields) == 3 else 64 << 10
    return MemBackend(parse_size(fields[0], "base"), parse_size(fields[1], "size"), erase)


async def probe_backend(con: Console) -> tuple[Backend, dict[str, int]]:
    """No ``--flash``: the first of sf, mmc, virtio that this U-Boot has and that finds a
    device. Memory-mapped NOR and NAND need their geometry, so they are never guessed."""
    candidates: list[Backend] = [SfBackend(), MmcBackend(), VirtioBackend()]
    reasons = []
    for backend in candidates:
        try:
            regions = await backend.probe(con)
        except TransportError as exc:
            reasons.append(f"{backend.kind}: {str(exc)[:120]}")
            continue
        return backend, regions
    raise SourceError(
        "U-Boot: no flash found by sf probe, mmc or virtio ("
        + "; ".join(reasons)
        + "); name it with --flash (e.g. --flash mem:BASE:SIZE for memory-mapped NOR, "
        "--flash nand:SIZE:ERASE)"
    )
