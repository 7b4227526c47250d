"""The U-Boot console simulator (mtkfs.testing.sim_uboot) against what the real U-Boot 2023.01
does: the QEMU transcripts replayed byte for byte, and each command, quirk and fault the
``uboot:`` transport must survive, driven over the TCP port like a serial client."""

from __future__ import annotations

import binascii
import contextlib
import io
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import xmodem  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.testing import qemu_transcripts
from mtkfs.testing.content import pseudo_random
from mtkfs.testing.gpt_write import GptPartition, write_gpt
from mtkfs.testing.qemu_transcripts import PATTERN
from mtkfs.testing.qemu_uboot import PFLASH_BYTES, SerialConsole, UbootBoard, build_uboot_board
from mtkfs.testing.sim_uboot import (
    CfiFlash,
    ConsoleFaults,
    Emmc,
    Nand,
    SimBoard,
    SimConsole,
    SpiNor,
    VirtioDisk,
    parse_console_faults,
    qemu_virt_board,
    running_console,
)
from mtkfs.testing.sim_uboot_board import hexdump_lines, print_size
from mtkfs.testing.sim_uboot_machine import parse_line
from mtkfs.testing.tools import sparse_file

pytestmark = pytest.mark.timeout(120)

KIB, MIB = 1 << 10, 1 << 20
RAM = 0x40200000
PROMPT = re.compile(rb"\n=> ")
TRANSCRIPTS = Path(__file__).parent.parent / "data" / "uboot" / "qemu-2023.01"


def fast(**fields: object) -> SimBoard:
    """A board with short delays (the real ones are seconds). Not zero before the banner:
    pyserial's socket:// open() throws away whatever arrives while it opens."""
    timing: dict[str, object] = {
        "banner_delay_s": 0.1,
        "autoboot_step_s": 0.2,
        "boot_script_s": 0.1,
        "xyz_char_timeout_s": 0.3,
    }
    timing.update(fields)
    return SimBoard(**timing)  # type: ignore[arg-type]


@contextlib.contextmanager
def session(
    board: SimBoard, faults: ConsoleFaults | None = None
) -> Iterator[tuple[SimConsole, SerialConsole]]:
    """The simulator and a client stopped at its prompt."""
    with (
        running_console(board, faults=faults) as sim,
        SerialConsole(sim.url, quiet_s=0.03) as con,
    ):
        con.stop_autoboot()
        yield sim, con


def out(con: SerialConsole, line: str) -> str:
    """A command's output (no echo, no prompt, ``\\n`` line ends)."""
    return SerialConsole.output(con.command(line))


def status(con: SerialConsole) -> int:
    return int(out(con, "echo $?"))


