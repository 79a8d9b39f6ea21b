"""Ship a numpy array to a warm runner and get its sum back: jupyter-flame vs the raw baseline.

    python benchmarks/bench_transfer.py [--sizes 1,100,1024] [--repeat 3]

Sizes in MiB. Throughput = array bytes / round-trip seconds (best of ``--repeat``). For each
size, one random array (not the one used for the warm-up check) is sent ``--repeat`` times with
``Pool.call``, whose arguments are serialized and sent in full on every call (the incremental
cache is for ``%%flame`` cells only, so it never applies here). One table: raw vs jupyter-flame.
The cached re-run of an unchanged array through a real cell is measured by ``bench_cell.py``.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import best, machine, save, table


def total(a: np.ndarray) -> float:
    return float(a.sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,100,1024")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    from rawbase import RawBaseline

    from jupyter_flame import Pool

    rows = []
    raw = RawBaseline()
    raw.start()
    with Pool("bench-transfer", max=1) as pool:
        pool.call(total, np.ones(8, dtype=np.uint8))
        for mib in sizes:
            arrays = [np.random.default_rng(i).integers(0, 255, mib * 2**20, dtype=np.uint8)
                      for i in range(2)]
            expect = float(arrays[0].sum())
            assert raw.send_array_sum(arrays[0]) == expect
            assert pool.call(total, arrays[0]) == expect
            fresh = arrays[1]
            t_raw = best(lambda a=fresh: raw.send_array_sum(a), args.repeat)
            t_flame = best(lambda a=fresh: pool.call(total, a), args.repeat)
            nbytes = arrays[1].nbytes
            rows.append({"size": f"{mib} MiB", "raw_GBps": nbytes / t_raw / 1e9,
                         "flame_GBps": nbytes / t_flame / 1e9, "raw_ms": t_raw * 1e3,
                         "flame_ms": t_flame * 1e3, "ratio": t_raw / t_flame})
            del arrays, fresh
    raw.close()
    print(f"array -> runner -> sum back ({machine()})")
    print(table(rows, ["size", "raw_GBps", "flame_GBps", "ratio", "raw_ms", "flame_ms"]))
    save("transfer", rows)


if __name__ == "__main__":
    main()
