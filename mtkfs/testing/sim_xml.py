"""A simulated XML ("V6") Download Agent (DA1 + DA2), device side, speaking the real bytes.

It stands in for a phone after BROM's JUMP_DA, modelled on the DA's own command loop and data
phases (see :mod:`mtkfs.protocols.da_xml`): it sends CMD:START, takes one command document,
answers ``OK`` or ``ERR!UNSUPPORTED``, runs the command — progress reports, host file
questions, DOWNLOAD-FILE / UPLOAD-FILE data phases packet by packet — and ends it with CMD:END.
After a command that fails (``ERR``) it leaves its loop, as the DA does: the generator ends and
later :meth:`XmlSim.serve` calls return at once (a phone that stopped talking). DA log lines
(type 2 frames) are interleaved before commands and between data packets, so a host that does
not skip them fails here.

Storage is a :class:`~mtkfs.testing.sim_xflash.FlashStore` (memory, sparse; or image files).
State persists across ``serve()`` calls like a phone's: stage 1 (DA1) until BOOT-TO, then DA2.

The simulator is strict about the host: a malformed frame or document, a missing argument, an
answer that is not ``OK``, an unaligned flash request — LocalProtocolError naming what came,
so a host bug surfaces where it happens. Refusals a real DA makes (out of range, unknown
section, unsupported command, checksum mismatch) are made the DA's way: ``ERR`` and a message.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from mtkfs.errors import LocalProtocolError
from mtkfs.protocols.base import Op, Send
from mtkfs.protocols.da_xflash import (
    DT_MESSAGE,
    encode_frame_header,
    send_frame,
)
from mtkfs.protocols.da_xml import xml_partition
from mtkfs.testing.sim_xflash import FlashStore, recv_host_frame

__all__ = ["XmlFaults", "XmlSim", "plain_checksum"]

#: The DA's DRAM base: the only address BOOT-TO accepts for DA2.
DA_DRAM_BASE = 0x40000000
#: Command buffers: DA1's is 2 KiB (XML_CMD_BUFF_LEN), the DA2 loop's 512 KiB.
_COMMAND_BUFFER_BYTES = {1: 2048, 2: 0x80000}
#: The DA reads host answers into 64 bytes.
_ANSWER_BYTES = 64
#: BOOT-TO's DA2 image limit in DA1 (``length = 0x1000000``).
_MAX_DA2_BYTES = 0x1000000
_USB, _STORAGE = 1, 2
_CHECKSUM_LEVELS = {"NONE": 0, "USB": _USB, "STORAGE": _STORAGE, "USB-STORAGE": _USB | _STORAGE}
_XML_ERR = "Required XML node path not found. Check command string."
#: Commands that exist only once the host passed SLA (the DA registers them afterwards).
_SECURITY_CONTROLLED = {
    "GET-HW-INFO",
    "READ-FLASH",
    "WRITE-FLASH",
    "READ-PARTITION-TABLE",
    "REBOOT",
}
_DA1_COMMANDS = {
    "SET-RUNTIME-PARAMETER",
    "HOST-SUPPORTED-COMMANDS",
    "NOTIFY-INIT-HW",
    "SET-HOST-INFO",
    "BOOT-TO",
    "GET-SYS-PROPERTY",
}
_DA2_COMMANDS = (_DA1_COMMANDS - {"BOOT-TO"}) | _SECURITY_CONTROLLED
_OK = ("OK", "")
#: A command's outcome: (result, message) as CMD:END carries them.
Outcome = tuple[str, str]


def plain_checksum(data: bytes) -> int:
    """MediaTek's ``checksum_plain`` written the plain way (u32 words, then the tail bytes), so
    the host's fast 16-bit version is checked against an independent one."""
    aligned = len(data) - len(data) % 4
    words: int = sum(word for (word,) in struct.iter_unpack("<I", data[:aligned]))
    return (words + sum(data[aligned:])) & 0xFFFFFFFF


