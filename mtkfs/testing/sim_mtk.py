"""Simulated MediaTek phones for ``sim:NAME`` sources, tests and the demo.

A profile is a BootROM/preloader (:class:`~mtkfs.testing.sim_brom.SimBrom`) that, once the host
uploads and starts DA1, hands over to an XFlash Download Agent
(:class:`~mtkfs.testing.sim_xflash.XFlashSim`) serving a realistic eMMC: the P-70A readback of
:mod:`mtkfs.testing.disk` (GPT, ext4 system and userdata, boot images, nvram…), built once into a
folder. The host side is the real client path (BROM → DA file → XFlash → transport); only the
phone is simulated, byte for byte.

``sim:NAME`` uses ``$XDG_CACHE_HOME/mtkfs/sim/NAME`` (built on first use); ``sim:NAME:FOLDER``
uses FOLDER (built if it holds no readback). No DA file is needed: a synthetic one in the real
container format is made for the profile's chip (``--da`` may still be given).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mtkfs.errors import MtkfsError, SourceError
from mtkfs.protocols.base import Op
from mtkfs.protocols.chips import Chip, chip_for
from mtkfs.protocols.dafile import DaFile, parse_da_file
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_xflash import ImageFilesStore, SimFaults, XFlashSim, boot1_emi
from mtkfs.testing.wirefaults import FlashFaults, WireFaults, faulty_device, parse_wire_faults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """A simulated phone: its chip, the mode it is plugged in, security bits, the DA protocol
    it speaks and the storage it carries (a builder of :mod:`mtkfs.testing.disk`)."""

    name: str
    hw_code: int
    mode: str = "preloader"
    target_config: int = 0
    protocol: str = "xflash"
    layout: str = "p70a"
    description: str = ""

    @property
    def chip(self) -> Chip:
        return chip_for(self.hw_code)


PROFILES = {
    p.name: p
    for p in (
        Profile("mt6765", 0x0766, description="XFlash DA, P-70A eMMC (GPT)"),
        Profile("mt6765-brom", 0x0766, mode="brom", description="the same in BROM mode"),
        Profile("mt6768", 0x0707, description="XFlash DA, P-70A eMMC"),
        Profile("mt6765-sla", 0x0766, mode="brom", target_config=0x7, description="secured"),
        Profile(
            "mt6582", 0x6582, protocol="legacy", layout="s650",
            description="legacy DA, Lenovo S650 eMMC (MTK MBR + EBR)",
        ),
        Profile(
            "mt6752", 0x6752, protocol="legacy", description="legacy DA, P-70A eMMC (GPT)"
        ),
        Profile(
            "mt6582-nor", 0x6582, protocol="legacy", layout="nor",
            description="legacy DA, 16 MiB NOR (mount with --map FOLDER/mtdparts.txt)",
        ),
        Profile(
            "mt6833-ufs", 0x0989, protocol="xml", layout="ufs",
            description="XML (V6) DA, UFS with three LUs of 4096-byte blocks",
        ),
    )
}  # fmt: skip


def _cache_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mtkfs" / "sim"


def default_folder(name: str) -> Path:
    return _cache_root() / name


def parse_sim_source(source: str) -> tuple[Profile, Path]:
    """``sim:NAME[:FOLDER]`` → (profile, storage folder)."""
    body = source.removeprefix("sim:")
    name, _, folder = body.partition(":")
    name = name or "mt6765"
    profile = PROFILES.get(name)
    if profile is None:
        raise SourceError(
            f"{source}: no simulated phone called {name!r} (there are: {', '.join(PROFILES)})"
        )
    return profile, Path(folder) if folder else default_folder(name)


#: Bumped when the simulated storage's content changes (2: the preloader carries EMI settings).
SIM_FORMAT = 2
_MARKER = ".mtkfs-sim-format"
#: A file each layout's readback has, to tell a built folder from an empty one.
_LAYOUT_FILES = {"p70a": "User", "s650": "mmcblk0.img", "ufs": "LU2", "nor": "flash.bin"}


def ensure_storage(folder: Path, layout: str = "p70a") -> Path:
    """Build the ``layout`` readback in ``folder`` unless one is there (a second, sparse).

    A folder this function built carries a format marker; one built by an older mtkfs (or for
    another layout) is built again. A folder with a readback and no marker is the user's:
    never touched.
    """
    marker = folder / _MARKER
    stamp = f"{SIM_FORMAT} {layout}"
    has_readback = any(
        (folder / name).exists() for name in ("User", "user", "mmcblk0.img", "LU2", "flash.bin")
    )
    outdated = marker.exists() and marker.read_text().strip() not in (stamp, str(SIM_FORMAT))
    if (
        not has_readback
        or outdated
        or (folder == _cache_root() / folder.name and not marker.exists())
    ):
        from mtkfs.testing import disk  # heavy tools (sgdisk, mkfs); only when needed

        folder.mkdir(parents=True, exist_ok=True)
        {"p70a": disk.build_p70a, "s650": disk.build_s650, "ufs": disk.build_ufs}.get(
            layout, disk.build_nor
        )(folder)
        marker.write_text(stamp + "\n")
    return folder


def open_store(folder: Path, layout: str, *, writable: bool) -> ImageFilesStore:
    """The simulated flash of a built folder: eMMC and UFS from their readback files, NOR
    from ``flash.bin``."""
    if layout == "nor":
        return ImageFilesStore({"flash": folder / "flash.bin"}, kind="nor", writable=writable)
    return ImageFilesStore.from_folder(folder, writable=writable)


def synthetic_da(profile: Profile) -> DaFile:
    """A DA file in the real container format with an agent for the profile's chip."""
    name = f"mtkfs-sim-{profile.chip.da_code:04x}-DA.bin"
    v6 = profile.protocol == "xml"
    return parse_da_file(build_for_codes([profile.chip.da_code], v6=v6), name)


