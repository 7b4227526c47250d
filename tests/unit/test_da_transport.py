"""The DA transport over a simulated phone in memory: open, read, write, and what a broken
link does to the session (it fails for good — it never hands out bytes of the wrong place)."""

from __future__ import annotations

import errno
import random

import pytest

from mtkfs.errors import AuthRequiredError, MtkfsError, TransportError, UsageError
from mtkfs.protocols.dafile import parse_da_file
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_xflash import MemoryStore, SimFaults, XFlashSim
from mtkfs.testing.simlink import GeneratorLink
from mtkfs.transports.da import DaTransport

MiB = 1 << 20
USER = random.Random(1).randbytes(8 * MiB)
BOOT1 = random.Random(2).randbytes(1 * MiB)


def phone(
    faults: SimFaults | None = None, *, target_config: int = 0, mode: str = "preloader"
) -> tuple[GeneratorLink, SimBrom, XFlashSim, MemoryStore]:
    store = MemoryStore.from_bytes({"user": USER, "boot1": BOOT1, "boot2": b"\0" * MiB})
    xflash = XFlashSim(store, faults=faults, read_packet_bytes=64 << 10)
    brom = SimBrom(
        hw_code=0x0766, mode=mode, target_config=target_config, da_device=lambda da: xflash.serve()
    )
    return GeneratorLink(brom.run()), brom, xflash, store


DA = parse_da_file(build_for_codes([0x6765]), "MTK_AllInOne_DA.bin")


async def test_open_read_write_close() -> None:
    link, _brom, xflash, store = phone()
    transport = await DaTransport.connect(link, DA, writable=True)
    assert set(transport.regions) == {"user", "boot1", "boot2"}
    assert transport.regions["user"].size_bytes == len(USER)
    assert transport.device_id.startswith("da:MT6765:")
    assert await transport.read("user", 12345, 3 * MiB) == USER[12345 : 12345 + 3 * MiB]
    assert await transport.read("boot1", 0, MiB) == BOOT1
    new = random.Random(3).randbytes(256 << 10)
    await transport.write("user", 2 * MiB, new)
    assert store.read("user", 2 * MiB, len(new)) == new
    assert await transport.read_back("user", 2 * MiB, len(new)) == new
    await transport.aclose()
    assert xflash.shut_down


async def test_unaligned_writes_are_refused() -> None:
    link, *_ = phone()
    transport = await DaTransport.connect(link, DA, writable=True)
    with pytest.raises(MtkfsError, match="whole 512-byte blocks"):
        await transport.write("user", 100, b"x" * 512)
    await transport.aclose()


@pytest.mark.parametrize(
    "faults",
    [
        SimFaults(fail_read_chunk=3),
        SimFaults(stall_read_chunk=3),
        SimFaults(disconnect_read_chunk=3),
    ],
    ids=["error-flag", "stall", "disconnect"],
)
async def test_a_broken_read_breaks_the_session_for_good(faults: SimFaults) -> None:
    """After a read fails mid-way nobody knows where the DA is in its byte stream: without a
    way to reopen the link every later command fails too, with a message that says to replug —
    no bytes from the wrong place."""
    link, *_ = phone(faults)
    transport = await DaTransport.connect(link, DA)
    with pytest.raises(MtkfsError):
        await transport.read("user", 0, 1 * MiB)  # chunk 3 of 16 fails
    with pytest.raises(TransportError, match="replug") as caught:
        await transport.read("user", 0, 4096)
    assert caught.value.errno == errno.EIO
    assert transport.broken is not None
    await transport.aclose()


async def test_a_secured_phone_gets_no_da_byte() -> None:
    link, brom, *_ = phone(target_config=0x7, mode="brom")
    with pytest.raises(AuthRequiredError, match="SLA"):
        await DaTransport.connect(link, DA)
    assert brom.da_bytes_received == 0


async def test_a_da_file_for_other_chips_is_a_usage_error() -> None:
    link, *_ = phone()
    other = parse_da_file(build_for_codes([0x6768]), "DA_6768.bin")
    with pytest.raises(UsageError, match="0x6768"):
        await DaTransport.connect(link, other)