def expected_md(
    addr: int, data: bytes, width: int, order: str, sep: str = "  ", pad: bool = True
) -> list[str]:
    """md lines computed word by word (independently of the simulator's fast formatter)."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        words = [
            int.from_bytes(chunk[i : i + width], order)  # type: ignore[arg-type]
            for i in range(0, len(chunk), width)
        ]
        hexes = " ".join(f"{w:0{2 * width}x}" for w in words)
        padding = " " * ((16 - len(chunk)) // width * (2 * width + 1)) if pad else ""
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{addr + off:08x}: {hexes}{padding}{sep}{ascii_}")
    return lines


def put_pattern(con: SerialConsole, addr: int, data: bytes, order: str) -> None:
    """Write ``data`` with ``mw.l`` as the board's numbers (so mw is tested too), 16 words a
    line."""
    words = [
        f"mw.l {addr + off:#x} {int.from_bytes(data[off : off + 4], order):#010x}"  # type: ignore[arg-type]
        for off in range(0, len(data), 4)
    ]
    for start in range(0, len(words), 16):
        assert out(con, "; ".join(words[start : start + 16])) == ""


def drain_to_prompt(con: SerialConsole, timeout_s: float = 60) -> bytes:
    """Everything up to the prompt after a long output (SerialConsole's read_until rescans
    its whole buffer on every read: fine for a screenful, too slow for megabytes)."""
    data = bytearray(con._pending)
    con._pending.clear()
    deadline = time.monotonic() + timeout_s
    while not data.endswith(b"\n=> "):
        assert time.monotonic() < deadline, bytes(data[-200:])
        data += con.port.read(1 << 20)
    return bytes(data)


def crc_line(addr: int, size: int, crc: int, spelling: str = "crc32") -> str:
    return f"{spelling} for {addr:08x} ... {addr + size - 1:08x} ==> {crc:08x}\n"


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_print_size_matches_u_boot() -> None:
    assert print_size(256) == "256 Bytes"
    assert print_size(4096) == "4 KiB"
    assert print_size(2 * MIB) == "2 MiB"
    assert print_size(64 * MIB) == "64 MiB"
    assert print_size(7818182656) == "7.3 GiB"
    assert print_size(1023 * MIB + 1000 * KIB) == "1 GiB"  # rounds up into the next unit


@settings(max_examples=200, deadline=None)
@given(
    st.binary(min_size=0, max_size=80),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from(["little", "big"]),
    st.integers(0, 0xFFFFFFF0),
)
def test_hexdump_lines_match_word_by_word_formatting(
    data: bytes, width: int, order: str, addr: int
) -> None:
    data = data[: len(data) - len(data) % width]
    assert hexdump_lines(addr, data, width, order) == expected_md(addr, data, width, order)


def test_hush_parser_splits_pipes_and_keeps_quotes() -> None:
    pipes = parse_line("crc32 1 2; echo m$? && echo 'a;b' || echo \"$x y\"")
    assert [op for _, op in pipes] == [";", "&&", "||", ";"]
    assert pipes[1][0][1] == (False, [("lit", "m"), ("var", "?")])
    assert pipes[2][0][1] == (True, [("lit", "a;b")])
    with pytest.raises(ValueError):
        parse_line("echo 'unterminated")


def test_fault_spec_parses() -> None:
    faults = parse_console_faults("garble=0.5,drop-line=0.25,reset=0.1,baud=115200,seed=7,max=3")
    assert (faults.garble_line_rate, faults.drop_line_rate) == (0.5, 0.25)
    assert (faults.reset_during_md_rate, faults.baud, faults.max_faults) == (0.1, 115200, 3)
    assert faults.seed == 7
    with pytest.raises(ValueError):
        parse_console_faults("explode=1")


# ---------------------------------------------------------------------------------------------
# The real thing, replayed


@pytest.fixture(scope="module")
def qemu_board(tmp_path_factory: pytest.TempPathFactory) -> UbootBoard:
    return build_uboot_board(tmp_path_factory.mktemp("sim-qemu-board"))


def _transcript_env() -> dict[str, str]:
    text = (TRANSCRIPTS / "printenv.txt").read_bytes().decode()
    lines = text.split("\r\n")[1:-2]  # echo; the size line and the prompt
    return dict(line.partition("=")[::2] for line in lines if line)


@pytest.mark.slow
def test_qemu_transcripts_replay_byte_for_byte(
    qemu_board: UbootBoard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transcript recorder's own session, run against the simulator dressed as QEMU virt,
    produces the same bytes as the real U-Boot did, file by file."""
    board = qemu_board.copy_to(tmp_path / "board")
    pflash0 = tmp_path / "pflash0.img"
    sparse_file(pflash0, PFLASH_BYTES)
    env = _transcript_env()

    @contextlib.contextmanager
    def simulated(uboot: UbootBoard) -> Iterator[SimConsole]:
        sim_board = qemu_virt_board(uboot.disk, pflash0, uboot.pflash, env=env)
        with running_console(sim_board) as sim:
            yield sim

    monkeypatch.setattr(qemu_transcripts, "running_uboot", simulated)
    rec = qemu_transcripts.Recording()
    qemu_transcripts.record_session(board, rec)
    qemu_transcripts.record_autoboot(qemu_board.copy_to(tmp_path / "board2"), rec)
    recorded = {path.stem for path in TRANSCRIPTS.glob("*.txt")}
    assert set(rec.files) == recorded
    # Known differences: U-Boot's help lists commands the simulator does not have, ext4ls is
    # not simulated, and QEMU's flash answers the timeout's status read with a value of its own.
    skip = {"help", "ext4ls"}
    variable = {"cp.b-flash-16k": re.compile(rb"(data )[0-9a-f]+")}
    mismatched = []
    for name in sorted(recorded - skip):
        got, want = rec.files[name], (TRANSCRIPTS / f"{name}.txt").read_bytes()
        if name in variable:
            got, want = (variable[name].sub(rb"\1X", data) for data in (got, want))
        if got != want:
            mismatched.append(f"{name}:\n  want {want[:300]!r}\n  got  {got[:300]!r}")
    assert not mismatched, "\n".join(mismatched)
    help_text = SerialConsole.output(rec.files["help"])
    real_help = SerialConsole.output((TRANSCRIPTS / "help.txt").read_bytes())
    assert set(help_text.splitlines()) <= set(real_help.splitlines()) | {
        line for line in help_text.splitlines() if line.split()[0] in {"mmc", "nand", "sf"}
    }


# ---------------------------------------------------------------------------------------------
# Autoboot, prompt, echo, line editing


def test_any_key_stops_the_countdown_and_is_consumed() -> None:
    with running_console(fast()) as sim, SerialConsole(sim.url) as con:
        boot = con.read_until(b"Hit any key to stop autoboot:  2 ", 10)
        assert boot.startswith(b"\r\n\r\nU-Boot 2023.01 (")
        assert b"\r\nDRAM:  512 MiB\r\n" in boot
        con.write(b"x")
        assert con.read_until(PROMPT, 5, quiet_s=0.3) == b"\x08\x08\x08 0 \r\n=> "
        assert out(con, "version").startswith("U-Boot 2023.01 (")
        assert sim.log == ["version"]


def test_countdown_runs_out_into_a_failed_boot_then_the_prompt() -> None:
    with running_console(fast(autoboot_step_s=0.05)) as sim, SerialConsole(sim.url) as con:
        data = con.read_until(PROMPT, 10, quiet_s=0.3)
        assert b"autoboot:  2 \x08\x08\x08 1 \x08\x08\x08 0 \r\nfatal: no kernel available" in data
        assert data.endswith(b"No ethernet found.\r\n=> ")


def test_a_key_already_waiting_stops_autoboot_at_once() -> None:
    with running_console(fast(banner_delay_s=0.3)) as sim, SerialConsole(sim.url) as con:
        con.write(b" ")
        data = con.read_until(PROMPT, 10, quiet_s=0.3)
        assert data.endswith(b"Hit any key to stop autoboot:  2 \x08\x08\x08 0\r\n=> ")


def test_keyed_autoboot_stops_only_on_its_string() -> None:
    board = fast(autoboot_keyed="tpl", autoboot_step_s=0.5)
    with running_console(board) as sim, SerialConsole(sim.url) as con:
        con.read_until(b"Autoboot in 2 seconds\r\n", 10)
        con.write(b"\x03 x")
        time.sleep(0.2)
        con.write(b"tpl")
        assert con.read_until(b"=> ", 5, quiet_s=0.3) == b"=> "  # no newline: keys are silent
        assert b"fatal" not in bytes(con.received)


