"""A real U-Boot under QEMU, as the test and benchmark peer of the ``uboot:`` transport.

Why real: a simulator written from the same reading of the U-Boot source as the parsers would
share their mistakes. Debian ships both halves (``qemu-system-arm``, ``u-boot-qemu``: U-Boot
2023.01 for QEMU's ``virt`` board), so CI can run the genuine article in a few seconds.

The board (:func:`build_uboot_board`) has two flash areas, each with its truth on disk:

* ``disk.img``: a 64 MiB virtio disk (U-Boot's ``virtio read``) with a GPT: raw partitions of
  pseudo-random bytes, an ext4 with a small tree, and a scratch partition for writes. Region
  ``virtio0``.
* ``pflash1.img``: QEMU's second CFI flash (exactly 64 MiB, mapped at 0x04000000; U-Boot keeps
  its environment in its first two sectors). 16 MiB at :data:`NOR_OFFSET_BYTES` into it are a
  "NOR chip" laid out with seed 003's MTD lines (a camera: BOOT, KERNEL, ROOTFS, HOME, vd1,
  conf), erased (0xFF) where nothing was written. U-Boot reads it memory-mapped (``md``,
  ``crc32``), so the region is ``mem:`` at :attr:`UbootBoard.nor_base`. Region ``nor``.
* ``bootlog.txt``: the seed's ``Creating 6 MTD partitions on "NOR_FLASH":`` lines, a ``--map``.

:func:`running_uboot` starts QEMU with the serial port on a TCP server socket. The first client
to connect becomes the board's UART, so nothing here connects to it: readiness is seen in
``/proc/net/tcp`` (a listening socket) or in QEMU's "waiting for connection" line. With
``wait=on`` the CPU starts only when the client connects: no boot output is lost.
:class:`SerialConsole` is a small blocking driver for tests and scripts (not mtkfs's transport).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import serial

from mtkfs.testing.content import pseudo_random
from mtkfs.testing.disk import ExpectedPartition
from mtkfs.testing.gpt_write import GptPartition, write_gpt
from mtkfs.testing.tools import mkfs_ext4, pwrite, sparse_copy, sparse_file, write_tree

__all__ = [
    "DISK_BYTES",
    "NOR_BASE",
    "NOR_BYTES",
    "NOR_OFFSET_BYTES",
    "PFLASH1_BASE",
    "PFLASH_BYTES",
    "PROMPT",
    "QEMU",
    "QEMU_RAM_STAGING",
    "SEED_003_BOOTLOG",
    "SEED_003_MTD",
    "UBOOT_BIN",
    "QemuUboot",
    "SerialConsole",
    "UbootBoard",
    "build_uboot_board",
    "qemu_available",
    "qemu_command",
    "running_uboot",
]

_KiB = 1 << 10
_MiB = 1 << 20

QEMU = "qemu-system-aarch64"
UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
#: Mainline's (and Debian's) ``CONFIG_SYS_PROMPT``.
PROMPT = b"=> "
#: Start of RAM + 2 MiB: ``$loadaddr``. RAM starts at 0x40000000, where QEMU puts the DTB.
QEMU_RAM_STAGING = 0x40200000

#: QEMU virt's pflash unit 1: where it sits in the CPU's address space and its required size.
PFLASH1_BASE = 0x04000000
PFLASH_BYTES = 64 * _MiB
#: The NOR region inside pflash1.img: clear of U-Boot's environment (pflash1's first 256 KiB),
#: and inside the first 32 MiB, which U-Boot's CFI driver sees as one bank it can erase.
NOR_OFFSET_BYTES = 16 * _MiB
NOR_BYTES = 16 * _MiB
NOR_BASE = PFLASH1_BASE + NOR_OFFSET_BYTES

#: Seed 003 (a camera's 16 MiB NOR): (name, start, end) from its boot log.
SEED_003_MTD: tuple[tuple[str, int, int], ...] = (
    ("BOOT", 0x000000, 0x050000),
    ("KERNEL", 0x050000, 0x1D0000),
    ("ROOTFS", 0x1D0000, 0x3B0000),
    ("HOME", 0x3B0000, 0xFE0000),
    ("vd1", 0xFE0000, 0xFF0000),
    ("conf", 0xFF0000, 0x1000000),
)
#: The seed's boot-log lines, as the kernel prints them (what ``--map`` is given).
SEED_003_BOOTLOG = 'Creating 6 MTD partitions on "NOR_FLASH":\n' + "".join(
    f'0x{start:012x}-0x{end:012x} : "{name}"\n' for name, start, end in SEED_003_MTD
)
#: How much of each NOR partition holds pseudo-random bytes (the rest is erased): enough to
#: catch a wrong offset anywhere, little enough that a dump over ``md`` takes seconds.
_NOR_FILL_BYTES = {
    "BOOT": 0x50000,
    "KERNEL": 256 * _KiB,
    "ROOTFS": 256 * _KiB,
    "HOME": 128 * _KiB,
    "vd1": 16 * _KiB,
    "conf": 4 * _KiB,
}

DISK_BYTES = 64 * _MiB
#: The virtio disk's GPT: (name, start, size, fs or None, pseudo-random bytes at its start).
_DISK_GPT: tuple[tuple[str, int, int, str | None, int], ...] = (
    ("bootloader", 1 * _MiB, 1 * _MiB, None, 192 * _KiB),
    ("kernel", 2 * _MiB, 4 * _MiB, None, 512 * _KiB),
    ("system", 6 * _MiB, 16 * _MiB, "ext4", 0),
    ("scratch", 22 * _MiB, 8 * _MiB, None, 64 * _KiB),
    ("data", 30 * _MiB, 32 * _MiB, None, 128 * _KiB),
)
#: Where the last partition has content at its end too: a read that gets the end wrong shows.
_DATA_TAIL_BYTES = 64 * _KiB
_HOSTNAME = b"mtkfs-qemu\n"


def system_files() -> dict[str, bytes]:
    """Path → content of the files in the disk's ext4 (``system``)."""
    return {
        "etc/hostname": _HOSTNAME,
        "etc/hosts": b"127.0.0.1\tlocalhost\n",
        "lib/firmware.bin": pseudo_random("qemu/system/firmware.bin", 1 * _MiB),
    }


