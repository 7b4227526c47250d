"""XFlash DA protocol pairs: the host operations against the simulated DA, byte for byte.

Tiers here: pure codec checks (headers, statuses, storage records, status → exception), golden
bytes for the bring-up (taken from the reference, not from our own encoder), then host ↔ simulator
pairs for every command mtkfs uses, the fault hooks, and malformed device frames.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_ops import recording

from mtkfs.errors import (
    AuthRequiredError,
    LocalProtocolError,
    OutOfRangeError,
    RemoteProtocolError,
    TransportError,
    UsageError,
)
from mtkfs.protocols import da_xflash as x
from mtkfs.protocols.base import Op, Recv, Send, run_pair
from mtkfs.testing.sim_xflash import ImageFilesStore, MemoryStore, SimFaults, XFlashSim

pytestmark = pytest.mark.timeout(60)

DA2_ADDR = 0x40000000
DA2 = b"DA2 stage two image " * 300
EMI = b"MTK_BLOADER_INFO_v25\x00" + bytes(200)
PACKET = 1024  # small read packet: many chunks per test, still fast


def pattern(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def emmc_store() -> MemoryStore:
    return MemoryStore(
        {"boot1": 64 * 1024, "boot2": 64 * 1024, "rpmb": 128 * 1024, "user": 15 << 30},
        content={
            "boot1": pattern("boot1", 64 * 1024),
            "boot2": pattern("boot2", 64 * 1024),
            "user": pattern("user", 256 * 1024),
        },
    )


def ready(sim: XFlashSim, *, emi: bytes | None = None) -> x.XFlashSession:
    """Bring ``sim`` to stage 2 through the real client path."""
    return run_pair(x.connect(DA2_ADDR, DA2, emi=emi), sim.serve())


@pytest.fixture
def store() -> MemoryStore:
    return emmc_store()


@pytest.fixture
def sim(store: MemoryStore) -> XFlashSim:
    device = XFlashSim(store, read_packet_bytes=PACKET, write_packet_bytes=2048)
    ready(device)
    return device


def canned(*replies: bytes) -> Op[object]:
    """A device that says its lines and stops (for malformed-input tests)."""
    for reply in replies:
        yield Send(reply)
    return None


def frame(payload: bytes, data_type: int = x.DT_PROTOCOL_FLOW) -> bytes:
    return struct.pack("<III", x.MAGIC, data_type, len(payload)) + payload


def status(value: int) -> bytes:
    return frame(struct.pack("<I", value))


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------


def test_frame_header_bytes() -> None:
    assert x.encode_frame_header(4).hex() == "efeeeefe0100000004000000"
    assert list(x.send_frame(b"abc")) == [Send(x.encode_frame_header(3)), Send(b"abc")]


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        (b"\x00\x00", 0),
        (b"\x00\x00\x00\x00", 0),
        (struct.pack("<I", x.MAGIC), 0),
        (struct.pack("<I", 0xC004000B), 0xC004000B),
        (struct.pack("<II", 0xC0010001, 7), 0xC0010001),
        (b"\x05\x00", 5),
    ],
)
def test_status_values(payload: bytes, value: int) -> None:
    assert x.parse_status(payload, "t") == value


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x00\x00", b"\x00" * 6])
def test_status_of_odd_size_is_refused(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="status of"):
        x.parse_status(payload, "t")


def test_log_frames_are_skipped() -> None:
    log_line = frame(struct.pack("<I", 1) + b"hello from the DA\n\x00", x.DT_MESSAGE)
    assert run_pair(x.recv_status("t"), canned(log_line, status(0))) == 0


def test_bad_magic_is_a_remote_error() -> None:
    bad = struct.pack("<III", 0xFEEEEEEE, 1, 4) + bytes(4)
    with pytest.raises(RemoteProtocolError, match="magic is 0xFEEEEEEE"):
        run_pair(x.recv_status("t"), canned(bad))


def test_unknown_frame_type_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown frame type 7"):
        run_pair(x.recv_status("t"), canned(frame(bytes(4), 7)))


def test_absurd_length_is_refused_before_reading_it() -> None:
    op = x.recv_frame(1024, "t")
    assert next(op) == Recv(x.HEADER_BYTES)
    with pytest.raises(RemoteProtocolError, match="announces 4294967280 bytes"):
        op.send(struct.pack("<III", x.MAGIC, 1, 0xFFFFFFF0))  # no Recv(4 GiB) is ever yielded


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (0xC004000B, OutOfRangeError, "beyond the end"),
        (0xC0020004, AuthRequiredError, "security policy"),
        (0xC002000C, AuthRequiredError, "write data not allowed"),
        (0xC0020053, AuthRequiredError, "anti-rollback"),
        (0xC0070004, AuthRequiredError, "DA hash mismatch"),
        (0xC0010003, RemoteProtocolError, "DA file from the phone's own firmware"),
        (0xC0010004, RemoteProtocolError, "unsupported ctrl code"),
        (0xC0010005, LocalProtocolError, "could not parse"),
        (0xC0040030, TransportError, "storage may be failing"),
        (0xC0040050, TransportError, "--preloader"),
        (0xC0050007, TransportError, "read data exception"),
        (0x12345678, RemoteProtocolError, "unknown status"),
    ],
)
def test_status_errors_say_what_to_do(code: int, error: type[Exception], words: str) -> None:
    exc = x.status_error(code, "READ_DATA")
    assert type(exc) is error
    assert words in str(exc)
    assert str(exc).startswith("READ_DATA: ") and f"0x{code:08X}" in str(exc)


def test_a_checksum_error_is_worth_a_retry() -> None:
    exc = x.status_error(0xC0040003, "WRITE_DATA")
    assert isinstance(exc, TransportError) and exc.temporary
    assert not x.status_error(0xC0040030, "WRITE_DATA").temporary


def test_region_addresses() -> None:
    assert x.region_address("emmc", "user") == (1, 8)
    assert x.region_address("emmc", "boot2") == (1, 2)
    assert x.region_address("emmc", "gp3") == (1, 6)
    assert x.region_address("ufs", "lu2") == (0x30, 3)
    assert x.region_address("nand", "flash") == (0x10, 8)
    with pytest.raises(LocalProtocolError, match="known: lu0, lu1, lu2"):
        x.region_address("ufs", "user")


def test_address_param_layout() -> None:
    param = x.address_param(0x30, 3, 0x1234_5678_9000, 0x200)
    assert len(param) == 56
    assert struct.unpack_from("<IIQQ", param) == (0x30, 3, 0x1234_5678_9000, 0x200)
    assert param[24:] == bytes(32)


def test_storage_records_too_short_are_refused() -> None:
    for parse in (x.parse_emmc_info, x.parse_ufs_info, x.parse_nand_info, x.parse_nor_info):
        with pytest.raises(RemoteProtocolError, match="at least"):
            parse(b"\x01\x00\x00\x00")


# ---------------------------------------------------------------------------------------------
# Bring-up and stage 2
# ---------------------------------------------------------------------------------------------


def test_bring_up_bytes_match_the_reference() -> None:
    """The host's bytes, spelled out from mtkclient.md §4.2 rather than from our encoder."""
    sent: list[Send] = []
    device = canned(b"\xc0", status(0), status(0), frame(b"SYNC"))
    run_pair(recording(x.bring_up(), sent), device)
    magic_flow = "efeeeefe01000000"
    assert [s.data.hex() for s in sent] == [
        magic_flow + "04000000", "5359" "4e43",  # SYNC_SIGNAL
        magic_flow + "04000000", "00010100",  # SETUP_ENVIRONMENT
        magic_flow + "14000000", "02000000" "01000000" "01000000" "00000000" "00000000",
        magic_flow + "04000000", "01010100",  # SETUP_HW_INIT_PARAMS
        magic_flow + "04000000", "00000000",
    ]  # fmt: skip


