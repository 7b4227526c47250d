"""Recognising readback files and folders; reading them with pread."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from mtkfs.errors import SourceError
from mtkfs.transports import open_transport
from mtkfs.transports.image import ImageTransport, region_for_file_name


@pytest.mark.parametrize(
    ("name", "region"),
    [
        ("Boot1", "boot1"),
        ("BOOT2.bin", "boot2"),
        ("user.img", "user"),
        ("User", "user"),
        ("RPMB", "rpmb"),
        ("mmcblk0.img", "user"),
        ("mmcblk0boot0.img", "boot1"),
        ("mmcblk0boot1.img", "boot2"),
        ("mmcblk0rpmb.img", "rpmb"),
        ("mmcblk0", "user"),
        ("notes.txt", None),
        ("User.zip", None),
        ("mmcblk0p5.img", None),
    ],
)
def test_region_names(name: str, region: str | None) -> None:
    assert region_for_file_name(name) == region


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_folder_of_readback_files(tmp_path: Path) -> None:
    _write(tmp_path / "Boot1", b"\x01" * 4096)
    _write(tmp_path / "Boot2.bin", b"\x02" * 8192)
    _write(tmp_path / "User", bytes(range(256)) * 64)
    _write(tmp_path / "readme.txt", b"not a region")
    transport = ImageTransport.open(tmp_path)
    try:
        assert {n: r.size_bytes for n, r in transport.regions.items()} == {
            "boot1": 4096,
            "boot2": 8192,
            "user": 16384,
        }
        expected = bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])
        assert await transport.read("user", 250, 10) == expected
        assert await transport.read("boot2", 8190, 100) == b"\x02\x02"  # short at the end
    finally:
        await transport.aclose()


def test_single_file_region_is_sniffed(tmp_path: Path) -> None:
    mbr = bytearray(4096)
    mbr[510:512] = b"\x55\xaa"
    with_table = _write(tmp_path / "dump.bin", bytes(mbr))
    nor = _write(tmp_path / "nor.bin", b"\xff" * 4096)
    assert list(ImageTransport.open(with_table).regions) == ["user"]
    assert list(ImageTransport.open(nor).regions) == ["flash"]
    transport = trio.run(open_transport, f"image:{nor}")
    assert list(transport.regions) == ["flash"]
    trio.run(transport.aclose)


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        ImageTransport.open(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match=r"no readback files .*found: a\.txt"):
        ImageTransport.open(tmp_path)
    _write(tmp_path / "User", b"\0" * 512)
    _write(tmp_path / "mmcblk0.img", b"\0" * 512)
    with pytest.raises(SourceError, match="two readbacks of region user"):
        ImageTransport.open(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty / "User", b"")
    with pytest.raises(SourceError, match="empty"):
        ImageTransport.open(empty)
    with pytest.raises(SourceError, match="mtkfs-no-such-tty"):
        trio.run(open_transport, "uboot:/dev/mtkfs-no-such-tty")
