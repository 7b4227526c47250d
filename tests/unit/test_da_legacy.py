"""Legacy DA protocol pairs: the host operations against the simulated legacy DA, byte for byte.

Tiers here: pure codec checks (stage-2 config, statuses, report layouts), golden bytes taken from
the reference rather than from our own encoder, host ↔ simulator pairs for every command mtkfs
uses (bring-up in both modes, reads with verified checksums, writes, PMT, USB speed, FINISH),
fault injection and malformed device bytes, then the whole phone: SimBrom → DA1 → legacy DA.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    OutOfRangeError,
    ReadOnlyError,
    RemoteProtocolError,
    TransportError,
    UsageError,
)
from mtkfs.protocols import brom
from mtkfs.protocols import da_legacy as L
from mtkfs.protocols import legacy_bringup as LB
from mtkfs.protocols import legacy_wire as LW
from mtkfs.protocols.base import Op, Recv, Send, run_pair
from mtkfs.protocols.chips import chip_for
from mtkfs.protocols.dafile import DaFile, parse_da_file
from mtkfs.protocols.preloader_emi import EmiSettings, extract_emi
from mtkfs.testing.content import emmc_boot_preloader, preloader_emi
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_legacy import LegacyFaults, LegacySim, legacy_boot1_emi
from mtkfs.testing.sim_xflash import MemoryStore
from mtkfs.testing.simlink import GeneratorLink
from mtkfs.transports import da as da_transport

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")

DA2_ADDR = 0x40000000
DA2 = b"legacy DA2 stage two, signature included " * 200  # 8200 bytes: 2 full packets + 8
PACKET = 1024  # small READ packets: many per test, still fast
KiB, MiB = 1 << 10, 1 << 20


def pattern(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def device(hw_code: int = 0x6582, *, mode: str = "preloader") -> brom.DeviceInfo:
    """What ``brom.identify`` would report for a phone with this BROM code."""
    preloader = mode == "preloader"
    return brom.DeviceInfo(
        hw_code=hw_code,
        chip=chip_for(hw_code),
        hw_sub_code=0x8A00,
        hw_ver=0xCA00,
        sw_ver=0,
        mode=mode,
        bl_ver=3 if preloader else None,
        version=0xFF if preloader else 0x05,
        target_config=brom.TargetConfig(0),
    )


def emmc_store() -> MemoryStore:
    return MemoryStore(
        {"boot1": 64 * KiB, "boot2": 64 * KiB, "rpmb": 128 * KiB, "user": 4 << 30},
        content={
            "boot1": pattern("boot1", 64 * KiB),
            "boot2": pattern("boot2", 64 * KiB),
            "user": pattern("user", 256 * KiB),
        },
    )


def nor_store() -> MemoryStore:
    return MemoryStore.from_bytes({"flash": pattern("nor", 1 * MiB)}, kind="nor")


def nand_store() -> MemoryStore:
    return MemoryStore.from_bytes({"flash": pattern("nand", 512 * KiB)}, kind="nand")


def ready(
    sim: LegacySim,
    *,
    emi: EmiSettings | None = None,
    packet: int | None = PACKET,
    info: brom.DeviceInfo | None = None,
) -> L.LegacySession:
    """Bring ``sim`` to DA2 through the real client path."""
    op = L.connect(info or device(), DA2_ADDR, DA2, emi=emi, packet_bytes=packet)
    return run_pair(op, sim.serve())


@pytest.fixture
def store() -> MemoryStore:
    return emmc_store()


@pytest.fixture
def sim(store: MemoryStore) -> LegacySim:
    return LegacySim(store)


@pytest.fixture
def session(sim: LegacySim) -> L.LegacySession:
    return ready(sim)


def canned(*replies: bytes) -> Op[object]:
    """A device that says its lines, then reads whatever comes (for malformed-input tests)."""
    for reply in replies:
        yield Send(reply)
    while True:
        yield Recv(1)


def recording(op: Op[T], sends: list[bytes]) -> Op[T]:
    """``op``, with the bytes of every Send it makes appended to ``sends``."""
    request = next(op)
    while True:
        if isinstance(request, Send):
            sends.append(request.data)
        reply = yield request
        try:
            request = op.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result


def legacy_emi(version: int, size: int = 336) -> EmiSettings:
    """EMI settings of ``version`` whose legacy blob (after MTK_BIN + 0xC) is ``size`` bytes."""
    head = b"MTK_BLOADER_INFO_v%02d" % version
    blob = head + bytes(100 - len(head)) + b"MTK_BIN\0" + bytes(4) + pattern(f"emi{version}", size)
    return EmiSettings(version, blob, "test preloader")


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------


def test_stage2_config_bytes_match_the_reference() -> None:
    """Spelled out from mtkclient.md §4.1, not from our encoder: BROM ver, BL ver, NOR chip
    0x0008, NOR CS 0, NAND ACCCON 0x7007FFFF, BMT flag + size (MT6582 eMMC: 0x1500000), force
    charge, reset keys, EXT_26M, MSDC boot channel, MT6582's u32 1."""
    config = L.stage2_config(device(), "emmc")
    assert config.hex(" ") == ("ff 03 00 08 00 70 07 ff ff 01 01 50 00 00 01 01 02 00 00 00 00 01")
    brom_mode = L.stage2_config(device(0x6735, mode="brom"), "emmc")
    assert brom_mode[:2] == b"\x05\xfe" and len(brom_mode) == 18  # BL ver 0xFE, no extras


