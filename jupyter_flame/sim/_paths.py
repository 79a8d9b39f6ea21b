"""Where the stand-in keeps container logs (shared by the node agent and the API server).

Pure and light (no third-party imports): the agent writes these files and the
API server serves ``pods/{name}/log`` from them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["log_path", "previous_log_path"]


def log_path(state_dir: Path, namespace: str, pod: str, container: str) -> Path:
    """``<state-dir>/logs/<namespace>/<pod>/<container>.log``."""
    return state_dir / "logs" / namespace / pod / f"{container}.log"


def previous_log_path(log: Path) -> Path:
    """``<container>.previous.log`` beside ``log``: the last terminated instance's output."""
    return log.with_name(log.stem + ".previous.log")
