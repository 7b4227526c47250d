"""Record what the real U-Boot 2023.01 under QEMU sends, byte for byte, one file per command.

Why: the strict parsers (:mod:`mtkfs.protocols.uboot`) and the console simulator must match the
genuine output exactly (CRLFs, padding, tabs, the prompt, what Ctrl-C prints), not our memory
of the source. ``python -m mtkfs.testing.qemu_transcripts OUTDIR`` boots the board of
:mod:`mtkfs.testing.qemu_uboot` and writes ``OUTDIR/<name>.txt`` (binary-exact: every byte
received from the first echoed character to the prompt after the command) and ``README.md``
(command line, package versions, the timings of this run, what each file shows).

The board is built in a temporary folder: the script erases and writes its NOR.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import serial

from mtkfs.testing.qemu_uboot import (
    NOR_BASE,
    QEMU_RAM_STAGING,
    SerialConsole,
    UbootBoard,
    build_uboot_board,
    qemu_available,
    qemu_command,
    running_uboot,
)

#: The 0x48 bytes put at :data:`QEMU_RAM_STAGING` for the md/crc32 transcripts: a full line
#: like the reference's example, prompt and colon characters, control and high bytes (the
#: ASCII column shows them as dots), text, and an 8-byte last line (md pads it).
PATTERN = (
    bytes.fromhex("1122334455667788") + b"AAAAAAAA"
    + b"=> :  md.l 0:x= "
    + b"U-Boot 2023.01 m"
    + b"\r\n\t\x00\x01\x1b[0m ~\x7f\x80\xa0\xfe\xff"
    + b"CRC32end"
)  # fmt: skip
assert len(PATTERN) == 0x48

_AUTOBOOT_LINE = re.compile(rb"Hit any key to stop autoboot: +\d+ ")
_PROMPT = re.compile(rb"\n=> ")
_RAM = QEMU_RAM_STAGING
_DISK_COPY = 0x40400000  # virtio read target (1 MiB)
_FLASH_SOURCE = 0x40600000  # 16 KiB of pseudo-random bytes for the CFI writes
_RAM_COPY = 0x40700000


@dataclass
class Recording:
    """One session's files (name → bytes), what each shows, and timings (label → seconds)."""

    files: dict[str, bytes] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, data: bytes, note: str) -> None:
        if name in self.files:
            raise ValueError(f"{name} recorded twice")
        self.files[name] = data
        self.notes[name] = note


def _ctrl_c(console: SerialConsole) -> bytes:
    console.write(b"\x03")
    return console.read_until(_PROMPT, 10, quiet_s=0.3)


