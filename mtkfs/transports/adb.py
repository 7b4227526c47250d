"""A rooted Android phone through the adb server, as regions.

What opening does (seed 000's twenty hand-computed ``dd skip=`` lines, as one command):

1. the adb server (``ADB_SERVER_SOCKET=tcp:HOST:PORT``, else ``ANDROID_ADB_SERVER_PORT``, else
   127.0.0.1:5037) lists its devices; the serial asked for, or the only one online, is used;
2. its features and SDK pick the shell service (:func:`mtkfs.protocols.adb.pick_shell`):
   ``shell,v2`` (Android 7+: separate stderr, exit status), ``exec:`` (5–6), legacy ``shell:``;
3. root is found in adb.md §5.4's order: ``id -u`` = 0, ``su -c``, ``su 0``; without it the
   block devices cannot be read and the error says what is needed;
4. the regions are the whole block devices of ``/proc/partitions``: eMMC ``mmcblk0`` (user),
   ``mmcblk0boot0/1`` (boot1/boot2), UFS ``sda``/``sdb``/``sdc`` (lu0..lu2). The partition map
   is then read from the flash like any other source (GPT, MBR/EBR, PMT), and the phone's own
   lists — ``/proc/dumchar_info``, the by-name links with ``/sys/class/block/*/start|size`` —
   come in as :meth:`device_table` (a cross-check, and the map when the flash has none).

Reads are ``dd if=/dev/block/X bs=B skip=N count=M 2>/dev/null`` (no ``iflag``: toolbox and
toybox ``dd`` lack byte offsets), ``B`` the largest power of two up to 1 MiB dividing offset and
length, the output length checked exactly. Only validated block-device paths and integers ever
reach the device's shell: partition names and link targets are device text (hostile) and are
parsed, never executed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from mtkfs.errors import AuthRequiredError, MtkfsError, ReadOnlyError, SourceError, TransportError
from mtkfs.links.base import drive
from mtkfs.links.tcp import TcpLink
from mtkfs.maps.detect import table_region_of
from mtkfs.maps.dumchar import looks_like_dumchar, parse_dumchar
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.maps.names import clean_name, unique_names
from mtkfs.protocols import adb
from mtkfs.protocols.base import Op
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SERVER = ("127.0.0.1", 5037)
#: Whole block devices → region names (eMMC areas; a MediaTek UFS phone's LUs).
_DISK_REGIONS = {
    "mmcblk0": "user",
    "mmcblk0boot0": "boot1",
    "mmcblk0boot1": "boot2",
    "sda": "lu0",
    "sdb": "lu1",
    "sdc": "lu2",
}
_PARTITION_NAME = re.compile(r"^(mmcblk0p|sd[a-c])(\d{1,3})$")
_MAX_READ_BLOCK_BYTES = 1 << 20
#: Where ueventd puts the by-name links, shallow and deep (adb.md §5.1).
_BY_NAME_DIRS = (
    "/dev/block/by-name",
    "/dev/block/platform/*/by-name",
    "/dev/block/platform/*/*/by-name",
)


def server_address(environ: dict[str, str] | None = None) -> tuple[str, int]:
    """The adb server the user's ``adb`` would use: ``ADB_SERVER_SOCKET=tcp:HOST:PORT``,
    ``ANDROID_ADB_SERVER_PORT``, else 127.0.0.1:5037."""
    env = os.environ if environ is None else environ
    socket_spec = env.get("ADB_SERVER_SOCKET", "")
    if socket_spec:
        match = re.fullmatch(r"tcp:(?:([^:]+):)?(\d{1,5})", socket_spec)
        if match is None:
            raise SourceError(
                f"ADB_SERVER_SOCKET={socket_spec!r}: expected tcp:HOST:PORT or tcp:PORT"
            )
        return match.group(1) or DEFAULT_SERVER[0], int(match.group(2))
    port = env.get("ANDROID_ADB_SERVER_PORT", "")
    if port:
        if not port.isdigit():
            raise SourceError(f"ANDROID_ADB_SERVER_PORT={port!r}: not a port number")
        return DEFAULT_SERVER[0], int(port)
    return DEFAULT_SERVER


def read_block_bytes(offset_bytes: int, size_bytes: int) -> int:
    """The largest power of two ≤ 1 MiB dividing both: ``dd`` then reads whole blocks."""
    block = _MAX_READ_BLOCK_BYTES
    while block > 1 and (offset_bytes % block or size_bytes % block):
        block //= 2
    return block


def parse_partitions(text: str) -> dict[str, int]:
    """``/proc/partitions`` → whole-disk regions we know → size in bytes (#blocks are KiB)."""
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 4 or not fields[2].isdigit():
            continue
        region = _DISK_REGIONS.get(fields[3])
        if region is not None:
            sizes[fields[3]] = int(fields[2]) * 1024
    return sizes


def parse_by_name(listing: str) -> dict[str, str]:
    """``ls -l`` of by-name folders → name → target partition device name (``mmcblk0p5``).

    Targets that are not ``/dev/block/<known partition>`` are dropped (a link pointing
    elsewhere is hostile or broken); names are device text, cleaned by the caller.
    """
    links: dict[str, str] = {}
    for line in listing.splitlines():
        if " -> " not in line:
            continue
        left, target = line.rsplit(" -> ", 1)
        name = left.split()[-1] if left.split() else ""
        match = re.fullmatch(r"/dev/block/((?:mmcblk0p|sd[a-c])\d{1,3})", target.strip())
        if name and match and name not in links:
            links[name] = match.group(1)
    return links


class AdbTransport(Transport):
    """Regions of a rooted phone's block devices through the adb server. Open with :meth:`open`."""

    def __init__(
        self,
        serial: str,
        server: tuple[str, int],
        shell: str,
        root_style: str,
        disks: dict[str, int],
        *,
        io_timeout_s: float,
    ) -> None:
        self.serial = serial
        self.server = server
        self.shell = shell
        self.root_style = root_style
        self._disk_of = {_DISK_REGIONS[disk]: disk for disk in disks}
        self.regions = {
            _DISK_REGIONS[disk]: Region(_DISK_REGIONS[disk], size) for disk, size in disks.items()
        }
        self.device_id = f"adb:{serial}"
        self.description = (
            f"Android phone {serial} through the adb server at {server[0]}:{server[1]} "
            f"({shell}, root by {root_style})"
        )
        self.mtime_s = 0.0
        self.chunk_bytes = 1 << 20
        self.max_request_bytes = 8 << 20
        self.readahead_max_bytes = 16 << 20
        self.kernel_readahead_bytes = self.chunk_bytes
        self.io_timeout_s = io_timeout_s
        self.commands = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.failed_commands = 0
        self.sent_commands: list[str] = []

    @classmethod
    async def open(
        cls,
        serial: str | None,
        *,
        writable: bool = False,
        server: tuple[str, int] | None = None,
        io_timeout_s: float = 30.0,
    ) -> AdbTransport:
        address = server or server_address()
        run = _runner(address, io_timeout_s)
        await run(adb.host_version())
        device = _choose(await run(adb.host_devices()), serial)
        features = await run(adb.device_features(device.serial))
        probe = _Shell(run, device.serial, "shell,v2" if "shell_v2" in features else "exec", "")
        sdk = await probe.text("getprop ro.build.version.sdk")
        shell = adb.pick_shell(features, int(sdk) if sdk.strip().isdigit() else None)
        if shell == "shell":
            raise SourceError(
                f"{device.serial} offers neither shell v2 nor exec: (Android 4.4 or older): "
                "binary reads over its legacy shell are not in this version"
            )
        root_style = await _find_root(_Shell(run, device.serial, shell, ""))
        sh = _Shell(run, device.serial, shell, root_style)
        disks = parse_partitions(await sh.text("cat /proc/partitions"))
        if not disks:
            raise SourceError(
                f"{device.serial}: /proc/partitions lists no eMMC (mmcblk0) or UFS (sda..sdc) "
                "disk mtkfs knows"
            )
        if writable and shell != "shell,v2":
            raise ReadOnlyError(
                f"{device.serial} has no shell v2 (Android 6 or older): writes need it (exec: "
                "loses data written into it), so mount it read-only"
            )
        transport = cls(device.serial, address, shell, root_style, disks, io_timeout_s=io_timeout_s)
        transport.writable = writable
        return transport

    def _shell(self) -> _Shell:
        return _Shell(_runner(self.server, self.io_timeout_s), self.serial, self.shell,
                      self.root_style, record=self.sent_commands)  # fmt: skip

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        size_bytes = max(0, min(size_bytes, self.regions[region].size_bytes - offset_bytes))
        if size_bytes == 0:
            return b""
        block = read_block_bytes(offset_bytes, size_bytes)
        path = adb.safe_device_path(f"/dev/block/{self._disk_of[region]}")
        command = (
            f"dd if={path} bs={block} skip={offset_bytes // block} "
            f"count={size_bytes // block} 2>/dev/null"
        )
        self.commands += 1
        try:
            data = await self._shell().binary(command, size_bytes)
        except MtkfsError as exc:
            # A phone unplugged, or a server that lost it: EIO for this reader, whatever the
            # cause's own errno. The next read opens a new connection and works once the
            # server sees the phone again (same serial) — nothing here stays broken.
            self.failed_commands += 1
            raise TransportError(
                f"reading {region}+{offset_bytes:#x} ({size_bytes} bytes) from {self.serial} "
                f"failed: {exc}"
            ) from exc
        self.bytes_read += len(data)
        return data

    async def write(self, region: str, offset_bytes: int, data: bytes) -> None:
        """``dd of=DISK bs=B seek=N conv=notrunc,fsync`` fed through shell v2's stdin, exit
        status required (adb.md §5.5; never ``exec-in``, which loses data). The commit
        pipeline then verifies with :meth:`read_back`."""
        if not self.writable:
            raise ReadOnlyError(f"{self.description} was opened read-only")
        if offset_bytes % self.write_unit_bytes or len(data) % self.write_unit_bytes:
            raise TransportError(
                f"unaligned write {region}+{offset_bytes:#x} ({len(data)} bytes): writes are "
                f"whole {self.write_unit_bytes}-byte blocks"
            )
        block = read_block_bytes(offset_bytes, len(data))
        path = adb.safe_device_path(f"/dev/block/{self._disk_of[region]}")
        command = (
            f"dd of={path} bs={block} seek={offset_bytes // block} conv=notrunc,fsync 2>/dev/null"
        )
        self.commands += 1
        await self._shell().feed(command, data)
        self.bytes_written += len(data)

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        """A read that the phone's block cache cannot answer: ``blockdev --flushbufs`` first,
        so the bytes come from the flash, not from the page cache the write just filled."""
        path = adb.safe_device_path(f"/dev/block/{self._disk_of[region]}")
        await self._shell().text(f"blockdev --flushbufs {path} 2>/dev/null", check=False)
        return await self.read(region, offset_bytes, size_bytes)

    async def device_table(self) -> PartitionMap | None:
        """``/proc/dumchar_info`` (old MTK), else the by-name links with their sysfs ranges."""
        sh = self._shell()
        dumchar = await sh.text("cat /proc/dumchar_info 2>/dev/null", check=False)
        if looks_like_dumchar(dumchar):
            try:
                return parse_dumchar(dumchar, self.regions)
            except MtkfsError as exc:
                log.warning("%s: /proc/dumchar_info unusable: %s", self.serial, exc)
        listing = await sh.text(f"ls -l {' '.join(_BY_NAME_DIRS)} 2>/dev/null", check=False)
        links = parse_by_name(listing)
        if not links:
            return None
        table = table_region_of(self.regions)
        partitions: list[tuple[str, int, int]] = []
        for name, device in sorted(links.items(), key=lambda item: item[1]):
            disk = _PARTITION_NAME.fullmatch(device)
            if disk is None or table is None or _DISK_REGIONS.get(_disk_of(device)) != table.name:
                continue
            base = f"/sys/class/block/{device}"
            numbers = (await sh.text(f"cat {base}/start {base}/size", check=False)).split()
            if len(numbers) == 2 and all(n.isdigit() for n in numbers):
                partitions.append((name, int(numbers[0]) * 512, int(numbers[1]) * 512))
        if table is None or not partitions:
            return None
        partitions.sort(key=lambda row: row[1])
        names = unique_names(clean_name(n, f"p{i}") for i, (n, _, _) in enumerate(partitions, 1))
        return PartitionMap(
            tuple(
                Partition(name, table.name, offset, size, origin="by-name")
                for name, (_, offset, size) in zip(names, partitions, strict=True)
            ),
            "the phone's by-name links",
        )

    def device_report(self) -> dict[str, Any]:
        return {"serial": self.serial, "shell": self.shell, "root": self.root_style}

    def stats(self) -> dict[str, int | float]:
        return {
            "adb_commands": self.commands,
            "adb_bytes_read": self.bytes_read,
            "adb_bytes_written": self.bytes_written,
            "adb_failed_commands": self.failed_commands,
        }

    async def aclose(self) -> None:
        """Nothing stays open between commands: each ran on its own server connection."""


def _disk_of(device: str) -> str:
    return "mmcblk0" if device.startswith("mmcblk0p") else device[:3]


def _choose(devices: list[adb.AdbDevice], serial: str | None) -> adb.AdbDevice:
    """The device asked for, or the only one online; errors say what the server sees."""
    if serial is not None:
        for device in devices:
            if device.serial == serial:
                break
        else:
            seen = ", ".join(d.serial for d in devices) or "none"
            raise SourceError(f"no device {serial!r} at the adb server (it has: {seen})")
    else:
        online = [d for d in devices if d.online]
        if len(online) != 1:
            listing = ", ".join(f"{d.serial} ({d.state})" for d in devices) or "none"
            raise SourceError(
                f"adb: needs exactly one phone online, or adb:SERIAL (the server has: {listing})"
            )
        device = online[0]
    if device.state == "unauthorized":
        raise AuthRequiredError(
            f"{device.serial} has not authorised this computer: unlock the phone and accept "
            "the USB debugging prompt"
        )
    if not device.online:
        raise SourceError(f"{device.serial} is {device.state}, not ready: replug it")
    return device


def _runner(address: tuple[str, int], timeout_s: float) -> Callable[[Op[T]], Any]:
    """Run one operation on a fresh connection to the server (the adb client's way)."""

    async def run(op: Op[T]) -> T:
        link = await TcpLink.connect(*address, what="adb server")
        try:
            return await drive(op, link, timeout_s=timeout_s)
        finally:
            await link.aclose()

    return run


class _Shell:
    """Commands on the phone through the chosen shell service, as root when that is needed."""

    def __init__(
        self,
        run: Callable[[Op[Any]], Any],
        serial: str,
        service: str,
        root_style: str,
        record: list[str] | None = None,
    ) -> None:
        self._run, self.serial, self.service, self.root_style = run, serial, service, root_style
        self._record = record

    def _wrap(self, command: str) -> str:
        if self.root_style == "su -c":
            return f"su -c {adb.sh_quote(command)}"
        if self.root_style == "su 0":
            return f"su 0 sh -c {adb.sh_quote(command)}"
        return command

    async def _exec(self, command: str, length_bytes: int | None) -> adb.ShellResult:
        wrapped = self._wrap(command)
        if self._record is not None:
            self._record.append(wrapped)
        if self.service == "shell,v2":
            result: adb.ShellResult = await self._run(
                adb.shell_v2(self.serial, wrapped, expect_stdout_bytes=length_bytes)
            )
            return result
        if length_bytes is None:
            text: adb.ShellResult = await self._run(adb.legacy_shell(self.serial, wrapped))
            return text
        data: adb.ShellResult = await self._run(adb.exec_read(self.serial, wrapped, length_bytes))
        return data

    async def text(self, command: str, *, check: bool = True) -> str:
        result = await self._exec(command, None)
        if check and result.exit_status != 0:
            raise TransportError(
                f"{self.serial}: {command!r} failed (exit {result.exit_status}): "
                f"{adb.printable(result.stderr or result.stdout)}"
            )
        return result.stdout.decode("utf-8", "replace").replace("\r\n", "\n")

    async def feed(self, command: str, data: bytes) -> None:
        """Run ``command`` with ``data`` on its stdin (shell v2 only); exit status 0 required."""
        wrapped = self._wrap(command)
        if self._record is not None:
            self._record.append(wrapped)
        result: adb.ShellResult = await self._run(adb.shell_v2(self.serial, wrapped, stdin=data))
        if result.exit_status != 0:
            raise TransportError(
                f"{self.serial}: {command!r} failed (exit {result.exit_status}): "
                f"{adb.printable(result.stderr or result.stdout)}"
            )

    async def binary(self, command: str, length_bytes: int) -> bytes:
        result = await self._exec(command, length_bytes)
        if result.exit_status != 0 or len(result.stdout) != length_bytes:
            raise TransportError(
                f"{self.serial}: {command!r} gave {len(result.stdout)} of {length_bytes} bytes "
                f"(exit {result.exit_status}): {adb.printable(result.stderr)}"
            )
        return result.stdout


async def _find_root(sh: _Shell) -> str:
    """adb.md §5.4: adbd already root, then ``su -c`` (Magisk and kin), then ``su 0`` (AOSP)."""
    for style, command in (("adbd", "id -u"), ("su -c", "su -c 'id -u'"), ("su 0", "su 0 id -u")):
        try:
            out = await sh.text(command, check=False)
        except TransportError:
            continue
        if out.strip().splitlines()[-1:] == ["0"]:
            return style
    raise AuthRequiredError(
        f"{sh.serial}: no root (id -u is not 0, and neither su -c nor su 0 gave root): the "
        "block devices cannot be read. Root the phone (Magisk), or use a userdebug build "
        "with `adb root`; or read it in BROM/preloader mode instead (mtkfs mount da:)"
    )
