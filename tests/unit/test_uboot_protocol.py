"""The U-Boot console protocol (mtkfs/protocols/uboot*.py): commands, framing, strict parsers.

Literal transcripts below were captured from Debian 12's U-Boot 2023.01 (qemu_arm64 under QEMU
7.2, reference uboot.md §3.2) or follow U-Boot's printf formats for what QEMU lacks (sf, mmc,
nand), as cited per test. The md tests hold the line to its promise: a dump either parses to
the exact bytes or fails with MdParseError — never "close enough".
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mtkfs.errors import (
    LocalProtocolError,
    MtkfsError,
    RemoteProtocolError,
    SourceError,
    TransportError,
)
from mtkfs.protocols import uboot
from mtkfs.protocols.uboot import BoardInfo, EchoMismatchError, MdParseError, SpiFlash

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
PROMPT = "=> "


def crlf(text: str) -> str:
    """What the serial layer puts on the wire: every \\n as \\r\\n."""
    return text.replace("\n", "\r\n")


def wire(command: str, output: str, prompt: str = PROMPT) -> str:
    """Everything received after typing ``command`` + \\r: echo, output, prompt."""
    return crlf(f"{command}\n{output}") + prompt


# --- captured from U-Boot 2023.01 (qemu_arm64) ----------------------------------------------

QEMU_MD = {  # 0x40200000 holds 11 22 33 44 55 66 77 88, 8 × 'A', then 00 01 02 …
    1: (
        "md.b 40200000 13",
        '40200000: 11 22 33 44 55 66 77 88 41 41 41 41 41 41 41 41  ."3DUfw.AAAAAAAA\n'
        "40200010: 00 01 02                                         ...\n",
    ),
    2: (
        "md.w 40200000 13",
        '40200000: 2211 4433 6655 8877 4141 4141 4141 4141  ."3DUfw.AAAAAAAA\n'
        "40200010: 0100 0302 0504 0706 0908 0b0a 0d0c 0f0e  ................\n"
        "40200020: 1110 1312 1514                           ......\n",
    ),
    4: (
        "md.l 40200000 8",
        '40200000: 44332211 88776655 41414141 41414141  ."3DUfw.AAAAAAAA\n'
        "40200010: 03020100 07060504 0b0a0908 0f0e0d0c  ................\n",
    ),
    8: (
        "md.q 40200000 3",
        '40200000: 8877665544332211 4141414141414141  ."3DUfw.AAAAAAAA\n'
        "40200010: 0706050403020100                   ........\n",
    ),
}
QEMU_BYTES = bytes.fromhex("1122334455667788") + b"A" * 8 + bytes(range(0x16))

QEMU_BDINFO = """\
boot_params = 0x0000000000000000
DRAM bank   = 0x0000000000000000
-> start    = 0x0000000040000000
-> size     = 0x0000000020000000
flashstart  = 0x0000000000000000
flashsize   = 0x0000000004000000
flashoffset = 0x00000000000ed228
baudrate    = 115200 bps
relocaddr   = 0x000000005fef7000
reloc off   = 0x000000005fef7000
Build       = 64-bit
current eth = unknown
ethaddr     = (not set)
IP addr     = <NULL>
fdt_blob    = 0x000000005edb6db0
new_fdt     = 0x000000005edb6db0
fdt_size    = 0x0000000000100000
lmb_dump_all:
 memory.cnt  = 0x1
 memory[0]\t[0x40000000-0x5fffffff], 0x20000000 bytes flags: 0
 reserved.cnt  = 0x2
 reserved[0]\t[0x5ddb2000-0x5fffffff], 0x0224e000 bytes flags: 0
 reserved[1]\t[0x5edb2930-0x5fffffff], 0x0124d6d0 bytes flags: 0
devicetree  = board
arch_number = 0x0000000000000000
TLB addr    = 0x000000005fff0000
irq_sp      = 0x000000005edb6da0
sp start    = 0x000000005edb6da0
Early malloc usage: 3a8 / 2000
"""

QEMU_ENV = """\
arch=arm
baudrate=115200
bootcmd=run distro_bootcmd
bootcmd_qfw= if qfw load $kernel_addr_r $ramdisk_addr_r; then   booti $kernel_addr_r; fi
bootdelay=2
fdt_addr=0x40000000
fdt_high=0xffffffff
fdtcontroladdr=5edb6db0
kernel_addr_r=0x40400000
loadaddr=0x40200000
pxefile_addr_r=0x40300000
ramdisk_addr_r=0x44000000
scriptaddr=0x40200000
stdout=pl011@9000000

Environment size: 4511/262140 bytes
"""

QEMU_VIRTIO_INFO = """\
Device 0: 1af4 VirtIO Block Device
            Type: Hard Disk
            Capacity: 8.0 MB = 0.0 GB (16384 x 512)
Device 1: 1af4 VirtIO Block Device
            Type: Hard Disk
            Capacity: 4.0 MB = 0.0 GB (8192 x 512)
"""

QEMU_PART_GPT = """
Partition Map for VirtIO device 0  --   Partition Type: EFI

Part\tStart LBA\tEnd LBA\t\tName
\tAttributes
\tType GUID
\tPartition GUID
  1\t0x00000800\t0x000017ff\t"boot a"
\tattrs:\t0x0000000000000000
\ttype:\t0fc63daf-8483-4772-8e79-3d69d8477de4
\tguid:\t1af6a9e1-83b4-0a4f-8bf3-3d9407072252
  2\t0x00001800\t0x000037ff\t"system"
\tattrs:\t0x0000000000000000
\ttype:\t0fc63daf-8483-4772-8e79-3d69d8477de4
\tguid:\te789d6fc-f5f3-2b44-a05b-70da0e4bb4cb
"""

QEMU_PART_DOS = """
Partition Map for VirtIO device 1  --   Partition Type: DOS

Part\tStart Sector\tNum Sectors\tUUID\t\tType
  1\t2048      \t2048      \t201663d7-01\t83
  2\t4096      \t2048      \t201663d7-02\t0c Boot
"""

QEMU_MTDPARTS = """
device nor1 <nor1>, # parts = 3
 #: name\t\tsize\t\toffset\t\tmask_flags
 0: uboot               0x00100000\t0x00000000\t0
 1: env                 0x00040000\t0x00100000\t0
 2: rootfs              0x01ec0000\t0x00140000\t0

active partition: nor1,0 - (uboot) 0x00100000 @ 0x00000000

defaults:
mtdids  : 
mtdparts: 
"""  # noqa: W291 (U-Boot's own trailing spaces)

QEMU_CRASH = """\
"Synchronous Abort" handler, esr 0x96000010
elr: 0000000000081104 lr : 0000000000081054 (reloc)
x0 : 000000000000000a x1 : 000000005edb6a39

Code: 2a0403f3 17ffffcb 7100129f 54000181 (b94002c3) 
Resetting CPU ...

resetting ...


U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000)

