"""Builders for boot-image fixtures: a cpio newc archive (what AOSP's mkbootfs writes) and
MediaTek's 512-byte header. Debian's mkbootimg lays out the image itself."""

from __future__ import annotations

import struct

MTK_MAGIC = 0x58881688


def newc(entries: list[tuple[str, int, bytes]], mtime_s: int = 1_600_000_000) -> bytes:
    """A cpio newc archive of (name, mode, data), ending with the TRAILER!!! entry."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, mtime_s, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def mtk(name: bytes, payload: bytes) -> bytes:
    """``payload`` behind a MediaTek header (old style: 0xFF after the name)."""
    return struct.pack("<II32s", MTK_MAGIC, len(payload), name).ljust(512, b"\xff") + payload