@dataclass
class XmlFaults:
    """Ways to misbehave. Packet numbers count from 1 over the simulator's life, separately for
    flash reads and flash writes; 0 = never.

    Attributes:
        corrupt_read_packet: upload that READ-FLASH packet with one bit flipped (XML reads carry
            no checksum: only a read-back compare can catch it).
        fail_read_packet: answer ``ERR`` in place of that packet (a storage read failure), then
            CMD:END with ERR — and leave the command loop.
        corrupt_write_packet: store that WRITE-FLASH packet with one bit flipped, report OK.
        drop_write_packet: report OK for that packet, store nothing (the range stays erased).
        unsupported: command names (``READ-FLASH``) answered ``ERR!UNSUPPORTED``.
        command_errors: command name → the message of an ``ERR`` CMD:END given instead of
            running it (BOOT-TO "DA Hash mismatch…", …).
        dram_init_fails: DA1's NOTIFY-INIT-HW cannot set DRAM up (BROM mode only).
    """

    corrupt_read_packet: int = 0
    fail_read_packet: int = 0
    corrupt_write_packet: int = 0
    drop_write_packet: int = 0
    unsupported: set[str] = field(default_factory=set)
    command_errors: dict[str, str] = field(default_factory=dict)
    dram_init_fails: bool = False


