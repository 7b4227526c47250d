"""The XML ("V6") Download Agent protocol, host side, sans-I/O.

V6 DAs keep XFlash's 12-byte frame (:mod:`mtkfs.protocols.da_xflash`: magic 0xFEEEEEEF, type,
length; type 2 frames are DA log lines, skipped wherever they come) but put text in it: the
host's commands are XML documents, both sides' short answers are NUL-terminated strings
(``OK``, ``OK@0x1000``, ``ERR``, ``ERR!UNSUPPORTED``), and bulk data moves in *data phases* the
DA asks for with documents of its own. Every command is one round of the DA's command loop::

    D: <host>…<command>CMD:START</command></host>     H: OK
    H: <da><version>1.0</version><command>CMD:READ-FLASH</command><arg>…</arg></da>
    D: OK  (or ERR!UNSUPPORTED)
    D: CMD:UPLOAD-FILE / CMD:DOWNLOAD-FILE / CMD:FILE-SYS-OPERATION / CMD:PROGRESS-REPORT …
    D: <host>…<command>CMD:END</command><arg><result>OK</result><message/></arg></host>  H: OK

Facts come from ``../shared/reference/mtkclient.md`` §4.3, mtkclient's ``xml_lib.py`` /
``xml_cmd.py``, penumbra's ``da/xml`` and a public copy of the DA's own command loop and data
phases (``dagent_command_loop2``, ``upload_data``/``read_usb_proc``, ``fp_*_host_file``).
Choices that follow from them:

* **CMD:START is taken at the start of each command, not after CMD:END.** The DA leaves its
  command loop after any failed command (result ``ERR``): no CMD:START follows. Waiting for it
  at the end would hang on every error; taking it first (as penumbra does) ends a failed
  command at its CMD:END, with the DA's own message. ``ERR!UNSUPPORTED`` keeps the loop going.
* **Checksum level NONE** (what both public clients send), though the protocol has a USB
  level: with it the DA checks each WRITE-FLASH packet against the sum in the host's
  ``OK@0x<sum>``, but that sum is inferred (MediaTek's ``checksum_plain``: little-endian u32
  words, then the tail bytes, compared in 16 bits), not documented — a DA computing it otherwise
  would refuse every write. ``connect(checksum_level="USB")`` sends it (the simulator checks it).
  Reads carry no checksum at any level (UPLOAD-FILE is always CHK_NO): the transport verifies
  writes by reading back.
* **No EMI upload.** The XML DA1 sets DRAM up itself during NOTIFY-INIT-HW when the preloader
  has not (``initialize_dram YES``); there is no command that takes EMI settings, so
  ``--preloader`` is not needed and a DRAM failure says "use preloader mode".
* Device XML is hostile: every frame is bounded before it is read, documents with a DTD or
  entity declaration are refused, parse errors and odd values are RemoteProtocolError, the DA's
  messages are trimmed to printable text before they reach an exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    MtkfsError,
    OutOfRangeError,
    RemoteProtocolError,
    TransportError,
)
from mtkfs.protocols.base import Op
from mtkfs.protocols.brom import DeviceInfo
from mtkfs.protocols.da_session import DaSession
from mtkfs.protocols.da_xflash import recv_frame, send_frame
from mtkfs.protocols.dafile import DaEntry
from mtkfs.protocols.preloader_emi import EmiSettings
from mtkfs.protocols.xflash_storage import STORAGE_IDS, StorageInfo, StorageRegion, region_address
from mtkfs.protocols.xml_wire import (
    CMD_END,
    CMD_START,
    DEFAULT_BLOCK_BYTES,
    HOST_CAPABILITY,
    MAX_ACK_BYTES,
    MAX_INFO_BYTES,
    MAX_NAME_CHARS,
    MAX_PACKET_BYTES,
    MAX_PARTITIONS,
    MAX_PROGRESS_LINES,
    MAX_REQUESTS,
    MAX_TEXT_BYTES,
    MEM_FILE,
    MIN_PACKET_BYTES,
    REGIONS,
    RESULT_UNSUPPORTED,
    SECTIONS,
    Request,
    build_command,
    checksum_plain16,
    field,
    format_number,
    parse_ack,
    parse_document,
    parse_number,
    printable,
    recv_request,
    recv_text,
    required,
    send_ack,
    send_text,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# One command, with the data phases the DA asks for
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A host command and what it may exchange.

    Attributes:
        name: without ``CMD:`` (``READ-FLASH``).
        args, adv: the ``<arg>`` / ``<adv>`` children, in order.
        version: the document's version (SET-RUNTIME-PARAMETER 1.1 has ``<adv>``).
        upload_limit_bytes: the most the DA may upload (CMD:UPLOAD-FILE) in this command; an
            announced size above it is refused before a byte of it is read.
        download: the bytes to give when the DA asks for a file (CMD:DOWNLOAD-FILE).
        file_size_bytes: the answer to CMD:FILE-SYS-OPERATION ``FILE-SIZE``.
    """

    name: str
    args: tuple[tuple[str, str], ...] = ()
    adv: tuple[tuple[str, str], ...] = ()
    version: str = "1.0"
    upload_limit_bytes: int = 0
    download: bytes | None = None
    file_size_bytes: int | None = None

    def document(self) -> str:
        return build_command(self.name, self.args, version=self.version, adv=self.adv)


