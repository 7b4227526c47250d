"""How a device source is reached: the shared options survive the trip into the daemon's argv,
``da:`` source strings are checked, and ``--wait`` applies to the first open only (reconnects
look once and fail fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import mtkfs.transports as transports
from mtkfs.cli_source import add_source_args, source_argv, source_options
from mtkfs.errors import SourceError
from mtkfs.links.base import Link
from mtkfs.transports import SourceOptions, open_transport
from mtkfs.transports.da import DEFAULT_IO_TIMEOUT_S


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_source_args(parser)
    return parser.parse_args(list(argv))


def test_options_round_trip_through_the_daemon_argv(tmp_path: Path) -> None:
    args = parse(
        "--da", str(tmp_path / "DA.bin"), "--preloader", "pl.bin", "--wait", "30",
        "--io-timeout", "2.5", "--sim-faults", "every=9",
    )  # fmt: skip
    options = source_options(args)
    assert options.preloader is not None and options.preloader.is_absolute()
    assert source_options(parse(*source_argv(options))) == options
    assert source_options(parse()) == SourceOptions(io_timeout_s=DEFAULT_IO_TIMEOUT_S)


async def test_bad_da_sources_say_what_is_accepted(tmp_path: Path) -> None:
    da = tmp_path / "DA.bin"
    da.write_bytes(b"x")
    with pytest.raises(SourceError, match=r"da:usb:PORT"):
        await open_transport("da:bluetooth", options=SourceOptions(da_file=da))


async def test_wait_applies_to_the_first_open_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []

    async def fake_wait(timeout_s: float, poll_s: float = 0.05, **kwargs: object) -> str:
        calls.append(("wait", (timeout_s, kwargs.get("port_path"))))
        return "candidate"

    async def fake_open(target: object = None, **kwargs: object) -> Link:
        calls.append(("open", target if target is not None else kwargs.get("port_path")))
        return object()  # type: ignore[return-value]

    monkeypatch.setattr(transports, "wait_for_device", fake_wait)
    monkeypatch.setattr(transports.UsbLink, "open", fake_open)
    opener = transports._usb_opener("1-4", SourceOptions(wait_s=30.0))
    await opener()
    await opener()
    assert calls == [("wait", (30.0, "1-4")), ("open", "candidate"), ("open", "1-4")]