class XmlSim:
    """One simulated phone running an XML DA.

    Args:
        store: its flash (``kind`` ``emmc`` or ``ufs``).
        storage: ``"emmc"`` or ``"ufs"`` (default: the store's kind; they must agree).
        connection_agent: ``"preloader"`` (DRAM is up) or ``"brom"`` (DA1 sets DRAM up in
            NOTIFY-INIT-HW; BOOT-TO without it fails DA2's hash check).
        sla: ``DA.SLA`` is ENABLED and the storage commands do not exist (ERR!UNSUPPORTED).
        packet_bytes: DA2's read and write packet lengths; DA1 downloads DA2 in
            ``da1_packet_bytes`` (0x1000 as seen on phones).
        partition_table: READ-PARTITION-TABLE's ``(name, start, size)`` entries.
        da_log: interleave DA log frames.
        faults: misbehaviour, changeable between runs.

    Attributes a test may inspect: ``stage`` (0 not started, 1 DA1, 2 DA2), ``commands``
    (every command name received), ``runtime`` (SET-RUNTIME-PARAMETER's fields),
    ``checksum_level`` (bits: 1 USB, 2 storage), ``dram_ready``, ``da2``, ``boot_address``,
    ``host_capability``, ``data_frame_sizes`` (WRITE-FLASH packets received), ``log_frames``
    (sent), ``shut_down``, ``halted``, ``reboot_action``.
    """

    def __init__(
        self,
        store: FlashStore,
        *,
        storage: str | None = None,
        connection_agent: str = "preloader",
        sla: bool = False,
        packet_bytes: int = 64 * 1024,
        da1_packet_bytes: int = 0x1000,
        partition_table: tuple[tuple[str, int, int], ...] = (),
        da_log: bool = True,
        faults: XmlFaults | None = None,
    ) -> None:
        if storage is not None and storage != store.kind:
            raise ValueError(f"storage {storage!r} but the store holds {store.kind!r}")
        if store.kind not in ("emmc", "ufs"):
            raise ValueError(f"an XML DA simulator for eMMC or UFS, not {store.kind!r}")
        if connection_agent not in ("brom", "preloader"):
            raise ValueError(f"connection_agent {connection_agent!r}")
        self.store = store
        self.kind = store.kind
        self.block_bytes = 512 if self.kind == "emmc" else 4096
        self.connection_agent = connection_agent
        self.sla = sla
        self.packet_bytes = packet_bytes
        self.da1_packet_bytes = da1_packet_bytes
        self.partition_table = partition_table
        self.da_log = da_log
        self.faults = faults or XmlFaults()
        self.stage = 0
        self.commands: list[str] = []
        self.runtime: dict[str, str] = {}
        self.checksum_level = 0
        self.dram_ready = connection_agent == "preloader"
        self.da2 = b""
        self.boot_address: int | None = None
        self.host_capability = ""
        self.data_frame_sizes: list[int] = []
        self.log_frames = 0
        self.shut_down = False
        self.halted = False
        self.reboot_action = ""
        self._read_packets = 0
        self._write_packets = 0

    # -- plumbing ------------------------------------------------------------------------------

    def _send_text(self, text: str) -> Op[None]:
        yield from send_frame(text.encode("utf-8") + b"\0")

    def _log(self, text: str) -> Op[None]:
        """A DA log line: a type 2 frame, u32 priority, NUL-terminated text."""
        if not self.da_log:
            return
        self.log_frames += 1
        body = struct.pack("<I", 7) + text.encode() + b"\0"
        yield Send(encode_frame_header(len(body), DT_MESSAGE) + body)

    def _recv_frame(self, max_bytes: int, what: str) -> Op[bytes]:
        return (yield from recv_host_frame(max_bytes, what, "simulated XML DA"))

    def _recv_text(self, max_bytes: int, what: str) -> Op[str]:
        data = yield from self._recv_frame(max_bytes, what)
        if not data.endswith(b"\0") or b"\0" in data[:-1]:
            raise LocalProtocolError(
                f"simulated XML DA, {what}: not one NUL-terminated string: {data[:60]!r}"
            )
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise LocalProtocolError(f"simulated XML DA, {what}: {data[:60]!r}") from None

    def _expect_ok(self, what: str) -> Op[None]:
        text = yield from self._recv_text(_ANSWER_BYTES, what)
        if text != "OK":
            raise LocalProtocolError(f"simulated XML DA, {what}: host answered {text!r}, not OK")

    def _recv_value(self, what: str) -> Op[int]:
        """An ``OK@<number>`` answer (sizes, checksums); the DA's ``atoll`` takes hex too."""
        text = yield from self._recv_text(_ANSWER_BYTES, what)
        if not text.startswith("OK@"):
            raise LocalProtocolError(f"simulated XML DA, {what}: host answered {text!r}")
        return _number(text[3:], what)

    # -- the command loop ------------------------------------------------------------------------

    def serve(self) -> Op[None]:
        """Run the DA's command loop until REBOOT or a failed command.

        A command's effects (DA2 running, the halt after an error, the reboot) are settled
        before its CMD:END goes out: a host whose operation ends with its answer to CMD:END
        may drop this generator there (``run_pair``), and the next ``serve()`` goes on from
        the right state.
        """
        if self.stage == 0:
            self.stage = 1
        while not (self.shut_down or self.halted):
            yield from self._one_command()

    def _one_command(self) -> Op[None]:
        yield from self._log(f"[DA{self.stage}] ready for a command")
        yield from self._send_text(_document("CMD:START"))
        yield from self._expect_ok("answer to CMD:START")
        text = yield from self._recv_text(_COMMAND_BUFFER_BYTES[self.stage], "command")
        name, root = self._parse_command(text)
        self.commands.append(name)
        handler = self._handler(name)
        yield from self._send_text("OK" if handler is not None else "ERR!UNSUPPORTED")
        outcome: Outcome = ("ERR!UNSUPPORTED", "Unsupported command.")
        if name in self.faults.command_errors:
            outcome = ("ERR", self.faults.command_errors[name])
        elif handler is not None:
            outcome = yield from handler(root)
        if outcome[0] == "ERR":
            self.halted = True  # the DA leaves its command loop after a failure
        elif name == "BOOT-TO":
            self.stage = 2  # DA1 jumps to DA2, which starts its own command loop
        end = _document("CMD:END", ("result", outcome[0]), ("message", outcome[1]))
        yield from self._send_text(end)
        yield from self._expect_ok("answer to CMD:END")

    def _parse_command(self, text: str) -> tuple[str, ET.Element]:
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise LocalProtocolError(
                f"simulated XML DA: malformed command ({exc}): {text[:80]!r}"
            ) from None
        command = root.findtext("command") or ""
        version = root.findtext("version") or ""
        if root.tag != "da" or not command.startswith("CMD:") or not version.startswith("1."):
            raise LocalProtocolError(f"simulated XML DA: not a version 1 command: {text[:80]!r}")
        return command[4:], root

    def _handler(self, name: str) -> Callable[[ET.Element], Op[Outcome]] | None:
        allowed = _DA1_COMMANDS if self.stage == 1 else _DA2_COMMANDS
        if name not in allowed or name in self.faults.unsupported:
            return None
        if self.sla and name in _SECURITY_CONTROLLED:
            return None
        handler: Callable[[ET.Element], Op[Outcome]] = getattr(
            self, "_cmd_" + name.lower().replace("-", "_")
        )
        return handler

    # -- commands --------------------------------------------------------------------------------

    def _cmd_set_runtime_parameter(self, root: ET.Element) -> Op[Outcome]:
        names = ("checksum_level", "da_log_level", "log_channel", "battery_exist", "system_os")
        self.runtime = {name: _arg(root, name) for name in names}
        minor = (root.findtext("version") or "1.0").partition(".")[2]
        if minor != "0":  # version 1.1 and later carry <adv><initialize_dram>
            self.runtime["initialize_dram"] = _arg(root, "initialize_dram", section="adv")
        self.checksum_level = _CHECKSUM_LEVELS.get(self.runtime["checksum_level"].upper(), 0)
        return _OK
        yield  # a generator, like every handler

    def _cmd_host_supported_commands(self, root: ET.Element) -> Op[Outcome]:
        self.host_capability = _arg(root, "host_capability")
        return _OK
        yield

    def _cmd_set_host_info(self, root: ET.Element) -> Op[Outcome]:
        return _OK
        yield

    def _cmd_notify_init_hw(self, root: ET.Element) -> Op[Outcome]:
        yield from self._progress("init-hw")
        if self.stage == 1 and not self.dram_ready:
            if self.faults.dram_init_fails:
                return ("ERR", "DRAM Init FAIL.\n")
            self.dram_ready = True
        return _OK

    def _cmd_boot_to(self, root: ET.Element) -> Op[Outcome]:
        at = _number(_arg(root, "at_address"), "at_address")
        jump = _number(_arg(root, "jmp_address"), "jmp_address")
        source = _arg(root, "source_file")
        if at != DA_DRAM_BASE or jump != DA_DRAM_BASE:
            return ("ERR", "2nd DA address is invalid. reset.\n")
        image = bytearray()

        def sink(offset_bytes: int, chunk: bytes) -> None:
            image[offset_bytes:] = chunk

        failure = yield from self._download(
            "2nd-DA", source, self.da1_packet_bytes, _MAX_DA2_BYTES, sink, verify=False
        )
        if failure:
            return ("ERR", failure)
        if not self.dram_ready:  # DA2 went to DRAM nobody set up: what DA1 reads back is noise
            return (
                "ERR",
                "DA Hash mismatch. Check these: \n1. EMI setting cause DRAM is "
                "not stable.\n2. DRAM HW has some flaw.",
            )
        self.da2, self.boot_address = bytes(image), at
        return _OK

    def _cmd_get_sys_property(self, root: ET.Element) -> Op[Outcome]:
        key = _arg(root, "key")
        items = {"DA.SLA": "ENABLED" if self.sla else "DISABLED", "DA.VERSION": "mtkfs-sim"}
        body = "".join(
            f'<item key="{k}">{v}</item>'
            for k, v in items.items()
            if key.lower() in (k.lower(), "all")
        )
        doc = f'<?xml version="1.0" encoding="utf-8"?><sys_prop version="1.0">{body}</sys_prop>'
        yield from self._write_host_file("sys-prop", _arg(root, "target_file"), doc.encode())
        return _OK

    def _cmd_get_hw_info(self, root: ET.Element) -> Op[Outcome]:
        yield from self._write_host_file("HW-INFO", _arg(root, "target_file"), self._hw_info())
        return _OK

    def _hw_info(self) -> bytes:
        """The DA's ``da_hw_info`` 1.2 (real DAs print the gp sizes as 0; this one has them)."""
        sizes = self.store.region_sizes()
        if self.kind == "emmc":
            fields = ("boot1", "boot2", "rpmb", "user", "gp1", "gp2", "gp3", "gp4")
            body = "".join(f"<{n}_size>0x{sizes.get(n, 0):x}</{n}_size>" for n in fields)
            cid = b"SIMEMMC-CID-0001".hex()
            section = f"<emmc><block_size>0x200</block_size>{body}<id>{cid}</id></emmc>"
        else:
            body = "".join(
                f"<lua{i}_size>0x{sizes.get(f'lu{i}', 0):x}</lua{i}_size>" for i in range(3)
            )
            section = (
                f"<ufs><block_size>0x1000</block_size>{body}<lua3_size>0</lua3_size>"
                f"<id>{b'SIMUFS-CID-00001'.hex()}</id></ufs>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?><da_hw_info><version>1.2</version>'
            "<ram_size>0x100000000</ram_size><battery_voltage>3810</battery_voltage>"
            f"<random_id>{bytes(range(16)).hex()}</random_id><storage>{self.kind.upper()}</storage>"
            f"{section}<product_id></product_id></da_hw_info>"
        ).encode() + b"\0"

    def _cmd_read_partition_table(self, root: ET.Element) -> Op[Outcome]:
        entries = "".join(
            f"<pt><name>{name}</name><start>0x{start:x}</start><size>0x{size:x}</size></pt>"
            for name, start, size in self.partition_table
        )
        doc = (
            f'<?xml version="1.0" encoding="utf-8"?><partition_table version="1.0">'
            f"{entries}</partition_table>"
        )
        yield from self._write_host_file(
            "partition-table", _arg(root, "target_file"), doc.encode() + b"\0"
        )
        return _OK

    def _cmd_reboot(self, root: ET.Element) -> Op[Outcome]:
        action = _arg(root, "action").upper()
        if action not in ("IMMEDIATE", "WARM-RESET", "COLD-RESET", "DISCONNECT"):
            return ("ERR", f"Unknown reboot action: {action}\n")
        self.reboot_action, self.shut_down = action, True  # after CMD:END is answered
        return _OK
        yield

    def _section(self, root: ET.Element) -> tuple[str, str | None]:
        partition = _arg(root, "partition")
        for region in self.store.region_sizes():
            try:
                if xml_partition(self.kind, region).upper() == partition.upper():
                    return partition, region
            except LocalProtocolError:
                continue  # rpmb: no section
        return partition, None

    def _cmd_read_flash(self, root: ET.Element) -> Op[Outcome]:
        partition, region = self._section(root)
        offset, text = _number(_arg(root, "offset"), "offset"), _arg(root, "length")
        _arg(root, "target_file")
        if region is None:
            return ("ERR", f"Cannot find [{partition}] on current device storage.")
        size = self.store.region_sizes()[region]
        if offset >= size:
            return ("ERR", "base address is larger than partition max size.")
        length = size - offset if text.upper() == "MAX" else _number(text, "length")
        if length > size - offset:
            return (
                "ERR",
                f"Read length[{length:x}] is larger than partition max size[{size - offset:x}]",
            )
        self._check_aligned("READ-FLASH", offset, length)
        failure = yield from self._upload_flash(partition, region, offset, length)
        return ("ERR", failure) if failure else _OK

    def _cmd_write_flash(self, root: ET.Element) -> Op[Outcome]:
        partition, region = self._section(root)
        offset, source = _number(_arg(root, "offset"), "offset"), _arg(root, "source_file")
        if region is None:
            return ("ERR", f"Cannot find [{partition}] on current device storage.")
        size = self.store.region_sizes()[region]
        if offset >= size:
            return (
                "ERR",
                f"[{partition}]Base address[0x{offset:x}] is larger than partition max "
                f"size[0x{size:x}]",
            )
        length = yield from self._file_size(source)
        if length > size - offset:
            return (
                "ERR",
                f"Host file size[{length:x}] is larger than max partition available "
                f"size[{size - offset:x}]",
            )
        self._check_aligned("WRITE-FLASH", offset, length)
        yield from self._progress(partition)
        self.store.write(region, offset, bytes(length))  # the DA erases the range first

        def sink(offset_in_file: int, chunk: bytes) -> None:
            self.data_frame_sizes.append(len(chunk))
            self._write_packets += 1
            if self._write_packets == self.faults.corrupt_write_packet:
                chunk = chunk[:-1] + bytes([chunk[-1] ^ 0x80])
            if self._write_packets != self.faults.drop_write_packet:
                self.store.write(region, offset + offset_in_file, chunk)

        failure = yield from self._download(
            partition, source, self.packet_bytes, length, sink, verify=True
        )
        return ("ERR", failure) if failure else _OK

    def _check_aligned(self, what: str, offset: int, length: int) -> None:
        if offset % self.block_bytes or length % self.block_bytes:
            raise LocalProtocolError(
                f"simulated XML DA, {what}: 0x{offset:x}+0x{length:x} is not in whole "
                f"{self.block_bytes}-byte blocks (the host widens reads and pads writes)"
            )

    # -- what the DA asks of the host ------------------------------------------------------------

    def _progress(self, message: str) -> Op[None]:
        yield from self._send_text(_document("CMD:PROGRESS-REPORT", ("message", message)))
        yield from self._expect_ok("answer to PROGRESS-REPORT")
        for line in ("OK!PROGRESS@50@", "OK!PROGRESS@100@", "OK!EOT"):
            yield from self._send_text(line)
            yield from self._expect_ok("answer to " + line)

    def _file_size(self, path: str) -> Op[int]:
        doc = _document("CMD:FILE-SYS-OPERATION", ("key", "FILE-SIZE"), ("file_path", path))
        yield from self._send_text(doc)
        yield from self._expect_ok("answer to FILE-SYS-OPERATION")
        return (yield from self._recv_value("file size"))

    def _write_host_file(self, info: str, target: str, data: bytes) -> Op[None]:
        """``fp_write_host_file``: UPLOAD-FILE, then per packet ``OK`` (not ``OK@0x0``)."""
        yield from self._send_upload_file(info, target, self.packet_bytes)
        yield from self._send_text(f"OK@0x{len(data):x}")
        yield from self._expect_ok("answer to the upload size")
        for pos in range(0, len(data), self.packet_bytes):
            yield from self._send_text("OK")
            yield from self._expect_ok("answer to a packet status")
            yield from send_frame(data[pos : pos + self.packet_bytes])
            yield from self._expect_ok("answer to a packet")

    def _upload_flash(self, partition: str, region: str, offset: int, length: int) -> Op[str]:
        """``upload_data``: status ``OK@0x0`` (or ``ERR``) before each packet; "" when done."""
        yield from self._send_upload_file(partition, "ROM_0", self.packet_bytes)
        yield from self._send_text(f"OK@0x{length:x}")
        yield from self._expect_ok("answer to the readback size")
        done = 0
        while done < length:
            self._read_packets += 1
            if self._read_packets == self.faults.fail_read_packet:
                yield from self._send_text("ERR")
                return "read_storage() failed: MMC error.\n"
            size = min(self.packet_bytes, length - done)
            chunk = self.store.read(region, offset + done, size)
            if self._read_packets == self.faults.corrupt_read_packet:
                chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
            yield from self._send_text("OK@0x0")
            yield from self._expect_ok("echo of a packet status")
            if self._read_packets % 3 == 0:
                yield from self._log(f"[DA2] readback at 0x{offset + done:x}")
            yield from send_frame(chunk)
            yield from self._expect_ok("answer to a read packet")
            done += size
        return ""

    def _send_upload_file(self, info: str, target: str, packet: int) -> Op[None]:
        doc = _document(
            "CMD:UPLOAD-FILE",
            ("checksum", "CHK_NO"),
            ("info", info),
            ("target_file", target),
            ("packet_length", f"0x{packet:x}"),
        )
        yield from self._send_text(doc)
        yield from self._expect_ok("answer to UPLOAD-FILE")

    def _download(
        self,
        info: str,
        source: str,
        packet: int,
        limit: int,
        sink: Callable[[int, bytes], None],
        *,
        verify: bool,
    ) -> Op[str]:
        """``read_usb_proc``: the host's total, then per packet its checksum answer, the data,
        and the DA's status. Returns "" or the failure message (after an ``ERR`` sent)."""
        use_checksum = bool(self.checksum_level & _USB)
        doc = _document(
            "CMD:DOWNLOAD-FILE",
            ("checksum", "CHK_ADD" if use_checksum else "CHK_NO"),
            ("info", info),
            ("source_file", source),
            ("packet_length", f"0x{packet:x}"),
        )
        yield from self._send_text(doc)
        yield from self._expect_ok("answer to DOWNLOAD-FILE")
        total = yield from self._recv_value("download size")
        if total > limit:
            yield from self._send_text("ERR")
            return "Data size bigger than partition max size.\n"
        yield from self._send_text("OK")
        done = 0
        while done < total:
            host_sum = yield from self._recv_value("packet checksum")
            yield from self._send_text("OK")
            size = min(packet, total - done)
            chunk = yield from self._recv_frame(size, "download packet")
            if len(chunk) != size:
                raise LocalProtocolError(
                    f"simulated XML DA: packet of {len(chunk)} bytes, {size} due"
                )
            if verify and use_checksum and plain_checksum(chunk) & 0xFFFF != host_sum & 0xFFFF:
                yield from self._send_text("ERR")
                return (
                    f"USB checksum error, chksum in PC is 0x{host_sum:x}, chksum in RAM is "
                    f"0x{plain_checksum(chunk):x}\n"
                )
            sink(done, chunk)
            yield from self._send_text("OK@0x0" if verify else "OK")
            done += size
        return ""


def _document(command: str, *args: tuple[str, str]) -> str:
    root = ET.Element("host")
    ET.SubElement(root, "version").text = "1.0"
    ET.SubElement(root, "command").text = command
    if args:
        parent = ET.SubElement(root, "arg")
        for key, value in args:
            ET.SubElement(parent, key).text = value
    return '<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="unicode")


def _arg(root: ET.Element, name: str, *, section: str = "arg") -> str:
    """A required argument; the real DA answers ERR "Required XML node path not found", this
    strict one names the host's bug."""
    value = root.findtext(f"{section}/{name}")
    if value is None:
        command = root.findtext("command")
        raise LocalProtocolError(f"simulated XML DA, {command}: no <{section}/{name}> ({_XML_ERR})")
    return value.strip()


def _number(text: str, what: str) -> int:
    """The DA's ``atoll``: decimal, or hex with ``0x``."""
    try:
        return int(text[2:], 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise LocalProtocolError(f"simulated XML DA: {what} {text!r} is not a number") from None