class SimDa(Protocol):
    """What a simulated DA offers the phone around it (XFlashSim, LegacySim, XmlSim)."""

    def serve(self) -> Op[None]: ...


@dataclass
class SimPhone:
    """A running simulated phone: the device generator and what backs it."""

    profile: Profile
    store: ImageFilesStore
    brom: SimBrom
    da: SimDa

    def device(self) -> Op[object]:
        return self.brom.run()

    def close(self) -> None:
        self.store.close()


def start_phone(
    profile: Profile, folder: Path, *, writable: bool = False, faults: FlashFaults | None = None
) -> SimPhone:
    """Build (if need be) and power on the simulated phone of ``profile`` (misbehaving as
    ``faults`` say)."""
    store = open_store(ensure_storage(folder, profile.layout), profile.layout, writable=writable)
    da = _make_da(profile, store, faults or FlashFaults())
    brom = SimBrom(
        hw_code=profile.hw_code,
        mode=profile.mode,
        target_config=profile.target_config,
        da_device=lambda da1: da.serve(),
    )
    return SimPhone(profile, store, brom, da)


def _make_da(profile: Profile, store: ImageFilesStore, faults: FlashFaults) -> SimDa:
    """The profile's DA simulator. In BROM mode each sets DRAM up only with this phone's own
    EMI settings, and a BROM enumerates at USB full speed (the DA switches to high speed)."""
    agent = "preloader" if profile.mode == "preloader" else "brom"
    speed = "high-speed" if profile.mode == "preloader" else "full-speed"
    if profile.protocol == "legacy":
        from mtkfs.testing.sim_legacy import LegacyFaults, LegacySim, legacy_boot1_emi

        return LegacySim(
            store,
            connection_agent=agent,
            hw_code=profile.hw_code,
            expected_emi=legacy_boot1_emi(store),
            usb_speed=speed,
            faults=LegacyFaults(
                corrupt_read_packet=faults.corrupt_read,
                corrupt_write_chunk=faults.corrupt_write,
                drop_write_chunk=faults.drop_write,
            ),
        )
    if profile.protocol == "xml":
        from mtkfs.testing.sim_xml import XmlFaults, XmlSim

        # No EMI check and no speed switch: the XML DA1 sets DRAM up itself, and its USB
        # speed command is not known (mtkfs/protocols/da_xml.py).
        return XmlSim(
            store,
            connection_agent=agent,
            partition_table=_gpt_rows(store),
            faults=XmlFaults(
                corrupt_read_packet=faults.corrupt_read,
                corrupt_write_packet=faults.corrupt_write,
                drop_write_packet=faults.drop_write,
            ),
        )
    return XFlashSim(
        store,
        connection_agent=agent,
        usb_speed=speed,
        expected_emi=boot1_emi(store),
        faults=SimFaults(
            corrupt_read_chunk=faults.corrupt_read,
            corrupt_write_chunk=faults.corrupt_write,
            drop_write_chunk=faults.drop_write,
        ),
    )


