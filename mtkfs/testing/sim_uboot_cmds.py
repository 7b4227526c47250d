"""The simulated U-Boot's general commands: memory, environment, serial loads, and the table.

Each command is ``async def do_x(m, argv, repeat) -> exit code`` on a
:class:`~mtkfs.testing.sim_uboot.Machine`, printing exactly what U-Boot 2023.01 prints
(cmd/mem.c, common/hash.c, cmd/nvedit.c, cmd/echo.c, cmd/load.c with common/xyzModem.c,
cmd/bdinfo.c). Flash commands are in :mod:`mtkfs.testing.sim_uboot_flash`. An access to an
unmapped address raises :class:`~mtkfs.testing.sim_uboot_board.BusFault` from inside a
command; the machine turns it into the crash and the reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from mtkfs.testing.sim_uboot_board import (
    CMD_RET_USAGE,
    BoardReset,
    BusFault,
    Command,
    MiB,
    c_alt_hex,
    dectoul,
    hexdump_lines,
    hextoul,
)

if TYPE_CHECKING:
    from mtkfs.testing.sim_uboot import ConsoleFaults
    from mtkfs.testing.sim_uboot_machine import Machine

__all__ = ["COMMANDS"]

_ENV_SIZE = 0x40000 - 4


def data_size(m: Machine, name: str, default: int) -> int:
    """command.c cmd_get_data_size(): ``.b .w .l`` (``.q`` on 64-bit builds), else the
    default; -1 for an unknown suffix (``.x``), -2 for ``.s``."""
    if len(name) >= 2 and name[-2] == ".":
        suffix = name[-1]
        sizes = {"b": 1, "w": 2, "l": 4, "s": -2}
        if m.board.bits == 64:
            sizes["q"] = 8
        return sizes.get(suffix, -1)
    return default


def _object_name(size: int) -> str:
    return {8: "double word", 4: "word", 2: "halfword"}.get(size, "byte")


# ---------------------------------------------------------------------------------------------
# md, mw, cp, cmp, crc32


async def do_md(m: Machine, argv: list[str], repeat: bool) -> int:
    """``md[.b|.w|.l|.q] address [# of objects]``; repeated (empty line): the next objects."""
    if len(argv) < 2:
        return CMD_RET_USAGE
    addr, size, length = m.md_last
    if not repeat:
        size = data_size(m, argv[0], 4)
        if size < 0:
            return 1
        addr = hextoul(argv[1]) & m.board.ulong_mask
        if len(argv) > 2:
            length = hextoul(argv[2])
    await dump(m, addr, size, length)
    m.md_last = ((addr + size * length) & m.board.ulong_mask, size, length)
    return 0


async def dump(m: Machine, addr: int, width: int, count: int) -> None:
    """print_buffer(): the lines, a Ctrl-C poll after each; faults as :class:`ConsoleFaults`
    say; a bus fault after the last line that could be read."""
    board, faults = m.board, m.faults
    total = width * count
    readable = m.mem.readable(addr, total)
    lines_total = -(-total // 16)
    reset_line = None
    if lines_total and faults.roll("reset_during_md", faults.reset_during_md_rate):
        reset_line = faults.rng.randrange(lines_total)
    block = 16 * (4 if faults.baud else 1024)
    pos = 0
    while pos < total:
        take = min(block, total - pos)
        if pos + take > readable:
            take = max(0, (readable - pos) // 16 * 16)
            if take == 0:
                break
        data = m.mem.read(addr + pos, take)
        lines = hexdump_lines(
            addr + pos,
            data,
            width,
            board.byte_order,
            separator=board.md_separator,
            pad_short=board.md_pad_short_line,
            prefix=board.md_line_prefix,
        )
        polls = len(lines)
        first = pos // 16
        if reset_line is not None and first <= reset_line < first + len(lines):
            cut = lines[reset_line - first]
            partial = "\r\n".join([*lines[: reset_line - first], ""])
            await m.uart.write((partial + cut[: faults.rng.randrange(len(cut))]).encode("latin-1"))
            raise BoardReset
        if faults.md_faults:
            lines = _spoil_lines(lines, faults)
        if lines:
            await m.uart.write(("\r\n".join(lines) + "\r\n").encode("latin-1"))
        if m.poll_ctrlc(polls):
            return
        pos += take
    if readable < total:
        raise BusFault((addr + readable) & m.board.ulong_mask)


def _spoil_lines(lines: list[str], faults: ConsoleFaults) -> list[str]:
    """Line noise: whole lines lost, characters flipped, lost or doubled."""
    out = []
    rng = faults.rng
    for line in lines:
        if faults.roll("drop_line", faults.drop_line_rate):
            continue
        text = line
        if faults.roll("garble_line", faults.garble_line_rate):
            pos = rng.randrange(len(text))
            how = rng.randrange(3)
            if how == 0:  # one bit flipped
                flipped = chr(ord(text[pos]) ^ (1 << rng.randrange(7)))
                text = text[:pos] + flipped + text[pos + 1 :]
            elif how == 1:  # a character lost
                text = text[:pos] + text[pos + 1 :]
            else:  # a character doubled
                text = text[:pos] + text[pos] + text[pos:]
        out.append(text)
    return out


async def do_mw(m: Machine, argv: list[str], repeat: bool) -> int:
    """``mw[.b|.w|.l|.q] address value [count]``: fills, prints nothing."""
    if not 3 <= len(argv) <= 4:
        return CMD_RET_USAGE
    size = data_size(m, argv[0], 4)
    if size < 1:
        return 1
    addr = hextoul(argv[1]) & m.board.ulong_mask
    value = hextoul(argv[2]) & ((1 << (8 * size)) - 1)
    count = hextoul(argv[3]) if len(argv) == 4 else 1
    word = value.to_bytes(size, m.board.byte_order)
    per_chunk = max(1, MiB // size)
    done = 0
    while done < count:
        n = min(per_chunk, count - done)
        m.mem.write(addr + done * size, word * n)
        done += n
    return 0


async def do_cp(m: Machine, argv: list[str], repeat: bool) -> int:
    """``cp[.b|.w|.l|.q] source target count``: silent into RAM; into CFI flash it programs
    and says ``Copy to Flash... done`` (which QEMU's buggy flash makes a lie)."""
    from mtkfs.testing.sim_uboot_nor import cfi_write

    if len(argv) != 4:
        return CMD_RET_USAGE
    size = data_size(m, argv[0], 4)
    if size < 0:
        return 1
    src, dst = hextoul(argv[1]), hextoul(argv[2])
    count = hextoul(argv[3])
    if count == 0:
        await m.puts("Zero length ???\n")
        return 1
    data = m.mem.read(src, count * size)
    if m.mem.cfi_bank(dst) is not None:
        await m.puts("Copy to Flash... ")
        error = cfi_write(m, dst, data)
        if error:
            await m.puts(error)
            return 1
        await m.puts("done\n")
        return 0
    m.mem.write(dst, data)
    return 0


async def do_cmp(m: Machine, argv: list[str], repeat: bool) -> int:
    """``cmp[.b|.w|.l|.q] addr1 addr2 count``: the first difference, then the total."""
    if len(argv) != 4:
        return CMD_RET_USAGE
    size = data_size(m, argv[0], 4)
    if size < 0:
        return 1
    kind = _object_name(size)
    addr1, addr2, count = hextoul(argv[1]), hextoul(argv[2]), hextoul(argv[3])
    good = 0
    chunk = max(1, MiB // size)
    order = m.board.byte_order
    while good < count:
        n = min(chunk, count - good)
        offset = good * size
        left = m.mem.read(addr1 + offset, n * size)
        right = m.mem.read(addr2 + offset, n * size)
        if left == right:
            good += n
            continue
        index = next(i for i in range(len(left)) if left[i] != right[i]) // size
        good += index
        at = index * size
        word1 = int.from_bytes(left[at : at + size], order)
        word2 = int.from_bytes(right[at : at + size], order)
        where = offset + at
        await m.puts(
            f"{kind} at 0x{addr1 + where:08x} ({c_alt_hex(word1, size)}) != "
            f"{kind} at 0x{addr2 + where:08x} ({c_alt_hex(word2, size)})\n"
        )
        await m.puts(f"Total of {good} {kind}(s) were the same\n")
        return 1
    await m.puts(f"Total of {good} {kind}(s) were the same\n")
    return 0


async def do_crc32(m: Machine, argv: list[str], repeat: bool) -> int:
    """``crc32 address count [addr]`` (common/hash.c): ``crc32 for A ... B ==> C`` on
    multi-hash builds (digest stored big-endian), ``CRC32 for …`` on the legacy path (stored
    as a native ulong)."""
    if len(argv) < 3:
        return CMD_RET_USAGE
    board, faults = m.board, m.faults
    addr, length = hextoul(argv[1]) & board.ulong_mask, hextoul(argv[2])
    crc = m.mem.crc32(addr, length)
    shown = crc
    if faults.roll("wrong_crc", faults.wrong_crc_rate):
        shown ^= faults.rng.randrange(1, 1 << 32)
    end = (addr + length - 1) & board.ulong_mask
    await m.puts(f"{board.crc32_spelling} for {addr:08x} ... {end:08x} ==> {shown:08x}\n")
    if len(argv) > 3:
        store = hextoul(argv[3])
        if board.crc32_spelling == "crc32":
            m.mem.write(store, crc.to_bytes(4, "big"))
        else:
            m.mem.write(store, crc.to_bytes(board.bits // 8, board.byte_order))
    return 0


# ---------------------------------------------------------------------------------------------
# Environment, echo, information


async def do_printenv(m: Machine, argv: list[str], repeat: bool) -> int:
    """All variables sorted (``\\n`` and ``\\`` in values escaped) and the size line, or the
    named ones; ``## Error: "x" not defined`` for each missing one."""
    if len(argv) == 1:
        lines = []
        total = 0
        for key in sorted(m.env):
            value = m.env[key].replace("\\", "\\\\").replace("\n", "\\\n")
            lines.append(f"{key}={value}\n")
            total += len(key) + len(value) + 2
        await m.puts("".join(lines) + f"\nEnvironment size: {total + 1}/{_ENV_SIZE} bytes\n")
        return 0
    missing = 0
    for name in argv[1:]:
        if name in m.env:
            await m.puts(f"{name}={m.env[name]}\n")
        else:
            await m.puts(f'## Error: "{name}" not defined\n')
            missing += 1
    return missing


async def do_setenv(m: Machine, argv: list[str], repeat: bool) -> int:
    """``setenv name [value ...]`` (no value: delete); ``baudrate`` switches the UART."""
    if len(argv) < 2:
        return CMD_RET_USAGE
    name = argv[1]
    if "=" in name:
        await m.puts(f"## Error: illegal character '=' in variable name \"{name}\"\n")
        return 1
    value = " ".join(argv[2:])
    if not value:
        m.env.pop(name, None)
        return 0
    if name == "baudrate":
        baud = dectoul(value)
        if baud == int(m.env.get("baudrate", "115200")):
            return 0
        if baud not in m.board.baud_table:
            await m.puts(f"## Baudrate {baud} bps not supported\n")
            return 1
        await m.puts(f"## Switch baudrate to {baud} bps and press ENTER ...\n")
        await trio.sleep(0.1)
        await m.set_baud(baud)
        while await m.getc() != 0x0D:
            pass
    m.env[name] = value
    return 0


async def do_echo(m: Machine, argv: list[str], repeat: bool) -> int:
    args = argv[1:]
    newline = not (args and args[0] == "-n")
    if not newline:
        args = args[1:]
    await m.puts(" ".join(args) + ("\n" if newline else ""))
    return 0


async def do_true(m: Machine, argv: list[str], repeat: bool) -> int:
    return 0


async def do_false(m: Machine, argv: list[str], repeat: bool) -> int:
    return 1


async def do_help(m: Machine, argv: list[str], repeat: bool) -> int:
    if len(argv) == 1:
        lines = []
        for name in sorted(m.commands):
            lines.append(f"{name:<10}- {m.commands[name].usage}\n")
        await m.puts("".join(lines))
        return 0
    rc = 0
    for name in argv[1:]:
        command = m.find_command(name)
        if command is None:
            await m.puts(
                f"Unknown command '{name}' - try 'help' without arguments for list of all "
                "known commands\n\n"
            )
            rc = 1
        else:
            await m.puts(command.usage_text())
            rc = 1
    return rc


async def do_version(m: Machine, argv: list[str], repeat: bool) -> int:
    await m.puts(f"{m.board.version}\n\n" + "".join(f"{line}\n" for line in m.board.toolchain))
    return 0


async def do_bdinfo(m: Machine, argv: list[str], repeat: bool) -> int:
    """cmd/bdinfo.c on arm (the QEMU layout; U-Boot's own addresses below the top of RAM)."""
    board = m.board
    digits = board.bits // 4
    top = board.ram_top

    def num(name: str, value: int) -> str:
        return f"{name:<12}= 0x{value:0{digits}x}\n"

    cfi = m.cfi
    flash_start = cfi[0].base if cfi else 0
    flash_size = sum(bank.size for bank in cfi)
    reloc = top - 0x109000
    fdt = top - 0x1249250
    lines = [num("boot_params", 0)]
    for index, (start, size) in enumerate(board.ram_banks):
        lines += [num("DRAM bank", index), num("-> start", start), num("-> size", size)]
    baud = m.env.get("baudrate", "115200")
    lines += [
        num("flashstart", flash_start),
        num("flashsize", flash_size),
        num("flashoffset", 0xED228),
        f"baudrate    = {baud} bps\n",
        num("relocaddr", reloc),
        num("reloc off", reloc),
        f"{'Build':<12}= {board.bits}-bit\n",
        "current eth = unknown\n",
        f"{'ethaddr':<12}= {m.env.get('ethaddr', '(not set)')}\n",
        f"IP addr     = {m.env.get('ipaddr', '<NULL>')}\n",
        num("fdt_blob", fdt),
        num("new_fdt", fdt),
        num("fdt_size", 0x100000),
        "lmb_dump_all:\n",
        f" memory.cnt  = 0x{len(board.ram_banks)}\n",
    ]
    for index, (start, size) in enumerate(board.ram_banks):
        lines.append(
            f" memory[{index}]\t[0x{start:x}-0x{start + size - 1:x}], 0x{size:08x} bytes flags: 0\n"
        )
    reserved = [top - 0x224E000, top - 0x124D6D0]
    lines.append(" reserved.cnt  = 0x2\n")
    for index, start in enumerate(reserved):
        lines.append(
            f" reserved[{index}]\t[0x{start:x}-0x{top - 1:x}], 0x{top - start:08x} bytes flags: 0\n"
        )
    lines += [
        "devicetree  = board\n",
        num("arch_number", 0),
        num("TLB addr", top - 0x10000),
        num("irq_sp", fdt - 0x10),
        num("sp start", fdt - 0x10),
        "Early malloc usage: 3a8 / 2000\n",
    ]
    await m.puts("".join(lines))
    return 0


async def do_reset(m: Machine, argv: list[str], repeat: bool) -> int:
    await m.puts("resetting ...\n")
    raise BoardReset


async def do_sleep(m: Machine, argv: list[str], repeat: bool) -> int:
    """``sleep N[.fraction]``: polls Ctrl-C all along (and eats whatever else is typed)."""
    if len(argv) != 2:
        return CMD_RET_USAGE
    whole, _, fraction = argv[1].partition(".")
    seconds = dectoul(whole) + (dectoul(fraction[:3].ljust(3, "0")) / 1000 if fraction else 0)
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        if await m.uart.wait_input(deadline - trio.current_time()) and m.ctrlc():
            return 1
    return 0


# ---------------------------------------------------------------------------------------------
# The table


def _table() -> dict[str, Command]:
    from mtkfs.testing.sim_uboot_flash import FLASH_COMMANDS
    from mtkfs.testing.sim_uboot_load import LOAD_COMMANDS
    from mtkfs.testing.sim_uboot_nor import NOR_COMMANDS

    size_help = "[.b, .w, .l, .q]"
    commands = [
        Command("?", 16, True, "alias for 'help'", "", do_help),
        Command(
            "help",
            16,
            True,
            "print command description/usage",
            "\n\t- print brief description of all commands\nhelp command ...\n"
            "\t- print detailed usage of 'command'",
            do_help,
        ),
        Command("version", 1, True, "print monitor, compiler and linker version", "", do_version),
        Command("bdinfo", 1, True, "print Board Info structure", "", do_bdinfo),
        Command(
            "printenv",
            16,
            True,
            "print environment variables",
            "[-a]\n    - print [all] values of all environment variables\nprintenv name ..."
            "\n    - print value of environment variable 'name'",
            do_printenv,
        ),
        Command(
            "setenv",
            16,
            False,
            "set environment variables",
            "[-f] name value ...\n    - [forcibly] set environment variable 'name' to "
            "'value ...'\nsetenv [-f] name\n    - [forcibly] delete environment variable "
            "'name'",
            do_setenv,
        ),
        Command(
            "echo",
            16,
            True,
            "echo args to console",
            "[-n] [args..]\n    - echo args to console; -n suppresses newline",
            do_echo,
        ),
        Command("true", 16, True, "do nothing, successfully", "", do_true),
        Command("false", 16, True, "do nothing, unsuccessfully", "", do_false),
        Command("md", 3, True, "memory display", f"{size_help} address [# of objects]", do_md),
        Command("mw", 4, True, "memory write (fill)", f"{size_help} address value [count]", do_mw),
        Command("cp", 4, True, "memory copy", f"{size_help} source target count", do_cp),
        Command("cmp", 4, True, "memory compare", f"{size_help} addr1 addr2 count", do_cmp),
        Command(
            "crc32",
            4,
            True,
            "checksum calculation",
            "address count [addr]\n    - compute CRC32 checksum [save at addr]",
            do_crc32,
        ),
        Command(
            "reset",
            2,
            False,
            "Perform RESET of the CPU",
            "- cold boot without level specifier\nreset -w - warm reset if implemented",
            do_reset,
        ),
        Command(
            "sleep",
            2,
            True,
            "delay execution for some time",
            "N\n    - delay execution for N seconds (N is _decimal_ and can be\n      fractional)",
            do_sleep,
        ),
    ]
    table = {command.name: command for command in commands}
    for command in [*LOAD_COMMANDS, *FLASH_COMMANDS, *NOR_COMMANDS]:
        table[command.name] = command
    return table


COMMANDS = _table()
