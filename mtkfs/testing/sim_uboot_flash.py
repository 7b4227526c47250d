"""The simulated U-Boot's flash commands: sf, mmc, nand, virtio.

Messages as U-Boot 2023.01 prints them (cmd/sf.c with spi-nor-core.c, cmd/mmc.c,
cmd/nand.c with nand_util.c, cmd/virtio.c with blk_common.c), numbers included: ``sf``
prints offsets with U-Boot's ``%#x`` (``0x0`` for zero), ``mmc``/``virtio`` print block
numbers in decimal although they read them in hex, ``nand`` skips bad blocks so data after
one shifts. Flash is programmed like flash: a write can only clear bits (old AND new),
erasing sets 0xFF. CFI NOR, ``mtd``, ``mtdparts`` and ``part`` are in
:mod:`mtkfs.testing.sim_uboot_nor`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtkfs.testing.sim_uboot_board import (
    CMD_RET_USAGE,
    Backing,
    Command,
    KiB,
    MiB,
    block_reader,
    c_alt_hex,
    dectoul,
    erase_flash,
    hextoul,
    print_size,
    program_flash,
    str2off,
)
from mtkfs.testing.sim_uboot_nor import arg_off, arg_off_size
from mtkfs.testing.sim_uboot_parts import part_list_text

if TYPE_CHECKING:
    from mtkfs.testing.sim_uboot_machine import Machine

__all__ = ["FLASH_COMMANDS", "virtio_device_text"]


# ---------------------------------------------------------------------------------------------
# sf: SPI NOR


async def do_sf(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) < 2:
        return CMD_RET_USAGE
    args = argv[1:]
    if args[0] == "probe":
        return await _sf_probe(m, args)
    if not m.flash.sf_probed or m.sf is None or m.board.sf is None:
        await m.puts("No SPI flash selected. Please run `sf probe'\n")
        return 1
    if args[0] in ("read", "write", "update"):
        return await _sf_read_write(m, args)
    if args[0] == "erase":
        return await _sf_erase(m, args)
    if args[0] == "protect" and len(args) == 4:
        return 0
    return CMD_RET_USAGE


async def _sf_probe(m: Machine, args: list[str]) -> int:
    spec = m.board.sf
    # CONFIG_SF_DEFAULT_BUS/CS: the board's own flash.
    bus, cs = (0, 0) if spec is None else (spec.bus, spec.cs)
    if len(args) >= 2:
        text = args[1]
        if not text:
            return CMD_RET_USAGE
        if ":" in text:
            bus_text, cs_text = text.split(":", 1)
            if not cs_text:
                return CMD_RET_USAGE
            parsed_bus, parsed_cs = _c_number(bus_text), _c_number(cs_text)
        else:
            parsed_bus, parsed_cs = bus, _c_number(text)
        if parsed_bus is None or parsed_cs is None:
            return CMD_RET_USAGE
        bus, cs = parsed_bus, parsed_cs
    m.flash.sf_probed = False
    if spec is None or m.sf is None or (bus, cs) != (spec.bus, spec.cs):
        await m.puts(f"Failed to initialize SPI flash at {bus}:{cs} (error -19)\n")
        return 1
    m.flash.sf_probed = True
    await m.puts(
        f"SF: Detected {spec.name} with page size {print_size(spec.page_bytes)}, erase size "
        f"{print_size(spec.erase_bytes)}, total {print_size(m.sf.size)}\n"
    )
    return 0


def _c_number(text: str) -> int | None:
    """simple_strtoul(s, &end, 0) that must use the whole string."""
    base = 16 if text[:2].lower() == "0x" else 8 if len(text) > 1 and text[0] == "0" else 10
    try:
        return int(text, base)
    except ValueError:
        return None


async def _sf_read_write(m: Machine, args: list[str]) -> int:
    assert m.sf is not None and m.board.sf is not None
    op = args[0]
    if len(args) < 3:
        return CMD_RET_USAGE
    addr = str2off(args[1])
    if addr is None:
        return CMD_RET_USAGE
    found = await arg_off_size(m, args[2:], m.sf.size, "nor")
    if found is None:
        return CMD_RET_USAGE
    _dev, offset, size, _maxsize = found
    if offset + size > m.sf.size:
        await m.puts(f"ERROR: attempting {op} past flash size ({c_alt_hex(m.sf.size)})\n")
        return 1
    if op == "update":
        return await _sf_update(m, addr, offset, size)
    if op == "read":
        m.mem.write(addr, m.sf.read(offset, size))
    else:
        program_flash(m.sf, offset, m.mem.read(addr, size))
    said = "Read" if op == "read" else "Written"
    await m.puts(f"SF: {size} bytes @ {c_alt_hex(offset)} {said}: OK\n")
    return 0


async def _sf_update(m: Machine, addr: int, offset: int, size: int) -> int:
    """spi_flash_update(): erase and write only the sectors that differ."""
    assert m.sf is not None and m.board.sf is not None
    sector = m.board.sf.erase_bytes
    data = m.mem.read(addr, size)
    skipped = pos = 0
    while pos < size:
        here = offset + pos
        todo = min(size - pos, sector - here % sector)
        base = here - here % sector
        block = bytearray(m.sf.read(base, sector))
        start = here - base
        if bytes(block[start : start + todo]) == data[pos : pos + todo]:
            skipped += todo
        else:
            block[start : start + todo] = data[pos : pos + todo]
            erase_flash(m.sf, base, sector)
            program_flash(m.sf, base, bytes(block))
        pos += todo
    elapsed_ms = max(1, (size - skipped) * 1000 // (64 * KiB))
    speed = 1024 * size // elapsed_ms
    await m.puts(
        f"\r{size - skipped} bytes written, {skipped} bytes skipped in "
        f"{elapsed_ms // 1000}.{elapsed_ms % 1000}s, speed {speed} B/s\n"
    )
    return 0


async def _sf_erase(m: Machine, args: list[str]) -> int:
    assert m.sf is not None and m.board.sf is not None
    if len(args) < 3:
        return CMD_RET_USAGE
    found = await arg_off(m, args[1], m.sf.size, "nor")
    if found is None:
        return CMD_RET_USAGE
    offset = found[1]
    text = args[2]
    round_up = text.startswith("+")
    size = str2off(text[1:] if round_up else text)
    if size is None:
        return CMD_RET_USAGE
    sector = m.board.sf.erase_bytes
    if round_up:
        size = -(-size // sector) * sector
    if offset + size > m.sf.size:
        await m.puts(f"ERROR: attempting erase past flash size ({c_alt_hex(m.sf.size)})\n")
        return 1
    ret = 0
    if offset % sector or size % sector:
        ret = -22
    else:
        for pos in range(0, size, sector):
            if m.poll_ctrlc(1):
                ret = -4
                break
            erase_flash(m.sf, offset + pos, sector)
    status = "OK" if ret == 0 else f"ERROR {ret}"
    await m.puts(f"SF: {size} bytes @ {c_alt_hex(offset)} Erased: {status}\n")
    return 0 if ret == 0 else 1


# ---------------------------------------------------------------------------------------------
# mmc: eMMC (512-byte blocks; hex arguments, decimal messages)

_MMC_REPEATABLE = {"read", "rescan", "part", "list"}
_MMC_SUBCOMMANDS = ("info", "read", "write", "erase", "rescan", "part", "dev", "list")


def _mmc_backing(m: Machine) -> Backing | None:
    parts = m.mmc[m.flash.mmc_dev]
    return parts[m.flash.mmc_part] if m.flash.mmc_part < len(parts) else None


async def do_mmc(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) < 2:
        return CMD_RET_USAGE
    matches = [name for name in _MMC_SUBCOMMANDS if name.startswith(argv[1])]
    sub = argv[1] if argv[1] in _MMC_SUBCOMMANDS else (matches[0] if len(matches) == 1 else "")
    args = argv[1:]
    if not sub:
        return CMD_RET_USAGE
    if repeat and sub not in _MMC_REPEATABLE:
        return 0
    if not m.mmc:
        await m.puts("No MMC device available\n")
        return 1
    if sub == "list":
        for index, emmc in enumerate(m.board.mmc):
            known = " (eMMC)" if m.flash.mmc_initialised else ""
            await m.puts(f"{emmc.name}: {index}{known}\n")
        return 0
    if sub == "rescan":
        m.flash.mmc_initialised = True
        return 0
    if sub == "dev":
        return await _mmc_dev(m, args)
    m.flash.mmc_initialised = True
    backing = _mmc_backing(m)
    if backing is None:
        return 1
    if sub == "info":
        await m.puts(_mmc_info(m))
        return 0
    if sub == "part":
        kind = "MMC"
        text = part_list_text(kind, m.flash.mmc_dev, block_reader(backing), backing.size // 512)
        await m.puts(text)
        return 0
    if len(args) != (4 if sub != "erase" else 3):
        return CMD_RET_USAGE
    if sub == "erase":
        blk, cnt = hextoul(args[1]), hextoul(args[2])
        addr = 0
    else:
        addr, blk, cnt = hextoul(args[1]), hextoul(args[2]), hextoul(args[3])
    blk, cnt = blk & 0xFFFFFFFF, cnt & 0xFFFFFFFF
    name = {"read": "read", "write": "write", "erase": "erase"}[sub]
    await m.puts(f"\nMMC {name}: dev # {m.flash.mmc_dev}, block # {blk}, count {cnt} ... ")
    lba = backing.size // 512
    done = cnt
    if cnt and blk + cnt > lba:
        await m.puts(f"MMC: block number 0x{blk + cnt:x} exceeds max(0x{lba:x})\n")
        done = 0
    elif sub == "read":
        m.mem.write(addr, backing.read(blk * 512, cnt * 512))
    elif sub == "write":
        backing.write(blk * 512, m.mem.read(addr, cnt * 512))
    else:
        for pos in range(0, cnt * 512, MiB):
            backing.write(blk * 512 + pos, bytes(min(MiB, cnt * 512 - pos)))
    said = {"read": "read", "write": "written", "erase": "erased"}[sub]
    await m.puts(f"{done} blocks {said}: {'OK' if done == cnt else 'ERROR'}\n")
    return 0 if done == cnt else 1


async def _mmc_dev(m: Machine, args: list[str]) -> int:
    dev, part = m.flash.mmc_dev, 0
    if len(args) >= 2:
        dev = dectoul(args[1])
    if len(args) >= 3:
        part = dectoul(args[2])
        if part > 7:
            await m.puts("#part_num shouldn't be larger than 7\n")
            return 1
    if len(args) > 4:
        return CMD_RET_USAGE
    if dev >= len(m.mmc):
        await m.puts(f"no mmc device at slot {dev:x}\n")
        return 1
    m.flash.mmc_initialised = True
    parts = m.mmc[dev]
    ok = part < len(parts) and parts[part] is not None
    await m.puts(f"switch to partitions #{part}, {'OK' if ok else 'ERROR'}\n")
    if not ok:
        return 1
    m.flash.mmc_dev, m.flash.mmc_part = dev, part
    await m.puts(f"mmc{dev}(part {part}) is current device\n")
    return 0


def _mmc_info(m: Machine) -> str:
    spec = m.board.mmc[m.flash.mmc_dev]
    parts = m.mmc[m.flash.mmc_dev]
    current = _mmc_backing(m)
    user = parts[0].size if parts[0] is not None else 0
    boot = parts[1].size if parts[1] is not None else 0
    lines = [
        f"Device: {spec.name}",
        "Manufacturer ID: 15",
        "OEM: 100",
        f"Name: {spec.product[:6]:<6} ",
        "Bus Speed: 52000000",
        "Mode: MMC High Speed (52MHz)",
        "Rd Block Len: 512",
        "MMC version 5.1",
        "High Capacity: Yes",
        f"Capacity: {print_size(current.size if current else 0)}",
        "Bus Width: 8-bit",
        "Erase Group Size: 512 KiB",
        "HC WP Group Size: 8 MiB",
        f"User Capacity: {print_size(user)}",
        f"Boot Capacity: {print_size(boot)}",
        "RPMB Capacity: 4 MiB",
        "Boot area 0 is not write protected",
        "Boot area 1 is not write protected",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# virtio: blk_common_cmd


def virtio_device_text(m: Machine, dev: int) -> str:
    """blk dev_print() for a virtio disk, after ``Device N: ``."""
    lba = m.virtio[dev].size // 512
    mb = (lba >> 11) * 10 + (((lba - ((lba >> 11) << 11)) * 10) >> 11)
    gb = mb // 1024
    return (
        f"\nDevice {dev}: 1af4 VirtIO Block Device\n            Type: Hard Disk\n"
        f"            Capacity: {mb // 10}.{mb % 10} MB = {gb // 10}.{gb % 10} GB "
        f"({lba} x 512)\n"
    )


async def do_virtio(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) == 2 and argv[1] == "scan":
        return 0 if m.virtio else 1
    if len(argv) < 2:
        return CMD_RET_USAGE
    sub = argv[1]
    if len(argv) == 2:
        if sub.startswith("inf"):
            for dev in range(len(m.virtio)):
                await m.puts(virtio_device_text(m, dev)[1:])
            return 0
        if sub.startswith("dev"):
            if m.flash.virtio_dev >= len(m.virtio):
                await m.puts("\nno virtio devices available\n")
                return 1
            await m.puts(virtio_device_text(m, m.flash.virtio_dev))
            return 0
        if sub.startswith("part"):
            for dev, backing in enumerate(m.virtio):
                await m.puts(
                    part_list_text("VirtIO", dev, block_reader(backing), backing.size // 512)
                )
            return 0
        return CMD_RET_USAGE
    if len(argv) == 3:
        dev = dectoul(argv[2])
        if sub.startswith("dev"):
            if dev >= len(m.virtio):
                await m.puts(f"\nDevice {dev}: unknown device\n")
                return 1
            await m.puts(virtio_device_text(m, dev) + "... is now current device\n")
            m.flash.virtio_dev = dev
            return 0
        if sub.startswith("part"):
            if dev >= len(m.virtio):
                await m.puts(f"\nvirtio device {dev} not available\n")
                return 1
            backing = m.virtio[dev]
            await m.puts(part_list_text("VirtIO", dev, block_reader(backing), backing.size // 512))
            return 0
        return CMD_RET_USAGE
    if sub not in ("read", "write") or len(argv) < 5:
        return CMD_RET_USAGE
    addr, blk, cnt = hextoul(argv[2]), hextoul(argv[3]), hextoul(argv[4])
    dev = m.flash.virtio_dev
    await m.puts(f"\nvirtio {sub}: device {dev} block # {blk}, count {cnt} ... ")
    done = cnt
    if dev >= len(m.virtio) or blk + cnt > m.virtio[dev].size // 512:
        done = -5
    elif sub == "read":
        m.mem.write(addr, m.virtio[dev].read(blk * 512, cnt * 512))
    else:
        m.virtio[dev].write(blk * 512, m.mem.read(addr, cnt * 512))
    said = "read" if sub == "read" else "written"
    await m.puts(f"{done} blocks {said}: {'OK' if done == cnt else 'ERROR'}\n")
    return 0 if done == cnt else 1


# ---------------------------------------------------------------------------------------------
# nand: raw NAND with bad blocks


def _nand_bad(m: Machine, offset: int) -> bool:
    spec = m.board.nand
    assert spec is not None
    return offset - offset % spec.erase_bytes in spec.bad_blocks


async def do_nand(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) < 2:
        return CMD_RET_USAGE
    cmd = argv[1]
    if repeat and not cmd.startswith("dump"):
        return 0
    spec, backing = m.board.nand, m.nand
    if cmd == "info":
        await m.puts("\n")
        if spec is not None and backing is not None:
            await m.puts(
                f"Device 0: {spec.name}, sector size {spec.erase_bytes >> 10} KiB\n"
                f"  Page size     {spec.page_bytes:8d} b\n  OOB size      {spec.oob_bytes:8d} b\n"
                f"  Erase size    {spec.erase_bytes:8d} b\n  ecc strength  {8:8d} bits\n"
                f"  ecc step size {512:8d} b\n  subpagesize   {spec.page_bytes:8d} b\n"
                "  options       0x00000000\n  bbt options   0x00000000\n"
            )
            m.env["nand_writesize"] = f"{spec.page_bytes:x}"
            m.env["nand_oobsize"] = f"{spec.oob_bytes:x}"
            m.env["nand_erasesize"] = f"{spec.erase_bytes:x}"
        return 0
    if cmd == "device" and len(argv) >= 3:
        # set_dev(): silent when the device is already current (the only one here).
        if spec is None or backing is None or argv[2] != "0":
            await m.puts("No such device\n")
        return 0
    if spec is None or backing is None:
        await m.puts("\nno devices available\n")
        return 1
    if cmd == "bad":
        await m.puts("\nDevice 0 bad blocks:\n")
        for offset in sorted(spec.bad_blocks):
            await m.puts(f"  {offset:08x}\n")
        return 0
    if cmd.startswith("erase"):
        return await _nand_erase(m, argv)
    if cmd.startswith(("read", "write")):
        return await _nand_read_write(m, argv)
    return CMD_RET_USAGE


async def _nand_erase(m: Machine, argv: list[str]) -> int:
    spec, backing = m.board.nand, m.nand
    assert spec is not None and backing is not None
    cmd = argv[1]
    clean = len(argv) > 2 and argv[2] == "clean"
    first = 3 if clean else 2
    suffix = cmd[5:]
    expected = {"": 2, ".spread": 2, ".part": 1, ".chip": 0}.get(suffix)
    if expected is None or len(argv) != first + expected:
        return CMD_RET_USAGE
    await m.puts(f"\nNAND {cmd}: ")
    found = await arg_off_size(m, argv[first:], backing.size, "nand")
    if found is None:
        return 1
    _dev, offset, size, _maxsize = found
    erase = spec.erase_bytes
    if offset % erase:
        await m.puts("Attempt to erase non block-aligned data\nERROR\n")
        return 1
    blocks = -(-size // erase)
    done = 0
    percent_shown = -1
    addr = offset
    out = []
    while done < blocks and addr < backing.size:
        if _nand_bad(m, addr):
            out.append(f"\rSkipping bad block at  0x{addr:08x}{' ' * 42}\n")
            if suffix != ".spread":
                done += 1
            addr += erase
            continue
        done += 1
        erase_flash(backing, addr, erase)
        percent = done * 100 // blocks
        if percent != percent_shown:
            percent_shown = percent
            out.append(f"\rErasing at 0x{addr:x} -- {percent:3d}% complete.")
        addr += erase
    await m.puts("".join(out) + "\nOK\n")
    return 0


async def _nand_read_write(m: Machine, argv: list[str]) -> int:
    spec, backing = m.board.nand, m.nand
    assert spec is not None and backing is not None
    cmd = argv[1]
    if len(argv) < 4:
        return CMD_RET_USAGE
    read = cmd.startswith("read")
    addr = hextoul(argv[2])
    await m.puts(f"\nNAND {'read' if read else 'write'}: ")
    suffix = cmd[cmd.index(".") :] if "." in cmd else ""
    found = await arg_off_size(m, argv[3:], backing.size, "nand")
    if found is None:
        return 1
    _dev, offset, size, maxsize = found
    if suffix not in ("", ".jffs2", ".e", ".i"):
        await m.puts(f"Unknown nand command suffix '{suffix}'.\n")
        return 1
    erase = spec.erase_bytes
    if len(argv) < 5:  # no size: the range minus its bad blocks
        size -= erase * sum(1 for b in spec.bad_blocks if offset <= b < offset + size)
    said = "read" if read else "written"
    error = None
    if offset % spec.page_bytes:
        error = f"Attempt to {'read' if read else 'write'} non page-aligned data\n"
    else:
        used, need_skip, inside = 0, False, True
        pos, left = offset, size
        while left > 0:
            if pos >= backing.size:
                inside = False
                break
            block_len = erase - pos % erase
            if _nand_bad(m, pos):
                need_skip = True
            else:
                left -= block_len
            pos += block_len
            used += block_len
        used += min(0, left)
        if not inside:
            error = f"Attempt to {'read' if read else 'write'} outside the flash area\n"
        elif used > maxsize:
            error = f"Size of {'read' if read else 'write'} exceeds partition or device limit\n"
    if error is not None:
        await m.puts(f"{error} 0 bytes {said}: ERROR\n")
        return 1
    out = []
    data = b"" if read else m.mem.read(addr, size)
    chunks = []
    pos, done = offset, 0
    while done < size:
        block = pos - pos % erase
        if _nand_bad(m, block):
            out.append(f"Skip{'ping' if read else ''} bad block 0x{block:08x}\n")
            pos = block + erase
            continue
        take = min(size - done, erase - pos % erase)
        if read:
            chunks.append(backing.read(pos, take))
        else:
            program_flash(backing, pos, data[done : done + take])
            if backing.read(pos, take) != data[done : done + take]:
                out.append(f"NAND write to offset {pos + take:x} failed -5\n")
                await m.puts("".join(out) + f" {done if need_skip else 0} bytes {said}: ERROR\n")
                return 1
        pos += take
        done += take
    if read:
        m.mem.write(addr, b"".join(chunks))
    await m.puts("".join(out) + f" {size} bytes {said}: OK\n")
    return 0


# ---------------------------------------------------------------------------------------------

_SF_HELP = (
    "probe [[bus:]cs] [hz] [mode]\t- init flash device on given SPI bus\n"
    "\t\t\t\t  and chip select\n"
    "sf read addr offset|partition len\t- read `len' bytes starting at\n"
    "\t\t\t\t          `offset' or from start of mtd\n"
    "\t\t\t\t\t  `partition'to memory at `addr'\n"
    "sf write addr offset|partition len\t- write `len' bytes from memory\n"
    "\t\t\t\t          at `addr' to flash at `offset'\n"
    "\t\t\t\t\t  or to start of mtd `partition'\n"
    "sf erase offset|partition [+]len\t- erase `len' bytes from `offset'\n"
    "\t\t\t\t\t  or from start of mtd `partition'\n"
    "\t\t\t\t\t `+len' round up `len' to block size\n"
    "sf update addr offset|partition len\t- erase and write `len' bytes from memory\n"
    "\t\t\t\t\t  at `addr' to flash at `offset'\n"
    "\t\t\t\t\t  or to start of mtd `partition'\n"
    "sf protect lock/unlock sector len\t- protect/unprotect 'len' bytes starting\n"
    "\t\t\t\t\t  at address 'sector'"
)


FLASH_COMMANDS = [
    Command("sf", 5, True, "SPI flash sub-system", _SF_HELP, do_sf),
    Command(
        "mmc",
        29,
        True,
        "MMC sub system",
        "info - display info of the current MMC device\nmmc read addr blk# cnt\n"
        "mmc write addr blk# cnt\nmmc erase blk# cnt\nmmc rescan [mode]\n"
        "mmc part - lists available partition on current mmc device\n"
        "mmc dev [dev] [part] [mode] - show or set current mmc device [partition] "
        "and set mode\nmmc list - lists available devices",
        do_mmc,
    ),
    Command(
        "nand",
        16,
        True,
        "NAND sub-system",
        "info - show available NAND devices\nnand device [dev] - show or set current "
        "device\nnand read - addr off|partition size\nnand write - addr off|partition "
        "size\n    read/write 'size' bytes starting at offset 'off'\n    to/from memory "
        "address 'addr', skipping bad blocks.\nnand erase[.spread] [clean] off size - "
        "erase 'size' bytes from offset 'off'\nnand bad - show bad blocks",
        do_nand,
    ),
    Command(
        "virtio",
        8,
        True,
        "virtio block devices sub-system",
        "scan - initialize virtio bus\nvirtio info - show all available virtio block "
        "devices\nvirtio device [dev] - show or set current virtio block device\nvirtio "
        "part [dev] - print partition table of one or all virtio block devices\nvirtio "
        "read addr blk# cnt - read `cnt' blocks starting at block\n     `blk#' to memory "
        "address `addr'\nvirtio write addr blk# cnt - write `cnt' blocks starting at "
        "block\n     `blk#' from memory address `addr'",
        do_virtio,
    ),
]
