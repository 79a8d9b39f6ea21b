"""What encrypting the channel costs: AES-256-GCM frames against MAC-only frames, in one run.

    python benchmarks/bench_encryption.py [--quick]

Two measurements, each alternating its samples between the two modes so both see the same load:

* the channel alone (``bench_channel.py``'s persistent asyncio peer in a subprocess): a warm
  call after a 50 ms pause, back-to-back calls, and a 1 MiB / 100 MiB / 1 GiB uint8 array sent to
  the peer with its sum coming back;
* ``Pool.call`` on local runners (``Pool(encrypt=True)`` vs ``Pool(encrypt=False)``): the warm
  call after a 50 ms pause, as a user sees it.

Goals (issue 15): under 15% at 100 MiB, under 5% on the warm call.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_calls  # noqa: E402
from bench_channel import SIZES, ChannelBench, measure  # noqa: E402


async def channel_modes(n_warm: int, reps: dict[str, int]) -> dict[str, dict[str, Any]]:
    mac, aead = ChannelBench(encrypt=False), ChannelBench(encrypt=True)
    await mac.start()
    await aead.start()
    try:
        return await measure({"mac": mac.call, "aead": aead.call}, n_warm, reps)
    finally:
        await mac.close()
        await aead.close()


def pool_modes(n: int) -> dict[str, dict[str, float]]:
    from jupyter_flame import Pool

    pools = {m: Pool(f"bench-{m}", "local", encrypt=(m == "aead"), min=1) for m in ("mac", "aead")}
    try:
        for p in pools.values():
            p.call(operator.add, 1, 2)
        out: dict[str, list[dict[str, float]]] = {m: [] for m in pools}
        for _ in range(5):  # interleave blocks of samples between the two pools
            for m, p in pools.items():
                out[m].append(time_calls(lambda p=p: p.call(operator.add, 1, 2), n=n // 5))
        return {m: {"median_ms": sorted(r["median_ms"] for r in rs)[len(rs) // 2],
                    "p95_ms": max(r["p95_ms"] for r in rs)} for m, rs in out.items()}
    finally:
        for p in pools.values():
            p.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    n_warm = 20 if args.quick else 100
    reps = ({"1 MiB": 10, "100 MiB": 3, "1 GiB": 2} if args.quick
            else {"1 MiB": 60, "100 MiB": 15, "1 GiB": 7})
    res = asyncio.run(channel_modes(n_warm, reps))
    pool = pool_modes(50 if args.quick else 250)
    mac, aead = res["mac"], res["aead"]
    print(f"# bench_encryption ({platform.python_version()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"n_warm={n_warm}, reps={reps})\n")
    print("| metric | MAC only | encrypted (AES-256-GCM) | cost of encryption |")
    print("|---|---|---|---|")
    for key, name in (("warm", "channel: warm call after 50 ms pause"),
                      ("b2b", "channel: back-to-back call")):
        for i, stat in enumerate(("median", "p95")):
            m, a = mac[key][i] * 1e3, aead[key][i] * 1e3
            print(f"| {name}, {stat} (ms) | {m:.3f} | {a:.3f} | {100 * (a / m - 1):+.1f}% time |")
    for label, _ in SIZES:
        for suffix, what in (("", "median"), (" best", "best")):
            m, a = mac[label + suffix], aead[label + suffix]
            print(f"| channel: {label} array -> sum, {what} (GB/s) | {m:.2f} | {a:.2f} "
                  f"| {100 * (m / a - 1):+.1f}% time |")
    for stat in ("median_ms", "p95_ms"):
        m, a = pool["mac"][stat], pool["aead"][stat]
        print(f"| Pool.call (local runner) after 50 ms pause, {stat[:-3]} (ms) | {m:.3f} "
              f"| {a:.3f} | {100 * (a / m - 1):+.1f}% time |")


if __name__ == "__main__":
    main()
