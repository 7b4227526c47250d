"""Issue 3 acceptance: the maps people actually have (the seeds), mounted for real."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from helpers import fuse_available
from mounting import mounted, mtkfs
from seeds import (
    SEED_000_DD,
    SEED_000_DUMCHAR,
    SEED_001_SYSTEM_LINES,
    SEED_003_BOOTLOG,
    SEED_004_RECOVERY_ONLY,
)

from mtkfs.maps.model import Region
from mtkfs.maps.scatter import parse_scatter
from mtkfs.testing.disk import Layout, pseudo_random

_fuse_ok, _fuse_why = fuse_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(600),
]

MiB = 1 << 20

SEED_003_RANGES = {
    "BOOT": (0x0, 0x50000),
    "KERNEL": (0x50000, 0x180000),
    "ROOTFS": (0x1D0000, 0x1E0000),
    "HOME": (0x3B0000, 0xC30000),
    "vd1": (0xFE0000, 0x10000),
    "conf": (0xFF0000, 0x10000),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def sha256_range(path: Path, offset_bytes: int, size_bytes: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < size_bytes:
            block = os.pread(f.fileno(), min(4 * MiB, size_bytes - done), offset_bytes + done)
            assert block
            digest.update(block)
            done += len(block)
    return digest.hexdigest()


def ls_json(*args: str | Path) -> dict:  # type: ignore[type-arg]
    result = mtkfs("ls", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# -- seed 000: dumchar_info on the S650 ---------------------------------------------------------


def test_seed_000_dumchar_rows_equal_the_seeds_dd_arithmetic(s650: Layout, tmp_path: Path) -> None:
    dumchar = tmp_path / "dumchar_info.txt"
    dumchar.write_text(SEED_000_DUMCHAR)
    user = s650.regions["user"]
    user_size = user.stat().st_size
    report = ls_json(s650.folder, "--map", dumchar)
    parts = {p["name"]: p for p in report["partitions"]}
    rows = re.findall(r"^(\w+)\s+0x", SEED_000_DUMCHAR, re.M)
    assert set(parts) == set(rows) - {"Part_Name"}
    for name, (skip_kib, count_kib) in SEED_000_DD.items():
        assert (parts[name]["region"], parts[name]["offset"], parts[name]["size"]) == (
            "user",
            skip_kib * 1024,
            count_kib * 1024,
        ), name
    # fat: the row's size runs exactly to the end of the 7597184 KiB user area.
    assert parts["fat"]["offset"] + parts["fat"]["size"] == user_size
    # bmtpool: 0xfebf00a8 is not an offset; it is 0xFFFF00A8 minus the MBR's linear start:
    # 0xA8 x 128 KiB = 0x1500000 reserved at the end of the user area.
    assert parts["bmtpool"]["offset"] == user_size - 0x1500000
    assert parts["bmtpool"]["size"] == 0x1500000
    assert any("febf00a8" in w.lower() for w in parts["bmtpool"]["warnings"])
    # preloader: in boot0 (boot1 region), clamped from 0x1400000 to the 2 MiB boot partition.
    assert parts["preloader"]["region"] == "boot1" and parts["preloader"]["size"] == 2 * MiB
    assert parts["preloader"]["warnings"]
    # Cross-checked against the MBR/EBR chain on the image: no disagreement.
    assert not [w for w in report["warnings"] if "says offset" in w], report["warnings"]

    with mounted(s650.folder, tmp_path / "mnt", "--map", str(dumchar)) as mnt:
        for name, (skip_kib, count_kib) in SEED_000_DD.items():
            assert sha256_file(mnt / f"{name}.img") == sha256_range(
                user, skip_kib * 1024, count_kib * 1024
            ), name
        boot0 = s650.regions["boot1"]
        assert (mnt / "preloader.img").read_bytes() == boot0.read_bytes()
        assert (mnt / "bmtpool.img").stat().st_size == 0x1500000


def test_seed_000_preloader_missing_without_boot0(s650: Layout, tmp_path: Path) -> None:
    folder = tmp_path / "only-user"
    folder.mkdir()
    (folder / "mmcblk0.img").symlink_to(s650.regions["user"])
    dumchar = tmp_path / "dumchar_info.txt"
    dumchar.write_text(SEED_000_DUMCHAR)
    report = ls_json(folder, "--map", dumchar)
    preloader = next(p for p in report["partitions"] if p["name"] == "preloader")
    assert not preloader["exposed"]
    assert any("boot1" in w and "not exposed" in w for w in preloader["warnings"])
    text = mtkfs("ls", folder, "--map", dumchar).stdout
    assert "preloader" in text and "missing" in text
    with mounted(folder, tmp_path / "mnt", "--map", str(dumchar)) as mnt:
        assert not (mnt / "preloader.img").exists()
        assert (mnt / "android.img").stat().st_size == 0x40000000


# -- seed 003: MTD lists on a NOR dump ----------------------------------------------------------


def nor_image(path: Path) -> bytes:
    data = pseudo_random("seed-003-nor", 16 * MiB)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    "text",
    [
        SEED_003_BOOTLOG,
        "dev:    size   erasesize  name\n"
        + "".join(
            f'mtd{i}: {size:08x} 00010000 "{name}"\n'
            for i, (name, (_, size)) in enumerate(SEED_003_RANGES.items())
        ),
        "console=ttyS0,115200 mtdparts=NOR_FLASH:320k(BOOT),1536k(KERNEL),1920k(ROOTFS),"
        "12480k(HOME),64k(vd1),-(conf) root=/dev/mtdblock2\n",
    ],
    ids=["boot-log", "proc-mtd", "mtdparts"],
)
def test_seed_003_mtd_partitions_on_a_nor_dump(text: str, tmp_path: Path) -> None:
    image = tmp_path / "nor.bin"
    data = nor_image(image)
    mapfile = tmp_path / "mtd.txt"
    mapfile.write_text(text)
    report = ls_json(image, "--map", mapfile)
    assert [r["name"] for r in report["regions"]] == ["flash"]
    got = {p["name"]: (p["offset"], p["size"]) for p in report["partitions"]}
    assert got == SEED_003_RANGES
    with mounted(image, tmp_path / "mnt", "--map", str(mapfile)) as mnt:
        for name, (offset, size) in SEED_003_RANGES.items():
            assert (mnt / f"{name}.img").read_bytes() == data[offset : offset + size]
        assert not (mnt / "scatter.txt").exists()  # SP Flash Tool has no use for a NOR map


# -- seed 001: the generated scatter ------------------------------------------------------------


def test_seed_001_scatter_from_the_p70a_gpt(p70a: Layout, tmp_path: Path) -> None:
    with mounted(p70a.folder, tmp_path / "mnt") as mnt:
        scatter = (mnt / "scatter.txt").read_text()
        assert (mnt / "scatter.txt").stat().st_size == len(scatter.encode())
        assert "\r" not in scatter
        assert "  file_name: preloader.bin\n" in scatter
        assert (mnt / "preloader.bin").read_bytes() == p70a.regions["boot1"].read_bytes()[2048:]
        index = re.search(r"- partition_index: SYS(\d+)\n  partition_name: system\n", scatter)
        assert index, scatter
        entry = f"- partition_index: SYS{index.group(1)}\n{SEED_001_SYSTEM_LINES}"
        assert entry in scatter
        regions = {
            r["name"]: Region(r["name"], r["size"])
            for r in json.loads((mnt / ".mtkfs" / "map.json").read_text())["regions"]
        }
        # It parses back to the map the mount shows.
        back = parse_scatter(scatter, regions)
        mounted_map = json.loads((mnt / ".mtkfs" / "map.json").read_text())
        assert {(p.name, p.region, p.offset_bytes, p.size_bytes) for p in back.partitions} == {
            (p["name"], p["region"], p["offset"], p["size"]) for p in mounted_map["partitions"]
        }
        # And mtkfs itself takes it as a map for the same readback.
        copy = tmp_path / "MT6752_Android_scatter.txt"
        copy.write_text(scatter)
    report = ls_json(p70a.folder, "--map", copy)
    assert {(p["name"], p["offset"], p["size"]) for p in report["partitions"]} == {
        (p["name"], p["offset"], p["size"]) for p in mounted_map["partitions"]
    }
    assert not [w for w in report["warnings"] if "says offset" in w or "not in" in w]


# -- seed 004: one scatter row is enough --------------------------------------------------------


def test_seed_004_recovery_from_a_one_row_scatter(tmp_path: Path) -> None:
    image = tmp_path / "User"
    data = pseudo_random("seed-004-user", 32 * MiB)
    image.write_bytes(data)
    scatter = tmp_path / "scatter.txt"
    scatter.write_text(SEED_004_RECOVERY_ONLY)
    report = ls_json(image, "--map", scatter)
    assert [(p["name"], p["offset"], p["size"]) for p in report["partitions"]] == [
        ("recovery", 0x8000, 0x1000000)
    ]
    with mounted(image, tmp_path / "mnt", "--map", str(scatter)) as mnt:
        recovery = (mnt / "recovery.img").read_bytes()
        assert len(recovery) == 16 * MiB
        assert recovery == data[0x8000 : 0x8000 + 0x1000000]


# -- cross-checks, Checksum.ini, plain-word warnings ---------------------------------------------


def small_gpt(path: Path) -> None:
    from test_image_mount import small_gpt_image

    small_gpt_image(path)


def test_map_file_disagreeing_with_the_gpt_is_a_warning(tmp_path: Path) -> None:
    image = tmp_path / "User"
    small_gpt(image)
    scatter = tmp_path / "scatter.txt"
    scatter.write_text(
        SEED_004_RECOVERY_ONLY.replace("recovery", "system")
        .replace("0x8000\n", "0x800000\n")
        .replace("0x1000000", "0x400000")
    )
    result = mtkfs("ls", image, "--map", scatter)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "system" in out and "says offset 0x800000" in out and "GPT" in out, out
    assert "boot: in the GPT" in out and "not shown" in out, out


def test_checksum_ini_is_spft_byte_sums(tmp_path: Path) -> None:
    image = tmp_path / "User"
    small_gpt(image)
    with mounted(image, tmp_path / "mnt") as mnt:
        size_before = (mnt / "Checksum.ini").stat().st_size
        text = (mnt / "Checksum.ini").read_text()
        assert len(text.encode()) == size_before
        assert text.startswith("[IsEnableChecksum]\nCHECKSUM_SWITCH=1\n[CheckSum]\n")
        sums = dict(line.split("=") for line in text.splitlines()[3:])
        assert sums, text
        for name, value in sums.items():
            data = (mnt / f"{name}.img").read_bytes()
            assert int(value, 16) == sum(data) % 0x10000, name
            assert re.fullmatch(r"0x[0-9A-F]{4}", value)


def test_repeated_map_files_merge(tmp_path: Path) -> None:
    image = tmp_path / "nor.bin"
    nor_image(image)
    first = tmp_path / "a.txt"
    first.write_text("mtdparts=NOR_FLASH:320k(BOOT),1536k(KERNEL)\n")
    second = tmp_path / "b.txt"
    second.write_text(SEED_003_BOOTLOG.replace('"KERNEL"', '"kernel2"'))
    report = ls_json(image, "--map", first, "--map", second)
    names = [p["name"] for p in report["partitions"]]
    assert names.count("BOOT") == 1 and "KERNEL" in names and "kernel2" in names