def record_session(board: UbootBoard, rec: Recording) -> None:
    """The main session: boot, stop autoboot, run the commands, crash the board at the end."""
    with running_uboot(board) as qemu, SerialConsole(qemu.url) as con:
        t0 = time.monotonic()
        boot = con.read_until(b"U-Boot 20", 30)
        rec.timings["connect → sign-on banner"] = time.monotonic() - t0
        boot += con.read_until(_AUTOBOOT_LINE, 30)
        rec.timings["connect → autoboot line"] = time.monotonic() - t0
        rec.add("boot", boot, "connect → the first autoboot countdown line (`  2 `)")
        rec.add("autoboot-ctrlc", _ctrl_c(con), "Ctrl-C at the countdown")
        rec.timings["connect → prompt (Ctrl-C at the countdown)"] = time.monotonic() - t0
        rec.add(
            "ctrlc-prompt",
            _ctrl_c(con) + _ctrl_c(con) + _ctrl_c(con),
            "three Ctrl-C at the prompt, each after the previous prompt",
        )

        def run(name: str, line: str, note: str, timeout_s: float = 30) -> bytes:
            data = con.command(line, timeout_s)
            shown = f"`{line}`" if line else "(an empty line)"
            rec.add(name, data, f"{shown}: {note}" if note else shown)
            return data

        run("version", "version", "")
        run("help", "help", "the command list")
        run("bdinfo", "bdinfo", "")
        run("printenv", "printenv", "the default environment (bad CRC in flash)")
        run("printenv-mtdparts", "printenv mtdparts", "not defined")
        run("unknown-command", "foobar", "")
        run("echo-status-unknown", "echo $?", "after the unknown command")
        run("false", "false", "")
        run("echo-status-false", "echo $?", "")

        # Known bytes in RAM, then every md width over them.
        run("mw.b", f"mw.b {_RAM:#x} 0xa5 0x100", "fill (prints nothing)")
        for offset in range(0, len(PATTERN), 4):
            word = int.from_bytes(PATTERN[offset : offset + 4], "little")
            data = con.command(f"mw.l {_RAM + offset:#x} {word:#010x}")
            if offset == 0:
                rec.add("mw.l", data, f"`mw.l {_RAM:#x} {word:#010x}` (one of 18)")
        hexed = PATTERN.hex(" ")
        pattern_note = f"the 0x48 pattern bytes: {hexed}"
        run("md.b", f"md.b {_RAM:#x} 0x48", pattern_note)
        run("md.w", f"md.w {_RAM:#x} 0x24", "same bytes")
        run("md.l", f"md.l {_RAM:#x} 0x12", "same bytes")
        run("md.q", f"md.q {_RAM:#x} 0x9", "same bytes")
        run("md", f"md {_RAM:#x} 0x12", "no width: .l")
        run("md.l-repeat", "", "after md.l: the next 0x12 words")
        run("md.l-no-count", f"md.l {_RAM:#x}", "no count: the last count (0x12)")
        run("md-usage", "md", "no address")
        run("md.x", f"md.x {_RAM:#x}", "a bad width: silent")
        run("echo-status-md.x", "echo $?", "after md.x")
        run("md.l-unaligned", f"md.l {_RAM + 1:#x} 4", "an odd address")
        run("crc32", f"crc32 {_RAM:#x} 0x48", "the pattern")
        run("crc32-repeat", "", "after crc32: runs it again")
        run("crc32-store", f"crc32 {_RAM:#x} 0x48 {_RAM + 0x1000:#x}", "with a store address")
        run("crc32-store-md.l", f"md.l {_RAM + 0x1000:#x} 2", "the stored digest")
        run("marker", f"crc32 {_RAM:#x} 0x48; echo marker$?", "an end-of-output sentinel")
        run("marker-and", f"crc32 {_RAM:#x} 0x48 && echo ok || echo failed", "&& and ||")

        # The virtio disk.
        run("virtio-scan", "virtio scan", "")
        run("virtio-info", "virtio info", "")
        run("virtio-read", f"virtio read {_DISK_COPY:#x} 0 0x800", "the disk's first MiB")
        rec.timings["virtio read 1 MiB"] = _timed(con, f"virtio read {_DISK_COPY:#x} 0 0x800")
        run("crc32-virtio", f"crc32 {_DISK_COPY:#x} 0x100000", "= zlib.crc32(disk.img[:1 MiB])")
        rec.timings["crc32 1 MiB"] = _timed(con, f"crc32 {_DISK_COPY:#x} 0x100000")
        run(
            "virtio-read-out-of-range",
            f"virtio read {_DISK_COPY:#x} 0x1fff0 0x20",
            "16 of 32 blocks past the end",
        )
        run("echo-status-virtio", "echo $?", "after the failed virtio read")
        run("part-list", "part list virtio 0", "the GPT")
        run("ext4ls", "ext4ls virtio 0:3 /etc", "the ext4 partition")
        rec.timings["md.l 64 KiB (4096 lines, 266 240 bytes on the wire)"] = _timed(
            con, f"md.l {_DISK_COPY:#x} 0x4000"
        )

        # CFI NOR: flinfo, mtdparts, then the writes that do not stick.
        run("flinfo", "flinfo", "both CFI banks (U-Boot 0x0, pflash1 0x04000000)")
        run("mtdparts-unset", "mtdparts", "no mtdids: prints nothing")
        run("setenv-mtdids", "setenv mtdids nor1=nor1", "")
        mtdparts = "mtdparts=nor1:256k(env),16128k(spare),16m(nor)"
        run("setenv-mtdparts", f"setenv mtdparts {mtdparts}", "erase-block aligned")
        run("mtdparts", "mtdparts", "")
        run("mtd-list", "mtd list", "")
        seed = (
            "mtdparts=nor1:0x50000@0x1000000(BOOT),0x180000(KERNEL),0x1e0000(ROOTFS),"
            "0xc30000(HOME),64k(vd1),64k(conf)"
        )
        run("setenv-mtdparts-seed003", f"setenv mtdparts {seed}", "seed 003, 64 KiB aligned")
        run("mtdparts-seed003", "mtdparts", "rejected: not 128 KiB aligned")
        run("mtd-list-seed003", "mtd list", "accepted read-only; note the offsets")

        run(
            "virtio-read-16k",
            f"virtio read {_FLASH_SOURCE:#x} 0x800 0x20",
            "16 KiB of the 'bootloader' partition",
        )
        nor = NOR_BASE
        run("protect-off", f"protect off {nor:#x} +0x100000", "")
        run("erase", f"erase {nor:#x} +0x100000", "")
        run("md.l-erased", f"md.l {nor:#x} 8", "erased NOR")
        run("cp.b-flash-16k", f"cp.b {_FLASH_SOURCE:#x} {nor:#x} 0x4000", "QEMU CFI: an error")
        run("echo-status-cp.b-flash-16k", "echo $?", "")
        run(
            "cmp.b-flash-mismatch",
            f"cmp.b {_FLASH_SOURCE:#x} {nor:#x} 0x4000",
            "only the first 4 KiB stuck",
        )
        run("echo-status-cmp.b", "echo $?", "")
        run("cmp.b-flash-4k", f"cmp.b {_FLASH_SOURCE:#x} {nor:#x} 0x1000", "the part that stuck")
        run("md.l-flash-4k-boundary", f"md.l {nor + 0xFF8:#x} 4", "across the 4 KiB mark")
        target = nor + 0x41000
        run(
            "cp.b-flash-done-not-written",
            f"cp.b {_FLASH_SOURCE:#x} {target:#x} 0x1000",
            "4 KiB into an erased block, not at its start: 'done', rc 0",
        )
        run("echo-status-cp.b-flash-done", "echo $?", "")
        run(
            "cmp.b-flash-not-written",
            f"cmp.b {_FLASH_SOURCE:#x} {target:#x} 0x1000",
            "nothing was written",
        )
        run("cp.b-ram", f"cp.b {_FLASH_SOURCE:#x} {_RAM_COPY:#x} 0x4000", "RAM to RAM: silent")
        run("cmp.b-ram", f"cmp.b {_FLASH_SOURCE:#x} {_RAM_COPY:#x} 0x4000", "")
        run("cmp.l-ram", f"cmp.l {_FLASH_SOURCE:#x} {_RAM_COPY:#x} 0x1000", "")
        run(
            "marker-fail",
            f"cmp.b {_FLASH_SOURCE:#x} {nor:#x} 0x4000; echo marker$?",
            "a failing command and the sentinel",
        )

        # Serial loads, cancelled.
        for name, command, cancel, how in (
            ("loadx", f"loadx {_RAM:#x}", b"\x18" * 5, "five CAN (0x18)"),
            ("loady", f"loady {_RAM:#x}", b"\x03", "Ctrl-C, one at a time"),
        ):
            header = con.type_line(command) + con.read_for(1.0)
            rec.add(name, header, f"`{command}`: the first second (header, then `C`)")
            cancelled, sends = _cancel_load(con, cancel)
            rec.add(f"{name}-cancel", cancelled, f"{how}: stopped after {sends} send(s)")

        # Last: the crash (md of an unmapped address resets the board).
        con.type_line("md.l 0x100000000 4")
        start = time.monotonic()
        crash = b"md.l 0x100000000 4" + con.read_until(_AUTOBOOT_LINE, 30)
        rec.timings["md.l 0x100000000 → autoboot line after the reset"] = time.monotonic() - start
        rec.add("md-unmapped-crash", crash, "`md.l 0x100000000 4`: abort, reset, autoboot")
        _ctrl_c(con)
        run("md.l-after-reset", f"md.l {_RAM:#x} 0x12", "RAM after the reset")


