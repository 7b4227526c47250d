"""The simulated U-Boot's CPU: power-on, autoboot, the shell, and the death of a bus fault.

:class:`Machine` holds what a reset clears (RAM unless the board keeps it, the environment,
``sf probe``/``mmc dev`` selections, the shell's repeat state) and gives commands their I/O:
``puts`` (``\n`` leaves as ``\r\n``), ``ctrlc`` (reads and drops one typed character, as
console.c does), ``getc``. Its shell is the part of U-Boot's old hush a driver meets
(common/cli_hush.c, common/cli_readline.c): echo, backspace, Ctrl-C (``<INTERRUPT>``), an empty
line re-running the last line when every command in it was repeatable, ``;``/``&&``/``||``
with hush's skipping rule, ``$?``, ``$var``, quotes. Autoboot follows common/autoboot.c.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from mtkfs.testing.sim_uboot_board import (
    CMD_RET_USAGE,
    Backing,
    BoardReset,
    BusFault,
    CfiBank,
    Command,
    Memory,
    print_size,
)
from mtkfs.testing.sim_uboot_cmds import COMMANDS

if TYPE_CHECKING:
    from mtkfs.testing.sim_uboot import ConsoleFaults, SimConsole

__all__ = ["CTRL_C", "FlashState", "Machine", "parse_line"]

log = logging.getLogger(__name__)

CTRL_C = 0x03

# ---------------------------------------------------------------------------------------------
# The machine: state that a reset clears, the shell, autoboot


@dataclass
class FlashState:
    """Selections that a reset forgets (``sf probe``, ``mmc dev``)."""

    sf_probed: bool = False
    mmc_dev: int = 0
    mmc_part: int = 0
    mmc_initialised: bool = False
    nand_dev: int = 0
    virtio_dev: int = 0
    mtd_probed: str | None = None


class Machine:
    """The running U-Boot: memory, environment, shell state, and the I/O commands use."""

    def __init__(self, console: SimConsole) -> None:
        self.console = console
        self.board = console.board
        self.uart = console.uart
        self.commands = COMMANDS
        board = self.board
        self.cfi = [CfiBank(spec) for spec in board.cfi]
        self.mem = Memory(board, self.cfi)
        self.sf = None if board.sf is None else Backing(board.sf.path, board.sf.size_bytes)
        self.mmc = [
            [Backing(p) if p is not None else None for p in (e.user, e.boot0, e.boot1)]
            for e in board.mmc
        ]
        self.nand = None if board.nand is None else Backing(board.nand.path)
        self.virtio = [Backing(disk.path) for disk in board.virtio]
        self.env: dict[str, str] = {}
        self.locals: dict[str, str] = {}
        self.flash = FlashState()
        self.last_rc = 0
        self.flag_repeat = False
        self.the_command = ""
        self.had_ctrlc = False
        self.md_last = (0, 4, 0x40)  # address, width, count
        self.load_addr = 0

    def close(self) -> None:
        for backing in [self.sf, self.nand, *self.virtio, *(b.backing for b in self.cfi)]:
            if backing is not None:
                backing.close()
        for parts in self.mmc:
            for backing in parts:
                if backing is not None:
                    backing.close()

    def power_on(self, clear_ram: bool) -> None:
        if clear_ram:
            self.mem.clear_ram()
        self.mem.write_fdt_stub()
        self.env = self.board.initial_env()
        self.locals = {}
        self.flash = FlashState()
        for bank in self.cfi:
            bank.protect = [i in bank.spec.protected_sectors for i in range(bank.sector_count)]
        self.last_rc = 0
        self.flag_repeat = False
        self.the_command = ""
        self.had_ctrlc = False
        self.md_last = (0, 4, 0x40)

    @property
    def faults(self) -> ConsoleFaults:
        return self.console.faults

    # -- I/O ----------------------------------------------------------------------------------

    async def puts(self, text: str) -> None:
        """Print like U-Boot: ``\\n`` leaves the UART as ``\\r\\n``."""
        await self.uart.write(text.encode("latin-1", "replace").replace(b"\n", b"\r\n"))

    async def putc_raw(self, data: bytes) -> None:
        await self.uart.write(data.replace(b"\n", b"\r\n"))

    def tstc(self) -> bool:
        return bool(self.uart.rx)

    def ctrlc(self) -> bool:
        """console.c ctrlc(): read one pending character; True (and remembered) if Ctrl-C."""
        byte = self.uart.getc_nowait()
        if byte == CTRL_C:
            self.had_ctrlc = True
            return True
        return False

    def poll_ctrlc(self, polls: int) -> bool:
        """``polls`` ctrlc() calls at once (one per line printed): eats up to that many typed
        characters; True at the first Ctrl-C."""
        for _ in range(polls):
            if not self.uart.rx:
                return False
            if self.ctrlc():
                return True
        return False

    async def getc(self) -> int:
        return await self.uart.getc()

    async def getc_timeout(self, timeout_s: float) -> int | None:
        if await self.uart.wait_input(timeout_s):
            return self.uart.getc_nowait()
        return None

    def flush_input(self) -> None:
        self.uart.rx.clear()

    async def set_baud(self, baud: int) -> None:
        """The board's UART changes speed: pacing follows when it is on."""
        if self.faults.baud is not None:
            self.faults.baud = baud
        self.env["baudrate"] = str(baud)

    # -- the board's life ---------------------------------------------------------------------

    async def run(self) -> None:
        """Power-on to the prompt, then the shell for ever (until a reset unwinds it)."""
        await trio.sleep(self.board.banner_delay_s)
        await self.puts(f"\n\n{self.board.version}\n\n")
        for line in self.banner_lines():
            await self.puts(line + "\n")
        bootdelay = _int_or(self.env.get("bootdelay"), 2)
        if bootdelay == -2 or (bootdelay != -1 and not await self.autoboot(bootdelay)):
            await self.boot_script()
        while True:
            await self.interactive_line()

    def banner_lines(self) -> list[str]:
        if self.board.banner_lines is not None:
            return list(self.board.banner_lines)
        board = self.board
        lines = [
            f"DRAM:  {print_size(sum(size for _, size in board.ram_banks))}",
            "Core:  47 devices, 13 uclasses, devicetree: board",
        ]
        if self.cfi:
            lines.append(f"Flash: {print_size(sum(bank.size for bank in self.cfi))}")
        if self.nand is not None:
            lines.append(f"NAND:  {print_size(self.nand.size)}")
        if board.mmc:
            lines.append("MMC:   " + ", ".join(f"{e.name}: {i}" for i, e in enumerate(board.mmc)))
        lines += [
            "Loading Environment from Flash... *** Warning - bad CRC, using default environment",
            "",
            f"In:    {board.console_device}",
            f"Out:   {board.console_device}",
            f"Err:   {board.console_device}",
            "Net:   No ethernet found.",
        ]
        return lines

    async def autoboot(self, bootdelay: int) -> bool:
        """common/autoboot.c: True if the countdown was stopped (the key is consumed)."""
        step_s = self.board.autoboot_step_s
        key = self.board.autoboot_keyed or self.env.get("bootstopkey")
        if self.board.autoboot_keyed is not None and key:
            await self.puts(self.board.autoboot_prompt.replace("%d", str(bootdelay)))
            deadline = trio.current_time() + bootdelay * step_s
            typed = ""
            while trio.current_time() < deadline:
                if await self.uart.wait_input(deadline - trio.current_time()):
                    typed = (typed + chr(self.uart.getc_nowait() or 0))[-len(key) :]
                    if typed == key:
                        return True
            return False
        await self.puts(f"Hit any key to stop autoboot: {bootdelay:2d} ")
        if self.tstc():
            await self.getc()
            await self.puts("\b\b\b 0\n")
            return True
        abort = False
        while bootdelay > 0 and not abort:
            bootdelay -= 1
            if await self.uart.wait_input(step_s):
                await self.getc()
                abort, bootdelay = True, 0
            await self.puts(f"\b\b\b{bootdelay:2d} ")
        await self.puts("\n")
        return abort

    async def boot_script(self) -> None:
        """Nobody stopped the countdown: the distro boot finds nothing and gives up."""
        text = self.board.boot_script_text
        if text is None:
            text = self.default_boot_script()
        lines = text.splitlines(keepends=True)
        for line in lines:
            await trio.sleep(self.board.boot_script_s / max(1, len(lines)))
            if self.poll_ctrlc(1):
                return
            await self.puts(line)

    def default_boot_script(self) -> str:
        parts = [
            "fatal: no kernel available\n",
            "Command 'load' failed: Error 1\n",
            "starting USB...\n",
            "No working controllers found\n",
            "USB is stopped. Please issue 'usb start' first.\n",
            "scanning bus for devices...\n",
            "\nDevice 0: unknown device\n",
        ]
        if self.virtio:
            from mtkfs.testing.sim_uboot_flash import virtio_device_text

            parts += [virtio_device_text(self, 0), "... is now current device\n"]
        parts += [
            "\nDevice 0: unknown device\n",
            "starting USB...\n",
            "No working controllers found\n",
            "No ethernet found.\n",
            "No ethernet found.\n",
        ]
        return "".join(parts)

    # -- the shell ----------------------------------------------------------------------------

    async def interactive_line(self) -> None:
        """One turn of cli_hush.c's loop: prompt, read a line, run it (or repeat the last)."""
        await self.puts(self.board.prompt)
        line = await self.readline()
        if line is None:
            self.flag_repeat = False
            self.had_ctrlc = False
            await self.puts("<INTERRUPT>\n")
            return
        self.console.record_line(line)
        if self.had_ctrlc:
            self.flag_repeat = False
        self.had_ctrlc = False
        if not line:
            if self.flag_repeat:
                await self.run_line(self.the_command, repeat=True)
            return
        self.the_command = line
        self.flag_repeat = True
        await self.run_line(line, repeat=False)

    async def readline(self) -> str | None:
        """cli_readline.c cread_line(), the parts a driver meets: echo, backspace, ^U, ^C
        (None), CR or LF ends the line. Escape sequences (arrows) are swallowed."""
        buf: list[str] = []
        limit = self.board.cbsize - 1
        while True:
            byte = await self.getc()
            if byte in (0x0D, 0x0A):
                await self.puts("\n")
                return "".join(buf)
            if byte == CTRL_C:
                return None
            if byte in (0x08, 0x7F):
                if buf:
                    buf.pop()
                    await self.puts("\b \b")
            elif byte in (0x15, 0x18):  # ^U, ^X: erase the line
                count = len(buf)
                buf.clear()
                await self.puts("\b" * count + " " * count + "\b" * count)
            elif byte == 0x1B:
                await self._swallow_escape()
            elif byte >= 0x20:
                echo = [chr(byte)]
                while self.uart.rx and self.uart.rx[0] >= 0x20 and self.uart.rx[0] != 0x7F:
                    echo.append(chr(self.uart.rx.pop(0)))
                out = []
                for char in echo:
                    if len(buf) >= limit:
                        out.append("\a")
                    else:
                        buf.append(char)
                        out.append(char)
                await self.puts("".join(out))

    async def _swallow_escape(self) -> None:
        second = await self.getc_timeout(0.1)
        if second in (ord("["), ord("O")):
            final = await self.getc_timeout(0.1)
            while final is not None and chr(final).isdigit():
                final = await self.getc_timeout(0.1)

    async def run_line(self, line: str, *, repeat: bool) -> None:
        """Hush's run_list(): ``;``, ``&&``, ``||`` (with old hush's skipping rule: after a
        skip, everything up to the next ``;`` is skipped), ``$?``, ``$var``, assignments."""
        try:
            pipes = parse_line(line)
        except ValueError:
            await self.puts("syntax error\n")
            self.flag_repeat = False
            return
        skip = False
        for words, followup in pipes:
            if skip:
                skip = followup != ";"
                continue
            argv = [arg for word in words for arg in self.expand(word)]
            if not argv:
                continue
            assignments = 0
            while assignments < len(argv) and _ASSIGNMENT.match(argv[assignments]):
                assignments += 1
            if assignments == len(argv):
                for item in argv:
                    name, _, value = item.partition("=")
                    self.locals[name] = value
                rc = 0
            else:
                rc = await self.run_command(argv[assignments:], repeat)
            self.last_rc = 0 if rc == 0 else 1
            if (rc == 0 and followup == "||") or (rc != 0 and followup == "&&"):
                skip = True

    def expand(self, word: Word) -> list[str]:
        """A parsed word's arguments: variables substituted (locals, then the environment);
        an unquoted word splits at white space and vanishes when empty."""
        quoted, segments = word
        text = "".join(self.variable(value) if kind == "var" else value for kind, value in segments)
        if quoted:
            return [text]
        return text.split()

    def variable(self, name: str) -> str:
        if name == "?":
            return str(self.last_rc)
        return self.locals.get(name, self.env.get(name, ""))

    def find_command(self, name: str) -> Command | None:
        """command.c find_cmd(): the name up to a dot; a unique abbreviation will do."""
        base = name.split(".", 1)[0]
        exact = self.commands.get(base)
        if exact is not None:
            return exact
        found = [cmd for key, cmd in self.commands.items() if key.startswith(base) and base]
        return found[0] if len(found) == 1 else None

    async def run_command(self, argv: list[str], repeat: bool) -> int:
        """command.c cmd_process(); a bus fault is the board's death."""
        command = self.find_command(argv[0])
        if command is None:
            await self.puts(f"Unknown command '{argv[0]}' - try 'help'\n")
            return 1
        try:
            if len(argv) > command.maxargs:
                rc = CMD_RET_USAGE
            else:
                rc = await command.func(self, argv, repeat)
                repeatable = command.repeatable
                if callable(repeatable):
                    repeatable = repeatable(argv)
                self.flag_repeat = self.flag_repeat and repeatable
        except BusFault as fault:
            await self.crash(fault)
            raise BoardReset from None
        except (ValueError, OSError) as error:  # a simulator bug or an image file's trouble
            log.exception("sim_uboot: %r failed", argv)
            await self.puts(f"## sim_uboot internal error: {error}\n")
            return 1
        if rc == CMD_RET_USAGE:
            await self.puts(command.usage_text())
            rc = 1
        return rc

    async def crash(self, fault: BusFault) -> None:
        """arm64's answer to a bus error: the register dump, then a reset (the text and
        registers of the QEMU transcript, with the faulting address in x22); 32-bit boards
        die like ARMv7 (arch/arm/lib/interrupts.c: ``data abort``, the address in r3)."""
        top = self.board.ram_top
        reloc = top - 0x109000
        if self.board.bits == 32:
            pc, lr = reloc + 0x1F0F4, reloc + 0x1F0C8
            lines = [
                "data abort",
                f"pc : [<{pc:08x}>]\t   lr : [<{lr:08x}>]",
                f"reloc pc : [<{pc - reloc:08x}>]\t   lr : [<{lr - reloc:08x}>]",
                f"sp : {top - 0x1249260:08x}  ip : 00000000\t fp : 00000003",
                "r10: 00000000  r9 : 8ef59ee8\t r8 : 00000003",
                "r7 : 00000000  r6 : 00000004\t r5 : 00000004  r4 : 00000001",
                f"r3 : {fault.addr:08x}  r2 : 00000000\t r1 : 00000000  r0 : 00000000",
                "Flags: nzCv  IRQs off  FIQs off  Mode SVC_32",
                "Code: e1a00005 e3a01004 e1a02004 e0833004 (e5933000) ",
                "Resetting CPU ...",
                "",
                "resetting ...",
            ]
            await self.puts("\n".join(lines) + "\n")
            return

        def near(value: int) -> int:
            return value - 0x60000000 + top if 0x5D000000 <= value < 0x60000000 else value

        regs = [near(v) for v in _CRASH_REGS]
        regs[22] = fault.addr
        esr = 0x96000050 if fault.write else 0x96000010
        lines = [
            f'"Synchronous Abort" handler, esr {esr:#010x}',
            "elr: 0000000000081104 lr : 0000000000081054 (reloc)",
            f"elr: {reloc + 0x81104:016x} lr : {reloc + 0x81054:016x}",
        ]
        for i in range(0, 30, 2):
            lines.append(f"x{i:<2d}: {regs[i]:016x} x{i + 1:<2d}: {regs[i + 1]:016x}")
        lines += [
            "",
            "Code: 2a0403f3 17ffffcb 7100129f 54000181 (b94002c3) ",
            "Resetting CPU ...",
            "",
            "resetting ...",
        ]
        await self.puts("\n".join(lines) + "\n")


