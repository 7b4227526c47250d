"""The XML DA's text layer: frames of text, the short answers (``OK@0x…``, ``ERR!…``), numbers,
and the XML documents both sides exchange — built and parsed defensively (device XML is
hostile: bounded, no DTD or entities). Split from :mod:`mtkfs.protocols.da_xml`, which holds
the command runner, the commands and the session. Sans-I/O.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from mtkfs.errors import (
    LocalProtocolError,
    RemoteProtocolError,
)
from mtkfs.protocols.base import Op, byte_sum16
from mtkfs.protocols.da_xflash import recv_frame, send_frame

log = logging.getLogger(__name__)

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'
CMD_START = "CMD:START"
CMD_END = "CMD:END"
#: What the host can serve when the DA asks (mtkclient's and penumbra's string).
HOST_CAPABILITY = (
    "CMD:DOWNLOAD-FILE^1@CMD:FILE-SYS-OPERATION^1@CMD:PROGRESS-REPORT^1@CMD:UPLOAD-FILE^1@"
)
RESULT_UNSUPPORTED = "ERR!UNSUPPORTED"
#: A stand-in host file name: the DA only echoes it back in its data-phase documents.
MEM_FILE = "MEM://0x0:0x{:x}"

#: DA1 reads a command into a 2 KiB buffer (XML_CMD_BUFF_LEN); DA2's is larger.
MAX_COMMAND_BYTES = 2048
#: The DA reads the host's answers into 64 bytes (CMD_RESULT_BUFF_LEN).
MAX_ACK_BYTES = 64
#: DA → host text (documents, answers). The DA builds its documents in ≤ 2 KiB buffers.
MAX_TEXT_BYTES = 64 * 1024
#: Uploaded documents (hardware info, system properties ≤ 512 KiB, partition table ≤ 16 KiB).
MAX_INFO_BYTES = 1024 * 1024
#: Packet lengths outside this are not plausible for a DA buffer.
MIN_PACKET_BYTES, MAX_PACKET_BYTES = 64, 64 * 1024 * 1024
#: DA requests within one command (WRITE-FLASH makes three), progress lines within one report.
MAX_REQUESTS = 64
MAX_PROGRESS_LINES = 1_000_000
#: Partition-table entries and name length accepted from READ-PARTITION-TABLE.
MAX_PARTITIONS, MAX_NAME_CHARS = 1024, 64
MAX_NUMBER_CHARS = 24

#: mtkfs regions in the order they are listed, and the DA's section for each (its
#: ``get_map_section_fields``). RPMB is left out: the DA has no section for it.
REGIONS = {
    "emmc": ("boot1", "boot2", "gp1", "gp2", "gp3", "gp4", "user"),
    "ufs": ("lu0", "lu1", "lu2"),
}
SECTIONS = {
    "emmc": {name: "EMMC-" + name.upper() for name in REGIONS["emmc"]},
    "ufs": {name: "UFS-LUA" + name[2:] for name in REGIONS["ufs"]},
}
DEFAULT_BLOCK_BYTES = {"emmc": 512, "ufs": 4096}


# ---------------------------------------------------------------------------------------------
# Text frames, answers, numbers
# ---------------------------------------------------------------------------------------------


def send_text(text: str, *, max_bytes: int = MAX_COMMAND_BYTES) -> Op[None]:
    """One frame holding ``text`` NUL-terminated (the length counts the NUL), as the DA reads
    every string: a buffer it can overflow, so the size is checked here."""
    data = text.encode("utf-8") + b"\0"
    if len(data) > max_bytes:
        raise LocalProtocolError(
            f"{len(data)}-byte message {text[:40]!r}: the DA takes {max_bytes}"
        )
    yield from send_frame(data)


def recv_text(what: str, *, max_bytes: int = MAX_TEXT_BYTES) -> Op[str]:
    """The next protocol frame as text (log frames skipped, trailing NULs dropped)."""
    payload = yield from recv_frame(max_bytes, what)
    body = payload.rstrip(b"\0")
    if b"\0" in body:
        raise RemoteProtocolError(f"{what}: a NUL inside the DA's text {body[:60]!r}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what}: the DA's text is not UTF-8: {body[:60]!r}") from None


def format_number(value: int) -> str:
    """``0x1f000``: how numbers go to the DA (mtkclient's ``hex()``; the DA's ``atoll``
    takes hex, as BOOT-TO's addresses prove)."""
    return f"0x{value:x}"


def parse_number(text: str, what: str) -> int:
    """A non-negative number from the DA: ``0x…`` hex or decimal, bounded in length."""
    text = text.strip()
    digits, base = (text[2:], 16) if text[:2].lower() == "0x" else (text, 10)
    if not digits or len(text) > MAX_NUMBER_CHARS or not digits.isascii() or not digits.isalnum():
        raise RemoteProtocolError(f"{what}: {text[:40]!r} is not a number")
    try:
        return int(digits, base)
    except ValueError:
        raise RemoteProtocolError(f"{what}: {text[:40]!r} is not a number") from None


@dataclass(frozen=True)
class Ack:
    """A short answer: ``OK`` / ``OK@<value>`` (ok, value) or ``ERR…`` (not ok, the text)."""

    ok: bool
    value: str = ""


def parse_ack(text: str, what: str) -> Ack:
    """``OK``, ``OK@value``, ``ERR``, ``ERR!…``; anything else means the two sides are out of
    step (a document where an answer belongs, or garbage)."""
    if text == "OK":
        return Ack(True)
    if text.startswith("OK@"):
        return Ack(True, text[3:])
    if text.startswith("ERR"):
        return Ack(False, text)
    raise RemoteProtocolError(f"{what}: expected OK or ERR from the DA, got {printable(text)!r}")


def send_ack(value: int | None = None) -> Op[None]:
    """``OK`` or ``OK@0x<value>`` (sizes, checksums, the answer to a file-size question)."""
    text = "OK" if value is None else "OK@" + format_number(value)
    yield from send_text(text, max_bytes=MAX_ACK_BYTES)


def printable(text: str, limit: int = 200) -> str:
    """The DA's words, safe for a message: control characters replaced, length bounded."""
    clean = "".join(c if c.isprintable() else " " for c in text).strip()
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def checksum_plain16(data: bytes) -> int:
    """The low 16 bits of MediaTek's ``checksum_plain`` (what the DA compares): the sum of the
    little-endian u32 words, then the ``len % 4`` tail bytes one by one.

    Modulo 65536 a word contributes only its two low bytes, ``b0 + 256 * b1``, so the sum is
    two strided byte sums — computed in C by :func:`byte_sum16` (a 1 MiB packet costs ~0.5 ms).
    """
    aligned = len(data) - len(data) % 4
    low = byte_sum16(data[0:aligned:4])
    high = byte_sum16(data[1:aligned:4])
    return (low + (high << 8) + sum(data[aligned:])) & 0xFFFF


# ---------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------


def build_command(
    name: str,
    args: Sequence[tuple[str, str]] = (),
    *,
    version: str = "1.0",
    adv: Sequence[tuple[str, str]] = (),
) -> str:
    """``<?xml …?><da><version>1.0</version><command>CMD:NAME</command><arg>…</arg></da>``
    (mtkclient's shape: one line, ``<arg>`` only when there are arguments; values escaped)."""
    root = ET.Element("da")
    ET.SubElement(root, "version").text = version
    ET.SubElement(root, "command").text = f"CMD:{name}"
    for section, items in (("arg", args), ("adv", adv)):
        if items:
            parent = ET.SubElement(root, section)
            for key, value in items:
                ET.SubElement(parent, key).text = value
    return XML_DECLARATION + ET.tostring(root, encoding="unicode")


def parse_document(text: str, what: str) -> ET.Element:
    """A document from the DA, parsed with the standard library after refusing DTDs (no entity
    can be declared, so none can expand); sizes are bounded by the frame that carried it."""
    lowered = text.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise RemoteProtocolError(f"{what}: the DA sent XML with a DTD or entity declaration")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise RemoteProtocolError(
            f"{what}: malformed XML from the DA ({exc}): {printable(text, 80)!r}"
        ) from None


def field(root: ET.Element, path: str) -> str | None:
    node = root.find(path)
    return None if node is None else (node.text or "").strip()


def required(root: ET.Element, path: str, what: str) -> str:
    value = field(root, path)
    if value is None:
        raise RemoteProtocolError(f"{what}: the DA's document has no <{path}>")
    return value


@dataclass(frozen=True)
class Request:
    """A document the DA sends within a command (CMD:END, CMD:UPLOAD-FILE …)."""

    command: str
    root: ET.Element

    def arg(self, name: str) -> str | None:
        return field(self.root, f"arg/{name}")


def recv_request(what: str) -> Op[Request]:
    root = parse_document((yield from recv_text(what)), what)
    command = field(root, "command") or ""
    if not command.startswith("CMD:"):
        raise RemoteProtocolError(f"{what}: a DA document without a command ({root.tag})")
    return Request(command, root)