@dataclass(frozen=True)
class UbootBoard:
    """A built board folder and the truth about it.

    Attributes:
        folder: where the files are (QEMU's log, ``qemu.log``, goes there too).
        disk: the virtio disk image (region ``virtio0``).
        pflash: pflash unit 1's image; the NOR region is at ``nor_offset_bytes`` in it.
        bootlog: seed 003's MTD lines, usable as ``--map``.
        nor_base: the NOR region's address in the CPU's address space.
        nor_size: its size in bytes.
        nor_offset_bytes: its offset in ``pflash``.
        partitions: the expected partitions of both regions (``virtio0`` then ``nor``).
        ext4_partition: the disk partition holding the ext4 (files: :func:`system_files`).
        scratch_partition: a disk partition no test relies on the content of (for writes).
    """

    folder: Path
    disk: Path
    pflash: Path
    bootlog: Path
    nor_base: int = NOR_BASE
    nor_size: int = NOR_BYTES
    nor_offset_bytes: int = NOR_OFFSET_BYTES
    partitions: tuple[ExpectedPartition, ...] = field(default=())
    ext4_partition: str = "system"
    scratch_partition: str = "scratch"

    @property
    def log(self) -> Path:
        """QEMU's stdout and stderr, appended to by every run (a header line per run)."""
        return self.folder / "qemu.log"

    def region_size(self, region: str) -> int:
        """Size in bytes of ``virtio0`` (the disk) or ``nor``."""
        if region == "virtio0":
            return self.disk.stat().st_size
        if region == "nor":
            return self.nor_size
        raise KeyError(region)

    def by_name(self, region: str, name: str) -> ExpectedPartition:
        """The expected partition ``name`` of ``region`` (KeyError if none)."""
        for part in self.partitions:
            if part.region == region and part.name == name:
                return part
        raise KeyError(f"{region}:{name}")

    def read(self, region: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of ``region`` (``virtio0`` or ``nor``), from the image
        files: what the board holds (as long as nothing wrote to it since the build)."""
        if offset < 0 or size < 0 or offset + size > self.region_size(region):
            raise ValueError(f"{offset:#x}+{size:#x} outside {region}")
        path, base = (self.disk, 0) if region == "virtio0" else (self.pflash, self.nor_offset_bytes)
        with path.open("rb") as f:
            f.seek(base + offset)
            return f.read(size)

    def copy_to(self, folder: Path) -> UbootBoard:
        """A sparse copy of the board in ``folder``, for a run that writes to the flash."""
        folder.mkdir(parents=True, exist_ok=True)
        copies = {}
        for path in (self.disk, self.pflash, self.bootlog):
            copies[path] = folder / path.name
            sparse_copy(path, copies[path])
        return UbootBoard(
            folder=folder,
            disk=copies[self.disk],
            pflash=copies[self.pflash],
            bootlog=copies[self.bootlog],
            nor_base=self.nor_base,
            nor_size=self.nor_size,
            nor_offset_bytes=self.nor_offset_bytes,
            partitions=self.partitions,
            ext4_partition=self.ext4_partition,
            scratch_partition=self.scratch_partition,
        )


def qemu_available() -> tuple[bool, str]:
    """(True, "") when QEMU and Debian's U-Boot for it are installed, else (False, why)."""
    if shutil.which(QEMU) is None:
        return False, f"{QEMU} not found (Debian: apt-get install qemu-system-arm)"
    if not UBOOT_BIN.is_file():
        return False, f"{UBOOT_BIN} not found (Debian: apt-get install u-boot-qemu)"
    return True, ""


def build_uboot_board(folder: Path) -> UbootBoard:
    """Build the board's images in ``folder`` (made if missing; files there are replaced).

    Deterministic and sparse: about 20 MB on disk (16 of them the erased NOR region, which has
    to be 0xFF), under a second.
    """
    folder.mkdir(parents=True, exist_ok=True)
    disk, pflash, bootlog = folder / "disk.img", folder / "pflash1.img", folder / "bootlog.txt"
    _build_disk(disk)
    _build_pflash(pflash)
    bootlog.write_text(SEED_003_BOOTLOG)
    partitions = [
        ExpectedPartition(name, "virtio0", start, size, fs)
        for name, start, size, fs, _ in _DISK_GPT
    ]
    partitions += [
        ExpectedPartition(name, "nor", start, end - start, None)
        for name, start, end in SEED_003_MTD
    ]
    return UbootBoard(
        folder=folder, disk=disk, pflash=pflash, bootlog=bootlog, partitions=tuple(partitions)
    )


def _build_disk(disk: Path) -> None:
    sparse_file(disk, DISK_BYTES)
    write_gpt(
        disk,
        [GptPartition(name, start, size) for name, start, size, _, _ in _DISK_GPT],
        sector_bytes=512,
        key="qemu/gpt",
    )
    with tempfile.TemporaryDirectory(prefix="mtkfs-qemu-") as tmp:
        tmp_dir = Path(tmp)
        tree = write_tree(tmp_dir / "system", system_files())
        for name, start, size, fs, fill in _DISK_GPT:
            if fs == "ext4":
                mkfs_ext4(tmp_dir, disk, start, size, label=name, key=f"qemu/{name}", tree=tree)
            if fill:
                pwrite(disk, start, pseudo_random(f"qemu/disk/{name}", fill))
    name, start, size, _, _ = _DISK_GPT[-1]
    tail = pseudo_random(f"qemu/disk/{name}/tail", _DATA_TAIL_BYTES)
    pwrite(disk, start + size - len(tail), tail)


def _build_pflash(pflash: Path) -> None:
    sparse_file(pflash, PFLASH_BYTES)
    region = bytearray(b"\xff" * NOR_BYTES)
    for name, start, end in SEED_003_MTD:
        fill = min(_NOR_FILL_BYTES[name], end - start)
        region[start : start + fill] = pseudo_random(f"qemu/nor/{name}", fill)
    tail = pseudo_random("qemu/nor/HOME/tail", 16 * _KiB)  # HOME's last bytes: end errors show
    home_end = dict((n, e) for n, _, e in SEED_003_MTD)["HOME"]
    region[home_end - len(tail) : home_end] = tail
    pwrite(pflash, NOR_OFFSET_BYTES, bytes(region))


# --------------------------------------------------------------------------------------------
# Running QEMU


def qemu_command(board: UbootBoard, port: int, *, memory_mib: int = 512) -> list[str]:
    """QEMU's command line for ``board`` with the UART on a TCP server at 127.0.0.1:``port``.

    ``-nic none``: without it virt wants ``efi-virtio.rom`` (package ipxe-qemu) and aborts.
    ``wait=on``: the CPU starts only once the client (mtkfs) is connected.
    """
    return [
        QEMU,
        "-M", "virt",
        "-cpu", "cortex-a57",
        "-m", str(memory_mib),
        "-nographic",
        "-nic", "none",
        "-monitor", "none",
        "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on",
        "-bios", str(UBOOT_BIN),
        "-drive", f"if=pflash,unit=1,format=raw,file={board.pflash}",
        "-drive", f"file={board.disk},if=virtio,format=raw",
    ]  # fmt: skip


@dataclass
class QemuUboot:
    """A running QEMU: connect a pyserial client to :attr:`url` (once; it becomes the UART)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate QEMU (SIGTERM, then SIGKILL); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_uboot(
    board: UbootBoard, *, memory_mib: int = 512, start_timeout_s: float = 15.0
) -> Iterator[QemuUboot]:
    """QEMU running ``board``, its UART waiting at ``.url``; stopped on exit, error or not.

    QEMU's output goes to ``board.log`` (appended). A port taken between choosing it and
    QEMU's bind is retried with another.
    """
    ok, why = qemu_available()
    if not ok:
        raise RuntimeError(why)
    last_error = ""
    for _attempt in range(3):
        port = _free_port()
        with board.log.open("ab") as log:
            start = log.tell()
            command = qemu_command(board, port, memory_mib=memory_mib)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== {stamp}: {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        qemu = QemuUboot(f"socket://127.0.0.1:{port}", port, process, board.log)
        try:
            if _wait_listening(qemu, start, start_timeout_s):
                yield qemu
                return
            last_error = _log_since(board.log, start)
            if "in use" not in last_error:  # "Address already in use": try another port
                break
        finally:
            qemu.stop()
    raise RuntimeError(f"QEMU did not start listening:\n{last_error}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(qemu: QemuUboot, log_start: int, timeout_s: float) -> bool:
    """Poll, without connecting, until QEMU listens on its port; False if it exited.

    Either sign will do: QEMU's own "waiting for connection" line, or a listening socket on the
    port that is one of QEMU's file descriptors (not another program's that took the port).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "waiting for connection" in _log_since(qemu.log, log_start):
            return True
        if _listening_inodes(qemu.port) & _socket_inodes(qemu.process.pid):
            return True
        if qemu.process.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"QEMU not listening on port {qemu.port} after {timeout_s} s")


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets in state LISTEN (0A) on 127.0.0.1:``port`` (``/proc/net/tcp``)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    rows = (line.split() for line in lines)
    return {f[9] for f in rows if len(f) > 9 and f[1] == wanted and f[3] == "0A"}


