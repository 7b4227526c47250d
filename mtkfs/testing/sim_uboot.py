"""A U-Boot 2023.01 serial console on a loopback TCP port, for what QEMU's U-Boot cannot do.

Why: the ``uboot:`` transport is tested against the real U-Boot under QEMU
(:mod:`mtkfs.testing.qemu_uboot`), but QEMU's build has no ``sf``, ``mmc`` or ``nand``, only
little-endian output of the current style, and no way to misbehave on purpose. This simulator
answers like U-Boot 2023.01 byte for byte (checked against the QEMU transcripts in
``tests/data/uboot/qemu-2023.01`` and U-Boot's source) and adds what a test needs: SPI NOR,
eMMC, NAND with bad blocks, virtio, CFI NOR (with QEMU's write bug), big-endian boards, old
``md`` styles, and line faults (:class:`ConsoleFaults`).

Like QEMU's ``-serial tcp:…,server=on``, it serves ONE console; the transport opens
``socket://127.0.0.1:PORT``. The board powers on when the first client connects (sign-on
banner, autoboot countdown); a client that reconnects finds it as it was, like a re-plugged
serial cable. What the console does that a driver must survive, as the real one does:

* every typed character is echoed; output line ends are ``\\r\\n`` (the UART adds the ``\\r``);
* an EMPTY line re-runs the last line if all its commands were repeatable (md continues at
  the next address), so ``\\r\\n`` as a terminator runs commands twice;
* characters received while a command polls for Ctrl-C (``md`` after every line, ``sf erase``
  and CFI ``erase`` per sector, ``flinfo``, ``sleep``) are read and thrown away, one per poll;
  Ctrl-C stops ``md`` (``$?`` stays 0) and ``sf erase`` (``ERROR -4``);
* an access to an unmapped address crashes the board like arm64 (``"Synchronous Abort"``),
  which resets: banner and countdown again, RAM lost unless ``ram_survives_reset``.

The board runs in its own thread with its own trio loop (as :mod:`.sim_adbd` does), so plain
and trio tests can both use :func:`running_console`. The parts: ``sim_uboot_board`` (what a
board is made of, its memory, :func:`qemu_virt_board`), ``sim_uboot_machine`` (power-on,
autoboot, the shell), ``sim_uboot_cmds`` (md, mw, cp, cmp, crc32, env, info), ``sim_uboot_load``
(loadx, loady), ``sim_uboot_flash`` (sf, mmc, nand, virtio), ``sim_uboot_nor`` (CFI NOR, mtd,
mtdparts, part), ``sim_uboot_parts`` (GPT/MBR and mtdparts parsing).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mtkfs.testing.sim_uboot_board import (
    BoardReset,
    CfiFlash,
    Emmc,
    Nand,
    SimBoard,
    SpiNor,
    VirtioDisk,
    hextoul,
    qemu_virt_board,
)
from mtkfs.testing.sim_uboot_machine import Machine

__all__ = [
    "FAULT_KINDS",
    "CfiFlash",
    "ConsoleFaults",
    "Emmc",
    "Nand",
    "SimBoard",
    "SimConsole",
    "SpiNor",
    "VirtioDisk",
    "parse_console_faults",
    "qemu_virt_board",
    "running_console",
]

log = logging.getLogger(__name__)

FAULT_KINDS = ("garble_line", "drop_line", "reset_during_md", "wrong_crc", "drop_input_char")


@dataclass
class ConsoleFaults:
    """Line trouble to inject; change any field while the console runs.

    Rates are probabilities: ``garble_line_rate`` and ``drop_line_rate`` per ``md`` output line
    (one character flipped by a bit, dropped or doubled; the whole line dropped),
    ``reset_during_md_rate`` per ``md`` command (the board resets at a random line: partial
    output, then the banner), ``wrong_crc_rate`` per ``crc32`` (the printed value is wrong
    once), ``drop_input_char_rate`` per received character (lost before U-Boot sees it, so the
    echo misses it). ``baud``: pace output and input to ``baud`` bits/s at 10 bits per
    character (None: as fast as TCP goes). ``max_faults``: stop injecting after that many in
    all; ``injected`` counts them per kind (``garble_line``, ``drop_line``,
    ``reset_during_md``, ``wrong_crc``, ``drop_input_char``). ``seed`` seeds :attr:`rng`.
    """

    garble_line_rate: float = 0.0
    drop_line_rate: float = 0.0
    reset_during_md_rate: float = 0.0
    wrong_crc_rate: float = 0.0
    drop_input_char_rate: float = 0.0
    baud: int | None = None
    seed: int = 1
    max_faults: int | None = None
    injected: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    def roll(self, kind: str, rate: float) -> bool:
        """Whether to inject a fault of ``kind`` now (counted if so)."""
        if rate <= 0 or (self.max_faults is not None and self.total >= self.max_faults):
            return False
        if self.rng.random() >= rate:
            return False
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return True

    @property
    def md_faults(self) -> bool:
        return (self.garble_line_rate > 0 or self.drop_line_rate > 0) and (
            self.max_faults is None or self.total < self.max_faults
        )


_FAULT_ITEM = re.compile(r"^(garble|drop-line|reset|wrong-crc|drop-input|baud|seed|max)=([\d.]+)$")
_FAULT_FIELDS = {
    "garble": "garble_line_rate",
    "drop-line": "drop_line_rate",
    "reset": "reset_during_md_rate",
    "wrong-crc": "wrong_crc_rate",
    "drop-input": "drop_input_char_rate",
}


def parse_console_faults(text: str) -> ConsoleFaults:
    """``garble=0.001,drop-line=0.001,reset=0.01,wrong-crc=0.05,drop-input=0.01,baud=115200,
    seed=3,max=20`` → ConsoleFaults; ValueError on anything else."""
    faults = ConsoleFaults()
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _FAULT_ITEM.match(item)
        if match is None:
            raise ValueError(f"cannot read fault {item!r}")
        key, value = match.groups()
        if key in _FAULT_FIELDS:
            setattr(faults, _FAULT_FIELDS[key], float(value))
        elif key == "baud":
            faults.baud = int(value)
        elif key == "max":
            faults.max_faults = int(value)
        else:
            faults.seed = int(value)
            faults.rng = random.Random(faults.seed)
    return faults


# ---------------------------------------------------------------------------------------------
# The UART: one client at a time, paced both ways, faults on input


class _Uart:
    """Bytes between the board and the connected client. Output goes through a bounded channel
    to a writer task (what is queued leaves even if the CPU resets, like a TX FIFO); input is
    released to the CPU at the baud rate, minus the characters a fault drops."""

    def __init__(self, console: SimConsole) -> None:
        self.console = console
        self.stream: trio.SocketStream | None = None
        self.rx = bytearray()
        self._rx_lot = trio.lowlevel.ParkingLot()
        self._rx_clock = 0.0
        self._tx_clock = 0.0
        self.tx_send, self._tx_recv = trio.open_memory_channel[bytes](4)

    @property
    def faults(self) -> ConsoleFaults:
        return self.console.faults

    async def write(self, data: bytes) -> None:
        """Queue ``data`` (already CRLF-converted) for the client; blocks while the queue is
        full, i.e. while the client is slow to read."""
        for pos in range(0, len(data), 1 << 16):
            await self.tx_send.send(data[pos : pos + (1 << 16)])

    async def writer(self) -> None:
        async for data in self._tx_recv:
            pos = 0
            while pos < len(data):
                stream = self.stream
                if stream is None:
                    break
                baud = self.faults.baud
                if baud:
                    char_s = 10.0 / baud
                    piece = data[pos : pos + max(1, int(0.01 / char_s))]
                    now = trio.current_time()
                    self._tx_clock = max(self._tx_clock, now)
                    await trio.sleep_until(self._tx_clock)
                    self._tx_clock += len(piece) * char_s
                else:
                    piece = data[pos:]
                try:
                    await stream.send_all(piece)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.stream = None
                    break
                pos += len(piece)

    async def reader(self, stream: trio.SocketStream) -> None:
        """Receive from ``stream`` until it closes, releasing bytes at the baud rate."""
        while True:
            try:
                data = await stream.receive_some(4096)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            pos = 0
            while pos < len(data):
                baud = self.faults.baud
                if not baud:
                    self._deliver(data[pos:])
                    break
                char_s = 10.0 / baud
                piece = data[pos : pos + max(1, int(0.002 / char_s))]
                self._rx_clock = max(self._rx_clock, trio.current_time()) + len(piece) * char_s
                await trio.sleep_until(self._rx_clock)
                self._deliver(piece)
                pos += len(piece)

    def _deliver(self, data: bytes) -> None:
        faults = self.faults
        fifo = self.console.board.rx_fifo_chars
        for byte in data:
            if faults.drop_input_char_rate and faults.roll(
                "drop_input_char", faults.drop_input_char_rate
            ):
                continue
            if fifo is not None and len(self.rx) >= fifo:
                continue  # the UART's FIFO overflowed
            self.rx.append(byte)
        self._rx_lot.unpark_all()

    def getc_nowait(self) -> int | None:
        if not self.rx:
            return None
        byte = self.rx[0]
        del self.rx[0]
        return byte

    async def getc(self) -> int:
        while not self.rx:
            await self._rx_lot.park()
        byte = self.rx[0]
        del self.rx[0]
        return byte

    async def wait_input(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a character; True if one is there."""
        if not self.rx:
            with trio.move_on_after(timeout_s):
                while not self.rx:
                    await self._rx_lot.park()
        return bool(self.rx)