def test_bring_up_against_the_simulator(store: MemoryStore) -> None:
    sim = XFlashSim(store)
    run_pair(x.bring_up(), sim.serve())
    assert sim.stage == 1 and sim.env == (2, 1, 1, 0, 0)


def test_no_sync_byte_means_da1_did_not_start() -> None:
    with pytest.raises(RemoteProtocolError, match="sync byte 0xC0, got 0x00"):
        run_pair(x.bring_up(), canned(b"\x00"))


def test_hardware_init_failure_in_place_of_sync() -> None:
    with pytest.raises(RemoteProtocolError, match="DA1 hardware init"):
        run_pair(x.bring_up(), canned(b"\xc0", status(0), status(0), status(0xC0010001)))


def test_connect_in_preloader_mode(store: MemoryStore) -> None:
    sim = XFlashSim(store, read_packet_bytes=PACKET)
    session = ready(sim)
    assert session.connection_agent == "preloader"
    assert session.packet_lengths == x.PacketLengths(2 * 1024 * 1024, PACKET)
    assert session.usb_speed == "high-speed"
    assert session.storage.kind == "emmc"
    assert sim.stage == 2 and sim.da2 == DA2 and sim.emi == b"" and sim.checksum_level == 0
    assert x.Cmd.INIT_EXT_RAM not in sim.commands
    assert sim.commands.index(x.Ctrl.GET_CONNECTION_AGENT) < sim.commands.index(x.Cmd.BOOT_TO)


