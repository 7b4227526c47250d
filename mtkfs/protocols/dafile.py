"""The Download Agent file (``MTK_DOWNLOAD_AGENT`` container): parse it, pick the agent for a chip.

Why a parser of our own: mtkfs never ships a DA (DESIGN.md) — the user passes the one made for
their phone (``--da MTK_AllInOne_DA.bin``, ``DA_PL.bin``, ``MTK_DA_V5.bin`` …), so this file is
the only source of the two programs the BootROM and DA1 are sent: DA1 (region 1) and DA2
(region 2). It is also hostile input like any other: a truncated download or a crafted file must
end in a :class:`~mtkfs.errors.SourceError` that names the offset and what is wrong there, never
in an ``IndexError``, a wrong slice sent to a phone, or an allocation sized by a header field.

Layout (little-endian; facts from mtkclient's ``DA/daconfig.py`` and ``Tools/da_parser.py``,
corroborated by penumbra's ``src/da/da.rs`` — see ``../shared/reference/mtkclient.md`` §3)::

    0x00  32  "MTK_DOWNLOAD_AGENT", NUL padded
    0x20  64  identifier ("MTK_AllInOne_DA_v3…"; V6 files say "MTK_DA_v6")
    0x60   4  header version (4 in every file seen)
    0x64   4  magic 0x22668899
    0x68   4  entry count
    0x6C      entries, 0xDC bytes each ("new"), or 0xD8 ("old": no sw_version/reserved1)

    entry: u16 magic 0xDADA, hw_code (the *DA code*, e.g. 0x6765, not the BROM code 0x0766),
           hw_sub_code, hw_version, [sw_version, reserved1,] pagesize, reserved3,
           entry_region_index, entry_region_count, then 10 region slots of 5 × u32:
           file offset, length (incl. signature), load address, start offset, signature length.

Region 0 is file info / EMI (on V6 the same bytes as region 1), region 1 is DA1, region 2 is DA2.
DA1 goes to the BootROM *with* its signature (SEND_DA's sig_len tells the BROM how much of it is
signature); DA2 goes to DA1 *without* it (:attr:`DaStage.unsigned`), because DA1 checks DA2
against a hash it carries.

Which protocol an agent speaks: the container only tells V6 ("MTK_DA_v6" in the first 0x68
bytes ⇒ XML) from everything else; legacy and XFlash DAs share the container and nothing in it
tells them apart reliably. mtkfs therefore decides as mtkclient does (:meth:`DaFile.protocol_for`):
a V6 file means ``xml``; otherwise the chip family from :mod:`mtkfs.protocols.chips` decides. The
transport then confirms it on the wire: after JUMP_DA an XML DA1 sends a framed ``CMD:START``
while legacy and XFlash DA1s send the single byte 0xC0; after that byte a legacy DA pushes its
flash info unasked whereas an XFlash DA waits for the host's sync frame (inference from the
reference's §3.3/§4.1; a disagreement is a clear error, never a guess).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from mtkfs.errors import SourceError, UsageError
from mtkfs.protocols.chips import CHIPS, Chip, chip_for

__all__ = [
    "DESCRIPTION",
    "ENTRY_MAGIC",
    "ENTRY_STRIDE_NEW_BYTES",
    "ENTRY_STRIDE_OLD_BYTES",
    "HEADER_BYTES",
    "HEADER_MAGIC",
    "MAX_DA_FILE_BYTES",
    "PROTOCOL_LEGACY_OR_XFLASH",
    "PROTOCOL_XML",
    "REGION_SLOTS",
    "REGION_SLOT_BYTES",
    "V6_MARKER",
    "DaEntry",
    "DaFile",
    "DaRegion",
    "DaStage",
    "parse_da_file",
]

DESCRIPTION = b"MTK_DOWNLOAD_AGENT"
HEADER_MAGIC = 0x22668899
ENTRY_MAGIC = 0xDADA
V6_MARKER = b"MTK_DA_v6"

DESCRIPTION_BYTES = 0x20
IDENTIFIER_OFFSET = 0x20
IDENTIFIER_BYTES = 0x40
VERSION_OFFSET = 0x60
MAGIC_OFFSET = 0x64
COUNT_OFFSET = 0x68
#: The header ends (and the entry table starts) here.
HEADER_BYTES = 0x6C
#: mtkclient looks for the V6 marker in this many leading bytes (description, identifier, …).
V6_PROBE_BYTES = 0x68

ENTRY_STRIDE_NEW_BYTES = 0xDC
ENTRY_STRIDE_OLD_BYTES = 0xD8
#: The entry fields before the region slots: 10 u16 (new) or 8 u16 (old: no sw_version/reserved1).
_ENTRY_NEW = struct.Struct("<10H")
_ENTRY_OLD = struct.Struct("<8H")
_REGION = struct.Struct("<5I")
REGION_SLOTS = 10
REGION_SLOT_BYTES = _REGION.size

DA1_REGION = 1
DA2_REGION = 2

PROTOCOL_XML = "xml"
#: Legacy and XFlash DAs share the container: the chip table decides (module docstring).
PROTOCOL_LEGACY_OR_XFLASH = "legacy/xflash"

#: Real DA files are a few MiB (the largest all-in-one files tens of MiB); anything bigger is the
#: wrong file, and reading it whole would only waste memory.
MAX_DA_FILE_BYTES = 256 << 20


def _error(name: str, message: str) -> SourceError:
    return SourceError(f"DA file {name}: {message}")


def _text(raw: bytes) -> str:
    """A NUL-terminated header string, made safe to print (the file is untrusted)."""
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    return "".join(char if char.isprintable() else "?" for char in text)


@dataclass(frozen=True)
class DaRegion:
    """One region slot of an entry: a byte range of the file and where it is loaded.

    Attributes:
        index: the slot number (0 file info/EMI, 1 DA1, 2 DA2, …).
        slot_offset_bytes: where the slot itself sits in the file (for error messages).
        file_offset_bytes: where the region's bytes start in the file (``m_buf``).
        length_bytes: how many bytes, signature included (``m_len``).
        load_addr: where the device loads it (``m_start_addr``).
        start_offset: ``m_start_offset``, kept as read; penumbra observes it usually equals
            ``length_bytes - sig_len_bytes``. Nothing in the upload uses it.
        sig_len_bytes: how many of the trailing bytes are the signature (``m_sig_len``).
    """

    index: int
    slot_offset_bytes: int
    file_offset_bytes: int
    length_bytes: int
    load_addr: int
    start_offset: int
    sig_len_bytes: int

    @property
    def end_offset_bytes(self) -> int:
        """One past the region's last byte in the file."""
        return self.file_offset_bytes + self.length_bytes

    @property
    def body_length_bytes(self) -> int:
        """The region without its signature."""
        return self.length_bytes - self.sig_len_bytes


