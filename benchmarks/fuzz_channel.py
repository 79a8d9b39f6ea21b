"""The long fuzz of the channel (issue 15's figures); tests/test_channel_fuzz.py runs a short one.

    python benchmarks/fuzz_channel.py [--frames 100000] [--sockets 5000] [--seed 1]

For each mode (MAC-only, encrypted): ``--frames`` fuzzed frames through the real frame reader of
both directions (in memory), and ``--sockets`` fuzzed frames each on a fresh authenticated
loopback connection to the real listener (half towards the kernel's side, half towards the
runner's), with a real session beside them. Prints one table: frames, forgeries accepted,
frames unpickled, peak traced memory, time, and the outcomes by kind. See tests/channel_fuzz.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.channel_fuzz import FuzzReport, fuzz_reader, fuzz_sockets  # noqa: E402


def row(name: str, r: FuzzReport) -> str:
    return (f"| {name} | {r.frames:,} | {r.accepted_forgeries} | {r.unpickled} | "
            f"{r.peak_bytes / 2**20:.1f} MiB | {r.seconds:.1f} s |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--sockets", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    reports = {}
    for encrypt in (False, True):
        mode = "encrypted" if encrypt else "MAC only"
        reports[f"reader, {mode}"] = fuzz_reader(args.frames, args.seed, encrypt)
        reports[f"sockets, {mode}"] = asyncio.run(fuzz_sockets(args.sockets, args.seed, encrypt))
    print(f"# fuzz_channel --frames {args.frames} --sockets {args.sockets} --seed {args.seed}\n")
    print("| harness | fuzzed frames | forgeries accepted | unpickled | memory (reader: peak "
          "traced; sockets: RSS growth) | time |")
    print("|---|---|---|---|---|---|")
    for name, r in reports.items():
        print(row(name, r))
    print("\nOutcomes (all harnesses):\n")
    outcomes: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for r in reports.values():
        for k, v in r.errors.items():
            outcomes[k] = outcomes.get(k, 0) + v
        for k, v in r.by_kind.items():
            kinds[k] = kinds.get(k, 0) + v
    for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"- {k}: {v:,}")
    print("\nMutations: " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))
    bad = sum(r.accepted_forgeries + r.unpickled for r in reports.values())
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
