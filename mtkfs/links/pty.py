"""A pseudo-terminal pair: a simulated phone on one side, ``da:/dev/pts/N`` on the other.

Why a pty: it lets the host run its *real* tty path — pyserial's open, termios, non-blocking
reads, hang-up handling — against an in-process simulator, with no hardware and no root. The
simulator serves its device generator on the master with :func:`~mtkfs.links.base.run_device`;
the host opens the slave path with :func:`~mtkfs.links.serial.open_serial`.

The master link keeps its own descriptor of the slave open for its whole life. Why: on Linux a
master whose slave is not open reads ``EIO`` and polls as hung up, so without it the simulator
would see "device gone" before the host has even opened the path, and again whenever the host
closes and reopens it (a reconnect). The price: the simulator cannot tell that the host closed;
it serves until its own task is cancelled or its link closed. The host does see the simulator
go away (``EIO``/end of file on the slave), which is the direction that matters: an unplug.
"""

from __future__ import annotations

import math
import os
import termios
import tty

from mtkfs.links.serial import FdLink

__all__ = ["open_pty_pair"]


def open_pty_pair(name: str = "simulator") -> tuple[str, FdLink]:
    """Create a raw-mode pty; returns ``(slave_path, master_link)``.

    Raw mode is set on the slave (the line discipline's settings live there): no echo, no
    CR/LF translation, no XON/XOFF, 8 bits — every byte value crosses unchanged.
    """
    master_fd, slave_fd = os.openpty()
    try:
        tty.setraw(slave_fd, termios.TCSANOW)
        path = os.ttyname(slave_fd)
    except OSError:
        os.close(master_fd)
        os.close(slave_fd)
        raise

    def _close() -> None:
        os.close(master_fd)
        os.close(slave_fd)

    description = f"{name} on pty master of {path}"
    return path, FdLink(master_fd, description, on_close=_close, write_timeout_s=math.inf)
