"""EMI (DRAM) settings from a preloader: the images mtkfs's test content builds, the variants of
real preloaders (signature, 0x800 trailer, bare blobs), every malformed input, and the simulated
DA accepting only the phone's own settings in BROM mode."""

from __future__ import annotations

import re
import struct

import pytest

from mtkfs.errors import SourceError, TransportError
from mtkfs.protocols import da_xflash as x
from mtkfs.protocols.base import run_pair
from mtkfs.protocols.preloader_emi import GFH_MAGIC, EmiSettings, extract_emi
from mtkfs.testing.content import emmc_boot_preloader, preloader_emi
from mtkfs.testing.sim_xflash import MemoryStore, XFlashSim, boot1_emi

pytestmark = pytest.mark.timeout(60)

LABEL = "p70a/preloader"
BOOT1 = emmc_boot_preloader(LABEL, 256 * 1024)
PRELOADER = BOOT1[0x800:]  # the preloader file inside Boot1
EMI = preloader_emi(LABEL)
FIX = "give the phone's own preloader"


def patched(image: bytes, offset: int, value: int) -> bytes:
    out = bytearray(image)
    struct.pack_into("<I", out, offset, value)
    return bytes(out)


# -- the built images --------------------------------------------------------------------------


def test_built_emi_looks_real() -> None:
    assert len(EMI) == 448
    assert EMI.startswith(b"MTK_BLOADER_INFO_v") and EMI[18:20].isdigit()
    assert EMI[0x18:0x58].rstrip(b"\0") == b"preloader_p70a.bin"
    assert EMI[0x64:0x6C] == b"MTK_BIN\0"
    assert preloader_emi(LABEL) == EMI  # deterministic
    assert preloader_emi("s650/preloader") != EMI


def test_layout_of_boot1_is_unchanged() -> None:
    assert len(BOOT1) == 256 * 1024
    assert BOOT1.startswith(b"EMMC_BOOT") and BOOT1[0x200:0x205] == b"BRLYT"
    assert BOOT1[0x800:0x808] == GFH_MAGIC and BOOT1[0x808:0x811] == b"FILE_INFO"
    assert struct.unpack_from("<I", BOOT1, 0x820)[0] == len(PRELOADER)
    assert BOOT1[-4:] == struct.pack("<I", len(EMI))


# -- extraction --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [BOOT1, PRELOADER, EMI], ids=["boot1", "preloader", "bare"])
def test_extract(data: bytes) -> None:
    emi = extract_emi(data, "pl.bin")
    assert emi == EmiSettings(int(EMI[18:20]), EMI)
    assert emi.blob == EMI and emi.version == int(EMI[18:20])
    assert emi.legacy_blob == EMI[0x70:]


def test_bare_blob_with_bytes_before_the_identifier() -> None:
    assert extract_emi(b"\0" * 100 + EMI, "emi.bin").blob == EMI


def test_signature_is_cut_off() -> None:
    signed = patched(PRELOADER + b"S" * 0x100, 0x20, len(PRELOADER) + 0x100)
    signed = patched(signed, 0x2C, 0x100)
    assert extract_emi(signed, "pl.bin").blob == EMI


def test_dramsize_zero_means_a_0x800_trailer() -> None:
    trailer = b"T" * (0x800 - 4) + bytes(4)
    image = patched(PRELOADER + trailer, 0x20, len(PRELOADER) + 0x800)
    assert extract_emi(image, "pl.bin").blob == EMI


def test_bytes_past_the_file_length_are_ignored() -> None:
    assert extract_emi(BOOT1 + b"\xff" * 4096, "Boot1").blob == EMI


def test_legacy_blob_needs_mtk_bin() -> None:
    emi = extract_emi(EMI.replace(b"MTK_BIN", b"XXX_BIN"), "emi.bin")
    with pytest.raises(SourceError, match=r"^emi\.bin: .*no MTK_BIN section.*legacy"):
        emi.legacy_blob  # noqa: B018 - the property raises


# -- malformed input ---------------------------------------------------------------------------