def test_connect_in_brom_mode_sets_up_dram_first(store: MemoryStore) -> None:
    sim = XFlashSim(store, connection_agent="brom")
    assert ready(sim, emi=EMI).connection_agent == "brom"
    assert sim.emi == EMI and sim.dram_ready and sim.stage == 2
    assert sim.commands.index(x.Cmd.INIT_EXT_RAM) < sim.commands.index(x.Cmd.BOOT_TO)


def test_brom_mode_without_emi_stops_before_sending_da2(store: MemoryStore) -> None:
    sim = XFlashSim(store, connection_agent="brom")
    with pytest.raises(UsageError, match="connect in preloader mode"):
        ready(sim)
    assert x.Cmd.BOOT_TO not in sim.commands and sim.da2 == b""


def test_stage2_without_dram_never_answers(store: MemoryStore) -> None:
    """DA2 cannot run without DRAM: the final BOOT_TO status never comes — reported, no hang."""
    sim = XFlashSim(store, connection_agent="brom")
    run_pair(x.bring_up(), sim.serve())
    with pytest.raises(LocalProtocolError, match="exchange stuck: host waits for 12 bytes"):
        run_pair(x.boot_to(DA2_ADDR, DA2), sim.serve())


@pytest.mark.parametrize("reply", [0, x.SYNC_SIGNAL])
def test_boot_to_accepts_zero_or_sync(store: MemoryStore, reply: int) -> None:
    sim = XFlashSim(store, boot_to_reply=reply)
    ready(sim)
    assert sim.stage == 2


def test_boot_to_refused_by_da1(store: MemoryStore) -> None:
    sim = XFlashSim(store, faults=SimFaults(final_statuses={x.Cmd.BOOT_TO: 0xC0070004}))
    with pytest.raises(AuthRequiredError, match=r"BOOT_TO.*DA hash mismatch"):
        ready(sim)


def test_emi_rejected(store: MemoryStore) -> None:
    faults = SimFaults(final_statuses={x.Cmd.INIT_EXT_RAM: 0xC0040050})
    sim = XFlashSim(store, connection_agent="brom", faults=faults)
    with pytest.raises(TransportError, match=r"INIT_EXT_RAM.*--preloader"):
        ready(sim, emi=EMI)
    assert x.Cmd.BOOT_TO not in sim.commands


