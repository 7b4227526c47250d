"""A board's flash through its U-Boot serial console, as regions (seed 003, as a transport).

What opening does: open the port (a tty with ``?baud=``, or any pyserial URL —
``socket://host:port`` for QEMU or a serial server, ``rfc2217://``), stop autoboot and learn the
prompt (:class:`~mtkfs.transports.uboot_console.Console`), learn the board (``printenv``,
``bdinfo``: a RAM staging area that U-Boot itself, the device tree and the reserved top of RAM
do not use; the CPU's byte order from ``md.b`` vs ``md.l`` of the same word), then select the
flash (``--flash`` or probed: :mod:`.uboot_flash`).

A read of one chunk (at most :attr:`chunk_bytes`):

1. the back-end copies the flash range into RAM (``sf read``, ``mmc read``…; nothing for
   memory-mapped NOR);
2. ``crc32`` of that RAM — U-Boot's own checksum of what it holds;
3. if the chunk is erased (0xFF) or empty (0x00) — told by the CRCs of its four quarters all
   matching that fill, 128 bits of evidence — no dump is needed at all (NOR partitions are
   mostly erased; a 16 MiB dump that takes 100 minutes at 115200 baud may take 10);
4. otherwise ``md.l`` (``md.q`` on 64-bit boards: 3 % fewer characters) dumps the RAM; every line
   is parsed strictly and the words turned into bytes in the board's byte order — never left
   for the user to byte-swap, as seed 003's dump had to be;
5. the bytes' CRC must equal U-Boot's. A mismatch or a garbled line dumps the RAM again (the
   flash read was fine); a board reset (banner, crash) attaches again and redoes the chunk;
   after :data:`MAX_ATTEMPTS` the read fails with EIO naming the offset.

:meth:`checksum` is steps 1–2 alone, so the persistent cache (on by default for this
transport: a dump is hours) revalidates a chunk with one short command instead of a dump.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import trio

from mtkfs.errors import (
    BadBlockError,
    MtkfsError,
    ReadOnlyError,
    SourceError,
    TransportError,
    VerifyError,
)
from mtkfs.links.base import Link
from mtkfs.links.serial import open_serial
from mtkfs.links.tcp import TcpLink
from mtkfs.maps.model import PartitionMap, Region
from mtkfs.protocols import uboot
from mtkfs.transports.base import Transport
from mtkfs.transports.uboot_console import BoardResetError, Console
from mtkfs.transports.uboot_flash import (
    Backend,
    FlashSpec,
    MmcBackend,
    make_backend,
    probe_backend,
)
from mtkfs.transports.uboot_load import BLOCK_BYTES, send_ymodem

log = logging.getLogger(__name__)

#: Bytes per chunk: one garbled line costs one chunk's dump again (23 s at 115200 for 64 KiB),
#: and one crc32 per chunk costs under 0.1 % of its dump (reference uboot.md §4.5).
DEFAULT_CHUNK_BYTES = 64 << 10
#: Tries per chunk (dumps, resets, lost echoes together) before the read fails with EIO.
MAX_ATTEMPTS = 8
#: Board resets survived per chunk before giving up (a watchdog that fires faster than a chunk
#: can be dumped would loop forever otherwise).
MAX_RESETS = 4
_FILLS = (b"\xff", b"\x00")


@dataclass(frozen=True)
class UbootOptions:
    """How to reach and use the console (``mtkfs mount uboot:… --flash … --ram …``)."""

    flash: FlashSpec | None = None
    ram_address: int | None = None
    prompt: str | None = None
    stop_key: str | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    io_timeout_s: float = 10.0
    wait_s: float = 30.0


async def open_console_link(target: str) -> Link:
    """``socket://HOST:PORT`` natively over TCP; anything else (a tty path with ``?baud=N``,
    ``rfc2217://``, ``loop://``) through pyserial."""
    match = re.fullmatch(r"socket://([^:/?]+):(\d{1,5})", target)
    if match:
        return await TcpLink.connect(match.group(1), int(match.group(2)), what="U-Boot console")
    path, _, query = target.partition("?")
    baud = 115200
    if query and "://" not in target:
        found = re.fullmatch(r"baud=(\d{3,8})", query)
        if found is None:
            raise SourceError(f"uboot:{target}: expected PATH?baud=N (e.g. ?baud=115200)")
        baud = int(found.group(1))
        target = path
    return await open_serial(target, baudrate=baud)


