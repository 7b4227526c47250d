"""What a partition holds, from a few KiB: the file system or image format, or "erased", or
"looks encrypted".

Why so little: over a 115200-baud U-Boot console every KiB costs a third of a second, so
detection reads the first 4 KiB (every superblock and header mtkfs recognises lies there) and
512 bytes from the middle and the end (to call a partition erased or empty with some
confidence). :func:`sample_ranges` says what to read; :func:`detect` decides from the bytes —
sans-I/O, pure, and never raising on hostile bytes.

Kinds (``Detected.kind``): ext4, f2fs, vfat, squashfs, erofs, jffs2, ubi, android-sparse,
android-boot, vendor-boot, mtk-image (a 512-byte MediaTek header; ``mtk-logo`` for the logo),
preloader, gpt, mbr, erased (0xFF), empty (0x00), encrypted? (no known magic, random-looking
bytes: FDE userdata, or compressed data), unknown.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mtkfs.units import human_size

HEAD_BYTES = 4096
PROBE_BYTES = 512
#: Bits of entropy per byte above which bytes without a known magic look encrypted.
RANDOM_BITS_PER_BYTE = 7.5

#: Formats the mount can show as ``<name>.files/``.
BROWSABLE = frozenset({"jffs2", "android-boot", "vendor-boot"})


@dataclass(frozen=True)
class Detected:
    """``kind`` (see module doc), a one-line ``detail`` for people, ``info`` for JSON."""

    kind: str
    detail: str
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, **self.info}


def sample_ranges(size_bytes: int, unit_bytes: int = PROBE_BYTES) -> list[tuple[int, int]]:
    """(offset, length) pairs to read from a partition of ``size_bytes``: the head, then one
    probe of ``unit_bytes`` (the device's sector: 512, or 4096 on UFS) in the middle and one
    at the end, when the partition is that large."""
    unit = max(PROBE_BYTES, min(unit_bytes, HEAD_BYTES))
    head = min(HEAD_BYTES, size_bytes)
    ranges = [(0, head)] if head else []
    if size_bytes >= 4 * HEAD_BYTES:
        middle = (size_bytes // 2) - (size_bytes // 2) % unit
        ranges += [(middle, unit), (size_bytes - size_bytes % unit - unit, unit)]
    return ranges


def detect(head: bytes, probes: tuple[bytes, ...] = ()) -> Detected:
    """The kind of a partition that starts with ``head`` (up to 4 KiB); ``probes`` are the
    middle and end samples, used only to call it erased or empty."""
    if not head:
        return Detected("unknown", "nothing read")
    for check in _CHECKS:
        found = check(head)
        if found is not None:
            return found
    everything = head + b"".join(probes)
    if everything.count(0xFF) == len(everything):
        return Detected("erased", "erased (all 0xFF where sampled)")
    if everything.count(0) == len(everything):
        return Detected("empty", "empty (all zero where sampled)")
    bits = entropy_bits_per_byte(head)
    if len(head) >= 1024 and bits >= RANDOM_BITS_PER_BYTE:
        return Detected(
            "encrypted?",
            "encrypted? random-looking bytes, no known format (FDE userdata, or compressed)",
            {"entropy_bits_per_byte": round(bits, 3)},
        )
    return Detected("unknown", "no known format", {"entropy_bits_per_byte": round(bits, 3)})


def entropy_bits_per_byte(data: bytes) -> float:
    """Shannon entropy of the byte values (8.0 for perfectly random bytes)."""
    if not data:
        return 0.0
    total = len(data)
    return -sum(n / total * math.log2(n / total) for n in Counter(data).values())


# -- the checks, most specific first ---------------------------------------------------------


def _u32(data: bytes, offset: int, order: str = "<") -> int | None:
    if offset + 4 > len(data):
        return None
    value: int = struct.unpack_from(order + "I", data, offset)[0]
    return value


def _u16(data: bytes, offset: int) -> int | None:
    if offset + 2 > len(data):
        return None
    value: int = struct.unpack_from("<H", data, offset)[0]
    return value


def _text(data: bytes, start: int, length: int) -> str:
    raw = data[start : start + length].split(b"\0", 1)[0]
    return "".join(c if c.isprintable() else "?" for c in raw.decode("latin-1"))[:64]


def _ext4(head: bytes) -> Detected | None:
    if _u16(head, 0x438) != 0xEF53 or len(head) < 0x400 + 0x160:
        return None
    sb = 0x400
    blocks = _u32(head, sb + 0x04) or 0
    free = _u32(head, sb + 0x0C) or 0
    log_size = _u32(head, sb + 0x18) or 0
    features_incompat = _u32(head, sb + 0x60) or 0
    if log_size > 6 or free > blocks:
        return None
    block = 1024 << log_size
    if features_incompat & 0x80:  # 64bit: the high halves
        blocks |= (_u32(head, sb + 0x150) or 0) << 32
        free |= (_u32(head, sb + 0x158) or 0) << 32
    label = _text(head, sb + 0x78, 16)
    fs_uuid = str(uuid.UUID(bytes=head[sb + 0x68 : sb + 0x78]))
    used = (blocks - free) * block
    kind = "ext4" if features_incompat & 0x40 else "ext2/3"  # extents
    named = f"{kind} {label!r}" if label else kind
    detail = f"{named}, {human_size(used)} used of {human_size(blocks * block)}"
    info = {"label": label, "uuid": fs_uuid, "size": blocks * block, "used": used}
    return Detected("ext4", detail, info)


def _f2fs(head: bytes) -> Detected | None:
    if _u32(head, 0x400) != 0xF2F52010:
        return None
    return Detected("f2fs", "f2fs")


def _erofs(head: bytes) -> Detected | None:
    if _u32(head, 0x400) != 0xE0F5E1E2:
        return None
    return Detected("erofs", "erofs (mount -o loop,ro)")


def _squashfs(head: bytes) -> Detected | None:
    if head[:4] not in (b"hsqs", b"sqsh"):
        return None
    order = "<" if head[:4] == b"hsqs" else ">"
    major = struct.unpack_from(order + "H", head, 28)[0] if len(head) >= 30 else 0
    return Detected("squashfs", f"squashfs v{major} (mount -o loop,ro)", {"version": major})


def _ubi(head: bytes) -> Detected | None:
    if head[:4] != b"UBI#":
        return None
    return Detected("ubi", "UBI (attach with ubiattach, or read with ubi-reader)")


def _sparse(head: bytes) -> Detected | None:
    if _u32(head, 0) != 0xED26FF3A:
        return None
    block = _u32(head, 12) or 0
    blocks = _u32(head, 16) or 0
    return Detected(
        "android-sparse",
        f"Android sparse image of {human_size(block * blocks)}",
        {"raw_size": block * blocks},
    )


def _boot(head: bytes) -> Detected | None:
    if head[:8] == b"ANDROID!":
        version = _u32(head, 40) or 0
        version = version if version <= 4 else 0  # pre-P images: "dt_size" there
        return Detected(
            "android-boot", f"Android boot image v{version}", {"header_version": version}
        )
    if head[:8] == b"VNDRBOOT":
        version = _u32(head, 8) or 0
        return Detected(
            "vendor-boot", f"Android vendor_boot image v{version}", {"header_version": version}
        )
    return None


def _mtk_header(head: bytes) -> Detected | None:
    if _u32(head, 0) != 0x58881688:
        return None
    name = _text(head, 8, 32)
    size = _u32(head, 4) or 0
    kind = "mtk-logo" if name.lower() == "logo" else "mtk-image"
    return Detected(
        kind, f"MediaTek image {name!r}, {human_size(size)}", {"name": name, "size": size}
    )


def _preloader(head: bytes) -> Detected | None:
    for magic in (b"EMMC_BOOT", b"SDMMC_BOOT", b"UFS_BOOT", b"COMBO_BOOT"):
        if head.startswith(magic):
            return Detected("preloader", f"preloader boot area ({magic.decode()})")
    if head.startswith(b"MMM\x01") and head[8:17] == b"FILE_INFO":
        return Detected("preloader", "preloader (MMM GFH file)")
    if head.startswith(b"BOOTLOADER!"):
        return Detected("preloader", "NAND preloader (BOOTLOADER!)")
    return None


def _gpt(head: bytes) -> Detected | None:
    if head[512:520] == b"EFI PART":
        return Detected("gpt", "a GPT (a disk image inside the partition)")
    return None


def _jffs2(head: bytes) -> Detected | None:
    try:
        from mtkfs.content.jffs2 import looks_like_jffs2
    except ImportError:
        return None
    kind = looks_like_jffs2(head)
    if kind is None:
        return None
    order = "big-endian" if "-be" in kind else "little-endian"
    swapped = kind.endswith("wordswapped")
    detail = f"jffs2, {order}" + (", word-swapped (an md.l dump): shown un-swapped" * swapped)
    return Detected("jffs2", detail, {"byte_order": order, "word_swapped": swapped})


def _fat_or_mbr(head: bytes) -> Detected | None:
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return None
    if head[0x36:0x39] == b"FAT" or head[0x52:0x57] == b"FAT32":
        label_at = 0x47 if head[0x52:0x57] == b"FAT32" else 0x2B
        label = _text(head, label_at, 11).strip()
        return Detected("vfat", f"vfat{f' {label!r}' if label else ''}", {"label": label})
    types = [head[446 + 16 * i + 4] for i in range(4)]
    if any(types):
        return Detected("mbr", "an MBR partition table (a disk image inside the partition)")
    return None


_CHECKS = (
    _sparse,
    _boot,
    _mtk_header,
    _preloader,
    _squashfs,
    _ubi,
    _jffs2,
    _ext4,
    _f2fs,
    _erofs,
    _gpt,
    _fat_or_mbr,
)
