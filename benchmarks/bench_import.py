"""Time of ``%load_ext jupyter_flame`` in a fresh IPython, against ``%load_ext`` of a trivial
extension (``autoreload``) in the same run.

    python benchmarks/bench_import.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _common import machine, save, table

CODE = """
import time
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
t0 = time.perf_counter()
ip.run_line_magic('load_ext', {ext!r})
print(time.perf_counter() - t0)
"""


def measure(ext: str) -> float:
    out = subprocess.run([sys.executable, "-c", CODE.format(ext=ext)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for ext in ("autoreload", "jupyter_flame"):
        rows.append({"extension": ext, "median_ms": statistics.median(
            [measure(ext) for _ in range(args.repeat)]) * 1e3})
    print(f"%load_ext in a fresh IPython ({machine()})")
    print(table(rows, ["extension", "median_ms"]))
    save("import", rows)


if __name__ == "__main__":
    main()
