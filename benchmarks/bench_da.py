"""Benchmark 6 — a phone through its Download Agent: the simulated MT6765 over USB 2.0.

``sim:mt6765`` runs the real client path (BROM → DA upload → XFlash) against a simulated phone
whose eMMC is the P-70A readback; ``--link-model usb2`` charges each DA command what USB 2.0
costs (1 ms + bytes at 40 MB/s). Side by side in one run:

* mtkfs as it mounts by default (chunk cache, coalesced commands, readahead);
* a baseline that behaves like mtkclient's ``fs``: no cache (``--cache-size 0``), so every
  kernel read request becomes one DA command;
* a verified write (``dd conv=notrunc,fsync``) against the bytes-only ideal and against the
  read-old + write-new ideal (the journal and backup need the old bytes; docs/writes.md);
* the write command alone (WRITE_DATA of 32 MiB in the DA's packets, straight through the
  transport: no backup, no read-back) — what the protocol path costs, against the link. A
  verified write moves every byte three times (old bytes for the backup, new bytes, read-back),
  so its end-to-end ceiling is a third of the link; XFlash has no checksum command to verify
  with instead (docs/transports/da.md).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import trio
from benchlib import MiB, Report, delta, mount_stats, mounted

from mtkfs.testing.disk import build_p70a, build_ufs
from mtkfs.transports import open_transport
from mtkfs.transports.linkmodel import LinkModelTransport, LinkSpec, parse_link_spec

B = "6 DA (sim, usb2)"
READ_BYTES = 256 * MiB
WRITE_BYTES = 32 * MiB


def run(report: Report, work: Path) -> None:
    layout = build_p70a(work / "p70a-da")
    source = f"sim:mt6765:{layout.folder}"
    spec = parse_link_spec("usb2")
    for label, extra in (("mtkfs", []), ("no cache (mtkclient-like)", ["--cache-size", "0"])):
        _read_row(report, work, source, "cache.img", label, extra)
    # The other DA protocols, same link model: the legacy DA (per-packet checksums verified).
    _read_row(report, work, f"sim:mt6752:{layout.folder}", "cache.img", "legacy DA", [])
    ufs = build_ufs(work / "ufs-da")
    _read_row(report, work, f"sim:mt6833-ufs:{ufs.folder}", "system_a.img", "XML DA, UFS", [])
    payload = work / "payload-da.bin"
    payload.write_bytes(os.urandom(WRITE_BYTES))
    mnt = work / "mnt-da-rw"
    args = ["-o", "rw", "--journal-dir", str(work / "journal-da"), "--link-model", "usb2"]
    with mounted(source, mnt, *args, log=work / "mtkfs.log"):
        started = time.perf_counter()
        subprocess.run(
            ["dd", f"if={payload}", f"of={mnt / 'cache.img'}", "bs=1M", "conv=notrunc,fsync",
             "status=none"],
            check=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    cache = layout.by_name("cache")
    with open(layout.folder / "User", "rb") as image:
        image.seek(cache.offset_bytes)
        same = image.read(WRITE_BYTES) == payload.read_bytes()
    note = "eMMC holds the bytes" if same else "EMMC DIFFERS"
    report.add(
        B,
        "write 32 MiB verified: vs bytes/bandwidth",
        spec.transfer_s(WRITE_BYTES) / elapsed,
        "",
        note,
    )
    report.add(
        B,
        "write 32 MiB verified: vs read-old + write-new",
        spec.transfer_s(2 * WRITE_BYTES) / elapsed,
        "",
    )
    report.add(
        B,
        "WRITE_DATA 32 MiB alone: fraction of the link",
        spec.transfer_s(WRITE_BYTES)
        / trio.run(_write_command_s, source, spec, payload.read_bytes()),
        "",
    )


def _read_row(
    report: Report, work: Path, source: str, name: str, label: str, extra: list[str]
) -> None:
    """``dd`` 256 MiB of partition file ``name`` of ``source`` over the USB 2.0 model."""
    ideal = parse_link_spec("usb2").transfer_s(READ_BYTES)
    mnt = work / "mnt-da"
    with mounted(source, mnt, "--link-model", "usb2", *extra, log=work / "mtkfs.log"):
        before = mount_stats(mnt)
        started = time.perf_counter()
        subprocess.run(
            ["dd", f"if={mnt / name}", "of=/dev/null", "bs=1M", f"count={READ_BYTES // MiB}",
             "status=none"],
            check=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        after = mount_stats(mnt)
    commands = delta(before, after, "link_commands")
    report.add(B, f"read 256 MiB, {label}: fraction of the link", ideal / elapsed, "")
    report.add(B, f"read 256 MiB, {label}: DA commands", commands, "")


async def _write_command_s(source: str, spec: LinkSpec, data: bytes) -> float:
    """Seconds one 32 MiB write command takes through the DA transport over the modelled link."""
    transport = LinkModelTransport(await open_transport(source, writable=True), spec)
    try:
        started = trio.current_time()
        await transport.write("user", 64 * MiB, data)
        return trio.current_time() - started
    finally:
        await transport.aclose()