# ---------------------------------------------------------------------------------------------
# The console: a thread, a trio loop, a TCP port


class SimConsole:
    """A running simulated console. Connect a pyserial client to :attr:`url`.

    ``log``: every line the shell read (an empty string for an empty line); ``resets``: how
    many times the board reset (crash, ``reset``, a fault, :meth:`reset`). ``faults`` may be
    changed (or replaced) at any time.
    """

    def __init__(self, board: SimBoard, faults: ConsoleFaults) -> None:
        self.board = board
        self.faults = faults
        self.port = 0
        self.resets = 0
        self.connections = 0
        self._log: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._power_scope: trio.CancelScope | None = None
        self._powered = False
        self.uart: _Uart
        self.machine: Machine

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    @property
    def log(self) -> list[str]:
        with self._lock:
            return list(self._log)

    def record_line(self, line: str) -> None:
        with self._lock:
            self._log.append(line)

    def start(self, port: int = 0) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(port,), name="sim-uboot", daemon=True
        )
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("simulated U-Boot console did not start listening")
        if self._error is not None:
            raise RuntimeError("simulated U-Boot console failed to start") from self._error

    def stop(self) -> None:
        """Stop serving; the client's connection closes. Safe from any thread; idempotent."""
        if self._thread is None or self._token is None or self._stop is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._stop.set)
        self._thread.join(15)
        self._thread = None

    def reset(self) -> None:
        """Reset the board now (a watchdog, a power glitch): banner and countdown again, RAM
        lost unless the board keeps it. From any thread."""
        if self._token is None:
            return
        done = threading.Event()

        def request() -> None:
            if self._power_scope is not None:
                self._power_scope.cancel()
            done.set()

        self._token.run_sync_soon(request)
        done.wait(5)

    def _run(self, port: int) -> None:
        try:
            trio.run(self._main, port)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            log.exception("simulated U-Boot console crashed")

    async def _main(self, port: int) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self.uart = _Uart(self)
        self.machine = Machine(self)
        try:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            async with listeners[0] as listener, trio.open_nursery() as nursery:
                self.port = listener.socket.getsockname()[1]
                nursery.start_soon(self.uart.writer)
                nursery.start_soon(self._accept, listener, nursery)
                self._started.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.machine.close()

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """One client at a time, like QEMU's chardev: the next waits in the backlog."""
        while True:
            stream = await listener.accept()
            self.connections += 1
            self.uart.stream = stream
            if not self._powered:
                self._powered = True
                nursery.start_soon(self._board)
            try:
                await self.uart.reader(stream)
            finally:
                if self.uart.stream is stream:
                    self.uart.stream = None
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.aclose()

    async def _board(self) -> None:
        clear_ram = True
        while True:
            self.machine.power_on(clear_ram)
            with trio.CancelScope() as self._power_scope, contextlib.suppress(BoardReset):
                await self.machine.run()
            self.resets += 1
            clear_ram = not self.board.ram_survives_reset


