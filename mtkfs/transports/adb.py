"""A rooted Android phone through the adb server, as regions.

What opening does (seed 000's twenty hand-computed ``dd skip=`` lines, as one command):

1. the adb server (``ADB_SERVER_SOCKET=tcp:HOST:PORT``, else ``ANDROID_ADB_SERVER_PORT``, else
   127.0.0.1:5037) lists its devices; the serial asked for, or the only one online, is used;
2. its features and SDK pick the service (:func:`mtkfs.protocols.adb.pick_shell`): ``shell,v2``
   (Android 7+: separate stderr, exit status, stdin), ``exec:`` (5–6: raw PTY, reads only),
   legacy ``shell:`` (≤ 4.4: a cooked PTY, text only — data crosses as temp files fetched or
   pushed with ``sync:``; see :mod:`mtkfs.transports.adb_shell`);
3. root is found in adb.md §5.4's order: ``id -u`` = 0, ``adb root`` (userdebug builds), ``su
   -c``, ``su 0``; without it the block devices cannot be read and the error says what helps;
4. the regions are the whole block devices of ``/proc/partitions``: eMMC ``mmcblk0`` (user),
   ``mmcblk0boot0/1`` (boot1/boot2), UFS ``sda``/``sdb``/``sdc`` (lu0..lu2). The partition map
   is then read from the flash like any other source (GPT, MBR/EBR, PMT), and the phone's own
   lists — ``/proc/dumchar_info``, the by-name links with ``/sys/class/block/*/start|size`` —
   come in as :meth:`device_table` (a cross-check; the names of an unnamed MT65xx MBR; the map
   when the flash has none).

Reads are ``dd if=/dev/block/X bs=B skip=N count=M 2>/dev/null`` (no ``iflag``: toolbox and
toybox ``dd`` lack byte offsets), ``B`` the largest power of two up to 1 MiB dividing offset and
length, the output length checked exactly. Writes are verified by the phone's own hash of the
range (:meth:`AdbTransport.digest`) or a read-back. Only validated block-device paths, mtkfs's
own temp-file names and integers ever reach the device's shell: partition names and link
targets are device text (hostile) and are parsed, never executed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mtkfs.errors import AuthRequiredError, MtkfsError, ReadOnlyError, SourceError, TransportError
from mtkfs.maps.detect import table_region_of
from mtkfs.maps.dumchar import looks_like_dumchar, parse_dumchar
from mtkfs.maps.model import Partition, PartitionMap, Region
from mtkfs.maps.names import clean_name, unique_names
from mtkfs.protocols import adb
from mtkfs.transports.adb_shell import (
    Runner,
    Shell,
    find_root,
    hash_probe_command,
    parse_digest,
    parse_hash_probe,
    runner,
    temp_file_name,
)
from mtkfs.transports.base import Transport

log = logging.getLogger(__name__)

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
        props: dict[str, str] | None = None,
    ) -> None:
        self.serial = serial
        self.server = server
        self.shell = shell
        self.root_style = root_style
        self.props = props or {}
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
        self.verified_by_hash = 0
        self.sent_commands: list[str] = []
        #: ``(tool, hashlib name)`` once probed; None = no working tool (read back instead).
        self._hash_tool: tuple[str, str] | None = None
        self._hash_probed = False
        # Old services move data through temp files on the phone, one command at a time.
        self._read_file = temp_file_name("read")
        self._write_file = temp_file_name("write")
        self._file_lock = trio.Lock()
        self._temp_used = False

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
        run = runner(address, io_timeout_s)
        await run(adb.host_version())
        device = _choose(await run(adb.host_devices()), serial)
        features = await run(adb.device_features(device.serial))
        # Text works on every service; before shell v2, the legacy shell: answers it.
        probe = Shell(run, device.serial, "shell,v2" if "shell_v2" in features else "shell", "")
        props = parse_props(await probe.text(_PROPS_COMMAND, check=False))
        sdk = props.get("ro.build.version.sdk", "")
        shell = adb.pick_shell(features, int(sdk) if sdk.isdigit() else None)
        probe.service = shell
        root_style = await find_root(probe, _restarter(run, device.serial))
        sh = Shell(run, device.serial, shell, root_style)
        disks = parse_partitions(await sh.text("cat /proc/partitions"))
        if not disks:
            raise SourceError(
                f"{device.serial}: /proc/partitions lists no eMMC (mmcblk0) or UFS (sda..sdc) "
                "disk mtkfs knows"
            )
        transport = cls(
            device.serial, address, shell, root_style, disks, io_timeout_s=io_timeout_s,
            props=props,
        )  # fmt: skip
        transport.writable = writable
        return transport

    def _sh(self) -> Shell:
        return Shell(runner(self.server, self.io_timeout_s), self.serial, self.shell,
                     self.root_style, record=self.sent_commands)  # fmt: skip

    def _dd(self, region: str, offset_bytes: int, size_bytes: int, *, write: bool) -> str:
        """``dd`` of a block-aligned range: only a validated path and integers (no ``iflag``:
        toolbox and toybox ``dd`` lack byte offsets), stderr silenced on the device."""
        block = read_block_bytes(offset_bytes, size_bytes)
        path = adb.safe_device_path(f"/dev/block/{self._disk_of[region]}")
        if write:
            return f"of={path} bs={block} seek={offset_bytes // block} conv=notrunc,fsync"
        return f"if={path} bs={block} skip={offset_bytes // block} count={size_bytes // block}"

    async def read(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        size_bytes = max(0, min(size_bytes, self.regions[region].size_bytes - offset_bytes))
        if size_bytes == 0:
            return b""
        source = self._dd(region, offset_bytes, size_bytes, write=False)
        self.commands += 1
        try:
            if self.shell == "shell":
                # Legacy shell: a cooked PTY mangles bytes; a file fetched by sync: does not.
                async with self._file_lock:
                    self._temp_used = True
                    data = await self._sh().pull_via_file(
                        f"dd {source} of={self._read_file} 2>/dev/null", self._read_file, size_bytes
                    )
            else:
                data = await self._sh().binary(f"dd {source} 2>/dev/null", size_bytes)
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
        """Shell v2: ``dd of=DISK bs=B seek=N conv=notrunc,fsync`` fed through stdin, exit
        status required (adb.md §5.5). Older phones: the bytes pushed to a temp file with
        ``sync:`` SEND, then ``dd if=FILE of=DISK …`` as root, exit status required. Never
        ``exec-in`` or a PTY's stdin, which lose data. The commit pipeline then verifies
        with :meth:`digest` (the phone's hash tool) or :meth:`read_back`."""
        if not self.writable:
            raise ReadOnlyError(f"{self.description} was opened read-only")
        if offset_bytes % self.write_unit_bytes or len(data) % self.write_unit_bytes:
            raise TransportError(
                f"unaligned write {region}+{offset_bytes:#x} ({len(data)} bytes): writes are "
                f"whole {self.write_unit_bytes}-byte blocks"
            )
        target = self._dd(region, offset_bytes, len(data), write=True)
        self.commands += 1
        if self.shell == "shell,v2":
            await self._sh().feed(f"dd {target} 2>/dev/null", data)
        else:
            async with self._file_lock:
                self._temp_used = True
                await self._sh().push_then(
                    self._write_file, data, f"dd if={self._write_file} {target} 2>/dev/null"
                )
        self.bytes_written += len(data)

    async def _flush(self, region: str) -> None:
        """``blockdev --flushbufs``: what follows reads the flash, not the page cache that the
        write just filled."""
        path = adb.safe_device_path(f"/dev/block/{self._disk_of[region]}")
        await self._sh().text(f"blockdev --flushbufs {path} 2>/dev/null", check=False)

    async def read_back(self, region: str, offset_bytes: int, size_bytes: int) -> bytes:
        await self._flush(region)
        return await self.read(region, offset_bytes, size_bytes)

    async def digest(
        self, region: str, offset_bytes: int, size_bytes: int
    ) -> tuple[str, bytes] | None:
        """The phone's own hash of the range (``dd … | sha256sum``, or sha1/md5 where that is
        all there is): one short answer instead of the bytes. None when it has no working
        hash tool (Android ≤ 5 toolbox): the pipeline reads back instead."""
        sh = self._sh()
        if not self._hash_probed:
            self._hash_tool = parse_hash_probe(await sh.text(hash_probe_command(), check=False))
            self._hash_probed = True
            log.info("%s: hash tool %s", self.serial, self._hash_tool or "none (reading back)")
        if self._hash_tool is None:
            return None
        tool, algorithm = self._hash_tool
        await self._flush(region)
        source = self._dd(region, offset_bytes, size_bytes, write=False)
        self.commands += 1
        digest = parse_digest(await sh.text(f"dd {source} 2>/dev/null | {tool}"), algorithm)
        self.verified_by_hash += 1
        return algorithm, digest

    async def device_table(self) -> PartitionMap | None:
        """``/proc/dumchar_info`` (old MTK), else the by-name links with their sysfs ranges."""
        sh = self._sh()
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
        return {
            "kind": "adb",
            "serial": self.serial,
            "model": self.props.get("ro.product.model", ""),
            "android": self.props.get("ro.build.version.release", ""),
            "sdk": self.props.get("ro.build.version.sdk", ""),
            "shell": self.shell,
            "root": self.root_style,
            "hash_tool": self._hash_tool[0] if self._hash_tool else None,
        }

    def stats(self) -> dict[str, int | float]:
        return {
            "adb_commands": self.commands,
            "adb_bytes_read": self.bytes_read,
            "adb_bytes_written": self.bytes_written,
            "adb_failed_commands": self.failed_commands,
            "adb_verified_by_hash": self.verified_by_hash,
        }

    async def aclose(self) -> None:
        """Remove the temp files old services used; nothing else stays open between commands
        (each ran on its own server connection)."""
        if self._temp_used:
            with trio.move_on_after(10):
                await self._sh().remove(self._read_file)
                await self._sh().remove(self._write_file)


def _disk_of(device: str) -> str:
    return "mmcblk0" if device.startswith("mmcblk0p") else device[:3]


#: One command, three properties (``getprop`` answers an empty line for a missing one).
_PROPS_COMMAND = "; ".join(f"echo {p}=$(getprop {p})" for p in (
    "ro.build.version.sdk", "ro.build.version.release", "ro.product.model"))  # fmt: skip


def parse_props(text: str) -> dict[str, str]:
    """``name=value`` lines → properties, values made printable and short (device text)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and re.fullmatch(r"ro\.[a-z.]{1,40}", name.strip()):
            props[name.strip()] = adb.printable(value.strip(), 80)
    return props


def _restarter(run: Runner, serial: str) -> Callable[[], Awaitable[bool]]:
    """``adb root`` for :func:`find_root`: True once adbd restarted as root and is back."""

    async def restart() -> bool:
        try:
            answer = await run(adb.root(serial))
        except MtkfsError as exc:
            log.debug("%s: adb root: %s", serial, exc)
            return False
        if "restarting adbd as root" not in answer:
            log.debug("%s: adb root: %s", serial, answer)
            return False
        log.info("%s: adbd restarts as root; waiting for it", serial)
        with trio.move_on_after(30):
            while True:
                await trio.sleep(0.5)
                with contextlib.suppress(MtkfsError):
                    if any(d.serial == serial and d.online for d in await run(adb.host_devices())):
                        return True
        return False

    return restart


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