def test_echo_backspace_ctrl_c_and_cr_lf() -> None:
    with session(fast()) as (sim, con):
        con.write(b"versiox\x08n\r")
        data = con.read_until(PROMPT, 5, quiet_s=0.3)
        assert data.startswith(b"versiox\x08 \x08n\r\nU-Boot 2023.01")
        con.write(b"md.l 4")
        con.read_until(b"md.l 4", 5)
        con.write(b"\x03")
        assert con.read_until(PROMPT, 5, quiet_s=0.3) == b"<INTERRUPT>\r\n=> "
        con.write(b"\x03")
        assert con.read_until(PROMPT, 5, quiet_s=0.3) == b"<INTERRUPT>\r\n=> "
        # "\r\n" is two lines: the empty one runs the last command again.
        con.write(b"version\r\n")
        data = con.read_until(PROMPT, 5) + con.read_until(PROMPT, 5, quiet_s=0.3)
        assert data.count(b"U-Boot 2023.01 (") == 2
        assert sim.log == ["version", "version", ""]  # the backspace took the x


def test_unknown_command_hush_sequencing_and_variables() -> None:
    with session(fast()) as (_sim, con):
        assert out(con, "foobar; echo m$?") == "Unknown command 'foobar' - try 'help'\nm1\n"
        assert out(con, "setenv a 1; echo $a ${a}x '$a' \"$a\"") == "1 1x $a 1\n"
        assert out(con, "false && echo a || echo b; echo c") == "c\n"  # old hush's rule
        assert out(con, "true && echo ok || echo no") == "ok\n"
        assert out(con, "x=5; echo $x") == "5\n"
        assert out(con, "printenv a nope") == 'a=1\n## Error: "nope" not defined\n'
        assert status(con) == 1
        assert out(con, "md") == (
            "md - memory display\n\nUsage:\nmd [.b, .w, .l, .q] address [# of objects]\n"
        )
        assert out(con, "md.x 0x40200000") == ""
        assert status(con) == 1


# ---------------------------------------------------------------------------------------------
# md, mw, cp, cmp, crc32


@pytest.mark.parametrize("order", ["little", "big"])
def test_md_every_width_in_the_boards_byte_order(order: str) -> None:
    with session(fast(byte_order=order)) as (_sim, con):
        put_pattern(con, RAM, PATTERN, order)
        for width, suffix in ((1, ".b"), (2, ".w"), (4, ".l"), (8, ".q"), (4, "")):
            shown = out(con, f"md{suffix} {RAM:#x} {len(PATTERN) // width:#x}")
            assert shown.splitlines() == expected_md(RAM, PATTERN, width, order), suffix
        # The last line is short: padded so the ASCII column lines up.
        assert out(con, f"md.b {RAM:#x} 0x13").splitlines()[1] == (
            f"{RAM + 16:08x}: 3d 3e 20{' ' * 39}  => "
        )
        if order == "little":  # the reference's example line, numbers byte-swapped
            assert out(con, f"md.l {RAM:#x} 1") == f'{RAM:08x}: 44332211{" " * 27}  ."3D\n'
        else:
            assert out(con, f"md.l {RAM:#x} 1").startswith(f"{RAM:08x}: 11223344 ")


def test_md_old_style_separator_and_unpadded_last_line() -> None:
    board = fast(md_separator="    ", md_pad_short_line=False)
    with session(board) as (_sim, con):
        put_pattern(con, RAM, PATTERN, "little")
        shown = out(con, f"md.l {RAM:#x} 5").splitlines()
        assert shown == expected_md(RAM, PATTERN[:20], 4, "little", sep="    ", pad=False)
        assert len(shown[0]) + 2 == 67  # the wiki's dump.py line length, CRLF included


def test_md_remembers_count_and_an_empty_line_continues() -> None:
    with session(fast()) as (sim, con):
        put_pattern(con, RAM, PATTERN, "little")
        first = out(con, f"md.l {RAM:#x} 4")
        assert first.splitlines() == expected_md(RAM, PATTERN[:16], 4, "little")
        assert out(con, "").splitlines() == expected_md(RAM + 16, PATTERN[16:32], 4, "little")
        assert out(con, f"md.w {RAM:#x}").splitlines() == expected_md(RAM, PATTERN[:8], 2, "little")
        assert out(con, "setenv q 1") == ""
        assert out(con, "") == ""  # setenv is not repeatable
        assert sim.log[-2:] == ["setenv q 1", ""]


def test_crc32_both_spellings_and_stores() -> None:
    for spelling in ("crc32", "CRC32"):
        with session(fast(crc32_spelling=spelling)) as (_sim, con):
            put_pattern(con, RAM, PATTERN, "little")
            crc = zlib.crc32(PATTERN)
            assert out(con, f"crc32 {RAM:#x} 0x48") == crc_line(RAM, 0x48, crc, spelling)
            assert out(con, "") == crc_line(RAM, 0x48, crc, spelling)  # repeatable
            out(con, f"crc32 {RAM:#x} 0x48 {RAM + 0x1000:#x}")
            stored = out(con, f"md.b {RAM + 0x1000:#x} 8").split(": ")[1][:23]
            if spelling == "crc32":  # the digest's bytes, big-endian
                assert stored == crc.to_bytes(4, "big").hex(" ") + " 00 00 00 00"
            else:  # a native 64-bit ulong
                assert stored == crc.to_bytes(8, "little").hex(" ")


def test_cmp_and_cp_messages() -> None:
    with session(fast()) as (_sim, con):
        out(con, "mw.b 0x40300000 0 0x10; mw.b 0x40300100 0 0x10; mw.b 0x40300103 0x1")
        assert out(con, "cmp.b 0x40300000 0x40300100 0x10") == (
            "byte at 0x40300003 (0x0) != byte at 0x40300103 (0x1)\n"
            "Total of 3 byte(s) were the same\n"
        )
        assert status(con) == 1
        assert out(con, "cmp.l 0x40300000 0x40300100 0x4").startswith(
            "word at 0x40300000 (0x00) != word at 0x40300100 (0x1000000)\n"
        )
        assert out(con, "cp.b 0x40300100 0x40300000 0x10") == ""
        assert out(con, "cmp.l 0x40300000 0x40300100 0x4") == "Total of 4 word(s) were the same\n"
        assert out(con, "cp.b 0x40300000 0x40300100 0") == "Zero length ???\n"


