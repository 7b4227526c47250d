"""The link model: spec parsing, and that a wrapped transport costs exactly what the spec says.

Time is trio's ``autojump_clock`` (a MockClock that skips ahead whenever every task sleeps), so a
U-Boot-speed link costs minutes of virtual time and no real time.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from mtkfs.errors import UsageError
from mtkfs.transports.image import ImageTransport
from mtkfs.transports.linkmodel import LinkModelTransport, LinkSpec, parse_link_spec

KiB = 1 << 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("usb2", LinkSpec(1e-3, 40e6, chunk_bytes=256 * KiB)),
        ("USB2", LinkSpec(1e-3, 40e6, chunk_bytes=256 * KiB)),
        ("uboot", LinkSpec(30e-3, 11520 / 4.1, chunk_bytes=16 * KiB)),
        ("local", LinkSpec(0.0, math.inf)),
        ("latency=1ms,bandwidth=40MB/s", LinkSpec(1e-3, 40e6)),
        ("latency=20ms,bandwidth=2810B/s,chunk=16K", LinkSpec(20e-3, 2810.0, 16 * KiB)),
        ("latency = 500us , bandwidth=1.5GB/s", LinkSpec(500e-6, 1.5e9)),
        ("latency=0,bandwidth=unlimited,chunk=1MiB", LinkSpec(0.0, math.inf, 1 << 20)),
        ("latency=2s,bandwidth=10KB/s,chunk=4096", LinkSpec(2.0, 10e3, 4096)),
        ("latency=1ms,bandwidth=1MiB/s,checksum=off", LinkSpec(1e-3, 1 << 20, checksum=False)),
        ("uboot,latency=50ms", LinkSpec(50e-3, 11520 / 4.1, chunk_bytes=16 * KiB)),
        (
            "usb2,checksum-latency=5ms",
            LinkSpec(1e-3, 40e6, chunk_bytes=256 * KiB, checksum_latency_s=5e-3),
        ),
    ],
)
def test_parse_link_spec(text: str, expected: LinkSpec) -> None:
    assert parse_link_spec(text) == expected


def test_uboot_preset_is_115200_baud_of_md_output() -> None:
    spec = parse_link_spec("uboot")
    assert spec.bandwidth_bytes_per_s == pytest.approx(2810, rel=1e-3)
    # 64 KiB takes ~23 s: the benchmark's "ideal" for a small partition.
    assert spec.transfer_s(64 * KiB) == pytest.approx(23.3, abs=0.1)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", "empty"),
        ("usb3", "usb3"),
        ("latency=1ms", "bandwidth missing"),
        ("bandwidth=40MB/s", "latency missing"),
        ("latency=1,bandwidth=40MB/s", "latency=1"),  # a unit is required (but for 0)
        ("latency=1ms,bandwidth=40Mb/s", "bandwidth=40Mb/s"),  # bits are not bytes
        ("latency=1ms,bandwidth=0B/s", "bandwidth=0B/s"),
        ("latency=fast,bandwidth=40MB/s", "latency=fast"),
        ("latency=1ms,bandwidth=40MB/s,chunk=3000", "chunk=3000"),
        ("latency=1ms,bandwidth=40MB/s,chunk=16KB", "chunk=16KB"),
        ("latency=1ms,bandwidth=40MB/s,speed=1", "speed=1"),
        ("latency=1ms,latency=2ms,bandwidth=1MB/s", "latency=2ms"),
        ("usb2,,chunk=4K", "empty item"),
        ("usb2,checksum=maybe", "checksum=maybe"),
        ("usb2,latency", "latency"),
    ],
)
def test_parse_link_spec_errors(text: str, names: str) -> None:
    with pytest.raises(UsageError, match="link model") as caught:
        parse_link_spec(text)
    message = str(caught.value)
    assert names in message
    assert "usb2" in message or "=" in message  # an example or the preset list


@pytest.fixture
async def image(tmp_path: Path) -> AsyncIterator[ImageTransport]:
    path = tmp_path / "User"
    path.write_bytes(bytes(range(256)) * 1024)  # 256 KiB, no table: region "user" by name
    transport = ImageTransport.open(path)
    yield transport
    await transport.aclose()


async def test_reads_cost_latency_plus_bytes_over_bandwidth(
    image: ImageTransport, autojump_clock: trio.testing.MockClock
) -> None:
    spec = LinkSpec(latency_s=0.030, bandwidth_bytes_per_s=2810.0)
    link = LinkModelTransport(image, spec)
    start = trio.current_time()
    for i in range(5):
        data = await link.read("user", i * 16 * KiB, 16 * KiB)
        assert data == (bytes(range(256)) * 64)
    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx(5 * 0.030 + 5 * 16 * KiB / 2810.0)
    assert link.busy_s == pytest.approx(elapsed)
    assert (link.commands, link.bytes, link.checksum_commands) == (5, 80 * KiB, 0)
    await link.aclose()


async def test_short_read_at_the_end_costs_what_it_moved(
    image: ImageTransport, autojump_clock: trio.testing.MockClock
) -> None:
    link = LinkModelTransport(image, LinkSpec(latency_s=0.001, bandwidth_bytes_per_s=1e6))
    start = trio.current_time()
    assert len(await link.read("user", 256 * KiB - 100, 4096)) == 100
    assert trio.current_time() - start == pytest.approx(0.001 + 100 / 1e6)
    assert link.bytes == 100


async def test_concurrent_reads_share_one_pipe(
    image: ImageTransport, autojump_clock: trio.testing.MockClock
) -> None:
    """Eight readers at once take eight commands' time: the link never carries two at once."""
    spec = parse_link_spec("latency=1ms,bandwidth=40MB/s")
    link = LinkModelTransport(image, spec)
    spans: list[tuple[float, float]] = []

    async def reader(i: int) -> None:
        begun = trio.current_time()
        await link.read("user", i * 32 * KiB, 32 * KiB)
        spans.append((begun, trio.current_time()))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(reader, i)
    elapsed = trio.current_time() - start
    one = 1e-3 + 32 * KiB / 40e6
    assert elapsed == pytest.approx(8 * one)
    # Each finished one command after the previous one: served back to back, never overlapping.
    ends = sorted(end for _, end in spans)
    assert ends == pytest.approx([start + (k + 1) * one for k in range(8)])
    assert link.commands == 8 and link.bytes == 256 * KiB


