"""``mtkfs export-rom`` of the P-70A readback: what seed 001 builds by hand, checked with the
real tools (simg2img) and our own scatter parser; then restored from."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml
from mounting import mtkfs

from mtkfs.maps.checksum import ByteSum16, parse_checksum_ini
from mtkfs.maps.model import Region
from mtkfs.maps.scatter import parse_scatter
from mtkfs.testing.disk import P70A_BOOT_BYTES, Layout

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MiB = 1 << 20
#: Seed 001's example scatter entry for system, field by field (its SYS17 index counts rows of
#: a vendor scatter that has more rows before system than the P-70A's GPT shows).
SEED_SYSTEM = {
    "partition_name": "system",
    "file_name": "system.img",
    "is_download": "true",
    "type": "EXT4_IMG",
    "linear_start_addr": "0x8000000",
    "physical_start_addr": "0x8000000",
    "partition_size": "0x80000000",
    "region": "EMMC_USER",
    "storage": "HW_STORAGE_EMMC",
    "boundary_check": "true",
    "is_reserved": "false",
    "operation_type": "UPDATE",
    "reserve": "0x00",
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def partition_sha256(layout: Layout, name: str) -> str:
    part = layout.by_name(name)
    digest = hashlib.sha256()
    for at in range(0, part.size_bytes, 8 * MiB):
        digest.update(layout.read(name, at, 8 * MiB))
    return digest.hexdigest()


@pytest.fixture(scope="module")
def rom(p70a: Layout, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("rom") / "P70A-rom"
    result = mtkfs("export-rom", p70a.folder, out, "--platform", "MT6752", timeout_s=300)
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def test_scatter_parses_back_and_matches_the_seed_system_entry(
    p70a: Layout, rom: tuple[Path, str]
) -> None:
    out, _ = rom
    text = (out / "MT6752_Android_scatter.txt").read_text()
    rows = [r for r in yaml.load(text, Loader=yaml.BaseLoader) if "partition_name" in r]
    system = next(r for r in rows if r["partition_name"] == "system")
    assert {k: system[k] for k in SEED_SYSTEM} == SEED_SYSTEM
    regions = {"user": p70a.regions["user"], "boot1": p70a.regions["boot1"]}
    parsed = parse_scatter(text, {n: Region(n, p.stat().st_size) for n, p in regions.items()})
    by_name = {p.name: p for p in parsed.partitions}
    for part in p70a.partitions:
        assert (by_name[part.name].offset_bytes, by_name[part.name].size_bytes) == (
            part.offset_bytes, part.size_bytes
        )  # fmt: skip
    # The seed's "not needed" partitions and the calibration ones are neither downloaded nor
    # exported; userdata (12 GiB) is left out without --all, and its row says so.
    download = {r["partition_name"]: r["is_download"] == "true" for r in rows}
    for name in ("proinfo", "nvram", "protect1", "protect2", "seccfg", "para", "expdb",
                 "metadata", "flashinfo", "userdata"):  # fmt: skip
        assert not download[name], name
        assert not (out / f"{name}.img").exists(), name
    for name in ("lk", "boot", "recovery", "secro", "logo", "tee1", "tee2", "system", "cache"):
        assert download[name], name
        assert (out / f"{name}.img").exists(), name


def test_sparse_images_expand_to_the_partitions(
    p70a: Layout, rom: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = rom
    for name in ("system", "cache"):
        image = out / f"{name}.img"
        assert image.read_bytes()[:4] == b"\x3a\xff\x26\xed", name  # Android sparse magic
        assert image.stat().st_size < p70a.by_name(name).size_bytes // 4  # used blocks only
        raw = tmp_path / f"{name}.raw"
        subprocess.run(["simg2img", str(image), str(raw)], check=True)
        assert raw.stat().st_size == p70a.by_name(name).size_bytes
        assert file_sha256(raw) == partition_sha256(p70a, name), name
        raw.unlink()


def test_raw_images_preloader_and_checksums(p70a: Layout, rom: tuple[Path, str]) -> None:
    out, _ = rom
    for name in ("lk", "boot", "logo", "tee2"):
        assert (out / f"{name}.img").read_bytes() == p70a.read(name), name
    boot1 = p70a.regions["boot1"].read_bytes()
    assert boot1[:9] == b"EMMC_BOOT"
    assert (out / "preloader.bin").read_bytes() == boot1[2048:P70A_BOOT_BYTES]
    sums = parse_checksum_ini((out / "Checksum.ini").read_text())
    assert "preloader" in sums and "system" in sums and "nvram" not in sums
    for name, value in sums.items():
        path = out / ("preloader.bin" if name == "preloader" else f"{name}.img")
        total = ByteSum16()
        total.update(path.read_bytes())
        assert total.value == value, name


def test_restore_from_the_rom_folder(p70a: Layout, rom: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = rom
    target = p70a.copy_to(tmp_path / "target")
    with target.regions["user"].open("r+b") as f:
        for name in ("boot", "cache"):
            f.seek(target.by_name(name).offset_bytes + 1024)  # cache: its superblock
            f.write(b"\xee" * 2048)
    result = mtkfs("restore", out, target.folder, "boot", "cache", "--journal-dir",
                   tmp_path / "journal", timeout_s=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ROM folder (MT6752_Android_scatter.txt)" in result.stdout
    assert target.read("boot") == p70a.read("boot")
    assert partition_sha256(target, "cache") == partition_sha256(p70a, "cache")
    # A damaged image is caught by Checksum.ini before anything is written.
    damaged = tmp_path / "rom2"
    damaged.mkdir()
    for path in out.iterdir():
        (damaged / path.name).symlink_to(path)
    (damaged / "logo.img").unlink()
    blob = bytearray((out / "logo.img").read_bytes())
    blob[100] ^= 0x10
    (damaged / "logo.img").write_bytes(bytes(blob))
    result = mtkfs("restore", damaged, target.folder, "logo", "--journal-dir", tmp_path / "j2")
    assert result.returncode == 9, result.stderr
    assert "Checksum.ini" in result.stderr and "nothing was written" in result.stderr
