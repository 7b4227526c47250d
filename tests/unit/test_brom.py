"""BROM/preloader protocol pairs: every host operation against the simulated device, in memory.

The simulator (mtkfs.testing.sim_brom) answers as MediaTek's preloader code does, so these tests
pin the wire protocol: handshake resync, echoes, statuses, the SEND_DA checksum, security stops
before any DA byte, and malformed or missing replies reported as errors — never a hang
(run_pair raises when both sides wait).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.errors import AuthRequiredError, LocalProtocolError, RemoteProtocolError
from mtkfs.protocols import brom
from mtkfs.protocols.base import Op, Recv, Send, run_pair
from mtkfs.protocols.brom import DeviceInfo, HwSwVersion, TargetBit, TargetConfig
from mtkfs.protocols.chips import CHIPS, chip_for, chip_named
from mtkfs.testing.sim_brom import (
    GET_HW_CODE,
    GET_ME_ID,
    GET_SOC_ID,
    GET_TARGET_CONFIG,
    READ32,
    SEND_DA,
    WRITE32,
    SimBrom,
    SimFaults,
    device_checksum,
)

T = TypeVar("T")
DA1 = bytes(range(256)) * 40 + b"SIGNATURE" * 8  # 10 312 bytes: more than one 8 KiB chunk
SIG_LEN = 72
LOAD_ADDR = 0x201000


def after_handshake(op: Op[T], *, preloader_prefix: bool = False) -> Op[T]:
    """Handshake, then ``op``: one exchange, as the device generator cannot be restarted."""
    yield from brom.handshake(preloader_prefix=preloader_prefix)
    return (yield from op)


def pair(sim: SimBrom, op: Op[T]) -> T:
    return run_pair(after_handshake(op), sim.run())


# --------------------------------------------------------------------------------------------
# Handshake


def test_handshake_clean() -> None:
    sim = SimBrom()
    assert run_pair(brom.handshake(), sim.run()) == 1
    assert bytes(sim.handshake_bytes) == bytes.fromhex("a00a5005")
    assert sim.handshake_done


@pytest.mark.parametrize("start_index", [1, 2, 3])
def test_handshake_device_mid_sequence_restarts(start_index: int) -> None:
    """An aborted earlier session left the device expecting a later byte: it answers A0 with
    A1 ("start over"), and the second attempt succeeds."""
    sim = SimBrom(faults=SimFaults(handshake_start_index=start_index))
    assert run_pair(brom.handshake(), sim.run()) == 2


def test_handshake_noisy_first_attempts() -> None:
    """Each refused byte costs one attempt; the fourth goes through."""
    sim = SimBrom(faults=SimFaults(handshake_refusals=3))
    assert run_pair(brom.handshake(), sim.run()) == 4


def test_handshake_skips_stale_bytes() -> None:
    sim = SimBrom(faults=SimFaults(stale_bytes=b"READY" * 3 + b"\x00\x13\x37"))
    assert run_pair(brom.handshake(), sim.run()) == 1


def test_preloader_swallows_the_lone_a0() -> None:
    sim = SimBrom(mode="preloader", ready_banners=4)
    assert run_pair(brom.handshake(preloader_prefix=True), sim.run()) == 1
    assert bytes(sim.handshake_bytes) == bytes.fromhex("a0a00a5005")


def test_preloader_prefix_is_safe_on_a_brom() -> None:
    """The BROM answers the lone A0; the resync absorbs the extra reply."""
    sim = SimBrom(mode="brom")
    assert run_pair(brom.handshake(preloader_prefix=True), sim.run()) == 2
    assert sim.handshake_done


def test_preloader_without_prefix_is_reported_not_hung() -> None:
    with pytest.raises(LocalProtocolError, match="host waits for 1 bytes"):
        run_pair(brom.handshake(), SimBrom(mode="preloader").run())


def test_handshake_gives_up_after_bounded_attempts() -> None:
    sim = SimBrom(faults=SimFaults(handshake_refusals=1000))
    with pytest.raises(RemoteProtocolError, match=r"after 5 attempts.*Volume-Down"):
        run_pair(brom.handshake(), sim.run())
    assert len(sim.handshake_bytes) == 5  # one byte per attempt, each answered "start over"


def test_handshake_endless_garbage_is_an_error() -> None:
    sim = SimBrom(faults=SimFaults(stale_bytes=bytes(1000)))
    with pytest.raises(RemoteProtocolError, match="no handshake answers"):
        run_pair(brom.handshake(), sim.run())


# --------------------------------------------------------------------------------------------
# Identification commands


def test_get_hw_code() -> None:
    assert pair(SimBrom(hw_code=0x0707), brom.get_hw_code()) == 0x0707


def test_get_hw_sw_ver() -> None:
    sim = SimBrom(hw_sub_code=0x8A00, hw_ver=0xCA01, sw_ver=0x0002)
    assert pair(sim, brom.get_hw_sw_ver()) == HwSwVersion(0x8A00, 0xCA01, 0x0002)


def test_get_target_config() -> None:
    config = pair(SimBrom(target_config=0xE5), brom.get_target_config())
    assert config == TargetConfig(0xE5)
    assert config.sbc and config.daa and not config.sla
    assert config.has(TargetBit.MEM_WRITE_AUTH)
    assert "secure boot (SBC)" in str(config) and "DA authentication (DAA)" in str(config)
    assert str(TargetConfig(0)) == "0x0 (open)"


def test_get_bl_ver_tells_brom_from_preloader() -> None:
    assert pair(SimBrom(mode="brom"), brom.get_bl_ver()) is None
    prefixed = after_handshake(brom.get_bl_ver(), preloader_prefix=True)
    assert run_pair(prefixed, SimBrom(mode="preloader", bl_ver=3).run()) == 3


def test_get_version() -> None:
    assert pair(SimBrom(version=0x07), brom.get_version()) == 0x07
    prefixed = after_handshake(brom.get_version(), preloader_prefix=True)
    assert run_pair(prefixed, SimBrom(mode="preloader").run()) == 0xFF  # echoed, unknown


def test_get_me_id_and_soc_id() -> None:
    sim = SimBrom(me_id=b"M" * 16, soc_id=b"S" * 32)
    assert pair(sim, brom.get_me_id()) == b"M" * 16
    assert pair(SimBrom(soc_id=b"S" * 32), brom.get_soc_id()) == b"S" * 32


def test_id_with_a_garbled_length_is_an_error() -> None:
    sim = SimBrom(faults=SimFaults(garbage={GET_ME_ID: b"\xff\xff\xff\xff"}))
    with pytest.raises(RemoteProtocolError, match="4294967295-byte ID"):
        pair(sim, brom.get_me_id())


# --------------------------------------------------------------------------------------------
# Registers and the watchdog


def test_read32() -> None:
    sim = SimBrom(memory={0x1000: 0xDEADBEEF, 0x1004: 0x01020304})
    assert pair(sim, brom.read32(0x1000, 3)) == [0xDEADBEEF, 0x01020304, 0]


def test_read16() -> None:
    assert pair(SimBrom(memory={0x2002: 0xBEEF}), brom.read16(0x2000, 2)) == [0, 0xBEEF]


def test_read32_argument_error_ends_with_one_status() -> None:
    with pytest.raises(RemoteProtocolError, match=r"READ32 0x00001002.*ARG_ADDR_MISALIGNED"):
        pair(SimBrom(), brom.read32(0x1002))


def test_write32_records() -> None:
    sim = SimBrom()
    pair(sim, brom.write32(0x10007000, [0x22000064, 7]))
    assert sim.writes == [(0x10007000, 0x22000064), (0x10007004, 7)]


def test_write16() -> None:
    sim = SimBrom()
    pair(sim, brom.write16(0xC0000000, 0x2264))
    assert sim.writes == [(0xC0000000, 0x2264)]


def test_write32_refused_status() -> None:
    sim = SimBrom(faults=SimFaults(status={WRITE32: 0x1D02}))
    with pytest.raises(RemoteProtocolError, match=r"WRITE32 0x10007000 failed: INVALID_ADDRESS"):
        pair(sim, brom.write32(0x10007000, 1))
    assert sim.writes == []


@pytest.mark.parametrize(
    ("hw_code", "expected"),
    [
        (0x0766, [(0x10007000, 0x22000064)]),  # MT6765
        (0x0321, [(0x10212000, 0x22000000)]),  # MT6735
        (0x6575, [(0xC0000000, 0x2264)]),  # MT6575: 16-bit
        (0x6592, [(0x10007000, 0x22000064), (0x10000500, 0x22000000)]),  # two registers
    ],
)
def test_disable_watchdog(hw_code: int, expected: list[tuple[int, int]]) -> None:
    sim = SimBrom(hw_code=hw_code)
    assert pair(sim, brom.disable_watchdog(chip_for(hw_code))) is True
    assert sim.watchdog_writes == expected


def test_disable_watchdog_refused_is_not_fatal() -> None:
    sim = SimBrom(faults=SimFaults(status={WRITE32: 0x1D02}))
    assert pair(sim, brom.disable_watchdog(chip_for(0x0766))) is False
    assert sim.watchdog_writes == []


# --------------------------------------------------------------------------------------------
# SEND_DA and the jumps


def test_send_da_uploads_and_agrees_on_the_checksum() -> None:
    sim = SimBrom()
    checksum = pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))
    assert sim.da_bytes == DA1
    assert (sim.da_load_addr, sim.da_sig_len) == (LOAD_ADDR, SIG_LEN)
    assert checksum == device_checksum(DA1)


def test_send_da_zero_length_packets_after_each_8k() -> None:
    sends: list[Send] = []

    def spy(op: Op[int]) -> Op[int]:
        request = next(op)
        while True:
            if isinstance(request, Send) and len(request.data) > 4:
                sends.append(request)
            reply = yield request
            try:
                request = op.send(reply)
            except StopIteration as stop:
                result: int = stop.value
                return result

    pair(SimBrom(), spy(brom.send_da(LOAD_ADDR, DA1, SIG_LEN)))
    assert [len(s.data) for s in sends] == [0x2000, len(DA1) - 0x2000]
    assert all(s.zlp for s in sends)


def test_send_da_odd_length_is_padded() -> None:
    sim = SimBrom()
    pair(sim, brom.send_da(LOAD_ADDR, DA1 + b"\x7f", SIG_LEN))
    assert sim.da_bytes == DA1 + b"\x7f\x00"


def test_send_da_checksum_mismatch_is_an_error() -> None:
    sim = SimBrom(faults=SimFaults(da_checksum=device_checksum(DA1) ^ 0x0100))
    with pytest.raises(RemoteProtocolError, match="upload was corrupted"):
        pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))


def test_send_da_device_checksum_zero_is_accepted() -> None:
    """Some BROMs report 0 instead of computing it (mtkclient ignores it too)."""
    sim = SimBrom(faults=SimFaults(da_checksum=0))
    assert pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN)) == device_checksum(DA1)


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (0x1D0D, "serial-link authentication"),
        (0x1D15, r"DAA\) is on and the DA carries no signature"),
        (0x2001, "rejected it"),
        (0x7024, "DAA"),
    ],
)
def test_send_da_auth_status_stops_before_any_da_byte(status: int, words: str) -> None:
    sim = SimBrom(faults=SimFaults(status={SEND_DA: status}))
    with pytest.raises(AuthRequiredError, match=words) as caught:
        pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))
    assert sim.da_bytes_received == 0
    assert f"{status:#06x}" in str(caught.value)
    assert "--da" in str(caught.value)  # says what to do


def test_send_da_sla_device_refuses_upload() -> None:
    sim = SimBrom(target_config=TargetBit.SLA)
    with pytest.raises(AuthRequiredError, match="SLA_ERROR"):
        pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))
    assert sim.da_bytes_received == 0


def test_send_da_daa_without_signature() -> None:
    sim = SimBrom(target_config=TargetBit.DAA)
    with pytest.raises(AuthRequiredError, match="DA_SIG_LEN_IS_ZERO_AND_DAA_ACTIVE"):
        pair(sim, brom.send_da(LOAD_ADDR, DA1, 0))
    assert sim.da_bytes_received == 0


def test_send_da_signature_rejected_after_upload() -> None:
    sim = SimBrom(target_config=TargetBit.DAA | TargetBit.SBC)
    with pytest.raises(AuthRequiredError, match=r"after the upload.*DA_IMAGE_SIG_VERIFY_FAIL"):
        pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))
    assert not sim.da_verified


def test_send_da_signed_da_accepted_on_daa_device() -> None:
    sim = SimBrom(target_config=TargetBit.DAA, daa_signature_ok=True)
    pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))
    assert sim.da_verified


def test_send_da_other_status_is_a_protocol_error_with_advice() -> None:
    sim = SimBrom(faults=SimFaults(status={SEND_DA: 0x1D0E}))
    with pytest.raises(RemoteProtocolError, match=r"DA_OVERLAP \(0x1d0e\).*check --da"):
        pair(sim, brom.send_da(LOAD_ADDR, DA1, SIG_LEN))
    assert sim.da_bytes_received == 0


def test_send_da_rejects_a_bad_signature_length_locally() -> None:
    with pytest.raises(LocalProtocolError, match="signature length"):
        pair(SimBrom(), brom.send_da(LOAD_ADDR, b"abc", 4))


def da_then(jump: Op[None], sync_bytes: int = 1) -> Op[bytes]:
    """Upload, jump, and read what the DA says first."""
    yield from brom.send_da(LOAD_ADDR, DA1, SIG_LEN)
    yield from jump
    return (yield Recv(sync_bytes)) or b""


def fake_da(received: list[bytes]) -> Callable[[bytes], Op[object]]:
    def device(da: bytes) -> Op[object]:
        received.append(da)
        yield Send(b"\xc0")  # what a legacy/XFlash DA1 sends when it starts
        return None

    return device


def test_jump_da_hands_over_to_the_da_simulator() -> None:
    received: list[bytes] = []
    sim = SimBrom(da_device=fake_da(received))
    assert pair(sim, da_then(brom.jump_da(LOAD_ADDR))) == b"\xc0"
    assert received == [DA1]
    assert sim.jump_addr == LOAD_ADDR and sim.jump_arch is None


def test_jump_da64() -> None:
    received: list[bytes] = []
    sim = SimBrom(da_device=fake_da(received))
    assert pair(sim, da_then(brom.jump_da64(LOAD_ADDR))) == b"\xc0"
    assert sim.jump_arch == brom.AARCH64


def test_jump_da_without_upload_is_refused() -> None:
    sim = SimBrom()
    with pytest.raises(AuthRequiredError, match="JUMP_DA: DA_IMAGE_SIG_VERIFY_FAIL"):
        pair(sim, brom.jump_da(LOAD_ADDR))
    assert sim.jump_addr is None


def test_jump_da_wrong_address() -> None:
    def op() -> Op[None]:
        yield from brom.send_da(LOAD_ADDR, DA1, SIG_LEN)
        yield from brom.jump_da(LOAD_ADDR + 0x1000)

    with pytest.raises(RemoteProtocolError, match="DA_INVALID_JUMP_ADDR"):
        pair(SimBrom(), op())


# --------------------------------------------------------------------------------------------
# Malformed replies: errors, never hangs


def test_wrong_echo() -> None:
    sim = SimBrom(faults=SimFaults(wrong_echo=frozenset({GET_HW_CODE})))
    with pytest.raises(RemoteProtocolError, match="GET_HW_CODE: the device answered 02"):
        pair(sim, brom.get_hw_code())


def test_garbage_status() -> None:
    sim = SimBrom(faults=SimFaults(garbage={GET_TARGET_CONFIG: b"\x00\x00\x00\x00\xbe\xef"}))
    with pytest.raises(RemoteProtocolError, match="GET_TARGET_CONFIG failed: unknown status"):
        pair(sim, brom.get_target_config())


def test_garbage_echo_of_a_parameter() -> None:
    sim = SimBrom(faults=SimFaults(garbage={READ32: b"\x12\x34\x56\x78"}))
    with pytest.raises(RemoteProtocolError, match="READ32 0x00001000 address"):
        pair(sim, brom.read32(0x1000))


def test_silence_after_a_command_is_reported() -> None:
    sim = SimBrom(faults=SimFaults(silent_after=frozenset({GET_HW_CODE})))
    with pytest.raises(LocalProtocolError, match="exchange stuck: host waits for 1 bytes"):
        pair(sim, brom.get_hw_code())
    assert sim.hung


def test_status_names() -> None:
    assert brom.status_name(0x1D0D) == "SLA_ERROR (0x1d0d)"
    assert brom.status_name(0x4242) == "unknown status 0x4242"
    assert isinstance(brom.status_error(0x2001, "x"), AuthRequiredError)
    assert type(brom.status_error(0x1D0E, "x")) is RemoteProtocolError


# --------------------------------------------------------------------------------------------
# The checksum rule


def independent_checksum(data: bytes) -> int:
    """Low byte: XOR of the bytes at even offsets; high byte: at odd offsets."""
    low = high = 0
    for i, byte in enumerate(data):
        if i % 2:
            high ^= byte
        else:
            low ^= byte
    return high << 8 | low


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_xor16_checksum(data: bytes) -> None:
    expected = independent_checksum(data)
    assert brom.xor16_checksum(data) == expected
    assert device_checksum(data) == expected
    assert brom.xor16_checksum(data + b"\x00" * (len(data) % 2)) == expected


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=3000))
def test_send_da_checksum_over_the_wire(data: bytes) -> None:
    sim = SimBrom()
    assert pair(sim, brom.send_da(LOAD_ADDR, data, 0)) == independent_checksum(data)
    assert sim.da_bytes[: len(data)] == data


# --------------------------------------------------------------------------------------------
# identify() and check_security()


def test_identify_brom() -> None:
    sim = SimBrom(hw_code=0x0766, target_config=0, me_id=b"\x01" * 16, soc_id=b"\x02" * 32)
    info = run_pair(brom.identify(), sim.run())
    assert info == DeviceInfo(
        hw_code=0x0766,
        chip=CHIPS[0x0766],
        hw_sub_code=0x8A00,
        hw_ver=0xCA00,
        sw_ver=0,
        mode="brom",
        bl_ver=None,
        version=0x05,
        target_config=TargetConfig(0),
        me_id=b"\x01" * 16,
        soc_id=b"\x02" * 32,
        watchdog_disabled=True,
    )
    assert info.is_brom
    assert sim.watchdog_writes == [(0x10007000, 0x22000064)]
    brom.check_security(info)  # open device: nothing to say


def test_identify_follows_mtkclients_command_order() -> None:
    sim = SimBrom(hw_code=0x0766)
    run_pair(brom.identify(), sim.run())
    assert sim.commands == [0xFD, 0xD4, 0xD8, 0xFE, 0xFF, 0xFC, 0xFE, 0xE1, 0xFE, 0xE7]


def test_identify_old_chip_skips_soc_id() -> None:
    """MT6582's BROM does not know GET_SOC_ID (it would echo and fall silent)."""
    sim = SimBrom(hw_code=0x6582, unsupported=frozenset({GET_SOC_ID}))
    info = run_pair(brom.identify(), sim.run())
    assert info.chip.name.startswith("MT6582") and info.soc_id == b""
    assert info.me_id == sim.me_id