DRAM:  512 MiB
Hit any key to stop autoboot:  2  1  0 
"""  # noqa: W291


# =============================================================================================
# Console framing
# =============================================================================================


def test_wire_constants() -> None:
    assert uboot.LINE_END == b"\r"  # never \r\n: an empty line repeats the last command
    assert uboot.CTRL_C == b"\x03"
    assert uboot.MAX_ECHO_PIECE_BYTES == 16


def test_split_command_output_real_md() -> None:
    command, output = QEMU_MD[1]
    assert uboot.split_command_output(wire(command, output), command, PROMPT) == output


def test_split_command_output_no_output_and_blank_first_line() -> None:
    assert uboot.split_command_output(wire("md.x 0", ""), "md.x 0", PROMPT) == ""
    read = "\nvirtio read: device 0 block # 2048, count 16 ... 16 blocks read: OK\n"
    got = uboot.split_command_output(wire("virtio read 40200000 800 10", read), "virtio read "
                                     "40200000 800 10", PROMPT)  # fmt: skip
    assert got == read


def test_split_command_output_old_uboot_leading_cr_and_vendor_prompt() -> None:
    raw = "md.b 80000000 10\r\n\r80000000: 00 11  ..\r\n\rMT7628 # "
    got = uboot.split_command_output(raw, "md.b 80000000 10", "MT7628 # ")
    assert got == "80000000: 00 11  ..\n"


def test_split_command_output_echo_mismatch() -> None:
    command, output = QEMU_MD[4]
    dropped = wire(command.replace("4020", "420", 1), output)
    with pytest.raises(EchoMismatchError, match="characters were lost"):
        uboot.split_command_output(dropped, command, PROMPT)
    assert issubclass(EchoMismatchError, RemoteProtocolError)
    with pytest.raises(EchoMismatchError):  # no line end at all
        uboot.split_command_output(command, command, PROMPT)


def test_split_command_output_needs_the_prompt_at_a_line_start() -> None:
    with pytest.raises(RemoteProtocolError, match="does not end with the prompt") as info:
        uboot.split_command_output("version\r\nU-Boot 2023.01\r\n", "version", PROMPT)
    assert not isinstance(info.value, EchoMismatchError)
    with pytest.raises(RemoteProtocolError, match="start of a line"):
        uboot.split_command_output("echo -n x\r\nx=> ", "echo -n x", PROMPT)
    with pytest.raises(LocalProtocolError):
        uboot.split_command_output("x\r\n", "x", "")


def test_end_marker_and_status() -> None:
    assert uboot.end_marker("ab12") == "__mtkfs_ab12__"
    assert uboot.with_end_marker("md.x 0", "ab") == "md.x 0; echo __mtkfs_ab__$?"
    # Captured: `echo hi; echo __mtkfs_ab__$?` and `md.x 0; echo __mtkfs_ab__$?`
    assert uboot.parse_marked_status("hi\n__mtkfs_ab__0\n", "ab") == ("hi\n", 0)
    assert uboot.parse_marked_status("__mtkfs_ab__1\n", "ab") == ("", 1)


@pytest.mark.parametrize("nonce", ["", "xyz", "ab cd", "ab;reset", "a" * 33, "ab\n"])
def test_end_marker_rejects_bad_nonces(nonce: str) -> None:
    with pytest.raises(LocalProtocolError):
        uboot.end_marker(nonce)


@pytest.mark.parametrize("command", ["", "md.b 0\r", "a\nb", "x\x03", "é"])
def test_with_end_marker_rejects_bad_commands(command: str) -> None:
    with pytest.raises(LocalProtocolError):
        uboot.with_end_marker(command, "ab")


@pytest.mark.parametrize(
    "output",
    [
        "hi\n",  # the marker never came
        "hi\n__mtkfs_ab__\n",  # no status
        "hi\n__mtkfs_ab__0x\n",  # garbled status
        "hi\n__mtkfs_ab__0\nmore\n",  # not the last line
        "hi __mtkfs_ab__0\n",  # not at a line start
        "hi\n__mtkfs_cd__0\n",  # another nonce
    ],
)
def test_parse_marked_status_rejects(output: str) -> None:
    with pytest.raises(RemoteProtocolError):
        uboot.parse_marked_status(output, "ab")


# --- prompt, autoboot, resets, errors --------------------------------------------------------


def test_learn_prompt() -> None:
    assert uboot.learn_prompt(["=> ", "=> ", "=> "]) == "=> "
    # Whole lines as 2023.01 prints them after each Ctrl-C: "=> <INTERRUPT>", then "=> ".
    assert uboot.learn_prompt(["Hit any key to stop autoboot:  2 \b\b\b 0 ", "=> <INTERRUPT>",
                               "=> <INTERRUPT>", "=> "]) == "=> "  # fmt: skip
    assert uboot.learn_prompt(["MStar # ", "garbage", "MStar # "]) == "MStar # "
    assert uboot.learn_prompt(["\rU-Boot> ", "U-Boot> "]) == "U-Boot> "
    assert uboot.learn_prompt(["ath> ", "ath> ", "=> ", "=> "]) == "=> "  # a tie: the latest
    assert uboot.learn_prompt(["ath> ", "ath> ", "ath> ", "=> ", "=> "]) == "ath> "


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["=> "],  # once is not "keeps coming back"
        ["", "", "  ", "  "],
        ["Hit any key to stop autoboot:  1 ", "Hit any key to stop autoboot:  1 "],
        ['40200000: 11 22  ."', '40200000: 11 22  ."'],  # md data
        ["x" * 100, "x" * 100],
        ["a\x08b", "a\x08b"],
    ],
)
def test_learn_prompt_none(lines: list[str]) -> None:
    assert uboot.learn_prompt(lines) is None


@pytest.mark.parametrize(
    "text",
    [
        "Hit any key to stop autoboot:  2 ",
        "hit any key to stop autoboot",
        "Autoboot in 3 seconds",
        "autoboot in 1 seconds, press <Space> to stop",
        "Press SPACE to abort autoboot in 2 second(s)",
        QEMU_CRASH,
    ],
)
def test_autoboot_seen(text: str) -> None:
    assert uboot.autoboot_seen(text)


@pytest.mark.parametrize(
    "text", ["", "=> ", "bootdelay=2\n", "40200000: 41 41  autoboot in 3 s\n", "autobooting"]
)
def test_autoboot_not_seen(text: str) -> None:
    assert not uboot.autoboot_seen(text)


@pytest.mark.parametrize(
    ("text", "evidence"),
    [
        (QEMU_CRASH, '"Synchronous Abort" handler, esr 0x96000010'),
        ("\r\n\r\nU-Boot 2023.01+dfsg-2 (Jun 22 2026)\r\n", "U-Boot 2023.01+dfsg-2 (Jun 22 2026)"),
        ("U-Boot SPL 2021.10 (Oct 01 2021)\n", "U-Boot SPL 2021.10 (Oct 01 2021)"),
        ("U-Boot 1.1.3 (Apr 11 2016 - 17:15:05)\n", "U-Boot 1.1.3 (Apr 11 2016 - 17:15:05)"),
        ("resetting ...\n", "resetting ..."),
        ("Resetting CPU ...\n", "Resetting CPU ..."),
        ("data abort\npc : [<87f0a1c4>]\n", "data abort"),
        ("prefetch abort\n", "prefetch abort"),
        ("### ERROR ### Please RESET the board ###\n", "### ERROR ### Please RESET the board ###"),
    ],
)
def test_find_reset(text: str, evidence: str) -> None:
    assert uboot.find_reset(text) == evidence


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ver=U-Boot 2023.01 (Jan 10 2023 - 00:00:00 +0000)\n",  # printenv, not a reboot
        "40200000: 55 2d 42 6f 6f 74 20 32 30 32 33 2e 30 31 20 20  U-Boot 2023.01  \n",
        "16 blocks read: OK\n",
    ],
)
def test_find_reset_none(text: str) -> None:
    assert uboot.find_reset(text) is None


@pytest.mark.parametrize(
    "line",
    [
        "Unknown command 'foo' - try 'help'",
        "Usage:",
        '## Error: "nosuch" not defined',
        "virtio read: device 0 block # 8388608, count 16 ... -5 blocks read: ERROR",
        "SF: 4096 bytes @ 0x10800 Erased: ERROR -22",
        "ERROR: flash area is locked",
        "ERROR - something",
        "Error: card is write protected!",
        "Partition foo not found",
        "No SPI flash selected. Please run `sf probe'",
        "Size exceeds partition or device limit",
        "Attempt to read non page-aligned data",
        "## Binary (ymodem) download aborted",
        "Failed to initialize SPI flash at 0:0 (error -2)",
        "NAND read from offset 0 failed -74",
        "** Bad device specification virtio 3 **",
        "Can't write to protected Flash sectors",
    ],
)
def test_find_error(line: str) -> None:
    assert uboot.find_error(f"\nsome output\n{line}\r\n") == line


@pytest.mark.parametrize(
    "text",
    [
        QEMU_MD[4][1],
        "SF: 4096 bytes @ 0x10000 Written: OK\n",
        "\nvirtio read: device 0 block # 0, count 16 ... 16 blocks read: OK\n",
        ". done\nErased 1 sectors\n",
        "Total of 32 byte(s) were the same\n",
        # md data may spell anything in its ASCII column
        "40200000: 55 6e 6b 6e 6f 77 6e 20 63 6f 6d 6d 61 6e 64 20  Unknown command \n",
    ],
)
def test_find_error_none(text: str) -> None:
    assert uboot.find_error(text) is None


# =============================================================================================
# md
# =============================================================================================


@pytest.mark.parametrize(
    ("args", "command"),
    [
        ((0x40200000, 0x13, 1), "md.b 40200000 13"),
        ((0x40200000, 0x26, 2), "md.w 40200000 13"),
        ((0x40200000, 0x20, 4), "md.l 40200000 8"),
        ((0x40200000, 0x18, 8), "md.q 40200000 3"),
        ((0x100000000, 0x10000, 4), "md.l 100000000 4000"),
    ],
)
def test_md_command(args: tuple[int, int, int], command: str) -> None:
    assert uboot.md_command(*args) == command


@pytest.mark.parametrize(
    "args",
    [
        (0x40200002, 16, 4),  # unaligned address
        (0x40200000, 6, 4),  # size not a multiple of the width
        (0x40200000, 0, 1),  # nothing
        (0x40200000, 16, 3),  # no such width
        (-16, 16, 4),
        (True, 16, 1),
    ],
)
def test_md_command_misuse(args: tuple[int, int, int]) -> None:
    with pytest.raises(LocalProtocolError):
        uboot.md_command(*args)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_parse_md_real_qemu_dumps(width: int) -> None:
    command, output = QEMU_MD[width]
    count = int(command.split()[-1], 16) * width
    assert uboot.md_command(0x40200000, count, width) == command
    assert uboot.parse_md(output, 0x40200000, count, width, "little") == QEMU_BYTES[:count]
    # ... and format_md is exactly what 2023.01 printed.
    assert uboot.format_md(QEMU_BYTES[:count], 0x40200000, width, "little") + "\n" == output


def test_parse_md_reference_example_and_wire_form() -> None:
    line = '40000000: 44332211 88776655 41414141 41414141  ."3DUfw.AAAAAAAA'
    expected = bytes.fromhex("1122334455667788") + b"A" * 8
    assert uboot.parse_md(line, 0x40000000, 16, 4, "little") == expected
    assert uboot.parse_md(crlf(line + "\n"), 0x40000000, 16, 4, "little") == expected
    # The same memory on a big-endian CPU (MIPS, PPC) prints in memory order.
    big = '40000000: 11223344 55667788 41414141 41414141  ."3DUfw.AAAAAAAA'
    assert uboot.parse_md(big, 0x40000000, 16, 4, "big") == expected


def test_parse_md_wrong_byte_order_is_caught_by_the_ascii_column() -> None:
    line = '40000000: 44332211 88776655 41414141 41414141  ."3DUfw.AAAAAAAA'
    with pytest.raises(MdParseError, match="byte order"):
        uboot.parse_md(line, 0x40000000, 16, 4, "big")


def test_parse_md_old_layouts() -> None:
    data = b"0123456789abcdefXYZ"
    # U-Boot 2012.10: four spaces, short last line not padded (depthcharge #91/#92).
    old = "80000000: 30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66    0123456789abcdef\n" \
          "80000010: 58 59 5a    XYZ\n"  # fmt: skip
    assert uboot.parse_md(old, 0x80000000, 19, 1, "big") == data
    # 2013.04 .. 2021.07: four spaces, padded.
    mid = uboot.format_md(data, 0x80000000, 1, "big", separator="    ")
    assert mid.endswith("5a" + " " * (13 * 3) + "    XYZ")
    assert uboot.parse_md(mid, 0x80000000, 19, 1, "big") == data
    # U-Boot 1.1.3 (MT7628): every line starts with \r (depthcharge #50).
    cr = "".join("\r" + line + "\r\n" for line in old.splitlines())
    assert uboot.parse_md(cr, 0x80000000, 19, 1, "big") == data


def test_parse_md_64_bit_addresses() -> None:
    data = bytes(range(32))
    text = uboot.format_md(data, 0x1_0000_0000, 8, "little")
    assert text.startswith("100000000: 0706050403020100 0f0e0d0c0b0a0908  ")
    assert text.splitlines()[1].startswith("100000010:")
    assert uboot.parse_md(text, 0x1_0000_0000, 32, 8, "little") == data


def test_parse_md_without_ascii_column() -> None:
    text = "40000000: 44332211 88776655\n"
    assert uboot.parse_md(text, 0x40000000, 8, 4, "little") == bytes.fromhex("1122334455667788")


GOOD = uboot.format_md(QEMU_BYTES, 0x40200000, 2, "little")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("40200010:", "40200011:"), r"line 2 \(expected address 0x40200010\)"),
        (GOOD.replace("40200010:", "0040200010:"), "line 2"),  # not %08x
        (GOOD.replace("2211", "2Z11"), "word 1 of 8"),
        (GOOD.replace("2211", "22A1"), "lowercase"),
        (GOOD.replace(" 2211", " 211"), "word 1 of 8"),  # tiny printf: no zero padding
        (GOOD.replace(" 4433", ""), "word"),  # a lost word
        (GOOD.replace("1514", "1514 1716"), "after 3 words comes"),  # one word too many
        (GOOD.replace('  ."3DUfw', '   ."3DUfw'), "3 spaces"),  # not a separator U-Boot prints
        (GOOD.replace("AAAAAAAA", "AAAAAAAB"), "ASCII column"),  # line noise in the text
        (GOOD.replace("4141 4141 4141 4141", "4141 4141 4141 4142"), "ASCII column"),
        ("\n".join(GOOD.splitlines()[:2]), "ends after 2 line"),  # a lost line
        (GOOD + "\n" + GOOD.splitlines()[-1], "unexpected text after the last line"),
        (GOOD.replace("\n", "\n\n", 1), "line 2"),  # a blank line inside
        ("\n".join(GOOD.splitlines()[i] for i in (0, 0, 1)), "line 2"),  # a repeated line
        ("\n".join(GOOD.splitlines()[i] for i in (1, 0, 2)), "line 1"),  # swapped lines
        (GOOD.replace("  ......", "    ......"), "spaces before"),  # mixed separators
        (GOOD.replace('  ."3DUfw.AAAAAAAA', ""), "ASCII column is missing"),
        ("=> \n" + GOOD, "line 1"),
        ("", "ends after 0 line"),
    ],
)
def test_parse_md_rejects(text: str, message: str) -> None:
    with pytest.raises(MdParseError, match=message) as info:
        uboot.parse_md(text, 0x40200000, len(QEMU_BYTES), 2, "little")
    # Every complaint names the line and the address it expected there.
    assert re.match(r"md line \d+ \(expected (address|none after address) 0x4020", str(info.value))


def test_parse_md_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        uboot.parse_md(GOOD, 0x40200000, len(QEMU_BYTES), 2, "middle")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        uboot.format_md(b"abc", 0, 2, "little")
    with pytest.raises(LocalProtocolError):
        uboot.format_md(b"ab", 0, 2, "little", separator="   ")


@st.composite
def md_cases(draw: st.DrawFn, data: st.SearchStrategy[bytes] | None = None) -> dict[str, object]:
    width = draw(st.sampled_from([1, 2, 4, 8]))
    count = draw(st.integers(1, 160 // width))
    exact = st.binary(min_size=count * width, max_size=count * width)
    payload = draw(data if data is not None else exact)
    payload = payload[: len(payload) - len(payload) % width] or bytes(width)
    high = draw(st.sampled_from([0x1000_0000, 0xFFFF_FFFF - 0x1000, 0xFF_FFFF_FFFF]))
    address = draw(st.integers(0, high)) // width * width
    return {
        "data": payload,
        "address": address,
        "width": width,
        "order": draw(st.sampled_from(["little", "big"])),
        "separator": draw(st.sampled_from(["  ", "    "])),
        "pad": draw(st.booleans()),
    }


def render(case: dict[str, object]) -> str:
    return uboot.format_md(
        case["data"], case["address"], case["width"], case["order"],  # type: ignore[arg-type]
        separator=case["separator"], pad_short=case["pad"],  # type: ignore[arg-type]
    )  # fmt: skip


def parse(case: dict[str, object], text: str) -> bytes:
    data: bytes = case["data"]  # type: ignore[assignment]
    return uboot.parse_md(text, case["address"], len(data), case["width"], case["order"])  # type: ignore[arg-type]


@given(md_cases(), st.booleans())
@settings(max_examples=400)
def test_md_round_trip(case: dict[str, object], on_the_wire: bool) -> None:
    text = render(case)
    if on_the_wire:
        text = crlf(text + "\n")
    assert parse(case, text) == case["data"]
    assert uboot.md_command(case["address"], len(case["data"]), case["width"])  # type: ignore[arg-type]


_NOISE = st.sampled_from(list("0123456789abcdefABCDEF :.xX\n\r\t\x00~"))


@st.composite
def corruptions(draw: st.DrawFn, text: str) -> tuple[str, str]:
    """One fault of a noisy line: a character flipped, dropped or doubled, or a line lost,
    doubled or moved."""
    lines = text.split("\n")
    kind = draw(st.sampled_from(["flip", "drop", "dup", "drop line", "dup line", "swap lines"]))
    if kind.endswith("line") or kind.endswith("lines"):
        if len(lines) < 2 and kind == "swap lines":
            kind = "dup line"
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "drop line":
            lines.pop(i)
        elif kind == "dup line":
            lines.insert(i, lines[i])
        else:
            j = draw(st.integers(0, len(lines) - 1).filter(lambda j: lines[j] != lines[i]))
            lines[i], lines[j] = lines[j], lines[i]
        return kind, "\n".join(lines)
    i = draw(st.integers(0, len(text) - 1))
    if kind == "flip":
        new = draw(_NOISE.filter(lambda c: c != text[i]))
        return kind, text[:i] + new + text[i + 1 :]
    if kind == "drop":
        return kind, text[:i] + text[i + 1 :]
    return kind, text[:i] + text[i] + text[i:]


def _hidden_from_md(old: bytes, new: bytes) -> bool:
    """True if every byte that differs shows as "." in md's ASCII column both before and after
    (unprintable, or "." itself): only the chunk's crc32 can catch that."""
    return all(
        a == b or (uboot.md_ascii(bytes([a])) == "." == uboot.md_ascii(bytes([b])))
        for a, b in zip(old, new, strict=True)
    )


