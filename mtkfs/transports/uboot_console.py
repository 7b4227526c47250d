"""A U-Boot console over a link: break in, learn the prompt, run one command at a time.

The text rules live in :mod:`mtkfs.protocols.uboot` (sans-I/O); this module owns the timing,
which no parser can: how long to listen, when to send Ctrl-C, when the board is quiet.

Why each rule (reference uboot.md §4):

* **Never type ahead.** U-Boot reads and discards input while a command polls for Ctrl-C, so a
  command is typed only once the prompt has come back, and in pieces of at most 16 characters,
  each piece's echo awaited (USB-serial bridges and small UART FIFOs drop bursts). An echo that
  differs from what was typed means characters were lost: the line is cancelled with Ctrl-C and
  the caller may retry — a half-typed ``sf erase`` must never run.
* **One terminator.** Each line ends with a single ``\\r``; ``\\r\\n`` would be an empty second
  line, which re-runs the last repeatable command (``md``, ``crc32``, ``sf write``…).
* **Waking is Ctrl-C, never Enter**, for the same reason.
* **A reset is news, not output.** A sign-on banner or a crash report in the middle of a
  command means the board rebooted (watchdog, a bad address): staging RAM is gone, flash
  selections (``sf probe``) are gone. :class:`BoardResetError` tells the transport to attach
  again and redo the chunk.
* **Silence is measured per read.** A 64 KiB ``md.l`` at 115200 baud takes 23 s; the command
  fails only when nothing at all arrives for ``io_timeout_s``.
"""

from __future__ import annotations

import logging
import re
import secrets

import trio

from mtkfs.errors import RemoteProtocolError, TransportError, TransportTimeout
from mtkfs.links.base import Link
from mtkfs.protocols import uboot

log = logging.getLogger(__name__)

#: A line of ``md`` output (the ASCII column may hold anything, even a banner's text).
_MD_LINE = re.compile(r"^\r?[0-9a-f]{8,16}:")
#: Longest command line typed (U-Boot's CONFIG_SYS_CBSIZE is 256 on some boards).
MAX_COMMAND_CHARS = 250
_READ_BYTES = 1 << 16


class BoardResetError(TransportError):
    """The board reset (banner or crash report) while a command ran: its RAM and flash
    selections are gone; attach again and redo the work."""


class EchoError(TransportError):
    """The echo of a typed command differed from what was typed (characters lost on the line);
    the line was cancelled and nothing ran. Safe to retry."""


