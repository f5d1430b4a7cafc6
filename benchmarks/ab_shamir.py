"""Before/after: time two checkouts' Shamir cores interleaved in one process.

    mkdir /tmp/keysplit-before && git archive <rev> keysplit | tar -x -C /tmp/keysplit-before
    .venv/bin/python -m benchmarks.ab_shamir /tmp/keysplit-before [--n 1000000] [--clock cpu]

Interleaving the two versions call by call makes a shared machine's load hit both alike;
``--clock cpu`` (thread CPU time, single thread) is steadier than wall time under load.
Not a ``bench_*`` module: the harness does not run it.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from keysplit.hazmat import shamir as current


def _load(checkout: Path) -> ModuleType:
    pkg = checkout / "keysplit"
    spec = importlib.util.spec_from_file_location(
        "keysplit_before", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: no keysplit package in {checkout}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["keysplit_before"] = module
    spec.loader.exec_module(module)
    try:  # the module moved to keysplit/hazmat/ (cc32565); older checkouts have it at the top
        return importlib.import_module("keysplit_before.hazmat.shamir")
    except ModuleNotFoundError:
        return importlib.import_module("keysplit_before.shamir")


def parse_before_after(doc: str, repeats: int) -> argparse.Namespace:
    """The command line of a before/after script: ``before [--n] [--repeats] [--clock]``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("before", type=Path, help="checkout of the older revision")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    return parser.parse_args()


def main() -> int:
    args = parse_before_after(__doc__, 13)
    before = _load(args.before)
    n = args.n
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    threads = None if args.clock == "wall" else 1
    secrets = np.random.default_rng(1).integers(0, 256, (n, 16), dtype=np.uint8)
    out = np.zeros((5, n, 16), np.uint8)
    ys = np.ascontiguousarray(current.split_batch(secrets, 3, 5)[[1, 3, 4]])
    cases: dict[str, Callable[[ModuleType], object]] = {
        "split 3-of-5": lambda m: m.split_batch(secrets, 3, 5, threads=threads),
        "split 3-of-5 out=": lambda m: m.split_batch(secrets, 3, 5, out=out, threads=threads),
        "combine x=2,4,5": lambda m: m.combine_batch([2, 4, 5], ys, threads=threads),
    }
    times: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats + 1):
        for case, fn in cases.items():
            for name, mod in (("before", before), ("after", current)):
                t0 = clock()
                fn(mod)
                if rep:  # the first round is a warm-up
                    times.setdefault((case, name), []).append(clock() - t0)
    print(f"n={n:,} clock={args.clock} threads={threads or 'default'} repeats={args.repeats}")
    print("| case | before M keys/s (median, min-max) | after | ratio |")
    print("|---|---|---|---:|")
    for case in cases:
        med = {}
        cells = []
        for name in ("before", "after"):
            t = times[(case, name)]
            med[name] = n / statistics.median(t) / 1e6
            cells.append(f"{med[name]:.1f} ({n / max(t) / 1e6:.1f}-{n / min(t) / 1e6:.1f})")
        print(f"| {case} | {cells[0]} | {cells[1]} | {med['after'] / med['before']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