@pytest.mark.parametrize(
    ("hw_code", "extra_bytes"),
    [(0x6580, 24), (0x8163, 24), (0x8127, 28), (0x6592, 4), (0x6589, 4), (0x6572, 0)],
)
def test_stage2_chip_extras(hw_code: int, extra_bytes: int) -> None:
    assert len(LB.stage2_extra(hw_code)) == extra_bytes


def test_bmt_settings() -> None:
    assert LB.bmt_settings(0x6582, "emmc") == (1, 0x1500000)
    assert LB.bmt_settings(0x6582, "nand") == (1, 0)
    assert LB.bmt_settings(0x6571, "nand") == (0, 0xE00000)


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (0xBE0, OutOfRangeError, "INVALID_RANGE"),
        (0xBBE, TransportError, "--preloader"),
        (0x177B, AuthRequiredError, "security policy"),
        (0xC6A, RemoteProtocolError, "phone's own firmware"),
        (0xC51, TransportError, "SDMMC_READ_FAILED"),
        (0x1234, TransportError, "unknown status (0x1234)"),
    ],
)
def test_status_errors_say_what_to_do(code: int, error: type[Exception], words: str) -> None:
    exc = L.status_error(code, "READ")
    assert type(exc) is error
    assert words in str(exc) and str(exc).startswith("READ: ")


def test_a_checksum_status_is_worth_a_retry() -> None:
    assert L.status_error(0x411, "WRITE").temporary
    assert not L.status_error(0xC51, "READ").temporary


def nand_report(info: bytes, ids: bytes) -> bytes:
    """A flash report around a NAND block ``info`` + ``ids``: NOR, NAND, info2, eMMC, SD, RAM,
    pass."""
    emmc = struct.pack(">I8Q16s8s", 0, *([0] * 8), bytes(16), bytes(8))
    rest = struct.pack(">HHHBBB", 4096, 128, 64, 8, 5, 0) + emmc + bytes(0x1C) + bytes(0x26)
    return bytes(0x1C) + info + ids + rest + b"\x5a" + bytes(8) + b"\xc1"


def test_nand_report_with_a_64_bit_size() -> None:
    info = struct.pack(">IBHQH", 0, 0, 0xEC, 1 << 30, 2)
    report = run_pair(L.recv_flash_report(0x6582), canned(nand_report(info, b"\x00\xec\x00\xd3")))
    assert (report.nand_size, report.nand_ids, report.nand_page) == (1 << 30, (0xEC, 0xD3), 4096)


@pytest.mark.parametrize(
    ("ids", "more"),
    [((0xEC, 0x0000, 0x1095), b"\x10\x95"), ((0xEC, 0xDA10, 0x1095), b"\x10\x95")],
    ids=["mtkclient-rule", "implausible-64-bit-count"],
)
def test_nand_report_with_a_32_bit_size(ids: tuple[int, ...], more: bytes) -> None:
    """Older DAs send a u32 size, so their ids start 4 bytes early: spotted by a zero count at
    the 64-bit place (mtkclient's rule) or by an implausible one there."""
    info = struct.pack(">IBHIH", 0, 0, 0xEC, 256 * MiB, 3) + struct.pack(">2H", *ids[:2])
    report = run_pair(L.recv_flash_report(0x6582), canned(nand_report(info, more)))
    assert (report.nand_size, report.nand_ids) == (256 * MiB, ids)


