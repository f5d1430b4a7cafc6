"""Before/after: time two checkouts' batch key wrap interleaved in one process, with an A/A.

    mkdir /tmp/keysplit-before && git archive <rev> keysplit | tar -x -C /tmp/keysplit-before
    .venv/bin/python -m benchmarks.ab_keywrap /tmp/keysplit-before [--n 1000000] [--clock cpu]

Each round times before, after and after again (the A/A: how far two identical
implementations drift apart in this run), in a rotating order (harness.in_turn), so a
shared machine's load hits all three alike. ``--clock cpu`` is one thread's CPU time
(``time.thread_time_ns``, ``threads=1``): steadier under load, but blind to thread
hand-off; ``wall`` uses the default threads. Not a ``bench_*`` module: the harness does
not run it.
"""

from __future__ import annotations

import importlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from keysplit.hazmat import keywrap as current

from .ab_shamir import _load, parse_before_after
from .harness import in_turn


def main() -> int:
    args = parse_before_after(__doc__, 15)
    _load(args.before)  # imports the old checkout as keysplit_before
    before = importlib.import_module("keysplit_before.hazmat.keywrap")
    n = args.n
    clock = time.perf_counter_ns if args.clock == "wall" else time.thread_time_ns
    threads = None if args.clock == "wall" else 1
    rng = np.random.default_rng(1)
    kek = bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    keys = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    wrapped = current.wrap_batch(kek, keys).copy()
    assert np.array_equal(before.wrap_batch(kek, keys), wrapped)
    cases: dict[str, Callable[[Any], object]] = {
        "wrap_batch": lambda m: m.wrap_batch(kek, keys, threads=threads),
        "unwrap_batch": lambda m: m.unwrap_batch(kek, wrapped, threads=threads),
    }
    impls = {"before": before, "after": current, "after (A/A)": current}
    times: dict[tuple[str, str], list[int]] = {}
    load = os.getloadavg()[0]
    for rep in range(args.repeats + 1):
        for case, fn in cases.items():
            for name in in_turn(list(impls), rep):
                t0 = clock()
                fn(impls[name])
                if rep:  # the first round is a warm-up
                    times.setdefault((case, name), []).append(clock() - t0)
    print(
        f"n={n:,} clock={args.clock} threads={threads or 'default'} repeats={args.repeats} "
        f"load(1 min) {load:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| case | before M keys/s (median, min-max) | after | after (A/A) | after/before | A/A |")
    print("|---|---|---|---|---:|---:|")
    for case in cases:
        med = {}
        cells = []
        for name in impls:
            t = times[(case, name)]
            med[name] = n / statistics.median(t) * 1e3
            cells.append(f"{med[name]:.1f} ({n / max(t) * 1e3:.1f}-{n / min(t) * 1e3:.1f})")
        ratio = med["after"] / med["before"]
        aa = med["after (A/A)"] / med["after"]
        print(f"| {case} | {' | '.join(cells)} | {ratio:.2f}x | {aa:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