def test_sla_required_stops_with_auth_error(store: MemoryStore) -> None:
    sim = XFlashSim(store, sla_enabled=True)
    with pytest.raises(AuthRequiredError, match="SLA"):
        ready(sim)
    assert x.Cmd.READ_DATA not in sim.commands


def test_a_da_without_the_sla_query_has_no_sla(sim: XFlashSim) -> None:
    sim.faults.statuses[x.Ctrl.SLA_ENABLED_STATUS] = x.STATUS_UNSUPPORTED_CTRL
    assert run_pair(x.sla_enabled(), sim.serve()) is False
    run_pair(x.check_sla(), sim.serve())


# ---------------------------------------------------------------------------------------------
# Device control
# ---------------------------------------------------------------------------------------------


def test_device_control_queries(sim: XFlashSim) -> None:
    assert run_pair(x.get_connection_agent(), sim.serve()) == "preloader"
    assert run_pair(x.get_packet_length(), sim.serve()) == x.PacketLengths(2048, PACKET)
    assert run_pair(x.get_chip_id(), sim.serve()) == x.ChipId(0x6765, 0x8A00, 0xCA00, 0, 0)
    assert run_pair(x.get_da_version(), sim.serve()) == "mtkfs-sim 1.0"
    assert run_pair(x.get_usb_speed(), sim.serve()) == "high-speed"
    run_pair(x.set_checksum_level(3), sim.serve())
    assert sim.checksum_level == 3


def test_device_control_get_exchange_bytes(sim: XFlashSim) -> None:
    sent: list[Send] = []
    run_pair(recording(x.devctrl_get(x.Ctrl.GET_CHIP_ID), sent), sim.serve())
    assert [s.data.hex() for s in sent] == [
        "efeeeefe0100000004000000", "09000100",
        "efeeeefe0100000004000000", "0d000400",
    ]  # fmt: skip


def test_unsupported_ctrl_code(sim: XFlashSim) -> None:
    with pytest.raises(RemoteProtocolError, match=r"GET_RANDOM_ID.*unsupported ctrl code"):
        sim.faults.statuses[x.Ctrl.GET_RANDOM_ID] = x.STATUS_UNSUPPORTED_CTRL
        run_pair(x.devctrl_get(x.Ctrl.GET_RANDOM_ID), sim.serve())
    with pytest.raises(RemoteProtocolError, match=r"0x0E0001.*unsupported ctrl code"):
        run_pair(x.devctrl_get(0x0E0001), sim.serve())
    assert run_pair(x.devctrl_get_optional(0x0E0001), sim.serve()) is None
    # …and the session is still in step.
    assert run_pair(x.get_connection_agent(), sim.serve()) == "preloader"


def test_packet_length_falls_back_when_unsupported(sim: XFlashSim) -> None:
    sim.faults.statuses[x.Ctrl.GET_PACKET_LENGTH] = x.STATUS_UNSUPPORTED_CTRL
    assert run_pair(x.get_packet_length(), sim.serve()) == x.PacketLengths(1 << 20, 1 << 20)


def test_implausible_packet_length_is_refused() -> None:
    sim = XFlashSim(MemoryStore({"user": 1 << 20}), write_packet_bytes=7)
    with pytest.raises(RemoteProtocolError, match="implausible packet length 7"):
        ready(sim)


def test_set_ctrl_refused(sim: XFlashSim) -> None:
    sim.faults.statuses[x.Ctrl.SET_CHECKSUM_LEVEL] = 0xC0010001
    with pytest.raises(RemoteProtocolError, match="SET_CHECKSUM_LEVEL"):
        run_pair(x.set_checksum_level(1), sim.serve())
    assert run_pair(x.get_da_version(), sim.serve()) == "mtkfs-sim 1.0"


