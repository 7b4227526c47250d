"""Content for the test images: deterministic pseudo-random bytes and the headers real MTK
partitions start with (MTK part header, Android boot image, eMMC boot preloader).

Why a module of its own: these are pure functions of a label, with no tools or files involved,
shared by every layout :mod:`mtkfs.testing.disk` builds; keeping them apart keeps that module to
the layouts themselves.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = [
    "android_boot_image",
    "emmc_boot_preloader",
    "mtk_image",
    "preloader_emi",
    "pseudo_random",
]

_KiB = 1 << 10


def pseudo_random(label: str, size_bytes: int) -> bytes:
    """``size_bytes`` deterministic, incompressible bytes named by ``label``.

    SHAKE-256 rather than :mod:`random`: its output is fixed by the standard, so the images (and
    any hash a test hard-codes) are identical on every Python version and machine. The prefix
    still names ``mtkfs.testing.disk``, where this lived first: a new one would change every image.
    """
    return hashlib.shake_256(b"mtkfs.testing.disk:" + label.encode()).digest(size_bytes)


def mtk_image(name: bytes, payload: bytes) -> bytes:
    """``payload`` behind MTK's 512-byte part header (magic 0x58881688), as on lk/logo/kernel."""
    header = bytearray(b"\xff" * 512)
    struct.pack_into("<II32sII", header, 0, 0x58881688, len(payload), name, 0xFFFFFFFF, 0)
    return bytes(header) + payload


def android_boot_image(label: str, ramdisk_name: bytes, cmdline: bytes) -> bytes:
    """A v0 ``ANDROID!`` boot image of ~1 MiB: MTK-headed pseudo-random kernel and ramdisk."""
    page = 2048
    kernel = mtk_image(b"KERNEL", pseudo_random(label + "/kernel", 768 * _KiB))
    ramdisk = mtk_image(ramdisk_name, pseudo_random(label + "/ramdisk", 256 * _KiB))
    sha = hashlib.sha1(usedforsecurity=False)
    for section in (kernel, ramdisk, b""):
        sha.update(section)
        sha.update(struct.pack("<I", len(section)))
    header = struct.pack(
        "<8s10I16s512s32s1024s",
        b"ANDROID!",
        len(kernel),
        0x40008000,  # kernel_addr
        len(ramdisk),
        0x44000000,  # ramdisk_addr
        0,  # second_size
        0x40F00000,  # second_addr
        0x4E000000,  # tags_addr
        page,
        0,  # header_version
        0,  # os_version
        b"",  # name
        cmdline,
        sha.digest(),
        b"",  # extra_cmdline
    )

    def padded(data: bytes) -> bytes:
        return data + bytes(-len(data) % page)

    return padded(header) + padded(kernel) + padded(ramdisk)


#: Size of the EMI section :func:`preloader_emi` makes (a real MT6765 v51 one is this size).
_EMI_BYTES = 448
#: EMI versions real preloaders carry (MT65xx/MT67xx generations); one is picked per label.
_EMI_VERSIONS = (11, 14, 16, 18, 21, 25, 27, 30, 32, 35, 39, 51)


def preloader_emi(label: str) -> bytes:
    """The EMI (DRAM) settings section of the preloader :func:`emmc_boot_preloader` builds for
    ``label``: exactly the blob an XFlash DA's INIT_EXT_RAM takes from it.

    Laid out like MediaTek's ``bloader_info`` (448 bytes): ``MTK_BLOADER_INFO_vNN`` in a 24-byte
    identifier field (NN, the EMI version, fixed by ``label``), a 64-byte file name
    (``preloader_<first part of label>.bin``), version ``V116``, checksum seed, load address,
    ``MTK_BIN`` in an 8-byte field, one settings record count, then the settings themselves
    (pseudo-random; the legacy DA protocol takes them from 0xC past ``MTK_BIN``).
    """
    pick = hashlib.sha256(b"mtkfs.testing.emi:" + label.encode()).digest()[0]
    version = _EMI_VERSIONS[pick % len(_EMI_VERSIONS)]
    board = label.split("/", 1)[0] or "board"
    header = struct.pack(
        "<24s64s4sII8sI",
        b"MTK_BLOADER_INFO_v%02d" % version,
        f"preloader_{board}.bin".encode(),
        b"V116",
        0x22884433,  # checksum seed
        0x00201000,  # load address
        b"MTK_BIN",
        1,  # number of EMI settings records
    )
    return header + pseudo_random(label + "/emi", _EMI_BYTES - len(header))


def emmc_boot_preloader(label: str, size_bytes: int) -> bytes:
    """Start of an eMMC BOOT1 area: ``EMMC_BOOT`` → ``BRLYT`` → a GFH-headed preloader image.

    Offsets as MTK's BROM expects them: BRLYT at 0x200, the preloader (``MMM\\x01`` +
    ``FILE_INFO``) at 0x800, running to ``size_bytes`` (its GFH file length; no signature).
    Its body is pseudo-random but ends like a real preloader's: the EMI section of
    :func:`preloader_emi`, then that section's size as a u32 (the file's last 4 bytes).
    """
    out = bytearray(size_bytes)
    struct.pack_into("<12sII", out, 0x000, b"EMMC_BOOT", 1, 0x200)
    struct.pack_into("<8sII", out, 0x200, b"BRLYT", 1, 0x800)
    gfh_bytes = 0x38
    preloader_bytes = size_bytes - 0x800
    struct.pack_into(
        "<3sBHH12sIHBBIIIIIII",
        out,
        0x800,
        b"MMM",
        1,  # GFH version
        gfh_bytes,
        0,  # GFH type: FILE_INFO
        b"FILE_INFO",
        1,  # file-info version
        1,  # file type: ARM bootloader
        5,  # flash device: eMMC boot
        1,  # signature type
        0x00201000,  # load address (SRAM)
        preloader_bytes,  # file length, at GFH + 0x20
        0x40000,  # maximum size
        0x300,  # content offset
        0,  # signature length
        0x300,  # jump offset
        1,  # attributes
    )
    body_start = 0x800 + gfh_bytes
    out[body_start:] = pseudo_random(label, size_bytes - body_start)
    emi = preloader_emi(label)
    if body_start + len(emi) + 4 > size_bytes:
        raise ValueError(f"{size_bytes} bytes cannot hold a preloader with EMI settings")
    out[size_bytes - len(emi) - 4 :] = emi + struct.pack("<I", len(emi))
    return bytes(out)
