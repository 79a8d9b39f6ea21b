"""Big results back from a local runner: time and the runner's peak memory.

    python benchmarks/bench_big_results.py [--mib 3072]

For a bytes, a bytearray and a numpy array of ``--mib`` MiB made by ``pool.call`` on a fresh
local runner: seconds until the value is in the kernel (its making included) and the runner's
peak RSS (``VmHWM``) over what it had before, as a multiple of the value. Issue 15 found
3 GiB of bytes taking 22-32 s with a runner peak of 3x; the baseline row is the time to make
the value alone, measured in the runner of the same run.
"""

from __future__ import annotations

import argparse
import os
import time


def _status(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def make_bytes(n: int) -> bytes:
    return b"x" * n


def make_bytearray(n: int) -> bytearray:
    return bytearray(n)


def make_array(n: int) -> object:
    import numpy as np

    return np.ones(n, np.uint8)


def timed_make(make: object, n: int) -> float:
    t = time.perf_counter()
    make(n)  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    from jupyter_flame import Pool

    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=3072)
    args = ap.parse_args()
    n = args.mib << 20
    print(f"# bench_big_results --mib {args.mib} ({os.cpu_count()} cpus)\n")
    print("| result | seconds to the kernel | of which making it on the runner | runner peak "
          "over base | x value |")
    print("|---|---|---|---|---|")
    for kind, fn in (("bytes", make_bytes), ("bytearray", make_bytearray),
                     ("array", make_array)):
        with Pool(f"make-{kind}", "local") as pool:  # its own runner: VmHWM stays clean
            make = pool.call(timed_make, fn, n)
        with Pool(f"big-{kind}", "local") as pool:
            pid = pool.call(os.getpid)
            base = _status(pid, "VmRSS")
            t = time.perf_counter()
            value = pool.call(fn, n)
            took = time.perf_counter() - t
            peak = _status(pid, "VmHWM") - base
            del value
        print(f"| {kind} | {took:.2f} | {make:.2f} | {peak} MiB | {peak / args.mib:.2f} |")


if __name__ == "__main__":
    main()
