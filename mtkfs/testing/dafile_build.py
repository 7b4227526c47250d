"""Synthetic Download Agent files in the real ``MTK_DOWNLOAD_AGENT`` container format.

Why: mtkfs never ships a DA, not even in its tests (DESIGN.md), yet the DA parser, the BROM
upload and the device simulator all need DA files. These are the real container — header,
entry table in either stride, region slots, signatures at the end of each region — around
programs that are just labelled bytes (no real DA code), with fake signatures of any length.

The layout follows :mod:`mtkfs.protocols.dafile` (and so mtkclient's facts): region 0 file
info/EMI, region 1 DA1, region 2 DA2. Payloads follow the entry table back to back, in entry
then region order; regions with identical bytes and slot values are stored once (on V6, region
0 *is* region 1, as in real files). Deterministic: the same arguments give the same bytes.

``python -m mtkfs.testing.dafile_build OUT.bin [--v6] 0x6765 0x6768`` writes one from the shell.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mtkfs.protocols.dafile import (
    DESCRIPTION,
    ENTRY_MAGIC,
    ENTRY_STRIDE_NEW_BYTES,
    ENTRY_STRIDE_OLD_BYTES,
    HEADER_BYTES,
    HEADER_MAGIC,
    REGION_SLOT_BYTES,
    REGION_SLOTS,
    V6_MARKER,
)

__all__ = [
    "DEFAULT_DA1_ADDR",
    "DEFAULT_DA2_ADDR",
    "DEFAULT_SIG_LEN_BYTES",
    "AgentSpec",
    "RegionSpec",
    "agent",
    "build_da_file",
    "build_for_codes",
    "entry_offset",
    "fake_signature",
    "main",
    "region_slot_offset",
    "synthetic_program",
]

#: mtkclient's default DA1 load address and a typical DA2 one (DRAM).
DEFAULT_DA1_ADDR = 0x200000
DEFAULT_DA2_ADDR = 0x40000000
#: RSA-2048 signatures are 0x100 bytes.
DEFAULT_SIG_LEN_BYTES = 0x100
#: A typical (hw_sub_code, hw_version) pair as BROMs report it.
DEFAULT_HW_SUB_CODE = 0x8A00
DEFAULT_HW_VERSION = 0xCA00


def fake_signature(body: bytes, sig_len_bytes: int) -> bytes:
    """``sig_len_bytes`` that look like a signature of ``body`` (SHAKE-256; verifies nothing)."""
    return hashlib.shake_256(b"mtkfs fake DA signature:" + body).digest(sig_len_bytes)


def synthetic_program(label: str, size_bytes: int = 256) -> bytes:
    """A stand-in for DA code: ``MTKFS-SYNTHETIC-<label>`` then deterministic filler.

    The marker lets a simulator tell which stage (and which agent) it was sent.
    """
    marker = f"MTKFS-SYNTHETIC-{label}\0".encode()
    filler = hashlib.shake_256(marker).digest(max(0, size_bytes - len(marker)))
    return (marker + filler)[:size_bytes]


@dataclass(frozen=True)
class RegionSpec:
    """One region: its program bytes, where it loads, and its signature.

    Attributes:
        body: the bytes before the signature.
        load_addr: ``m_start_addr``.
        sig_len_bytes: the signature's length (0: unsigned, as in IoT files).
        signature: the signature bytes; None → :func:`fake_signature`.
        start_offset: ``m_start_offset``; None → ``len(body)`` (what real files hold there).
    """

    body: bytes
    load_addr: int = 0
    sig_len_bytes: int = DEFAULT_SIG_LEN_BYTES
    signature: bytes | None = None
    start_offset: int | None = None

    @property
    def payload(self) -> bytes:
        """Body then signature: the region's bytes in the file."""
        signature = self.signature
        if signature is None:
            signature = fake_signature(self.body, self.sig_len_bytes)
        if len(signature) != self.sig_len_bytes:
            raise ValueError(
                f"signature is {len(signature)} bytes, sig_len is {self.sig_len_bytes}"
            )
        return self.body + signature


@dataclass(frozen=True)
class AgentSpec:
    """One entry of the table.

    Attributes:
        da_code: the entry's hw_code (a DA code such as 0x6765; 0 makes a placeholder).
        regions: up to 10 regions (slot order); the usual three are info, DA1, DA2.
        hw_sub_code, hw_version, sw_version: the revisions it claims (sw_version must be 0 in
            the old 0xD8 format, which has no such field).
        pagesize_bytes, entry_region_index: stored as given.
        entry_magic: the entry's magic (change it only to build broken files).
    """

    da_code: int
    regions: tuple[RegionSpec, ...]
    hw_sub_code: int = DEFAULT_HW_SUB_CODE
    hw_version: int = DEFAULT_HW_VERSION
    sw_version: int = 0
    pagesize_bytes: int = 0x200
    entry_region_index: int = 1
    entry_magic: int = ENTRY_MAGIC


