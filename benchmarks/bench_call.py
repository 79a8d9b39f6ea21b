"""Warm round trip of ``pool.call(f)`` against a raw baseline and peers, in one run.

    python benchmarks/bench_call.py [--n 200] [--pause 0.05]

Raw baseline: a persistent subprocess receiving cloudpickle protocol-5 frames over loopback TCP
(``rawbase.py``). Peers (if installed): ipyparallel, dask.distributed, ray. Each call follows a
pause (default 50 ms), as in interactive use; a runner is warm (already connected).
"""

from __future__ import annotations

import argparse

from _common import have, machine, save, table, time_calls


def noop() -> int:
    return 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--pause", type=float, default=0.05)
    args = ap.parse_args()
    rows = []

    from rawbase import RawBaseline

    raw = RawBaseline()
    raw.start()
    r = time_calls(lambda: raw.call(noop), args.n, args.pause)
    raw.close()
    rows.append({"system": "raw baseline", **r})
    raw_median = r["median_ms"]

    from jupyter_flame import Pool

    with Pool("bench", max=1) as pool:
        pool.call(noop)
        r = time_calls(lambda: pool.call(noop), args.n, args.pause)
    rows.append({"system": "jupyter-flame pool.call", **r})

    if have("ipyparallel"):
        import ipyparallel as ipp

        cluster = ipp.Cluster(n=1, log_level=40)
        rc = cluster.start_and_connect_sync()
        rc.wait_for_engines(1, timeout=60)
        view = rc[0]
        r = time_calls(lambda: view.apply_sync(noop), min(args.n, 100), args.pause)
        rows.append({"system": "ipyparallel apply_sync", **r})
        cluster.stop_cluster_sync()
    if have("distributed"):
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            r = time_calls(lambda: client.submit(noop, pure=False).result(), min(args.n, 100),
                           args.pause)
        rows.append({"system": "dask.distributed submit", **r})
    if have("ray"):
        import ray

        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(noop)
        ray.get(remote.remote())
        r = time_calls(lambda: ray.get(remote.remote()), min(args.n, 100), args.pause)
        rows.append({"system": "ray remote", **r})
        ray.shutdown()

    for row in rows:
        row["x raw"] = row["median_ms"] / raw_median
    print(f"warm call after a {args.pause * 1000:.0f} ms pause ({machine()})")
    print(table(rows, ["system", "median_ms", "p95_ms", "x raw", "n"]))
    save("call", rows)


if __name__ == "__main__":
    main()