class DaStage(NamedTuple):
    """A stage ready to upload: ``(load_addr, payload, sig_len_bytes)``, payload incl. signature.

    DA1 is sent as it is (SEND_DA takes the signature length, the BROM verifies and strips it);
    DA2 is sent as :attr:`unsigned`.
    """

    load_addr: int
    payload: bytes
    sig_len_bytes: int

    @property
    def unsigned(self) -> bytes:
        """The payload without its trailing signature (what BOOT_TO sends for DA2).

        Written as a length slice, not ``payload[:-sig_len]``: with a zero-length signature the
        latter is empty (a bug mtkclient has).
        """
        return self.payload[: len(self.payload) - self.sig_len_bytes]

    @property
    def signature(self) -> bytes:
        """The trailing ``sig_len_bytes`` (empty when unsigned)."""
        return self.payload[len(self.payload) - self.sig_len_bytes :]


@dataclass(frozen=True)
class DaEntry:
    """One agent of the file: the DA for one chip (and hardware/software revision).

    Attributes:
        index: its position in the entry table.
        offset_bytes: where the entry sits in the file.
        hw_code: the DA code it is for (:attr:`Chip.da_code`, e.g. 0x6765), not the BROM code.
            0 marks a placeholder entry: checked like any other (it may have no regions) but
            never selected, as in mtkclient.
        hw_sub_code, hw_version, sw_version: the revisions it was built for (sw_version is 0 in
            the old 0xD8-byte format, which lacks the field).
        pagesize_bytes: the NAND page size field, as read.
        entry_region_index, entry_region_count: as read (IoT files start stage 1 at the index).
        regions: the ``entry_region_count`` used slots, checked against the file.
        file_name: the file it came from (for messages).
    """

    index: int
    offset_bytes: int
    hw_code: int
    hw_sub_code: int
    hw_version: int
    sw_version: int
    pagesize_bytes: int
    entry_region_index: int
    entry_region_count: int
    regions: tuple[DaRegion, ...]
    file_name: str
    _data: bytes = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """``agent 0 (DA code 0x6765, hw_ver 0xCA00, sw_ver 0x0000) at 0x6C``."""
        return (
            f"agent {self.index} (DA code {self.hw_code:#06x}, hw_ver {self.hw_version:#06x}, "
            f"sw_ver {self.sw_version:#06x}) at {self.offset_bytes:#x}"
        )

    def region_bytes(self, index: int) -> bytes:
        """The bytes of region ``index``, signature included."""
        region = self._region(index, f"region {index}")
        return self._data[region.file_offset_bytes : region.end_offset_bytes]

    def stage(self, index: int, what: str) -> DaStage:
        """Region ``index`` as an upload; ``what`` names it in errors ("DA1")."""
        region = self._region(index, what)
        if region.body_length_bytes <= 0:
            raise _error(
                self.file_name,
                f"{self.label}: {what} (region {index}, slot at {region.slot_offset_bytes:#x}) "
                f"has {region.length_bytes:#x} bytes of which {region.sig_len_bytes:#x} are "
                "signature: no program to upload",
            )
        payload = self._data[region.file_offset_bytes : region.end_offset_bytes]
        return DaStage(region.load_addr, payload, region.sig_len_bytes)

    @property
    def da1(self) -> DaStage:
        """Stage 1, sent to the BootROM with SEND_DA (signature included)."""
        return self.stage(DA1_REGION, "DA1")

    @property
    def da2(self) -> DaStage:
        """Stage 2, sent to DA1 (use :attr:`da2_unsigned` for the bytes on the wire)."""
        return self.stage(DA2_REGION, "DA2")

    @property
    def da2_unsigned(self) -> bytes:
        """DA2 without its signature: what DA1 is sent (it checks DA2 by a hash it carries)."""
        return self.da2.unsigned

    @property
    def info_region(self) -> DaRegion | None:
        """Region 0: file info / EMI settings (on V6 the same bytes as DA1); None if absent."""
        return self.regions[0] if self.regions else None

    def _region(self, index: int, what: str) -> DaRegion:
        if index >= len(self.regions):
            raise _error(
                self.file_name,
                f"{self.label} has {len(self.regions)} region(s): no region {index} ({what})",
            )
        return self.regions[index]


