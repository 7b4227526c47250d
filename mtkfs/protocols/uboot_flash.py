"""U-Boot's flash commands and partition listings: commands built, answers checked (sans-I/O).

The back-ends move data between flash and a RAM staging buffer; :mod:`.uboot` moves it between
RAM and the host. Facts from ``../shared/reference/uboot.md`` §2.4–2.9 and U-Boot 2023.01's
cmd/sf.c, cmd/mmc.c, cmd/blk_common.c, cmd/nand.c, drivers/mtd/nand/raw/nand_util.c,
cmd/flash.c, cmd/mtdparts.c, disk/part_efi.c, disk/part_dos.c. Import the public names from
:mod:`mtkfs.protocols.uboot`, which re-exports them.

Why every check wants the exact success line with *our* numbers (``SF: 4096 bytes @ 0x10000
Written: OK``, ``16 blocks read: OK``): a dropped character in the echo could have run a
different command, and a message that merely contains "OK" proves nothing. Failures raise
TransportError carrying U-Boot's own words; an answer that is neither (garbage, a wrong
number) raises RemoteProtocolError. Even a success line is no proof that data reached the flash
(QEMU's CFI ``cp.b`` says ``done`` and writes 4 KiB of each block): callers verify by reading
back.

Numbers on command lines are hex without ``0x`` (U-Boot's hextoul), except device and hardware
partition numbers, which cmd/mmc.c and cmd/sf.c read as decimal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mtkfs.errors import LocalProtocolError, RemoteProtocolError, TransportError
from mtkfs.protocols.uboot_text import (
    checked_int,
    failure_message,
    find_error,
    hex_arg,
    nearest_multiple,
    printable,
    printed_size_range,
    text_lines,
)

BLOCK_BYTES = 512
#: eMMC boot and RPMB partitions come in multiples of 128 KiB (BOOT_SIZE_MULT, RPMB_SIZE_MULT).
EMMC_PART_GRANULE_BYTES = 128 << 10


def _said(what: str, text: str) -> str:
    return f"{what}: U-Boot says {failure_message(text)!r}"


# ---------------------------------------------------------------------------------------------
# SPI NOR: sf
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpiFlash:
    """What ``sf probe`` detected. ``name`` is device text: clean it before showing it."""

    name: str
    page_bytes: int
    erase_bytes: int
    size_bytes: int


_SF_DETECTED = re.compile(
    r"SF: Detected (?P<name>\S.*?) with page size (?P<page>[^,]+), erase size (?P<erase>[^,]+),"
    r" total (?P<total>[^,]+?)(?:, mapped at \S+)?\s*"
)


def sf_probe_command(bus: int | None = None, cs: int = 0) -> str:
    """``sf probe`` (the default bus and chip select) or ``sf probe BUS:CS`` (decimal)."""
    if bus is None:
        return "sf probe"
    return f"sf probe {checked_int(bus, 'SPI bus')}:{checked_int(cs, 'SPI chip select')}"


def parse_sf_probe(text: str) -> SpiFlash:
    """``SF: Detected sst25vf016b with page size 256 Bytes, erase size 4 KiB, total 2 MiB``.

    Sizes are print_size() text, rounded to a tenth of their unit; page and erase sizes are
    powers of two and the total a whole number of erase blocks, which makes them exact again.
    TransportError with U-Boot's message if nothing was detected.
    """
    for line in text_lines(text):
        match = _SF_DETECTED.fullmatch(line.strip())
        if match is None:
            continue
        page = _power_of_two(match["page"])
        erase = _power_of_two(match["erase"])
        total_range = printed_size_range(match["total"])
        total = None
        if page is not None and erase is not None and total_range is not None:
            total = nearest_multiple(*total_range, erase)
        if page is None or erase is None or total is None or total == 0:
            raise RemoteProtocolError(f"sf probe: cannot read the sizes in {printable(line)!r}")
        return SpiFlash(match["name"], page, erase, total)
    raise TransportError(_said("sf probe found no SPI flash", text))


def _power_of_two(printed: str) -> int | None:
    size_range = printed_size_range(printed)
    if size_range is None:
        return None
    low, high = size_range
    found = [1 << bit for bit in range(64) if low <= 1 << bit < high]
    return found[0] if len(found) == 1 else None


def sf_read_command(ram: int, offset: int, size_bytes: int) -> str:
    """``sf read RAM OFFSET SIZE``: flash → RAM."""
    return f"sf read {_ram(ram)} {hex_arg(offset, 'flash offset')} {_size(size_bytes)}"


def sf_write_command(ram: int, offset: int, size_bytes: int) -> str:
    """``sf write RAM OFFSET SIZE``: RAM → flash (erased beforehand by the caller)."""
    return f"sf write {_ram(ram)} {hex_arg(offset, 'flash offset')} {_size(size_bytes)}"


def sf_erase_command(offset: int, size_bytes: int) -> str:
    """``sf erase OFFSET SIZE`` — never ``+SIZE``, which silently rounds up to whole sectors;
    an unaligned range then fails (``ERROR -22``) instead of erasing more than asked."""
    return f"sf erase {hex_arg(offset, 'flash offset')} {_size(size_bytes)}"


_SF_RESULT = re.compile(
    r"SF: (\d+) bytes @ (0x[0-9a-f]+|0) (Read|Written|Erased): (OK|ERROR(?: (-?\d+))?)"
)


def check_sf_result(
    text: str, op: Literal["Read", "Written", "Erased"], offset: int, size_bytes: int
) -> None:
    """Require ``SF: <size> bytes @ 0x<offset> <op>: OK`` (cmd/sf.c prints the offset with
    ``%#x``, so offset 0 shows as ``0``). TransportError with U-Boot's words otherwise: ``ERROR
    -22`` (offset or length not aligned to the erase size), ``ERROR: flash area is locked``,
    ``No SPI flash selected. Please run `sf probe'``, ``Size exceeds partition or device
    limit``; RemoteProtocolError if the numbers are not ours."""
    what = f"sf {op.lower()} {size_bytes:#x} bytes at {offset:#x}"
    for line in text_lines(text):
        match = _SF_RESULT.search(line)
        if match is None:
            continue
        count, at, said_op, status = match.group(1, 2, 3, 4)
        if said_op != op or int(count) != size_bytes or int(at, 16) != offset:
            raise RemoteProtocolError(f"{what}: U-Boot reports another operation: {line!r}")
        if status != "OK":
            hint = (
                " (offset or length not a multiple of the erase size?)" if "-22" in status else ""
            )
            raise TransportError(f"{what}: U-Boot says {printable(line)!r}{hint}")
        return
    if find_error(text) is not None:
        raise TransportError(_said(what, text))
    raise RemoteProtocolError(f"{what}: no 'SF: … {op}: OK' line in {printable(text)!r}")


# ---------------------------------------------------------------------------------------------
# Block devices: mmc, virtio (512-byte blocks; the messages print decimal numbers)
# ---------------------------------------------------------------------------------------------


def mmc_dev_command(dev: int, hwpart: int | None) -> str:
    """``mmc dev DEV [HWPART]`` (decimal): 0 user area, 1 boot0, 2 boot1, 3 RPMB."""
    if hwpart is None:
        return f"mmc dev {checked_int(dev, 'mmc device')}"
    if not 0 <= checked_int(hwpart, "mmc hardware partition") <= 7:
        raise LocalProtocolError(f"mmc hardware partition {hwpart} is not 0..7")
    return f"mmc dev {checked_int(dev, 'mmc device')} {hwpart}"


def mmc_read_command(ram: int, block: int, count: int) -> str:
    """``mmc read RAM BLOCK COUNT`` (hex; 512-byte blocks)."""
    return f"mmc read {_ram(ram)} {_blocks(block, count)}"


def mmc_write_command(ram: int, block: int, count: int) -> str:
    """``mmc write RAM BLOCK COUNT`` (hex; 512-byte blocks)."""
    return f"mmc write {_ram(ram)} {_blocks(block, count)}"


def virtio_read_command(ram: int, block: int, count: int) -> str:
    """``virtio read RAM BLOCK COUNT`` (hex; 512-byte blocks)."""
    return f"virtio read {_ram(ram)} {_blocks(block, count)}"


def virtio_write_command(ram: int, block: int, count: int) -> str:
    """``virtio write RAM BLOCK COUNT`` (hex; 512-byte blocks)."""
    return f"virtio write {_ram(ram)} {_blocks(block, count)}"


_BLOCKS_RESULT = re.compile(r"(-?\d+) blocks (read|written|erased): (OK|ERROR)")
_BLOCKS_HEADER = re.compile(
    r"(?:read|write|erase): dev(?:ice)? (?:# )?\d+, block # \d+, count (\d+)"
)


def check_blocks_result(text: str, op: Literal["read", "written", "erased"], count: int) -> None:
    """Require ``<count> blocks <op>: OK`` (decimal, although the command took hex): the end of
    ``MMC read: dev # 0, block # 0, count 16 ... 16 blocks read: OK`` and of ``virtio read:
    device 0 block # 0, count 16384 ... 16384 blocks read: OK``. TransportError on ``ERROR``
    (``-5 blocks read: ERROR`` past the end) or a U-Boot error line; RemoteProtocolError if the
    count is not ours."""
    what = f"{count} blocks {op}"
    for line in text_lines(text):
        header = _BLOCKS_HEADER.search(line)
        if header is not None and int(header.group(1)) != count:
            raise RemoteProtocolError(f"{what}: U-Boot ran another count: {printable(line)!r}")
        match = _BLOCKS_RESULT.search(line)
        if match is None:
            continue
        if match.group(2) != op:
            raise RemoteProtocolError(f"{what}: U-Boot reports another operation: {line!r}")
        if match.group(3) != "OK":
            raise TransportError(f"{what}: U-Boot says {printable(line)!r}")
        if int(match.group(1)) != count:
            raise RemoteProtocolError(f"{what}: U-Boot reports {match.group(1)} blocks")
        return
    if find_error(text) is not None:
        raise TransportError(_said(what, text))
    raise RemoteProtocolError(f"{what}: no 'N blocks {op}: OK' line in {printable(text)!r}")


_DEVICE_HEADER = re.compile(r"\s*Device (\d+): ")
_BLK_CAPACITY = re.compile(r"\s*Capacity: .*\((\d+) x (\d+)\)\s*")


def parse_blk_info(text: str, dev: int = 0) -> tuple[int, int]:
    """(blocks, block_bytes) of device ``dev`` in ``virtio info`` (``usb info``, ``scsi
    info``…) output: ``Device 0: 1af4 VirtIO Block Device`` … ``Capacity: 8.0 MB = 0.0 GB
    (16384 x 512)``. Without ``Device N:`` headers there must be exactly one capacity line."""
    current: int | None = None
    found: list[tuple[int | None, tuple[int, int]]] = []
    for line in text_lines(text):
        header = _DEVICE_HEADER.match(line)
        if header is not None:
            current = int(header.group(1))
        capacity = _BLK_CAPACITY.fullmatch(line)
        if capacity is not None:
            found.append((current, (int(capacity.group(1)), int(capacity.group(2)))))
    mine = [size for number, size in found if number == dev]
    if not mine and len(found) == 1 and found[0][0] is None:
        mine = [found[0][1]]
    if len(mine) != 1:
        if find_error(text) is not None or "not available" in text:
            raise TransportError(_said(f"block device {dev}", text))
        raise RemoteProtocolError(f"block device {dev}: no single capacity line in {text!r:.300}")
    blocks, block_bytes = mine[0]
    if blocks == 0 or block_bytes == 0 or block_bytes & (block_bytes - 1):
        raise RemoteProtocolError(f"block device {dev}: {blocks} blocks of {block_bytes} bytes?")
    return blocks, block_bytes


def parse_virtio_info(text: str, dev: int = 0) -> int:
    """Capacity in bytes of virtio device ``dev`` from ``virtio info`` (see parse_blk_info)."""
    blocks, block_bytes = parse_blk_info(text, dev)
    return blocks * block_bytes


@dataclass(frozen=True)
class MmcInfo:
    """What ``mmc info`` tells about the selected card.

    U-Boot prints capacities with print_size(), one decimal of precision (``7.3 GiB``), so the
    user area is only known to lie in [user_bytes, user_max_bytes]: user_bytes is the smallest
    size consistent with the printout (every block below it exists), user_max_bytes the
    largest. Builds before 2013 print ``Capacity: <bytes>``: then both are equal. Boot and RPMB
    partitions are multiples of 128 KiB and printed in KiB/MiB, which makes them exact; None
    when not printed (SD cards, eMMC before 4.41) or zero.
    """

    user_bytes: int
    user_max_bytes: int
    boot_bytes: int | None = None
    rpmb_bytes: int | None = None

    @property
    def user_exact(self) -> bool:
        return self.user_bytes == self.user_max_bytes


_MMC_CAPACITY = re.compile(
    r"\s*(User Capacity|Capacity|Boot Capacity|RPMB Capacity): (.*?)(?: ENH)?(?: WRREL)?\s*"
)


def parse_mmc_info(text: str) -> MmcInfo:
    """Capacities from ``mmc info`` (cmd/mmc.c print_mmcinfo): ``User Capacity:`` (eMMC ≥ 4.41;
    ``Capacity:`` is the *selected* hardware partition, so it is the fallback), ``Boot
    Capacity:``, ``RPMB Capacity:``. TransportError if U-Boot reports an error instead."""
    printed: dict[str, str] = {}
    for line in text_lines(text):
        match = _MMC_CAPACITY.fullmatch(line)
        if match is not None:
            printed.setdefault(match.group(1), match.group(2))
    user_text = printed.get("User Capacity", printed.get("Capacity"))
    if user_text is None:
        if find_error(text) is not None or "no mmc device" in text:
            raise TransportError(_said("mmc info", text))
        raise RemoteProtocolError(f"mmc info: no capacity line in {printable(text)!r}")
    if user_text.isdigit():  # before print_size() (2012 and older): bytes
        low, high = int(user_text), int(user_text) + 1
    else:
        size_range = printed_size_range(user_text)
        if size_range is None:
            raise RemoteProtocolError(f"mmc info: capacity {printable(user_text)!r} unreadable")
        low, high = size_range
    user_low = -(-low // BLOCK_BYTES) * BLOCK_BYTES
    user_high = (high - 1) // BLOCK_BYTES * BLOCK_BYTES
    if user_low == 0 or user_high < user_low:
        raise RemoteProtocolError(f"mmc info: capacity {printable(user_text)!r} is no card")
    return MmcInfo(
        user_low, user_high, _emmc_part(printed.get("Boot Capacity")),
        _emmc_part(printed.get("RPMB Capacity")),
    )  # fmt: skip


def _emmc_part(printed: str | None) -> int | None:
    size_range = printed_size_range(printed) if printed is not None else None
    if size_range is None:
        return None
    return nearest_multiple(*size_range, EMMC_PART_GRANULE_BYTES) or None


# ---------------------------------------------------------------------------------------------
# Raw NAND: nand (byte offsets; reads and writes skip bad blocks)
# ---------------------------------------------------------------------------------------------


def nand_read_command(ram: int, offset: int, size_bytes: int) -> str:
    """``nand read RAM OFFSET SIZE``. Bad blocks are skipped, shifting the data after them."""
    return f"nand read {_ram(ram)} {hex_arg(offset, 'NAND offset')} {_size(size_bytes)}"


def nand_write_command(ram: int, offset: int, size_bytes: int) -> str:
    """``nand write RAM OFFSET SIZE`` (erased beforehand by the caller)."""
    return f"nand write {_ram(ram)} {hex_arg(offset, 'NAND offset')} {_size(size_bytes)}"


def nand_erase_command(offset: int, size_bytes: int) -> str:
    """``nand erase OFFSET SIZE`` (both block-aligned, or U-Boot refuses)."""
    return f"nand erase {hex_arg(offset, 'NAND offset')} {_size(size_bytes)}"


_NAND_RESULT = re.compile(r"(\d+) bytes (read|written): (OK|ERROR)")
_NAND_SKIPPED = re.compile(r"Skip(?:ping)? bad block (?:at\s+)?0x([0-9a-f]+)")


def check_nand_result(text: str, op: Literal["read", "written"], size_bytes: int) -> list[int]:
    """Require `` <size> bytes <op>: OK`` and return the offsets of the bad blocks U-Boot
    skipped (``Skipping bad block 0x00040000`` on reads, ``Skip bad block …`` on writes):
    the data past each one comes from the next good block, which the transport must report.
    TransportError on ``ERROR``, ``Attempt to …`` or other U-Boot errors."""
    what = f"nand {op} {size_bytes:#x} bytes"
    skipped = [int(m.group(1), 16) for m in _NAND_SKIPPED.finditer(text)]
    for line in text_lines(text):
        match = _NAND_RESULT.search(line)
        if match is None:
            continue
        if match.group(2) != op:
            raise RemoteProtocolError(f"{what}: U-Boot reports another operation: {line!r}")
        if match.group(3) != "OK":
            raise TransportError(_said(what, text))
        if int(match.group(1)) != size_bytes:
            raise RemoteProtocolError(f"{what}: U-Boot reports {match.group(1)} bytes")
        return skipped
    if find_error(text) is not None:
        raise TransportError(_said(what, text))
    raise RemoteProtocolError(f"{what}: no 'N bytes {op}: OK' line in {printable(text)!r}")


_NAND_ERASE_HEADER = re.compile(
    r"NAND erase: device \d+ (?:offset 0x([0-9a-f]+), size 0x([0-9a-f]+)|whole chip)"
)


def check_nand_erase_result(text: str, offset: int, size_bytes: int) -> list[int]:
    """Require ``NAND erase: device 0 offset 0x…, size 0x…`` with our numbers (``… whole
    chip`` when the range is the chip), then a line ``OK``; return the bad blocks skipped
    (``Skipping bad block at  0x…``)."""
    what = f"nand erase {size_bytes:#x} bytes at {offset:#x}"
    header = _NAND_ERASE_HEADER.search(text)
    if header is not None:
        said = (0, None) if header.group(1) is None else tuple(int(g, 16) for g in header.groups())
        if said[0] != offset or said[1] not in (None, size_bytes):
            raise RemoteProtocolError(f"{what}: U-Boot erased another range: {header.group(0)!r}")
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text_lines(text)]
    if "ERROR" in lines or find_error(text) is not None:
        raise TransportError(_said(what, text))
    if header is None or "OK" not in lines:
        raise RemoteProtocolError(f"{what}: no 'OK' after the erase in {printable(text)!r}")
    return [int(m.group(1), 16) for m in _NAND_SKIPPED.finditer(text)]


NAND_BAD_COMMAND = "nand bad"
NAND_INFO_COMMAND = "nand info"

_NAND_INFO_ERASE = re.compile(r"\s*Erase size\s+(\d+) b\s*")


def parse_nand_erase_bytes(text: str) -> int:
    """Device 0's ``Erase size  131072 b`` from ``nand info`` (cmd/nand.c
    nand_print_and_set_info): the unit every erase and bad block is counted in."""
    sizes = [
        int(m.group(1)) for line in text_lines(text) if (m := _NAND_INFO_ERASE.fullmatch(line))
    ]
    if not sizes:
        if "no devices available" in text or find_error(text) is not None:
            raise TransportError(_said("nand info", text))
        raise RemoteProtocolError(f"nand info: no 'Erase size' line in {printable(text)!r}")
    if sizes[0] <= 0 or sizes[0] & (sizes[0] - 1):
        raise RemoteProtocolError(f"nand info: erase size {sizes[0]} is not a power of two")
    return sizes[0]


_NAND_BAD_HEADER = re.compile(r"Device (\d+) bad blocks:")
_NAND_BAD_ROW = re.compile(r"\s*([0-9a-f]{8,16})\s*")


def parse_nand_bad(text: str, erase_bytes: int) -> list[int]:
    """The bad-block offsets ``nand bad`` lists (``Device 0 bad blocks:`` then one
    ``  00040000`` per block, cmd/nand.c). Each must be a multiple of the erase block: a row
    that is not, or any other line after the header, is garbage rather than a guess."""
    lines = [line for line in text_lines(text) if line.strip()]
    if not lines or _NAND_BAD_HEADER.fullmatch(lines[0].strip()) is None:
        if find_error(text) is not None:
            raise TransportError(_said("nand bad", text))
        raise RemoteProtocolError(f"nand bad: no 'Device N bad blocks:' in {printable(text)!r}")
    blocks = []
    for line in lines[1:]:
        match = _NAND_BAD_ROW.fullmatch(line)
        if match is None:
            raise RemoteProtocolError(f"nand bad: unexpected line {line!r}")
        offset = int(match.group(1), 16)
        if erase_bytes <= 0 or offset % erase_bytes:
            raise RemoteProtocolError(
                f"nand bad: {offset:#x} is not a multiple of the {erase_bytes:#x}-byte block"
            )
        blocks.append(offset)
    return blocks


# ---------------------------------------------------------------------------------------------
# Memory-mapped CFI NOR: protect, erase, cp (cmd/flash.c, drivers/mtd/cfi_flash.c)
# ---------------------------------------------------------------------------------------------


def protect_off_command(start: int, size_bytes: int) -> str:
    """``protect off START +SIZE`` (addresses, not offsets: CFI flash is memory-mapped)."""
    return f"protect off {hex_arg(start, 'flash address')} +{_size(size_bytes)}"


def flash_erase_command(start: int, size_bytes: int) -> str:
    """``erase START +SIZE``: ``+`` rounds up to the sector end, so pass sector-aligned
    ranges (from ``flinfo``)."""
    return f"erase {hex_arg(start, 'flash address')} +{_size(size_bytes)}"


_PROTECT_RESULT = re.compile(r"\s*(Un-)?Protected (\d+) sectors\s*")
_ERASED_RESULT = re.compile(r"\s*Erased (\d+) sectors\s*")
_PROTECTED_WARNING = re.compile(r"Warning: (\d+) protected sectors will not be erased")


def check_protect_result(text: str) -> int:
    """The sector count of ``Un-Protected N sectors`` (``protect off``)."""
    for line in text_lines(text):
        match = _PROTECT_RESULT.fullmatch(line)
        if match is not None and match.group(1):
            return int(match.group(2))
    raise TransportError(_said("protect off", text))


def check_flash_erase_result(text: str) -> int:
    """The sector count of ``Erased N sectors``. U-Boot prints that line even when it skipped
    protected sectors (``- Warning: 1 protected sectors will not be erased!``): that warning is
    a TransportError here, since the range is not erased."""
    warning = _PROTECTED_WARNING.search(text)
    if warning is not None:
        raise TransportError(
            f"erase: U-Boot skipped {warning.group(1)} protected sector(s); run protect off first"
        )
    if find_error(text) is not None:
        raise TransportError(_said("erase", text))
    for line in text_lines(text):
        match = _ERASED_RESULT.fullmatch(line)
        if match is not None:
            return int(match.group(1))
    raise RemoteProtocolError(f"erase: no 'Erased N sectors' line in {printable(text)!r}")


def check_flash_copy_result(text: str) -> None:
    """Require ``Copy to Flash... done`` after ``cp`` into CFI flash. ``done`` proves nothing
    (QEMU virt keeps only the first 4 KiB of each block): the caller must read back."""
    for line in text_lines(text):
        if line.strip() == "Copy to Flash... done":
            return
    raise TransportError(_said("copy to flash", text))


# ---------------------------------------------------------------------------------------------
# Partition listings: the mtdparts command, part list (GPT and DOS)
# ---------------------------------------------------------------------------------------------

_MTD_DEVICE = re.compile(r"device (\S+) <(.*)>, # parts = (\d+)")
_MTD_PART = re.compile(
    r" ?(\d+): (.*)(0x[0-9a-f]{8,16})\t(?:0x[0-9a-f]{8,16}(?: | \(!\))\t)?(0x[0-9a-f]{8,16})\t\d+"
)
_MTD_TABLE_HEAD = re.compile(r" #: name\t\tsize\t\t(?:net size\t)?offset\t\tmask_flags")


def parse_mtdparts_devices(text: str) -> dict[str, list[tuple[str, int, int]]]:
    """Each device's partitions from the ``mtdparts`` command: ``{"nor1": [(name, offset,
    size), …]}``. Names are device text, returned raw (minus %-20s padding)."""
    devices: dict[str, list[tuple[str, int, int]]] = {}
    expected: dict[str, int] = {}
    current: str | None = None
    for line in text_lines(text):
        device = _MTD_DEVICE.fullmatch(line)
        if device is not None:
            current = device.group(1)
            if current in devices:
                raise RemoteProtocolError(f"mtdparts: device {current!r} listed twice")
            devices[current] = []
            expected[current] = int(device.group(3))
            continue
        if current is None or _MTD_TABLE_HEAD.fullmatch(line):
            continue
        part = _MTD_PART.fullmatch(line)
        if part is None:
            current = None  # the table ended ("active partition: …", "defaults:")
            continue
        number, name, size, offset = part.group(1, 2, 3, 4)
        if int(number) != len(devices[current]):
            raise RemoteProtocolError(f"mtdparts: partition {number} out of order: {line!r}")
        devices[current].append((name.rstrip(" "), int(offset, 16), int(size, 16)))
    for name, parts in devices.items():
        if len(parts) != expected[name]:
            raise RemoteProtocolError(
                f"mtdparts: device {name} says {expected[name]} partitions, {len(parts)} listed"
            )
    return devices


def parse_mtdparts_listing(text: str, device: str | None = None) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each partition the ``mtdparts`` command lists::

        device nor1 <nor1>, # parts = 3
         #: name		size		offset		mask_flags
         0: uboot               0x00100000	0x00000000	0

    ``[]`` for ``no partitions defined`` (or no output: no ``mtdids``); TransportError for
    U-Boot's complaints about ``$mtdparts`` (``nor1: partition (BOOT) size alignment
    incorrect``). With several devices, name the one wanted (``nor0``, ``nand0``); mixing them
    would be wrong.
    """
    devices = parse_mtdparts_devices(text)
    if not devices:
        said = [line.strip() for line in text_lines(text) if line.strip()]
        if said and said != ["no partitions defined"]:  # "nor1: partition (BOOT) size alignment…"
            raise TransportError(f"mtdparts: U-Boot says {printable(' / '.join(said))!r}")
        return []
    if device is not None:
        if device not in devices:
            raise TransportError(f"mtdparts lists no device {device!r} (it lists {list(devices)})")
        return devices[device]
    if len(devices) > 1:
        raise RemoteProtocolError(f"mtdparts lists several devices {list(devices)}: name one")
    return next(iter(devices.values()), [])


_GPT_HEAD = "Part\tStart LBA\tEnd LBA\t\tName"
_GPT_ENTRY = re.compile(r"\s*(\d+)\t0x([0-9a-f]+)\t0x([0-9a-f]+)\t\"(.*)\"")
_GPT_DETAIL = re.compile(r"\t(?:Attributes|Type GUID|Type UUID|Partition GUID|Partition UUID"
                         r"|attrs:\t.*|type:\t.*|guid:\t.*|uuid:\t.*|\t\(.*\))")  # fmt: skip
_GPT_HEAD_OLD = re.compile(r"Part  Start LBA  End LBA\s*")  # before 2012
_GPT_ENTRY_OLD = re.compile(r"\s*gpt(\d+)  0x([0-9A-Fa-f]+)    0x([0-9A-Fa-f]+)\s*")
_DOS_HEAD = re.compile(
    r"Part\tStart Sector\tNum Sectors(?:\tUUID\t\tType)?\s*"
    r"|Partition     Start Sector     Num Sectors     Type\s*"  # before 2013
)
_DOS_ENTRY = re.compile(
    r"\s*(\d+)\t\t?\s*(\d+)\s*\t\s*(\d+)\s*\t(?:[0-9a-f]{8}-[0-9a-f]{2}\t)?\s*[0-9a-f]{1,2}"
    r"( Extd)?(?: Boot)?\s*"
)


def parse_part_list(text: str) -> list[tuple[int, int, int, str]]:
    """(number, start_lba, size_lbas, name) of each partition ``part list <if> <dev>`` prints.

    GPT (disk/part_efi.c: ``%3d\\t0x%08llx\\t0x%08llx\\t"%s"`` with an *inclusive* end LBA,
    then attrs/type/guid lines) and DOS/MBR (disk/part_dos.c: decimal start and size; names are
    empty; extended containers are left out, their logical partitions are listed). ``[]`` for
    ``## Unknown partition table``. Names are device text, returned raw. Once the table has
    begun, any line that is not part of it is an error: a lost line could hide a partition.
    """
    kind: str | None = None
    found: list[tuple[int, int, int, str]] = []
    for line in text_lines(text):
        if not line.strip():
            continue
        if kind is None:
            if line == _GPT_HEAD or _GPT_HEAD_OLD.fullmatch(line):
                kind = "gpt"
            elif _DOS_HEAD.fullmatch(line):
                kind = "dos"
            elif line.startswith("## Unknown partition table"):
                return []
            continue  # "Partition Map for VirtIO device 0  --   Partition Type: EFI", warnings
        if kind == "gpt":
            if _GPT_DETAIL.fullmatch(line):
                continue
            gpt = _GPT_ENTRY.fullmatch(line) or _GPT_ENTRY_OLD.fullmatch(line)
            if gpt is None:
                raise RemoteProtocolError(f"part list: unexpected line in GPT table: {line!r:.120}")
            first, last = int(gpt.group(2), 16), int(gpt.group(3), 16)
            if last < first:
                raise RemoteProtocolError(f"part list: partition ends before it starts: {line!r}")
            name = gpt.group(4) if gpt.re is _GPT_ENTRY else ""
            found.append((int(gpt.group(1)), first, last - first + 1, name))
        else:
            dos = _DOS_ENTRY.fullmatch(line)
            if dos is None:
                raise RemoteProtocolError(f"part list: unexpected line in DOS table: {line!r:.120}")
            if dos.group(4) is None:
                found.append((int(dos.group(1)), int(dos.group(2)), int(dos.group(3)), ""))
    if kind is None:
        if find_error(text) is not None:
            raise TransportError(_said("part list", text))
        raise RemoteProtocolError(f"part list: no partition table header in {printable(text)!r}")
    numbers = [entry[0] for entry in found]
    if len(set(numbers)) != len(numbers):
        raise RemoteProtocolError(f"part list: partition numbers repeat: {numbers}")
    return found


# ---------------------------------------------------------------------------------------------


def _ram(ram: int) -> str:
    return hex_arg(ram, "RAM address")


def _size(size_bytes: int) -> str:
    return hex_arg(size_bytes, "size in bytes", minimum=1)


def _blocks(block: int, count: int) -> str:
    return f"{hex_arg(block, 'first block')} {hex_arg(count, 'block count', minimum=1)}"