def _await_start(what: str) -> Op[None]:
    request = yield from recv_request(what + " (waiting for CMD:START)")
    if request.command != CMD_START:
        raise RemoteProtocolError(
            f"{what}: the DA sent {request.command} where CMD:START was due: the two sides are "
            "out of step; replug the phone"
        )
    yield from send_ack()


def run_command(command: Command, *, optional: bool = False) -> Op[bytes | None]:
    """CMD:START → the command → OK → the DA's requests, served → CMD:END → OK.

    Returns what the DA uploaded (``b""`` if nothing); None when ``optional`` and the DA does
    not know the command (``ERR!UNSUPPORTED``, after which its loop goes on). A CMD:END with
    ``ERR`` raises the error its message describes: the DA has then left its command loop.
    """
    what = f"CMD:{command.name}"
    yield from _await_start(what)
    yield from send_text(command.document())
    ack = parse_ack((yield from recv_text(what)), what)
    supported = ack.ok
    if not ack.ok and ack.value != RESULT_UNSUPPORTED:
        raise RemoteProtocolError(
            f"{what}: the DA could not take the command ({printable(ack.value)}); replug the phone"
        )
    uploaded = bytearray()
    completed = True
    for _ in range(MAX_REQUESTS):
        request = yield from recv_request(what)
        if request.command == CMD_END:
            yield from send_ack()
            return _finish(what, request, supported, completed, optional, bytes(uploaded))
        if not supported:
            raise RemoteProtocolError(
                f"{what}: after ERR!UNSUPPORTED the DA sent {request.command}"
            )
        done = yield from _serve(command, request, uploaded, what)
        completed = completed and done
    raise RemoteProtocolError(f"{what}: more than {MAX_REQUESTS} DA requests without CMD:END")


def _finish(
    what: str, end: Request, supported: bool, completed: bool, optional: bool, uploaded: bytes
) -> bytes | None:
    """The outcome of a command from its CMD:END (already acknowledged)."""
    result = end.arg("result") or ""
    message = end.arg("message") or ""
    if not supported or result == RESULT_UNSUPPORTED:
        if optional:
            log.debug("%s: not supported by this DA", what)
            return None
        raise RemoteProtocolError(
            f"{what}: this Download Agent does not support the command (ERR!UNSUPPORTED); try "
            "the DA file from the phone's own firmware package"
        )
    if result != "OK":
        raise end_error(what, message or result)
    if not completed:
        raise RemoteProtocolError(f"{what}: the DA broke off a data phase yet reported OK")
    return uploaded


