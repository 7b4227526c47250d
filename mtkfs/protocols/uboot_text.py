"""What a U-Boot console's text means: errors, resets, autoboot, the prompt, printed sizes.

Shared by :mod:`.uboot` (console framing, memory commands) and :mod:`.uboot_flash` (flash
back-ends, partition listings); import the public names from :mod:`mtkfs.protocols.uboot`.
Facts come from ``../shared/reference/uboot.md`` (§2.10, §4.1–4.4) and U-Boot 2023.01's source.

Everything here reads whole lines, never substrings of the whole output, for two reasons:

* ``md`` lines carry an ASCII column that can spell anything (``Unknown command``, ``U-Boot
  2023.01``), so lines that look like md data (``^[0-9a-f]{8,16}:``) are never evidence;
* the environment holds text too: ``ver=U-Boot 2023.01 (…)`` is printed by ``printenv`` on many
  boards, so the sign-on banner only counts at the start of a line.

Device text is hostile (DESIGN.md): :func:`printable` is how it reaches an error message.
"""

from __future__ import annotations

import re

from mtkfs.errors import LocalProtocolError

#: A prompt longer than this is not a prompt (CONFIG_SYS_PROMPT is a short string).
MAX_PROMPT_CHARS = 64

_MD_DATA_LINE = re.compile(r"[0-9a-f]{8,16}:")

_AUTOBOOT = re.compile(r"to (?:stop|abort) autoboot|autoboot in\b", re.IGNORECASE)

#: The sign-on banner (SPL/TPL/VPL too); 1.x.y for old vendor builds (MT7628's 1.1.3).
_BANNER = re.compile(r"\s*U-Boot(?: SPL| TPL| VPL)? (?:20\d\d\.\d\d|1\.\d+\.\d+)")
#: Crash and reset reports, anywhere in a (non-md) line.
_RESET = re.compile(
    r"^\s*resetting \.\.\."  # arm do_reset(), also after `reset`
    r"|Resetting CPU"  # arm/arm64 panic after an exception
    r'|"(?:Synchronous Abort|SError|Error|IRQ|FIQ)" handler'  # arm64 exception vectors
    r"|\b(?:data abort|prefetch abort|undefined instruction)\b"  # arm32 exception vectors
    r"|### ERROR ### Please RESET"  # hang()
)

#: Command failures. Case matters: "ERROR" and "Error" are U-Boot's own spellings.
_ERROR = re.compile(
    r"Unknown command"
    r"|Usage:"
    r"|## Error"
    r"|(?:^|\s)ERROR\b"  # "… Erased: ERROR -22", "-5 blocks read: ERROR", "ERROR: flash area…"
    r"|ERROR -"
    r"|^\s*Error\b"  # "Error: card is write protected!", "Error: end address …"
    r"|not found"
    r"|No SPI flash selected"
    r"|exceeds partition or device limit"
    r"|Attempt to"  # nand: "Attempt to read non page-aligned data"
    r"|download aborted"  # loadx/loady/loadb
    r"|Failed to"  # "Failed to initialize SPI flash at 0:0"
    r"|failed -?\d"  # "NAND read from offset 0 failed -74"
    r"|^\s*\*\* "  # "** Bad device specification virtio 3 **"
    r"|Can't write to protected Flash|Flash not Erased|Timeout writing to Flash"
    r"|Outside available Flash|General Flash Programming Error|Verify failed"
)


def printable(text: str, limit_chars: int = 200) -> str:
    """Device text made safe for one log or error line: control characters become ``?`` (a
    hostile console cannot rewrite the user's terminal), long texts are cut."""
    text = "".join(c if c.isprintable() else "?" for c in text.strip())
    return text if len(text) <= limit_chars else text[:limit_chars] + "…"


def text_lines(text: str) -> list[str]:
    """``text`` split into lines, ``\\r`` removed from both ends of each (the serial layer turns
    ``\\n`` into ``\\r\\n``; U-Boot 1.1.3 builds also start lines with ``\\r``). A ``\\r`` inside
    a line stays: NAND erase progress overwrites itself with it."""
    return [line.strip("\r") for line in text.split("\n")]


def is_md_line(line: str) -> bool:
    """A line of ``md`` data (address and colon first): its ASCII column is data, not news."""
    return _MD_DATA_LINE.match(line.lstrip("\r")) is not None


def _evidence_lines(text: str) -> list[str]:
    return [line for line in text_lines(text) if not is_md_line(line)]


def autoboot_seen(text: str) -> bool:
    """True if ``text`` shows an autoboot countdown ("Hit any key to stop autoboot", a keyed
    build's "Autoboot in 3 seconds"): the board (re)booted and is about to boot an OS."""
    return any(_AUTOBOOT.search(line) for line in _evidence_lines(text))


def find_reset(text: str) -> str | None:
    """The line of ``text`` that shows the board reset or crashed, else None.

    A sign-on banner at the start of a line, ``resetting ...``, ``Resetting CPU``, an arm64
    ``"Synchronous Abort" handler``, an arm32 ``data abort``/``prefetch abort``, or hang()'s
    ``### ERROR ### Please RESET the board ###``. After any of them U-Boot's RAM (the staging
    buffer) and flash selections (``sf probe``) are gone. Note that the ``version`` command's
    output starts with the banner too: do not run it through this check.
    """
    for line in _evidence_lines(text):
        if _BANNER.match(line) or _RESET.search(line):
            return line.strip()
    return None