class UbootTransport(Transport):
    """The flash behind a U-Boot console. Open with :meth:`open`."""

    def __init__(
        self,
        console: Console,
        backend: Backend,
        regions: dict[str, int],
        *,
        target: str,
        options: UbootOptions,
        ram: int,
        byte_order: Literal["little", "big"],
        md_width: int,
        env: dict[str, str],
    ) -> None:
        self.console = console
        self.backend = backend
        self.target = target
        self.options = options
        self.ram = ram
        self.byte_order = byte_order
        self.md_width = md_width
        self.env = env
        self.regions = {name: Region(name, size) for name, size in regions.items()}
        self.device_id = f"uboot:{target}:{backend.kind}:" + ",".join(
            f"{n}={s}" for n, s in sorted(regions.items())
        )
        self.description = (
            f"U-Boot console at {target} ({backend.description or backend.kind}; prompt "
            f"{console.prompt!r}, {byte_order}-endian, staging RAM at {ram:#x})"
        )
        self.mtime_s = 0.0
        self.chunk_bytes = options.chunk_bytes
        self.max_request_bytes = options.chunk_bytes
        self.readahead_max_bytes = options.chunk_bytes
        self.kernel_readahead_bytes = options.chunk_bytes
        self.has_checksum = True
        # GPT and MBR headers, PMT signature probes: yes; a 10 MiB PMT scan: not at 2.8 KB/s.
        self.probe_limit_bytes = 256 << 10
        self._lock = trio.Lock()
        self.dumps = 0
        self.redumps = 0
        self.reattaches = 0
        self.erased_chunks = 0
        self.crc_commands = 0
        self.bytes_read = 0
        self.bytes_written = 0

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, target: str, *, writable: bool = False, options: UbootOptions | None = None
    ) -> UbootTransport:
        options = options or UbootOptions()
        if options.chunk_bytes % 512 or not 4096 <= options.chunk_bytes <= 1 << 20:
            raise SourceError("the chunk size must be a multiple of 512 from 4 KiB to 1 MiB")
        link = await open_console_link(target)
        try:
            key = uboot.CTRL_C
            if options.stop_key is not None:
                if (
                    not options.stop_key.isascii()
                    or not options.stop_key.isprintable()
                    or not 0 < len(options.stop_key) <= 32
                ):
                    raise SourceError("--stop-key: 1 to 32 printable characters")
                key = options.stop_key.encode("ascii", "strict")
            console = Console(
                link, prompt=options.prompt, io_timeout_s=options.io_timeout_s, stop_key=key
            )
            await console.attach(options.wait_s)
            env = uboot.parse_env(await console.run("printenv"))
            board = uboot.parse_bdinfo(await console.run("bdinfo"))
            if options.flash is not None:
                backend = make_backend(options.flash)
                regions = await backend.probe(console)
            else:
                backend, regions = await probe_backend(console)
            stage = staging_bytes(options.chunk_bytes, backend.erase_bytes)
            ram = uboot.choose_staging(env, board, 2 * stage, options.ram_address)
            byte_order = await _byte_order(console, ram)
            md_width = 8 if await _has_md_q(console, ram) else 4
        except BaseException:
            await link.aclose()
            raise
        transport = cls(
            console, backend, regions, target=target, options=options, ram=ram,
            byte_order=byte_order, md_width=md_width, env=env,
        )  # fmt: skip
        transport.writable = writable
        return transport

    # -- reading ------------------------------------------------------------------------------

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        size_bytes = max(0, min(size_bytes, self.regions[region].size_bytes - offset_bytes))
        out = bytearray()
        async with self._lock:
            for start in range(offset_bytes, offset_bytes + size_bytes, self.chunk_bytes):
                length = min(self.chunk_bytes, offset_bytes + size_bytes - start)
                out += await self._with_retries(
                    f"reading {region}+{start:#x} ({length} bytes)",
                    lambda s=start, n=length: self._read_chunk(region, s, n),
                )
        self.bytes_read += len(out)
        return bytes(out)

    async def _with_retries(self, what: str, attempt: Any) -> Any:
        """Run ``attempt`` until it succeeds; resets re-attach; EIO after the limits."""
        resets = 0
        last: MtkfsError | None = None
        for _ in range(MAX_ATTEMPTS):
            try:
                return await attempt()
            except BadBlockError:
                raise  # the flash, not the line: trying again gives the same answer
            except BoardResetError as exc:
                last, resets = exc, resets + 1
                if resets > MAX_RESETS:
                    break
                await self._reattach()
            except TransportError as exc:
                last = exc
                log.info("%s: %s; trying again", what, exc)
        raise TransportError(f"{what} through U-Boot failed {MAX_ATTEMPTS} times: {last}")

    async def _reattach(self) -> None:
        """After a reset: stop autoboot again and select the flash again (RAM is gone)."""
        self.reattaches += 1
        log.warning("%s: the board reset; attaching again", self.target)
        await self.console.attach(self.options.wait_s)
        if isinstance(self.backend, MmcBackend):
            self.backend.forget()
        await self.backend.probe(self.console)

    async def _load(self, region: str, offset: int, size: int) -> tuple[int, int, int]:
        """The range in RAM: (address of the wanted bytes, aligned start, aligned length)."""
        align = self.backend.align_bytes
        start = offset - offset % align
        end = -(-(offset + size) // align) * align
        end = min(end, self.regions[region].size_bytes)
        address = await self.backend.load(self.console, region, start, end - start, self.ram)
        return address + (offset - start), start, end - start

    async def _crc(self, address: int, size: int) -> int:
        self.crc_commands += 1
        output = await self.console.run(uboot.crc32_command(address, size))
        first, last, crc = uboot.parse_crc32(output)
        if (first, last) != (address, address + size - 1):
            raise TransportError(
                f"crc32 answered for {first:#x}..{last:#x}, not {address:#x}+{size:#x}"
            )
        return crc

    async def _read_chunk(self, region: str, offset: int, size: int) -> bytes:
        address, _, _ = await self._load(region, offset, size)
        crc = await self._crc(address, size)
        filled = await self._filled(address, size, crc)
        if filled is not None:
            self.erased_chunks += 1
            return filled
        for dump in range(MAX_ATTEMPTS):
            self.dumps += 1
            self.redumps += dump > 0
            try:
                data = await self._dump(address, size)
            except BoardResetError:
                raise
            except TransportError as exc:
                log.info("md of %s+%#x: %s; dumping again", region, offset, exc)
                continue
            if zlib.crc32(data) == crc:
                return data
            log.info("md of %s+%#x: CRC %08x, U-Boot says %08x; dumping again",
                     region, offset, zlib.crc32(data), crc)  # fmt: skip
        raise TransportError(
            f"{region}+{offset:#x}: {MAX_ATTEMPTS} dumps never matched U-Boot's crc32 {crc:08x}"
        )

    async def _filled(self, address: int, size: int, crc: int) -> bytes | None:
        """The chunk's bytes if it is all 0xFF or all 0x00: its CRC and its four quarters'
        CRCs (the last three asked only when the first matched) equal those of the fill."""
        for fill in _FILLS:
            if zlib.crc32(fill * size) != crc:
                continue
            if size % 64:
                return None
            quarter = size // 4
            for index in range(4):
                got = await self._crc(address + index * quarter, quarter)
                if got != zlib.crc32(fill * quarter):
                    return None
            return fill * size
        return None

    async def _dump(self, address: int, size: int) -> bytes:
        width = self.md_width if address % self.md_width == 0 and size % self.md_width == 0 else 4
        if address % width or size % width:
            width = 1
        output = await self.console.run(uboot.md_command(address, size, width))
        return uboot.parse_md(output, address, size, width, self.byte_order)

    async def checksum(self, region: str, offset_bytes: int, size_bytes: int) -> int | None:
        """zlib CRC-32 of the range as U-Boot computes it from the flash (load + ``crc32``)."""
        async with self._lock:

            async def attempt() -> int:
                address, _, _ = await self._load(region, offset_bytes, size_bytes)
                return await self._crc(address, size_bytes)

            crc: int = await self._with_retries(f"checksum of {region}+{offset_bytes:#x}", attempt)
            return crc

    # -- writing ------------------------------------------------------------------------------

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """Store ``data``: per piece (an erase block, or a chunk where the flash needs no
        erase), ``loady`` into RAM with YMODEM-1K, ``crc32`` of that RAM equal to the host's,
        erase + write (:meth:`Backend.store`), then the flash loaded into a second RAM buffer
        and its ``crc32`` equal again — U-Boot's "OK"/"done" is never taken as proof. Partial
        erase blocks are read first and written back whole (read-modify-write)."""
        if not self.writable:
            raise ReadOnlyError(f"{self.description} was opened read-only")
        erase = self.backend.erase_bytes
        unit = erase or self.backend.align_bytes
        start = offset_bytes - offset_bytes % unit
        end = -(-(offset_bytes + len(data)) // unit) * unit
        if end > self.regions[region].size_bytes:
            raise TransportError(f"write past the end of {region}")
        piece_bytes = erase or self.chunk_bytes
        async with self._lock:
            whole = bytearray()
            if start < offset_bytes:
                whole += await self._read_locked(region, start, offset_bytes - start)
            whole += data
            if offset_bytes + len(data) < end:
                tail = offset_bytes + len(data)
                whole += await self._read_locked(region, tail, end - tail)
            for at in range(start, end, piece_bytes):
                piece = bytes(whole[at - start : at - start + piece_bytes])
                await self._with_retries(
                    f"writing {region}+{at:#x} ({len(piece)} bytes)",
                    lambda a=at, p=piece: self._write_piece(region, a, p),
                )
        self.bytes_written += len(data)

    async def _read_locked(self, region: str, offset: int, size: int) -> bytes:
        out = bytearray()
        for at in range(offset, offset + size, self.chunk_bytes):
            length = min(self.chunk_bytes, offset + size - at)
            out += await self._with_retries(
                f"reading {region}+{at:#x} before a write",
                lambda a=at, n=length: self._read_chunk(region, a, n),
            )
        return bytes(out)

    async def _write_piece(self, region: str, offset: int, piece: bytes) -> None:
        command = uboot.loady_command(self.ram)
        before = await self.console.start(command, uboot.LOAD_READY)
        after_ready = before.split(uboot.LOAD_READY, 1)[1].split("\n", 1)[-1]
        try:
            await send_ymodem(
                self.console.link, piece, timeout_s=self.options.io_timeout_s,
                primed="C" in after_ready,
            )  # fmt: skip
        finally:
            output = await self.console.finish(command, before)
        total = uboot.parse_load_total(output)
        if total != len(piece):
            # A build without YMODEM's length support rounds up (and strips 0x1A): the RAM
            # crc32 below would catch it too, but this names the cause.
            raise TransportError(f"loady stored {total} bytes, not the {len(piece)} sent")
        expected = zlib.crc32(piece)
        if await self._crc(self.ram, len(piece)) != expected:
            raise TransportError(f"the bytes loaded into RAM at {self.ram:#x} are not those sent")
        await self.backend.store(self.console, region, offset, len(piece), self.ram)
        check_ram = self.ram + staging_bytes(self.chunk_bytes, self.backend.erase_bytes)
        address = await self.backend.load(self.console, region, offset, len(piece), check_ram)
        got = await self._crc(address, len(piece))
        if got != expected:
            raise VerifyError(
                f"{region}+{offset:#x}: after the write U-Boot's crc32 of the flash is {got:08x}, "
                f'not {expected:08x} — the flash did not take the data (U-Boot\'s "OK"/"done" '
                "is not proof)"
            )

    # -- the rest -----------------------------------------------------------------------------

    async def device_table(self) -> PartitionMap | None:
        """``mtdparts`` from U-Boot's environment (flash back-ends without a partition table);
        block devices carry their GPT/MBR, which discovery reads through :meth:`read`."""
        value = self.env.get("mtdparts", "")
        if not value or "flash" not in self.regions:
            return None
        from mtkfs.maps.mtd import parse_mtdparts

        try:
            pmap = parse_mtdparts(value, {"flash": self.regions["flash"]})
        except MtkfsError as exc:
            log.warning("U-Boot's mtdparts is unusable: %s", exc)
            return None
        return pmap

    def device_report(self) -> dict[str, Any]:
        return {
            "kind": "uboot",
            "console": self.target,
            "prompt": self.console.prompt,
            "flash": self.backend.kind,
            "flash_description": self.backend.description,
            "byte_order": self.byte_order,
            "staging_ram": f"{self.ram:#x}",
            "md_width": self.md_width,
            "version": self.env.get("ver", ""),
        }

    def stats(self) -> dict[str, int | float]:
        return {
            "uboot_commands": self.console.commands,
            "uboot_chars_sent": self.console.chars_sent,
            "uboot_chars_received": self.console.chars_received,
            "uboot_dumps": self.dumps,
            "uboot_redumps": self.redumps,
            "uboot_erased_chunks": self.erased_chunks,
            "uboot_crc_commands": self.crc_commands,
            "uboot_reattaches": self.reattaches,
            "uboot_bytes_read": self.bytes_read,
            "uboot_bytes_written": self.bytes_written,
        }

    async def aclose(self) -> None:
        """Leave the board at its prompt (nothing to undo) and close the port."""
        await self.console.link.aclose()


def staging_bytes(chunk_bytes: int, erase_bytes: int) -> int:
    """One staging buffer: a chunk or an erase block, whichever is larger, rounded up to whole
    1 KiB blocks (a receiver that ignores YMODEM's length stores them whole) plus a margin;
    the write check uses a second one right after it."""
    return -(-max(chunk_bytes, erase_bytes) // BLOCK_BYTES) * BLOCK_BYTES + 4096


async def _byte_order(console: Console, ram: int) -> Literal["little", "big"]:
    """Write a word with ``mw.l`` and read it back with ``md.b``: memory order tells."""
    await console.run(f"mw.l {ram:x} 11223344 1")
    md_b = await console.run(uboot.md_command(ram, 4, 1))
    md_l = await console.run(uboot.md_command(ram, 4, 4))
    return uboot.detect_byte_order(md_b, md_l, ram)


async def _has_md_q(console: Console, ram: int) -> bool:
    """``md.q`` exists on 64-bit builds (CONFIG_MEM_SUPPORT_64BIT_DATA)."""
    output = await console.run(uboot.md_command(ram, 8, 8))
    try:
        uboot.parse_md(output, ram, 8, 8, "little")
    except MtkfsError:
        return False
    return True
