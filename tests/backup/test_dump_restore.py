"""``mtkfs dump`` and ``mtkfs restore`` end to end on the P-70A readback, as the seeds do it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mounting import ENV, MTKFS, mtkfs

from mtkfs.testing.disk import Layout
from mtkfs.testing.tools import sparse_copy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MiB = 1 << 20


def range_sha256(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        left = size
        while left:
            block = f.read(min(left, 8 * MiB))
            assert block, f"{path} ends early"
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def manifest(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "manifest.json").read_text())  # type: ignore[no-any-return]


def blank_copy(layout: Layout, folder: Path) -> Path:
    """Region files of the same sizes holding only zeros: a fresh chip."""
    folder.mkdir()
    for path in layout.regions.values():
        with (folder / path.name).open("wb") as f:
            f.truncate(path.stat().st_size)
    return folder


@pytest.fixture(scope="module")
def dumped(p70a: Layout, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The P-70A dumped with the defaults; (folder, stderr of the run, which was a pipe)."""
    out = tmp_path_factory.mktemp("dump") / "backup"
    result = mtkfs("dump", p70a.folder, "-o", out, timeout_s=300)
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def test_manifest_hashes_equal_the_image_ranges(p70a: Layout, dumped: tuple[Path, str]) -> None:
    out, _ = dumped
    body = manifest(out)
    items = {i["name"]: i for i in body["items"]}
    # Every partition but the 12 GiB userdata, plus the table areas (GPT head, backup GPT)
    # and the unpartitioned Boot2.
    expected = {p.name for p in p70a.partitions} - {"userdata"} | {"preloader"}
    assert {n for n, i in items.items() if i["kind"] == "partition"} == expected
    assert {n for n, i in items.items() if i["kind"] == "gap"} >= {"user@0x0", "boot2@0x0"}
    for item in items.values():
        assert item["status"] == "done"
        region_file = p70a.regions[item["region"]]
        assert item["sha256"] == range_sha256(region_file, item["offset"], item["size"]), item
        assert (out / item["file"]).stat().st_size == item["size"]
    for part in p70a.partitions:
        if part.name in items:
            assert (items[part.name]["offset"], items[part.name]["size"]) == (
                part.offset_bytes, part.size_bytes
            )  # fmt: skip
    check = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # A mostly empty 2 GiB system partition costs little disk: zero runs are holes.
    assert (out / "system.img").stat().st_blocks * 512 < 256 * MiB


def test_progress_in_a_pipe_is_plain_lines(dumped: tuple[Path, str]) -> None:
    _, stderr = dumped
    assert "\r" not in stderr and "\x1b" not in stderr
    assert "left out userdata" in stderr
    assert "system: done, 2.0 GiB" in stderr
    assert stderr.count("\n") < 200  # a line per start/end, not a line per MiB


