"""The runner's live resource use, sent with every heartbeat reply (``Pong.stats``).

CPU and memory come from psutil, for the runner and its child processes together (a cell that
starts a subprocess still shows what it costs). GPU readings come from NVML through the
``nvidia-ml-py`` package, for the GPUs ``CUDA_VISIBLE_DEVICES`` gives this runner, and only
where that package and a driver are present; otherwise ``gpus`` is empty.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psutil

from jupyter_flame.runner.sentinel import sentinel_pid

__all__ = ["Stats", "visible_gpu_indices"]

log = logging.getLogger("jupyter_flame.runner")


def visible_gpu_indices(value: str | None) -> list[int]:
    """The NVML indices ``CUDA_VISIBLE_DEVICES`` names (integers only; UUIDs are skipped)."""
    if not value:
        return []
    out = []
    for part in value.split(","):
        part = part.strip()
        if part.isdigit():
            out.append(int(part))
    return out


class Stats:
    """Samples of this process tree; ``cpu_percent`` is measured between two samples."""

    def __init__(self, pid: int | None = None, gpus: list[int] | None = None) -> None:
        self._proc = psutil.Process(pid or os.getpid())
        self._children: dict[int, psutil.Process] = {}
        self._proc.cpu_percent(None)  # the first call starts the interval
        self._gpus = (visible_gpu_indices(os.environ.get("CUDA_VISIBLE_DEVICES"))
                      if gpus is None else gpus)
        self._nvml: Any = None
        self._nvml_failed = False

    def sample(self) -> dict[str, Any]:
        try:
            cpu = self._proc.cpu_percent(None)
            rss = self._proc.memory_info().rss
            seen = set()
            sentinel = sentinel_pid()
            for child in self._proc.children(recursive=True):
                if child.pid == sentinel:
                    continue
                seen.add(child.pid)
                known = self._children.setdefault(child.pid, child)
                try:
                    cpu += known.cpu_percent(None)
                    rss += known.memory_info().rss
                except psutil.Error:
                    pass
            for pid in set(self._children) - seen:
                del self._children[pid]
        except psutil.Error:
            return {}
        return {"cpu_percent": round(cpu, 1), "rss": rss, "gpus": self._gpu_sample()}

    def _gpu_sample(self) -> list[dict[str, Any]]:
        if not self._gpus or self._nvml_failed:
            return []
        try:
            if self._nvml is None:
                import pynvml  # nvidia-ml-py

                pynvml.nvmlInit()
                self._nvml = pynvml
            nv = self._nvml
            out = []
            for index in self._gpus:
                h = nv.nvmlDeviceGetHandleByIndex(index)
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                out.append({"index": index, "util_percent": int(util.gpu),
                            "memory_used": int(mem.used), "memory_total": int(mem.total)})
            return out
        except Exception as exc:  # no package, no driver, or a GPU we cannot see
            self._nvml_failed = True
            log.debug("no GPU readings: %s", exc)
            return []