@given(st.data())
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_md_corruption_never_gives_wrong_bytes(data: st.DataObject) -> None:
    case = data.draw(md_cases())
    text = render(case)
    kind, bad = data.draw(corruptions(text))
    assume(bad != text)
    try:
        got = parse(case, bad)
    except MdParseError:
        return
    original: bytes = case["data"]  # type: ignore[assignment]
    if kind == "flip":
        assert _hidden_from_md(original, got), (kind, bad)
    else:
        assert got == original, (kind, bad)


@given(st.data())
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_md_corruption_of_printable_dumps_is_always_detected(data: st.DataObject) -> None:
    """With printable data every byte shows as itself in the ASCII column, so any single fault
    in a dump of at least one full line is an MdParseError (one full line fixes the separator).
    Except ".": it looks like every unprintable byte, so 2e → 0e passes md (crc32 catches it)."""
    printable = st.binary(min_size=16, max_size=160).map(
        lambda b: bytes(0x20 + x % 0x5F for x in b).replace(b".", b"/")
    )
    case = data.draw(md_cases(printable))
    assume(len(case["data"]) >= 16)  # type: ignore[arg-type]
    text = render(case)
    _kind, bad = data.draw(corruptions(text))
    assume(bad != text)
    with pytest.raises(MdParseError):
        parse(case, bad)


