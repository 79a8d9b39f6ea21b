"""Runner pods on the local Kubernetes stand-in: cold start (pod create to first result), the
Kubernetes API requests one boot makes, and the warm round trip against a local runner's, in
one run.

    python benchmarks/bench_kubernetes.py [--repeat 3] [--n 100]

Starts its own stand-in (``jupyter flame sim up``) in a temporary directory and stops it at the
end. Requests are counted at the official client's HTTP layer (watches count once each).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, save, table, time_calls


def noop() -> int:
    return 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flame-bench-sim-"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jupyter_flame.sim", "up", "--dir", str(tmp)],
                   check=True, capture_output=True)
    sim_up = time.perf_counter() - t0
    try:
        for line in (tmp / "notebook.env").read_text().splitlines():
            key, _, value = line.partition("=")
            os.environ[key] = value
        from kubernetes.client import rest

        counts: collections.Counter[str] = collections.Counter()
        original = rest.RESTClientObject.request

        def counting(self, method, url, *a, **k):  # type: ignore[no-untyped-def]
            path = url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0]
            kind = "/".join(p for p in path.split("/")[3:] if p)  # drop api/v1/namespaces/ns
            watch = "watch=true" in url or "watch=True" in url
            counts[f"{method} {kind}{' (watch)' if watch else ''}"] += 1
            return original(self, method, url, *a, **k)

        rest.RESTClientObject.request = counting  # type: ignore[method-assign]
        from jupyter_flame import Pool

        colds, requests = [], []
        breakdown: collections.Counter[str] = collections.Counter()
        for _ in range(args.repeat):
            counts.clear()
            pool = Pool(backend="kubernetes", max=1)
            t0 = time.perf_counter()
            pool.call(noop)
            colds.append(time.perf_counter() - t0)
            requests.append(sum(counts.values()))
            breakdown = collections.Counter(counts)
            pool.shutdown()
        with Pool("k8s-warm", backend="kubernetes", max=1) as kpool:
            kpool.call(noop)
            k_warm = time_calls(lambda: kpool.call(noop), args.n, 0.05)
        with Pool("local-warm", backend="local", max=1) as lpool:
            lpool.call(noop)
            l_warm = time_calls(lambda: lpool.call(noop), args.n, 0.05)
    finally:
        subprocess.run([sys.executable, "-m", "jupyter_flame.sim", "down", "--dir", str(tmp)],
                       capture_output=True)
    rows = [
        {"measure": "sim up (s)", "value": sim_up},
        {"measure": "pod cold start to first result, median (s)",
         "value": statistics.median(colds)},
        {"measure": "API requests per pool start + boot + first call",
         "value": statistics.median(requests)},
        {"measure": "warm call, kubernetes runner, median (ms)", "value": k_warm["median_ms"]},
        {"measure": "warm call, local runner, median (ms)", "value": l_warm["median_ms"]},
        {"measure": "warm call ratio kubernetes/local", "value":
         k_warm["median_ms"] / l_warm["median_ms"]},
    ]
    print(f"runner pods on the stand-in ({machine()})")
    print(table(rows, ["measure", "value"]))
    print("requests of the last boot:", dict(breakdown))
    save("kubernetes", rows + [{"requests": dict(breakdown)}])


if __name__ == "__main__":
    main()