class Console:
    """One U-Boot console on ``link``. :meth:`attach` first, then :meth:`run` commands."""

    def __init__(
        self,
        link: Link,
        *,
        prompt: str | None = None,
        io_timeout_s: float = 10.0,
        stop_key: bytes = uboot.CTRL_C,
    ) -> None:
        self.link = link
        self.prompt = prompt
        self.io_timeout_s = io_timeout_s
        self.stop_key = stop_key
        self.chars_sent = 0
        self.chars_received = 0
        self.resets_seen = 0
        self.commands = 0

    # -- low level ----------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        await self.link.send(data)
        self.chars_sent += len(data)

    async def _recv(self, timeout_s: float) -> str:
        data = await self.link.recv_some(_READ_BYTES, timeout_s)
        self.chars_received += len(data)
        return data.decode("latin-1")

    async def _listen(self, quiet_s: float, limit_s: float) -> str:
        """Everything that arrives until ``quiet_s`` passes without a byte (or ``limit_s``)."""
        got: list[str] = []
        with trio.move_on_after(limit_s):
            while True:
                try:
                    got.append(await self._recv(quiet_s))
                except TransportTimeout:
                    break
        return "".join(got)

    # -- attaching ----------------------------------------------------------------------------

    async def attach(self, wait_s: float = 30.0) -> str:
        """Stop autoboot (or find a console already at its prompt) and learn the prompt.

        Sends the stop key (Ctrl-C unless a keyed autoboot needs another) about every 150 ms
        until the same prompt line comes back three times in a row: a board still printing its
        banner, counting down, or sitting at its prompt all end up there; a board with
        ``bootdelay=0`` needs the key already waiting, which the repetition provides. Returns
        the prompt. Raises TransportError (what was seen) if no prompt appears in ``wait_s``.
        """
        seen: list[str] = []
        tails: list[str] = []
        deadline = trio.current_time() + wait_s
        while trio.current_time() < deadline:
            # A keyed autoboot's string, then Ctrl-C: once at the prompt, the Ctrl-C clears
            # the typed key and prints a fresh prompt line, which is what is counted.
            key = self.stop_key
            await self._send(key if key == uboot.CTRL_C else key + uboot.CTRL_C)
            text = await self._listen(0.15, 1.0)
            seen.append(text)
            if not text:
                continue
            tail = text.replace("\r", "").rsplit("\n", 1)[-1]
            tails.append(tail)
            wanted = self.prompt
            if wanted is not None:
                if text.endswith(wanted):
                    break
                continue
            learned = uboot.learn_prompt(tails[-3:]) if len(tails) >= 3 else None
            if learned is not None and tails[-3:] == [learned] * 3:
                self.prompt = learned
                break
        else:
            shown = "".join(seen)[-300:]
            raise TransportError(
                f"{self.link.description}: no U-Boot prompt within {wait_s:g} s (last output: "
                f"{shown!r}). Is the board powered and at U-Boot, the baud rate right "
                "(?baud=115200), TX/RX not swapped? A keyed autoboot needs --stop-key"
            )
        await self._listen(0.3, 2.0)  # the last Ctrl-C's prompt, and anything after it
        log.info("%s: U-Boot prompt %r", self.link.description, self.prompt)
        assert self.prompt is not None
        return self.prompt

    # -- commands -----------------------------------------------------------------------------

    async def run(self, command: str) -> str:
        """Type ``command``, wait for the prompt, return its output (echo and prompt removed).

        Raises EchoError (nothing ran), BoardResetError (the board rebooted), TransportTimeout
        (``io_timeout_s`` of silence; the command is then cancelled with Ctrl-C).
        """
        if self.prompt is None:
            raise TransportError("U-Boot console used before attach()")
        self.commands += 1
        await self._type(command)
        raw = await self._until_prompt(command)
        self._check_reset(raw)
        try:
            return uboot.split_command_output(command + raw, command, self.prompt)
        except RemoteProtocolError as exc:
            raise EchoError(f"{self.link.description}: {exc}") from exc

    async def start(self, command: str, ready: str, timeout_s: float = 10.0) -> str:
        """Type ``command`` and wait until its output shows ``ready`` (``loady``'s "Ready for
        binary"), leaving the console to the caller's transfer; :meth:`finish` collects the
        rest. Returns what came so far."""
        if self.prompt is None:
            raise TransportError("U-Boot console used before attach()")
        self.commands += 1
        await self._type(command)
        got = ""
        with trio.move_on_after(timeout_s):
            # The whole Ready line: what follows it is the receiver's, not ours to show.
            while ready not in got or "\n" not in got.split(ready, 1)[1]:
                got += await self._recv(timeout_s)
                self._check_reset(got)
            return got
        await self._cancel_line()
        raise TransportError(f"{command!r}: U-Boot never said {ready!r} (it said {got!r:.200})")

    async def finish(self, command: str, before: str = "") -> str:
        """The output of a command begun with :meth:`start`, up to its prompt."""
        raw = before + await self._until_prompt(command)
        self._check_reset(raw)
        assert self.prompt is not None
        return uboot.split_command_output(command + raw, command, self.prompt)

    async def run_status(self, command: str) -> tuple[str, int]:
        """``command``'s output and exit status (Hush's ``$?`` after an end marker)."""
        nonce = secrets.token_hex(4)
        output = await self.run(uboot.with_end_marker(command, nonce))
        return uboot.parse_marked_status(output, nonce)

    async def _type(self, command: str) -> None:
        """Type ``command`` in echo-checked pieces, then the one line terminator."""
        if not command or len(command) > MAX_COMMAND_CHARS or any(c in command for c in "\r\n\0"):
            raise TransportError(f"refusing to type {command!r:.80} into U-Boot")
        for start in range(0, len(command), uboot.MAX_ECHO_PIECE_BYTES):
            piece = command[start : start + uboot.MAX_ECHO_PIECE_BYTES]
            await self._send(piece.encode("ascii"))
            await self._expect_echo(piece)
        await self._send(uboot.LINE_END)

    async def _expect_echo(self, piece: str) -> None:
        got = ""
        try:
            while len(got) < len(piece):
                got += await self._recv(min(self.io_timeout_s, 2.0))
        except TransportTimeout:
            pass
        if got != piece:
            await self._cancel_line()
            self._check_reset(got)
            raise EchoError(
                f"{self.link.description}: typed {piece!r}, U-Boot echoed {got!r}: characters "
                "were lost on the line; nothing ran"
            )

    async def _cancel_line(self) -> None:
        """Ctrl-C a half-typed line and wait for the prompt to settle."""
        await self._send(uboot.CTRL_C)
        await self._listen(0.3, 3.0)

    async def _until_prompt(self, command: str) -> str:
        """Everything up to and including the prompt that ends the command's output."""
        assert self.prompt is not None
        end = "\n" + self.prompt
        chunks: list[str] = []
        tail = ""
        while True:
            try:
                text = await self._recv(self.io_timeout_s)
            except TransportTimeout:
                received = "".join(chunks)
                self._check_reset(received)
                await self._cancel_line()
                raise TransportTimeout(
                    f"{self.link.description}: {command!r} went silent for "
                    f"{self.io_timeout_s:g} s after {len(received)} characters"
                ) from None
            chunks.append(text)
            tail = (tail + text)[-256:]
            if tail.endswith(end):
                return "".join(chunks)
            # Rebooted and counting down: no prompt will come. Whole non-data lines only: an
            # md line's ASCII column may spell anything.
            lines = tail.split("\n")[1:]
            if any(uboot.autoboot_seen(x) for x in lines if not _MD_LINE.match(x)):
                self._check_reset("".join(chunks))
                self.resets_seen += 1
                raise BoardResetError(f"{self.link.description}: the board rebooted")

    def _check_reset(self, text: str) -> None:
        """BoardResetError if ``text`` (minus md data lines) shows a reboot or a crash."""
        lines = [line for line in text.split("\n") if not _MD_LINE.match(line)]
        evidence = uboot.find_reset("\n".join(lines))
        if evidence is not None:
            self.resets_seen += 1
            raise BoardResetError(
                f"{self.link.description}: the board reset ({evidence.strip()[:80]!r}): U-Boot "
                "RAM and flash selections are lost"
            )