def test_type_ahead_is_eaten_while_md_runs() -> None:
    with session(fast()) as (sim, con):
        out(con, "mw.l 0x40400000 0x12345678 0x100000")
        con.type_line("md.l 0x40400000 0x100000")  # 16 MB of text
        con.read_until(b"40400100: ", 10)
        con.write(b"echo typed-ahead\r")
        data = drain_to_prompt(con)
        assert b"typed-ahead" not in data
        assert data.endswith(
            b"407ffff0: 12345678 12345678 12345678 12345678  xV4.xV4.xV4.xV4.\r\n=> "
        )
        assert "echo typed-ahead" not in sim.log
        assert status(con) == 0


def test_ctrl_c_stops_md_and_the_next_empty_line_does_nothing() -> None:
    with session(fast()) as (_sim, con):
        con.type_line("md.l 0x40400000 0x1000000")  # 64 MiB: 266 MB of text, more than TCP holds
        con.read_until(b"40400100: ", 10)
        con.write(b"\x03")
        data = drain_to_prompt(con)
        assert len(data) < 64 * MIB and b"443ffff0: " not in data
        assert status(con) == 0  # md's exit status stays 0
        con.type_line("md.l 0x40400000 1")
        con.read_until(PROMPT, 5, quiet_s=0.2)
        con.type_line("md.l 0x40400000 0x100000")
        con.read_until(b"40400100: ", 10)
        con.write(b"\x03")
        drain_to_prompt(con)
        assert con.command("") == b"\r\n=> "  # Ctrl-C cancelled the repeat


def test_unmapped_address_crashes_and_resets_the_board() -> None:
    with session(fast()) as (sim, con):
        out(con, f"mw.l {RAM:#x} 0xcafef00d")
        con.type_line("md.l 0x5ffffff0 8")
        data = con.read_until(b"Hit any key to stop autoboot:  2 ", 10)
        assert data.startswith(b"\r\n5ffffff0: 00000000 00000000 00000000 00000000  ....")
        assert b'\r\n"Synchronous Abort" handler, esr 0x96000010\r\n' in data
        assert b"x22: 0000000060000000 " in data  # the faulting address
        assert b"Resetting CPU ...\r\n\r\nresetting ...\r\n\r\n\r\nU-Boot 2023.01 (" in data
        con.write(b"\x03")
        con.read_until(PROMPT, 5, quiet_s=0.3)
        assert sim.resets == 1
        assert out(con, f"md.l {RAM:#x} 1").startswith(f"{RAM:08x}: 00000000 ")  # RAM lost


def test_32_bit_board_has_no_md_q_and_dies_like_armv7() -> None:
    board = fast(bits=32, ram_banks=((0x80000000, 128 * MIB),))
    with session(board) as (sim, con):
        assert out(con, "printenv loadaddr") == "loadaddr=0x80200000\n"
        assert out(con, "md.q 0x80200000 1") == ""
        assert status(con) == 1
        assert "DRAM bank   = 0x00000000\n-> start    = 0x80000000\n" in out(con, "bdinfo")
        con.type_line("md.l 0x10000000 4")
        data = con.read_until(b"Hit any key to stop autoboot", 10)
        assert data.startswith(b"\r\ndata abort\r\npc : [<")
        assert b"\r\nr3 : 10000000  r2 : " in data
        assert b"\r\nResetting CPU ...\r\n\r\nresetting ...\r\n" in data
        assert sim.resets == 1


def test_reset_from_the_test_and_the_reset_command() -> None:
    with session(fast()) as (sim, con):
        sim.reset()
        con.read_until(b"Hit any key to stop autoboot", 10)
        con.write(b"\x03")
        con.read_until(PROMPT, 5, quiet_s=0.3)
        con.type_line("reset")
        data = con.read_until(b"Hit any key to stop autoboot", 10)
        assert data.startswith(b"\r\nresetting ...\r\n\r\n\r\nU-Boot 2023.01 (")
        assert sim.resets == 2


def test_a_reconnecting_client_finds_the_board_as_it_was() -> None:
    with running_console(fast()) as sim:
        with SerialConsole(sim.url) as con:
            con.stop_autoboot()
            out(con, "setenv kept yes")
        with SerialConsole(sim.url) as con:
            con.write(b"\x03")
            assert con.read_until(PROMPT, 5, quiet_s=0.3) == b"<INTERRUPT>\r\n=> "
            assert out(con, "printenv kept") == "kept=yes\n"
        assert sim.connections == 2 and sim.resets == 0


def test_md_streams_megabytes_per_second() -> None:
    with session(fast()) as (_sim, con):
        con.type_line("md.l 0x40000000 0x100000")  # 4 MiB, 16.6 MB of text
        start = time.monotonic()
        data = drain_to_prompt(con)
        assert len(data) == 2 + 0x40000 * 65 + 3  # the Enter's CRLF, the lines, the prompt
        assert time.monotonic() - start < 10  # measured: 0.5 s; QEMU needs 160 s


# ---------------------------------------------------------------------------------------------
# Flash: sf, mmc, nand, virtio, CFI


@pytest.fixture
def nor(tmp_path: Path) -> Path:
    path = tmp_path / "nor.bin"
    path.write_bytes(pseudo_random("sim-uboot/nor", 2 * MIB))
    return path