@dataclass(frozen=True)
class DaFile:
    """A parsed DA file: its header and agents.

    Attributes:
        name: what the user called it (for messages).
        size_bytes: the file's size.
        description: the first header string (``MTK_DOWNLOAD_AGENT``).
        identifier: the build string (``MTK_AllInOne_DA_v3.3001…``), made printable.
        version: the header version (4 in every file seen).
        entry_stride_bytes: 0xDC (new) or 0xD8 (old) — as detected.
        is_v6: "MTK_DA_v6" is in the first 0x68 bytes: the agents speak XML.
        entries: every entry of the table, in file order (placeholders included).
    """

    name: str
    size_bytes: int
    description: str
    identifier: str
    version: int
    entry_stride_bytes: int
    is_v6: bool
    entries: tuple[DaEntry, ...]

    @property
    def protocol(self) -> str:
        """``xml`` for a V6 file, else ``legacy/xflash`` (the container cannot say which)."""
        return PROTOCOL_XML if self.is_v6 else PROTOCOL_LEGACY_OR_XFLASH

    def protocol_for(self, chip: Chip) -> str:
        """The protocol to speak with ``chip``'s agent from this file: ``xml`` for a V6 file
        (whatever the chip table says, as mtkclient), else the chip family's (``legacy`` or
        ``xflash``; ``legacy`` for chips mtkfs does not know, mtkclient's default). The
        transport confirms it by the DA's first sync (module docstring)."""
        return PROTOCOL_XML if self.is_v6 else chip.protocol

    @property
    def da_codes(self) -> list[int]:
        """The DA codes the file has agents for, sorted, placeholders left out."""
        return sorted({entry.hw_code for entry in self.entries if entry.hw_code})

    def select(
        self, hw_code: int, hw_sub_code: int = 0, hw_ver: int = 0, sw_ver: int = 0
    ) -> DaEntry:
        """The agent for a device that said ``hw_code`` (GET_HW_CODE) and ``hw_sub_code``,
        ``hw_ver``, ``sw_ver`` (GET_HW_SW_VER).

        mtkclient's rule: among the entries whose hw_code is the chip's DA code, in file order,
        the first with ``hw_version <= hw_ver`` (or ``hw_ver`` 0) and ``sw_version <= sw_ver``
        (or ``sw_ver`` 0). ``hw_sub_code`` plays no part (mtkclient ignores it too); it is taken
        so callers pass what the device said and messages can show it.

        Raises:
            UsageError: no agent fits: the message lists what the file has and what the
                device is, so the user knows which DA file to get.
            SourceError: the agent that fits lacks DA1 or DA2 (a damaged or crafted file).
        """
        chip = chip_for(hw_code)
        candidates = [e for e in self.entries if e.hw_code and e.hw_code == chip.da_code]
        for entry in candidates:
            if (hw_ver == 0 or entry.hw_version <= hw_ver) and (
                sw_ver == 0 or entry.sw_version <= sw_ver
            ):
                _ = entry.da1, entry.da2  # fail now, not halfway through an upload
                return entry
        device = _describe_device(chip, hw_code)
        if not candidates:
            codes = ", ".join(f"{code:#06x}" for code in self.da_codes) or "no chip at all"
            raise UsageError(
                f"DA file {self.name} has agents for {codes}; this device is {device}: "
                "get the DA file for your phone's chip"
            )
        have = ", ".join(
            f"hw_ver {e.hw_version:#06x} sw_ver {e.sw_version:#06x}" for e in candidates
        )
        raise UsageError(
            f"DA file {self.name} has agents for DA code {chip.da_code:#06x} ({have}), but none "
            f"for this revision: the device ({device}) reports hw_sub_code {hw_sub_code:#06x}, "
            f"hw_ver {hw_ver:#06x}, sw_ver {sw_ver:#06x} and an agent's versions must not exceed "
            "the device's: get a DA file made for this phone"
        )

    def describe(self) -> str:
        """A few lines for ``--debug`` logs: header, then one line per agent."""
        lines = [
            f"{self.name}: {self.identifier!r} version {self.version}, "
            f"{len(self.entries)} agent(s) of {self.entry_stride_bytes:#x} bytes, "
            f"protocol {self.protocol}"
        ]
        for entry in self.entries:
            regions = ", ".join(
                f"{r.index}: {r.length_bytes:#x}@{r.file_offset_bytes:#x}→{r.load_addr:#x}"
                f" sig {r.sig_len_bytes:#x}"
                for r in entry.regions
            )
            lines.append(f"  {entry.label}: {regions or 'no regions'}")
        return "\n".join(lines)


