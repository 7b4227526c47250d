"""A TCP connection as a link: the adb server's smart socket (127.0.0.1:5037), a
``socket://`` console.

Why its own link rather than pyserial's ``socket://``: the adb client opens one connection per
service (each ``shell,v2:`` command, each ``sync:`` session) and reads it to its end; trio's
streams do that without a worker thread, with the same timeout-per-read contract as every
other link (:class:`mtkfs.links.base.Link`).
"""

from __future__ import annotations

import errno
import os
import socket

import trio

from mtkfs.errors import DeviceGoneError, SourceError, TransportTimeout
from mtkfs.links.base import Link

#: Bytes asked of the kernel per receive: large reads keep a 40 MB/s stream cheap.
_RECV_BYTES = 1 << 20


class TcpLink(Link):
    """One TCP connection. Open with :meth:`connect`."""

    def __init__(self, stream: trio.SocketStream, description: str) -> None:
        self._stream = stream
        self.description = description
        self._rx = bytearray()
        self._closed = False
        self._quickack: int | None = getattr(socket, "TCP_QUICKACK", None)

    @classmethod
    async def connect(cls, host: str, port: int, *, what: str, timeout_s: float = 5.0) -> TcpLink:
        """Connect to ``host:port``; SourceError naming ``what`` listens there and how to start
        it when nothing does."""
        description = f"{what} at {host}:{port}"
        try:
            with trio.fail_after(timeout_s):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError as exc:
            raise SourceError(f"{description}: no answer within {timeout_s:g} s") from exc
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise SourceError(f"cannot reach the {description}: {reason}") from exc
        return cls(stream, description)

    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        del zlp  # no packets on a stream
        if self._closed:
            raise DeviceGoneError(f"{self.description}: connection closed")
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise DeviceGoneError(f"{self.description}: connection lost while sending") from exc

    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        await self._buffer(size, timeout_s)
        data = bytes(self._rx[:size])
        del self._rx[:size]
        return data

    async def recv_some(self, max_bytes: int, timeout_s: float) -> bytes:
        await self._buffer(1, timeout_s)
        data = bytes(self._rx[:max_bytes])
        del self._rx[:max_bytes]
        return data

    async def _buffer(self, size: int, timeout_s: float) -> None:
        """Receive until ``size`` bytes are buffered; TransportTimeout after ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while len(self._rx) < size:
                try:
                    chunk = await self._stream.receive_some(max(_RECV_BYTES, size - len(self._rx)))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    code = getattr(exc, "errno", None)
                    why = os.strerror(code) if code and code != errno.EBADF else "closed"
                    raise DeviceGoneError(f"{self.description}: connection {why}") from exc
                if not chunk:
                    raise DeviceGoneError(
                        f"{self.description}: the other side closed the connection "
                        f"({len(self._rx)} of {size} bytes came)"
                    )
                self._rx += chunk
                self._quick_ack()
            return
        raise TransportTimeout(
            f"{self.description}: {size - len(self._rx)} of {size} bytes did not come within "
            f"{timeout_s:g} s"
        )

    def _quick_ack(self) -> None:
        """Acknowledge at once (Linux re-enables delayed ACKs after every receive). A console
        peer that echoes keystrokes one small packet at a time (QEMU's serial server, a
        serial-to-TCP bridge) would otherwise stall ~40 ms per packet on Nagle + delayed ACK."""
        if self._quickack is not None:
            try:
                self._stream.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)
            except OSError:
                self._quickack = None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stream.aclose()