def test_sf_probe_read_erase_write_update(nor: Path) -> None:
    content = nor.read_bytes()
    board = fast(sf=SpiNor(nor, name="sst25vf016b"))
    with session(board) as (_sim, con):
        assert out(con, f"sf read {RAM:#x} 0 0x100") == (
            "No SPI flash selected. Please run `sf probe'\n"
        )
        assert status(con) == 1
        assert out(con, "sf probe") == (
            "SF: Detected sst25vf016b with page size 256 Bytes, erase size 4 KiB, total 2 MiB\n"
        )
        assert out(con, "sf probe 1:0") == "Failed to initialize SPI flash at 1:0 (error -19)\n"
        out(con, "sf probe 0:0")
        assert out(con, f"sf read {RAM:#x} 0x1000 0x100") == (
            "device 0 offset 0x1000, size 0x100\nSF: 256 bytes @ 0x1000 Read: OK\n"
        )
        assert out(con, f"crc32 {RAM:#x} 0x100") == crc_line(
            RAM, 0x100, zlib.crc32(content[0x1000:0x1100])
        )
        assert out(con, f"sf read {RAM:#x} 0 0x200000").startswith("device 0 whole chip\n")
        assert out(con, f"crc32 {RAM:#x} 0x200000") == crc_line(RAM, 0x200000, zlib.crc32(content))
        assert out(con, "sf erase 0x10800 0x1000") == "SF: 4096 bytes @ 0x10800 Erased: ERROR -22\n"
        assert status(con) == 1
        assert out(con, "sf erase 0x10000 0x800") == "SF: 2048 bytes @ 0x10000 Erased: ERROR -22\n"
        assert nor.read_bytes() == content
        assert out(con, "sf erase 0x10000 +0x800") == "SF: 4096 bytes @ 0x10000 Erased: OK\n"
        assert nor.read_bytes()[0x10000:0x11000] == b"\xff" * 0x1000
        out(con, f"mw.b {RAM:#x} 0x5a 0x1000")
        assert out(con, f"sf write {RAM:#x} 0x10000 0x1000") == (
            "device 0 offset 0x10000, size 0x1000\nSF: 4096 bytes @ 0x10000 Written: OK\n"
        )
        assert nor.read_bytes()[0x10000:0x11000] == b"\x5a" * 0x1000
        out(con, f"mw.b {RAM:#x} 0xa5 0x1000")
        out(con, f"sf write {RAM:#x} 0x10000 0x1000")  # not erased: bits only go 1 -> 0
        assert nor.read_bytes()[0x10000:0x11000] == b"\x00" * 0x1000
        shown = out(con, f"sf update {RAM:#x} 0x20800 0x1000")
        assert re.fullmatch(
            r"device 0 offset 0x20800, size 0x1000\n"
            r"\r4096 bytes written, 0 bytes skipped in \d+\.\d+s, speed \d+ B/s\n",
            shown,
        )
        assert nor.read_bytes()[0x20800:0x21800] == b"\xa5" * 0x1000
        assert nor.read_bytes()[0x20000:0x20800] == content[0x20000:0x20800]
        past = out(con, f"sf read {RAM:#x} 0x1ff000 0x2000")
        assert past.startswith("Size exceeds partition or device limit\nsf - SPI flash sub-system")


def test_sf_partition_names_come_from_mtdparts(nor: Path) -> None:
    env = {"mtdids": "nor0=spi0.0", "mtdparts": "mtdparts=spi0.0:64k(uboot),-(rootfs)"}
    with session(fast(sf=SpiNor(nor, erase_bytes=64 * KIB), env=env)) as (_sim, con):
        out(con, "sf probe")
        assert out(con, f"sf read {RAM:#x} rootfs 0x100") == (
            "device 0 offset 0x10000, size 0x100\nSF: 256 bytes @ 0x10000 Read: OK\n"
        )
        assert out(con, f"sf read {RAM:#x} nor0,1 0x100").startswith(
            "device 0 offset 0x10000, size 0x100\n"
        )
        assert out(con, f"sf read {RAM:#x} nor0,7 0x100").startswith(
            "no such partition\nsf - SPI flash sub-system\n\nUsage:\n"
        )
        assert out(con, f"sf read {RAM:#x} bogus 0x100").startswith(
            "incorrect device type in bogus"
        )
        listing = out(con, "mtdparts")
        assert " 1: rootfs              0x001f0000\t0x00010000\t0\n" in listing
        assert "\nactive partition: nor0,0 - (uboot) 0x00010000 @ 0x00000000\n" in listing


@pytest.fixture
def emmc(tmp_path: Path) -> Emmc:
    paths = [tmp_path / name for name in ("user.img", "boot0.img", "boot1.img")]
    for path, size in zip(paths, (4 * MIB, 512 * KIB, 512 * KIB), strict=True):
        path.write_bytes(pseudo_random(f"sim-uboot/{path.stem}", size))
    return Emmc(paths[0], paths[1], paths[2])


def test_mmc_boot_partition_read_decimal_messages(emmc: Emmc) -> None:
    assert emmc.boot0 is not None
    boot0 = emmc.boot0.read_bytes()
    with session(fast(mmc=(emmc,))) as (_sim, con):
        assert out(con, "mmc dev 0 1") == (
            "switch to partitions #1, OK\nmmc0(part 1) is current device\n"
        )
        assert out(con, f"mmc read {RAM:#x} 0x10 0x20") == (
            "\nMMC read: dev # 0, block # 16, count 32 ... 32 blocks read: OK\n"
        )
        assert out(con, f"crc32 {RAM:#x} 0x4000") == crc_line(
            RAM, 0x4000, zlib.crc32(boot0[0x2000:0x6000])
        )
        assert out(con, f"mmc read {RAM:#x} 0x3ff 0x10") == (
            "\nMMC read: dev # 0, block # 1023, count 16 ... "
            "MMC: block number 0x40f exceeds max(0x400)\n0 blocks read: ERROR\n"
        )
        assert status(con) == 1
        info = out(con, "mmc info")
        assert "\nCapacity: 512 KiB\n" in info and "\nUser Capacity: 4 MiB\n" in info
        assert "\nBoot Capacity: 512 KiB\n" in info
        assert out(con, "mmc dev 0 3") == "switch to partitions #3, ERROR\n"
        assert (
            out(con, "mmc dev 0") == "switch to partitions #0, OK\nmmc0(part 0) is current device\n"
        )
        out(con, f"mw.b {RAM:#x} 0x77 0x400")
        assert out(con, f"mmc write {RAM:#x} 0x2 0x2") == (
            "\nMMC write: dev # 0, block # 2, count 2 ... 2 blocks written: OK\n"
        )
        assert emmc.user.read_bytes()[0x400:0x800] == b"\x77" * 0x400


