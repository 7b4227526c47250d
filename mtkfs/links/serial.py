"""Links over a tty: a phone's CDC-ACM port (``/dev/ttyACM0``), a USB-UART adapter, a pty.

How reads wait — a non-blocking file descriptor and :func:`trio.lowlevel.wait_readable`, not a
worker thread. Why:

* a timeout or a cancel is exact and costs nothing: no thread stays blocked in ``read(2)``
  after the caller gave up, so the next command never races a stale reader for its reply;
* no byte is ever lost on a timeout: whatever ``read(2)`` returned is already in the link's
  buffer, and the next ``recv_exactly`` starts from it (a thread blocked in pyserial's
  ``read(n)`` owns its bytes until it returns);
* no thread hop per read: a pty delivers at most a few KiB per ``read(2)``, and a hop per
  4 KiB would cost more than the copy (see the throughput test in tests/unit/test_links.py).

pyserial still *opens* the port: it knows the termios dance (raw mode, 8N1, no XON/XOFF — both
0x11 and 0x13 occur in DA payloads — no CR/LF translation, DTR/RTS, ``flock`` for exclusive use)
and leaves the descriptor non-blocking. pyserial URLs without a descriptor (``socket://``,
``rfc2217://``, ``loop://``) fall back to :class:`SerialUrlLink`, which reads in a worker thread
in short slices so a cancel is never late by more than one slice.

A vanished device (unplugged ttyACM: ``EIO``/hang-up; a pty whose other side closed: ``EIO``
or end of file) is :class:`~mtkfs.errors.DeviceGoneError`.
"""

from __future__ import annotations

import errno
import logging
import os
import termios
from collections.abc import Callable

import serial
import trio

from mtkfs.errors import DeviceGoneError, SourceError, TransportError, TransportTimeout
from mtkfs.links.base import Link

__all__ = ["FdLink", "SerialLink", "SerialUrlLink", "open_serial"]

log = logging.getLogger(__name__)

#: errno values that mean "the other side is gone" on a tty or pty.
_GONE_ERRNOS = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV, errno.EPIPE, errno.EBADF})

#: Largest single read(2)/write(2): big enough that syscalls are not the cost, small enough that
#: a 256 MiB send does not hold one giant slice in the kernel's hands.
_IO_SLICE_BYTES = 1024 * 1024

#: One read(2): a pty hands out ~4 KiB at a time, a ttyACM up to its URB size; asking for more
#: than a call can return costs an allocation, asking for less costs syscalls.
_READ_BYTES = 256 * 1024

#: Longest a worker-thread read may block (SerialUrlLink): the cancel latency.
_THREAD_SLICE_S = 0.1


def _gone(description: str, exc: BaseException | None = None) -> DeviceGoneError:
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "hang-up"
    return DeviceGoneError(f"{description}: device gone ({reason}; unplugged or rebooted?)")


def _wake_on_one_byte(fd: int) -> None:
    """Set VMIN=1, VTIME=0 on a tty, so that ``read(2)`` returning 0 means hang-up.

    pyserial leaves VMIN=0, VTIME=0; with those a non-canonical tty's read returns 0 when no byte
    is waiting — even on a non-blocking descriptor, where EAGAIN is wanted — and "no data yet"
    could not be told from "the device hung up".
    """
    attrs = termios.tcgetattr(fd)
    cc = attrs[6]
    if cc[termios.VMIN] != 1 or cc[termios.VTIME] != 0:
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


