"""Whether a watched process is gone (shared by the API server and the node agents)."""

from __future__ import annotations

import os


def gone(pid: int) -> bool:
    """True once process ``pid`` no longer exists (an unreadable but live one counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