def _timed(con: SerialConsole, line: str) -> float:
    """Seconds from the end of typing ``line`` to its prompt (output not kept)."""
    con.type_line(line)
    start = time.monotonic()
    con.read_until(_PROMPT, 60)
    seconds = time.monotonic() - start
    con.drain(0.2)
    return seconds


def _cancel_load(con: SerialConsole, cancel: bytes) -> tuple[bytes, int]:
    """Send ``cancel`` (repeatedly, 0.5 s apart) until the load command gives the prompt back:
    everything received from the first cancel byte on, and how many sends it took."""
    out = bytearray()
    for sends in range(1, 11):
        con.write(cancel)
        try:
            out += con.read_until(_PROMPT, 0.5, quiet_s=0.3)
            return bytes(out), sends
        except TimeoutError:
            out += con.read_for(0.0)
    raise TimeoutError(f"the load did not stop: {bytes(out)!r}")


def record_autoboot(board: UbootBoard, rec: Recording) -> None:
    """A boot left alone: the distro-boot scan fails and ends at the prompt."""
    with running_uboot(board) as qemu, SerialConsole(qemu.url) as con:
        t0 = time.monotonic()
        data = con.read_until(_PROMPT, 60, quiet_s=1.0)
        rec.timings["connect → prompt (autoboot not stopped)"] = time.monotonic() - t0 - 1.0
        rec.add("boot-autoboot", data, "a boot nobody interrupts, to the prompt")