class FdLink(Link):
    """A link over a non-blocking file descriptor: a tty opened by pyserial, or a pty master.

    Reads go into an internal buffer (a read may return more than asked, or less), so
    ``recv_exactly`` works whatever sizes the kernel hands out.
    """

    def __init__(
        self,
        fd: int,
        description: str,
        *,
        on_close: Callable[[], None] | None = None,
        write_timeout_s: float = 10.0,
    ) -> None:
        """``on_close`` releases the descriptor (and whatever owns it); default ``os.close``.

        ``write_timeout_s``: how long ``send`` waits for the other side to make room before a
        TransportTimeout (a device that stopped reading must not hang the host); ``math.inf``
        for a simulator, which waits on its host as long as it takes.
        """
        os.set_blocking(fd, False)
        if os.isatty(fd):
            _wake_on_one_byte(fd)
        self._fd = fd
        self.description = description
        self._on_close = on_close if on_close is not None else (lambda: os.close(fd))
        self.write_timeout_s = write_timeout_s
        self._rx = bytearray()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceGoneError(f"{self.description}: link closed")

    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        """Write all of ``data``, waiting for room as the reader drains.

        ``zlp`` is ignored: a tty has no packets (the kernel's cdc_acm decides on zero-length
        packets itself, exactly as for mtkclient's serial path).
        """
        del zlp
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        sent = 0
        try:
            while sent < len(view):
                try:
                    sent += os.write(self._fd, view[sent : sent + _IO_SLICE_BYTES])
                except BlockingIOError:
                    with trio.move_on_after(self.write_timeout_s):
                        await trio.lowlevel.wait_writable(self._fd)
                        continue
                    raise TransportTimeout(
                        f"{self.description}: the device took no bytes for "
                        f"{self.write_timeout_s:g} s ({sent} of {len(view)} sent)"
                    ) from None
        except trio.ClosedResourceError:
            raise DeviceGoneError(f"{self.description}: link closed while sending") from None
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                raise _gone(self.description, exc) from exc
            raise TransportError(f"{self.description}: write failed: {exc}") from exc
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        """Read exactly ``size`` bytes within ``timeout_s`` (``math.inf``: no limit).

        On a timeout nothing is lost: bytes that came stay buffered for the next call.
        """
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.move_on_after(timeout_s):
            while len(self._rx) < size:
                await self._fill()
            data = bytes(self._rx[:size])
            del self._rx[:size]
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        raise TransportTimeout(
            f"{self.description}: {size} bytes did not come within {timeout_s:g} s "
            f"({len(self._rx)} came)"
        )

    async def recv_some(self, max_bytes: int, timeout_s: float) -> bytes:
        """What has come, at least one byte, at most ``max_bytes``."""
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.move_on_after(timeout_s):
            if not self._rx:
                await self._fill()
            data = bytes(self._rx[:max_bytes])
            del self._rx[:max_bytes]
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        raise TransportTimeout(f"{self.description}: nothing came within {timeout_s:g} s")

    async def _fill(self) -> None:
        """One successful read(2) into the buffer, waiting for readability as needed.

        Reads whatever is there (surplus stays buffered: a tty is a byte stream).
        """
        try:
            while True:
                try:
                    chunk = os.read(self._fd, _READ_BYTES)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._fd)
                    continue
                if not chunk:  # end of file: a hung-up tty, a pty whose master closed
                    raise _gone(self.description)
                self._rx += chunk
                return
        except trio.ClosedResourceError:
            raise DeviceGoneError(f"{self.description}: link closed while receiving") from None
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                raise _gone(self.description, exc) from exc
            raise TransportError(f"{self.description}: read failed: {exc}") from exc

    async def aclose(self) -> None:
        """Close the descriptor; a task waiting on it gets DeviceGoneError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._fd)
        try:
            self._on_close()
        except OSError as exc:  # closing a vanished tty may complain; it is closed all the same
            log.debug("%s: close: %s", self.description, exc)
        await trio.lowlevel.checkpoint()


class SerialLink(FdLink):
    """A tty opened and configured by pyserial (raw 8N1), read through its descriptor."""

    def __init__(self, port: serial.Serial) -> None:
        fd = port.fileno()
        super().__init__(fd, str(port.port), on_close=port.close)
        self.port = port


class SerialUrlLink(Link):
    """A pyserial URL handler without a descriptor (``socket://``, ``rfc2217://``, ``loop://``).

    Reads run in a worker thread, ``_THREAD_SLICE_S`` at a time: pyserial's ``read(n)`` returns
    what came when its timeout expires, so slicing loses nothing and bounds how late a cancel is.
    """

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port
        self.description = str(port.port)
        self._rx = bytearray()
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)

    async def send(self, data: bytes, *, zlp: bool = False) -> None:
        """Write all of ``data`` in the worker thread (``zlp`` is ignored: no packets)."""
        del zlp
        if self._closed:
            raise DeviceGoneError(f"{self.description}: link closed")
        try:
            await trio.to_thread.run_sync(self.port.write, data, limiter=self._limiter)
        except serial.SerialTimeoutException as exc:
            raise TransportTimeout(f"{self.description}: write timed out") from exc
        except (serial.SerialException, OSError) as exc:
            raise _gone(self.description, exc) from exc

    async def recv_exactly(self, size: int, timeout_s: float) -> bytes:
        """Read exactly ``size`` bytes within ``timeout_s``, in thread slices."""
        deadline = trio.current_time() + timeout_s
        while len(self._rx) < size:
            if self._closed:
                raise DeviceGoneError(f"{self.description}: link closed")
            remaining_s = deadline - trio.current_time()
            if remaining_s <= 0:
                raise TransportTimeout(
                    f"{self.description}: {size} bytes did not come within {timeout_s:g} s "
                    f"({len(self._rx)} came)"
                )
            slice_s = min(remaining_s, _THREAD_SLICE_S)  # also for an infinite timeout
            try:
                chunk = await trio.to_thread.run_sync(
                    self._read_slice, size - len(self._rx), slice_s, limiter=self._limiter
                )
            except (serial.SerialException, OSError) as exc:
                raise _gone(self.description, exc) from exc
            self._rx += chunk
        data = bytes(self._rx[:size])
        del self._rx[:size]
        await trio.lowlevel.checkpoint()
        return data

    async def recv_some(self, max_bytes: int, timeout_s: float) -> bytes:
        """What has come, at least one byte, at most ``max_bytes`` (thread slices)."""
        if not self._rx:
            self._rx += await self.recv_exactly(1, timeout_s)
            try:  # and whatever else is already waiting, without blocking
                waiting = await trio.to_thread.run_sync(self._waiting, limiter=self._limiter)
                if waiting:
                    self._rx += await trio.to_thread.run_sync(
                        self._read_slice, min(waiting, max_bytes), 0.0, limiter=self._limiter
                    )
            except (serial.SerialException, OSError) as exc:
                raise _gone(self.description, exc) from exc
        data = bytes(self._rx[:max_bytes])
        del self._rx[:max_bytes]
        return data

    def _waiting(self) -> int:
        """Bytes the port has received and not yet handed over (0 if it cannot tell)."""
        return int(getattr(self.port, "in_waiting", 0))

    def _read_slice(self, wanted_bytes: int, slice_s: float) -> bytes:
        self.port.timeout = slice_s
        data: bytes = self.port.read(wanted_bytes)
        return data

    async def aclose(self) -> None:
        """Close the port (after any running worker call); idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self._limiter:
            self.port.close()


async def open_serial(port: str, *, baudrate: int = 115200, exclusive: bool = True) -> Link:
    """Open a tty path (``/dev/ttyACM0``, ``/dev/pts/3``) or a pyserial URL as a raw 8N1 link.

    ``exclusive`` takes an advisory lock so two mtkfs processes never share a port (ModemManager
    does not honour it: the udev rule's ``ID_MM_DEVICE_IGNORE`` keeps it away). Bytes that were
    waiting in the port before it was opened are discarded: they belong to no command of ours.
    Raises SourceError, with what to do, when the port cannot be opened.
    """

    def _open() -> serial.Serial:
        if "://" in port:
            handle = serial.serial_for_url(port, baudrate=baudrate, timeout=0)
        else:
            handle = serial.Serial(port, baudrate=baudrate, timeout=0, exclusive=exclusive)
        handle.reset_input_buffer()
        return handle

    try:
        handle = await trio.to_thread.run_sync(_open)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SourceError(_open_error_message(port, exc)) from exc
    if isinstance(handle, serial.Serial):  # a real descriptor (posix tty, pty)
        return SerialLink(handle)
    return SerialUrlLink(handle)


def _open_error_message(port: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return f"{port}: no such port (is the phone plugged in, in BROM/preloader mode?)"
    if code == errno.EACCES:
        return (
            f"{port}: permission denied. Add yourself to the group that owns it ('dialout' "
            "on Debian/Ubuntu, 'uucp' on Arch; then log in again), or run as root"
        )
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return f"{port}: in use by another program (another mtkfs? mtkclient? ModemManager?)"
    return f"{port}: cannot open: {exc}"
