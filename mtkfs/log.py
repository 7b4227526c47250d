"""Logging setup shared by the CLI and the daemon.

Why a module for ten lines: the daemon logs to a file when it runs in the background (nobody
reads its stderr then), to stderr in the foreground, and ``--debug`` must mean the same in both.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(*, debug: bool, log_file: Path | None = None) -> None:
    """Configure the root logger once: level, format, destination."""
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("mtkfs: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    # pyfuse3 logs every request at DEBUG; that is noise unless the user debugs mtkfs itself.
    logging.getLogger("pyfuse3").setLevel(logging.INFO if debug else logging.WARNING)