def _gpt_rows(store: ImageFilesStore) -> tuple[tuple[str, int, int], ...]:
    """What the DA would report for READ-PARTITION-TABLE: the GPT on the store's table region
    (read with mtkfs's own parser: the DA parses the same bytes), or nothing."""
    from mtkfs.errors import MapError
    from mtkfs.maps.detect import table_region_of
    from mtkfs.maps.gpt import read_gpt
    from mtkfs.maps.model import Need, Region, run_reader

    regions = {name: Region(name, size) for name, size in store.region_sizes().items()}
    region = table_region_of(regions)
    if region is None:
        return ()

    def read(need: Need) -> bytes:
        return store.read(need.region, need.offset_bytes, need.size_bytes)

    try:
        pmap = run_reader(read_gpt(region), read)
    except MapError:
        return ()
    return tuple((p.name, p.offset_bytes, p.size_bytes) for p in pmap.partitions)


async def serve_on_pty(
    profile: Profile, folder: Path, *, writable: bool, faults: WireFaults | None = None
) -> None:
    """Power the phone on behind a pseudo-terminal; print its path; serve until killed.

    What a phone on ``/dev/ttyACM0`` looks like to ``mtkfs mount da:/dev/ttyACM0``: tests and
    experiments mount ``da:/dev/pts/N`` through the real tty link. ``faults``: spoil frames on
    the wire (:mod:`mtkfs.testing.wirefaults`).
    """
    from mtkfs.links.base import run_device
    from mtkfs.links.pty import open_pty_pair

    path, link = open_pty_pair(f"simulated {profile.chip.name}")
    faults = faults or WireFaults()
    print(path, flush=True)
    try:
        # After a DA session, a fault or an assert, the phone "reboots" into its BROM or
        # preloader again, like a real one: the host can always reconnect.
        while True:
            phone = start_phone(profile, folder, writable=writable, faults=faults.flash)
            try:
                await run_device(faulty_device(phone.device(), faults), link)
            except MtkfsError as exc:
                log.info("simulated phone rebooted after an error: %s", exc)
            finally:
                phone.close()
    finally:
        await link.aclose()


def main(argv: list[str] | None = None) -> int:
    """``python -m mtkfs.testing.sim_mtk [--rw] [NAME[:FOLDER]]``: a simulated phone on a pty."""
    import argparse

    import trio

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("phone", nargs="?", default="mt6765", metavar="NAME[:FOLDER]")
    parser.add_argument("--rw", action="store_true", help="let the host write its eMMC")
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        help="spoil frames on the wire: every=N,limit=M,kinds=cut+garble",
    )
    args = parser.parse_args(argv)
    profile, folder = parse_sim_source("sim:" + args.phone)
    faults = parse_wire_faults(args.faults) if args.faults else None
    trio.run(lambda: serve_on_pty(profile, folder, writable=args.rw, faults=faults))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
