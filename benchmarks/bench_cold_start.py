"""Cold start to first result: a new local runner (spawn, connect, run ``f``) vs the raw
baseline (spawn a bare subprocess, connect, run ``f``) and peers, in one run.

    python benchmarks/bench_cold_start.py [--repeat 5]

The raw baseline and jupyter-flame report the median of ``--repeat`` cold starts (after one
untimed warm-up each); the peers (ipyparallel, dask.distributed, ray, where installed) are timed
once each, so their ``median_s`` column is a single sample.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import have, machine, save, table


def one() -> int:
    return 1


def flame_cold() -> float:
    from jupyter_flame import Pool

    t0 = time.perf_counter()
    pool = Pool(max=1)
    pool.call(one)
    took = time.perf_counter() - t0
    pool.shutdown()
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from rawbase import raw_cold_start

    raw_cold_start()
    flame_cold()
    rows = [
        {"system": "raw baseline", "median_s": statistics.median(
            [raw_cold_start() for _ in range(args.repeat)])},
        {"system": "jupyter-flame local runner", "median_s": statistics.median(
            [flame_cold() for _ in range(args.repeat)])},
    ]
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
