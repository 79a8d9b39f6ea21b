"""Empty ``%%flame`` cell vs empty plain cell, through a real kernel, in one run; plus the
re-run of a cell that reads an unchanged large array (incremental shipping).

    python benchmarks/bench_cell.py [--n 100] [--mib 1024]

Time is measured as a front end sees it: from execute_request to the kernel going idle.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import machine, save, stats, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.kernel_harness import Kernel  # noqa: E402


def timed(k: Kernel, code: str, n: int, pause: float = 0.05) -> dict[str, float]:
    samples = []
    for _ in range(n):
        time.sleep(pause)
        t0 = time.perf_counter()
        res = k.run(code)
        samples.append(time.perf_counter() - t0)
        assert res.status == "ok", res.traceback_text()
    return stats(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--mib", type=int, default=1024)
    args = ap.parse_args()
    k = Kernel()
    try:
        k.run("%%flame\npass\n")
        for _ in range(5):
            k.run("pass")
        plain = timed(k, "pass", args.n)
        flame = timed(k, "%%flame\npass\n", args.n)
        rows = [{"cell": "plain `pass`", **plain},
                {"cell": "`%%flame` + `pass`", **flame}]
        extra = flame["median_ms"] - plain["median_ms"]
        res = k.run(f"import numpy as np\nbig = np.ones({args.mib} * 2**20, dtype=np.uint8)")
        assert res.status == "ok", res.traceback_text()
        t0 = time.perf_counter()
        res = k.run("%%flame\ns = int(big[::4096].sum())\n")
        first = time.perf_counter() - t0
        assert res.status == "ok", res.traceback_text()  # a failed cell's time means nothing
        t0 = time.perf_counter()
        res = k.run("%%flame\ns = int(big[::4096].sum())\n")
        again = time.perf_counter() - t0
        assert res.status == "ok", res.traceback_text()
        rows.append({"cell": f"reads a new {args.mib} MiB array", "median_ms": first * 1e3, "n": 1})
        rows.append({"cell": "same cell, array unchanged", "median_ms": again * 1e3, "n": 1})
        k.run("%flame shutdown --all")
    finally:
        k.shutdown()
    print(f"cell round trip through a real kernel ({machine()})")
    print(table(rows, ["cell", "median_ms", "p95_ms", "n"]))
    print(f"%%flame overhead over a plain cell: {extra:.2f} ms (median)")
    print(f"re-run with the array cached: {again / first:.3f} of the first run")
    save("cell", rows + [{"flame_overhead_ms": extra, "rerun_ratio": again / first}])


if __name__ == "__main__":
    main()
