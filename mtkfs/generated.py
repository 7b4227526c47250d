"""Generated files: content the mount computes rather than reads from a partition.

Kept apart from ``fuse/`` so that the modules producing such content (status, the scatter file,
Checksum.ini) need no FUSE import — only ``fuse/`` turns them into files.
"""

from __future__ import annotations

import abc
from collections.abc import Callable


class Generated(abc.ABC):
    """Content of a generated file (``map.json``, ``status.json``, ``scatter.txt``…).

    ``size_bytes`` is what ``stat`` reports without doing work; None means "render to know"
    (the FUSE layer then renders on ``stat``, never on a directory listing).
    """

    @abc.abstractmethod
    def size_bytes(self) -> int | None:
        """The size if known without rendering."""

    @abc.abstractmethod
    async def render(self) -> bytes:
        """The current content."""


class Static(Generated):
    """Fixed bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def size_bytes(self) -> int:
        return len(self.data)

    async def render(self) -> bytes:
        return self.data


class Live(Generated):
    """Cheap content that changes (status): rendered on every look."""

    def __init__(self, make: Callable[[], bytes]) -> None:
        self.make = make

    def size_bytes(self) -> int:
        return len(self.make())

    async def render(self) -> bytes:
        return self.make()