def test_emmc_storage_info(sim: XFlashSim) -> None:
    info = run_pair(x.get_storage_info(), sim.serve())
    assert info.kind == "emmc" and info.storage_id == 1 and info.block_size_bytes == 512
    assert [(r.name, r.part_id, r.size_bytes) for r in info.regions] == [
        ("boot1", 1, 64 * 1024),
        ("boot2", 2, 64 * 1024),
        ("rpmb", 3, 128 * 1024),
        ("user", 8, 15 << 30),
    ]
    assert info.cid == b"SIMEMMC-CID-0001"
    assert info.address("user") == (1, 8)
    with pytest.raises(LocalProtocolError, match="no region 'gp1'"):
        info.address("gp1")


def test_ufs_storage_info() -> None:
    sizes = {"lu0": 4 << 20, "lu1": 4 << 20, "lu2": 120 << 30}
    sim = XFlashSim(MemoryStore(sizes, kind="ufs"))
    info = ready(sim).storage
    assert info.kind == "ufs" and info.storage_id == 0x30 and info.block_size_bytes == 4096
    assert [(r.name, r.part_id, r.size_bytes) for r in info.regions] == [
        ("lu0", 1, 4 << 20),
        ("lu1", 2, 4 << 20),
        ("lu2", 3, 120 << 30),
    ]
    assert sim.commands.count(x.Ctrl.GET_NAND_INFO) == 0  # found at the second query


@pytest.mark.parametrize(
    ("kind", "storage_id", "block"), [("nand", 0x10, 2048), ("nor", 0x20, 256)]
)
def test_nand_and_nor_storage_info(kind: str, storage_id: int, block: int) -> None:
    info = ready(XFlashSim(MemoryStore({"flash": 128 << 20}, kind=kind))).storage
    assert (info.kind, info.storage_id, info.block_size_bytes) == (kind, storage_id, block)
    assert info.regions == (x.StorageRegion("flash", 8, 128 << 20),)


def test_no_storage_at_all() -> None:
    sim = XFlashSim(MemoryStore({"user": 0}))
    with pytest.raises(TransportError, match="no eMMC, UFS, NAND or NOR"):
        ready(sim)


# ---------------------------------------------------------------------------------------------
# READ_DATA
# ---------------------------------------------------------------------------------------------

LENGTHS = [1, 4, 5, 511, 512, 513, PACKET - 1, PACKET, PACKET + 1, 3 * PACKET + 17]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("offset", [0, 1, 511, 4096])
@pytest.mark.parametrize("sector", [512, 1])
def test_read_lengths(
    sim: XFlashSim, store: MemoryStore, offset: int, length: int, sector: int
) -> None:
    got = run_pair(x.read_data(1, 8, offset, length, sector_bytes=sector), sim.serve())
    assert got == store.read("user", offset, length)


@settings(max_examples=40, deadline=None)
@given(
    offset=st.integers(0, 200 * 1024),
    length=st.integers(0, 40 * 1024),
    packet=st.sampled_from([512, 1024, 4096, 8192 + 512]),
    sector=st.sampled_from([1, 512, 4096]),
    region=st.sampled_from(["boot1", "user"]),
)
def test_reads_match_the_store(
    offset: int, length: int, packet: int, sector: int, region: str
) -> None:
    store = emmc_store()
    size = store.region_sizes()[region]
    offset = min(offset, size - 1)
    length = max(1, min(length, size - offset))
    sim = XFlashSim(store, read_packet_bytes=packet)
    ready(sim)
    storage, part = x.region_address("emmc", region)
    got = run_pair(x.read_data(storage, part, offset, length, sector_bytes=sector), sim.serve())
    assert got == store.read(region, offset, length)


def test_read_exchange_bytes(sim: XFlashSim) -> None:
    """Header and payload of each ack are separate Sends; the address is one 56-byte frame."""
    sent: list[Send] = []
    run_pair(recording(x.read_data(1, 8, 0, 2 * PACKET), sent), sim.serve())
    sizes = [len(s.data) for s in sent]
    assert sizes == [12, 4, 12, 56, 12, 4, 12, 4]
    assert sent[3].data == x.address_param(1, 8, 0, 2 * PACKET)
    assert sent[-1].data == bytes(4)


