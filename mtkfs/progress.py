"""Progress of a long job (dump, export, restore): per item and in total, with rate and ETA.

Why two faces: on a terminal, tqdm bars that redraw in place; in a pipe, a log file or a
systemd journal, redrawing means carriage returns and escape codes filling the file, so there
it prints plain lines instead — one when an item starts and ends, and at most one every
``interval_s`` seconds in between. Output goes to stderr so that stdout stays for data.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from mtkfs.units import human_size


def _rate(done_bytes: int, seconds: float) -> str:
    return f"{human_size(int(done_bytes / seconds))}/s" if seconds > 0 else "-"


class Progress:
    """Call :meth:`item` for each item, :meth:`advance` as bytes move, :meth:`done` after
    each item and :meth:`close` at the end.

    ``mode``: ``auto`` (bars when ``stream`` is a terminal), ``bars``, ``lines`` or ``off``.
    """

    def __init__(
        self,
        total_bytes: int,
        *,
        stream: TextIO | None = None,
        mode: str = "auto",
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bars" if self.stream.isatty() else "lines"
        if mode not in ("bars", "lines", "off"):
            raise ValueError(f"progress mode {mode!r}")
        self.mode = mode
        self.total_bytes = total_bytes
        self.interval_s = interval_s
        self.clock = clock
        self.done_bytes = 0
        self._moved_bytes = 0  # this run's, for the rate (done_bytes includes resumed parts)
        self._started_s = clock()
        self._name = ""
        self._item_bytes = 0
        self._item_done = 0
        self._item_already = 0
        self._item_started_s = self._started_s
        self._last_line_s = self._started_s
        self._total_bar: tqdm[Any] | None = None
        self._item_bar: tqdm[Any] | None = None
        if mode == "bars":
            self._total_bar = self._bar("total", total_bytes, position=0)

    def _bar(self, name: str, total: int, position: int) -> tqdm[Any]:
        return tqdm(
            total=total,
            desc=name[:20],
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            position=position,
            leave=position == 0,
            dynamic_ncols=True,
        )

    def item(self, name: str, size_bytes: int, *, already_bytes: int = 0) -> None:
        """Start item ``name`` of ``size_bytes``; ``already_bytes`` were done by an earlier run."""
        self._name = name
        self._item_bytes = size_bytes
        self._item_done = already_bytes
        self._item_already = already_bytes
        self._item_started_s = self.clock()
        self.done_bytes += already_bytes
        if self.mode == "bars":
            self._item_bar = self._bar(name, size_bytes, position=1)
            self._item_bar.update(already_bytes)
            if self._total_bar is not None:
                self._total_bar.update(already_bytes)
        elif self.mode == "lines":
            resumed = f", resuming at {human_size(already_bytes)}" if already_bytes else ""
            self._line(f"{name}: {human_size(size_bytes)}{resumed}")

    def advance(self, moved_bytes: int) -> None:
        """``moved_bytes`` more of the current item are done."""
        self._item_done += moved_bytes
        self.done_bytes += moved_bytes
        self._moved_bytes += moved_bytes
        if self.mode == "bars":
            if self._item_bar is not None:
                self._item_bar.update(moved_bytes)
            if self._total_bar is not None:
                self._total_bar.update(moved_bytes)
        elif self.mode == "lines" and self.clock() - self._last_line_s >= self.interval_s:
            elapsed = self.clock() - self._item_started_s
            percent = 100 * self._item_done // max(self._item_bytes, 1)
            self._line(
                f"{self._name}: {human_size(self._item_done)} of {human_size(self._item_bytes)} "
                f"({percent}%), {_rate(self._item_done - self._item_already, elapsed)}, "
                f"total {self._eta()}"
            )

    def done(self, note: str = "") -> None:
        """The current item is finished; ``note`` is added to its line (e.g. a hash)."""
        elapsed = self.clock() - self._item_started_s
        text = f"{self._name}: done, {human_size(self._item_bytes)} in {elapsed:.1f} s"
        text += f" ({_rate(self._item_done - self._item_already, elapsed)})"
        text += f", {note}" if note else ""
        if self.mode == "bars":
            if self._item_bar is not None:
                self._item_bar.close()
                self._item_bar = None
            tqdm.write(text, file=self.stream)
        elif self.mode == "lines":
            self._line(text)

    def message(self, text: str) -> None:
        """A line that does not disturb the bars."""
        if self.mode == "bars":
            tqdm.write(text, file=self.stream)
        elif self.mode == "lines":
            self._line(text)

    def close(self) -> None:
        for bar in (self._item_bar, self._total_bar):
            if bar is not None:
                bar.close()
        self._item_bar = self._total_bar = None

    def _eta(self) -> str:
        elapsed = self.clock() - self._started_s
        left = self.total_bytes - self.done_bytes
        if elapsed <= 0 or self._moved_bytes <= 0:
            return f"{human_size(self.done_bytes)} of {human_size(self.total_bytes)}"
        eta_s = left / (self._moved_bytes / elapsed)
        return (
            f"{human_size(self.done_bytes)} of {human_size(self.total_bytes)}, "
            f"ETA {int(eta_s) // 60}:{int(eta_s) % 60:02d}"
        )

    def _line(self, text: str) -> None:
        self._last_line_s = self.clock()
        print(text, file=self.stream, flush=True)