def _with_retries(step: Callable[[UbootBoard, Recording], None], folder: Path) -> Recording:
    """Run a session on a fresh board; start again if QEMU went away under it (another
    process killed it)."""
    for attempt in range(1, 4):
        board = build_uboot_board(folder / f"{step.__name__}-{attempt}")
        rec = Recording()
        try:
            step(board, rec)
            return rec
        except (serial.SerialException, TimeoutError) as exc:
            print(f"attempt {attempt} failed: {exc}; see {board.log}", file=sys.stderr)
    raise RuntimeError(f"{step.__name__} failed three times")


def _versions() -> str:
    proc = subprocess.run(
        ["dpkg-query", "-W", "qemu-system-arm", "u-boot-qemu"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "(dpkg-query failed)"


def write_readme(out: Path, rec: Recording) -> None:
    """README.md: how the files were made, the timings, what each shows, what stands out."""
    here = Path(".")
    board = UbootBoard(here, here / "disk.img", here / "pflash1.img", here / "bootlog.txt")
    command = " ".join(qemu_command(board, 5555))
    lines = [
        "# Transcripts of the real U-Boot 2023.01 (Debian) under QEMU",
        "",
        "Made by `python -m mtkfs.testing.qemu_transcripts tests/data/uboot/qemu-2023.01`",
        "(the board of `mtkfs/testing/qemu_uboot.py`). Each `<name>.txt` holds the exact bytes",
        "received for one step: the echo of the typed command, `\\r\\n`, the output, and the",
        "prompt `=> ` (no newline after it). Commands were typed in pieces of at most 16",
        "characters, each after the previous one's echo, and ended with a single `\\r`.",
        "",
        "## Packages and command line",
        "",
        "```",
        _versions(),
        "```",
        "",
        "```",
        command,
        "```",
        "",
        "The client connects to `socket://127.0.0.1:PORT`; `wait=on` holds the CPU until then.",
        "",
        "## Timings of this run (seconds)",
        "",
        "Command timings run from the `\\r` to the prompt (the console reads in 20 ms polls).",
        "",
        "| what | s |",
        "|---|---|",
        *(f"| {label} | {seconds:.2f} |" for label, seconds in rec.timings.items()),
        "",
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
        *(f"| `{name}.txt` | {_cell(rec.notes[name])} |" for name in sorted(rec.files)),
        "",
        "## Observations",
        "",
        *_OBSERVATIONS.strip("\n").splitlines(),
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


_OBSERVATIONS = """
* Line ends are `\\r\\n` everywhere; the prompt is `=> ` right after a `\\r\\n`. The echo of
  a command is the typed characters, then `\\r\\n` (an empty line echoes just `\\r\\n`).
* The boot starts with `\\r\\n\\r\\n` before the sign-on `U-Boot 2023.01+dfsg-2+deb12u3 (…)`.
  The countdown is `Hit any key to stop autoboot:  2 ` (`%2d `), then `\\b\\b\\b 1 `; Ctrl-C
  there prints `\\b\\b\\b 0 \\r\\n=> `. `Flash: 64 MiB` counts both CFI banks.
* Ctrl-C at the prompt prints `<INTERRUPT>\\r\\n=> `.
* `md`: 16 bytes a line for every width, lowercase hex, a short last line padded with spaces so
  the ASCII column (after two spaces) lines up; `.w/.l/.q` print little-endian numbers. An
  empty line after `md` continues at the next address with the same count; `md.l ADDR`
  without a count reuses the last count. `md`/`md.l` without an address print the usage.
  `md.x` prints nothing and sets `$?` to 1. `md.l` of an odd address works.
* `crc32` prints lowercase `crc32 for 40200000 ... 40200047 ==> 35764dab`; with a store
  address the digest is stored big-endian (`md.l` shows `ab4d7635`). An empty line runs it
  again (the echo is then just `\\r\\n`).
* `cmd; echo marker$?` prints `marker0`/`marker1` on its own line; `&&`/`||` work.
  `Unknown command 'foobar' - try 'help'` sets `$?` to 1; `false` exists.
* `virtio scan` prints nothing. `virtio read` prints an empty line first; the block number
  and count in its message are decimal. Out of range: `... -5 blocks read: ERROR`, `$?` 1.
* `part list` separates columns with tabs (`Part\\tStart LBA\\tEnd LBA\\t\\tName`), numbers
  partitions as `  1`, prints LBAs as `0x%08x` and the name in double quotes, then indented
  `attrs:`/`type:`/`guid:` lines (tab after the colon).
* `mtdparts` (mtdids `nor1=nor1`) prints the table, the active partition and then a
  `defaults:` block (`mtdids  : ` / `mtdparts: `, both empty here). With seed 003's layout it
  fails (`nor1: partition (BOOT) size alignment incorrect`: U-Boot's CFI reports 128 KiB
  sectors), while `mtd list` accepts it with a "force read-only" warning per partition and
  prints the partitions after the one with an explicit `@` offset as if starting from 0 (a
  U-Boot quirk). `mtd list` partition lines start with a tab: `\\t  - 0x…-0x… : "NAME"`.
* QEMU's CFI NOR (Intel command set, 256 KiB erase blocks; U-Boot believes 128 KiB). A 16 KiB
  `cp.b` to the start of an erased block prints `Copy to Flash... Flash buffer write timeout
  at address 5000000 data …` then `Timeout writing to Flash` (`$?` 1), and only the first
  4 KiB stick. A 4 KiB `cp.b` to an erased block's +0x1000 prints `Copy to Flash... done`
  (`$?` 0) and writes nothing. Only `cmp`/`crc32` tell.
* `md.l 0x100000000 4` prints no dump line: a "Synchronous Abort" with a register dump, then
  `Resetting CPU ...`, `resetting ...` and a full boot to the autoboot countdown (register
  values vary between runs). Under QEMU the RAM content survives that reset
  (`md.l-after-reset.txt`); on real boards assume it does not.
* `loadx`/`loady` print `## Ready for binary (xmodem|ymodem) download to 0x40200000 at 115200
  bps...\\r\\n`, then `C` about every 4 s. Five CAN bytes in one burst cancel at once; Ctrl-C
  sent alone every 0.5 s cancels at the third (see the table above): both print
  `\\r\\nCancelled\\r\\n## Binary (…) download aborted\\r\\n=> `.
* `help` lists no `sf`, `mmc` or `nand`; it has `virtio`, `mtd`, `mtdparts`, `flinfo`,
  `erase`, `protect`, `ext4ls`/`ext4load`, `loadx`/`loady`/`loadb`/`loads`, `setexpr`, `itest`.
* A boot nobody interrupts runs the distro boot (`fatal: no kernel available`, USB, SCSI,
  virtio, DHCP attempts) and still ends at the prompt.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtkfs.testing.qemu_transcripts",
        description="Record real U-Boot console transcripts under QEMU, byte-exact.",
    )
    parser.add_argument("outdir", type=Path, help="where to write <name>.txt and README.md")
    args = parser.parse_args(argv)
    ok, why = qemu_available()
    if not ok:
        print(f"error: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mtkfs-qemu-transcripts-") as tmp:
        rec = _with_retries(record_session, Path(tmp))
        rec_auto = _with_retries(record_autoboot, Path(tmp))
        rec.files.update(rec_auto.files)
        rec.notes.update(rec_auto.notes)
        rec.timings.update(rec_auto.timings)
        args.outdir.mkdir(parents=True, exist_ok=True)
        for name, data in rec.files.items():
            (args.outdir / f"{name}.txt").write_bytes(data)
        write_readme(args.outdir, rec)
    for name in sorted(rec.files):
        print(f"{name}.txt  {len(rec.files[name])} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