def test_read_ack_in_one_send_for_mt6781(sim: XFlashSim, store: MemoryStore) -> None:
    sent: list[Send] = []
    got = run_pair(recording(x.read_data(1, 8, 0, PACKET, ack_one_send=True), sent), sim.serve())
    assert got == store.read("user", 0, PACKET)
    assert sent[-1].data == x.encode_frame_header(4) + bytes(4)


def test_read_past_the_end_of_a_region(sim: XFlashSim) -> None:
    with pytest.raises(OutOfRangeError, match="exceed available range"):
        run_pair(x.read_data(1, 1, 60 * 1024, 8192), sim.serve())
    assert run_pair(x.read_data(1, 1, 0, 16), sim.serve()) == pattern("boot1", 16)


def test_read_before_stage2_is_refused(store: MemoryStore) -> None:
    sim = XFlashSim(store)
    run_pair(x.bring_up(), sim.serve())
    with pytest.raises(RemoteProtocolError, match=r"READ_DATA.*unsupported command"):
        run_pair(x.read_data(1, 8, 0, 512), sim.serve())


def test_a_failed_chunk_is_an_error_and_the_session_survives(
    sim: XFlashSim, store: MemoryStore
) -> None:
    sim.faults.fail_read_chunk = 2
    with pytest.raises(TransportError, match=r"at \+0x400.*MMC error"):
        run_pair(x.read_data(1, 8, 0, 4 * PACKET), sim.serve())
    assert run_pair(x.read_data(1, 8, 0, 4 * PACKET), sim.serve()) == store.read(
        "user", 0, 4 * PACKET
    )


def test_a_corrupted_chunk_reaches_the_host_unnoticed(sim: XFlashSim, store: MemoryStore) -> None:
    """XFlash reads carry no checksum: only a read-back compare can catch this (transport)."""
    sim.faults.corrupt_read_chunk = 3
    got = run_pair(x.read_data(1, 8, 0, 4 * PACKET), sim.serve())
    want = store.read("user", 0, 4 * PACKET)
    assert [i for i in range(len(got)) if got[i] != want[i]] == [2 * PACKET]


def test_a_stalled_device_is_reported_not_hung(sim: XFlashSim) -> None:
    sim.faults.stall_read_chunk = 2
    with pytest.raises(LocalProtocolError, match="exchange stuck: host waits for 12 bytes"):
        run_pair(x.read_data(1, 8, 0, 4 * PACKET), sim.serve())


def test_a_disconnect_mid_read_ends_the_device(sim: XFlashSim) -> None:
    sim.faults.disconnect_read_chunk = 3
    with pytest.raises(LocalProtocolError, match="device finished"):
        run_pair(x.read_data(1, 8, 0, 4 * PACKET), sim.serve())


def read_prologue() -> list[bytes]:
    return [status(0), status(0), status(0)]


def test_a_chunk_longer_than_what_is_left_is_refused() -> None:
    device = canned(*read_prologue(), frame(bytes(1024)))
    with pytest.raises(RemoteProtocolError, match="announces 1024 bytes where at most 512"):
        run_pair(x.read_data(1, 8, 0, 512), device)


def test_a_chunk_with_bad_magic_is_refused() -> None:
    device = canned(*read_prologue(), b"\x00" * 12)
    with pytest.raises(RemoteProtocolError, match="chunk at \\+0x0: frame magic is 0x00000000"):
        run_pair(x.read_data(1, 8, 0, 512), device)


def test_an_empty_data_frame_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="empty data frame at \\+0x0"):
        run_pair(x.read_data(1, 8, 0, 512), canned(*read_prologue(), frame(b"")))


def test_a_missing_chunk_status_is_an_error() -> None:
    device = canned(*read_prologue(), frame(bytes(512)), frame(bytes(512)))
    with pytest.raises(RemoteProtocolError, match="announces 512 bytes where at most 64"):
        run_pair(x.read_data(1, 8, 0, 1024), device)