def test_identify_old_preloader_skips_ids() -> None:
    sim = SimBrom(hw_code=0x0321, mode="preloader", bl_ver=1)
    info = run_pair(brom.identify(preloader_prefix=True), sim.run())
    assert (info.mode, info.bl_ver, info.version) == ("preloader", 1, 0xFF)
    assert info.me_id == b"" and not info.is_brom
    assert sim.watchdog_writes == [(0x10212000, 0x22000000)]


def test_identify_new_preloader_reads_ids() -> None:
    sim = SimBrom(hw_code=0x0707, mode="preloader", bl_ver=3, ready_banners=2)
    info = run_pair(brom.identify(preloader_prefix=True), sim.run())
    assert info.mode == "preloader" and info.me_id == sim.me_id and info.soc_id == sim.soc_id


def test_identify_64bit_brom_leaves_the_watchdog() -> None:
    sim = SimBrom(hw_code=0x0907)  # MT6983
    info = run_pair(brom.identify(), sim.run())
    assert not info.watchdog_disabled and sim.writes == []


def test_identify_survives_a_refused_watchdog_write() -> None:
    sim = SimBrom(target_config=0xE5, faults=SimFaults(status={WRITE32: 0x1D02}))
    info = run_pair(brom.identify(), sim.run())
    assert not info.watchdog_disabled and info.target_config.raw == 0xE5


