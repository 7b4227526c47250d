"""The fault injector: its spec language, and each fault doing exactly what it says.

The write pipeline's failure tests are only as good as the faults they inject: a flip-bit that
flipped nothing, or a drop that stored everything, would let a pipeline that never verifies
pass. So each fault is checked here against the bytes that really reach an image file.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkfs.errors import DeviceGoneError, TransportError, UsageError
from mtkfs.testing.faults import FaultSpec, FaultyTransport, parse_fault_spec
from mtkfs.transports.image import ImageTransport

ORIGINAL = random.Random(11).randbytes(64 << 10)
BLOCK = 8192


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("", FaultSpec()),
        ("flip-bit@3", FaultSpec(flip_bit_at=3)),
        ("fail-write@1", FaultSpec(fail_write_at=1)),
        ("drop@12", FaultSpec(drop_at=12)),
        ("write-delay=0.05", FaultSpec(write_delay_s=0.05)),
        ("write-delay=2", FaultSpec(write_delay_s=2.0)),
        ("write-delay=.5", FaultSpec(write_delay_s=0.5)),
        ("write-delay=1.", FaultSpec(write_delay_s=1.0)),
        (
            " flip-bit@2 , fail-write@4,drop@6,write-delay=0.1 ",
            FaultSpec(flip_bit_at=2, fail_write_at=4, drop_at=6, write_delay_s=0.1),
        ),
        ("flip-bit@1,,", FaultSpec(flip_bit_at=1)),
    ],
)
def test_parse_accepts_the_documented_forms(text: str, spec: FaultSpec) -> None:
    assert parse_fault_spec(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "flip-bit",
        "flip-bit@",
        "flip-bit@x",
        "flip-bit@-1",
        "flip-bit@1.5",
        "FLIP-BIT@1",
        "bitflip@1",
        "drop=1",
        "write-delay",
        "write-delay=",
        "write-delay=fast",
        "write-delay=.",
        "write-delay=1.2.3",
        "write-delay=-1",
        "write-delay=1s",
        "flip-bit@1;drop@2",
    ],
)
def test_parse_rejects_junk(text: str) -> None:
    """Anything else is a UsageError quoting the bad item (never a ValueError traceback)."""
    with pytest.raises(UsageError, match="inject-faults"):
        parse_fault_spec(text)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="flip-btawrdoy@=0123456789., ", max_size=30)
    | st.lists(
        st.sampled_from(["flip-bit@", "fail-write@", "drop@", "write-delay=", "1", ".", "5", ","])
    ).map("".join)
)
def test_parse_never_fails_otherwise(text: str) -> None:
    """Whatever the text, the answer is a FaultSpec or a UsageError."""
    try:
        spec = parse_fault_spec(text)
    except UsageError:
        return
    assert min(spec.flip_bit_at, spec.fail_write_at, spec.drop_at, spec.write_delay_s) >= 0


# -- behaviour -----------------------------------------------------------------------------------


@asynccontextmanager
async def faulty(tmp_path: Path, spec: str) -> AsyncIterator[tuple[FaultyTransport, Path]]:
    path = tmp_path / "User"
    path.write_bytes(ORIGINAL)
    image = ImageTransport.open(path, writable=True)
    try:
        yield FaultyTransport(image, parse_fault_spec(spec)), path
    finally:
        await image.aclose()


def _data(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


async def test_no_faults_is_the_inner_transport(tmp_path: Path) -> None:
    """With an empty spec every write lands and is counted; the rest is the inner transport's."""
    async with faulty(tmp_path, "") as (transport, path):
        assert transport.writable
        assert transport.write_unit_bytes == 512
        assert transport.regions == transport.inner.regions
        for i in range(3):
            await transport.write("user", i * BLOCK, _data(i))
        assert transport.writes == 3
        assert transport.stats()["fault_writes"] == 3
        assert path.read_bytes()[: 3 * BLOCK] == _data(0) + _data(1) + _data(2)
        assert await transport.read_back("user", BLOCK, 10) == _data(1)[:10]


async def test_flip_bit_stores_one_wrong_bit_in_the_nth_write(tmp_path: Path) -> None:
    """The 2nd write is acknowledged but stored with exactly one bit flipped; others are exact."""
    async with faulty(tmp_path, "flip-bit@2") as (transport, path):
        for i in range(3):
            await transport.write("user", i * BLOCK, _data(i))
        disk = path.read_bytes()
        assert disk[:BLOCK] == _data(0)
        assert disk[2 * BLOCK : 3 * BLOCK] == _data(2)
        stored = disk[BLOCK : 2 * BLOCK]
        diff = [a ^ b for a, b in zip(stored, _data(1), strict=True) if a != b]
        assert len(diff) == 1 and bin(diff[0]).count("1") == 1
        assert disk[3 * BLOCK :] == ORIGINAL[3 * BLOCK :]


async def test_fail_write_refuses_the_nth_write_and_stores_nothing(tmp_path: Path) -> None:
    async with faulty(tmp_path, "fail-write@1") as (transport, path):
        with pytest.raises(TransportError, match="#1"):
            await transport.write("user", 0, _data(0))
        assert path.read_bytes() == ORIGINAL
        await transport.write("user", 0, _data(1))  # the device is still there
        assert path.read_bytes()[:BLOCK] == _data(1)
        assert transport.writes == 2


async def test_drop_stores_half_then_the_device_is_gone(tmp_path: Path) -> None:
    """The Nth write stores its first half (whole write units), then every command fails."""
    async with faulty(tmp_path, "drop@1") as (transport, path):
        data = _data(0)[:5000]  # half of it, in 512-byte units: 2048 bytes
        with pytest.raises(DeviceGoneError):
            await transport.write("user", 0, data)
        disk = path.read_bytes()
        assert disk[:2048] == data[:2048]
        assert disk[2048:] == ORIGINAL[2048:]
        assert transport.gone
        with pytest.raises(DeviceGoneError):
            await transport.read("user", 0, 10)
        with pytest.raises(DeviceGoneError):
            await transport.read_back("user", 0, 10)
        with pytest.raises(DeviceGoneError):
            await transport.checksum("user", 0, 10)
        with pytest.raises(DeviceGoneError):
            await transport.write("user", 0, data)
        assert path.read_bytes() == disk


async def test_write_delay_slows_every_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Each write waits the delay (in trio time: the mock clock makes this exact, not flaky)
    before it reaches the device."""
    async with faulty(tmp_path, "write-delay=3") as (transport, path):
        start = trio.current_time()
        for i in range(2):
            await transport.write("user", i * BLOCK, _data(i))
        assert trio.current_time() - start >= 6.0
        assert path.read_bytes()[: 2 * BLOCK] == _data(0) + _data(1)