#: The registers of the QEMU crash transcript (x0..x29).
_CRASH_REGS = (
    0xA,
    0x5EDB6A39,
    0xFFFFFFFD,
    0x20,
    0x30,
    0x5EDB6A30,
    0x5FF9C9A9,
    0x5EDB6980,
    0xFFFFFFD8,
    0x4,
    0x10,
    0x6,
    0x1869F,
    0x21,
    0x6,
    0x0,
    0x5FF096B8,
    0x5FFEA1A8,
    0x5EEB6DB0,
    0x4,
    0x4,
    0x4,
    0x100000000,
    0x5FFA830E,
    0x5EDB6A3A,
    0x0,
    0x5EDB69E8,
    0x8,
    0x4,
    0x5EDB6980,
)

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------------
# Hush, the part of it a driver uses

#: A word: (quoted, segments); a segment is ("lit", text) or ("var", name).
Word = tuple[bool, list[tuple[str, str]]]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_line(line: str) -> list[tuple[list[Word], str]]:
    """Split a command line into pipes (words, followup: ``;``, ``&&`` or ``||``).

    Quotes: '…' literal, "…" with ``$`` expansion, ``\\`` escapes one character; ``#`` at a
    word's start comments out the rest. ValueError for an unterminated quote."""
    pipes: list[tuple[list[Word], str]] = []
    words: list[Word] = []
    segments: list[tuple[str, str]] = []
    quoted = False
    in_word = False
    pos = 0

    def end_word() -> None:
        nonlocal segments, quoted, in_word
        if in_word:
            words.append((quoted, segments))
        segments, quoted, in_word = [], False, False

    def add(kind: str, text: str) -> None:
        nonlocal in_word
        in_word = True
        segments.append((kind, text))

    while pos < len(line):
        char = line[pos]
        if char in " \t":
            end_word()
        elif char == ";" or line.startswith(("&&", "||"), pos):
            end_word()
            op = ";" if char == ";" else line[pos : pos + 2]
            pipes.append((words, op))
            words = []
            pos += len(op)
            continue
        elif char == "#" and not in_word:
            break
        elif char == "\\" and pos + 1 < len(line):
            add("lit", line[pos + 1])
            pos += 2
            continue
        elif char == "'":
            end = line.find("'", pos + 1)
            if end < 0:
                raise ValueError("unterminated quote")
            add("lit", line[pos + 1 : end])
            quoted = True
            pos = end + 1
            continue
        elif char == '"':
            end = pos + 1
            quoted = True
            add("lit", "")
            while end < len(line) and line[end] != '"':
                if line[end] == "\\" and end + 1 < len(line) and line[end + 1] in '"\\$':
                    add("lit", line[end + 1])
                    end += 2
                elif line[end] == "$":
                    end = _dollar(line, end, add)
                else:
                    add("lit", line[end])
                    end += 1
            if end >= len(line):
                raise ValueError("unterminated quote")
            pos = end + 1
            continue
        elif char == "$":
            pos = _dollar(line, pos, add)
            continue
        else:
            add("lit", char)
        pos += 1
    end_word()
    pipes.append((words, ";"))
    return pipes


def _dollar(line: str, pos: int, adder: Callable[[str, str], None]) -> int:
    """Parse ``$?``, ``${name}`` or ``$name`` at ``pos``; returns the position after it."""
    rest = line[pos + 1 :]
    if rest.startswith("?"):
        adder("var", "?")
        return pos + 2
    if rest.startswith("{") and "}" in rest:
        name = rest[1 : rest.index("}")]
        adder("var", name)
        return pos + 2 + len(name) + 1
    match = _NAME.match(rest)
    if match is None:
        adder("lit", "$")
        return pos + 1
    adder("var", match.group(0))
    return pos + 1 + match.end()