def malformed() -> list[tuple[str, bytes, str]]:
    zero_size = patched(patched(PRELOADER, len(PRELOADER) - 4, 0), len(PRELOADER) - 0x804, 0)
    no_id = EMI.replace(b"MTK_BLOADER_INFO_v", b"MTK_XXXXXXXXXXXXX_")
    return [
        ("truncated", PRELOADER[: len(PRELOADER) // 2], r"truncated: .* says 260096 bytes"),
        ("short-header", GFH_MAGIC + bytes(8), r"truncated: the preloader header has 16"),
        ("mlen<siglen", patched(PRELOADER, 0x2C, len(PRELOADER) + 1), r"signature length"),
        ("dramsize-big", patched(PRELOADER, len(PRELOADER) - 4, 1 << 20), r"does not fit"),
        ("dramsize-zero", zero_size, r"EMI section size is 0"),
        ("tiny", patched(GFH_MAGIC + bytes(0x30), 0x20, 0x30), r"only 48 bytes long"),
        ("no-identifier", no_id, r"no EMI settings \(MTK_BLOADER_INFO\) found"),
        (
            "no-identifier-gfh",
            BOOT1.replace(b"MTK_BLOADER_INFO_v", b"MTK_XXXXXXXXXXXXX_"),
            "no EMI",
        ),
        ("bad-digits", EMI.replace(EMI[:20], b"MTK_BLOADER_INFO_vX1"), r"b'X1', not a two-digit"),
        ("cut-digits", b"MTK_BLOADER_INFO_v5", r"b'5', not a two-digit"),
        ("huge", EMI + bytes(64 * 1024), r"more than the 64 KiB"),
        ("empty", b"", "no EMI settings"),
    ]


@pytest.mark.parametrize(
    ("data", "words"),
    [(data, words) for _, data, words in malformed()],
    ids=[case for case, _, _ in malformed()],
)
def test_malformed_input_is_a_source_error(data: bytes, words: str) -> None:
    with pytest.raises(SourceError, match=r"^preloader\.bin: ") as info:
        extract_emi(data, "preloader.bin")
    message = str(info.value)
    assert re.search(words, message), message
    assert FIX in message and "preloader_<board>.bin" in message and "boot1.img" in message


# -- the simulated DA --------------------------------------------------------------------------

DA2_ADDR = 0x40000000
DA2 = b"DA2 stage two image " * 300


def phone_store() -> MemoryStore:
    return MemoryStore(
        {"boot1": 4 << 20, "boot2": 4 << 20, "user": 1 << 30}, content={"boot1": BOOT1}
    )


def test_boot1_emi_reads_the_phone_s_own_settings() -> None:
    assert boot1_emi(phone_store()) == EMI
    assert boot1_emi(MemoryStore({"boot1": 1 << 20, "user": 1 << 20})) is None  # blank boot1
    assert boot1_emi(MemoryStore({"user": 1 << 20})) is None


def test_brom_mode_with_the_phone_s_own_emi_connects() -> None:
    store = phone_store()
    sim = XFlashSim(store, connection_agent="brom", expected_emi=boot1_emi(store))
    session = run_pair(x.connect(DA2_ADDR, DA2, emi=extract_emi(BOOT1, "Boot1").blob), sim.serve())
    assert session.connection_agent == "brom"
    assert sim.dram_ready and sim.emi == EMI and sim.stage == 2 and sim.da2 == DA2


def test_brom_mode_with_another_phone_s_emi_fails_clearly() -> None:
    store = phone_store()
    sim = XFlashSim(store, connection_agent="brom", expected_emi=boot1_emi(store))
    wrong = preloader_emi("s650/preloader")
    with pytest.raises(TransportError) as info:
        run_pair(x.connect(DA2_ADDR, DA2, emi=wrong), sim.serve())
    message = str(info.value)
    assert "INIT_EXT_RAM" in message and "EMI setting" in message
    assert "--preloader" in message and "this exact phone model" in message
    assert not sim.dram_ready and sim.emi == b"" and sim.stage == 1
    assert x.Cmd.BOOT_TO not in sim.commands


def test_expected_emi_is_not_needed_in_preloader_mode() -> None:
    store = phone_store()
    sim = XFlashSim(store, expected_emi=boot1_emi(store))
    run_pair(x.connect(DA2_ADDR, DA2), sim.serve())
    assert sim.stage == 2 and x.Cmd.INIT_EXT_RAM not in sim.commands