def _serve(command: Command, request: Request, uploaded: bytearray, what: str) -> Op[bool]:
    """Serve one DA request; False when the DA broke the data phase off (its CMD:END says why)."""
    where = f"{what}, {request.command}"
    if request.command == "CMD:PROGRESS-REPORT":
        yield from _progress(request, where)
        return True
    if request.command == "CMD:FILE-SYS-OPERATION":
        yield from _file_sys_operation(request, command.file_size_bytes, where)
        return True
    if request.command == "CMD:DOWNLOAD-FILE":
        if command.download is None:
            raise RemoteProtocolError(f"{where}: the DA asks for a file this command has none of")
        return (yield from _download(request, command.download, where))
    if request.command == "CMD:UPLOAD-FILE":
        limit = command.upload_limit_bytes - len(uploaded)
        data = yield from _upload(request, limit, where)
        uploaded += data or b""
        return data is not None
    raise RemoteProtocolError(f"{what}: unexpected DA request {request.command}")


def _packet_bytes(request: Request, what: str, *, required: bool) -> int | None:
    text = request.arg("packet_length")
    if text is None:
        if required:
            raise RemoteProtocolError(f"{what}: no packet_length")
        return None
    value = parse_number(text, what + " packet_length")
    if not MIN_PACKET_BYTES <= value <= MAX_PACKET_BYTES:
        raise RemoteProtocolError(f"{what}: implausible packet_length {value}")
    return value


def _progress(request: Request, what: str) -> Op[None]:
    """OK, then ``OK!PROGRESS@<percent>@<text>`` lines, each acknowledged, until ``OK!EOT``."""
    log.debug("%s: %s", what, printable(request.arg("message") or ""))
    yield from send_ack()
    for _ in range(MAX_PROGRESS_LINES):
        line = yield from recv_text(what)
        yield from send_ack()
        if line == "OK!EOT":
            return
        if not line.startswith("OK!PROGRESS"):
            raise RemoteProtocolError(
                f"{what}: expected progress or OK!EOT, got {printable(line)!r}"
            )
    raise RemoteProtocolError(f"{what}: a progress report that never ends")


def _file_sys_operation(request: Request, file_size_bytes: int | None, what: str) -> Op[None]:
    """OK, then the answer as ``OK@…``: the "file" size, or that no such file exists."""
    key = request.arg("key") or ""
    if key == "FILE-SIZE" and file_size_bytes is not None:
        answer = format_number(file_size_bytes)
    elif key == "EXISTS":
        answer = "NOT-EXISTS"  # signature side files: mtkfs has none
    else:
        raise RemoteProtocolError(f"{what}: a host file operation mtkfs does not do: {key!r}")
    yield from send_ack()
    yield from send_text("OK@" + answer, max_bytes=MAX_ACK_BYTES)


def _download(request: Request, data: bytes, what: str) -> Op[bool]:
    """Host → DA: OK, OK@<total>; DA: OK; per packet H: OK@<checksum>, D: OK, H: data, D: OK."""
    packet = _packet_bytes(request, what, required=True)
    assert packet is not None
    checksum = (request.arg("checksum") or "CHK_NO").upper()
    if checksum not in ("CHK_NO", "CHK_ADD"):
        raise RemoteProtocolError(f"{what}: checksum kind {checksum!r} is not one mtkfs speaks")
    yield from send_ack()
    yield from send_ack(len(data))
    if not parse_ack((yield from recv_text(what)), what).ok:
        return False  # the DA refused the size; CMD:END follows with its reason
    for pos in range(0, len(data), packet):
        chunk = data[pos : pos + packet]
        yield from send_ack(checksum_plain16(chunk) if checksum == "CHK_ADD" else 0)
        if not parse_ack((yield from recv_text(what)), what).ok:
            return False
        yield from send_frame(chunk)
        if not parse_ack((yield from recv_text(f"{what} at +0x{pos:x}")), what).ok:
            return False
    return True


def _upload(request: Request, limit_bytes: int, what: str) -> Op[bytes | None]:
    """DA → host: OK; D: OK@<total>, H: OK; per packet D: OK…, H: OK, D: data, H: OK.

    The total is checked against ``limit_bytes`` and every packet against what is left before
    it is read. None when the DA reports ERR in place of a packet (a storage read failed; its
    CMD:END follows).
    """
    packet = _packet_bytes(request, what, required=False)
    yield from send_ack()
    head = parse_ack((yield from recv_text(what)), what)
    if not head.ok:
        return None
    total = parse_number(head.value or "0", what + " size")
    if total > limit_bytes:
        raise RemoteProtocolError(
            f"{what}: the DA announces {total} bytes where at most {limit_bytes} can come"
        )
    yield from send_ack()
    data = bytearray()
    while len(data) < total:
        if not parse_ack((yield from recv_text(what)), what).ok:
            return None
        yield from send_ack()
        left = total - len(data)
        chunk = yield from recv_frame(min(left, packet or left), f"{what} at +0x{len(data):x}")
        if not chunk:
            raise RemoteProtocolError(f"{what}: empty data packet at +0x{len(data):x}")
        data += chunk
        yield from send_ack()
    return bytes(data)


