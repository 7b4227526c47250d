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

from mtkfs.errors import MtkfsError, SourceError
from mtkfs.protocols.base import Op
from mtkfs.protocols.chips import Chip, chip_for
from mtkfs.protocols.dafile import DaFile, parse_da_file
from mtkfs.testing.dafile_build import build_for_codes
from mtkfs.testing.sim_brom import SimBrom
from mtkfs.testing.sim_xflash import ImageFilesStore, SimFaults, XFlashSim, boot1_emi
from mtkfs.testing.wirefaults import WireFaults, faulty_device, parse_wire_faults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """A simulated phone: its chip, the mode it is plugged in, security bits."""

    name: str
    hw_code: int
    mode: str = "preloader"
    target_config: int = 0

    @property
    def chip(self) -> Chip:
        return chip_for(self.hw_code)


PROFILES = {
    "mt6765": Profile("mt6765", 0x0766),
    "mt6765-brom": Profile("mt6765-brom", 0x0766, mode="brom"),
    "mt6768": Profile("mt6768", 0x0707),
    "mt6765-sla": Profile("mt6765-sla", 0x0766, mode="brom", target_config=0x7),
}


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


#: Bumped when the simulated eMMC's content changes (2: the preloader carries EMI settings).
SIM_FORMAT = 2
_MARKER = ".mtkfs-sim-format"


def ensure_storage(folder: Path) -> Path:
    """Build the P-70A readback in ``folder`` unless one is there (about a second, sparse).

    A folder this function built carries a format marker; one built by an older mtkfs is built
    again. A folder with a readback and no marker is the user's: never touched.
    """
    marker = folder / _MARKER
    has_readback = any((folder / name).exists() for name in ("User", "user", "mmcblk0.img"))
    outdated = marker.exists() and marker.read_text().strip() != str(SIM_FORMAT)
    if (
        not has_readback
        or outdated
        or (folder == _cache_root() / folder.name and not marker.exists())
    ):
        from mtkfs.testing.disk import build_p70a  # heavy tools (sgdisk, mkfs); only when needed

        folder.mkdir(parents=True, exist_ok=True)
        build_p70a(folder)
        marker.write_text(f"{SIM_FORMAT}\n")
    return folder


def synthetic_da(profile: Profile) -> DaFile:
    """A DA file in the real container format with an agent for the profile's chip."""
    name = f"mtkfs-sim-{profile.chip.da_code:04x}-DA.bin"
    return parse_da_file(build_for_codes([profile.chip.da_code]), name)


@dataclass
class SimPhone:
    """A running simulated phone: the device generator and what backs it."""

    profile: Profile
    store: ImageFilesStore
    brom: SimBrom
    da: XFlashSim

    def device(self) -> Op[object]:
        return self.brom.run()

    def close(self) -> None:
        self.store.close()


def start_phone(
    profile: Profile, folder: Path, *, writable: bool = False, faults: SimFaults | None = None
) -> SimPhone:
    """Build (if need be) and power on the simulated phone of ``profile`` (misbehaving as
    ``faults`` say)."""
    store = ImageFilesStore.from_folder(ensure_storage(folder), writable=writable)
    # In BROM mode the simulated DA sets DRAM up only with this phone's own EMI settings.
    xflash = XFlashSim(
        store,
        connection_agent="preloader" if profile.mode == "preloader" else "brom",
        # A BROM enumerates at USB full speed; the DA switches to high speed (re-enumerating).
        usb_speed="high-speed" if profile.mode == "preloader" else "full-speed",
        expected_emi=boot1_emi(store),
        faults=faults,
    )
    brom = SimBrom(
        hw_code=profile.hw_code,
        mode=profile.mode,
        target_config=profile.target_config,
        da_device=lambda da1: xflash.serve(),
    )
    return SimPhone(profile, store, brom, xflash)


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
            phone = start_phone(profile, folder, writable=writable, faults=faults.device)
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
