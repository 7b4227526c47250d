"""The simulated U-Boot's CFI NOR and MTD commands: flinfo, erase, protect, mtdparts, mtd, part.

Memory-mapped NOR as cmd/flash.c and drivers/mtd/cfi_flash.c handle it (``Copy to Flash...``
from ``cp``, sector ranges, protection), with QEMU 7.2's write bug when the board asks for it:
only the first 4 KiB of each sector keeps what is written, and ``done`` is printed anyway.
``mtdparts`` and ``mtd list`` read ``$mtdids``/``$mtdparts`` the two ways U-Boot does
(:mod:`mtkfs.testing.sim_uboot_parts`); ``sf``/``nand`` use :func:`arg_off` and
:func:`arg_off_size` (cmd/legacy-mtd-utils.c) for offsets and partition names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mtkfs.testing.sim_uboot_board import (
    CMD_RET_USAGE,
    Backing,
    CfiBank,
    Command,
    MiB,
    block_reader,
    dectoul,
    erase_flash,
    hextoul,
    program_flash,
    str2off,
)
from mtkfs.testing.sim_uboot_parts import (
    MtdDevice,
    MtdPart,
    MtdpartsError,
    mtd_list_parts,
    mtdparts_table,
    part_list_text,
)

if TYPE_CHECKING:
    from mtkfs.testing.sim_uboot_machine import Machine

__all__ = ["NOR_COMMANDS", "arg_off", "arg_off_size", "cfi_write", "mtd_devices"]


async def arg_off_size(
    m: Machine, args: list[str], chip_bytes: int, kind: str
) -> tuple[int, int, int, int] | None:
    """cmd/legacy-mtd-utils.c mtd_arg_off_size(): (device, offset, size, maxsize) from
    ``offset|partition [size]``; prints ``device 0 offset 0x…, size 0x…`` (or ``whole
    chip``) on success, U-Boot's complaint and None otherwise."""
    dev = 0
    if not args:
        off, size, maxsize = 0, chip_bytes, chip_bytes
    else:
        found = await arg_off(m, args[0], chip_bytes, kind)
        if found is None:
            return None
        dev, off, size, maxsize = found
        if len(args) > 1:
            parsed = str2off(args[1])
            if parsed is None:
                await m.puts(f"'{args[1]}' is not a number\n")
                return None
            size = parsed
            if size > maxsize:
                await m.puts("Size exceeds partition or device limit\n")
                return None
    if size == chip_bytes:
        await m.puts(f"device {dev} whole chip\n")
    else:
        await m.puts(f"device {dev} offset 0x{off:x}, size 0x{size:x}\n")
    return dev, off, size, maxsize


async def arg_off(
    m: Machine, arg: str, chip_bytes: int, kind: str
) -> tuple[int, int, int, int] | None:
    """mtd_arg_off(): a hex offset, or a partition (by name, or ``nor0,1``) from mtdparts.
    Returns (device number, offset, size, maxsize); None after U-Boot's complaint."""
    off = str2off(arg)
    if off is not None:
        if off >= chip_bytes:
            await m.puts("Offset exceeds device limit\n")
            return None
        return 0, off, chip_bytes - off, chip_bytes - off
    try:
        table = mtdparts_table(m.env, mtd_devices(m))
    except MtdpartsError as error:
        if str(error):
            await m.puts(f"{error}\n")
        return None
    found = None
    for device, _mtd_id, parts in table:
        found = found or next(((device, p) for p in parts if p.name == arg), None)
    if found is None:
        problem, found = _partition_by_number(arg, table)
        if found is None:
            await m.puts(problem)
            return None
    device, part = found
    if device.kind != kind:
        types = {"nor": 1, "nand": 2}
        await m.puts(f"not same typ {types[device.kind]} != {types[kind]}\n")
        return None
    return dectoul(device.name[len(device.kind) :]), part.offset, part.size, part.size