def test_rerun_of_a_finished_dump_reads_nothing(p70a: Layout, tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = (
        "dump",
        p70a.folder,
        "boot",
        "lk",
        "-o",
        out,
        "--link-model",
        "latency=1ms,bandwidth=2GB/s",
    )
    assert mtkfs(*args).returncode == 0
    again = mtkfs(*args)
    assert again.returncode == 0, again.stderr
    assert "already dumped" in again.stderr
    assert manifest(out)["sessions"][-1]["link_bytes"] == 0
    # A file damaged on the backup disk is noticed and dumped again.
    with (out / "lk.img").open("r+b") as f:
        f.write(b"X")
    third = mtkfs(*args)
    assert "changed since it was dumped" in third.stderr
    assert (
        range_sha256(out / "lk.img", 0, p70a.by_name("lk").size_bytes)
        == hashlib.sha256(p70a.read("lk")).hexdigest()
    )


def test_sigint_mid_dump_then_rerun_refetches_nothing_finished(
    p70a: Layout, tmp_path: Path
) -> None:
    """A slow link (40 MB/s, 1 ms per command): Ctrl-C during ``cache``, then the same command
    again. Both runs together move each byte once, plus at most readahead slack."""
    out = tmp_path / "d"
    names = ("boot", "recovery", "metadata", "cache")
    args = [*MTKFS, "dump", str(p70a.folder), *names, "-o", str(out), "--compress", "zstd",
            "--link-model", "latency=1ms,bandwidth=40MB/s", "--progress", "lines"]  # fmt: skip
    total = sum(p70a.by_name(n).size_bytes for n in names)
    process = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("cache: 424.0 MiB"):
            break
    time.sleep(3)  # a few seconds into cache (424 MiB at 40 MB/s: ~11 s)
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(30) == 130, "".join(seen) + rest
    assert "Run the same command again to continue" in rest
    first = manifest(out)
    cache_item = next(i for i in first["items"] if i["name"] == "cache")
    assert cache_item["status"] == "partial" and cache_item["done_bytes"] > 0
    assert (out / "cache.img.zst.part").exists()

    again = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    sessions = manifest(out)["sessions"]
    assert [s["interrupted"] for s in sessions] == [True, False]
    moved = [s["link_bytes"] for s in sessions]
    # The second run fetched only what the first had not made durable: the whole is moved
    # about once. Slack: the GPT probe of each run (~2 MiB each) and what readahead had fetched
    # past the last written byte when the signal came: its window (a quarter of the 128 MiB job
    # cache, 32 MiB) plus one request in flight (8 MiB). --cache-dir would keep even those.
    slack = 48 * MiB
    assert moved[1] <= total - cache_item["done_bytes"] + slack, moved
    assert total <= sum(moved) <= total + slack, moved
    for name in names:
        raw = subprocess.run(
            ["zstd", "-dc", str(out / f"{name}.img.zst")], capture_output=True, check=True
        ).stdout
        assert raw == p70a.read(name), name


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_dump_restores_byte_exact(
    p70a: Layout, tmp_path: Path, compression: str
) -> None:
    out = tmp_path / "d"
    result = mtkfs("dump", p70a.folder, "boot", "logo", "-o", out, "--compress", compression)
    assert result.returncode == 0, result.stderr
    tool = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"]}[compression]
    suffix = {"gzip": ".gz", "zstd": ".zst"}[compression]
    raw = subprocess.run(
        [*tool, str(out / f"boot.img{suffix}")], capture_output=True, check=True
    ).stdout
    assert raw == p70a.read("boot")
    target = p70a.copy_to(tmp_path / "target")
    with target.regions["user"].open("r+b") as f:  # spoil boot and logo on the target
        for name in ("boot", "logo"):
            f.seek(target.by_name(name).offset_bytes)
            f.write(b"\xaa" * 4096)
    journal = tmp_path / "journal"
    result = mtkfs("restore", out, target.folder, "--journal-dir", journal)
    assert result.returncode == 0, result.stderr
    assert target.read("boot") == p70a.read("boot")
    assert target.read("logo") == p70a.read("logo")


def test_restore_to_a_blank_chip_makes_every_partition_hash_equal(
    p70a: Layout, dumped: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = dumped
    blank = blank_copy(p70a, tmp_path / "blank")
    journal = tmp_path / "journal"
    # Without unlocks: the plan is printed, protected items and tables are skipped.
    plan = mtkfs("restore", out, blank, "--dry-run", "--journal-dir", journal)
    assert plan.returncode == 0, plan.stderr
    assert "skip (protected: --unlock preloader)" in plan.stdout
    assert "skip (partition-table area: --unlock tables)" in plan.stdout
    assert "nothing was written" in plan.stdout
    assert not any(blank.joinpath("User").read_bytes()[: 1 * MiB])  # still blank

    result = mtkfs("restore", out, blank, "--unlock-all", "--journal-dir", journal, timeout_s=300)
    assert result.returncode == 0, result.stderr
    for item in manifest(out)["items"]:
        region_file = blank / p70a.regions[item["region"]].name
        assert range_sha256(region_file, item["offset"], item["size"]) == item["sha256"], item
    # The restored GPT makes the blank chip a P-70A again.
    listing = mtkfs("ls", blank, "--json")
    assert listing.returncode == 0, listing.stderr
    names = [p["name"] for p in json.loads(listing.stdout)["partitions"]]
    assert names[:3] == ["preloader", "proinfo", "nvram"] or "system" in names


def test_a_corrupted_dump_file_is_caught_before_anything_is_written(
    p70a: Layout, dumped: tuple[Path, str], tmp_path: Path
) -> None:
    source, _ = dumped
    out = tmp_path / "d"
    out.mkdir()
    for path in source.iterdir():
        if path.is_file():
            sparse_copy(path, out / path.name)
    shutil.copytree(source / "gaps", out / "gaps")
    with (out / "recovery.img").open("r+b") as f:  # one flipped byte, late in the order
        f.seek(123_456)
        byte = f.read(1)
        f.seek(123_456)
        f.write(bytes([byte[0] ^ 1]))
    target = p70a.copy_to(tmp_path / "target")
    for name in ("boot", "recovery"):  # make both differ from the dump
        with target.regions["user"].open("r+b") as f:
            f.seek(target.by_name(name).offset_bytes)
            f.write(b"\x55" * 512)
    before = {n: target.read(n) for n in ("boot", "recovery")}
    result = mtkfs("restore", out, target.folder, "boot", "recovery", "--journal-dir",
                   tmp_path / "journal")  # fmt: skip
    assert result.returncode == 9, result.stderr
    assert "recovery.img: sha256" in result.stderr and "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert {n: target.read(n) for n in ("boot", "recovery")} == before


def test_restore_refuses_another_layout_and_named_protected_partitions(
    p70a: Layout, s650: Layout, dumped: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = dumped
    target = p70a.copy_to(tmp_path / "target")
    journal = tmp_path / "journal"
    named = mtkfs("restore", out, target.folder, "nvram", "--journal-dir", journal)
    assert named.returncode == 10, named.stderr
    assert "nvram is protected; add --unlock nvram" in named.stderr
    # Another phone's layout: the S650 has a system partition too, elsewhere and smaller.
    other = s650.copy_to(tmp_path / "s650")
    before = os.stat(next(iter(other.regions.values()))).st_mtime_ns
    mismatch = mtkfs("restore", out, other.folder, "--journal-dir", journal)
    assert mismatch.returncode == 10, mismatch.stderr
    assert "another partition layout" in mismatch.stderr or "no such partition" in mismatch.stderr
    assert os.stat(next(iter(other.regions.values()))).st_mtime_ns == before


def test_a_device_gone_mid_dump_keeps_what_was_written(p70a: Layout, tmp_path: Path) -> None:
    """The cable is pulled during ``cache`` (the 40th read): the error says so, the part
    written is kept, and the rerun (device back) reads only the rest."""
    out = tmp_path / "d"
    args = ("dump", p70a.folder, "boot", "cache", "-o", out, "--link-model",
            "latency=1ms,bandwidth=2GB/s")  # fmt: skip
    failed = mtkfs(*args, "--inject-faults", "gone-read@40")
    assert failed.returncode == 6, failed.stderr
    assert "the device is gone" in failed.stderr and "Traceback" not in failed.stderr
    assert "run the same command again" in failed.stderr
    items = {i["name"]: i for i in manifest(out)["items"]}
    assert items["boot"]["status"] == "done"
    assert items["cache"]["status"] == "partial" and items["cache"]["done_bytes"] > 0
    kept = items["cache"]["done_bytes"]
    again = mtkfs(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming at" in again.stderr
    moved = manifest(out)["sessions"][-1]["link_bytes"]
    cache = p70a.by_name("cache").size_bytes
    assert moved <= cache - kept + 4 * MiB  # the rest of cache and the GPT probe
    assert range_sha256(out / "cache.img", 0, cache) == range_sha256(
        p70a.regions["user"], p70a.by_name("cache").offset_bytes, cache
    )