def test_nand_report_with_implausible_counts() -> None:
    info = struct.pack(">IBHQH", 0, 0, 0xEC, 0xFFFF_FFFF_FFFF, 0xFFFF)
    with pytest.raises(RemoteProtocolError, match="NAND id count 65535"):
        run_pair(L.recv_flash_report(0x6582), canned(nand_report(info, b"")))


# ---------------------------------------------------------------------------------------------
# Bring-up
# ---------------------------------------------------------------------------------------------


def test_bring_up_bytes_match_the_reference(sim: LegacySim) -> None:
    """ACK after DA1's report, the stage-2 config, DA2's header (address, size, 4 KiB packets)
    and packets, the closing ACK, then USB_CHECK_STATUS."""
    sent: list[bytes] = []
    run_pair(recording(L.connect(device(), DA2_ADDR, DA2), sent), sim.serve())
    assert sent[0] == b"\x5a"
    assert sent[1] == L.stage2_config(device(), "emmc")
    assert sent[2].hex() == "40000000" + f"{len(DA2):08x}" + "00001000"
    assert b"".join(sent[3:-2]) == DA2 and [len(s) for s in sent[3:-2]] == [4096, 4096, 8]
    assert sent[-2:] == [b"\x5a", b"\x72"]


def test_connect_in_preloader_mode(sim: LegacySim) -> None:
    session = ready(sim, packet=None)
    assert session.connection_agent == "preloader" and session.usb_speed == "high-speed"
    assert session.protocol == "legacy" and session.read_packet_bytes == MiB
    assert sim.stage == 2 and sim.da2 == DA2 and sim.da2_addr == DA2_ADDR and sim.emi == b""
    assert 0xE8 not in sim.config and session.ram_size_bytes == 0x40000000
    assert session.storage.kind == "emmc" and session.storage.cid == b"SIMLEGACY-CID-01"
    assert [(r.name, r.part_id, r.size_bytes) for r in session.storage.regions] == [
        ("boot1", 1, 64 * KiB),
        ("boot2", 2, 64 * KiB),
        ("rpmb", 3, 128 * KiB),
        ("user", 8, 4 << 30),
    ]
    assert session.describe() == "legacy DA (preloader agent), emmc: boot1, boot2, rpmb, user"


@pytest.mark.parametrize("version", [10, 11, 12, 13, 15, 16, 17, 20, 21])
def test_connect_in_brom_mode_sets_up_dram(store: MemoryStore, version: int) -> None:
    emi = legacy_emi(version)
    sim = LegacySim(store, connection_agent="brom", expected_emi=emi.legacy_blob)
    session = ready(sim, emi=emi)
    assert session.connection_agent == "brom" and sim.dram_ready and sim.da2 == DA2
    if version in (12, 13):  # the first word is replaced by a 0x100 header
        assert sim.emi == b"\x00\x00\x01\x00" + emi.legacy_blob[4:]
    else:
        assert sim.emi == emi.legacy_blob


def test_mt8127_sends_no_emi_length(store: MemoryStore) -> None:
    emi = legacy_emi(16)
    sim = LegacySim(store, connection_agent="brom", hw_code=0x8127, expected_emi=emi.legacy_blob)
    sent: list[bytes] = []
    op = L.connect(device(0x8127, mode="brom"), DA2_ADDR, DA2, emi=emi)
    assert run_pair(recording(op, sent), sim.serve()).connection_agent == "brom"
    assert emi.legacy_blob in sent  # straight after the ACK, without a length word first
    assert sim.emi == emi.legacy_blob


def test_brom_mode_without_emi_stops_before_da2(store: MemoryStore) -> None:
    sim = LegacySim(store, connection_agent="brom")
    with pytest.raises(UsageError, match="--preloader"):
        ready(sim)
    assert sim.da2 == b"" and sim.emi == b""


def test_wrong_emi_is_a_clear_error(store: MemoryStore) -> None:
    sim = LegacySim(store, connection_agent="brom", expected_emi=legacy_emi(16).legacy_blob)
    with pytest.raises(TransportError, match=r"DRAMC_RANK0_CALIBRATION_FAILED.*--preloader"):
        ready(sim, emi=legacy_emi(16, size=300))
    assert sim.da2 == b"" and not sim.dram_ready