def _socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process ``pid`` has open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    return inodes


def _log_since(log: Path, start: int) -> str:
    with log.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


# --------------------------------------------------------------------------------------------
# A small blocking console driver (tests, transcripts; mtkfs's own lives in mtkfs.transports)

_AUTOBOOT = b"Hit any key to stop autoboot"
_PROMPT_AT_LINE_START = b"\n" + PROMPT


class SerialConsole:
    """U-Boot's console over a pyserial URL, one command at a time, every byte kept.

    Why so careful: U-Boot eats characters typed while a command runs, and an empty line
    repeats the last command. So nothing is sent before the prompt, every command ends with a
    single ``\\r``, and long commands go in 16-byte pieces, each after the previous one's echo.
    """

    def __init__(self, url: str, *, quiet_s: float = 0.15) -> None:
        self.port = serial.serial_for_url(url, timeout=0.02)
        self.quiet_s = quiet_s
        self.received = bytearray()  # everything, ever: a test's failure message shows it
        self._pending = bytearray()  # received but not yet returned by read_until

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_some(self) -> bytes:
        data: bytes = self.port.read(4096)
        self.received += data
        self._pending += data
        return data

    def read_until(
        self, pattern: bytes | re.Pattern[bytes], timeout_s: float, *, quiet_s: float = 0.0
    ) -> bytes:
        """Bytes up to and including ``pattern``'s first match (the rest stays pending).

        With ``quiet_s``: up to a match that ends the bytes received, once nothing more has
        come for ``quiet_s`` (a prompt is the last thing a command prints)."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout_s
        while True:
            end = self._match_end(regex, last=bool(quiet_s))
            if end is not None and quiet_s:
                quiet_until = time.monotonic() + quiet_s
                while time.monotonic() < quiet_until and not self._read_some():
                    pass
                if len(self._pending) > end:
                    end = None  # more came: look again
            if end is not None:
                out = bytes(self._pending[:end])
                del self._pending[:end]
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {regex.pattern!r} in {bytes(self._pending[-400:])!r}")
            self._read_some()

    def _match_end(self, regex: re.Pattern[bytes], *, last: bool) -> int | None:
        """End of the first match in the pending bytes; with ``last``, of a match that ends
        them (None if none)."""
        if not last:
            match = regex.search(self._pending)
            return None if match is None else match.end()
        ends = [m.end() for m in regex.finditer(self._pending)]
        return len(self._pending) if ends and ends[-1] == len(self._pending) else None

    def read_for(self, duration_s: float) -> bytes:
        """Everything pending plus whatever arrives within ``duration_s``."""
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            self._read_some()
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def drain(self, quiet_s: float = 0.3) -> bytes:
        """Everything pending plus whatever arrives until ``quiet_s`` of silence."""
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            if self._read_some():
                quiet_until = time.monotonic() + quiet_s
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def stop_autoboot(self, timeout_s: float = 30.0) -> bytes:
        """Wait for the countdown (or a prompt), press Ctrl-C, return all bytes until the
        prompt and silence: the boot log with the countdown."""
        either = re.compile(re.escape(_AUTOBOOT) + b"|" + re.escape(_PROMPT_AT_LINE_START) + b"$")
        out = self.read_until(either, timeout_s)
        self.write(b"\x03")
        return out + self.read_until(_PROMPT_AT_LINE_START, timeout_s, quiet_s=self.quiet_s)

    def type_line(self, line: str, timeout_s: float = 5.0, *, chunk: int = 16) -> bytes:
        """Type ``line`` in pieces, each after the previous one's echo, then ``\\r``; returns
        the echo (without the ``\\r\\n`` the ``\\r`` brings)."""
        echo = bytearray()
        data = line.encode()
        for pos in range(0, len(data), chunk):
            piece = data[pos : pos + chunk]
            self.write(piece)
            echo += self.read_until(piece, timeout_s)
        self.write(b"\r")
        return bytes(echo)

    def command(self, line: str, timeout_s: float = 30.0) -> bytes:
        """Run ``line``; return the exact bytes received: echo, output, CRLFs and the prompt.

        Call only at the prompt (after :meth:`stop_autoboot` or another command)."""
        echo = self.type_line(line)
        return echo + self.read_until(_PROMPT_AT_LINE_START, timeout_s, quiet_s=self.quiet_s)

    @staticmethod
    def output(transcript: bytes) -> str:
        """A command's output from its :meth:`command` bytes: no echo line, no final prompt,
        ``\\n`` line ends."""
        text = transcript.decode(errors="replace").replace("\r\n", "\n")
        _echo, _, rest = text.partition("\n")
        return rest.removesuffix(PROMPT.decode())