def end_error(what: str, message: str) -> MtkfsError:
    """The exception for a CMD:END with ``ERR``, from the DA's message (it carries no code)."""
    text = printable(message) or "no reason given"
    lower = text.lower()
    head = f"{what}: the Download Agent failed: {text!r}"
    exc: MtkfsError
    if any(w in lower for w in ("security deny", "not allowed", "forbidden", "not authenticated")):
        exc = AuthRequiredError(
            f"{head}: the phone's security policy forbids this and mtkfs does not bypass it; "
            "use the phone maker's DA and tool with the authorisation they require"
        )
    elif any(w in lower for w in ("larger than", "bigger than", "exceed")):
        exc = OutOfRangeError(f"{head}: the request lies beyond the end of that flash area")
    elif "hash mismatch" in lower or "2nd da" in lower:
        exc = TransportError(
            f"{head}: DA1 refused DA2 (the two stages do not belong together, or DRAM is "
            "unstable); use the DA file from the phone's own firmware package"
        )
    elif "dram" in lower:
        exc = TransportError(
            f"{head}: DA1 could not set DRAM up; connect in preloader mode instead (switch the "
            "phone off and plug it in without holding any button), where the preloader has"
        )
    elif "checksum" in lower:
        exc = TransportError(f"{head}: a packet was corrupted on the way; retrying may help")
        exc.temporary = True
    else:
        exc = TransportError(f"{head}; the DA stops taking commands after a failure: replug")
    return exc


# ---------------------------------------------------------------------------------------------
# The commands mtkfs uses
# ---------------------------------------------------------------------------------------------


def set_runtime_parameters(checksum_level: str = "USB") -> Op[None]:
    """SET-RUNTIME-PARAMETER 1.1: packet checksums (module doc), battery auto-detect, DA log on
    its UART (none interleaved on USB, though they are skipped anyway), Linux host, and DRAM
    set up by DA1 where the preloader has not (``<adv><initialize_dram>``)."""
    if checksum_level not in ("NONE", "USB", "STORAGE", "USB-STORAGE"):
        raise LocalProtocolError(f"checksum level {checksum_level!r}")
    args = (
        ("checksum_level", checksum_level),
        ("battery_exist", "AUTO-DETECT"),
        ("da_log_level", "INFO"),
        ("log_channel", "UART"),
        ("system_os", "LINUX"),
    )
    adv = (("initialize_dram", "YES"),)
    yield from run_command(Command("SET-RUNTIME-PARAMETER", args, adv, version="1.1"))


def host_supported_commands() -> Op[None]:
    """HOST-SUPPORTED-COMMANDS (older DAs lack it: tolerated, as penumbra does)."""
    yield from run_command(
        Command("HOST-SUPPORTED-COMMANDS", (("host_capability", HOST_CAPABILITY),)), optional=True
    )


def notify_init_hw() -> Op[None]:
    """NOTIFY-INIT-HW: DA1 sets DRAM up (from BROM) or DA2 its storage, reporting progress."""
    yield from run_command(Command("NOTIFY-INIT-HW"))


def boot_to(addr: int, da2: bytes) -> Op[None]:
    """BOOT-TO: DA1 downloads DA2 to ``addr`` (its DRAM base; anything else makes DA1 reset
    the phone), checks its hash, and jumps there after CMD:END. DA2's CMD:START comes next."""
    args = (
        ("at_address", format_number(addr)),
        ("jmp_address", format_number(addr)),
        ("source_file", MEM_FILE.format(len(da2))),
    )
    yield from run_command(Command("BOOT-TO", args, download=da2))