def test_an_emi_version_the_protocol_does_not_know(store: MemoryStore) -> None:
    sim = LegacySim(store, connection_agent="brom")
    with pytest.raises(UsageError, match=r"v51.*--preloader"):
        ready(sim, emi=legacy_emi(51))
    assert sim.emi == b""  # refused before ENABLE_DRAM went out


def test_emi_shorter_than_the_da_wants(store: MemoryStore) -> None:
    sim = LegacySim(store, connection_agent="brom", expected_emi=bytes(400))
    with pytest.raises(UsageError, match="wants 400 bytes"):
        ready(sim, emi=legacy_emi(11, size=200))


def test_emi_without_mtk_bin_is_refused(store: MemoryStore) -> None:
    sim = LegacySim(store, connection_agent="brom")
    with pytest.raises(Exception, match="no MTK_BIN section"):
        ready(sim, emi=EmiSettings(16, b"MTK_BLOADER_INFO_v16" + bytes(200)))


def test_a_refused_stage2_config(store: MemoryStore) -> None:
    sim = LegacySim(store, faults=LegacyFaults(stage2_status=0xC4D))
    with pytest.raises(TransportError, match=r"stage-2 configuration.*EMMC_FLASH_NOT_FOUND"):
        ready(sim)


def test_no_sync_byte_means_da1_did_not_start() -> None:
    with pytest.raises(RemoteProtocolError, match="sync byte 0xC0, got 0x00"):
        run_pair(L.recv_sync(), canned(b"\x00"))


def test_an_absurd_id_count_is_refused_before_reading_it() -> None:
    op = L.recv_sync()
    assert next(op) == Recv(1)
    assert op.send(b"\xc0") == Recv(4)
    assert op.send(bytes(4)) == Recv(2)
    with pytest.raises(RemoteProtocolError, match="announces 65535"):
        op.send(b"\xff\xff")  # no Recv(131070) is ever yielded


def test_a_nacked_da2_upload() -> None:
    with pytest.raises(RemoteProtocolError, match=r"DA2 upload \(header\).*0xa5"):
        run_pair(L.upload_da2(DA2_ADDR, DA2), canned(b"\xa5"))


def test_a_pass_block_without_ack() -> None:
    report = nand_report(struct.pack(">IBHQH", 0, 0, 0, 0, 0), b"")
    with pytest.raises(RemoteProtocolError, match="pass block"):
        run_pair(L.recv_flash_report(0x6582), canned(report[:-10] + bytes(10)))


def test_no_storage_at_all() -> None:
    with pytest.raises(TransportError, match="no eMMC, NAND or NOR"):
        ready(LegacySim(MemoryStore({"user": 0})))


@pytest.mark.parametrize(("kind", "block"), [("nor", 512), ("nand", 2048)])
def test_nor_and_nand_storage_info(kind: str, block: int) -> None:
    store = nor_store() if kind == "nor" else nand_store()
    session = ready(LegacySim(store), packet=None)
    info = session.storage
    assert (info.kind, info.storage_id, info.block_size_bytes) == (kind, L.HW_STORAGE[kind], block)
    assert [(r.name, r.part_id) for r in info.regions] == [("flash", 8)]
    assert info.regions[0].size_bytes == store.region_sizes()["flash"]
    assert session.read_packet_bytes == (4096 if kind == "nor" else MiB)


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------

LENGTHS = [1, 511, 512, 513, PACKET - 1, PACKET, PACKET + 1, 3 * PACKET + 17]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("offset", [0, 1, 511, 4096])
def test_read_lengths(
    sim: LegacySim, session: L.LegacySession, store: MemoryStore, offset: int, length: int
) -> None:
    assert run_pair(session.read("user", offset, length), sim.serve()) == store.read(
        "user", offset, length
    )


def test_a_read_spanning_packets_returns_every_byte(
    sim: LegacySim, session: L.LegacySession, store: MemoryStore
) -> None:
    """mtkclient's in-memory legacy read returns only the first packet; this one returns all
    of them and leaves the DA in step."""
    got = run_pair(session.read("user", 100, 5 * PACKET + 300), sim.serve())
    assert got == store.read("user", 100, 5 * PACKET + 300)
    assert sim.read_packet_sizes == [PACKET] * 5 + [512]  # widened to whole sectors
    assert run_pair(session.read("boot2", 0, 10), sim.serve()) == store.read("boot2", 0, 10)


