"""sd_notify(3) without libsystemd: tell systemd (or whoever set ``$NOTIFY_SOCKET``) how the
mount is doing.

Why hand-written and not a package: the protocol is one ``AF_UNIX`` datagram of
``KEY=VALUE`` lines to the socket named in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace); the PyPI wrappers (sdnotify, systemd-python) add either nothing or a C
build against libsystemd. What mtkfs sends:

* ``READY=1`` once the mount answers (``Type=notify``: ``systemctl start`` and units ordered
  after us wait for it), with ``STATUS=mounted 23 partitions of … at /run/mtkfs/1-4``;
* ``STATUS=`` as things happen: ``committing 3 chunks``, ``FAILSAFE: …``, ``device gone``;
* ``STOPPING=1`` when a stop begins (SIGTERM: flush, unmount);
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` when the unit sets ``WatchdogSec=``.

Without ``$NOTIFY_SOCKET`` (a plain ``mtkfs mount``) every call does nothing. A send that
fails is logged and forgotten: telling systemd is never worth failing the mount for.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

#: Status text is one line; systemd shows it in ``systemctl status``.
MAX_STATUS_CHARS = 400


class Notifier:
    """The ``$NOTIFY_SOCKET`` of this process, read once (see module doc)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | None = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval_s: float | None = _watchdog_interval(env)
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=VALUE`` lines, e.g. ``notify(READY=1, STATUS="mounted")``."""
        if self.address is None:
            return
        lines = []
        for key, value in fields.items():
            text = " ".join(str(value).split())  # one line: systemd splits on newlines
            if key == "STATUS":
                text = text[:MAX_STATUS_CHARS]
            lines.append(f"{key}={text}")
        message = "\n".join(lines)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode("utf-8", "replace"))
        except OSError as exc:
            log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            return
        self.sent.append(message)

    def status(self, text: str) -> None:
        self.notify(STATUS=text)

    def ready(self, status: str) -> None:
        self.notify(READY=1, STATUS=status)

    def stopping(self, status: str) -> None:
        self.notify(STOPPING=1, STATUS=status)

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)


def _socket_address(value: str) -> str | None:
    """``$NOTIFY_SOCKET``: an absolute path, or ``@name`` for the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        log.warning("ignoring NOTIFY_SOCKET=%r: not a path or @abstract name", value)
    return None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` when it is meant for this process (``$WATCHDOG_PID``)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6
