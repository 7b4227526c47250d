"""The board behind the U-Boot console simulator: what it is made of, and its memory.

:class:`SimBoard` describes a board (byte order, prompt, output style of the U-Boot build, RAM,
environment, flash devices); :class:`Memory` is its CPU's address space (sparse RAM pages and
memory-mapped CFI NOR; anything else faults like an arm64 data abort). Also here: the text
helpers several commands share (U-Boot's ``print_size``, ``%#x``, the ``md`` line format,
number parsing) and flash programming on image files. No I/O beyond the image files, no trio:
:mod:`mtkfs.testing.sim_uboot` runs the console.

Facts from U-Boot 2023.01 (lib/display_options.c, lib/vsprintf.c, cmd/mem.c) and the QEMU
transcripts in ``tests/data/uboot/qemu-2023.01``.
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mtkfs.testing.sim_uboot_machine import Machine

__all__ = [
    "CMD_RET_USAGE",
    "QEMU_VERSION",
    "Backing",
    "BoardReset",
    "BusFault",
    "CfiBank",
    "CfiFlash",
    "Command",
    "Emmc",
    "Memory",
    "Nand",
    "SimBoard",
    "SpiNor",
    "VirtioDisk",
    "block_reader",
    "c_alt_hex",
    "dectoul",
    "erase_flash",
    "hexdump_lines",
    "hextoul",
    "memsize_parse",
    "print_size",
    "program_flash",
    "qemu_virt_board",
    "str2off",
]

KiB = 1 << 10
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Flash devices


@dataclass(frozen=True)
class SpiNor:
    """A SPI NOR chip behind ``sf`` (its content: the file at ``path``, ``size_bytes`` of it).

    ``name`` is what ``sf probe`` reports (the JEDEC table's name for the part).
    """

    path: Path
    name: str = "w25q128"
    page_bytes: int = 256
    erase_bytes: int = 4 * KiB
    size_bytes: int | None = None
    bus: int = 0
    cs: int = 0


@dataclass(frozen=True)
class Emmc:
    """An eMMC behind ``mmc``: the user area and the two boot partitions, one file each."""

    user: Path
    boot0: Path | None = None
    boot1: Path | None = None
    name: str = "mmc@11230000"
    product: str = "8GTF4R"


@dataclass(frozen=True)
class Nand:
    """Raw NAND behind ``nand`` (main area only; no OOB in the file). Blocks whose offsets
    are in ``bad_blocks`` are bad: reads and writes skip them, erases leave them alone."""

    path: Path
    page_bytes: int = 2 * KiB
    erase_bytes: int = 128 * KiB
    oob_bytes: int = 64
    bad_blocks: frozenset[int] = frozenset()
    name: str = "nand0"


@dataclass(frozen=True)
class VirtioDisk:
    """A virtio block device (QEMU's ``-drive if=virtio``): 512-byte blocks of ``path``."""

    path: Path


@dataclass(frozen=True)
class CfiFlash:
    """One bank of memory-mapped parallel NOR (``flinfo``, ``erase``, ``protect``, ``cp``).

    The CPU sees ``size_bytes`` of ``path`` (from ``file_offset``) at ``base``; U-Boot's CFI
    driver believes in uniform sectors of ``sector_bytes``. ``protected_sectors`` are the
    indexes ``flinfo`` marks ``RO`` (QEMU: U-Boot's environment). ``physical_erase_bytes``:
    the chip's real erase block when it is larger than what U-Boot believes (QEMU virt: 256
    KiB), so erasing one sector wipes its neighbour too.
    """

    base: int
    path: Path
    size_bytes: int | None = None
    file_offset: int = 0
    sector_bytes: int = 128 * KiB
    protected_sectors: frozenset[int] = frozenset()
    physical_erase_bytes: int | None = None
    manufacturer_id: int = 0x89
    device_id: int = 0x0018


# ---------------------------------------------------------------------------------------------
# The board


@dataclass
class SimBoard:
    """Everything the simulated U-Boot knows about its board.

    ``byte_order``: how ``md.w/.l/.q`` print memory (as the CPU's numbers) and ``mw`` stores
    them. ``prompt``: CONFIG_SYS_PROMPT (``=> ``, ``MStar # ``…). ``version``/``toolchain``:
    the sign-on and ``version`` lines; ``console_device``: the ``In:/Out:/Err:`` device.

    Output style of the build: ``md_separator`` (two spaces before the ASCII column since
    v2021.10, four before), ``md_pad_short_line`` (since v2013.04), ``md_line_prefix`` (U-Boot
    1.1.3 starts lines with ``\\r``), ``crc32_spelling`` (``crc32``: the multi-hash path, digest
    stored big-endian; ``CRC32``: the legacy path, stored as a native ``ulong``), ``bits``
    (32 or 64: ``md.q`` exists only on 64-bit builds; ``bdinfo`` widths).

    RAM: ``ram_banks`` of (start, size); the device tree sits at the start of the first bank,
    U-Boot's relocated self near the top of the last. ``ram_survives_reset``: QEMU keeps RAM
    over a reset, real boards do not. ``ram_fill``: what RAM nobody wrote reads as.

    Environment: ``env`` on top of a default one like Debian's (``loadaddr`` = RAM + 2 MiB,
    ``kernel_addr_r`` + 4 MiB, ``ramdisk_addr_r`` + 64 MiB, ``bootdelay=2``…), or alone with
    ``default_env=False``. ``mtdids``/``mtdparts`` there feed ``mtdparts``, ``mtd list`` and
    partition names in ``sf``/``nand``.

    Flash: ``sf`` (one SPI NOR), ``mmc`` (eMMCs, device numbers by position), ``nand``,
    ``virtio`` (disks), ``cfi`` (memory-mapped NOR banks); ``cfi_write_bug``: only the first
    4 KiB of each CFI sector keeps what ``cp``/``loadx`` write, ``done`` printed anyway (QEMU
    7.2); ``cfi_write_bug_timeout``: a write crossing that mark from below ends as QEMU's does,
    ``Flash buffer write timeout…``/``Timeout writing to Flash``, ``$?`` 1.

    Console: ``autoboot_keyed`` (a stop string such as ``tpl``: ``autoboot_prompt`` is printed
    instead of the countdown and only that string stops it), ``banner_lines`` and
    ``boot_script_text`` (override the generated sign-on lines and the failing distro boot),
    ``cbsize`` (CONFIG_SYS_CBSIZE: longer lines beep), ``baud_table`` (rates ``setenv
    baudrate`` accepts), ``rx_fifo_chars`` (None: input waits, as under QEMU; N: characters
    arriving while N are unread are lost, like a real UART's FIFO).

    Timing (seconds): ``banner_delay_s`` from power-on (the first connection) to the sign-on
    (keep it above ~0.05: pyserial's ``socket://`` open() discards what arrives meanwhile),
    ``autoboot_step_s`` per countdown step, ``boot_script_s`` for the failing boot when nobody
    stops the countdown, ``xyz_char_timeout_s``/``xyz_initial_timeout_s`` for loadx/loady
    (U-Boot: 2 and 90).
    """

    byte_order: Literal["little", "big"] = "little"
    prompt: str = "=> "
    md_separator: str = "  "
    md_pad_short_line: bool = True
    md_line_prefix: str = ""
    crc32_spelling: Literal["crc32", "CRC32"] = "crc32"
    bits: Literal[32, 64] = 64
    version: str = "U-Boot 2023.01 (Jan 10 2023 - 12:00:00 +0000)"
    toolchain: tuple[str, ...] = (
        "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0",
        "GNU ld (GNU Binutils for Debian) 2.40",
    )
    console_device: str = "pl011@9000000"
    ram_banks: tuple[tuple[int, int], ...] = ((0x40000000, 512 * MiB),)
    ram_fill: int = 0x00
    ram_survives_reset: bool = False
    env: dict[str, str] = field(default_factory=dict)
    default_env: bool = True
    sf: SpiNor | None = None
    mmc: tuple[Emmc, ...] = ()
    nand: Nand | None = None
    virtio: tuple[VirtioDisk, ...] = ()
    cfi: tuple[CfiFlash, ...] = ()
    cfi_write_bug: bool = False
    cfi_write_bug_timeout: bool = False
    autoboot_keyed: str | None = None
    autoboot_prompt: str = "Autoboot in %d seconds\n"
    banner_lines: tuple[str, ...] | None = None
    boot_script_text: str | None = None
    cbsize: int = 1024
    baud_table: tuple[int, ...] = (9600, 19200, 38400, 57600, 115200)
    rx_fifo_chars: int | None = None
    banner_delay_s: float = 0.2
    autoboot_step_s: float = 1.0
    boot_script_s: float = 1.5
    xyz_char_timeout_s: float = 2.0
    xyz_initial_timeout_s: float = 90.0

    @property
    def ram_top(self) -> int:
        start, size = self.ram_banks[-1]
        return start + size

    @property
    def ulong_mask(self) -> int:
        return (1 << self.bits) - 1

    def initial_env(self) -> dict[str, str]:
        """The environment after power-on: defaults like Debian's qemu_arm64 (unless
        ``default_env`` is off), then ``env`` on top."""
        env: dict[str, str] = {}
        if self.default_env:
            ram = self.ram_banks[0][0]
            env = {
                "arch": "arm",
                "baudrate": "115200",
                "board": "sim",
                "board_name": "sim",
                "bootcmd": "run distro_bootcmd",
                "bootdelay": "2",
                "cpu": "armv8",
                "fdt_addr": f"{ram:#x}",
                "fdtcontroladdr": f"{self.ram_top - 0x1249250:x}",
                "kernel_addr_r": f"{ram + 4 * MiB:#x}",
                "loadaddr": f"{ram + 2 * MiB:#x}",
                "pxefile_addr_r": f"{ram + 3 * MiB:#x}",
                "ramdisk_addr_r": f"{ram + 64 * MiB:#x}",
                "scriptaddr": f"{ram + 2 * MiB:#x}",
                "stderr": self.console_device,
                "stdin": self.console_device,
                "stdout": self.console_device,
                "vendor": "mtkfs",
            }
        env.update(self.env)
        return env


#: Debian 12's U-Boot for QEMU virt (u-boot-qemu 2023.01+dfsg-2+deb12u3), as recorded.
QEMU_VERSION = "U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000)"


def qemu_virt_board(
    disk: Path, pflash0: Path, pflash1: Path, *, env: dict[str, str] | None = None
) -> SimBoard:
    """A board that answers like QEMU 7.2's ``virt`` running Debian's U-Boot 2023.01
    (:mod:`mtkfs.testing.qemu_uboot`): 512 MiB of RAM that survives resets, two CFI banks of
    which U-Boot sees 32 MiB each in 128 KiB sectors (256 KiB real erase blocks, the first
    eight and two sectors read-only, QEMU's write bug with its timeout), a virtio disk.
    ``env``: the environment as ``printenv`` shows it (default: a short generic one)."""
    return SimBoard(
        version=QEMU_VERSION,
        ram_survives_reset=True,
        env=dict(env or {}),
        default_env=env is None,
        virtio=(VirtioDisk(disk),),
        cfi=(
            CfiFlash(
                0,
                pflash0,
                32 * MiB,
                physical_erase_bytes=256 * KiB,
                protected_sectors=frozenset(range(8)),
            ),
            CfiFlash(
                0x04000000,
                pflash1,
                32 * MiB,
                physical_erase_bytes=256 * KiB,
                protected_sectors=frozenset(range(2)),
            ),
        ),
        cfi_write_bug=True,
        cfi_write_bug_timeout=True,
        banner_delay_s=0.19,
        autoboot_step_s=1.0,
        boot_script_s=1.0,
    )


# ---------------------------------------------------------------------------------------------
# Commands

#: A command's answer meaning "print my usage" (U-Boot's CMD_RET_USAGE); $? becomes 1.
CMD_RET_USAGE = -1


@dataclass(frozen=True)
class Command:
    """One entry of U-Boot's command table (U_BOOT_CMD): ``func(machine, argv, repeat)``
    returns the exit code (or CMD_RET_USAGE). ``repeatable`` may depend on the arguments
    (commands with sub-commands)."""

    name: str
    maxargs: int
    repeatable: bool | Callable[[list[str]], bool]
    usage: str
    help: str
    func: Callable[[Machine, list[str], bool], Awaitable[int]]

    def usage_text(self) -> str:
        """command.c cmd_usage()."""
        body = self.help if self.help else "- No additional help available."
        return f"{self.name} - {self.usage}\n\nUsage:\n{self.name} {body}\n"


# ---------------------------------------------------------------------------------------------
# Text helpers


def print_size(size: int, suffix: str = "") -> str:
    """lib/display_options.c print_size(): ``256 Bytes``, ``4 KiB``, ``7.3 GiB``."""
    names = "EPTGMK"
    found = [i for i in range(len(names)) if size >> (10 * (len(names) - i))]
    if not found:
        return f"{size} Bytes{suffix}"
    index = found[0]
    name = names[index]
    shift = 10 * (len(names) - index)
    whole, rest = size >> shift, size & ((1 << shift) - 1)
    tenth = 0
    if rest:
        tenth = (10 * rest + (1 << (shift - 1))) >> shift
        if tenth >= 10:
            tenth -= 10
            whole += 1
            if whole == 1024 and index > 0:
                whole, tenth, name = 1, 0, names[index - 1]
    text = f"{whole}.{tenth}" if tenth else f"{whole}"
    return f"{text} {name}iB{suffix}"


def c_alt_hex(value: int, width: int = 0) -> str:
    """U-Boot's ``%#0*x``: ``0x`` always (even for 0, unlike glibc), zero-padded so the whole
    is ``width`` characters."""
    digits = f"{value:x}"
    return "0x" + "0" * max(0, width - 2 - len(digits)) + digits


_ASCII_COLUMN = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))
_TYPECODES = {2: "H", 4: "I", 8: "Q"}


