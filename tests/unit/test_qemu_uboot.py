"""The QEMU U-Boot test peer (mtkfs.testing.qemu_uboot): its images are what the board claims,
and the real U-Boot 2023.01 reads them back: ``crc32`` of the virtio disk's first MiB equals
``zlib.crc32`` of disk.img's, and ``md.l`` of the memory-mapped NOR shows pflash1.img's words."""

from __future__ import annotations

import re
import socket
import zlib

import pytest
from seeds import SEED_003_BOOTLOG

from mtkfs.maps.model import Region
from mtkfs.maps.mtd import parse_mtd_bootlog
from mtkfs.testing import qemu_uboot
from mtkfs.testing.qemu_uboot import (
    PFLASH1_BASE,
    PFLASH_BYTES,
    QEMU_RAM_STAGING,
    SerialConsole,
    UbootBoard,
    build_uboot_board,
    qemu_available,
    running_uboot,
)

pytestmark = pytest.mark.timeout(120)

_qemu_ok, _qemu_why = qemu_available()
needs_qemu = pytest.mark.skipif(not _qemu_ok, reason=_qemu_why)

MIB = 1 << 20


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> UbootBoard:
    return build_uboot_board(tmp_path_factory.mktemp("qemu-board"))


def test_images_are_sparse_and_as_declared(board: UbootBoard) -> None:
    assert board.pflash.stat().st_size == PFLASH_BYTES  # QEMU refuses any other size
    assert board.nor_base == PFLASH1_BASE + board.nor_offset_bytes
    assert board.nor_offset_bytes >= 256 << 10  # clear of U-Boot's environment sectors
    for image in (board.disk, board.pflash):
        assert image.stat().st_blocks * 512 < 20 * MIB, image
    assert board.bootlog.read_text() == SEED_003_BOOTLOG
    flash = {"flash": Region("flash", board.nor_size)}
    parsed = parse_mtd_bootlog(board.bootlog.read_text(), flash).partitions
    assert [(p.name, p.offset_bytes, p.size_bytes) for p in parsed] == [
        (p.name, p.offset_bytes, p.size_bytes) for p in board.partitions if p.region == "nor"
    ]
    conf = board.by_name("nor", "conf")
    assert conf.offset_bytes + conf.size_bytes == board.nor_size
    # Erased (0xFF) between the content: the last bytes of vd1 and of ROOTFS.
    vd1, rootfs = board.by_name("nor", "vd1"), board.by_name("nor", "ROOTFS")
    assert board.read("nor", vd1.offset_bytes + vd1.size_bytes - 16, 16) == b"\xff" * 16
    assert board.read("nor", rootfs.offset_bytes + rootfs.size_bytes - 16, 16) == b"\xff" * 16
    assert board.read("nor", 0, 16) != b"\xff" * 16
    assert board.read("virtio0", 512, 8) == b"EFI PART"
    system = board.by_name("virtio0", board.ext4_partition)
    assert system.fs == "ext4"
    assert board.read("virtio0", system.offset_bytes + 0x438, 2) == b"\x53\xef"  # ext4 magic


@needs_qemu
def test_qemu_process_is_stopped_when_the_body_fails(board: UbootBoard) -> None:
    with pytest.raises(RuntimeError, match="body failed"), running_uboot(board) as qemu:
        process = qemu.process
        raise RuntimeError("body failed")
    assert process.poll() is not None


@needs_qemu
def test_a_port_taken_by_another_program_is_not_mistaken_for_qemu(
    board: UbootBoard, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        ports = iter([taken, qemu_uboot._free_port()])
        monkeypatch.setattr(qemu_uboot, "_free_port", lambda: next(ports))
        with running_uboot(board) as qemu:
            assert qemu.port != taken and qemu.process.poll() is None
        assert "in use" in board.log.read_text()


def _md_words(transcript: bytes, address: int, count: int) -> bytes:
    """Memory bytes from ``md.l`` output (little-endian CPU: words byte-swapped back)."""
    data = bytearray()
    lines = transcript.decode().split("\r\n")[1:-1]  # echo ... prompt
    for line in lines:
        match = re.fullmatch(r"([0-9a-f]{8}):((?: [0-9a-f]{8}){1,4}) {2,}.{1,16}", line)
        assert match, line
        assert int(match.group(1), 16) == address + len(data), line
        data += b"".join(int(w, 16).to_bytes(4, "little") for w in match.group(2).split())
    assert len(data) == 4 * count
    return bytes(data)


@needs_qemu
def test_real_uboot_reads_the_disk_and_the_nor(board: UbootBoard) -> None:
    with running_uboot(board) as qemu, SerialConsole(qemu.url) as con:
        try:
            boot = con.stop_autoboot()
            assert b"U-Boot 2023.01" in boot and boot.endswith(b"\r\n=> ")

            con.command("virtio scan")
            read = con.command(f"virtio read {QEMU_RAM_STAGING:#x} 0 0x800")
            assert b"2048 blocks read: OK" in read
            crc = con.command(f"crc32 {QEMU_RAM_STAGING:#x} 0x100000")
            match = re.search(rb"crc32 for 40200000 \.\.\. 402fffff ==> ([0-9a-f]{8})\r\n", crc)
            assert match, crc
            assert int(match.group(1), 16) == zlib.crc32(board.read("virtio0", 0, MIB))

            listing = SerialConsole.output(con.command("part list virtio 0"))
            names = re.findall(r'^ +\d+\t0x[0-9a-f]{8}\t0x[0-9a-f]{8}\t"([^"]+)"$', listing, re.M)
            assert names == [p.name for p in board.partitions if p.region == "virtio0"]

            # The NOR is memory-mapped: md.l straight from it (HOME's end runs into vd1).
            for name, offset in (("KERNEL", 0), ("HOME", 0), ("HOME", -16)):
                part = board.by_name("nor", name)
                nor_offset = part.offset_bytes + offset % part.size_bytes
                address = board.nor_base + nor_offset
                words = _md_words(con.command(f"md.l {address:#x} 8"), address, 8)
                assert words == board.read("nor", nor_offset, 32), (name, offset)
        except (AssertionError, TimeoutError):
            print(bytes(con.received[-3000:]).decode(errors="replace"))
            raise
