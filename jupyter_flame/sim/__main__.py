"""``python -m jupyter_flame.sim up|down``: same as ``jupyter flame sim``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