def hexdump_lines(
    addr: int,
    data: bytes,
    width: int,
    byte_order: str,
    *,
    separator: str = "  ",
    pad_short: bool = True,
    prefix: str = "",
) -> list[str]:
    """``md`` lines for ``data`` at ``addr`` (lib/display_options.c hexdump_line): 16 bytes
    per line, objects of ``width`` bytes printed as numbers in ``byte_order``, a short last
    line padded so the ASCII column lines up. Without line ends.

    Fast: whole blocks go through ``bytes.hex`` and ``translate``, lines are slices of them.
    """
    per_line = 16 // width
    words = data
    if width > 1 and byte_order == "little":
        swapped = array(_TYPECODES[width], data)
        swapped.byteswap()
        words = swapped.tobytes()
    hexed = words.hex(" ", width) if width > 1 else words.hex(" ")
    text = data.translate(_ASCII_COLUMN).decode("ascii")
    stride = 32 + per_line  # hex digits and separators of one full line
    lines = []
    for start in range(0, len(data), 16):
        index = start // 16
        hex_part = hexed[index * stride : index * stride + stride - 1]
        count = min(16, len(data) - start) // width
        padding = " " * ((per_line - count) * (2 * width + 1)) if pad_short else ""
        lines.append(
            f"{prefix}{(addr + start) & 0xFFFFFFFFFFFFFFFF:08x}: {hex_part}{padding}"
            f"{separator}{text[start : start + 16]}"
        )
    return lines


