"""One client's batch, this tree against another, same run (``-m benchmarks.ab_service_stream``).

    git archive REV keysplit | tar -x -C /tmp/base      # the tree to compare with
    .venv/bin/python -m benchmarks.ab_service_stream --base /tmp/base [--repeats 9]

Issue 23 wants one ``keysplit.Client`` doing ``encrypt_many`` of 1,000 1 KiB records at
>= 0.5x the in-process call. This serves one keyring twice, by ``keysplit serve`` of this
tree and of ``--base`` (the same options, default ``--workers``), and drives both from
one process: this tree's ``Client`` and the base tree's (imported as ``keysplit_base``),
each call preceded by the in-process ``encrypt_many``/``decrypt_many`` of the same batch,
as bench_service interleaves them (the in-process call's garbage is part of what a client
call meets). The order of the two clients alternates from round to round. Each repeat is
``--rounds`` rounds; printed per repeat: the median whole call of each client and its
ratio to the in-process median of the same repeat, then the median over the repeats, and
the load average. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from keysplit import Client, UnsealedKeyring

from .bench_service import SERVE, Served, _aggregate, _unsealed, served

N = 1000  # bench_service.SCALE_BATCH too


def _base_client(base: Path, tmp: Path) -> Any:
    """The ``Client`` class of the tree in ``base``, imported as ``keysplit_base``."""
    shutil.copytree(base / "keysplit", tmp / "keysplit_base")
    sys.path.insert(0, str(tmp))
    try:
        return importlib.import_module("keysplit_base.service.client").Client
    finally:
        sys.path.remove(str(tmp))


def base_tree(parser: argparse.ArgumentParser, base: Path) -> Path:
    """``--base`` resolved, or the parser's error if it holds no keysplit package."""
    base = base.resolve()
    if not (base / "keysplit" / "__init__.py").is_file():
        parser.error(f"{base} has no keysplit package")
    return base


@contextmanager
def both_served(
    base: Path, workers: str | None
) -> Iterator[tuple[Served, Client, UnsealedKeyring, Path]]:
    """One keyring served twice, by this tree (``served``: ``s.sock``) and by ``base``
    (``old.sock``), with ``--workers`` if given: (this tree's, the base's client (its
    connection closed: the URL), the keyring unsealed in process, a scratch directory)."""
    extra = ("--workers", workers) if workers else ()
    old_serve = f"import sys; sys.path.insert(0, {str(base)!r}); " + SERVE
    with (
        tempfile.TemporaryDirectory(prefix="ksab", dir="/tmp") as t,
        served(*extra) as sv,
        _unsealed(
            sv.keyring, sv.shares, sv.token, sv.tmp / "old.sock", *extra, code=old_serve
        ) as boot,
        sv.local() as local,
    ):
        boot.close()
        yield sv, boot, local, Path(t)


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a directory with keysplit/")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workers", default=None, help="serve --workers (default: cores)")
    parser.add_argument("--ops", default="encrypt,decrypt")
    parser.add_argument(
        "--clients",
        default="",
        help="also client processes at once, e.g. 1,4 (bench_service's scaling rows)",
    )
    parser.add_argument("--secs", type=float, default=1.5, help="per scaling measurement")
    args = parser.parse_args()
    base = base_tree(parser, args.base)
    load = [os.getloadavg()[0]]
    with both_served(base, args.workers) as (sv, boot, local, t):
        old = _base_client(base, t)(boot.url, token=sv.token, timeout=300)
        new = sv.client
        names = [f"user/{i:04d}" for i in range(N)]
        pts = [os.urandom(1024) for _ in range(64)]
        plain = [pts[i % 64] for i in range(N)]
        recs = local.encrypt_many(names, plain)
        assert local.decrypt_many(names, new.encrypt_many(names, plain)) == plain
        assert local.decrypt_many(names, old.encrypt_many(names, plain)) == plain
        assert new.decrypt_many(names, recs) == old.decrypt_many(names, recs) == plain
        ops: dict[str, tuple[Callable[[], object], Callable[[Any], object]]] = {
            "encrypt": (
                lambda: local.encrypt_many(names, plain),
                lambda c: c.encrypt_many(names, plain),
            ),
            "decrypt": (
                lambda: local.decrypt_many(names, recs),
                lambda c: c.decrypt_many(names, recs),
            ),
        }
        clients = {"base": old, "this": new}
        print(f"batches of {N:,} 1 KiB records; {args.repeats} repeats of {args.rounds} rounds")
        for op in args.ops.split(","):
            here, remote = ops[op]
            for c in clients.values():
                here()
                remote(c)
            per: dict[str, list[float]] = {k: [] for k in ("base", "this", "ratio b", "ratio t")}
            for rep in range(args.repeats):
                times: dict[str, list[float]] = {"here": [], "base": [], "this": []}
                for r in range(args.rounds):
                    order = ("base", "this") if (r + rep) % 2 == 0 else ("this", "base")
                    for name in order:
                        times["here"].append(_timed(here))
                        times[name].append(_timed(partial(remote, clients[name])))
                med = {k: statistics.median(v) for k, v in times.items()}
                per["base"].append(med["base"])
                per["this"].append(med["this"])
                per["ratio b"].append(med["here"] / med["base"])
                per["ratio t"].append(med["here"] / med["this"])
                print(
                    f"  {op} repeat {rep + 1}: in-process {med['here'] * 1e6:6.0f} us, "
                    f"base {med['base'] * 1e6:6.0f} us ({per['ratio b'][-1]:.3f}x), "
                    f"this {med['this'] * 1e6:6.0f} us ({per['ratio t'][-1]:.3f}x), "
                    f"this/base time {med['this'] / med['base']:.3f}"
                )
                load.append(os.getloadavg()[0])
            m = {k: statistics.median(v) for k, v in per.items()}
            faster = [b / t for b, t in zip(per["base"], per["this"], strict=True)]
            print(
                f"{op}: medians of {args.repeats} repeats: base {m['base'] * 1e6:.0f} us "
                f"({m['ratio b']:.3f}x in-process), this {m['this'] * 1e6:.0f} us "
                f"({m['ratio t']:.3f}x); base/this time {statistics.median(faster):.3f} "
                f"(min {min(faster):.3f}, max {max(faster):.3f})"
            )
        for k in [int(x) for x in args.clients.split(",") if x]:
            rates: dict[str, list[float]] = {"base": [], "this": []}
            classes = {"base": type(old), "this": type(new)}
            urls = {"base": old.url, "this": new.url}
            for rep in range(args.repeats):
                order = ("base", "this") if rep % 2 == 0 else ("this", "base")
                for name in order:
                    got = _aggregate(urls[name], sv.token, k, args.secs, classes[name])
                    rates[name].append(got)
                load.append(os.getloadavg()[0])
                print(
                    f"  {k} client processes, repeat {rep + 1}: base {rates['base'][-1]:,.0f}"
                    f" rec/s, this {rates['this'][-1]:,.0f} rec/s"
                )
            gain = [t / b for b, t in zip(rates["base"], rates["this"], strict=True)]
            print(
                f"{k} client processes: medians of {args.repeats}: base "
                f"{statistics.median(rates['base']):,.0f} rec/s, this "
                f"{statistics.median(rates['this']):,.0f} rec/s; this/base "
                f"{statistics.median(gain):.3f} (min {min(gain):.3f}, max {max(gain):.3f})"
            )
        old.close()
    print(f"load average (1 min) during the run: {min(load):.2f}-{max(load):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