def _partition_by_number(
    arg: str, table: list[tuple[MtdDevice, str, list[MtdPart]]]
) -> tuple[str, tuple[MtdDevice, MtdPart] | None]:
    """find_dev_and_part()'s ``<type><num>,<part>`` form: (complaint, found)."""
    match = re.fullmatch(r"(nor|nand|onenand|spi-nand)(\d*)(.*)", arg, re.DOTALL)
    if match is None:
        return f"incorrect device type in {arg}\n", None
    if not match.group(2):
        return f"incorrect device number in {arg}\n", None
    rest = match.group(3)
    if not rest.startswith(",") or len(rest) == 1:
        return "no partition number specified\n", None
    digits = re.match(r"\d*", rest[1:])
    assert digits is not None
    if digits.end() != len(rest) - 1:
        return f"unexpected trailing character '{rest[1 + digits.end()]}'\n", None
    name = match.group(1) + str(int(match.group(2)))
    device = next(((d, parts) for d, _i, parts in table if d.name == name), None)
    if device is None:
        return f"no such device {name}\n", None
    number = int(rest[1:]) if digits.end() else 0
    if number >= len(device[1]):
        return "no such partition\n", None
    return "", (device[0], device[1][number])


# ---------------------------------------------------------------------------------------------
# CFI NOR: flinfo, erase, protect, and programming (cp, loadx into flash)


def cfi_write(m: Machine, addr: int, data: bytes) -> str | None:
    """flash_write(): program ``data`` at ``addr``; None if U-Boot would say ``done``, else
    what it prints instead. With the board's ``cfi_write_bug`` only the first 4 KiB of each
    sector keeps what is written (QEMU 7.2); with ``cfi_write_bug_timeout`` a write that
    starts in those 4 KiB and runs past them ends in QEMU's timeout."""
    end = addr + len(data) - 1
    first, last = m.mem.cfi_bank(addr), m.mem.cfi_bank(end)
    if first is None or last is None:
        return "Outside available Flash\n"
    banks = [bank for bank in m.cfi if bank.base <= end and addr < bank.base + bank.size]
    for bank in banks:
        for index in range(bank.sector_count):
            start = bank.sector_start(index)
            if bank.protect[index] and start <= end and addr < start + bank.sector_bytes:
                return "Can't write to protected Flash sectors\n"
    for bank in banks:
        lo = max(addr, bank.base)
        hi = min(end + 1, bank.base + bank.size)
        old = bank.backing.read(lo - bank.base, hi - lo)
        new = data[lo - addr : hi - addr]
        if any(o & n != n for o, n in zip(old, new, strict=True)):
            return "Flash not Erased\n"
    for bank in banks:
        pos = max(addr, bank.base)
        stop = min(end + 1, bank.base + bank.size)
        while pos < stop:
            index = (pos - bank.base) // bank.sector_bytes
            sector = bank.sector_start(index)
            upto = min(stop, sector + bank.sector_bytes)
            if m.board.cfi_write_bug:
                sticky = min(upto, sector + 0x1000)
                if pos < sticky:
                    program_flash(bank.backing, pos - bank.base, data[pos - addr : sticky - addr])
                    if m.board.cfi_write_bug_timeout and upto > sticky:
                        word = int.from_bytes(bank.backing.read(sector - bank.base, 4), "little")
                        return (
                            f"Flash buffer write timeout at address {sector:x} data "
                            f"{word:x}\nTimeout writing to Flash\n"
                        )
            else:
                program_flash(bank.backing, pos - bank.base, data[pos - addr : upto - addr])
            pos = upto
    return None


def _flash_info(bank: CfiBank, number: int) -> str:
    """flash_print_info() after ``\\nBank # N: ``."""
    spec = bank.spec
    size = f"{bank.size >> 20} MB" if bank.size >= MiB else f"{bank.size >> 10} kB"
    lines = [
        f"\nBank # {number}: CFI conformant flash (16 x 16)  Size: {size} in "
        f"{bank.sector_count} Sectors\n",
        f"  Intel Extended command set, Manufacturer ID: 0x{spec.manufacturer_id:02X}, "
        f"Device ID: 0x{spec.device_id:04X}\n",
        "  Erase timeout: 16384 ms, write timeout: 3 ms\n",
        "  Buffer write timeout: 3 ms, buffer size: 2048 bytes\n",
        "\n  Sector Start Addresses:",
    ]
    for index in range(bank.sector_count):
        if index % 5 == 0:
            lines.append("\n")
        lines.append(f"  {bank.sector_start(index):08X}   {'RO' if bank.protect[index] else '  '} ")
    lines.append("\n")
    return "".join(lines)