def hextoul(text: str) -> int:
    """U-Boot's hextoul()/simple_strtoul(s, 16): an optional ``0x``, then hex digits up to the
    first other character; 0 if none (``md zz`` dumps address 0)."""
    if text[:2].lower() == "0x":
        text = text[2:]
    end = 0
    while end < len(text) and text[end] in "0123456789abcdefABCDEF":
        end += 1
    return int(text[:end], 16) if end else 0


def dectoul(text: str) -> int:
    """simple_strtoul(s, 10): leading decimal digits, 0 if none."""
    end = 0
    while end < len(text) and text[end].isdigit():
        end += 1
    return int(text[:end]) if end else 0


def str2off(text: str) -> int | None:
    """cmd/legacy-mtd-utils str2off(): the whole string as hex (optional ``0x``), or None."""
    body = text[2:] if text[:2].lower() == "0x" else text
    if not text or not body or any(c not in "0123456789abcdefABCDEF" for c in body):
        return None
    return int(body, 16)


def memsize_parse(text: str) -> tuple[int, str]:
    """cmd/mtdparts.c memsize_parse(): a number (``0x`` hex or decimal) with an optional
    k/m/g suffix; returns (bytes, the rest of the text)."""
    pos = 0
    if text[:2].lower() == "0x":
        pos = 2
        while pos < len(text) and text[pos] in "0123456789abcdefABCDEF":
            pos += 1
        value = int(text[2:pos], 16) if pos > 2 else 0
    else:
        while pos < len(text) and text[pos].isdigit():
            pos += 1
        value = int(text[:pos]) if pos else 0
    suffix = text[pos : pos + 1].lower()
    if suffix in ("k", "m", "g"):
        value <<= {"k": 10, "m": 20, "g": 30}[suffix]
        pos += 1
    return value, text[pos:]