# ---------------------------------------------------------------------------------------------
# WRITE_DATA
# ---------------------------------------------------------------------------------------------


def test_write_round_trip_pads_to_a_sector(sim: XFlashSim, store: MemoryStore) -> None:
    data = pattern("new", 5000)
    run_pair(x.write_data(1, 8, 8192, data, write_packet_bytes=2048), sim.serve())
    assert sim.data_frame_sizes == [2048, 2048, 1024]
    assert store.read("user", 8192, 5120) == data + bytes(120)
    assert run_pair(x.read_data(1, 8, 8192, 5000), sim.serve()) == data


def test_write_exchange_bytes_and_checksum(sim: XFlashSim) -> None:
    data = bytes(range(256)) * 8  # byte sum 261120 → & 0xFFFF = 0xFC00
    sent: list[Send] = []
    run_pair(recording(x.write_data(1, 2, 0, data, write_packet_bytes=2048), sent), sim.serve())
    assert [len(s.data) for s in sent] == [12, 4, 12, 56, 12, 4, 12, 4, 12, 2048]
    assert sent[5].data == bytes(4) and sent[7].data == struct.pack("<I", 0xFC00)
    assert sent[9].data == data  # one Send for the whole chunk, never 512-byte slices


def test_large_chunks_are_single_sends(store: MemoryStore) -> None:
    sim = XFlashSim(store, write_packet_bytes=1 << 20)
    ready(sim)
    sent: list[Send] = []
    data = pattern("big", 3 << 20)
    run_pair(recording(x.write_data(1, 8, 0, data, write_packet_bytes=1 << 20), sent), sim.serve())
    assert [len(s.data) for s in sent if len(s.data) > 56] == [1 << 20] * 3
    assert sim.data_frame_sizes == [1 << 20] * 3
    assert store.read("user", 0, 3 << 20) == data


def corrupting(op: Op[object]) -> Op[object]:
    """``op`` over a link that flips a bit in every Send larger than 512 bytes."""
    request = next(op)
    while True:
        if isinstance(request, Send) and len(request.data) > 512:
            request = Send(bytes([request.data[0] ^ 1]) + request.data[1:])
        reply = yield request
        try:
            request = op.send(reply)
        except StopIteration as stop:
            return stop.value


def test_a_garbled_write_chunk_fails_its_checksum(sim: XFlashSim, store: MemoryStore) -> None:
    op = x.write_data(1, 8, 0, pattern("w", 4096), write_packet_bytes=2048)
    with pytest.raises(TransportError, match="checksum error") as caught:
        run_pair(corrupting(op), sim.serve())
    assert caught.value.temporary
    assert store.read("user", 0, 4096) == pattern("user", 4096)


def test_write_faults(sim: XFlashSim, store: MemoryStore) -> None:
    sim.faults.drop_write_chunk = 1
    sim.faults.corrupt_write_chunk = 2
    data = pattern("lost", 4096)
    run_pair(x.write_data(1, 8, 0, data, write_packet_bytes=2048), sim.serve())  # "success"
    stored = run_pair(x.read_data(1, 8, 0, 4096), sim.serve())
    assert stored[:2048] == pattern("user", 2048)  # never written
    assert stored[2048:4095] == data[2048:4095] and stored[4095] == data[4095] ^ 0x80


@pytest.mark.parametrize(
    ("faults", "error", "words"),
    [
        (SimFaults(statuses={x.Cmd.WRITE_DATA: 0xC0020004}), AuthRequiredError, "forbidden"),
        (SimFaults(final_statuses={x.Cmd.WRITE_DATA: 0xC0040030}), TransportError, "final"),
    ],
)
def test_write_statuses(
    sim: XFlashSim, faults: SimFaults, error: type[Exception], words: str
) -> None:
    sim.faults = faults
    with pytest.raises(error, match=words):
        run_pair(x.write_data(1, 8, 0, bytes(512), write_packet_bytes=2048), sim.serve())