def test_detect_byte_order() -> None:
    # Captured: `mw.l 40200000 11223344 1`, then md.b and md.l of it.
    md_b = '40200000: 44 33 22 11                                      D3".\n'
    md_l = '40200000: 11223344                             D3".\n'
    assert uboot.detect_byte_order(md_b, md_l, 0x40200000) == "little"
    md_b_big = '40200000: 11 22 33 44                                      ."3D\n'
    assert uboot.detect_byte_order(md_b_big, md_l.replace('D3".', '."3D'), 0x40200000) == "big"


def test_detect_byte_order_ambiguous_and_inconsistent() -> None:
    palindrome_b = '40200000: 11 22 22 11                                      ."".\n'
    palindrome_l = '40200000: 11222211                             ."".\n'
    with pytest.raises(RemoteProtocolError, match="ambiguous"):
        uboot.detect_byte_order(palindrome_b, palindrome_l, 0x40200000)
    md_b = '40200000: 44 33 22 11                                      D3".\n'
    with pytest.raises(RemoteProtocolError):  # the memory changed between the reads
        uboot.detect_byte_order(md_b, "40200000: 55667788                             wfUD\n"
                                .replace("wfUD", "ufw."), 0x40200000)  # fmt: skip


# =============================================================================================
# crc32, cp, cmp, mw, loadx
# =============================================================================================


def test_crc32_both_spellings() -> None:
    assert uboot.crc32_command(0x40200000, 0x20) == "crc32 40200000 20"
    # Captured on qemu_arm64 (multi-hash build); zlib agrees.
    text = "crc32 for 40200000 ... 4020001f ==> 984c77a9\n"
    assert uboot.parse_crc32(text) == (0x40200000, 0x4020001F, 0x984C77A9)
    assert zlib.crc32(QEMU_BYTES[:0x20]) == 0x984C77A9
    # The crc-only path (reference §2.2).
    assert uboot.parse_crc32("CRC32 for 12000000 ... 121fffff ==> fcd6b80b") == (
        0x12000000, 0x121FFFFF, 0xFCD6B80B,
    )  # fmt: skip
    assert uboot.check_crc32(crlf(text), 0x40200000, 0x20) == 0x984C77A9


