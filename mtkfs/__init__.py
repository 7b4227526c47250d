"""mtkfs: a device's flash as a folder of per-partition files, over FUSE."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
