"""Where mtkfs may put data in a U-Boot board's RAM: ``printenv``, ``bdinfo``, staging.

Every transfer goes through a RAM staging buffer (flash → RAM → ``md`` → host, and back with
``loadx``). A wrong address is not a wrong answer but a crash: writing over U-Boot's own heap,
stack or relocated code resets the board, and ``md`` of unmapped memory aborts. So the address
comes from what the board says about itself — the environment's load addresses, ``bdinfo``'s
DRAM banks, relocation address, stack and LMB reservations — checked against all of them, and
a user's ``--ram`` when the board's word is not enough (``../shared/reference/uboot.md`` §4.5).
Import the public names from :mod:`mtkfs.protocols.uboot`, which re-exports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mtkfs.errors import SourceError
from mtkfs.protocols.uboot_text import checked_int, text_lines

_ENV_LINE = re.compile(r"([^=\s]+)=(.*)")


def parse_env(text: str) -> dict[str, str]:
    """``printenv`` output (``name=value`` lines) as a dict; other lines (``Environment size:
    …``, ``## Error: "x" not defined``) are skipped. Values are device text."""
    env: dict[str, str] = {}
    for line in text_lines(text):
        match = _ENV_LINE.fullmatch(line)
        if match is not None:
            env[match.group(1)] = match.group(2)
    return env


@dataclass(frozen=True)
class BoardInfo:
    """What ``bdinfo`` says about RAM and U-Boot's place in it.

    ``dram_banks`` are (start, size); ``reloc_address`` is where U-Boot relocated its code
    (its heap, board data, FDT copy and stack lie just below); ``sp_start`` is the top of its
    stack; ``reserved`` are the LMB-reserved (start, size) ranges of 2020+ builds.
    """

    dram_banks: tuple[tuple[int, int], ...]
    reloc_address: int | None
    fdt_blob: int | None
    sp_start: int | None = None
    reserved: tuple[tuple[int, int], ...] = ()


_BD_FIELD = re.compile(r"\s*([^=]*?)\s*=\s*(?:0x)?([0-9a-fA-F]{1,16})\s*")
_LMB_RESERVED = re.compile(r"\s*reserved\[\d+\]\s*\[0x([0-9a-f]+)-0x([0-9a-f]+)\].*")
_LMB_RESERVED_OLD_BASE = re.compile(r"\s*reserved\.reg\[0x[0-9a-f]+\]\.base\s*=\s*0x([0-9a-f]+)")
_LMB_RESERVED_OLD_SIZE = re.compile(r"\s*\.size\s*=\s*0x([0-9a-f]+)")


def parse_bdinfo(text: str) -> BoardInfo:
    """RAM banks, relocation address, FDT and LMB reservations from ``bdinfo``.

    2023.01 prints ``DRAM bank   = 0x…`` then ``-> start    = 0x…`` and ``-> size     =
    0x…`` per bank (zero-padded to the word size); builds before 2020 print ``%08lX``
    (upper case), and PPC/MIPS/m68k print one ``memstart``/``memsize`` (``mem start``,
    ``bi_memstart``) pair instead. Lines it does not know are skipped.
    """
    banks: list[list[int | None]] = []
    single: dict[str, int] = {}
    fields: dict[str, int] = {}
    reserved: list[tuple[int, int]] = []
    pending_base: int | None = None
    for line in text_lines(text):
        lmb = _LMB_RESERVED.fullmatch(line)
        if lmb is not None:
            first, last = int(lmb.group(1), 16), int(lmb.group(2), 16)
            if last >= first:
                reserved.append((first, last - first + 1))
            continue
        old_base = _LMB_RESERVED_OLD_BASE.fullmatch(line)
        if old_base is not None:
            pending_base = int(old_base.group(1), 16)
            continue
        old_size = _LMB_RESERVED_OLD_SIZE.fullmatch(line)
        if old_size is not None:
            if pending_base is not None:
                reserved.append((pending_base, int(old_size.group(1), 16)))
            pending_base = None
            continue
        field = _BD_FIELD.fullmatch(line)
        if field is None:
            continue
        key = " ".join(field.group(1).lower().split())
        value = int(field.group(2), 16)
        if key == "dram bank":
            banks.append([None, None])
        elif key in ("-> start", "-> size") and banks:
            banks[-1][0 if key == "-> start" else 1] = value
        elif key in ("memstart", "mem start", "bi_memstart"):
            single["start"] = value
        elif key in ("memsize", "mem size", "bi_memsize"):
            single["size"] = value
        else:
            fields.setdefault(key, value)
    dram = tuple((s, z) for s, z in banks if s is not None and z)
    if not dram and single.get("size"):
        dram = ((single.get("start", 0), single["size"]),)
    return BoardInfo(
        dram_banks=dram,
        reloc_address=fields.get("relocaddr"),
        fdt_blob=fields.get("fdt_blob"),
        sp_start=fields.get("sp start"),
        reserved=tuple(r for r in reserved if r[1] > 0),
    )


#: Stay clear of the first 2 MiB of a DRAM bank when the FDT sits there (QEMU virt puts the
#: DTB at the start of RAM), and of 2 MiB from any FDT elsewhere.
FDT_GUARD_BYTES = 2 << 20
#: U-Boot's heap, board data, FDT copy and stack lie below relocaddr: keep this far below it.
RELOC_MARGIN_BYTES = 16 << 20
#: The stack grows down from sp start.
STACK_MARGIN_BYTES = 1 << 20
_STAGING_ALIGN = 8  # md.q needs 8-byte alignment
_STAGING_VARIABLES = ("loadaddr", "kernel_addr_r", "ramdisk_addr_r")
_FDT_VARIABLES = ("fdt_addr", "fdtcontroladdr")


def _env_address(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(?:0[xX])?([0-9a-fA-F]{1,16})\s*", value)
    return int(match.group(1), 16) if match else None


def _bank_of(board: BoardInfo, start: int, end: int) -> tuple[int, int] | None:
    return next(((s, z) for s, z in board.dram_banks if s <= start and end <= s + z), None)


def _staging_problem(
    address: int, need_bytes: int, board: BoardInfo, env: dict[str, str]
) -> str | None:
    """Why ``address`` cannot hold ``need_bytes`` of staging data, or None if it can."""
    end = address + need_bytes
    if address % _STAGING_ALIGN:
        return f"not {_STAGING_ALIGN}-byte aligned"
    if _bank_of(board, address, end) is None:
        return "not inside a DRAM bank"
    avoid: list[tuple[int, int, str]] = [(s, s + z, "LMB-reserved RAM") for s, z in board.reserved]
    fdts = [board.fdt_blob, *(_env_address(env.get(name)) for name in _FDT_VARIABLES)]
    for fdt in fdts:
        bank = _bank_of(board, fdt, fdt + 1) if fdt is not None else None
        if fdt is None or bank is None:
            continue
        low = bank[0] if fdt - bank[0] < FDT_GUARD_BYTES else fdt
        avoid.append((low, max(low + FDT_GUARD_BYTES, fdt + 1), f"the FDT at {fdt:#x}"))
    for low, high, what in avoid:
        if address < high and low < end:
            return f"overlaps {what} ({low:#x}-{high - 1:#x})"
    ceilings = []
    if board.reloc_address is not None:
        ceilings.append((board.reloc_address - RELOC_MARGIN_BYTES, "16 MiB below relocaddr"))
    if board.sp_start is not None:
        ceilings.append((board.sp_start - STACK_MARGIN_BYTES, "1 MiB below U-Boot's stack"))
    for ceiling, what in ceilings:
        if end > ceiling:
            return f"ends above {max(ceiling, 0):#x} ({what})"
    return None


def choose_staging(
    env: dict[str, str], board: BoardInfo, need_bytes: int, override: int | None = None
) -> int:
    """A RAM address where ``need_bytes`` of staging buffers can live.

    ``override`` (the user's ``--ram``) wins, checked only to lie in a DRAM bank. Otherwise the
    first of ``$loadaddr``, ``$kernel_addr_r``, ``$ramdisk_addr_r`` whose range lies in a DRAM
    bank, clear of LMB-reserved RAM and of the FDT (the first 2 MiB of RAM when it sits there,
    as on QEMU virt), and 16 MiB below relocaddr (U-Boot's heap and stack are under its code).
    SourceError saying why each failed, and naming the fix (``--ram ADDR``), if none fits.
    """
    checked_int(need_bytes, "staging size in bytes", minimum=1)
    banks = ", ".join(f"{s:#x}-{s + z - 1:#x}" for s, z in board.dram_banks) or "none found"
    if override is not None:
        checked_int(override, "--ram address")
        if board.dram_banks and _bank_of(board, override, override + need_bytes) is None:
            raise SourceError(
                f"--ram {override:#x}: {need_bytes:#x} bytes from there do not fit in a DRAM bank "
                f"(bdinfo shows {banks})"
            )
        if override % _STAGING_ALIGN:
            raise SourceError(f"--ram {override:#x} must be {_STAGING_ALIGN}-byte aligned")
        return override
    if not board.dram_banks:
        raise SourceError(
            "U-Boot's bdinfo shows no DRAM bank, so no staging address can be checked; pass "
            "--ram ADDR (a free RAM address, e.g. the board's $loadaddr)"
        )
    reasons = []
    for name in _STAGING_VARIABLES:
        address = _env_address(env.get(name))
        if address is None:
            reasons.append(f"${name} is {'not set' if name not in env else 'not an address'}")
            continue
        problem = _staging_problem(address, need_bytes, board, env)
        if problem is None:
            return address
        reasons.append(f"${name}={address:#x}: {problem}")
    raise SourceError(
        f"no safe RAM staging area for {need_bytes:#x} bytes ({'; '.join(reasons)}; DRAM: "
        f"{banks}); pass --ram ADDR with a free RAM address"
    )
