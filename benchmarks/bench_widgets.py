"""What the widgets cost, through a real kernel, in one run.

    python benchmarks/bench_widgets.py [--n 60] [--runners 50] [--seconds 10]

1. ``%%flame`` cell overhead with the lifecycle widget vs ``--quiet`` (a warm pool; front-end
   view: execute request to idle), interleaved so drift hits both alike.
2. The pool dashboard over ``--runners`` busy local runners: the kernel's CPU time per second
   and the comm messages per second it sends, with the dashboard shown vs not shown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil
from _common import machine, save, stats, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.kernel_harness import Kernel  # noqa: E402


def cell_overhead(k: Kernel, n: int) -> list[dict[str, object]]:
    k.run("%%flame --pool wb\npass\n")
    widget, quiet = [], []
    for _ in range(n):
        for code, out in (("%%flame --pool wb\npass\n", widget),
                          ("%%flame --pool wb --quiet\npass\n", quiet)):
            time.sleep(0.05)
            t0 = time.perf_counter()
            res = k.run(code)
            out.append(time.perf_counter() - t0)
            assert res.status == "ok", res.traceback_text()
    return [{"case": "%%flame pass, --quiet", **stats(quiet)},
            {"case": "%%flame pass, lifecycle widget", **stats(widget)}]


def drain(k: Kernel, seconds: float) -> int:
    """Comm messages on IOPub during ``seconds``."""
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msg = k.kc.get_iopub_msg(timeout=0.2)
        except Exception:
            continue
        if msg["msg_type"] == "comm_msg":
            count += 1
    return count


def dashboard_cost(k: Kernel, runners: int, seconds: float) -> list[dict[str, object]]:
    res = k.run(f"from jupyter_flame import Pool\nimport time\n"
                f"busy = Pool('busy', min={runners}, max={runners}, boot_timeout=300)\n"
                f"futs = [busy.submit(time.sleep, 600) for _ in range({runners})]\n"
                f"t0 = time.time()\n"
                f"while sum(r['load'] for r in busy.status()['runners']) < {runners}:\n"
                f"    time.sleep(0.5)\n"
                f"    assert time.time() - t0 < 600\n")
    assert res.status == "ok", res.traceback_text()
    proc = psutil.Process(k.pid)
    rows = []
    for case, code in (("no dashboard", None), ("dashboard shown", "busy")):
        if code:
            assert k.run(code).status == "ok"
        drain(k, 1.0)
        cpu0 = sum(proc.cpu_times()[:2])
        msgs = drain(k, seconds)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        rows.append({"case": f"{runners} busy runners, {case}",
                     "kernel_cpu_pct": 100 * cpu / seconds, "comm_msgs_per_s": msgs / seconds})
    k.run("busy.shutdown(cancel_futures=True)")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--runners", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    k = Kernel()
    try:
        cells = cell_overhead(k, args.n)
        dash = dashboard_cost(k, args.runners, args.seconds)
        k.run("%flame shutdown")
    finally:
        k.shutdown()
    added = float(cells[1]["median_ms"]) - float(cells[0]["median_ms"])  # type: ignore[arg-type]
    print(f"widget costs through a real kernel ({machine()})")
    print(table(cells, ["case", "median_ms", "p95_ms", "n"]))
    print(f"lifecycle widget adds {added:.2f} ms per cell (median; goal < 3 ms)")
    print(table(dash, ["case", "kernel_cpu_pct", "comm_msgs_per_s"]))
    save("widgets", cells + dash + [{"widget_added_ms": added}])


if __name__ == "__main__":
    main()