async def do_flinfo(m: Machine, argv: list[str], repeat: bool) -> int:
    """The banks' geometry and sector list (a Ctrl-C poll per sector, as U-Boot does)."""
    numbers = list(range(1, len(m.cfi) + 1))
    if len(argv) > 1:
        number = hextoul(argv[1])
        if not 1 <= number <= len(m.cfi):
            await m.puts(f"Only FLASH Banks # 1 ... # {len(m.cfi)} supported\n")
            return 1
        numbers = [number]
    for number in numbers:
        bank = m.cfi[number - 1]
        await m.puts(_flash_info(bank, number))
        if m.poll_ctrlc(bank.sector_count):
            break
    return 0


def _addr_spec(m: Machine, first_text: str, last_text: str) -> tuple[int, int] | None:
    """cmd/flash.c addr_spec(): ``START END`` or ``START +LEN`` (rounded up to a sector)."""
    first = str2off(first_text)
    plus = last_text.startswith("+")
    last = str2off(last_text[1:] if plus else last_text)
    if first is None or last is None:
        return None
    if plus:
        last = first + last - 1
        bank = m.mem.cfi_bank(last)
        if bank is None:
            return None
        index = (last - bank.base) // bank.sector_bytes
        last = bank.sector_start(index) + bank.sector_bytes - 1
    return first, last


def _sector_ranges(m: Machine, first: int, last: int) -> tuple[list[tuple[CfiBank, int, int]], str]:
    """flash_fill_sect_ranges(): [(bank, first sector, last sector)] or U-Boot's error."""
    ranges = []
    for bank in m.cfi:
        if first > last:
            break
        bank_end = bank.base + bank.size - 1
        s_first = s_last = -1
        for index in range(bank.sector_count):
            start = bank.sector_start(index)
            sector_end = start + bank.sector_bytes - 1
            if first > sector_end or last < start:
                continue
            if first == start:
                s_first = index
            if last == sector_end:
                s_last = index
        if s_first >= 0:
            if s_last < 0:
                if last > bank_end:
                    s_last = bank.sector_count - 1
                else:
                    return [], "Error: end address not on sector boundary\n"
            if s_last < s_first:
                return [], "Error: end sector precedes start sector\n"
            ranges.append((bank, s_first, s_last))
            first = bank.sector_start(s_last) + bank.sector_bytes
        elif bank.base <= first < bank_end:
            return [], "Error: start address not on sector boundary\n"
    if not ranges:
        return [], "Error: start and/or end address not on sector boundary\n"
    return ranges, ""


async def _flash_erase(m: Machine, bank: CfiBank, s_first: int, s_last: int) -> int:
    protected = sum(bank.protect[s_first : s_last + 1])
    if protected:
        await m.puts(f"- Warning: {protected} protected sectors will not be erased!\n")
    else:
        await m.puts("\n")
    physical = bank.spec.physical_erase_bytes or bank.sector_bytes
    for index in range(s_first, s_last + 1):
        if m.poll_ctrlc(1):
            await m.puts("\n")
            return 1
        if not bank.protect[index]:
            offset = index * bank.sector_bytes
            start = offset - offset % physical
            erase_flash(bank.backing, start, min(physical, bank.size - start))
            await m.puts(".")
    await m.puts(" done\n")
    return 0


async def do_erase(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) < 2:
        return CMD_RET_USAGE
    if argv[1] == "all":
        rc = 0
        for number, bank in enumerate(m.cfi, 1):
            await m.puts(f"Erase Flash Bank # {number} ")
            rc = await _flash_erase(m, bank, 0, bank.sector_count - 1)
        return rc
    if len(argv) != 3:
        return CMD_RET_USAGE
    if argv[1] == "bank":
        number = hextoul(argv[2])
        if not 1 <= number <= len(m.cfi):
            await m.puts(f"Only FLASH Banks # 1 ... # {len(m.cfi)} supported\n")
            return 1
        await m.puts(f"Erase Flash Bank # {number} ")
        bank = m.cfi[number - 1]
        return await _flash_erase(m, bank, 0, bank.sector_count - 1)
    spec = _addr_spec(m, argv[1], argv[2])
    if spec is None:
        await m.puts("Bad address format\n")
        return 1
    if spec[0] >= spec[1]:
        return CMD_RET_USAGE
    ranges, error = _sector_ranges(m, *spec)
    if error:
        await m.puts(error)
        return 1
    erased = 0
    for bank, s_first, s_last in ranges:
        erased += s_last - s_first + 1
        if await _flash_erase(m, bank, s_first, s_last):
            return 1
    await m.puts(f"Erased {erased} sectors\n")
    return 0


