"""Every generation of simulated phone through the real tty link (``da:/dev/pts/N``): the legacy
DA on an MT6582 with the S650's MBR/EBR eMMC, on an MT6752 with the P-70A's GPT, on a NOR board,
and the XML (V6) DA on a UFS phone — partition and region files byte-exact, ext4 loop-mounted, a
write verified, and (legacy) a read packet corrupted on the wire caught by its checksum and read
again, never delivered."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import fuse_available, loop_available
from mounting import loop_mounted, mounted
from test_sim_mount import make_da_file, phone_on_a_pty, sha256_of

from mtkfs.testing.disk import Layout, build_nor, pseudo_random

_fuse_ok, _fuse_why = fuse_available()
_loop_ok, _loop_why = loop_available()
pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not _fuse_ok, reason=_fuse_why),
    pytest.mark.timeout(600),
]

#: Partitions bigger than this are not hashed through the pty (~65 MB/s): they are checked by
#: loop-mounting their ext4 instead, and whole through the in-memory link elsewhere.
_HASH_LIMIT_BYTES = 512 << 20


@dataclass(frozen=True)
class Case:
    profile: str
    da_code: str
    fixture: str
    ext4: str | None  # a partition to loop-mount, and a file in it
    ext4_file: str
    writable: str  # a partition to write into
    mount_args: tuple[str, ...] = ()
    protocol: str = "legacy"
    #: A read packet corrupted on the wire: only the legacy DA's packets carry a checksum.
    faults: str = "corrupt-read=5"
    v6: bool = False


CASES = [
    Case("mt6582", "0x6582", "s650_rw", "p5", "build.prop", "p3"),
    Case("mt6752", "0x6752", "p70a_rw", "system", "build.prop", "boot"),
    Case("mt6582-nor", "0x6582", "nor", None, "", "kernel", ("--map", "{folder}/mtdparts.txt")),
    Case(
        "mt6833-ufs", "0x6833", "ufs_rw", "system_a", "build.prop", "boot_a",
        protocol="xml", faults="", v6=True,
    ),
]  # fmt: skip


@pytest.fixture
def nor(tmp_path: Path) -> Layout:
    return build_nor(tmp_path / "nor")


@pytest.fixture
def ufs_rw(ufs: Layout, tmp_path: Path) -> Layout:
    return ufs.copy_to(tmp_path / "ufs")


@pytest.mark.parametrize("case", CASES, ids=[c.profile for c in CASES])
def test_profile_over_a_tty_link(
    case: Case, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    layout: Layout = request.getfixturevalue(case.fixture)
    da = make_da_file(tmp_path / "DA.bin", case.da_code, v6=case.v6)
    log = tmp_path / "mtkfs.log"
    extra = [a.format(folder=layout.folder) for a in case.mount_args]
    args = ("--da", str(da), "-o", "rw", "--journal-dir", str(tmp_path / "j"), "--log", str(log))
    faults = ("--rw", "--faults", case.faults) if case.faults else ("--rw",)
    with (
        phone_on_a_pty(layout.folder, *faults, profile=case.profile) as pts,
        mounted(f"da:{pts}", tmp_path / "mnt", *args, *extra) as mnt,
    ):
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["device"]["protocol"] == case.protocol
        if case.protocol == "xml":  # UFS: LUs of 4096-byte blocks, the GPT in 4096-byte LBAs
            assert status["device"]["storage"]["block_size"] == 4096
            assert set(status["device"]["storage"]["regions"]) == {"lu0", "lu1", "lu2"}
            pmap = json.loads((mnt / ".mtkfs" / "map.json").read_text())
            assert "4096-byte sectors" in pmap["map"]
            assert pmap["warnings"] == []  # the DA's READ-PARTITION-TABLE agrees with the GPT
        hashed = 0
        for part in layout.partitions:
            if part.size_bytes > _HASH_LIMIT_BYTES:
                continue
            path = layout.regions[part.region]
            assert sha256_of(mnt / f"{part.name}.img") == sha256_of(
                path, part.offset_bytes, part.size_bytes
            ), part.name
            hashed += 1
        assert hashed >= 3
        for region, path in layout.regions.items():
            if path.stat().st_size <= _HASH_LIMIT_BYTES:
                assert sha256_of(mnt / "regions" / f"{region}.img") == sha256_of(path), region
        if case.ext4 is not None and _loop_ok:
            with loop_mounted(mnt / f"{case.ext4}.img", tmp_path / "fs") as target:
                assert "ro.product" in (target / case.ext4_file).read_text()
        data = pseudo_random(f"profile/{case.profile}", 300_000)
        subprocess.run(
            ["dd", f"of={mnt / f'{case.writable}.img'}", "conv=notrunc,fsync", "status=none"],
            input=data,
            check=True,
        )
        status = json.loads((mnt / ".mtkfs" / "status.json").read_text())
        assert status["writes"]["failures"] == [] and status["writes"]["committed_chunks"] >= 1
    assert layout.read(case.writable, 0, len(data)) == data
    if case.faults:  # the 5th read packet of each power-on had a flipped bit: read again
        assert "checksum failure" in log.read_text()


def test_every_partition_of_the_legacy_s650_through_the_in_memory_link(
    s650: Layout, tmp_path: Path
) -> None:
    """All of it, the 7 GiB of p5..p8 too: the in-memory link moves ~300 MB/s where the pty
    moves ~65."""
    with mounted(f"sim:mt6582:{s650.folder}", tmp_path / "mnt") as mnt:
        for part in s650.partitions:
            path = s650.regions[part.region]
            assert same_bytes(mnt / f"{part.name}.img", path, part.offset_bytes, part.size_bytes)


def same_bytes(mounted_file: Path, image: Path, offset_bytes: int, size_bytes: int) -> bool:
    """``mounted_file`` holds exactly ``size_bytes`` of ``image`` from ``offset_bytes`` (compared
    block by block: no hashing, the gigabytes cost only the reads)."""
    block = 8 << 20
    with open(mounted_file, "rb", buffering=0) as got, open(image, "rb", buffering=0) as want:
        want.seek(offset_bytes)
        left = size_bytes
        while left:
            expected = want.read(min(block, left))
            if got.read(len(expected)) != expected:
                return False
            left -= len(expected)
        return got.read(1) == b""