@settings(max_examples=40, deadline=None)
@given(
    offset=st.integers(0, 200 * KiB),
    length=st.integers(1, 40 * KiB),
    packet=st.sampled_from([512, 1024, 1536, 4096]),
    region=st.sampled_from(["boot1", "user"]),
)
def test_emmc_reads_match_the_store(offset: int, length: int, packet: int, region: str) -> None:
    store = emmc_store()
    size = store.region_sizes()[region]
    offset = min(offset, size - 1)
    length = min(length, size - offset)
    sim = LegacySim(store)
    session = ready(sim, packet=packet)
    assert run_pair(session.read(region, offset, length), sim.serve()) == store.read(
        region, offset, length
    )


@settings(max_examples=25, deadline=None)
@given(offset=st.integers(0, MiB - 1), length=st.integers(1, 40 * KiB))
def test_nor_reads_match_the_store(offset: int, length: int) -> None:
    store = nor_store()
    length = min(length, MiB - offset)
    sim = LegacySim(store)
    session = ready(sim, packet=None)  # NOR: 4 KiB packets
    assert run_pair(session.read("flash", offset, length), sim.serve()) == store.read(
        "flash", offset, length
    )
    assert set(sim.read_packet_sizes[:-1]) <= {4096}


@settings(max_examples=25, deadline=None)
@given(offset=st.integers(0, 500 * KiB), length=st.integers(1, 20 * KiB))
def test_nand_reads_strip_the_spare_area(offset: int, length: int) -> None:
    store = nand_store()
    length = min(length, 512 * KiB - offset)
    sim = LegacySim(store)
    session = ready(sim)
    got = run_pair(session.read("flash", offset, length), sim.serve())
    assert got == store.read("flash", offset, length)
    assert set(sim.read_packet_sizes) == {2048 + 64}  # one page + spare per packet


def test_read_exchange_bytes(sim: LegacySim, session: L.LegacySession) -> None:
    """SDMMC_SWITCH_PART, its partition; READ: host OS, storage 2, u64 address, u64 length,
    u32 packet; one ACK per packet."""
    sent: list[bytes] = []
    run_pair(recording(session.read("boot2", 700, 1000), sent), sim.serve())
    assert sent == [
        b"\x60",
        b"\x02",
        bytes.fromhex("d6 0c 02") + struct.pack(">QQI", 512, 1536, PACKET),
        b"\x5a",
        b"\x5a",
    ]


def test_nand_read_exchange_bytes() -> None:
    sim = LegacySim(nand_store())
    session = ready(sim)
    sent: list[bytes] = []
    run_pair(recording(session.read("flash", 2048, 4096), sent), sim.serve())
    assert sent[0] == bytes.fromhex("df 0c 00 01") + struct.pack(">III", 2048, 4096, 0)
    assert sent[1:] == [struct.pack(">I", 1), b"\x5a", b"\x5a"]


def test_a_corrupted_packet_is_caught_and_read_again(
    sim: LegacySim, session: L.LegacySession, store: MemoryStore
) -> None:
    sim.faults.corrupt_read_packet = 2  # the second packet of the first attempt
    got = run_pair(session.read("user", 0, 4 * PACKET), sim.serve())
    assert got == store.read("user", 0, 4 * PACKET)
    assert sim.commands.count(0xD6) == 2 and len(sim.read_packet_sizes) == 8


def test_three_bad_attempts_are_an_error_never_data(
    sim: LegacySim, session: L.LegacySession, store: MemoryStore
) -> None:
    sim.faults.corrupt_read_packets = frozenset({2, 5, 8})  # one in each 3-packet attempt
    with pytest.raises(RemoteProtocolError, match=r"at 0x1000: .*0x1400.*all 3 attempts"):
        run_pair(session.read("user", 4096, 3 * PACKET), sim.serve())
    assert sim.commands.count(0xD6) == 3
    # Every packet was ACKed: the session is in step for the next command.
    assert run_pair(session.read("user", 0, 100), sim.serve()) == store.read("user", 0, 100)


