"""Cold start to first result: a new local runner (spawn, connect, run ``f``) vs the raw
baseline (spawn a bare subprocess, connect, run ``f``) and peers, in one run.

    python benchmarks/bench_cold_start.py [--repeat 5]

Rows, each the median of ``--repeat`` cold starts (after one untimed warm-up each), the
samples of the first four interleaved so that a noisy machine hits them alike:

- raw baseline: a bare subprocess, connect, one call;
- jupyter-flame local runner: ``Pool(max=1)`` with its own new backend, as a fresh kernel's
  first runner (the template is not warm yet: this row is spawn plus the template's start);
- the same with ``LocalBackend(template=False)``: a fresh kernel's first runner today;
- new runner, plain spawn: ``Pool(max=1, backend=b)`` on a warm ``LocalBackend(template=False)``
  (pool machinery warm, the runner spawned);
- new runner, template warm: the same on a ``LocalBackend()`` whose template is ready (the
  runner forked).

The peers (ipyparallel, dask.distributed, ray, where installed) are timed once each, so their
``median_s`` column is a single sample.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import have, machine, save, table


def one() -> int:
    return 1


def flame_cold(backend: Any = None) -> float:
    """Seconds from a new pool (``backend``: shared, else its own new one) to its first
    result; the pool's runner is new either way."""
    from jupyter_flame import Pool

    t0 = time.perf_counter()
    pool = Pool(max=1) if backend is None else Pool(max=1, backend=backend)
    pool.call(one)
    took = time.perf_counter() - t0
    pool.shutdown()
    return took


def fresh_without_template() -> float:
    from jupyter_flame import LocalBackend
    from jupyter_flame.pool import loop

    backend = LocalBackend(template=False)
    try:
        return flame_cold(backend)
    finally:
        loop.run_sync(backend.close(), 30)


def interleaved(fns: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """The median of ``repeat`` samples of each, taken in turns (one untimed first)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(0.2)  # let the previous runner's exit settle
            samples[name].append(fn())
    return {name: statistics.median(xs) for name, xs in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from rawbase import raw_cold_start

    from jupyter_flame import LocalBackend
    from jupyter_flame.pool import loop

    spawning, forking = LocalBackend(template=False), LocalBackend()
    assert loop.run_sync(forking.warm_up(), 60), "the runner template did not start"
    medians = interleaved({
        "raw baseline": raw_cold_start,
        "jupyter-flame local runner": flame_cold,
        "jupyter-flame local runner, template=False": fresh_without_template,
        "new runner, plain spawn (warm backend)": lambda: flame_cold(spawning),
        "new runner, template warm (forked)": lambda: flame_cold(forking),
    }, args.repeat)
    for backend in (spawning, forking):
        loop.run_sync(backend.close(), 30)
    rows = [{"system": name, "median_s": value} for name, value in medians.items()]
    if have("ipyparallel"):
        import ipyparallel as ipp

        t0 = time.perf_counter()
        cluster = ipp.Cluster(n=1, log_level=40)
        rc = cluster.start_and_connect_sync()
        rc.wait_for_engines(1, timeout=120)
        rc[0].apply_sync(one)
        rows.append({"system": "ipyparallel (1 engine)", "median_s": time.perf_counter() - t0})
        cluster.stop_cluster_sync()
    if have("distributed"):
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.submit(one).result()
            rows.append({"system": "dask.distributed (1 worker)",
                         "median_s": time.perf_counter() - t0})
    if have("ray"):
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        ray.get(ray.remote(one).remote())
        rows.append({"system": "ray (1 cpu)", "median_s": time.perf_counter() - t0})
        ray.shutdown()
    print(f"cold start to first result ({machine()})")
    print(table(rows, ["system", "median_s"]))
    save("cold_start", rows)


if __name__ == "__main__":
    main()
