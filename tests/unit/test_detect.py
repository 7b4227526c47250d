"""Partition content detection from a few KiB (mtkfs.content.detect): real file systems made
by their own tools where Debian has them, headers built from formats.md otherwise, and hostile
bytes that must never raise."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.content.detect import HEAD_BYTES, detect, entropy_bits_per_byte, sample_ranges
from mtkfs.testing.tools import mkfs_ext4


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD_BYTES)


def test_ext4_label_uuid_and_used_size_from_mkfs(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(3 << 20))
    image = tmp_path / "system.img"
    image.write_bytes(b"")
    os.truncate(image, 32 << 20)
    mkfs_ext4(tmp_path, image, 0, 32 << 20, label="system", key="detect/ext4", tree=tree)
    found = detect(_head(image))
    assert found.kind == "ext4"
    assert found.info["label"] == "system" and found.info["size"] == 32 << 20
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "UUID", str(image)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if blkid.returncode == 0:
        assert found.info["uuid"] == blkid.stdout.strip()
    assert 3 << 20 < found.info["used"] < 16 << 20
    assert found.detail.startswith("ext4 'system', ")


def test_vfat_from_mkfs(tmp_path: Path) -> None:
    image = tmp_path / "fat.img"
    image.write_bytes(b"")
    os.truncate(image, 8 << 20)
    done = subprocess.run(["mkfs.vfat", "-n", "PHONEFAT", str(image)], capture_output=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"mkfs.vfat missing (dosfstools): {done.stderr!r}")
    found = detect(_head(image))
    assert (found.kind, found.info["label"]) == ("vfat", "PHONEFAT")


def _mtk(name: bytes, size: int) -> bytes:
    return struct.pack("<II32s", 0x58881688, size, name).ljust(512, b"\xff")


@pytest.mark.parametrize(
    ("head", "kind", "says"),
    [
        (
            struct.pack("<IHHHHIII", 0xED26FF3A, 1, 0, 28, 12, 4096, 1000, 3),
            "android-sparse",
            "3.9 MiB",
        ),
        (b"ANDROID!" + bytes(32) + struct.pack("<I", 2), "android-boot", "v2"),
        (b"ANDROID!" + bytes(32) + struct.pack("<I", 0x10000), "android-boot", "v0"),
        (b"VNDRBOOT" + struct.pack("<I", 4), "vendor-boot", "v4"),
        (_mtk(b"lk", 300 << 10), "mtk-image", "'lk', 300.0 KiB"),
        (_mtk(b"logo", 1 << 20), "mtk-logo", "'logo'"),
        (b"EMMC_BOOT\0" + bytes(502), "preloader", "EMMC_BOOT"),
        (b"UFS_BOOT" + bytes(504), "preloader", "UFS_BOOT"),
        (b"MMM\x01\x38\0\0\0FILE_INFO", "preloader", "GFH"),
        (b"hsqs" + bytes(24) + struct.pack("<H", 4), "squashfs", "v4"),
        (b"UBI#" + bytes(60), "ubi", "UBI"),
        (bytes(1024) + struct.pack("<I", 0xF2F52010), "f2fs", "f2fs"),
        (bytes(1024) + struct.pack("<I", 0xE0F5E1E2), "erofs", "erofs"),
        (bytes(512) + b"EFI PART", "gpt", "GPT"),
        (bytes(446) + b"\0\0\0\0\x83" + bytes(59) + b"\x55\xaa", "mbr", "MBR"),
    ],
)
def test_headers(head: bytes, kind: str, says: str) -> None:
    found = detect(head.ljust(HEAD_BYTES, b"\0"))
    assert found.kind == kind and says in found.detail, found


def test_erased_empty_encrypted_unknown() -> None:
    ff = b"\xff" * HEAD_BYTES
    assert detect(ff, (b"\xff" * 512, b"\xff" * 512)).kind == "erased"
    # One sample with data in the middle: not erased.
    assert detect(ff, (b"\xff" * 511 + b"\0", b"\xff" * 512)).kind == "unknown"
    assert detect(bytes(HEAD_BYTES), (bytes(512), bytes(512))).kind == "empty"
    random = os.urandom(HEAD_BYTES)
    found = detect(random)
    assert found.kind == "encrypted?" and found.info["entropy_bits_per_byte"] > 7.5
    text = (b"the quick brown fox " * 300)[:HEAD_BYTES]
    assert detect(text).kind == "unknown"
    assert detect(b"").kind == "unknown"


def test_entropy() -> None:
    assert entropy_bits_per_byte(bytes(range(256)) * 16) == pytest.approx(8.0)
    assert entropy_bits_per_byte(b"\0" * 100) == 0.0


def test_samples_are_a_few_kib_and_sector_aligned() -> None:
    assert sample_ranges(0) == []
    assert sample_ranges(1000) == [(0, 1000)]
    big = sample_ranges(12 << 30, 512)
    assert big == [(0, 4096), (6 << 30, 512), ((12 << 30) - 512, 512)]
    ufs = sample_ranges((1 << 30) + 4096 * 3 + 100, 4096)
    assert all(offset % 4096 == 0 and size == 4096 for offset, size in ufs[1:])
    assert sum(size for _, size in ufs) == 3 * 4096
    assert all(offset + size <= (1 << 30) + 4096 * 3 + 100 for offset, size in ufs)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=HEAD_BYTES), st.sampled_from([b"", b"\x55\xaa", b"\x53\xef"]))
def test_hostile_bytes_never_raise(data: bytes, tail: bytes) -> None:
    found = detect(data + tail)
    assert found.kind and isinstance(found.detail, str)
