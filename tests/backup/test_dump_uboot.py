"""``mtkfs dump`` over a U-Boot console (the simulator; seed 003's NOR layout): byte-exact files,
and an interrupted dump that resumes without dumping any chunk twice."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mounting import ENV, MTKFS

from mtkfs.testing.disk import Layout, build_nor
from mtkfs.testing.sim_uboot import SimBoard, SpiNor, running_console

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def nor(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_nor(tmp_path_factory.mktemp("nor"))


def board(flash: Path) -> SimBoard:
    return SimBoard(sf=SpiNor(flash), banner_delay_s=0.02, autoboot_step_s=0.1,
                    boot_script_s=0.2)  # fmt: skip


def dump_args(url: str, nor: Layout, out: Path, cache: Path) -> list[str]:
    return [*MTKFS, "dump", f"uboot:{url}", "--flash", "sf", "--map",
            str(nor.folder / "mtdparts.txt"), "--cache-dir", str(cache), "-o", str(out),
            "--progress", "lines"]  # fmt: skip


def sessions(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return json.loads((out / "manifest.json").read_text())["sessions"]  # type: ignore[no-any-return]


def test_interrupted_console_dump_resumes_without_dumping_a_chunk_twice(
    nor: Layout, tmp_path: Path
) -> None:
    with running_console(board(nor.regions["flash"])) as console:
        # An uninterrupted dump: the reference count of md dumps.
        reference_args = dump_args(console.url, nor, tmp_path / "a", tmp_path / "ca")
        whole = subprocess.run(reference_args, env=ENV, capture_output=True, text=True,
                               timeout=300, check=False)  # fmt: skip
        assert whole.returncode == 0, whole.stderr
        manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
        for item in manifest["items"]:
            if item["kind"] == "partition":
                assert item["sha256"] == hashlib.sha256(nor.read(item["name"])).hexdigest()
        reference = sessions(tmp_path / "a")[0]["transport"]["uboot_dumps"]

        args = dump_args(console.url, nor, tmp_path / "b", tmp_path / "cb")
        process = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("kernel: done"):
                break
        time.sleep(1.0)  # into rootfs
        process.send_signal(signal.SIGINT)
        process.stderr.read()
        assert process.wait(60) == 130
        again = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300,
                               check=False)  # fmt: skip
        assert again.returncode == 0, again.stderr
    first, second = sessions(tmp_path / "b")
    dumps = [first["transport"]["uboot_dumps"], second["transport"]["uboot_dumps"]]
    assert dumps[0] > 0 and dumps[1] > 0
    # Chunks dumped before the signal come back from the persistent cache, revalidated by a
    # crc32 each; only a chunk in flight at the signal may be dumped twice.
    assert sum(dumps) <= reference + 2, (dumps, reference)
    assert second["disk_cache_hits"] > 0
    for item in json.loads((tmp_path / "b" / "manifest.json").read_text())["items"]:
        assert item["status"] == "done"
        if item["kind"] == "partition":
            data = (tmp_path / "b" / item["file"]).read_bytes()
            assert data == nor.read(item["name"]), item["name"]
