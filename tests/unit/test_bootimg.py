"""Android boot images through Debian's mkbootimg (v0, v2, v3, v4, vendor_boot), MediaTek's
512-byte headers on the kernel and ramdisk, the ramdisk's cpio as a tree, and hostile images
(truncated, lying sizes, traversal names) that must give partial views, never exceptions."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.content.bootimg import looks_like_boot_image, parse_boot_image
from mtkfs.content.view import ContentView
from mtkfs.testing.bootimg_build import mtk, newc
from mtkfs.testing.disk import pseudo_random

KERNEL = pseudo_random("bootimg/kernel", 70_000)
DTB = b"\xd0\x0d\xfe\xed" + pseudo_random("bootimg/dtb", 3000)
SECOND = pseudo_random("bootimg/second", 5000)
CMDLINE = "console=ttyMT0,921600n1 androidboot.hardware=mt6765"


CPIO = newc([
    ("init", 0o100750, b"\x7fELF" + pseudo_random("bootimg/init", 2000)),
    ("sbin", 0o40755, b""),
    ("sbin/adbd", 0o100755, pseudo_random("bootimg/adbd", 900)),
    ("init.rc", 0o100644, b"on init\n    mkdir /data\n"),
    ("bin", 0o120777, b"/system/bin"),
    ("dev/null", 0o20666, b""),  # a device node: skipped
    ("../escape", 0o100644, b"x"),  # traversal: dropped
])  # fmt: skip
RAMDISK = gzip.compress(CPIO, mtime=0)


def mkbootimg(tmp_path: Path, *args: str, **files: bytes) -> bytes:
    argv = ["mkbootimg", "-o", str(tmp_path / "out.img"), *args]
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        argv += [f"--{name}", str(path)]
    subprocess.run(argv, check=True, capture_output=True)
    return (tmp_path / "out.img").read_bytes()


def files(view: ContentView) -> dict[str, bytes]:
    return {"/".join(e.path): e.data() for e in view.entries if e.kind == "file" and e.data}


def header(view: ContentView) -> str:
    return files(view)["header.txt"].decode()


def test_v0_with_mediatek_headers_as_old_mtk_phones_ship(tmp_path: Path) -> None:
    image = mkbootimg(tmp_path, "--cmdline", CMDLINE, "--base", "0x40000000",
                      "--pagesize", "2048", "--os_version", "9.0.0", "--os_patch_level",
                      "2019-06", kernel=mtk(b"KERNEL", KERNEL), ramdisk=mtk(b"ROOTFS", RAMDISK),
                      second=SECOND)  # fmt: skip
    assert looks_like_boot_image(image) == "android-boot-v0"
    view = parse_boot_image(image)
    got = files(view)
    assert got["kernel"] == KERNEL and got["ramdisk"] == RAMDISK and got["second"] == SECOND
    text = header(view)
    assert f"cmdline: {CMDLINE}" in text
    assert "kernel: MediaTek header 'KERNEL', 70000 bytes of payload" in text
    assert "ramdisk: MediaTek header 'ROOTFS'" in text
    assert "kernel_addr: 0x40008000" in text
    assert "os_version: 9.0.0, security patch 2019-06" in text
    assert got["ramdisk.d/sbin/adbd"] == pseudo_random("bootimg/adbd", 900)
    assert got["ramdisk.d/init.rc"] == b"on init\n    mkdir /data\n"
    entries = {"/".join(e.path): e for e in view.entries}
    assert entries["ramdisk.d/bin"].kind == "symlink"
    assert entries["ramdisk.d/bin"].target == "/system/bin"
    assert entries["ramdisk.d/init"].mode == 0o750
    assert "ramdisk.d/dev/null" not in entries and "ramdisk.d/dev" not in entries
    assert not any("escape" in p for p in entries)
    assert any("skipped" in w for w in view.warnings)


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_with_dtb(tmp_path: Path, version: int) -> None:
    extra = {"dtb": DTB} if version == 2 else {}
    image = mkbootimg(tmp_path, "--header_version", str(version), "--cmdline", CMDLINE,
                      kernel=KERNEL, ramdisk=RAMDISK, **extra)  # fmt: skip
    view = parse_boot_image(image)
    got = files(view)
    assert got["kernel"] == KERNEL and got["ramdisk"] == RAMDISK
    assert got.get("dtb") == extra.get("dtb")
    assert f"header_version: {version}" in header(view)


def test_v3_v4_and_vendor_boot(tmp_path: Path) -> None:
    (tmp_path / "vendor_ramdisk").write_bytes(RAMDISK)
    image = mkbootimg(tmp_path, "--header_version", "3", "--cmdline", CMDLINE,
                      "--vendor_cmdline", "androidboot.vendor=1", "--vendor_boot",
                      str(tmp_path / "vendor_boot.img"), "--vendor_ramdisk",
                      str(tmp_path / "vendor_ramdisk"), kernel=KERNEL, ramdisk=RAMDISK,
                      dtb=DTB)  # fmt: skip
    # Debian's mkbootimg stops at v3; v4 is v3 plus signature_size at 1580 (0: unsigned).
    v4 = image[:40] + struct.pack("<I", 4) + image[44:1580] + struct.pack("<I", 0) + image[1584:]
    for version, data in ((3, image), (4, v4)):
        assert looks_like_boot_image(data) == f"android-boot-v{version}"
        view = parse_boot_image(data)
        assert files(view)["kernel"] == KERNEL and files(view)["ramdisk"] == RAMDISK
        assert f"cmdline: {CMDLINE}" in header(view)
        assert f"header_version: {version}" in header(view)
    vendor = (tmp_path / "vendor_boot.img").read_bytes()
    assert looks_like_boot_image(vendor) == "vendor-boot-v3"
    vendor_view = parse_boot_image(vendor)
    assert vendor_view.kind == "vendor-boot"
    got = files(vendor_view)
    assert got["vendor_ramdisk"] == RAMDISK and got["dtb"] == DTB
    assert got["vendor_ramdisk.d/init.rc"] == b"on init\n    mkdir /data\n"
    assert "cmdline: androidboot.vendor=1" in header(vendor_view)


def test_not_a_boot_image_and_truncations(tmp_path: Path) -> None:
    assert parse_boot_image(b"\0" * 4096).warnings
    assert looks_like_boot_image(b"\0" * 64) is None
    assert looks_like_boot_image(mtk(b"lk", b"x" * 10)) == "mtk-header:lk"
    image = mkbootimg(tmp_path, kernel=mtk(b"KERNEL", KERNEL), ramdisk=RAMDISK)
    cut = parse_boot_image(image[: 2048 + 30_000])
    assert files(cut)["kernel"] == KERNEL[: 30_000 - 512]
    assert "ramdisk" not in files(cut)
    assert any("past the image's end" in w for w in cut.warnings)
    assert any("MediaTek header claims" in w for w in cut.warnings)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_hostile_images_never_raise(data: st.DataObject) -> None:
    image = bytearray(_FUZZ_BASE)
    for _ in range(data.draw(st.integers(0, 12))):
        at = data.draw(st.integers(0, len(image) - 1))
        image[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(image)))
    view = parse_boot_image(bytes(image[:cut]))
    for entry in view.entries:
        if entry.data is not None:
            assert len(entry.data()) == entry.size_bytes


_FUZZ_SIZES = (len(KERNEL[:3000]) + 512, 0x40008000, len(RAMDISK), 0x41000000, 0, 0, 0x40000100)
_FUZZ_BASE = (b"ANDROID!" + struct.pack("<8I", *_FUZZ_SIZES, 2048)).ljust(2048, b"\0")
_FUZZ_BASE += mtk(b"KERNEL", KERNEL[:3000]).ljust(4096, b"\0") + RAMDISK