def test_identify_unknown_chip_gets_defaults() -> None:
    sim = SimBrom(hw_code=0x4321)
    info = run_pair(brom.identify(), sim.run())
    assert info.chip.name == "unknown chip 0x4321" and info.chip.da_code == 0x4321


def identify_info(target_config: int, mode: str = "brom") -> DeviceInfo:
    sim = SimBrom(target_config=target_config, mode=mode)
    return run_pair(brom.identify(preloader_prefix=mode == "preloader"), sim.run())


@pytest.mark.parametrize(
    ("target", "named"),
    [
        (0x02, ["serial-link authentication (SLA)"]),
        (0x04, ["DA authentication (DAA)"]),
        (0x05, ["secure boot (SBC)", "DA authentication (DAA)"]),
        (0x07, ["secure boot (SBC)", "(SLA)", "(DAA)"]),
    ],
)
def test_check_security_names_the_bits(target: int, named: list[str]) -> None:
    sim = SimBrom(target_config=target)
    info = run_pair(brom.identify(), sim.run())
    with pytest.raises(AuthRequiredError) as caught:
        brom.check_security(info)
    message = str(caught.value)
    for words in named:
        assert words in message
    assert "signed" in message and "--da" in message
    assert sim.da_bytes_received == 0


def test_check_security_sla_asks_for_an_auth_file() -> None:
    with pytest.raises(AuthRequiredError, match="auth file"):
        brom.check_security(identify_info(0x02))


