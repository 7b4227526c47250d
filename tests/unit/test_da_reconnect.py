"""Reconnecting a DA transport after the link failed: the same phone comes back and reads go
on (retried, byte-exact); another phone, or none, gives EIO with what to do — never bytes of
the wrong device or the wrong place."""

from __future__ import annotations

import random

import pytest
import trio

from mtkfs.errors import MtkfsError, SourceError, TransportError, UsageError
from mtkfs.links.base import Link
from mtkfs.protocols.da_xflash import Cmd
from mtkfs.protocols.dafile import parse_da_file
from mtkfs.protocols.preloader_emi import EmiSettings
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_xflash import MemoryStore, SimFaults, XFlashSim
from mtkfs.testing.simlink import GeneratorLink
from mtkfs.testing.wirefaults import WireFaults, faulty_device, parse_wire_faults
from mtkfs.transports.da import RECONNECT_BACKOFF_S, DaTransport

MiB = 1 << 20
USER = random.Random(1).randbytes(8 * MiB)
DA = parse_da_file(build_for_codes([0x6765]), "MTK_AllInOne_DA.bin")


class Phones:
    """Plugs in a fresh simulated phone on each call (a replug), all on one store."""

    def __init__(
        self,
        *,
        faults: list[SimFaults] | None = None,
        wire: WireFaults | None = None,
        me_ids: list[bytes] | None = None,
    ) -> None:
        self.store = MemoryStore.from_bytes({"user": USER, "boot1": b"\1" * MiB})
        self.faults = faults or []
        self.wire = wire or WireFaults()
        self.me_ids = me_ids or []
        self.plugged = 0
        self.absent = False

    async def plug_in(self) -> Link:
        if self.absent:
            raise SourceError("no MediaTek phone in BROM/preloader mode found")
        index = self.plugged
        self.plugged += 1
        faults = self.faults[index] if index < len(self.faults) else None
        xflash = XFlashSim(self.store, faults=faults, read_packet_bytes=64 << 10)
        kwargs = {"me_id": self.me_ids[index]} if index < len(self.me_ids) else {}
        brom = SimBrom(hw_code=0x0766, da_device=lambda da: xflash.serve(), **kwargs)
        return GeneratorLink(faulty_device(brom.run(), self.wire), f"simulated phone {index}")

    async def connect(self) -> DaTransport:
        return await DaTransport.connect(await self.plug_in(), DA, reopen=self.plug_in)


@pytest.mark.parametrize(
    "fault",
    [SimFaults(stall_read_chunk=3), SimFaults(disconnect_read_chunk=3)],
    ids=["stall", "disconnect"],
)
async def test_a_failed_read_reconnects_and_is_retried(fault: SimFaults) -> None:
    phones = Phones(faults=[fault])
    transport = await phones.connect()
    assert await transport.read("user", 5000, 2 * MiB) == USER[5000 : 5000 + 2 * MiB]
    assert transport.reconnects == 1 and phones.plugged == 2
    assert transport.failed_commands == 1
    assert transport.broken is None
    await transport.aclose()


async def test_a_different_phone_is_not_served() -> None:
    phones = Phones(faults=[SimFaults(disconnect_read_chunk=1)], me_ids=[b"A" * 16, b"B" * 16])
    transport = await phones.connect()
    with pytest.raises(TransportError, match="different phone") as caught:
        await transport.read("user", 0, MiB)
    assert caught.value.errno == 5  # EIO
    assert transport.broken is not None and transport.reconnects == 0
    await transport.aclose()


async def test_no_phone_back_fails_fast_then_reconnects_once_replugged() -> None:
    phones = Phones(faults=[SimFaults(disconnect_read_chunk=1)])
    transport = await phones.connect()
    phones.absent = True
    with pytest.raises(TransportError, match="replug the phone"):
        await transport.read("user", 0, MiB)
    plugged = phones.plugged
    # Within the back-off a read does not even try: a readahead burst costs nothing.
    with pytest.raises(TransportError, match="reconnects on the next read"):
        await transport.read("user", 0, MiB)
    assert phones.plugged == plugged
    phones.absent = False
    await trio.sleep(RECONNECT_BACKOFF_S)
    assert await transport.read("user", 3 * MiB, MiB) == USER[3 * MiB : 4 * MiB]
    assert transport.reconnects == 1
    await transport.aclose()


