"""``python -m mtkfs`` is the same as the ``mtkfs`` console script."""

from __future__ import annotations

import sys

from mtkfs.cli import main

sys.exit(main())
