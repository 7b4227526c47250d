"""SP Flash Tool Checksum.ini: the 16-bit byte sum (fast path vs ``sum``), writing, reading."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.errors import MapError
from mtkfs.maps.checksum import PIECE_BYTES, ByteSum16, parse_checksum_ini, write_checksum_ini

#: Lengths around the piece size, where an off-by-one in the CRT trick would show.
_EDGE_LENGTHS = [0, 1, 2, PIECE_BYTES - 1, PIECE_BYTES, PIECE_BYTES + 1, 2 * PIECE_BYTES,
                 3 * PIECE_BYTES + 7, 200_003]  # fmt: skip


def byte_sum(data: bytes) -> int:
    return sum(data) % 0x10000


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Data (random or all 0xFF, the largest sums) and a list of chunk lengths covering it."""
    length = draw(st.one_of(st.sampled_from(_EDGE_LENGTHS), st.integers(0, 300_000)))
    if draw(st.booleans()):
        data = random.Random(draw(st.integers(0, 2**32))).randbytes(length)
    else:
        data = bytes([draw(st.integers(0, 255))]) * length
    cuts = sorted(draw(st.lists(st.integers(0, length), max_size=6)))
    return data, [b - a for a, b in zip([0, *cuts], [*cuts, length], strict=True)]


@settings(max_examples=300, deadline=None)
@given(chunked(), st.sampled_from([bytes, bytearray, memoryview]))
def test_byte_sum_matches_sum_for_any_chunking(
    case: tuple[bytes, list[int]], kind: type[bytes] | type[bytearray] | type[memoryview]
) -> None:
    data, lengths = case
    total = ByteSum16()
    offset = 0
    for length in lengths:
        total.update(kind(data[offset : offset + length]))
        offset += length
    assert total.value == byte_sum(data)


@pytest.mark.parametrize("length", _EDGE_LENGTHS)
def test_byte_sum_of_all_ones_at_piece_edges(length: int) -> None:
    data = b"\xff" * length
    total = ByteSum16()
    total.update(data)
    assert total.value == byte_sum(data)


def test_byte_sum_starts_at_zero_and_takes_small_updates() -> None:
    total = ByteSum16()
    assert total.value == 0
    for byte in b"\x01\xff\x80":
        total.update(bytes([byte]))
    assert total.value == 0x180


def test_write_checksum_ini_layout() -> None:
    text = write_checksum_ini({"preloader": 0xCB45, "recovery": 0x913E, "md1img": 0x7})
    assert text == (
        "[IsEnableChecksum]\nCHECKSUM_SWITCH=1\n[CheckSum]\n"
        "preloader=0xCB45\nrecovery=0x913E\nmd1img=0x0007\n"
    )
    assert write_checksum_ini({}) == "[IsEnableChecksum]\nCHECKSUM_SWITCH=1\n[CheckSum]\n"


@pytest.mark.parametrize(("name", "value"), [("a=b", 1), ("", 1), ("x\n", 1), ("ok", 0x10000)])
def test_write_checksum_ini_refuses_what_it_cannot_write(name: str, value: int) -> None:
    with pytest.raises(ValueError):
        write_checksum_ini({name: value})


def test_parse_is_tolerant_of_windows_files() -> None:
    text = (
        "\ufeff; made by CheckSum_Gen\r\n[IsEnableChecksum]\r\nCHECKSUM_SWITCH=1\r\n\r\n"
        "[CheckSum]\r\nPreloader = 0xcb45 ; boot\r\n# comment\r\nsystem=0x0007\r\n"
        "[CheckSum_V2]\r\nsystem=0123456789abcdef0123456789abcdef\r\n"
    )
    assert parse_checksum_ini(text) == {"Preloader": 0xCB45, "system": 7}


@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
                       st.integers(0, 0xFFFF)))  # fmt: skip
def test_parse_reads_back_what_write_wrote(sums: dict[str, int]) -> None:
    assert parse_checksum_ini(write_checksum_ini(sums)) == sums


@pytest.mark.parametrize(
    "text",
    ["[CheckSum]\njust words\n", "[CheckSum]\nboot=0xZZ\n", "[CheckSum]\n=0x1234\n"],
)
def test_parse_refuses_garbage(text: str) -> None:
    with pytest.raises(MapError, match="line 2"):
        parse_checksum_ini(text)


_VALID = "[IsEnableChecksum]\nCHECKSUM_SWITCH=1\n[CheckSum]\npreloader=0xCB45\nboot=0x0001\n"


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = _VALID
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        insert = draw(st.text("[]=;#\r\n \x00xX0123456789ABCDEFabcdef", max_size=6))
        text = text[:at] + insert + text[at + draw(st.integers(0, 8)) :]
    return text


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=200), mutated()))
def test_parse_checksum_ini_never_fails_unexpectedly(text: str) -> None:
    try:
        sums = parse_checksum_ini(text)
    except MapError:
        return
    assert all(isinstance(k, str) and k and isinstance(v, int) and v >= 0 for k, v in sums.items())