def agent(
    da_code: int,
    *,
    da1: bytes | None = None,
    da2: bytes | None = None,
    da1_addr: int = DEFAULT_DA1_ADDR,
    da2_addr: int = DEFAULT_DA2_ADDR,
    sig_len_bytes: int = DEFAULT_SIG_LEN_BYTES,
    da2_sig_len_bytes: int | None = None,
    hw_version: int = DEFAULT_HW_VERSION,
    sw_version: int = 0,
    hw_sub_code: int = DEFAULT_HW_SUB_CODE,
    v6: bool = False,
) -> AgentSpec:
    """The usual three-region agent for ``da_code``: info/EMI, DA1, DA2.

    Programs default to :func:`synthetic_program` labelled ``<code>-DA1``/``-DA2``; on V6
    region 0 repeats DA1 (as in real V6 files), otherwise it is a small info blob.
    """
    code = f"{da_code:04x}"
    stage1 = RegionSpec(
        da1 if da1 is not None else synthetic_program(f"{code}-DA1"), da1_addr, sig_len_bytes
    )
    stage2 = RegionSpec(
        da2 if da2 is not None else synthetic_program(f"{code}-DA2", 512),
        da2_addr,
        sig_len_bytes if da2_sig_len_bytes is None else da2_sig_len_bytes,
    )
    info = stage1 if v6 else RegionSpec(synthetic_program(f"{code}-INFO", 64), da1_addr, 0)
    return AgentSpec(
        da_code,
        (info, stage1, stage2),
        hw_sub_code=hw_sub_code,
        hw_version=hw_version,
        sw_version=sw_version,
    )


def entry_offset(index: int, *, old_stride: bool = False) -> int:
    """Where entry ``index`` sits in a file (to patch built files into broken ones)."""
    stride = ENTRY_STRIDE_OLD_BYTES if old_stride else ENTRY_STRIDE_NEW_BYTES
    return HEADER_BYTES + index * stride


def region_slot_offset(index: int, slot: int, *, old_stride: bool = False) -> int:
    """Where region slot ``slot`` of entry ``index`` sits (5 × u32: offset, len, addr, …)."""
    fields_bytes = 16 if old_stride else 20
    return entry_offset(index, old_stride=old_stride) + fields_bytes + slot * REGION_SLOT_BYTES


def build_da_file(
    agents: Sequence[AgentSpec],
    *,
    v6: bool = False,
    old_stride: bool = False,
    identifier: str | None = None,
    version: int = 4,
    count: int | None = None,
) -> bytes:
    """A DA file holding ``agents``.

    Args:
        v6: put the V6 marker in the identifier (unless ``identifier`` is given).
        old_stride: 0xD8-byte entries (no sw_version field) instead of 0xDC.
        identifier: the 64-byte build string; default a V5 or V6 looking one.
        version: the header version field.
        count: the entry count to write (default ``len(agents)``; for broken files).
    """
    if identifier is None:
        identifier = (
            f"{V6_MARKER.decode()}_mtkfs_synthetic" if v6 else "MTK_AllInOne_DA_v3_mtkfs_synthetic"
        )
    header = struct.pack(
        "<32s64sIII",
        DESCRIPTION,
        identifier.encode(),
        version,
        HEADER_MAGIC,
        len(agents) if count is None else count,
    )
    stride = ENTRY_STRIDE_OLD_BYTES if old_stride else ENTRY_STRIDE_NEW_BYTES
    table = bytearray(len(agents) * stride)
    payloads = bytearray()
    stored: dict[tuple[bytes, int, int], int] = {}
    payload_start = HEADER_BYTES + len(table)
    for index, spec in enumerate(agents):
        if len(spec.regions) > REGION_SLOTS:
            raise ValueError(f"{len(spec.regions)} regions: an entry has {REGION_SLOTS} slots")
        if old_stride and spec.sw_version:
            raise ValueError("the old 0xD8-byte entry has no sw_version field")
        offset = entry_offset(index, old_stride=old_stride)
        head: tuple[int, ...] = (spec.entry_magic, spec.da_code, spec.hw_sub_code, spec.hw_version)
        if not old_stride:
            head += (spec.sw_version, 0)
        head += (spec.pagesize_bytes, 0, spec.entry_region_index, len(spec.regions))
        struct.pack_into(f"<{len(head)}H", table, offset - HEADER_BYTES, *head)
        for slot, region in enumerate(spec.regions):
            payload = region.payload
            key = (payload, region.load_addr, region.sig_len_bytes)
            if key not in stored:
                stored[key] = payload_start + len(payloads)
                payloads += payload
            start = len(region.body) if region.start_offset is None else region.start_offset
            struct.pack_into(
                "<5I",
                table,
                region_slot_offset(index, slot, old_stride=old_stride) - HEADER_BYTES,
                stored[key],
                len(payload),
                region.load_addr,
                start,
                region.sig_len_bytes,
            )
    return header + bytes(table) + bytes(payloads)


def build_for_codes(da_codes: Iterable[int], *, v6: bool = False) -> bytes:
    """One standard agent per DA code (what the simulator and most tests need)."""
    return build_da_file([agent(code, v6=v6) for code in da_codes], v6=v6)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtkfs.testing.dafile_build OUT [--v6] [--old-stride] CODE…``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("codes", nargs="+", type=lambda text: int(text, 0), metavar="DA_CODE")
    parser.add_argument("--v6", action="store_true")
    parser.add_argument("--old-stride", action="store_true")
    args = parser.parse_args(argv)
    agents = [agent(code, v6=args.v6) for code in args.codes]
    args.out.write_bytes(build_da_file(agents, v6=args.v6, old_stride=args.old_stride))
    return 0


if __name__ == "__main__":
    sys.exit(main())