@contextlib.contextmanager
def running_console(
    board: SimBoard, *, faults: ConsoleFaults | None = None, port: int = 0
) -> Iterator[SimConsole]:
    """A simulated U-Boot console for ``board`` on 127.0.0.1 (``port`` 0: any free one),
    stopped when the block exits. Writes land in the board's image files."""
    console = SimConsole(board, faults or ConsoleFaults())
    console.start(port)
    try:
        yield console
    finally:
        console.stop()


# ---------------------------------------------------------------------------------------------
# python -m mtkfs.testing.sim_uboot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtkfs.testing.sim_uboot",
        description="Serve a simulated U-Boot 2023.01 console on a TCP port (pyserial URL "
        "socket://127.0.0.1:PORT). Writes change the image files.",
    )
    parser.add_argument("--nor", type=Path, help="SPI NOR image (sf)")
    parser.add_argument(
        "--nor-erase",
        type=lambda s: int(s, 0),
        default=64 << 10,
        help="SPI NOR erase size (default 64 KiB)",
    )
    parser.add_argument(
        "--mmc", type=Path, nargs="+", metavar="IMAGE", help="eMMC user area [boot0 [boot1]] images"
    )
    parser.add_argument("--nand", type=Path, help="raw NAND image (no OOB)")
    parser.add_argument(
        "--bad-block",
        type=lambda s: int(s, 0),
        action="append",
        default=[],
        help="a bad NAND block's offset (repeatable)",
    )
    parser.add_argument("--virtio", type=Path, action="append", default=[], help="a virtio disk")
    parser.add_argument(
        "--cfi",
        action="append",
        default=[],
        metavar="BASE:IMAGE",
        help="memory-mapped CFI NOR bank",
    )
    parser.add_argument("--cfi-write-bug", action="store_true", help="QEMU's CFI write bug")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--baud", type=int, help="pace the line at this rate (bits/s)")
    parser.add_argument("--big-endian", action="store_true")
    parser.add_argument("--prompt", default="=> ")
    parser.add_argument("--old-md", action="store_true", help="four spaces before ASCII")
    parser.add_argument("--legacy-crc32", action="store_true", help="print 'CRC32 for'")
    parser.add_argument("--bootdelay", type=int, default=2)
    parser.add_argument("--faults", default="", help="e.g. garble=0.001,reset=0.01,seed=3")
    args = parser.parse_args(argv)
    cfi = []
    for spec in args.cfi:
        base, _, image = spec.partition(":")
        cfi.append(CfiFlash(base=hextoul(base), path=Path(image)))
    mmc: tuple[Emmc, ...] = ()
    if args.mmc:
        paths = [*args.mmc, None, None]
        mmc = (Emmc(user=paths[0], boot0=paths[1], boot1=paths[2]),)
    board = SimBoard(
        byte_order="big" if args.big_endian else "little",
        prompt=args.prompt,
        md_separator="    " if args.old_md else "  ",
        crc32_spelling="CRC32" if args.legacy_crc32 else "crc32",
        env={"bootdelay": str(args.bootdelay)},
        sf=None if args.nor is None else SpiNor(path=args.nor, erase_bytes=args.nor_erase),
        mmc=mmc,
        nand=None if args.nand is None else Nand(args.nand, bad_blocks=frozenset(args.bad_block)),
        virtio=tuple(VirtioDisk(path) for path in args.virtio),
        cfi=tuple(cfi),
        cfi_write_bug=args.cfi_write_bug,
    )
    faults = parse_console_faults(args.faults)
    if args.baud:
        faults.baud = args.baud
    with running_console(board, faults=faults, port=args.port) as console:
        print(f"U-Boot console at {console.url}  (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    print(f"{len(console.log)} lines, {console.resets} resets, faults {faults.injected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
