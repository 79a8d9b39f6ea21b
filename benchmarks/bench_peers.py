"""Every single-machine figure, jupyter-flame beside raw, ray, dask and ipyparallel, in one run.

    python benchmarks/bench_peers.py [--repeat 3] [--calls 100] [--big-mib 1024]

One warm worker per system (one local runner, the raw baseline's subprocess, ray with one
CPU, a one-worker dask LocalCluster, a one-engine ipyparallel cluster), started before any
timing; then, system by system in turns so that a noisy machine hits them alike:

- warm call after a 50 ms pause: ``f()`` returning a constant (median ms);
- 1 MiB / 100 MiB / 1 GiB send + sum: a numpy array to the worker and its sum back (best of
  ``--repeat``, at least 30 for 1 MiB; GB/s of array bytes); every call sends the array again (``Pool.call`` never
  caches its arguments; ray puts its arguments into its object store on every ``.remote``);
- re-run of a cell reading an unchanged 1 GiB array: for jupyter-flame a real kernel runs the
  same ``%%flame`` cell twice and the second run is timed (content digests: nothing is sent);
  the peers have no such cell, so their column repeats their first send of the array;
- cold start to first result: a new pool's runner on a warm backend (the template process
  warm: the runner is forked) and a bare subprocess for raw, medians of 5 taken before any
  peer starts; each peer's start-up to its first result (one sample each).

Systems that are not installed are left out (``pip install -e ".[bench]"``). Results are also
written to ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import best, have, machine, save, table, time_calls

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MiB = 1 << 20


def one() -> int:
    return 1


def total(a: np.ndarray) -> float:
    return float(a.sum())


class System:
    """One system's warm worker: ``call(fn, *args)`` and how to start it cold."""

    def __init__(self, name: str, call: Callable[..., Any], stop: Callable[[], None],
                 cold: Callable[[], float]) -> None:
        self.name, self.call, self.stop, self.cold = name, call, stop, cold


def systems() -> list[System]:
    from rawbase import RawBaseline, raw_cold_start

    from jupyter_flame import LocalBackend, Pool
    from jupyter_flame.pool import loop

    out = []
    backend = LocalBackend()
    if hasattr(backend, "warm_up"):
        loop.run_sync(backend.warm_up(), 60)
    pool = Pool("bench-peers", max=1, backend=backend)
    pool.call(one)

    def flame_cold() -> float:
        t0 = time.perf_counter()
        with Pool("bench-peers-cold", max=1, backend=backend) as fresh:
            fresh.call(one)
            took = time.perf_counter() - t0
        return took

    def flame_stop() -> None:
        pool.shutdown()
        loop.run_sync(backend.close(), 30)

    # cold starts first, before the peers' processes load the machine (and before ray sets
    # thread variables in this process, which would make new runners spawn, not fork)
    flame_cold_s = statistics.median(flame_cold() for _ in range(5))
    raw_cold_s = statistics.median(raw_cold_start() for _ in range(5))
    out.append(System("jupyter-flame", pool.call, flame_stop, lambda: flame_cold_s))
    raw = RawBaseline().start()
    out.append(System("raw baseline", raw.call, raw.close, lambda: raw_cold_s))
    if have("ray"):
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        remote_cache: dict[Any, Any] = {}

        def ray_call(fn: Callable[..., Any], *args: Any) -> Any:
            remote = remote_cache.get(fn) or remote_cache.setdefault(fn, ray.remote(fn))
            return ray.get(remote.remote(*args))

        ray_call(one)
        ray_start = time.perf_counter() - t0
        out.append(System("ray", ray_call, ray.shutdown, lambda: ray_start))
    if have("distributed"):
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        client.submit(one).result()
        dask_start = time.perf_counter() - t0

        def dask_call(fn: Callable[..., Any], *args: Any) -> Any:
            return client.submit(fn, *args, pure=False).result()

        def dask_stop() -> None:
            client.close()
            cluster.close()

        out.append(System("dask", dask_call, dask_stop, lambda: dask_start))
    if have("ipyparallel"):
        import ipyparallel as ipp

        t0 = time.perf_counter()
        ipc = ipp.Cluster(n=1, log_level=40)
        rc = ipc.start_and_connect_sync()
        rc.wait_for_engines(1, timeout=120)
        view = rc[0]
        view.apply_sync(one)
        ipp_start = time.perf_counter() - t0
        out.append(System("ipyparallel", view.apply_sync, ipc.stop_cluster_sync, lambda: ipp_start))
    return out


def flame_rerun_seconds(mib: int) -> float:
    """The second run of a ``%%flame`` cell reading an unchanged ``mib`` MiB array."""
    from tests.kernel_harness import Kernel

    k = Kernel()
    try:
        assert k.run(f"import numpy as np\nbig = np.ones({mib * MiB // 8})\n").status == "ok"
        cell = "%%flame\ns = float(big.sum())\n"
        assert k.run(cell).status == "ok"
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = k.run(cell)
            times.append(time.perf_counter() - t0)
            assert res.status == "ok", res.traceback_text()
        return min(times)
    finally:
        k.run("%flame shutdown --all")
        k.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--big-mib", type=int, default=1024)
    args = ap.parse_args()
    rerun = flame_rerun_seconds(args.big_mib)
    found = systems()
    rows: dict[str, dict[str, Any]] = {}
    try:
        rows["warm call after 50 ms pause, median (ms)"] = {
            s.name: time_calls(lambda s=s: s.call(one), args.calls, pause=0.05)["median_ms"]
            for s in found}
        for mib in (1, 100, args.big_mib):
            arr = np.random.default_rng(mib).random(mib * MiB // 8)
            expect = float(arr.sum())
            row: dict[str, Any] = {}
            for s in found:
                got = s.call(total, arr)
                # equal within rounding: a worker may sum with another BLAS/thread split
                assert math.isclose(got, expect, rel_tol=1e-9), (s.name, got, expect)
                tries = args.repeat if mib >= 100 else max(args.repeat, 30)  # small: noisy
                row[s.name] = arr.nbytes / best(lambda s=s, a=arr: s.call(total, a), tries) / 1e9
            rows[f"{mib} MiB send + sum, best (GB/s)"] = row
        big = rows[f"{args.big_mib} MiB send + sum, best (GB/s)"]
        rows[f"re-run of a cell reading an unchanged {args.big_mib} MiB array (s)"] = {
            s.name: (rerun if s.name == "jupyter-flame" else args.big_mib * MiB / big[s.name] / 1e9)
            for s in found}
        rows["cold start to first result (s)"] = {s.name: s.cold() for s in found}
    finally:
        for s in found:
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001 - one peer failing to stop must not hide the table
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
    names = [s.name for s in found]
    out = [{"figure": figure, **values} for figure, values in rows.items()]
    print(f"single-machine figures ({machine()}); peers' re-run column = their first send")
    print(table(out, ["figure", *names]))
    save("peers", out)


if __name__ == "__main__":
    main()