def get_sys_property(key: str) -> Op[str | None]:
    """GET-SYS-PROPERTY: the value of ``key`` (``<sys_prop><item key=…>value</item>``); None
    when the DA lacks the command or the property."""
    args = (("key", key), ("target_file", MEM_FILE.format(MAX_INFO_BYTES)))
    data = yield from run_command(
        Command("GET-SYS-PROPERTY", args, upload_limit_bytes=MAX_INFO_BYTES), optional=True
    )
    if data is None:
        return None
    root = parse_document(_decode_upload(data, "GET-SYS-PROPERTY"), "GET-SYS-PROPERTY")
    for item in root.iter("item"):
        if item.get("key") == key:
            return (item.text or "").strip()
    return None


def check_sla() -> Op[None]:
    """AuthRequiredError when the DA enforces SLA (``DA.SLA`` = ENABLED): it wants a challenge
    signed with the vendor's private key, which mtkfs does not have and will not forge."""
    value = yield from get_sys_property("DA.SLA")
    if value is None or value.upper() == "DISABLED":
        return
    if value.upper() == "ENABLED":
        raise AuthRequiredError(
            "the Download Agent requires SLA authentication (DA.SLA is ENABLED): it wants a "
            "vendor-signed challenge mtkfs does not forge. Use the phone maker's own DA/flash "
            "tool with its authorisation, or a DA without SLA for this phone"
        )
    raise RemoteProtocolError(f"GET-SYS-PROPERTY: DA.SLA is {printable(value, 40)!r}")


def get_hw_info() -> Op[StorageInfo]:
    """GET-HW-INFO: the storage, its block size and region sizes."""
    args = (("target_file", MEM_FILE.format(MAX_TEXT_BYTES)),)
    data = yield from run_command(Command("GET-HW-INFO", args, upload_limit_bytes=MAX_TEXT_BYTES))
    return parse_hw_info(data or b"")


def _decode_upload(data: bytes, what: str) -> str:
    try:
        return data.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what}: the uploaded document is not UTF-8") from None


def parse_hw_info(data: bytes) -> StorageInfo:
    """``<da_hw_info>`` → StorageInfo: eMMC boot1/boot2/gp1-4/user, UFS lu0-lu2 (LUA0-2;
    LUA3 is RPMB), nonzero sizes only. NAND, NOR and no storage are refused with a message."""
    what = "GET-HW-INFO"
    root = parse_document(_decode_upload(data, what), what)
    storage = required(root, "storage", what).upper()
    kind = storage.lower()
    if kind not in REGIONS:
        if storage == "NONE":
            raise TransportError(
                "the Download Agent reports no storage: it could not initialise the flash"
            )
        raise TransportError(
            f"the phone's storage is {printable(storage, 20)}: mtkfs reads eMMC and UFS "
            "through an XML DA"
        )
    section = root.find(kind)
    if section is None:
        raise RemoteProtocolError(f"{what}: storage {storage} without its <{kind}> section")
    block = parse_number(field(section, "block_size") or "0", what) or DEFAULT_BLOCK_BYTES[kind]
    if block & (block - 1) or not 512 <= block <= 65536:
        raise RemoteProtocolError(f"{what}: implausible block size {block}")
    regions = []
    for name in REGIONS[kind]:
        tag = f"{name}_size" if kind == "emmc" else f"lua{name[2:]}_size"  # lu0 → lua0_size
        size = parse_number(field(section, tag) or "0", f"{what} {tag}")
        if size >= 1 << 50:
            raise RemoteProtocolError(f"{what}: implausible {tag} {size}")
        if size:
            regions.append(StorageRegion(name, region_address(kind, name)[1], size))
    if not regions:
        raise TransportError(f"the Download Agent reports {storage} storage without any area")
    ident = field(section, "id") or field(section, "ufs_cid") or ""
    return StorageInfo(kind, STORAGE_IDS[kind], block, tuple(regions), _cid(ident))


def _cid(text: str) -> bytes:
    text = text[:128]
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode("ascii", "replace")


def xml_partition(kind: str, region: str) -> str:
    """The DA's section name for an mtkfs region (``user`` on eMMC → ``EMMC-USER``)."""
    try:
        return SECTIONS[kind][region]
    except KeyError:
        known = ", ".join(SECTIONS.get(kind, {})) or "none"
        raise LocalProtocolError(
            f"no XML DA section for region {region!r} on {kind!r} storage (known: {known})"
        ) from None