def find_error(text: str) -> str | None:
    """The first line of ``text`` in which U-Boot reports a failed command, else None.

    ``Unknown command``, ``Usage:`` (bad arguments), ``## Error``, `` ERROR``/``ERROR -``,
    ``not found``, ``No SPI flash selected``, ``exceeds partition or device limit``,
    ``Attempt to …``, ``download aborted`` and a few flash-driver messages. md data lines are
    skipped (their ASCII column may spell any of these).
    """
    for line in _evidence_lines(text):
        if _ERROR.search(line):
            return line.strip()
    return None


def failure_message(text: str) -> str:
    """What to quote when a command did not say what was expected: its error line, else its
    last non-empty line, made printable."""
    found = find_error(text)
    if found is None:
        lines = [line for line in text_lines(text) if line.strip()]
        found = lines[-1] if lines else "(no output)"
    return printable(found)


def learn_prompt(lines: list[str]) -> str | None:
    """The prompt that keeps coming back in ``lines``, else None.

    ``lines`` are what followed several Ctrl-C presses (each makes U-Boot print a fresh prompt,
    after ``<INTERRUPT>`` on the line before it: 2023.01 prints ``=> <INTERRUPT>`` then ``=> ``).
    The answer is the most frequent identical candidate seen at least twice (ties: the most
    recent), keeping its trailing space: ``"=> "``, ``"MStar # "``, ``"U-Boot> "``. Lines with
    control characters (the autoboot countdown's backspaces), md data, countdowns and
    over-long lines are never prompts.
    """
    counts: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    for index, raw in enumerate(lines):
        line = raw.strip("\r\n")
        if line.endswith("<INTERRUPT>"):
            line = line[: -len("<INTERRUPT>")]
        if (
            not line.strip()
            or len(line) > MAX_PROMPT_CHARS
            or not line.isprintable()
            or is_md_line(line)
            or _AUTOBOOT.search(line)
        ):
            continue
        counts[line] = counts.get(line, 0) + 1
        last_seen[line] = index
    if not counts:
        return None
    best = max(counts, key=lambda candidate: (counts[candidate], last_seen[candidate]))
    return best if counts[best] >= 2 else None


# ---------------------------------------------------------------------------------------------
# Numbers: U-Boot reads hex (hextoul) for addresses, offsets, sizes and counts
# ---------------------------------------------------------------------------------------------


def checked_int(value: int, what: str, *, minimum: int = 0, align: int = 1) -> int:
    """``value`` if it is an int ≥ ``minimum`` and a multiple of ``align``, else
    LocalProtocolError (commands are built from validated numbers only, DESIGN.md)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"U-Boot command: {what} must be an int, got {value!r}")
    if value < minimum:
        raise LocalProtocolError(f"U-Boot command: {what} = {value} is below {minimum}")
    if value % align:
        raise LocalProtocolError(
            f"U-Boot command: {what} = {value:#x} is not a multiple of {align}"
        )
    return value


def hex_arg(value: int, what: str, *, minimum: int = 0, align: int = 1) -> str:
    """``value`` as U-Boot wants it on a command line: lowercase hex without ``0x``."""
    return f"{checked_int(value, what, minimum=minimum, align=align):x}"


# ---------------------------------------------------------------------------------------------
# Sizes as print_size() prints them (lib/display_options.c)
# ---------------------------------------------------------------------------------------------

_PRINTED_SIZE = re.compile(r"(\d{1,20})(?:\.(\d))? ([KMGTPE])iB|(\d{1,20}) Bytes")
_SHIFT = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


def printed_size_range(text: str) -> tuple[int, int] | None:
    """The byte sizes [low, high) that print_size() shows as ``text`` (``"7.3 GiB"``), else None.

    print_size() rounds to one decimal and drops ``.0``, so ``4 MiB`` means anything within
    ±0.05 MiB; only ``N Bytes`` is exact (the range is then [N, N + 1)).
    """
    match = _PRINTED_SIZE.fullmatch(text.strip())
    if match is None:
        return None
    if match.group(4) is not None:
        exact = int(match.group(4))
        return exact, exact + 1
    whole, tenth, unit = int(match.group(1)), int(match.group(2) or 0), 1 << _SHIFT[match.group(3)]
    # print_size: tenth = (10 * rest + unit / 2) >> shift, so rest ∈ [(2t-1)/20, (2t+1)/20) unit.
    low = whole * unit + _ceil_div((2 * tenth - 1) * unit, 20)
    high = whole * unit + _ceil_div((2 * tenth + 1) * unit, 20)
    return max(low, 0), high


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def nearest_multiple(low: int, high: int, step: int) -> int | None:
    """The multiple of ``step`` in [low, high) nearest the middle of the range, else None: how a
    printed size becomes exact when the true size is known to be a multiple of ``step``."""
    if step <= 0 or high <= low:
        return None
    middle = (low + high) // 2
    below = middle // step * step
    # Any multiple in the range is at most `below` or at least `below + step`, so one of these
    # two is in it if any is.
    best = [c for c in (below, below + step) if low <= c < high]
    return min(best, key=lambda c: abs(c - middle)) if best else None