def test_check_security_lets_through_what_the_device_will_decide() -> None:
    brom.check_security(identify_info(0x01))  # SBC alone: an unsigned DA still runs
    brom.check_security(identify_info(0x05), da_signed=True)  # the device verifies it
    brom.check_security(identify_info(0x02, mode="preloader"))  # SLA is a BROM matter
    with pytest.raises(AuthRequiredError, match="preloader mode"):
        brom.check_security(identify_info(0x04, mode="preloader"))


# --------------------------------------------------------------------------------------------
# The chip table


def test_chip_table_seed_facts() -> None:
    """Facts from mtkclient's brom_config (hw_code → da_code, watchdog, DA1 address, family)."""
    assert chip_for(0x6582).da_code == 0x6582 and chip_for(0x6582).protocol == "legacy"
    assert chip_for(0x0321).da_code == 0x6735 and chip_for(0x0321).watchdog_addr == 0x10212000
    assert chip_for(0x6752).da_code == 0x6752
    assert chip_for(0x0766).da_code == 0x6765 and chip_for(0x0766).da_payload_addr == 0x201000
    assert chip_for(0x0707).da_code == 0x6768 and chip_for(0x0707).protocol == "xflash"
    assert chip_for(0x1208).protocol == "xml"
    assert chip_named("mt6765") is CHIPS[0x0766]
    assert chip_named("MT6589") is CHIPS[0x6583]
    assert chip_named("MT9999") is None
    assert chip_for(0x7777).da_payload_addr == 0x200000  # mtkclient's default for unknowns