async def test_counters_per_region_in_stats(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    (tmp_path / "Boot1").write_bytes(b"\x01" * 8192)
    (tmp_path / "User").write_bytes(b"\x02" * 65536)
    link = LinkModelTransport(ImageTransport.open(tmp_path), parse_link_spec("usb2"))
    await link.read("user", 0, 65536)
    await link.read("user", 0, 4096)
    await link.read("boot1", 0, 8192)
    await link.checksum("user", 0, 4096)
    stats = link.stats()
    assert stats["link_commands"] == 3
    assert stats["link_checksum_commands"] == 1
    assert stats["link_bytes"] == 65536 + 4096 + 8192
    assert stats["link_bytes.user"] == 65536 + 4096
    assert stats["link_bytes.boot1"] == 8192
    assert stats["link_commands.user"] == 2
    expected_busy = 3 * 1e-3 + (65536 + 4096 + 8192) / 40e6 + 1e-3 + 16 / 40e6
    assert stats["link_busy_s"] == pytest.approx(expected_busy)
    assert all(isinstance(k, str) and isinstance(v, int | float) for k, v in stats.items())


async def test_checksum_costs_a_command_not_the_bytes(
    image: ImageTransport, autojump_clock: trio.testing.MockClock
) -> None:
    spec = parse_link_spec("uboot,checksum_latency=50ms")
    link = LinkModelTransport(image, spec)
    start = trio.current_time()
    crc = await link.checksum("user", 1000, 64 * KiB)
    elapsed = trio.current_time() - start
    expected = zlib.crc32((bytes(range(256)) * 1024)[1000 : 1000 + 64 * KiB])
    assert crc == expected
    # Reading 64 KiB would take ~23 s at this speed; the checksum takes its latency and a reply.
    assert elapsed == pytest.approx(0.050 + 16 / spec.bandwidth_bytes_per_s)
    assert (link.checksum_commands, link.commands, link.bytes) == (1, 0, 0)


async def test_checksum_off_sends_nothing(
    image: ImageTransport, autojump_clock: trio.testing.MockClock
) -> None:
    link = LinkModelTransport(image, parse_link_spec("usb2,checksum=off"))
    start = trio.current_time()
    assert await link.checksum("user", 0, 4096) is None
    assert trio.current_time() == start
    assert link.checksum_commands == 0 and link.busy_s == 0


async def test_wrapper_shows_the_inner_device(image: ImageTransport) -> None:
    link = LinkModelTransport(image, parse_link_spec("uboot"))
    assert link.regions == image.regions
    assert link.device_id == image.device_id
    assert link.mtime_s == image.mtime_s
    assert link.description.startswith("link model (30 ms, 2.81 KB/s, chunk 16 KiB) over image ")
    assert link.chunk_bytes == 16 * KiB
    assert LinkModelTransport(image, parse_link_spec("usb2")).chunk_bytes == 256 * KiB
    spec = parse_link_spec("latency=1ms,bandwidth=40MB/s")
    assert LinkModelTransport(image, spec).chunk_bytes == image.chunk_bytes
    assert not link.writable
    assert (
        "link_bandwidth_bytes_per_s" not in LinkModelTransport(image, LinkSpec(0, math.inf)).stats()
    )
    await link.aclose()


async def test_commands_and_readahead_are_sized_by_link_time(image: ImageTransport) -> None:
    """A U-Boot link fetches one chunk per command and never guesses ahead (a wrong guess costs
    seconds); USB gets big commands and some readahead, within what the inner transport allows."""
    uboot = LinkModelTransport(image, parse_link_spec("uboot"))
    assert uboot.max_request_bytes == uboot.chunk_bytes == 16 * KiB
    assert uboot.readahead_max_bytes == 0
    assert uboot.has_checksum
    usb = LinkModelTransport(image, parse_link_spec("usb2,checksum=off"))
    assert usb.chunk_bytes <= usb.max_request_bytes <= image.max_request_bytes
    assert usb.chunk_bytes <= usb.readahead_max_bytes <= image.readahead_max_bytes
    assert usb.readahead_max_bytes % usb.chunk_bytes == 0
    assert not usb.has_checksum
    local = LinkModelTransport(image, parse_link_spec("local"))
    assert local.max_request_bytes == image.max_request_bytes
    assert local.readahead_max_bytes == image.readahead_max_bytes