def read_flash(partition: str, offset_bytes: int, length_bytes: int) -> Op[bytes]:
    """READ-FLASH: exactly ``length_bytes`` at ``offset_bytes`` of a section (aligned by the
    caller); the DA uploads it in packets of its read packet length."""
    what = f"READ-FLASH {partition} 0x{offset_bytes:x}+0x{length_bytes:x}"
    args = (
        ("partition", partition),
        ("offset", format_number(offset_bytes)),
        ("length", format_number(length_bytes)),
        ("target_file", "ROM_0"),
    )
    data = yield from run_command(Command("READ-FLASH", args, upload_limit_bytes=length_bytes))
    if data is None or len(data) != length_bytes:
        got = 0 if data is None else len(data)
        raise RemoteProtocolError(f"{what}: the DA uploaded {got} bytes")
    return data


def write_flash(partition: str, offset_bytes: int, data: bytes) -> Op[None]:
    """WRITE-FLASH: the DA asks the "file" size (FILE-SYS-OPERATION), erases that range
    (PROGRESS-REPORT), then downloads the data (DOWNLOAD-FILE, checksummed per packet). Its OK
    is not proof the bytes stuck: the transport reads back."""
    args = (
        ("partition", partition),
        ("offset", format_number(offset_bytes)),
        ("source_file", MEM_FILE.format(len(data))),
    )
    yield from run_command(Command("WRITE-FLASH", args, download=data, file_size_bytes=len(data)))


def reboot(action: str = "IMMEDIATE") -> Op[None]:
    """REBOOT: the DA answers, then resets the phone (IMMEDIATE) or drops USB (DISCONNECT)
    once its CMD:END was acknowledged; no CMD:START follows."""
    yield from run_command(Command("REBOOT", (("action", action),)))


@dataclass(frozen=True)
class XmlPartition:
    """One entry of READ-PARTITION-TABLE: the DA's view of the GPT (byte offsets in the user
    area). ``name`` is device text: bounded and printable here, cleaned further by the maps."""

    name: str
    offset_bytes: int
    size_bytes: int


def _as_rows(op: Op[tuple[XmlPartition, ...]]) -> Op[tuple[tuple[str, int, int], ...]]:
    entries = yield from op
    return tuple((e.name, e.offset_bytes, e.size_bytes) for e in entries)


def read_partition_table() -> Op[tuple[XmlPartition, ...]]:
    """READ-PARTITION-TABLE: a cross-check of the GPT mtkfs parses itself."""
    args = (("target_file", MEM_FILE.format(MAX_TEXT_BYTES)),)
    command = Command("READ-PARTITION-TABLE", args, upload_limit_bytes=MAX_TEXT_BYTES)
    return parse_partition_table((yield from run_command(command)) or b"")


def parse_partition_table(data: bytes) -> tuple[XmlPartition, ...]:
    """``<partition_table><pt><name/><start/><size/></pt>…`` → entries, bounded."""
    what = "READ-PARTITION-TABLE"
    root = parse_document(_decode_upload(data, what), what)
    entries = root.findall("pt")
    if len(entries) > MAX_PARTITIONS:
        raise RemoteProtocolError(f"{what}: {len(entries)} partitions")
    table = []
    for entry in entries:
        name = required(entry, "name", what)
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise RemoteProtocolError(f"{what}: unusable partition name {name[:80]!r}")
        start = parse_number(required(entry, "start", what), f"{what} {name} start")
        size = parse_number(required(entry, "size", what), f"{what} {name} size")
        table.append(XmlPartition(name, start, size))
    return tuple(table)