async def do_protect(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) < 3 or argv[1] not in ("on", "off"):
        return CMD_RET_USAGE
    on = argv[1] == "on"
    prefix = "" if on else "Un-"
    if argv[2] == "all":
        for number, bank in enumerate(m.cfi, 1):
            await m.puts(f"{prefix}Protect Flash Bank # {number}\n")
            bank.protect = [on] * bank.sector_count
        return 0
    if len(argv) != 4:
        return CMD_RET_USAGE
    spec = _addr_spec(m, argv[2], argv[3])
    if spec is None:
        await m.puts("Bad address format\n")
        return 1
    ranges, error = _sector_ranges(m, *spec)
    if error:
        await m.puts(error)
        return 1
    count = 0
    for bank, s_first, s_last in ranges:
        for index in range(s_first, s_last + 1):
            bank.protect[index] = on
        count += s_last - s_first + 1
    await m.puts(f"{prefix}Protected {count} sectors\n")
    return 0


# ---------------------------------------------------------------------------------------------
# MTD: mtdparts, mtd list, part list


def mtd_devices(m: Machine) -> list[MtdDevice]:
    """The board's MTD devices in U-Boot's order: CFI banks, SPI NOR, NAND."""
    devices = [
        MtdDevice(
            f"nor{i}",
            "nor",
            bank.size,
            bank.sector_bytes,
            1,
            device="flash@0",
            parent="root_driver",
            driver="cfi_flash",
            path="/flash@0",
        )
        for i, bank in enumerate(m.cfi)
    ]
    if m.sf is not None and m.board.sf is not None:
        devices.append(
            MtdDevice(
                f"nor{len(devices)}",
                "nor",
                m.sf.size,
                m.board.sf.erase_bytes,
                1,
                device="flash@0",
                parent="spi@0",
                driver="jedec_spi_nor",
                path="/spi@0/flash@0",
            )
        )
    if m.nand is not None and m.board.nand is not None:
        spec = m.board.nand
        devices.append(
            MtdDevice(
                "nand0",
                "nand",
                m.nand.size,
                spec.erase_bytes,
                spec.page_bytes,
                oob_bytes=spec.oob_bytes,
            )
        )
    return devices


async def do_mtdparts(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) == 2 and argv[1] in ("default", "delall"):
        if argv[1] == "delall":
            m.env.pop("mtdparts", None)
        return 0
    try:
        table = mtdparts_table(m.env, mtd_devices(m))
    except MtdpartsError as error:
        if str(error):
            await m.puts(f"{error}\n")
        return 1
    if len(argv) != 1:
        return CMD_RET_USAGE
    out = []
    if "mtdparts" not in m.env:
        out.append("mtdparts variable not set, see 'help mtdparts'\n")
    for device, mtd_id, parts in table:
        out.append(f"\ndevice {device.name} <{mtd_id}>, # parts = {len(parts)}\n")
        out.append(" #: name\t\tsize\t\toffset\t\tmask_flags\n")
        for number, part in enumerate(parts):
            out.append(
                f"{number:2d}: {part.name:<20}0x{part.size:08x}\t0x{part.offset:08x}\t"
                f"{part.mask_flags}\n"
            )
    if not table:
        out.append("no partitions defined\n")
    elif table[0][2]:
        device, _, parts = table[0]
        part = parts[0]
        out.append(
            f"\nactive partition: {device.name},0 - ({part.name}) 0x{part.size:08x} "
            f"@ 0x{part.offset:08x}\n"
        )
    out.append("\ndefaults:\nmtdids  : \nmtdparts: \n")
    await m.puts("".join(out))
    return 0


