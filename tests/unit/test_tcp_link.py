"""The TCP link against a real loopback server: exact reads across segments, a timeout that
loses no bytes, the peer closing, and a port nobody listens on."""

from __future__ import annotations

import socket

import pytest
import trio

from mtkfs.errors import DeviceGoneError, SourceError, TransportTimeout
from mtkfs.links.tcp import TcpLink


async def test_reads_timeouts_and_close() -> None:
    got: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        got.append(await stream.receive_some(100))
        await stream.send_all(b"ab")
        await trio.sleep(0.3)
        await stream.send_all(b"c" + b"x" * 300_000)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        link = await TcpLink.connect("127.0.0.1", port, what="test server")
        await link.send(b"hello")
        with pytest.raises(TransportTimeout, match="did not come within"):
            await link.recv_exactly(3, 0.1)
        assert await link.recv_exactly(3, 5) == b"abc"  # nothing lost to the timeout
        assert await link.recv_exactly(300_000, 5) == b"x" * 300_000
        with pytest.raises(DeviceGoneError, match="closed"):
            await link.recv_exactly(1, 5)
        await link.aclose()
        await link.aclose()  # idempotent
        with pytest.raises(DeviceGoneError):
            await link.send(b"x")
        nursery.cancel_scope.cancel()
    assert got == [b"hello"]


async def test_nobody_listening_is_a_source_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(SourceError, match="cannot reach the adb server"):
            await TcpLink.connect("127.0.0.1", port, what="adb server")
