"""The sans-I/O convention: operations as generators, run against a device in memory."""

from __future__ import annotations

import random

import pytest

from mtkfs.errors import LocalProtocolError, RemoteProtocolError
from mtkfs.protocols.base import Op, Recv, Send, byte_sum16, expect, recv_exact, run_pair


def echo_host(payload: bytes) -> Op[bytes]:
    """Send a length-prefixed payload, expect it echoed back, then a 1-byte status."""
    yield Send(len(payload).to_bytes(2, "big"))
    yield Send(payload)
    echoed = yield Recv(len(payload))
    assert echoed is not None
    expect(echoed, payload, "echo")
    status = yield Recv(1)
    assert status is not None
    return echoed + status


def echo_device(corrupt: bool = False) -> Op[object]:
    size = yield Recv(2)
    assert size is not None
    data = yield Recv(int.from_bytes(size, "big"))
    assert data is not None
    # Reply in odd pieces: message boundaries need not match.
    reply = (b"X" + data[1:]) if corrupt else data
    for i in range(0, len(reply), 3):
        yield Send(reply[i : i + 3])
    yield Send(b"\x00")
    return None


def test_pair_runs_to_the_host_result() -> None:
    assert run_pair(echo_host(b"hello world"), echo_device()) == b"hello world\x00"


def test_remote_mistakes_are_protocol_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="echo: expected 68"):
        run_pair(echo_host(b"hello"), echo_device(corrupt=True))


def test_a_stuck_exchange_is_reported_not_hung() -> None:
    def silent() -> Op[object]:
        yield Recv(2)
        yield Recv(100)  # never satisfied
        return None

    with pytest.raises(LocalProtocolError, match="host waits for 5 bytes"):
        run_pair(echo_host(b"hello"), silent())


def test_an_operation_with_nothing_to_exchange() -> None:
    def nothing() -> Op[bytes]:
        if False:  # a generator that returns before its first yield
            yield Recv(1)
        return b"done"

    def idle() -> Op[object]:
        yield Recv(1)
        return None

    assert run_pair(nothing(), idle()) == b"done"


def test_recv_exact_refuses_a_driver_that_breaks_its_promise() -> None:
    op = recv_exact(4)
    assert next(op) == Recv(4)
    with pytest.raises(StopIteration) as done:
        op.send(b"abcd")
    assert done.value.value == b"abcd"
    short = recv_exact(4)
    next(short)
    with pytest.raises(LocalProtocolError, match=r"Recv\(4\)"):
        short.send(b"ab")


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 4096, 1 << 20])
def test_byte_sum16_is_the_byte_sum_mod_65536(size: int) -> None:
    for fill in (b"\xff", b"\x00"):
        data = fill * size
        assert byte_sum16(data) == sum(data) & 0xFFFF
    data = random.Random(size).randbytes(size)
    assert byte_sum16(data) == sum(data) & 0xFFFF
    assert byte_sum16(memoryview(bytearray(data))) == sum(data) & 0xFFFF