# ---------------------------------------------------------------------------------------------
# Backing files and the address space


class Backing:
    """A flash image file: bounded reads and writes at byte offsets. Bytes past the end of a
    shorter file read as ``fill``."""

    def __init__(
        self, path: Path, size_bytes: int | None = None, *, offset: int = 0, fill: int = 0xFF
    ) -> None:
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDWR)
            self.writable = True
        except PermissionError:
            self.fd = os.open(self.path, os.O_RDONLY)
            self.writable = False
        self.offset = offset
        file_size = os.fstat(self.fd).st_size - offset
        self.size = file_size if size_bytes is None else size_bytes
        self.fill = fill

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"{offset:#x}+{size:#x} outside {self.path}")
        data = os.pread(self.fd, size, self.offset + offset)
        if len(data) < size:
            data += bytes([self.fill]) * (size - len(data))
        return data

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"{offset:#x}+{len(data):#x} outside {self.path}")
        if not self.writable:
            raise PermissionError(f"{self.path} is read-only")
        os.pwrite(self.fd, data, self.offset + offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BoardReset(Exception):
    """Unwinds the board's main loop: the CPU resets (crash, ``reset``, a fault)."""


class BusFault(Exception):
    """An access to an address nothing answers: U-Boot dies with a synchronous abort."""

    def __init__(self, addr: int, write: bool = False) -> None:
        super().__init__(f"{'write to' if write else 'read from'} unmapped {addr:#x}")
        self.addr = addr
        self.write = write


class CfiBank:
    """A CFI bank at run time: its image, sectors and protection flags."""

    def __init__(self, spec: CfiFlash) -> None:
        self.spec = spec
        self.backing = Backing(spec.path, spec.size_bytes, offset=spec.file_offset)
        self.base = spec.base
        self.size = self.backing.size
        self.sector_bytes = spec.sector_bytes
        self.sector_count = self.size // spec.sector_bytes
        self.protect = [i in spec.protected_sectors for i in range(self.sector_count)]

    def sector_start(self, index: int) -> int:
        return self.base + index * self.sector_bytes


_PAGE = 1 << 16


class Memory:
    """The CPU's view: RAM banks (sparse 64 KiB pages) and CFI banks (their image files).

    Reads and writes of anything else raise :class:`BusFault` with the first address that
    nothing answers. Plain writes to CFI flash are ignored (the chip takes them as commands);
    flash is written through :meth:`cfi_bank` by the flash commands.
    """

    def __init__(self, board: SimBoard, cfi: list[CfiBank]) -> None:
        self.board = board
        self.cfi = cfi
        self.pages: dict[int, bytearray] = {}
        self._fill_page = bytes([board.ram_fill]) * _PAGE
        regions: list[tuple[int, int, CfiBank | None]] = [
            (start, start + size, None) for start, size in board.ram_banks
        ]
        regions += [(bank.base, bank.base + bank.size, bank) for bank in cfi]
        self.regions = sorted(regions, key=lambda r: r[0])

    def clear_ram(self) -> None:
        self.pages.clear()

    def _region(self, addr: int) -> tuple[int, int, CfiBank | None] | None:
        for region in self.regions:
            if region[0] <= addr < region[1]:
                return region
        return None

    def cfi_bank(self, addr: int) -> CfiBank | None:
        """The CFI bank ``addr`` is in (U-Boot's addr2info), or None."""
        region = self._region(addr)
        return None if region is None else region[2]

    def readable(self, addr: int, size: int) -> int:
        """How many bytes from ``addr`` on can be accessed before the first fault (≤ size)."""
        done = 0
        while done < size:
            region = self._region(addr + done)
            if region is None:
                return done
            done = min(size, region[1] - addr)
        return size

    def read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            here = addr + len(out)
            region = self._region(here)
            if region is None:
                raise BusFault(here)
            take = min(size - len(out), region[1] - here)
            bank = region[2]
            if bank is None:
                out += self._ram_read(here, take)
            else:
                out += bank.backing.read(here - bank.base, take)
        return bytes(out)

    def _ram_read(self, addr: int, size: int) -> bytes:
        if size <= _PAGE - addr % _PAGE:
            page = self.pages.get(addr // _PAGE)
            offset = addr % _PAGE
            if page is None:
                return self._fill_page[offset : offset + size]
            return bytes(page[offset : offset + size])
        parts = []
        while size:
            take = min(size, _PAGE - addr % _PAGE)
            parts.append(self._ram_read(addr, take))
            addr += take
            size -= take
        return b"".join(parts)

    def write(self, addr: int, data: bytes) -> None:
        if self.readable(addr, len(data)) < len(data):
            raise BusFault(addr + self.readable(addr, len(data)), write=True)
        pos = 0
        while pos < len(data):
            here = addr + pos
            region = self._region(here)
            assert region is not None
            take = min(len(data) - pos, region[1] - here)
            if region[2] is None:
                self._ram_write(here, data[pos : pos + take])
            pos += take

    def _ram_write(self, addr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            index, offset = divmod(addr + pos, _PAGE)
            take = min(len(data) - pos, _PAGE - offset)
            page = self.pages.get(index)
            if page is None:
                page = self.pages[index] = bytearray(self._fill_page)
            page[offset : offset + take] = data[pos : pos + take]
            pos += take

    def crc32(self, addr: int, size: int) -> int:
        crc = 0
        pos = 0
        while pos < size:
            take = min(size - pos, 4 * MiB)
            crc = zlib.crc32(self.read(addr + pos, take), crc)
            pos += take
        return crc

    def write_fdt_stub(self) -> None:
        """QEMU puts the device tree at the start of RAM: a header with the FDT magic."""
        start = self.board.ram_banks[0][0]
        header = struct.pack(">10I", 0xD00DFEED, 0x2000, 0x38, 0x200, 0x28, 17, 16, 0, 0x100, 0x1C8)
        self._ram_write(start, header)


# ---------------------------------------------------------------------------------------------
# Flash programming on image files


def program_flash(backing: Backing, offset: int, data: bytes) -> None:
    """Program flash: bits only go from 1 to 0 (old AND new)."""
    old = backing.read(offset, len(data))
    new = (int.from_bytes(old, "big") & int.from_bytes(data, "big")).to_bytes(len(data), "big")
    backing.write(offset, new)


def erase_flash(backing: Backing, offset: int, size: int) -> None:
    """Erase: every byte 0xFF."""
    for pos in range(0, size, MiB):
        backing.write(offset + pos, b"\xff" * min(MiB, size - pos))


def block_reader(backing: Backing) -> Callable[[int, int], bytes]:
    """``read(lba, count)`` of 512-byte blocks (zeros past the end), for partition tables."""

    def read(lba: int, count: int) -> bytes:
        end = min(backing.size, (lba + count) * 512)
        return backing.read(lba * 512, max(0, end - lba * 512)).ljust(count * 512, b"\0")

    return read