async def do_mtd(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) != 2 or argv[1] != "list":
        return CMD_RET_USAGE
    devices = mtd_devices(m)
    out = []
    current = m.env.get("mtdparts", "") + "|" + m.env.get("mtdids", "")
    listing = []
    for device in devices:
        parts, warnings = mtd_list_parts(m.env, device)
        if m.flash.mtd_probed != current:
            out += [line + "\n" for line in warnings]
        listing.append((device, parts))
    m.flash.mtd_probed = current
    out.append("List of MTD devices:\n")
    for device, parts in listing:
        out.append(f"* {device.name}\n")
        if device.device:
            out += [
                f"  - device: {device.device}\n",
                f"  - parent: {device.parent}\n",
                f"  - driver: {device.driver}\n",
                f"  - path: {device.path}\n",
            ]
        kind = "NOR flash" if device.kind == "nor" else "NAND flash"
        out += [
            f"  - type: {kind}\n",
            f"  - block size: 0x{device.erase_bytes:x} bytes\n",
            f"  - min I/O: 0x{device.write_bytes:x} bytes\n",
        ]
        if device.oob_bytes:
            out += [
                f"  - OOB size: {device.oob_bytes} bytes\n",
                f"  - OOB available: {device.oob_bytes - 2} bytes\n",
            ]
        out.append(f'  - 0x{0:012x}-0x{device.size:012x} : "{device.name}"\n')
        for part in parts:
            out.append(
                f'\t  - 0x{part.offset:012x}-0x{part.offset + part.size:012x} : "{part.name}"\n'
            )
    if not devices:
        out.append("No MTD device found\n")
    await m.puts("".join(out))
    return 0 if devices else 1


async def do_part(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) < 4 or argv[1] != "list":
        return CMD_RET_USAGE
    interface, dev = argv[2], dectoul(argv[3].split(":")[0])
    backing: Backing | None = None
    kind = ""
    if interface == "virtio" and dev < len(m.virtio):
        backing, kind = m.virtio[dev], "VirtIO"
    elif interface == "mmc" and dev < len(m.mmc):
        parts = m.mmc[dev]
        hwpart = m.flash.mmc_part if dev == m.flash.mmc_dev else 0
        backing, kind = parts[hwpart], "MMC"
    if backing is None:
        return 1
    text = part_list_text(kind, dev, block_reader(backing), backing.size // 512)
    await m.puts(text)
    return 0


def _mtd_repeatable(argv: list[str]) -> bool:
    return len(argv) > 1 and argv[1] in ("list", "bad")


NOR_COMMANDS = [
    Command(
        "flinfo",
        2,
        True,
        "print FLASH memory information",
        "\n    - print information for all FLASH memory banks\nflinfo N\n    - print "
        "information for FLASH memory bank # N",
        do_flinfo,
    ),
    Command(
        "erase",
        3,
        False,
        "erase FLASH memory",
        "start end\n    - erase FLASH from addr 'start' to addr 'end'\nerase start +len\n"
        "    - erase FLASH from addr 'start' to the end of sect w/addr 'start'+'len'-1\n"
        "erase bank N\n    - erase FLASH bank # N\nerase all\n    - erase all FLASH banks",
        do_erase,
    ),
    Command(
        "protect",
        4,
        False,
        "enable or disable FLASH write protection",
        "on  start end\n    - protect FLASH from addr 'start' to addr 'end'\nprotect on "
        "start +len\n    - protect FLASH from addr 'start' to end of sect w/addr 'start'+"
        "'len'-1\nprotect off start end\n    - make FLASH from addr 'start' to addr 'end' "
        "writable\nprotect off start +len\n    - make FLASH from addr 'start' to end of "
        "sect w/addr 'start'+'len'-1 wrtable",
        do_protect,
    ),
    Command(
        "mtdparts",
        6,
        False,
        "define flash/nand partitions",
        "\n    - list partition table\nmtdparts delall\n    - delete all partitions\n"
        "mtdparts default\n    - reset partition table to defaults",
        do_mtdparts,
    ),
    Command(
        "mtd",
        16,
        _mtd_repeatable,
        "MTD utils",
        "- generic operations on memory technology devices\n\nmtd list",
        do_mtd,
    ),
    Command(
        "part",
        16,
        True,
        "disk partition related commands",
        "list <interface> <dev>\n    - print a device's partition table",
        do_part,
    ),
]