@pytest.mark.parametrize(
    "text",
    [
        "",
        "crc32 for 40200000 ... 4020001f ==> 984c77a",  # 7 digits
        "crc32 for 40200000 ... 4020001f ==> 984c77a99",  # 9 digits
        "crc32 for 40200000 ... 4020001f ==> 984C77A9",  # not U-Boot's lowercase
        "crc32 for 40200000 .. 4020001f ==> 984c77a9",
        "crc32 for 40200000 ... 4020001f ==> 984c77a9\ncrc32 for 0 ... 1 ==> 00000000",
        "sha1 for 40200000 ... 4020001f ==> 984c77a9",
    ],
)
def test_parse_crc32_rejects(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        uboot.parse_crc32(text)


def test_crc32_errors_and_ranges() -> None:
    with pytest.raises(TransportError, match="Unknown command"):
        uboot.parse_crc32("Unknown command 'crc32' - try 'help'\n")
    with pytest.raises(RemoteProtocolError, match="covered"):
        uboot.check_crc32("crc32 for 40200000 ... 4020001f ==> 984c77a9", 0x40200000, 0x40)
    with pytest.raises(LocalProtocolError):
        uboot.crc32_command(0x40200000, 0)


def test_memory_commands() -> None:
    assert uboot.cp_command(0x40200000, 0x4200000, 0x100, 1) == "cp.b 40200000 4200000 100"
    assert uboot.cp_command(0x40200000, 0x40300000, 0x100, 4) == "cp.l 40200000 40300000 40"
    assert uboot.cmp_command(0x40200000, 0x40300000, 0x20, 1) == "cmp.b 40200000 40300000 20"
    assert uboot.cmp_command(0x40200000, 0x40300000, 0x20, 8) == "cmp.q 40200000 40300000 4"
    assert uboot.mw_command(0x40200000, 0x11223344) == "mw.l 40200000 11223344 1"
    assert uboot.loadx_command(0x40200000) == "loadx 40200000"
    assert uboot.loady_command(0x40200000) == "loady 40200000"


MISUSE: list[Callable[[], object]] = [
    lambda: uboot.cp_command(0x40200001, 0x40300000, 0x100, 4),  # unaligned
    lambda: uboot.cmp_command(0x40200000, 0x40300000, 6, 4),  # not whole words
    lambda: uboot.mw_command(0x40200000, 0x1_0000_0000, 4),  # value too wide
    lambda: uboot.loadx_command(-1),
    lambda: uboot.mmc_dev_command(0, 8),  # no such hardware partition
    lambda: uboot.mmc_read_command(0x40200000, 0, 0),  # nothing to read
    lambda: uboot.virtio_read_command(0x40200000, -1, 1),
    lambda: uboot.nand_erase_command(0x20000, 0),
    lambda: uboot.sf_erase_command(4096.0, 0x1000),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("misuse", MISUSE)
def test_command_builders_refuse_misuse(misuse: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        misuse()


def test_parse_cmp() -> None:
    assert uboot.parse_cmp("Total of 32 byte(s) were the same\n", 32) is True
    assert uboot.parse_cmp("Total of 8 word(s) were the same\n", 8) is True
    different = (
        "byte at 0x40200000 (0x11) != byte at 0x40200004 (0x55)\n"
        "Total of 0 byte(s) were the same\n"
    )  # captured
    assert uboot.parse_cmp(different, 32) is False
    assert uboot.parse_cmp("word at 0x40200010 (0) != word at 0x40300010 (0xffffffff)\n"
                           "Total of 4 word(s) were the same\n") is False  # fmt: skip
    with pytest.raises(RemoteProtocolError):  # fewer compared, yet no difference named
        uboot.parse_cmp("Total of 16 byte(s) were the same\n", 32)
    with pytest.raises(RemoteProtocolError):
        uboot.parse_cmp("Total of 3Z byte(s) were the same\n")
    with pytest.raises(TransportError):
        uboot.parse_cmp("Usage:\ncmp [.b, .w, .l, .q] addr1 addr2 count\n")


def test_parse_load_total() -> None:
    text = (
        "## Ready for binary (xmodem) download to 0x40200000 at 115200 bps...\n"
        "CC## Total Size      = 0x000186a0 = 100000 Bytes\n"
        "## Start Addr      = 0x40200000\n"
    )
    assert uboot.parse_load_total(text) == 100000
    with pytest.raises(TransportError, match="aborted"):
        uboot.parse_load_total("CCC## Binary (ymodem) download aborted\n")
    with pytest.raises(RemoteProtocolError, match="line noise"):
        uboot.parse_load_total("## Total Size      = 0x000186a0 = 100001 Bytes\n")
    with pytest.raises(RemoteProtocolError):
        uboot.parse_load_total("## Start Addr      = 0x40200000\n")


# =============================================================================================
# Flash back-ends
# =============================================================================================


def test_sf_probe() -> None:
    text = "SF: Detected sst25vf016b with page size 256 Bytes, erase size 4 KiB, total 2 MiB\n"
    assert uboot.parse_sf_probe(text) == SpiFlash("sst25vf016b", 256, 4096, 2 * MiB)
    older = ("SF: Detected W25Q128 with page size 256 Bytes, erase size 64 KiB, total 16 MiB, "
             "mapped at 1e000000\n")  # fmt: skip
    assert uboot.parse_sf_probe(older) == SpiFlash("W25Q128", 256, 64 << 10, 16 * MiB)
    odd = "SF: Detected xx with page size 256 Bytes, erase size 64 KiB, total 1.5 MiB\n"
    assert uboot.parse_sf_probe(odd).size_bytes == 3 * MiB // 2
    assert uboot.sf_probe_command() == "sf probe"
    assert uboot.sf_probe_command(1, 2) == "sf probe 1:2"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Failed to initialize SPI flash at 0:0 (error -2)\n", "error -2"),
        ("SF: unrecognized JEDEC id bytes: ff, ff, ff\n", "JEDEC"),
        ("Unknown command 'sf' - try 'help'\n", "Unknown command"),
    ],
)
def test_sf_probe_failures(text: str, said: str) -> None:
    with pytest.raises(TransportError, match=said):
        uboot.parse_sf_probe(text)


def test_sf_probe_garbled_sizes() -> None:
    with pytest.raises(RemoteProtocolError):
        uboot.parse_sf_probe(
            "SF: Detected x with page size 2?6 Bytes, erase size 4 KiB, total 2 MiB"
        )


def test_sf_commands() -> None:
    assert uboot.sf_read_command(0x40200000, 0x1000, 0x100) == "sf read 40200000 1000 100"
    assert uboot.sf_write_command(0x40200000, 0x10000, 0x1000) == "sf write 40200000 10000 1000"
    assert uboot.sf_erase_command(0x10000, 0x1000) == "sf erase 10000 1000"
    with pytest.raises(LocalProtocolError):
        uboot.sf_read_command(0x40200000, 0, 0)


def test_check_sf_result_ok() -> None:
    uboot.check_sf_result("device 0 offset 0x1000, size 0x100\nSF: 256 bytes @ 0x1000 Read: OK\n",
                          "Read", 0x1000, 256)  # fmt: skip
    uboot.check_sf_result("SF: 4096 bytes @ 0x10000 Written: OK\n", "Written", 0x10000, 4096)
    uboot.check_sf_result("SF: 4096 bytes @ 0x10000 Erased: OK\n", "Erased", 0x10000, 4096)
    # cmd/sf.c prints the offset with %#x: zero is "0", not "0x0".
    uboot.check_sf_result("SF: 65536 bytes @ 0 Read: OK\n", "Read", 0, 65536)


@pytest.mark.parametrize(
    ("text", "error", "said"),
    [
        ("SF: 2048 bytes @ 0x10800 Erased: ERROR -22\n", TransportError, "ERROR -22"),
        ("No SPI flash selected. Please run `sf probe'\n", TransportError, "No SPI flash"),
        ("ERROR: flash area is locked\n", TransportError, "locked"),
        ("Size exceeds partition or device limit\nUsage:\nsf …\n", TransportError, "exceeds"),
        ("SF: 4096 bytes @ 0x20000 Erased: OK\n", RemoteProtocolError, "another operation"),
        ("SF: 4095 bytes @ 0x10000 Erased: OK\n", RemoteProtocolError, "another operation"),
        ("SF: 4096 bytes @ 0x10000 Written: OK\n", RemoteProtocolError, "another operation"),
        ("", RemoteProtocolError, "no 'SF"),
        ("SF: 4096 bytes @ 0x10000 Erased: O", RemoteProtocolError, "no 'SF"),
    ],
)
def test_check_sf_result_failures(text: str, error: type[Exception], said: str) -> None:
    with pytest.raises(error, match=said):
        uboot.check_sf_result(text, "Erased", 0x10000, 4096)


def test_block_commands() -> None:
    assert uboot.mmc_dev_command(0, None) == "mmc dev 0"
    assert uboot.mmc_dev_command(1, 2) == "mmc dev 1 2"
    assert uboot.mmc_read_command(0x40200000, 0x800, 0x80) == "mmc read 40200000 800 80"
    assert uboot.mmc_write_command(0x40200000, 0, 0x10) == "mmc write 40200000 0 10"
    assert uboot.virtio_read_command(0x40200000, 0, 0x4000) == "virtio read 40200000 0 4000"
    assert uboot.virtio_write_command(0x40200000, 8, 1) == "virtio write 40200000 8 1"


def test_check_blocks_result() -> None:
    uboot.check_blocks_result("\nMMC read: dev # 0, block # 0, count 16 ... 16 blocks read: OK\n",
                              "read", 16)  # fmt: skip
    uboot.check_blocks_result(
        "\nvirtio read: device 0 block # 0, count 16384 ... 16384 blocks read: OK\n", "read", 16384
    )
    uboot.check_blocks_result("\nMMC write: dev # 0, block # 34, count 1 ... 1 blocks written: OK",
                              "written", 1)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # captured: past the end of the 8 MiB virtio disk
        ("\nvirtio read: device 0 block # 8388608, count 16 ... -5 blocks read: ERROR\n",
         TransportError),
        ("\nMMC read: dev # 0, block # 0, count 16 ... 15 blocks read: ERROR\n", TransportError),
        ("\nMMC write: dev # 0, block # 0, count 16 ... Error: card is write protected!\n",
         TransportError),
        ("no mmc device at slot 1\n", RemoteProtocolError),
        ("Unknown command 'mmc' - try 'help'\n", TransportError),
        ("\nMMC read: dev # 0, block # 0, count 10 ... 10 blocks read: OK\n", RemoteProtocolError),
        ("\nMMC read: dev # 0, block # 0, count 16 ... 16 blocks written: OK\n",
         RemoteProtocolError),
        ("", RemoteProtocolError),
    ],
)  # fmt: skip
def test_check_blocks_result_failures(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        uboot.check_blocks_result(text, "read", 16)


def test_parse_virtio_info() -> None:
    assert uboot.parse_virtio_info(QEMU_VIRTIO_INFO) == 8 * MiB
    assert uboot.parse_virtio_info(QEMU_VIRTIO_INFO, 1) == 4 * MiB
    assert uboot.parse_blk_info(QEMU_VIRTIO_INFO, 1) == (8192, 512)
    single = "            Capacity: 8.0 MB = 0.0 GB (16384 x 512)\n"
    assert uboot.parse_virtio_info(single) == 8 * MiB
    with pytest.raises(RemoteProtocolError):
        uboot.parse_virtio_info(QEMU_VIRTIO_INFO, 2)
    with pytest.raises(TransportError):
        uboot.parse_virtio_info(
            "Device 0: device type unknown\n            Capacity: not available\n"
        )


def print_size(size: int) -> str:
    """U-Boot's print_size() (lib/display_options.c), transcribed, for the property test."""
    names = "EPTGMK"
    index = next((i for i in range(len(names)) if size >> (60 - 10 * i)), None)
    if index is None:
        return f"{size} Bytes"
    shift, unit = 60 - 10 * index, names[index]
    whole, rest, tenth = size >> shift, size & ((1 << shift) - 1), 0
    if rest:
        tenth = (10 * rest + (1 << (shift - 1))) >> shift
        if tenth >= 10:
            tenth -= 10
            whole += 1
            if whole == 1024 and index > 0:
                whole, tenth, unit = 1, 0, names[index - 1]
    return f"{whole}" + (f".{tenth}" if tenth else "") + f" {unit}iB"


@given(st.integers(0, 1 << 62))
@settings(max_examples=500)
def test_printed_size_range_contains_the_size(size: int) -> None:
    size_range = uboot.printed_size_range(print_size(size))
    assert size_range is not None
    low, high = size_range
    assert low <= size < high
    assert high - low <= max(1, size // 9)  # about ±5 %


@given(st.integers(1, 255))
def test_emmc_boot_size_is_recovered_exactly(mult: int) -> None:
    size = mult * (128 << 10)
    text = f"User Capacity: 7.3 GiB\nBoot Capacity: {print_size(size)} ENH\n"
    assert uboot.parse_mmc_info(text).boot_bytes == size


EMMC_INFO = """\
Device: mmc@11230000
Manufacturer ID: 15
OEM: 100
Name: 8GND3R 
Bus Speed: 52000000
Mode: MMC High Speed (52MHz)
Rd Block Len: 512
MMC version 5.1
High Capacity: Yes
Capacity: 4 MiB
Bus Width: 8-bit
Erase Group Size: 512 KiB
HC WP Group Size: 8 MiB
User Capacity: 7.3 GiB WRREL
Boot Capacity: 4 MiB ENH
RPMB Capacity: 4 MiB ENH
Boot area 0 is not write protected
Boot area 1 is not write protected
"""  # noqa: W291 (print_mmcinfo's "Name: %c… \n")


def test_parse_mmc_info_emmc() -> None:
    info = uboot.parse_mmc_info(EMMC_INFO)  # "Capacity:" is the selected boot partition here
    low, high = int(7.25 * (1 << 30)), int(7.35 * (1 << 30))
    assert info.user_bytes == -(-low // 512) * 512
    assert info.user_max_bytes == (high - 1) // 512 * 512
    assert not info.user_exact
    assert info.boot_bytes == 4 * MiB
    assert info.rpmb_bytes == 4 * MiB


def test_parse_mmc_info_sd_and_old_builds() -> None:
    sd = "Device: mmc@1\nSD version 3.0\nHigh Capacity: Yes\nCapacity: 14.8 GiB\nBus Width: 4-bit\n"
    info = uboot.parse_mmc_info(sd)
    assert info.boot_bytes is None and info.rpmb_bytes is None
    assert info.user_bytes <= int(14.8 * (1 << 30)) <= info.user_max_bytes
    old = "MMC version 4.0\nHigh Capacity: Yes\nCapacity: 7818182656\nBus Width: 8-bit\n"
    info = uboot.parse_mmc_info(old)
    assert info.user_exact and info.user_bytes == 7818182656
    with pytest.raises(TransportError):
        uboot.parse_mmc_info("no mmc device at slot 3\n")
    with pytest.raises(RemoteProtocolError):
        uboot.parse_mmc_info("Capacity: lots\n")


def test_nand_commands_and_results() -> None:
    assert uboot.nand_read_command(0x80000000, 0x40000, 0x20000) == "nand read 80000000 40000 20000"
    assert uboot.nand_write_command(0x80000000, 0, 0x800) == "nand write 80000000 0 800"
    assert uboot.nand_erase_command(0x40000, 0x20000) == "nand erase 40000 20000"
    ok = "\nNAND read: device 0 offset 0x40000, size 0x20000\n 131072 bytes read: OK\n"
    assert uboot.check_nand_result(ok, "read", 0x20000) == []
    skipped = (
        "\nNAND read: device 0 offset 0x0, size 0x60000\n"
        "Skipping bad block 0x00020000\nSkipping bad block 0x00040000\n 393216 bytes read: OK\n"
    )
    assert uboot.check_nand_result(skipped, "read", 0x60000) == [0x20000, 0x40000]
    written = "\nNAND write: device 0 offset 0x0, size 0x800\nSkip bad block 0x00000000\n" \
              " 2048 bytes written: OK\n"  # fmt: skip
    assert uboot.check_nand_result(written, "written", 0x800) == [0]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("\nNAND read: device 0 offset 0x0, size 0x800\n 2048 bytes read: ERROR\n", TransportError),
        ("\nNAND read: Attempt to read non page-aligned data\n", TransportError),
        ("\nNAND read: Attempt to read outside the flash area\n", TransportError),
        ("\nNAND read: device 0 offset 0x0, size 0x800\n 1024 bytes read: OK\n",
         RemoteProtocolError),
        ("\nNAND read: device 0 offset 0x0, size 0x800\n 2048 bytes written: OK\n",
         RemoteProtocolError),
        ("", RemoteProtocolError),
    ],
)  # fmt: skip
def test_check_nand_result_failures(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        uboot.check_nand_result(text, "read", 0x800)


def test_check_nand_erase_result() -> None:
    text = (
        "\nNAND erase: device 0 offset 0x0, size 0x40000\n"
        "\rErasing at 0x0 --  50% complete.\rSkipping bad block at  0x00020000\n"
        "\rErasing at 0x20000 -- 100% complete.\nOK\n"
    )
    assert uboot.check_nand_erase_result(text, 0, 0x40000) == [0x20000]
    with pytest.raises(TransportError):
        uboot.check_nand_erase_result(text.replace("\nOK\n", "\nERROR\n"), 0, 0x40000)
    with pytest.raises(RemoteProtocolError):
        uboot.check_nand_erase_result(text, 0x20000, 0x40000)
    with pytest.raises(RemoteProtocolError):
        uboot.check_nand_erase_result(text, 0, 0x20000)
    whole = "\nNAND erase: device 0 whole chip\nErasing at 0x7fe0000 -- 100% complete.\nOK\n"
    assert uboot.check_nand_erase_result(whole, 0, 128 * MiB) == []
    with pytest.raises(RemoteProtocolError):
        uboot.check_nand_erase_result(whole, 0x20000, 128 * MiB)
    with pytest.raises(TransportError):
        uboot.check_nand_erase_result("\nNAND erase: Attempt to erase non block-aligned data\n",
                                      0, 0x40000)  # fmt: skip


def test_parse_nand_bad_and_info() -> None:
    # cmd/nand.c: "\nDevice %d bad blocks:\n" then "  %08llx\n" per bad block.
    assert uboot.parse_nand_bad("\nDevice 0 bad blocks:\n", 0x20000) == []
    listing = "\nDevice 0 bad blocks:\n  00040000\n  07fe0000\n"
    assert uboot.parse_nand_bad(listing, 0x20000) == [0x40000, 0x7FE0000]
    with pytest.raises(RemoteProtocolError, match="multiple"):
        uboot.parse_nand_bad("\nDevice 0 bad blocks:\n  00041000\n", 0x20000)
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        uboot.parse_nand_bad("\nDevice 0 bad blocks:\n  0004O000\n", 0x20000)
    with pytest.raises(TransportError):
        uboot.parse_nand_bad("\nUnknown command 'nand' - try 'help'\n", 0x20000)
    # nand_print_and_set_info(): the erase size line, in bytes.
    info = (
        "\nDevice 0: nand0, sector size 128 KiB\n  Page size       2048 b\n"
        "  OOB size          64 b\n  Erase size    131072 b\n  ecc strength         8 bits\n"
    )
    assert uboot.parse_nand_erase_bytes(info) == 0x20000
    with pytest.raises(RemoteProtocolError):
        uboot.parse_nand_erase_bytes(info.replace("131072", "131071"))
    with pytest.raises(TransportError):
        uboot.parse_nand_erase_bytes("\nno devices available\n")


def test_cfi_flash() -> None:
    # All captured on QEMU virt's CFI NOR.
    assert uboot.protect_off_command(0x4200000, 0x20000) == "protect off 4200000 +20000"
    assert uboot.flash_erase_command(0x4200000, 0x20000) == "erase 4200000 +20000"
    assert uboot.check_protect_result("Un-Protected 1 sectors\n") == 1
    assert uboot.check_flash_erase_result("\n. done\nErased 1 sectors\n") == 1
    uboot.check_flash_copy_result("Copy to Flash... done\n")
    with pytest.raises(TransportError, match="protected"):  # it still says "Erased 1 sectors"
        uboot.check_flash_erase_result(
            "- Warning: 1 protected sectors will not be erased!\n done\nErased 1 sectors\n"
        )
    with pytest.raises(TransportError):
        uboot.check_protect_result("Protected 1 sectors\n")  # protect *on*
    with pytest.raises(TransportError, match="Flash not Erased"):
        uboot.check_flash_copy_result("Copy to Flash... Flash not Erased\n")
    with pytest.raises(TransportError):
        uboot.check_flash_erase_result("Error: start address not on sector boundary\n")
    with pytest.raises(RemoteProtocolError):
        uboot.check_flash_erase_result(". done\n")


# =============================================================================================
# Maps
# =============================================================================================


def test_parse_mtdparts_listing_real() -> None:
    assert uboot.parse_mtdparts_listing(QEMU_MTDPARTS) == [
        ("uboot", 0, 0x100000),
        ("env", 0x100000, 0x40000),
        ("rootfs", 0x140000, 0x1EC0000),
    ]
    assert uboot.parse_mtdparts_listing("") == []
    assert uboot.parse_mtdparts_listing("no partitions defined\n") == []


def test_parse_mtdparts_listing_awkward_names_and_layouts() -> None:
    text = (
        "\ndevice nand0 <mt7621-nand>, # parts = 3\n"
        " #: name\t\tsize\t\tnet size\toffset\t\tmask_flags\n"
        " 0: Bootloader          0x00080000\t0x00080000 \t0x00000000\t1\n"
        " 1: a name with spaces  0x00040000\t0x00020000 (!)\t0x00080000\t0\n"
        " 2: twenty-chars-or-more0x1234abcd0x00100000\t0x00100000 \t0x000c0000\t0\n"
    )
    assert uboot.parse_mtdparts_listing(text) == [
        ("Bootloader", 0, 0x80000),
        ("a name with spaces", 0x80000, 0x40000),
        ("twenty-chars-or-more0x1234abcd", 0xC0000, 0x100000),
    ]


def test_parse_mtdparts_listing_rejects() -> None:
    lost_last = QEMU_MTDPARTS.replace(" 2: rootfs              0x01ec0000\t0x00140000\t0\n", "")
    with pytest.raises(RemoteProtocolError, match="says 3 partitions, 2 listed"):
        uboot.parse_mtdparts_listing(lost_last)
    lost_middle = QEMU_MTDPARTS.replace(" 1: env                 0x00040000\t0x00100000\t0\n", "")
    with pytest.raises(RemoteProtocolError, match="out of order"):
        uboot.parse_mtdparts_listing(lost_middle)
    garbled = QEMU_MTDPARTS.replace("0x00040000\t0x00100000", "0x00040000\t0x0010000O")
    with pytest.raises(RemoteProtocolError):
        uboot.parse_mtdparts_listing(garbled)
    two = QEMU_MTDPARTS + QEMU_MTDPARTS.replace("nor1", "nand0")
    with pytest.raises(RemoteProtocolError, match="several devices"):
        uboot.parse_mtdparts_listing(two)
    assert uboot.parse_mtdparts_listing(two, "nand0")[0] == ("uboot", 0, 0x100000)
    with pytest.raises(TransportError):
        uboot.parse_mtdparts_listing(two, "spi0")
    # Captured: U-Boot refuses a $mtdparts that is not erase-block aligned.
    with pytest.raises(TransportError, match="alignment incorrect"):
        uboot.parse_mtdparts_listing("nor1: partition (BOOT) size alignment incorrect\n")


def test_parse_part_list_real() -> None:
    assert uboot.parse_part_list(QEMU_PART_GPT) == [
        (1, 0x800, 0x1000, "boot a"),  # End LBA is inclusive
        (2, 0x1800, 0x2000, "system"),
    ]
    assert uboot.parse_part_list(QEMU_PART_DOS) == [(1, 2048, 2048, ""), (2, 4096, 2048, "")]


def test_parse_part_list_variants() -> None:
    quoted = QEMU_PART_GPT.replace('"system"', '"a "quoted" name"')
    assert uboot.parse_part_list(quoted)[1][3] == 'a "quoted" name'
    with_type_names = QEMU_PART_GPT.replace(
        "\ttype:\t0fc63daf-8483-4772-8e79-3d69d8477de4\n",
        "\ttype:\t0fc63daf-8483-4772-8e79-3d69d8477de4\n\t\t(linux)\n",
    )
    assert len(uboot.parse_part_list(with_type_names)) == 2
    extended = (
        "Part\tStart Sector\tNum Sectors\tUUID\t\tType\n"
        "  1\t63        \t1000      \t12345678-01\t83\n"
        "  2\t1063      \t9000      \t12345678-02\t05 Extd\n"
        "  5\t1126      \t2000      \t12345678-05\t83\n"
    )
    assert uboot.parse_part_list(extended) == [(1, 63, 1000, ""), (5, 1126, 2000, "")]
    old_dos = "Partition     Start Sector     Num Sectors     Type\n" \
              "    1\t\t        32\t     20448\t b\n"  # fmt: skip
    assert uboot.parse_part_list(old_dos) == [(1, 32, 20448, "")]
    assert uboot.parse_part_list("## Unknown partition table type 0\n") == []


def test_parse_part_list_rejects() -> None:
    garbled = QEMU_PART_GPT.replace("  2\t0x00001800", "  2\t0x0000I800")
    with pytest.raises(RemoteProtocolError, match="unexpected line"):
        uboot.parse_part_list(garbled)
    backwards = QEMU_PART_GPT.replace("0x000037ff", "0x000017fe")
    with pytest.raises(RemoteProtocolError, match="ends before"):
        uboot.parse_part_list(backwards)
    with pytest.raises(TransportError):
        uboot.parse_part_list("** Bad device specification virtio 3 **\n")
    with pytest.raises(RemoteProtocolError):
        uboot.parse_part_list("what\n")


# =============================================================================================
# Environment, bdinfo, staging
# =============================================================================================


def test_parse_env() -> None:
    env = uboot.parse_env(crlf(QEMU_ENV))
    assert env["loadaddr"] == "0x40200000"
    assert env["bootcmd_qfw"].startswith(" if qfw load")
    assert "Environment size" not in " ".join(env)
    assert uboot.parse_env('## Error: "nosuch" not defined\n') == {}
    assert uboot.parse_env("bootargs=console=ttyS0 mtdparts=x:1m(a)\n") == {
        "bootargs": "console=ttyS0 mtdparts=x:1m(a)"
    }


def test_parse_bdinfo_2023() -> None:
    board = uboot.parse_bdinfo(crlf(QEMU_BDINFO))
    assert board == BoardInfo(
        dram_banks=((0x40000000, 0x20000000),),
        reloc_address=0x5FEF7000,
        fdt_blob=0x5EDB6DB0,
        sp_start=0x5EDB6DA0,
        reserved=((0x5DDB2000, 0x224E000), (0x5EDB2930, 0x124D6D0)),
    )


def test_parse_bdinfo_older_layouts() -> None:
    arm_2015 = (
        "arch_number = 0x000010DD\nboot_params = 0x80000100\n"
        "DRAM bank   = 0x00000000\n-> start    = 0x80000000\n-> size     = 0x10000000\n"
        "DRAM bank   = 0x00000001\n-> start    = 0xA0000000\n-> size     = 0x00000000\n"
        "relocaddr   = 0x8FF5A000\nreloc off   = 0x0F75A000\nsp start    = 0x8EF1CEC0\n"
    )
    board = uboot.parse_bdinfo(arm_2015)
    assert board.dram_banks == ((0x80000000, 0x10000000),)  # empty banks dropped
    assert (board.reloc_address, board.sp_start, board.fdt_blob) == (0x8FF5A000, 0x8EF1CEC0, None)
    mips = "boot_params = 0x87F8BFB0\nmemstart    = 0x80000000\nmemsize     = 0x08000000\n" \
           "flashstart  = 0xBC000000\nrelocaddr   = 0x87FB0000\n"  # fmt: skip
    assert uboot.parse_bdinfo(mips).dram_banks == ((0x80000000, 0x8000000),)
    lmb_2020 = (
        "lmb_dump_all:\n    memory.cnt\t\t   = 0x1\n    memory.size\t\t   = 0x0\n"
        "    memory.reg[0x0].base   = 0x40000000\n\t\t   .size   = 0x20000000\n\n"
        "    reserved.cnt\t   = 0x1\n    reserved.size\t   = 0x0\n"
        "    reserved.reg[0x0].base = 0x5ddb2000\n\t\t     .size = 0x224e000\n"
    )
    assert uboot.parse_bdinfo(lmb_2020).reserved == ((0x5DDB2000, 0x224E000),)


QEMU_BOARD = uboot.parse_bdinfo(QEMU_BDINFO)
QEMU_ENV_DICT = uboot.parse_env(QEMU_ENV)


def test_choose_staging_qemu_virt() -> None:
    assert uboot.choose_staging(QEMU_ENV_DICT, QEMU_BOARD, 0x220000) == 0x40200000
    # $loadaddr on the DTB QEMU puts at the start of RAM: the next candidate.
    env = {**QEMU_ENV_DICT, "loadaddr": "0x40000000"}
    assert uboot.choose_staging(env, QEMU_BOARD, 0x220000) == 0x40400000
    # Bare hex (U-Boot's own style) works too.
    assert uboot.choose_staging({"loadaddr": "40200000"}, QEMU_BOARD, 0x1000) == 0x40200000


def test_choose_staging_uses_bdinfo_facts_even_without_env_fdt() -> None:
    board = BoardInfo(((0x40000000, 0x20000000),), 0x5FEF7000, 0x40000000)
    assert uboot.choose_staging({"loadaddr": "0x40100000", "kernel_addr_r": "0x40400000"},
                                board, 0x10000) == 0x40400000  # fmt: skip


def test_choose_staging_refuses_u_boots_own_memory() -> None:
    # 480 MiB from $loadaddr or $kernel_addr_r runs into the LMB reservation from 0x5ddb2000;
    # from $ramdisk_addr_r it leaves the DRAM bank.
    with pytest.raises(SourceError, match="--ram ADDR") as info:
        uboot.choose_staging(QEMU_ENV_DICT, QEMU_BOARD, 0x1E000000)
    message = str(info.value)
    assert "$loadaddr=0x40200000" in message and "$ramdisk_addr_r=0x44000000" in message
    # Just below the margin under relocaddr is fine; above it is not.
    board = BoardInfo(((0x40000000, 0x20000000),), 0x5FEF7000, None)
    limit = 0x5FEF7000 - uboot.RELOC_MARGIN_BYTES
    assert uboot.choose_staging({"loadaddr": hex(limit - 0x1000)}, board, 0x1000) == limit - 0x1000
    with pytest.raises(SourceError, match="relocaddr"):
        uboot.choose_staging({"loadaddr": hex(limit - 0x1000)}, board, 0x1001)
    with pytest.raises(SourceError, match="LMB-reserved"):
        uboot.choose_staging({"loadaddr": "0x5ddb1800"}, QEMU_BOARD, 0x1000)
    # A reservation low in RAM (a secure monitor, say) counts as much as the one at the top.
    tee = BoardInfo(((0x40000000, 0x20000000),), 0x5FEF7000, None, reserved=((0x41000000, MiB),))
    with pytest.raises(SourceError, match=r"LMB-reserved RAM \(0x41000000-0x410fffff\)"):
        uboot.choose_staging({"loadaddr": "0x40f00000"}, tee, 0x200000)
    assert uboot.choose_staging({"loadaddr": "0x40f00000"}, tee, 0x100000) == 0x40F00000


def test_choose_staging_override_and_bad_candidates() -> None:
    assert uboot.choose_staging({}, QEMU_BOARD, 0x100000, override=0x50000000) == 0x50000000
    with pytest.raises(SourceError, match="DRAM bank"):
        uboot.choose_staging(QEMU_ENV_DICT, QEMU_BOARD, 0x100000, override=0x70000000)
    with pytest.raises(SourceError, match="DRAM bank"):
        uboot.choose_staging({}, QEMU_BOARD, 0x100000, override=0x5FFFF000)
    with pytest.raises(SourceError, match="not set"):
        uboot.choose_staging({}, QEMU_BOARD, 0x1000)
    with pytest.raises(SourceError, match="not an address"):
        uboot.choose_staging({"loadaddr": "${foo}"}, QEMU_BOARD, 0x1000)
    with pytest.raises(SourceError, match="aligned"):
        uboot.choose_staging({"loadaddr": "0x40200001"}, QEMU_BOARD, 0x1000)
    with pytest.raises(SourceError, match="no DRAM bank"):
        uboot.choose_staging(QEMU_ENV_DICT, BoardInfo((), None, None), 0x1000)
    # With no DRAM facts the user's word is all there is.
    assert uboot.choose_staging({}, BoardInfo((), None, None), 0x1000, 0x80000000) == 0x80000000
    with pytest.raises(LocalProtocolError):
        uboot.choose_staging(QEMU_ENV_DICT, QEMU_BOARD, 0)


# =============================================================================================
# The QEMU test peer's recorded transcripts (mtkfs/testing/qemu_transcripts.py), when present
# =============================================================================================

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "data" / "uboot" / "qemu-2023.01"
#: The pattern those transcripts put at 0x40200000 (their README): it spells a prompt, a
#: command and a sign-on banner in md's ASCII column.
PATTERN = bytes.fromhex(
    "11 22 33 44 55 66 77 88 41 41 41 41 41 41 41 41 3d 3e 20 3a 20 20 6d 64 2e 6c 20 30 3a 78"
    "3d 20 55 2d 42 6f 6f 74 20 32 30 32 33 2e 30 31 20 6d 0d 0a 09 00 01 1b 5b 30 6d 20 7e 7f"
    "80 a0 fe ff 43 52 43 33 32 65 6e 64"
)


def transcript(name: str) -> str:
    """The output of one recorded step (echo and prompt checked and removed)."""
    path = TRANSCRIPTS / f"{name}.txt"
    if not path.exists():
        pytest.skip(f"no recorded transcript {path.name}")
    raw = path.read_bytes().decode("latin-1")
    return uboot.split_command_output(raw, raw.split("\r\n", 1)[0], PROMPT)


@pytest.mark.parametrize(("name", "width"), [("md.b", 1), ("md.w", 2), ("md.l", 4), ("md.q", 8),
                                             ("md", 4)])  # fmt: skip
def test_recorded_md_dumps(name: str, width: int) -> None:
    output = transcript(name)
    assert uboot.parse_md(output, 0x40200000, len(PATTERN), width, "little") == PATTERN
    assert uboot.format_md(PATTERN, 0x40200000, width, "little") + "\n" == output
    # "=> ", "md.l 0:x=" and "U-Boot 2023.01" in the ASCII column are data, not news.
    assert uboot.find_reset(output) is None
    assert uboot.find_error(output) is None
    assert not uboot.autoboot_seen(output)


def test_recorded_answers() -> None:
    assert uboot.check_crc32(transcript("crc32"), 0x40200000, 0x48) == zlib.crc32(PATTERN)
    assert uboot.parse_cmp(transcript("cmp.b-ram"), 0x4000) is True
    assert uboot.parse_cmp(transcript("cmp.b-flash-mismatch"), 0x4000) is False
    assert uboot.check_flash_erase_result(transcript("erase")) == 8
    assert uboot.check_protect_result(transcript("protect-off")) == 8
    uboot.check_flash_copy_result(transcript("cp.b-flash-done-not-written"))  # it lies
    with pytest.raises(TransportError, match="Timeout writing to Flash"):
        uboot.check_flash_copy_result(transcript("cp.b-flash-16k"))
    with pytest.raises(TransportError):
        uboot.check_blocks_result(transcript("virtio-read-out-of-range"), "read", 0x20)
    board = uboot.parse_bdinfo(transcript("bdinfo"))
    env = uboot.parse_env(transcript("printenv"))
    assert uboot.choose_staging(env, board, 0x300000) == 0x40200000
    assert [name for *_, name in uboot.parse_part_list(transcript("part-list"))][:2] == [
        "bootloader", "kernel",
    ]  # fmt: skip


def test_recorded_resets() -> None:
    path = TRANSCRIPTS / "md-unmapped-crash.txt"
    if not path.exists():
        pytest.skip("no recorded crash")
    raw = path.read_bytes().decode("latin-1")
    assert uboot.find_reset(raw) == '"Synchronous Abort" handler, esr 0x96000010'
    assert uboot.autoboot_seen(raw)


# =============================================================================================
# Hostile text: only mtkfs errors, never IndexError/ValueError
# =============================================================================================

PARSERS: list[Callable[[str], object]] = [
    lambda t: uboot.split_command_output(t, "md.b 0 10", PROMPT),
    lambda t: uboot.parse_marked_status(t, "ab"),
    uboot.autoboot_seen,
    uboot.find_reset,
    uboot.find_error,
    lambda t: uboot.learn_prompt(t.split("\n")),
    lambda t: uboot.parse_md(t, 0x40200000, 0x13, 1, "little"),
    lambda t: uboot.parse_md(t, 0x40200000, 0x20, 4, "big"),
    lambda t: uboot.detect_byte_order(t, t, 0x40200000),
    uboot.parse_crc32,
    lambda t: uboot.parse_cmp(t, 16),
    uboot.parse_load_total,
    uboot.parse_sf_probe,
    lambda t: uboot.check_sf_result(t, "Read", 0, 16),
    lambda t: uboot.check_blocks_result(t, "read", 16),
    lambda t: uboot.check_nand_result(t, "read", 16),
    lambda t: uboot.check_nand_erase_result(t, 0, 16),
    uboot.check_protect_result,
    uboot.check_flash_erase_result,
    uboot.check_flash_copy_result,
    uboot.parse_virtio_info,
    uboot.parse_mmc_info,
    uboot.parse_mtdparts_listing,
    uboot.parse_part_list,
    uboot.parse_env,
    uboot.parse_bdinfo,
    lambda t: uboot.choose_staging(uboot.parse_env(t), uboot.parse_bdinfo(t), 0x1000),
]

_FRAGMENTS = [
    "40200000:", " 11", " 2211", " 44332211", "  ", "    ", '."3D', "\n", "\r\n", "\r", "=> ",
    "crc32 for ", " ... ", " ==> ", "SF: ", " bytes @ 0x", " Read: OK", "ERROR -22",
    " blocks read: OK", "Capacity: ", "(16384 x 512)", "User Capacity: ", "7.3 GiB", " KiB",
    "device nor1 <nor1>, # parts = ", " 0: ", "0x00100000\t", "Part\tStart LBA\tEnd LBA\t\tName",
    '  1\t0x00000800\t0x000017ff\t"', "Part\tStart Sector\tNum Sectors\tUUID\t\tType",
    "DRAM bank   = 0x0", "-> start    = 0x", "-> size     = 0x", "relocaddr   = 0x",
    " reserved[0]\t[0x", "-0x", "loadaddr=", "__mtkfs_ab__", "Total of ", " byte(s) were the same",
    "## Total Size      = 0x", " = ", " Bytes", "Skipping bad block 0x", "NAND erase: device 0",
    "OK", "Erased ", " sectors", "Un-Protected ", "Device 0: ", "\x00", "\x03", "\xff", "é",
]  # fmt: skip


@given(
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), max_size=40).map(
        "".join
    ),
    st.sampled_from(range(len(PARSERS))),
)
@settings(max_examples=1500)
def test_parsers_only_raise_mtkfs_errors(text: str, which: int) -> None:
    try:
        PARSERS[which](text)
    except MtkfsError:
        pass