def test_read_past_the_end(sim: LegacySim, session: L.LegacySession) -> None:
    with pytest.raises(OutOfRangeError, match="INVALID_RANGE"):
        run_pair(session.read("boot1", 60 * KiB, 8 * KiB), sim.serve())
    assert run_pair(session.read("boot1", 0, 16), sim.serve()) == pattern("boot1", 16)


def test_a_failed_read(sim: LegacySim, session: L.LegacySession) -> None:
    sim.faults.fail_read = 1
    with pytest.raises(TransportError, match=r"error bytes 00 00 0c 51.*SDMMC_READ_FAILED"):
        run_pair(session.read("user", 0, 512), sim.serve())
    assert run_pair(session.read("user", 0, 16), sim.serve()) == pattern("user", 16)


def test_a_packet_the_da_cannot_hold(store: MemoryStore) -> None:
    sim = LegacySim(store, read_packet_bytes=64 * KiB)
    session = ready(sim, packet=MiB)
    with pytest.raises(RemoteProtocolError, match="INVALID_ARGUMENTS"):
        run_pair(session.read("user", 0, 512), sim.serve())


def test_a_missing_partition_is_refused(sim: LegacySim, session: L.LegacySession) -> None:
    with pytest.raises(LocalProtocolError, match="no region 'gp1'"):
        session.read("gp1", 0, 512)
    op = L.read_flash("emmc", 4, 0, 512, packet_bytes=PACKET)
    with pytest.raises(TransportError, match="refused eMMC partition 4"):
        run_pair(op, sim.serve())


def test_a_stalled_device_is_reported_not_hung(sim: LegacySim, session: L.LegacySession) -> None:
    sim.faults.stall_read_packet = 2
    with pytest.raises(LocalProtocolError, match="exchange stuck: host waits for"):
        run_pair(session.read("user", 0, 4 * PACKET), sim.serve())


def test_a_disconnect_mid_read(sim: LegacySim, session: L.LegacySession) -> None:
    sim.faults.disconnect_read_packet = 3
    with pytest.raises(LocalProtocolError, match="device finished"):
        run_pair(session.read("user", 0, 4 * PACKET), sim.serve())


def test_garbage_instead_of_ack() -> None:
    with pytest.raises(RemoteProtocolError, match="expected ACK or NACK, got 0x00"):
        run_pair(L.read_flash("nor", 8, 0, 512, packet_bytes=PACKET), canned(b"\x00"))


def test_a_nand_page_size_the_report_did_not_announce() -> None:
    device_bytes = b"\x5a" + struct.pack(">III", 4096, 128, 4096 + 128)
    op = L.read_flash("nand", 8, 0, 2048, packet_bytes=PACKET, sector_bytes=2048)
    with pytest.raises(RemoteProtocolError, match="4096-byte pages"):
        run_pair(op, canned(device_bytes))


def test_empty_reads_exchange_nothing() -> None:
    with pytest.raises(StopIteration) as read:
        next(L.read_flash("emmc", 8, 123, 0, packet_bytes=PACKET))
    assert read.value.value == b""


# ---------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------


def test_write_round_trip_pads_to_a_sector(store: MemoryStore) -> None:
    sim = LegacySim(store)
    session = L.LegacySession(**{**vars(ready(sim)), "write_packet_bytes": 2048})
    data = pattern("new", 5000)
    run_pair(session.write("user", 8192, data), sim.serve())
    assert sim.write_packet_sizes == [2048, 2048, 1024]
    assert store.read("user", 8192, 5120) == data + bytes(120)
    assert run_pair(session.read("user", 8192, 5000), sim.serve()) == data


def test_write_exchange_bytes(sim: LegacySim, session: L.LegacySession) -> None:
    data = bytes(range(256)) * 2  # byte sum 65280 = 0xFF00
    sent: list[bytes] = []
    run_pair(recording(session.write("boot2", 1024, data), sent), sim.serve())
    header = bytes.fromhex("62 01 02") + struct.pack(">QQI", 1024, 512, MiB)
    assert sent == [b"\x60", b"\x02", header, b"\x5a", data, b"\xff\x00"]
    assert sim.store.read("boot2", 1024, 512) == data


def test_nor_writes(store: MemoryStore) -> None:
    nor = nor_store()
    sim = LegacySim(nor)
    session = ready(sim)
    sent: list[bytes] = []
    run_pair(recording(session.write("flash", 4096, b"\x01" * 512), sent), sim.serve())
    assert sent[0][:3] == bytes.fromhex("62 20 08")  # no partition switch on NOR
    assert nor.read("flash", 4096, 512) == b"\x01" * 512