def test_nand_read_skips_bad_blocks_and_the_data_shifts(tmp_path: Path) -> None:
    path = tmp_path / "nand.bin"
    content = pseudo_random("sim-uboot/nand", 2 * MIB)
    path.write_bytes(content)
    spec = Nand(path, erase_bytes=128 * KIB, bad_blocks=frozenset({0x40000}))
    with session(fast(nand=spec)) as (_sim, con):
        assert b"\r\nNAND:  2 MiB\r\n" in con.received
        assert out(con, f"nand read {RAM:#x} 0 0x80000") == (
            "\nNAND read: device 0 offset 0x0, size 0x80000\n"
            "Skipping bad block 0x00040000\n 524288 bytes read: OK\n"
        )
        shifted = content[:0x40000] + content[0x60000:0xA0000]
        assert out(con, f"crc32 {RAM:#x} 0x80000") == crc_line(RAM, 0x80000, zlib.crc32(shifted))
        assert out(con, "nand bad") == "\nDevice 0 bad blocks:\n  00040000\n"
        assert out(con, f"nand read {RAM:#x} 0x100 0x800") == (
            "\nNAND read: device 0 offset 0x100, size 0x800\n"
            "Attempt to read non page-aligned data\n 0 bytes read: ERROR\n"
        )
        erased = out(con, "nand erase 0x20000 0x40000")
        assert erased.startswith("\nNAND erase: device 0 offset 0x20000, size 0x40000\n")
        # The bad block counts towards the length (no .spread), so the progress stops at 50 %.
        assert erased.endswith(
            "\rErasing at 0x20000 --  50% complete."
            f"\rSkipping bad block at  0x00040000{' ' * 42}\n\nOK\n"
        )
        after = path.read_bytes()
        assert after[0x20000:0x40000] == b"\xff" * 0x20000
        assert after[0x40000:0x60000] == content[0x40000:0x60000]  # bad: left alone
        assert after[0x60000:0x80000] == content[0x60000:0x80000]  # the range counted it