# ---------------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XmlSession(DaSession):
    """What :func:`connect` learnt, and the XML operations on it (see
    :class:`~mtkfs.protocols.da_session.DaSession`). ``usb_speed`` is ``""``: the XML DA has
    no query for it that mtkfs relies on."""

    protocol: ClassVar[str] = "xml"

    def read(self, region: str, offset_bytes: int, size_bytes: int) -> Op[bytes]:
        return read_region(self.storage, region, offset_bytes, size_bytes)

    def write(self, region: str, offset_bytes: int, data: bytes) -> Op[None]:
        return write_region(self.storage, region, offset_bytes, data)

    def shutdown(self) -> Op[None]:
        return reboot()

    def read_partition_table(self) -> Op[tuple[XmlPartition, ...]]:
        return read_partition_table()

    def device_table(self) -> Op[tuple[tuple[str, int, int], ...]]:
        return _as_rows(read_partition_table())


def read_region(storage: StorageInfo, region: str, offset_bytes: int, size_bytes: int) -> Op[bytes]:
    """Exactly ``size_bytes`` at any ``offset_bytes``: READ-FLASH widened to whole blocks (kept
    within the region) and trimmed; the DA splits it into as many packets as it takes."""
    if offset_bytes < 0 or size_bytes < 0:
        raise LocalProtocolError(f"read of {size_bytes} bytes at {offset_bytes}")
    if size_bytes == 0:
        return b""
    partition = xml_partition(storage.kind, region)
    region_bytes = storage.region(region).size_bytes
    block = storage.block_size_bytes
    start = offset_bytes - offset_bytes % block
    # Widened to whole blocks, but not past the region's end (a request that itself goes past
    # it is left for the DA to refuse).
    end = -(-(offset_bytes + size_bytes) // block) * block
    end = min(end, max(region_bytes, offset_bytes + size_bytes))
    data = yield from read_flash(partition, start, end - start)
    head = offset_bytes - start
    return data if head == 0 and len(data) == size_bytes else data[head : head + size_bytes]


def write_region(storage: StorageInfo, region: str, offset_bytes: int, data: bytes) -> Op[None]:
    """WRITE-FLASH of ``data`` at a block-aligned offset, zero-padded to whole blocks (callers
    pass whole blocks; the transport reads-modifies-writes)."""
    block = storage.block_size_bytes
    if offset_bytes < 0 or offset_bytes % block:
        raise LocalProtocolError(f"write at {offset_bytes}: not {block}-aligned")
    if not data:
        return
    partition = xml_partition(storage.kind, region)
    storage.region(region)
    pad = -len(data) % block
    yield from write_flash(partition, offset_bytes, data + bytes(pad) if pad else data)


def connect(
    da2_addr: int, da2: bytes, *, connection_agent: str, checksum_level: str = "USB"
) -> Op[XmlSession]:
    """From DA1's first CMD:START to a stage-2 session ready for READ-FLASH/WRITE-FLASH.

    DA1: SET-RUNTIME-PARAMETER → HOST-SUPPORTED-COMMANDS → NOTIFY-INIT-HW (DRAM) → BOOT-TO.
    DA2: HOST-SUPPORTED-COMMANDS → NOTIFY-INIT-HW → GET-SYS-PROPERTY DA.SLA (refused if
    ENABLED, before any storage command) → GET-HW-INFO. ``connection_agent`` is the BROM
    layer's mode: the XML DA has no query for it.
    """
    yield from set_runtime_parameters(checksum_level)
    yield from host_supported_commands()
    yield from notify_init_hw()
    yield from boot_to(da2_addr, da2)
    yield from host_supported_commands()
    yield from notify_init_hw()
    yield from check_sla()
    storage = yield from get_hw_info()
    return XmlSession(connection_agent, storage, "")


def connect_entry(entry: DaEntry, info: DeviceInfo, emi: EmiSettings | None) -> Op[XmlSession]:
    """:func:`connect` for the agent ``entry`` of a V6 DA file (the transport's entry point):
    DA2 goes without its signature (DA1 checks it by hash). EMI settings are not used: the
    XML DA1 sets DRAM up itself (module doc)."""
    if emi is not None:
        log.debug("XML DA: DA1 sets DRAM up itself; the EMI settings (%s) are not sent", emi.name)
    # Checksum level NONE, as both public clients use: the USB level's sum is inferred, not
    # documented, and a DA that computes it otherwise would refuse every write; writes are
    # verified by reading them back anyway.
    return connect(
        entry.da2.load_addr, entry.da2_unsigned, connection_agent=info.mode, checksum_level="NONE"
    )
