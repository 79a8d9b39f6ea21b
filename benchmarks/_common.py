"""Shared helpers for the benchmarks: timing statistics, peers, result tables.

Benchmarks are not tests: run each script by hand (``python benchmarks/bench_call.py``). Every
number is printed beside a baseline measured in the same run, because machines here are noisy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "median_ms": statistics.median(s) * 1e3,
        "p95_ms": s[min(len(s) - 1, int(len(s) * 0.95))] * 1e3,
        "n": len(s),
    }


def time_calls(fn: Callable[[], Any], n: int = 200, pause: float = 0.05,
               warmup: int = 5) -> dict[str, float]:
    """Time ``fn()`` n times, sleeping ``pause`` seconds before each call (warm, not hot)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return stats(samples)


def best(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` timed calls of ``fn()``, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "-" if v is None else str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(out)


def save(name: str, rows: list[dict[str, Any]]) -> None:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": machine(), "when": time.time(),
                                                  "rows": rows}, indent=2))