def _describe_device(chip: Chip, hw_code: int) -> str:
    if hw_code in CHIPS:
        return f"{chip.name} (BROM {hw_code:#06x}, DA code {chip.da_code:#06x})"
    return (
        f"a chip mtkfs does not know (BROM {hw_code:#06x}, so DA code {chip.da_code:#06x} "
        "is assumed)"
    )


def parse_da_file(data: bytes, name: str) -> DaFile:
    """Parse a whole DA file held in ``data``; ``name`` is what messages call it.

    Pure: no I/O; every offset the file states is checked against ``len(data)`` before use, and
    nothing is allocated by a size the file states (regions stay slices of ``data``, cut on
    demand).

    The entry stride: mtkclient's rule first (``DA DA`` at 0x6C + 0xD8 ⇒ 0xD8, the second
    entry's magic; else 0xDC). That rule cannot see a one-entry old file, so when the table does
    not check out with the stride it picked, the other stride is tried; if neither does, the
    error of the first is raised.

    Raises:
        SourceError: not a DA file, or a truncated or inconsistent one (offset and field named).
    """
    size = len(data)
    if size < HEADER_BYTES:
        raise _error(
            name,
            f"{size} bytes: too short for the {HEADER_BYTES:#x}-byte header "
            "(truncated, or not a Download Agent file)",
        )
    (magic,) = struct.unpack_from("<I", data, MAGIC_OFFSET)
    if magic != HEADER_MAGIC:
        raise _error(
            name,
            f"not a MediaTek Download Agent file: magic at {MAGIC_OFFSET:#x} is {magic:#010x}, "
            f"expected {HEADER_MAGIC:#010x} (a DA file starts with {DESCRIPTION.decode()})",
        )
    (version,) = struct.unpack_from("<I", data, VERSION_OFFSET)
    (count,) = struct.unpack_from("<I", data, COUNT_OFFSET)
    if count == 0:
        raise _error(name, f"entry count at {COUNT_OFFSET:#x} is 0: the file holds no agents")
    probe = data[HEADER_BYTES + ENTRY_STRIDE_OLD_BYTES : HEADER_BYTES + ENTRY_STRIDE_OLD_BYTES + 2]
    strides = (ENTRY_STRIDE_NEW_BYTES, ENTRY_STRIDE_OLD_BYTES)
    if probe == ENTRY_MAGIC.to_bytes(2, "little"):
        strides = strides[::-1]
    first_error: SourceError | None = None
    for stride in strides:
        try:
            entries = _parse_entries(data, name, count, stride)
        except SourceError as exc:
            first_error = first_error or exc
            continue
        return DaFile(
            name=name,
            size_bytes=size,
            description=_text(data[:DESCRIPTION_BYTES]),
            identifier=_text(data[IDENTIFIER_OFFSET : IDENTIFIER_OFFSET + IDENTIFIER_BYTES]),
            version=version,
            entry_stride_bytes=stride,
            is_v6=V6_MARKER in data[:V6_PROBE_BYTES],
            entries=entries,
        )
    assert first_error is not None
    raise first_error


