"""The DA file container: round trips, stride detection, V6, selection, hostile files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkfs.errors import SourceError, UsageError
from mtkfs.protocols.chips import CHIPS, Chip, chip_for
from mtkfs.protocols.dafile import (
    ENTRY_STRIDE_NEW_BYTES,
    ENTRY_STRIDE_OLD_BYTES,
    PROTOCOL_LEGACY_OR_XFLASH,
    PROTOCOL_XML,
    DaFile,
    parse_da_file,
)
from mtkfs.testing.dafile_build import (
    AgentSpec,
    RegionSpec,
    agent,
    build_da_file,
    build_for_codes,
    entry_offset,
    fake_signature,
    main,
    region_slot_offset,
    synthetic_program,
)
from mtkfs.transports.da import load_da_file, load_preloader_emi

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def two_agents(*, v6: bool = False, old_stride: bool = False) -> bytes:
    return build_da_file([agent(0x6765), agent(0x6768)], v6=v6, old_stride=old_stride)


# --- round trips -------------------------------------------------------------------------------

regions_st = st.builds(
    RegionSpec,
    body=st.binary(max_size=40),
    load_addr=u32,
    sig_len_bytes=st.integers(0, 24),
    start_offset=st.one_of(st.none(), u32),
)


@st.composite
def da_files(draw: st.DrawFn) -> tuple[list[AgentSpec], bool, bool]:
    old_stride = draw(st.booleans())
    v6 = draw(st.booleans())
    agents = draw(
        st.lists(
            st.builds(
                AgentSpec,
                da_code=st.integers(1, 0xFFFF),
                regions=st.lists(regions_st, min_size=1, max_size=10).map(tuple),
                hw_sub_code=u16,
                hw_version=u16,
                sw_version=st.just(0) if old_stride else u16,
                pagesize_bytes=u16,
                entry_region_index=u16,
            ),
            min_size=1,
            max_size=4,
        )
    )
    return agents, v6, old_stride


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(da_files(), st.integers(0, 0xFFFFFFFF))
def test_round_trip(case: tuple[list[AgentSpec], bool, bool], version: int) -> None:
    agents, v6, old_stride = case
    data = build_da_file(agents, v6=v6, old_stride=old_stride, version=version)
    parsed = parse_da_file(data, "synthetic.bin")
    assert parsed.size_bytes == len(data)
    assert parsed.description == "MTK_DOWNLOAD_AGENT"
    assert parsed.version == version
    assert parsed.is_v6 == v6
    assert parsed.protocol == (PROTOCOL_XML if v6 else PROTOCOL_LEGACY_OR_XFLASH)
    assert parsed.entry_stride_bytes == (
        ENTRY_STRIDE_OLD_BYTES if old_stride else ENTRY_STRIDE_NEW_BYTES
    )
    assert len(parsed.entries) == len(agents)
    for index, (spec, entry) in enumerate(zip(agents, parsed.entries, strict=True)):
        assert entry.index == index
        assert entry.offset_bytes == entry_offset(index, old_stride=old_stride)
        assert (entry.hw_code, entry.hw_sub_code) == (spec.da_code, spec.hw_sub_code)
        assert (entry.hw_version, entry.sw_version) == (spec.hw_version, spec.sw_version)
        assert entry.pagesize_bytes == spec.pagesize_bytes
        assert entry.entry_region_index == spec.entry_region_index
        assert entry.entry_region_count == len(spec.regions) == len(entry.regions)
        for slot, (region_spec, region) in enumerate(zip(spec.regions, entry.regions, strict=True)):
            assert region.index == slot
            assert region.slot_offset_bytes == region_slot_offset(
                index, slot, old_stride=old_stride
            )
            assert region.load_addr == region_spec.load_addr
            assert region.sig_len_bytes == region_spec.sig_len_bytes
            assert region.start_offset == (
                len(region_spec.body)
                if region_spec.start_offset is None
                else region_spec.start_offset
            )
            assert entry.region_bytes(slot) == region_spec.payload
            assert region.body_length_bytes == len(region_spec.body)


def test_three_region_agent_stages() -> None:
    da1, da2 = synthetic_program("one", 300), synthetic_program("two", 700)
    data = build_da_file([agent(0x6765, da1=da1, da2=da2, sig_len_bytes=0x100, da1_addr=0x201000)])
    entry = parse_da_file(data, "x").entries[0]
    load_addr, payload, sig_len = entry.da1
    assert (load_addr, payload, sig_len) == (0x201000, da1 + fake_signature(da1, 0x100), 0x100)
    assert entry.da1.unsigned == da1
    assert entry.da1.signature == fake_signature(da1, 0x100)
    assert entry.da2.load_addr == 0x40000000
    assert entry.da2.payload == da2 + fake_signature(da2, 0x100)
    assert entry.da2_unsigned == da2
    info = entry.info_region
    assert info is not None and info.sig_len_bytes == 0


def test_unsigned_da2_keeps_every_byte() -> None:
    """sig_len 0 (IoT files): DA2 without signature is all of it, not b"" (mtkclient's
    ``da2[:-0]``)."""
    body = synthetic_program("iot", 100)
    entry = parse_da_file(build_da_file([agent(0x2523, da2=body, sig_len_bytes=0)]), "x").entries[0]
    assert entry.da2.sig_len_bytes == 0
    assert entry.da2_unsigned == body
    assert entry.da2.signature == b""


def test_v6_region0_is_da1() -> None:
    entry = parse_da_file(build_for_codes([0x6833], v6=True), "x").entries[0]
    region0, region1 = entry.regions[0], entry.regions[1]
    assert region0.file_offset_bytes == region1.file_offset_bytes
    assert entry.region_bytes(0) == entry.da1.payload


# --- stride detection and V6 -------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("old_stride", [False, True])
def test_stride_detection(count: int, old_stride: bool) -> None:
    """The 0xD8 probe sees old files of 2+ entries; one-entry old files need the fallback."""
    agents = [agent(0x6760 + i) for i in range(count)]
    parsed = parse_da_file(build_da_file(agents, old_stride=old_stride), "x")
    assert parsed.entry_stride_bytes == (
        ENTRY_STRIDE_OLD_BYTES if old_stride else ENTRY_STRIDE_NEW_BYTES
    )
    assert [e.hw_code for e in parsed.entries] == [0x6760 + i for i in range(count)]
    assert all(
        e.da1.unsigned == synthetic_program(f"{0x6760 + i:04x}-DA1")
        for i, e in enumerate(parsed.entries)
    )


def test_single_old_entry_whose_data_starts_with_dada() -> None:
    """The probe lands on the first payload: DA DA there must not confuse anything."""
    spec = AgentSpec(
        0x6582, (RegionSpec(b"\xda\xda" + bytes(30), 0, 0), *agent(0x6582).regions[1:])
    )
    parsed = parse_da_file(build_da_file([spec], old_stride=True), "x")
    assert parsed.entry_stride_bytes == ENTRY_STRIDE_OLD_BYTES
    assert parsed.entries[0].region_bytes(0)[:2] == b"\xda\xda"


@pytest.mark.parametrize(
    ("identifier", "v6"),
    [
        ("MTK_DA_v6", True),
        ("vendor build MTK_DA_v6 2023", True),
        ("MTK_AllInOne_DA_v3.3001.2019/11/06", False),
        ("MTK_DA_v5", False),
    ],
)
def test_v6_marker_in_identifier(identifier: str, v6: bool) -> None:
    parsed = parse_da_file(build_da_file([agent(0x6789)], identifier=identifier), "x")
    assert parsed.is_v6 is v6
    assert parsed.identifier == identifier


def test_v6_marker_only_counts_in_header() -> None:
    """mtkclient probes the first 0x68 bytes; the marker inside a program is not a V6 file."""
    data = build_da_file([agent(0x6765, da1=b"xx MTK_DA_v6 xx" * 4)])
    assert not parse_da_file(data, "x").is_v6


def test_protocol_for_chip() -> None:
    v5 = parse_da_file(build_for_codes([0x6765]), "v5")
    v6 = parse_da_file(build_for_codes([0x6765], v6=True), "v6")
    xflash = Chip(0x0766, "MT6765", 0x6765, protocol="xflash")
    legacy = Chip(0x6582, "MT6582", 0x6582, protocol="legacy")
    assert v5.protocol_for(xflash) == "xflash"
    assert v5.protocol_for(legacy) == "legacy"
    assert v6.protocol_for(xflash) == PROTOCOL_XML
    assert v6.protocol_for(legacy) == PROTOCOL_XML


def test_hostile_identifier_is_printable() -> None:
    data = bytearray(build_for_codes([0x6765]))
    data[0x20:0x28] = b"ab\x1b[2J\xff\x00"
    assert parse_da_file(bytes(data), "x").identifier == "ab?[2J\ufffd"


# --- selection ----------------------------------------------------------------------------------


def test_select_maps_brom_code_to_da_code() -> None:
    parsed = parse_da_file(two_agents(), "x")
    assert chip_for(0x0707).da_code == 0x6768
    assert parsed.select(0x0707, 0x8A00, 0xCA00, 0).hw_code == 0x6768
    assert parsed.select(0x0766).hw_code == 0x6765


def test_select_unknown_chip_uses_hw_code() -> None:
    parsed = parse_da_file(build_for_codes([0x6765, 0x7777]), "x")
    assert 0x7777 not in CHIPS
    assert parsed.select(0x7777).hw_code == 0x7777


def versioned() -> DaFile:
    agents = [
        agent(0x6765, hw_version=0xCB00, sw_version=0x0000, da1=b"cb00-0000"),
        agent(0x6765, hw_version=0xCA00, sw_version=0x0002, da1=b"ca00-0002"),
        agent(0x6765, hw_version=0xCA00, sw_version=0x0000, da1=b"ca00-0000"),
        agent(0x6765, hw_version=0xCA00, sw_version=0x0000, da1=b"ca00-0000 second"),
    ]
    return parse_da_file(build_da_file(agents), "versioned.bin")


@pytest.mark.parametrize(
    ("hw_ver", "sw_ver", "picked"),
    [
        (0, 0, b"cb00-0000"),  # the device says nothing: the first entry
        (0xCB00, 0, b"cb00-0000"),
        (0xCC00, 0x0005, b"cb00-0000"),
        (0xCA00, 0, b"ca00-0002"),  # sw 0 accepts any sw_version
        (0xCA00, 0x0001, b"ca00-0000"),  # sw 2 > 1: skipped
        (0xCA00, 0x0002, b"ca00-0002"),
        (0, 0x0001, b"cb00-0000"),
    ],
)
def test_select_version_rule(hw_ver: int, sw_ver: int, picked: bytes) -> None:
    entry = versioned().select(0x0766, 0x8A00, hw_ver, sw_ver)
    assert entry.da1.unsigned == picked


def test_select_skips_placeholder_entries() -> None:
    placeholder = AgentSpec(0, ())
    parsed = parse_da_file(build_da_file([placeholder, agent(0x6765)]), "x")
    assert parsed.entries[0].hw_code == 0 and parsed.entries[0].regions == ()
    assert parsed.da_codes == [0x6765]
    assert parsed.select(0x0766).index == 1


def test_no_agent_for_chip_lists_codes() -> None:
    parsed = parse_da_file(two_agents(), "MTK_AllInOne_DA.bin")
    with pytest.raises(UsageError) as caught:
        parsed.select(0x0989, 0x8A00, 0xCA00, 0)
    message = str(caught.value)
    assert "DA file MTK_AllInOne_DA.bin has agents for 0x6765, 0x6768" in message
    assert "MT6833" in message and "BROM 0x0989" in message and "DA code 0x6833" in message
    assert "get the DA file for your phone's chip" in message


def test_no_agent_for_unknown_chip_says_so() -> None:
    with pytest.raises(UsageError, match=r"does not know \(BROM 0x1234"):
        parse_da_file(two_agents(), "x").select(0x1234)


def test_no_agent_for_revision_lists_versions() -> None:
    with pytest.raises(UsageError) as caught:
        versioned().select(0x0766, 0x8A00, 0xC900, 0)
    message = str(caught.value)
    assert "hw_ver 0xcb00 sw_ver 0x0000" in message and "hw_ver 0xc900" in message


def test_selected_agent_without_da2_is_a_source_error() -> None:
    short = AgentSpec(0x6765, agent(0x6765).regions[:2])
    parsed = parse_da_file(build_da_file([short]), "x")
    with pytest.raises(SourceError, match=r"has 2 region\(s\): no region 2 \(DA2\)"):
        parsed.select(0x0766)


def test_stage_of_only_signature_is_refused() -> None:
    spec = AgentSpec(
        0x6765, (agent(0x6765).regions[0], RegionSpec(b"", 0x200000, 0x10), RegionSpec(b"x"))
    )
    with pytest.raises(SourceError, match=r"DA1 \(region 1.*0x10 are signature"):
        parse_da_file(build_da_file([spec]), "x").select(0x0766)


# --- hostile files -------------------------------------------------------------------------------


@pytest.mark.parametrize("old_stride", [False, True])
@pytest.mark.parametrize("v6", [False, True])
def test_every_truncation_is_a_source_error(old_stride: bool, v6: bool) -> None:
    data = two_agents(v6=v6, old_stride=old_stride)
    for size in range(len(data)):
        with pytest.raises(SourceError, match=r"^DA file cut: "):
            parse_da_file(data[:size], "cut")


def test_empty_and_foreign_files() -> None:
    with pytest.raises(SourceError, match="0 bytes: too short"):
        parse_da_file(b"", "x")
    with pytest.raises(SourceError, match=r"magic at 0x64 is 0x00000000, expected 0x22668899"):
        parse_da_file(bytes(4096), "x")
    preloader = b"MMM\x01\x38\x00\x00\x00" + bytes(0x200)
    with pytest.raises(SourceError, match="not a MediaTek Download Agent"):
        parse_da_file(preloader, "preloader.bin")


def test_zero_entries() -> None:
    with pytest.raises(SourceError, match=r"entry count at 0x68 is 0"):
        parse_da_file(build_da_file([]), "x")


@pytest.mark.parametrize("count", [0x1000, 0x7FFFFFFF, 0xFFFFFFFF])
def test_count_beyond_the_file(count: int) -> None:
    data = build_da_file([agent(0x6765), agent(0x6768)], count=count)
    with pytest.raises(SourceError, match=rf"entry count {count} at 0x68 needs a table"):
        parse_da_file(data, "x")


def test_count_one_too_many_reads_payload_as_entry() -> None:
    """The table still fits the file, but the 'entry' it adds is program bytes."""
    data = build_da_file([agent(0x6765), agent(0x6768)], count=3)
    with pytest.raises(SourceError, match=r"entry 2 at 0x224 \(0xdc-byte entries\): magic 0x"):
        parse_da_file(data, "x")


def test_bad_entry_magic_names_the_entry() -> None:
    data = build_da_file([agent(0x6765), AgentSpec(0x6768, agent(0x6768).regions, entry_magic=0)])
    with pytest.raises(SourceError, match=r"entry 1 at 0x148 \(0xdc-byte entries\): magic 0x0000"):
        parse_da_file(data, "x")


@pytest.mark.parametrize("region_count", [0, 11, 0xFFFF])
def test_region_count_out_of_slots(region_count: int) -> None:
    data = patched(two_agents(), entry_offset(1) + 0x12, "<H", region_count)
    with pytest.raises(SourceError, match=rf"entry 1 .*region count {region_count} at 0x15a"):
        parse_da_file(data, "x")


@pytest.mark.parametrize(
    ("file_offset", "length"),
    [
        (0xFFFFFFFF, 1),
        (0xFFFFFFF0, 0x20),  # would wrap in u32 arithmetic
        (0, 0xFFFFFFFF),
        (0x100, 0x100000),
    ],
)
def test_region_beyond_the_file(file_offset: int, length: int) -> None:
    slot = region_slot_offset(1, 2)
    data = patched(two_agents(), slot, "<II", file_offset, length)
    data = patched(data, slot + 16, "<I", 0)  # no signature: only the range is wrong
    with pytest.raises(SourceError, match=rf"region 2 \(slot at {slot:#x}\).*run past the end"):
        parse_da_file(data, "x")


def test_signature_longer_than_region() -> None:
    slot = region_slot_offset(0, 1)
    data = patched(two_agents(), slot + 16, "<I", 0x10000)
    with pytest.raises(SourceError, match=r"signature of 0x10000 bytes is longer than the region"):
        parse_da_file(data, "x")


def test_unused_slots_are_ignored() -> None:
    """Only ``entry_region_count`` slots are read: junk in the rest is no error."""
    data = patched(two_agents(), region_slot_offset(0, 7), "<5I", *([0xFFFFFFFF] * 5))
    assert parse_da_file(data, "x").select(0x0766).da1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_files_fail_cleanly(data: st.DataObject) -> None:
    """Random byte changes anywhere: a DaFile or a SourceError; stages then also only
    SourceError (selection may add UsageError), and every stage lies inside the file."""
    raw = bytearray(two_agents(old_stride=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, 0x1FF))
        raw[position] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_da_file(bytes(raw), "x")
    except SourceError:
        return
    for entry in parsed.entries:
        for region in entry.regions:
            assert region.end_offset_bytes <= len(raw)
        for index in range(3):
            try:
                stage = entry.stage(index, "stage")
            except SourceError:
                continue
            assert 0 < len(stage.unsigned) <= len(stage.payload) <= len(raw)
    try:
        parsed.select(0x0766)
    except (SourceError, UsageError):
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=0x300))
def test_random_bytes_fail_cleanly(raw: bytes) -> None:
    try:
        parse_da_file(raw, "x")
    except SourceError:
        pass
    with_header = build_da_file([agent(0x6765)])[:0x6C] + raw
    try:
        parse_da_file(with_header, "x")
    except SourceError:
        pass


# --- loading -----------------------------------------------------------------------------------


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "MTK_AllInOne_DA.bin"
    path.write_bytes(two_agents())
    parsed = load_da_file(path)
    assert parsed.name == str(path)
    assert parsed.da_codes == [0x6765, 0x6768]
    assert "agent 1 (DA code 0x6768" in parsed.describe()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        load_da_file(tmp_path / "missing.bin")
    with pytest.raises(SourceError, match="cannot read DA file"):
        load_da_file(tmp_path)
    big = tmp_path / "image.img"
    big.write_bytes(two_agents())
    with pytest.raises(SourceError, match="larger than 100 B: not a Download Agent"):
        load_da_file(big, max_bytes=100)


def test_builder_command_line(tmp_path: Path) -> None:
    out = tmp_path / "sim_da.bin"
    assert main([str(out), "--v6", "0x6765", "0x6833"]) == 0
    parsed = load_da_file(out)
    assert parsed.is_v6 and parsed.da_codes == [0x6765, 0x6833]
    assert parsed.select(0x0989).da2_unsigned == synthetic_program("6833-DA2", 512)


def test_placeholder_needs_the_entry_magic_too() -> None:
    data = build_da_file([AgentSpec(0, (), entry_magic=0), agent(0x6765)])
    with pytest.raises(SourceError, match=r"entry 0 at 0x6c .*magic 0x0000"):
        parse_da_file(data, "x")


def test_preloader_load_errors(tmp_path: Path) -> None:
    """``--preloader`` goes through the same bounded reader as ``--da``."""
    with pytest.raises(SourceError, match=r"preloader .*: no such file"):
        load_preloader_emi(tmp_path / "missing.bin")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(SourceError, match="MTK_BLOADER_INFO"):
        load_preloader_emi(junk)