async def test_writes_are_not_retried_but_work_after_a_reconnect() -> None:
    phones = Phones(faults=[SimFaults(disconnect_read_chunk=1)])
    transport = await DaTransport.connect(
        await phones.plug_in(), DA, reopen=phones.plug_in, writable=True
    )
    with pytest.raises(MtkfsError):
        await _break(transport)
    data = random.Random(5).randbytes(64 << 10)
    await transport.write("user", MiB, data)  # reconnects first
    assert phones.store.read("user", MiB, len(data)) == data
    assert transport.reconnects == 1
    await transport.aclose()


async def _break(transport: DaTransport) -> None:
    """Make the session fail (the first phone disconnects on its first read chunk) without
    the read's own retry reconnecting it."""
    reopen, transport._reopen = transport._reopen, None
    try:
        await transport.read("user", 0, 4096)
    finally:
        transport._reopen = reopen


async def test_many_wire_faults_never_give_wrong_bytes() -> None:
    """Cut transfers and garbled headers, every few frames: each read is byte-exact or fails;
    with retries nearly all succeed, and every fault was seen (none slipped through)."""
    wire = WireFaults(every=197, limit=120, seed=7)
    phones = Phones(wire=wire)
    transport = await phones.connect()
    rng = random.Random(3)
    good = failed = 0
    while wire.total < wire.limit:
        offset = rng.randrange(len(USER) - 1)
        size = rng.randrange(1, min(len(USER) - offset, MiB) + 1)
        try:
            data = await transport.read("user", offset, size)
        except TransportError:
            failed += 1
            await trio.sleep(RECONNECT_BACKOFF_S if transport._retry_after else 0)
            continue
        assert data == USER[offset : offset + size]
        good += 1
    assert set(wire.injected) == {"cut", "garble"}
    # Every fault broke the command or the bring-up it hit (none went unnoticed)...
    assert transport.failed_commands + transport.failed_bring_ups == wire.total
    # ... and retries hid nearly all of them from readers.
    assert good > 200 and failed <= 5, (good, failed)
    await transport.aclose()


def test_wire_fault_spec() -> None:
    faults = parse_wire_faults("every=40,limit=200,kinds=cut,seed=3")
    assert (faults.every, faults.limit, faults.kinds, faults.seed) == (40, 200, ("cut",), 3)
    flash = parse_wire_faults("corrupt-write=2,drop-write=5,corrupt-read=7").flash
    assert (flash.corrupt_write, flash.drop_write, flash.corrupt_read) == (2, 5, 7)
    assert parse_wire_faults("corrupt-write=2").every == 0  # no wire faults then
    for bad in ("every=x", "kinds=melt", "often"):
        with pytest.raises(UsageError, match="--sim-faults"):
            parse_wire_faults(bad)


@pytest.mark.parametrize("can_follow", [True, False], ids=["usb", "tty"])
async def test_a_full_speed_phone_is_switched_to_high_speed(can_follow: bool) -> None:
    store = MemoryStore.from_bytes({"user": USER})
    xflash = XFlashSim(store, usb_speed="full-speed", read_packet_bytes=64 << 10)
    brom = SimBrom(hw_code=0x0766, mode="brom", da_device=lambda da: xflash.serve())
    link = GeneratorLink(brom.run(), reenumerate=xflash.serve if can_follow else None)
    transport = await DaTransport.connect(
        link, DA, emi=EmiSettings(25, b"MTK_BLOADER_INFO_v25" + b"\0" * 64)
    )
    assert (Cmd.SWITCH_USB_SPEED in xflash.commands) == can_follow
    assert transport.session.usb_speed == ("high-speed" if can_follow else "full-speed")
    assert (transport.link is not link) == can_follow
    assert await transport.read("user", 12345, MiB) == USER[12345 : 12345 + MiB]
    await transport.aclose()