def corrupting(op: Op[object]) -> Op[object]:
    """``op`` over a link that flips a bit in every Send larger than 256 bytes."""
    request = next(op)
    while True:
        if isinstance(request, Send) and len(request.data) > 256:
            request = Send(bytes([request.data[0] ^ 1]) + request.data[1:])
        reply = yield request
        try:
            request = op.send(reply)
        except StopIteration as stop:
            return stop.value


def test_a_garbled_write_packet_fails_its_checksum(
    sim: LegacySim, session: L.LegacySession, store: MemoryStore
) -> None:
    with pytest.raises(TransportError, match="failed the DA's checksum") as caught:
        run_pair(corrupting(session.write("user", 0, pattern("w", 4096))), sim.serve())
    assert caught.value.temporary
    assert store.read("user", 0, 4096) == pattern("user", 4096)


def test_write_faults_are_acknowledged_but_visible_on_read_back(
    store: MemoryStore,
) -> None:
    sim = LegacySim(store, faults=LegacyFaults(drop_write_chunk=1, corrupt_write_chunk=2))
    session = L.LegacySession(**{**vars(ready(sim)), "write_packet_bytes": 2048})
    data = pattern("lost", 4096)
    run_pair(session.write("user", 0, data), sim.serve())  # "success"
    stored = run_pair(session.read("user", 0, 4096), sim.serve())
    assert stored[:2048] == pattern("user", 2048)  # never written
    assert stored[2048:4095] == data[2048:4095] and stored[4095] == data[4095] ^ 0x80


def test_a_write_past_the_end_is_refused(sim: LegacySim, session: L.LegacySession) -> None:
    with pytest.raises(TransportError, match="refused the write"):
        run_pair(session.write("boot1", 63 * KiB, bytes(2048)), sim.serve())
    assert run_pair(session.read("boot1", 0, 4), sim.serve()) == pattern("boot1", 4)


def test_nand_writes_are_refused() -> None:
    sim = LegacySim(nand_store())
    session = ready(sim)
    with pytest.raises(ReadOnlyError, match="mount read-only"):
        next(session.write("flash", 0, bytes(2048)))


def test_unaligned_write_is_our_bug(session: L.LegacySession) -> None:
    with pytest.raises(LocalProtocolError, match="not 512-aligned"):
        next(session.write("user", 100, b"x"))


# ---------------------------------------------------------------------------------------------
# PMT, USB speed, FINISH
# ---------------------------------------------------------------------------------------------


def test_read_pmt(store: MemoryStore) -> None:
    table = b"preloader".ljust(64, b"\0") + struct.pack("<QQQ", 0x40000, 0, 0) + bytes(8)
    sim = LegacySim(store, pmt=table)
    session = ready(sim)
    assert run_pair(session.read_pmt(), sim.serve()) == table
    sim.pmt = b""
    assert run_pair(session.read_pmt(), sim.serve()) == b""
    sim.pmt = None  # a DA without a PMT says NACK
    assert run_pair(session.read_pmt(), sim.serve()) == b""
    assert run_pair(session.read("boot1", 0, 4), sim.serve()) == pattern("boot1", 4)


def test_an_absurd_pmt_length_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="SDMMC_READ_PMT length"):
        run_pair(L.read_pmt(), canned(b"\x5a\xff\xff\xff\xff"))


def test_switch_usb_speed_then_continue_without_bring_up(store: MemoryStore) -> None:
    sim = LegacySim(store, usb_speed="full-speed")
    session = ready(sim)
    assert session.usb_speed == "full-speed" and session.can_switch_usb_speed
    device_op = sim.serve()
    run_pair(session.switch_usb_speed(), device_op)
    with pytest.raises(StopIteration):
        next(device_op)  # the phone left the bus
    assert run_pair(session.get_usb_speed(), sim.serve()) == "high-speed"
    assert run_pair(session.read("user", 0, 100), sim.serve()) == pattern("user", 100)


def test_shutdown(sim: LegacySim, session: L.LegacySession) -> None:
    sent: list[bytes] = []
    run_pair(recording(session.shutdown(), sent), sim.serve())
    assert sent == [b"\xd9", bytes(4)]
    assert sim.shut_down and sim.finish_mode == 0
    assert list(sim.serve()) == []  # off stays off