def test_write_past_the_end(sim: XFlashSim) -> None:
    with pytest.raises(OutOfRangeError):
        run_pair(x.write_data(1, 2, 63 * 1024, bytes(2048), write_packet_bytes=2048), sim.serve())


def test_unaligned_write_is_our_bug() -> None:
    with pytest.raises(LocalProtocolError, match="not 512-aligned"):
        next(x.write_data(1, 8, 100, b"x", write_packet_bytes=2048))


def test_empty_transfers_exchange_nothing() -> None:
    """Nothing to ask the DA: the operation returns before its first request."""
    with pytest.raises(StopIteration) as read:
        next(x.read_data(1, 8, 123, 0))
    assert read.value.value == b""
    with pytest.raises(StopIteration):
        next(x.write_data(1, 8, 0, b"", write_packet_bytes=2048))


# ---------------------------------------------------------------------------------------------
# USB speed, shutdown
# ---------------------------------------------------------------------------------------------


def test_switch_usb_speed_then_reconnect_without_handshake(store: MemoryStore) -> None:
    sim = XFlashSim(store, usb_speed="full-speed", read_packet_bytes=PACKET)
    assert ready(sim).usb_speed == "full-speed"
    device = sim.serve()
    run_pair(x.switch_usb_speed(), device)
    with pytest.raises(StopIteration):
        next(device)  # the phone left the bus
    assert run_pair(x.get_usb_speed(), sim.serve()) == "high-speed"
    assert run_pair(x.read_data(1, 8, 0, 100), sim.serve()) == pattern("user", 100)


def test_shutdown(sim: XFlashSim) -> None:
    sent: list[Send] = []
    run_pair(recording(x.shutdown(), sent), sim.serve())
    assert sim.shut_down
    assert sent[-1].data == bytes(32)
    assert list(sim.serve()) == []  # off stays off


# ---------------------------------------------------------------------------------------------
# Backing stores
# ---------------------------------------------------------------------------------------------


def test_memory_store_is_sparse_and_crosses_pages() -> None:
    store = MemoryStore({"user": 15 << 30})
    page = MemoryStore.PAGE_BYTES
    store.write("user", page - 3, b"abcdef")
    assert store.read("user", page - 4, 8) == b"\x00abcdef\x00"
    assert store.read("user", (15 << 30) - 4, 4) == bytes(4)


@pytest.fixture
def image_folder(tmp_path: Path) -> Iterator[Path]:
    for name, size in (("Boot1", 64 * 1024), ("Boot2", 64 * 1024), ("User", 1 << 30)):
        with open(tmp_path / name, "wb") as file:
            file.truncate(size)
            file.write(pattern(name, 4096))
    yield tmp_path


def test_image_folder_store_round_trip(image_folder: Path) -> None:
    with ImageFilesStore.from_folder(image_folder, writable=True) as store:
        sim = XFlashSim(store, read_packet_bytes=PACKET)
        info = ready(sim).storage
        assert [(r.name, r.size_bytes) for r in info.regions] == [
            ("boot1", 64 * 1024),
            ("boot2", 64 * 1024),
            ("user", 1 << 30),
        ]
        assert run_pair(x.read_data(1, 2, 0, 4096), sim.serve()) == pattern("Boot2", 4096)
        data = pattern("written", 4096)
        run_pair(x.write_data(1, 8, (1 << 30) - 4096, data, write_packet_bytes=2048), sim.serve())
    with open(image_folder / "User", "rb") as file:
        file.seek((1 << 30) - 4096)
        assert file.read() == data


def test_image_store_read_only_refuses_writes(image_folder: Path) -> None:
    with ImageFilesStore.from_folder(image_folder) as store, pytest.raises(PermissionError):
        store.write("user", 0, b"x")


def test_image_folder_without_readback_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="no readback files"):
        ImageFilesStore.from_folder(tmp_path)
