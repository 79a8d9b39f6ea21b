"""The runner's own resource readings (sent with heartbeats)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from jupyter_flame.runner.stats import Stats, visible_gpu_indices


@pytest.mark.parametrize("value, indices", [
    (None, []), ("", []), ("0", [0]), ("1,3", [1, 3]), (" 2 , 5", [2, 5]),
    ("GPU-8f2c-uuid,1", [1]),  # UUIDs name no NVML index here
])
def test_visible_gpu_indices(value: str | None, indices: list[int]) -> None:
    assert visible_gpu_indices(value) == indices


def test_cpu_and_memory_count_the_children() -> None:
    stats = Stats(gpus=[])
    alone = stats.sample()["rss"]
    child = subprocess.Popen([sys.executable, "-c",
                              "x = bytearray(200_000_000)\nwhile True: pass"])
    try:
        time.sleep(1.0)
        stats.sample()  # the child's CPU interval starts here
        time.sleep(0.5)
        s = stats.sample()
        assert s["rss"] > alone + 150_000_000  # the child's 200 MB count
        assert s["cpu_percent"] > 30  # and its spinning
        assert s["gpus"] == []
    finally:
        child.kill()
        child.wait()
    time.sleep(0.2)
    assert stats.sample()["rss"] < alone + 50_000_000  # gone children drop out


def test_no_driver_means_no_gpu_readings() -> None:
    # nvidia-ml-py is installed, but this machine has no NVIDIA driver: no readings, no error
    assert Stats(gpus=[0]).sample()["gpus"] == []