# ---------------------------------------------------------------------------------------------
# The whole phone: BROM → DA1 → legacy DA
# ---------------------------------------------------------------------------------------------

DA_FILE = parse_da_file(build_for_codes([0x6582]), "MTK_AllInOne_DA.bin")


def legacy_label() -> str:
    """A preloader label whose EMI version the legacy ENABLE_DRAM knows (v11, v16 or v21)."""
    for index in range(100):
        label = f"legacy{index}"
        if int(preloader_emi(label)[18:20]) in LW.EMI_VERSIONS:
            return label
    raise AssertionError("no label with a legacy EMI version")


def phone_store() -> MemoryStore:
    boot1 = emmc_boot_preloader(legacy_label(), 256 * KiB)
    return MemoryStore.from_bytes(
        {"boot1": boot1, "boot2": bytes(64 * KiB), "user": pattern("user", 2 * MiB)}
    )


def boot1_emi(store: MemoryStore) -> EmiSettings:
    return extract_emi(store.read("boot1", 0, 256 * KiB), "boot1")


def through_brom(da_file: DaFile, emi: EmiSettings | None) -> Op[L.LegacySession]:
    """What the transport's bring_up does, as one operation: identify, DA1, the legacy DA."""
    info = yield from brom.identify(preloader_prefix=True)
    entry = da_file.select(info.hw_code, info.hw_sub_code, info.hw_ver, info.sw_ver)
    yield from brom.send_da(entry.da1.load_addr, entry.da1.payload, entry.da1.sig_len_bytes)
    yield from brom.jump_da(entry.da1.load_addr)
    return (yield from L.connect_entry(entry, info, emi))


@pytest.mark.parametrize("mode", ["preloader", "brom"])
def test_a_whole_phone(mode: str) -> None:
    store = phone_store()
    emi = boot1_emi(store)
    legacy = LegacySim(store, connection_agent=mode, expected_emi=legacy_boot1_emi(store))
    rom = SimBrom(hw_code=0x6582, mode=mode, da_device=lambda da1: legacy.serve())
    session = run_pair(through_brom(DA_FILE, emi if mode == "brom" else None), rom.run())
    entry = DA_FILE.entries[0]
    assert rom.da_bytes == entry.da1.payload
    assert legacy.da2 == entry.da2.payload and len(legacy.da2) > len(entry.da2_unsigned)
    assert legacy.config[:2] == (b"\xff\x03" if mode == "preloader" else b"\x05\xfe")
    assert session.connection_agent == mode
    assert legacy.emi == (emi.legacy_blob if mode == "brom" else b"")


def test_legacy_boot1_emi_without_boot1() -> None:
    assert legacy_boot1_emi(nor_store()) is None
    assert legacy_boot1_emi(emmc_store()) is None  # boot1 holds no preloader


@pytest.fixture
def legacy_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The transport with this protocol registered (until CONNECTORS lists it itself)."""
    monkeypatch.setitem(da_transport.CONNECTORS, "legacy", L.connect_entry)
    yield


@pytest.mark.usefixtures("legacy_registered")
@pytest.mark.parametrize("speed", ["high-speed", "full-speed"])
async def test_the_da_transport_over_a_legacy_phone(speed: str) -> None:
    store = phone_store()
    legacy = LegacySim(
        store, connection_agent="brom", expected_emi=legacy_boot1_emi(store), usb_speed=speed
    )
    rom = SimBrom(hw_code=0x6582, mode="brom", da_device=lambda da1: legacy.serve())
    link = GeneratorLink(rom.run(), reenumerate=legacy.serve)
    transport = await da_transport.DaTransport.connect(
        link, DA_FILE, emi=boot1_emi(store), writable=True
    )
    assert transport.session.protocol == "legacy" and transport.session.usb_speed == "high-speed"
    assert (0x70 in legacy.commands) == (speed == "full-speed")  # USB_SETUP_PORT when slow
    assert set(transport.regions) == {"boot1", "boot2", "user"}
    assert await transport.read("user", 12345, MiB + 7) == store.read("user", 12345, MiB + 7)
    new = pattern("written", 64 * KiB)
    await transport.write("user", MiB, new)
    assert await transport.read_back("user", MiB, len(new)) == new
    await transport.aclose()
    assert legacy.shut_down