def test_virtio_read_write_and_part_list(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    sparse_file(disk, 8 * MIB)
    write_gpt(disk, [GptPartition("boot", MIB, MIB), GptPartition("data", 2 * MIB, 5 * MIB)],
              sector_bytes=512, key="sim-uboot/gpt")  # fmt: skip
    with disk.open("r+b") as f:
        f.seek(MIB)
        f.write(pseudo_random("sim-uboot/virtio", 64 * KIB))
    content = disk.read_bytes()
    with session(fast(virtio=(VirtioDisk(disk),))) as (_sim, con):
        assert out(con, "virtio scan") == ""
        assert out(con, "virtio info") == (
            "Device 0: 1af4 VirtIO Block Device\n            Type: Hard Disk\n"
            "            Capacity: 8.0 MB = 0.0 GB (16384 x 512)\n"
        )
        assert out(con, f"virtio read {RAM:#x} 0x800 0x80") == (
            "\nvirtio read: device 0 block # 2048, count 128 ... 128 blocks read: OK\n"
        )
        assert out(con, f"crc32 {RAM:#x} 0x10000") == crc_line(
            RAM, 0x10000, zlib.crc32(content[MIB : MIB + 0x10000])
        )
        assert out(con, f"virtio read {RAM:#x} 0x3ff0 0x20").endswith("-5 blocks read: ERROR\n")
        assert status(con) == 1
        listing = out(con, "part list virtio 0")
        assert listing.startswith(
            "\nPartition Map for VirtIO device 0  --   Partition Type: EFI\n\n"
            "Part\tStart LBA\tEnd LBA\t\tName\n\tAttributes\n\tType GUID\n\tPartition GUID\n"
            '  1\t0x00000800\t0x00000fff\t"boot"\n\tattrs:\t0x0000000000000000\n\ttype:\t'
        )
        assert '\n  2\t0x00001000\t0x000037ff\t"data"\n' in listing
        out(con, f"mw.b {RAM:#x} 0xee 0x400")
        assert out(con, f"virtio write {RAM:#x} 0x3000 0x2").endswith("2 blocks written: OK\n")
        assert disk.read_bytes()[0x600000:0x600400] == b"\xee" * 0x400


def test_cfi_nor_write_bug_done_yet_only_4k_stuck(tmp_path: Path) -> None:
    image = tmp_path / "cfi.img"
    image.write_bytes(b"\xff" * 4 * MIB)
    base = 0x08000000
    cfi = CfiFlash(base, image, protected_sectors=frozenset({31}))
    with session(fast(cfi=(cfi,), cfi_write_bug=True)) as (_sim, con):
        assert b"\r\nFlash: 4 MiB\r\n" in con.received
        info = out(con, "flinfo")
        assert info.startswith(
            "\nBank # 1: CFI conformant flash (16 x 16)  Size: 4 MB in 32 Sectors\n"
        )
        assert "  083E0000   RO \n" in info
        out(con, f"mw.l {RAM:#x} 0x12345678 0x1000")
        assert out(con, f"erase {base:#x} +0x4000") == "\n. done\nErased 1 sectors\n"
        assert out(con, f"cp.b {RAM:#x} {base:#x} 0x4000") == "Copy to Flash... done\n"
        assert status(con) == 0
        assert out(con, f"cmp.b {RAM:#x} {base:#x} 0x4000") == (
            f"byte at 0x{RAM + 0x1000:08x} (0x78) != byte at 0x{base + 0x1000:08x} (0xff)\n"
            "Total of 4096 byte(s) were the same\n"
        )
        assert status(con) == 1
        assert out(con, f"md.l {base + 0xFF8:#x} 4") == (
            f"{base + 0xFF8:08x}: 12345678 12345678 ffffffff ffffffff  xV4.xV4.........\n"
        )
        assert image.read_bytes()[:0x1000] == bytes.fromhex("78563412") * 0x400
        assert image.read_bytes()[0x1000:0x4000] == b"\xff" * 0x3000
        assert out(con, f"cp.b {RAM:#x} {base:#x} 0x10") == "Copy to Flash... done\n"  # same bits
        out(con, f"mw.b {RAM + 0x8000:#x} 0xff 0x10")
        assert out(con, f"cp.b {RAM + 0x8000:#x} {base:#x} 0x10") == (
            "Copy to Flash... Flash not Erased\n"
        )
        assert out(con, f"cp.b {RAM:#x} {base + 0x3E0000:#x} 0x10") == (
            "Copy to Flash... Can't write to protected Flash sectors\n"
        )
        assert out(con, f"erase {base + 0x3E0000:#x} +0x20000") == (
            "- Warning: 1 protected sectors will not be erased!\n done\nErased 1 sectors\n"
        )
        assert out(con, f"protect off {base + 0x3E0000:#x} +0x20000") == "Un-Protected 1 sectors\n"
        assert out(con, "mtd list").startswith(
            "List of MTD devices:\n* nor0\n  - device: flash@0\n  - parent: root_driver\n"
        )


# ---------------------------------------------------------------------------------------------
# Serial loads


def _modem(con: SerialConsole) -> xmodem.XMODEM:
    def getc(size: int, timeout: float = 1) -> bytes | None:
        deadline = time.monotonic() + timeout
        while len(con._pending) < size and time.monotonic() < deadline:
            con._read_some()
        if len(con._pending) < size:
            return None
        data = bytes(con._pending[:size])
        del con._pending[:size]
        return data

    def putc(data: bytes, timeout: float = 1) -> int:
        con.write(data)
        return len(data)

    return xmodem.XMODEM(getc, putc, mode="xmodem1k")


def test_loadx_receives_xmodem_1k() -> None:
    payload = pseudo_random("sim-uboot/loadx", 10 * KIB + 100)
    with session(fast()) as (_sim, con):
        con.type_line("loadx 0x40500000")
        assert con.read_until(b"C", 5) == (
            b"\r\n## Ready for binary (xmodem) download to 0x40500000 at 115200 bps...\r\nC"
        )
        assert _modem(con).send(io.BytesIO(payload), quiet=True)
        # EOT is acknowledged twice: one ACK is left over for the reader.
        assert con.read_until(PROMPT, 10, quiet_s=0.3) == (
            b"\x06## Total Size      = 0x00002864 = 10340 Bytes\r\n"
            b"## Start Addr      = 0x40500000\r\n=> "
        )
        assert out(con, f"crc32 0x40500000 {len(payload):#x}") == crc_line(
            0x40500000, len(payload), zlib.crc32(payload)
        )
        assert out(con, "printenv filesize") == "filesize=2864\n"
        # U-Boot strips trailing 0x1A from ANY block ending in three (QEMU: the same): data
        # ending so is cut, and a middle block's loss shifts everything after it.
        con.type_line("loadx 0x40600000")
        con.read_until(b"C", 5)
        assert _modem(con).send(io.BytesIO(b"abc" + b"\x1a" * 3), quiet=True)
        assert b"= 0x00000003 = 3 Bytes" in con.read_until(PROMPT, 10, quiet_s=0.3)
        trap = bytes(range(256)) * 3 + bytes(253) + b"\x1a" * 3 + bytes(range(7, 256, 7)) * 30
        con.type_line("loadx 0x40700000")
        con.read_until(b"C", 5)
        assert _modem(con).send(io.BytesIO(trap[:2048]), quiet=True)
        assert b"= 0x000007fd = 2045 Bytes" in con.read_until(PROMPT, 10, quiet_s=0.3)
        assert out(con, "md.b 0x407003f8 0x8") == (
            "407003f8: 00 00 00 00 00 07 0e 15" + " " * 24 + "  ........\n"
        )


def _ymodem_send(con: SerialConsole, name: bytes, data: bytes) -> bytes:
    """A minimal YMODEM-1K batch sender; returns every byte the receiver sent meanwhile."""
    seen = bytearray()

    def wait_for(wanted: bytes) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if con._pending:
                byte = con._pending[0]
                del con._pending[0]
                seen.append(byte)
                if byte in wanted:
                    return
            else:
                con._read_some()
        raise TimeoutError(f"no {wanted!r} in {bytes(seen)!r}")

    def block(number: int, payload: bytes, size: int) -> bytes:
        payload = payload.ljust(size, b"\x1a" if number else b"\0")
        head = bytes([0x02 if size == 1024 else 0x01, number & 0xFF, 0xFF - (number & 0xFF)])
        return head + payload + binascii.crc_hqx(payload, 0).to_bytes(2, "big")

    wait_for(b"C")
    con.write(block(0, name + b"\0" + str(len(data)).encode() + b" 0 0", 128))
    wait_for(b"\x06")
    wait_for(b"C")
    for pos in range(0, len(data), 1024):
        con.write(block(pos // 1024 + 1, data[pos : pos + 1024], 1024))
        wait_for(b"\x06")
    con.write(b"\x04")
    wait_for(b"\x06")
    wait_for(b"C")
    con.write(block(0, b"", 128))
    wait_for(b"\x06")
    return bytes(seen)


def test_loady_receives_ymodem_with_exact_length() -> None:
    payload = pseudo_random("sim-uboot/loady", 5000)
    with session(fast()) as (_sim, con):
        con.type_line("loady 0x40500000")
        seen = _ymodem_send(con, b"x.bin", payload)
        # As the real one (QEMU): the ACK of block 0, a C only after a timeout, the blocks'
        # ACKs, EOT acknowledged twice, C, the end-of-batch block's ACK.
        assert seen.endswith(b"bps...\r\nC\x06C" + b"\x06" * 5 + b"\x06\x06C\x06")
        assert con.read_until(PROMPT, 10, quiet_s=0.3) == (
            b"## Total Size      = 0x00001388 = 5000 Bytes\r\n"
            b"## Start Addr      = 0x40500000\r\n=> "
        )
        assert out(con, "crc32 0x40500000 0x1388") == crc_line(
            0x40500000, 5000, zlib.crc32(payload)
        )


def test_loadx_cancelled_by_three_ctrl_c() -> None:
    with session(fast(xyz_char_timeout_s=2.0)) as (_sim, con):
        con.type_line("loadx")
        con.read_until(b"0x40200000 at 115200 bps...\r\nC", 5)
        con.write(b"\x03\x03\x03")
        assert con.read_until(PROMPT, 5, quiet_s=0.3) == (
            b"\r\nCancelled\r\n## Binary (xmodem) download aborted\r\n=> "
        )
        assert status(con) == 1


# ---------------------------------------------------------------------------------------------
# Faults and pacing


def test_garbled_and_dropped_lines_are_counted_exactly() -> None:
    faults = ConsoleFaults(seed=5)
    with session(fast(), faults=faults) as (sim, con):
        put_pattern(con, RAM, PATTERN * 4, "little")
        clean = expected_md(RAM, (PATTERN * 4)[:0x100], 4, "little")
        assert out(con, f"md.l {RAM:#x} 0x40").splitlines() == clean
        sim.faults.garble_line_rate = 1.0
        sim.faults.max_faults = 3
        shown = SerialConsole.output(con.command(f"md.l {RAM:#x} 0x40")).split("\n")[:-1]
        assert sum(a != b for a, b in zip(shown, clean, strict=False)) >= 1
        assert faults.injected == {"garble_line": 3}
        assert out(con, f"md.l {RAM:#x} 0x40").splitlines() == clean  # max reached
        faults.max_faults = 5
        faults.garble_line_rate = 0.0
        faults.drop_line_rate = 1.0
        shown = out(con, f"md.l {RAM:#x} 0x40").splitlines()
        assert len(shown) == 14 and set(shown) <= set(clean)
        assert faults.injected == {"garble_line": 3, "drop_line": 2}


def test_reset_during_md_and_wrong_crc_fire_once() -> None:
    faults = ConsoleFaults(wrong_crc_rate=1.0, max_faults=1, seed=3)
    with session(fast(), faults=faults) as (sim, con):
        put_pattern(con, RAM, PATTERN, "little")
        right = crc_line(RAM, 0x48, zlib.crc32(PATTERN))
        wrong = out(con, f"crc32 {RAM:#x} 0x48")
        assert wrong != right and wrong.startswith(right[:33])
        assert out(con, f"crc32 {RAM:#x} 0x48") == right
        assert out(con, f"md.l {RAM:#x} 0x12").startswith(f"{RAM:08x}: 44332211 ")
        faults.reset_during_md_rate = 1.0
        faults.max_faults = 2
        con.type_line("md.l 0x40000000 0x4000")
        data = con.read_until(b"Hit any key to stop autoboot", 10)
        assert b"\r\n\r\nU-Boot 2023.01 (" in data and b"40000000: " in data
        md_line = re.compile(rb"4000[0-9a-f]{4}: [0-9a-f ]{35}  .{16}", re.DOTALL)
        whole = [line for line in data.split(b"\r\n") if md_line.fullmatch(line)]
        assert 0 < len(whole) < 0x1000 and b"\n=> " not in data  # cut short, no prompt
        assert sim.resets == 1
        assert faults.injected == {"wrong_crc": 1, "reset_during_md": 1}


def test_a_lost_input_character_shows_in_the_echo() -> None:
    faults = ConsoleFaults()
    with session(fast(), faults=faults) as (sim, con):
        faults.drop_input_char_rate = 1.0
        faults.max_faults = 1
        con.write(b"version\r")
        data = con.read_until(PROMPT, 5, quiet_s=0.3)
        assert data == b"ersion\r\nUnknown command 'ersion' - try 'help'\r\n=> "
        assert faults.injected == {"drop_input_char": 1}
        assert sim.log == ["ersion"]


def test_baud_rate_paces_output_and_input() -> None:
    faults = ConsoleFaults()
    with session(fast(), faults=faults) as (_sim, con):
        out(con, f"md.l {RAM:#x} 0x400")  # warm up, unpaced
        faults.baud = 115200
        start = time.monotonic()
        data = con.command(f"md.l {RAM:#x} 0x400")  # 256 lines, 16.7 k characters
        elapsed = time.monotonic() - start
        assert len(data) > 16_000
        assert elapsed > 0.7 * len(data) / 11520
        faults.baud = 9600
        line = "echo " + "x" * 95
        start = time.monotonic()
        con.write(line.encode())
        con.read_until(line.encode(), 10)
        assert time.monotonic() - start > 0.7 * len(line) / 960
        con.write(b"\r")
        con.read_until(PROMPT, 10, quiet_s=0.2)