def _parse_entries(data: bytes, name: str, count: int, stride: int) -> tuple[DaEntry, ...]:
    """The ``count`` entries at ``stride``, each checked against the file; SourceError if not."""
    size = len(data)
    table_end = HEADER_BYTES + count * stride
    if table_end > size:
        raise _error(
            name,
            f"entry count {count} at {COUNT_OFFSET:#x} needs a table of {count} × {stride:#x} "
            f"bytes ending at {table_end:#x}, but the file has {size:#x} bytes "
            "(truncated, or a corrupt count)",
        )
    entries = []
    for index in range(count):
        offset = HEADER_BYTES + index * stride
        if stride == ENTRY_STRIDE_NEW_BYTES:
            fields = _ENTRY_NEW.unpack_from(data, offset)
            magic, hw_code, hw_sub_code, hw_version, sw_version = fields[:5]
            pagesize, region_index, region_count = fields[6], fields[8], fields[9]
            slots_at = offset + _ENTRY_NEW.size
        else:
            magic, hw_code, hw_sub_code, hw_version, pagesize, _, region_index, region_count = (
                _ENTRY_OLD.unpack_from(data, offset)
            )
            sw_version = 0
            slots_at = offset + _ENTRY_OLD.size
        where = f"entry {index} at {offset:#x} ({stride:#x}-byte entries)"
        if magic != ENTRY_MAGIC:
            raise _error(name, f"{where}: magic {magic:#06x}, expected {ENTRY_MAGIC:#06x}")
        # A placeholder (hw_code 0) may be empty; a real agent with no region is a misread.
        least = 1 if hw_code else 0
        if not least <= region_count <= REGION_SLOTS:
            raise _error(
                name,
                f"{where}: region count {region_count} at {slots_at - 2:#x} "
                f"is not {least}..{REGION_SLOTS}",
            )
        regions = tuple(
            _parse_region(data, name, where, slot, slots_at + slot * REGION_SLOT_BYTES)
            for slot in range(region_count)
        )
        entries.append(
            DaEntry(
                index=index,
                offset_bytes=offset,
                hw_code=hw_code,
                hw_sub_code=hw_sub_code,
                hw_version=hw_version,
                sw_version=sw_version,
                pagesize_bytes=pagesize,
                entry_region_index=region_index,
                entry_region_count=region_count,
                regions=regions,
                file_name=name,
                _data=data,
            )
        )
    return tuple(entries)


def _parse_region(data: bytes, name: str, where: str, slot: int, slot_offset: int) -> DaRegion:
    file_offset, length, load_addr, start_offset, sig_len = _REGION.unpack_from(data, slot_offset)
    what = f"{where}: region {slot} (slot at {slot_offset:#x})"
    if sig_len > length:
        raise _error(
            name, f"{what}: signature of {sig_len:#x} bytes is longer than the region ({length:#x})"
        )
    if file_offset + length > len(data):
        raise _error(
            name,
            f"{what}: bytes {file_offset:#x}..{file_offset + length:#x} run past the end of the "
            f"file ({len(data):#x} bytes): truncated download, or a corrupt entry",
        )
    return DaRegion(slot, slot_offset, file_offset, length, load_addr, start_offset, sig_len)
