"""Single-record calls, this tree's ``keysplit serve`` against another's, same run.

    git archive REV keysplit | tar -x -C /tmp/base      # the tree to compare with
    .venv/bin/python -m benchmarks.ab_service_tail --base /tmp/base [--rounds 3000]
        [--clients this|own] [--like-goal] [--op enc|dec]

Issue 23's single-record row is a p99 (<= 2 ms), a tail that a few dozen calls cannot
show. This serves one keyring twice, by ``keysplit serve`` of this tree and of ``--base``
(the same options, default ``--workers``), and makes ``--rounds`` rounds of one
single-record call to each, the order alternating from round to round (``--like-goal``:
each call preceded by the goal rows' other impls against the same server, as
``bench_service`` interleaves them). ``--clients this`` drives both servers with this
tree's ``Client`` (the servers' difference alone); ``own`` gives each tree its own client
(imported as ``keysplit_base``). Printed: p50/p90/p99/max of each side's whole calls,
the per-round paired ratio's median, the client's thread CPU and the served processes'
CPU per call (``/proc``: every process serving that socket), and the load. With
``--base`` a copy of this tree, it is an A/A. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keysplit import Client
from keysplit.service import _wire as wire

from .ab_service_stream import _base_client, base_tree, both_served
from .bench_service import _Echo, _floor

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(sock: Path) -> float:
    """CPU seconds (user + system) of every process whose command line serves ``sock``."""
    total = 0
    want = str(sock).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if want not in fh.read():
                    continue
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after pid, comm)
    return total / _TICK


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a directory with keysplit/")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--workers", default=None, help="serve --workers (default: cores)")
    parser.add_argument("--clients", choices=("this", "own"), default="this")
    parser.add_argument("--op", choices=("enc", "dec"), default="enc")
    parser.add_argument("--like-goal", action="store_true")
    args = parser.parse_args()
    base = base_tree(parser, args.base)
    load = [os.getloadavg()[0]]
    with both_served(base, args.workers) as (sv, boot, local, t):
        cls = _base_client(base, t) if args.clients == "own" else Client
        socks = {"base": sv.tmp / "old.sock", "this": sv.tmp / "s.sock"}
        urls = {"base": boot.url, "this": sv.url}
        clients = {"base": cls(urls["base"], token=sv.token, timeout=300), "this": sv.client}
        subj, plain = ["user/0000"], [os.urandom(1024)]
        recs = local.encrypt_many(subj, plain)
        op = "encrypt_many" if args.op == "enc" else "decrypt_many"
        items = plain if args.op == "enc" else recs
        assert local.decrypt_many(subj, clients["base"].encrypt_many(subj, plain)) == plain
        assert local.decrypt_many(subj, clients["this"].encrypt_many(subj, plain)) == plain
        others: dict[str, list[Callable[[], object]]] = {"base": [], "this": []}
        closers: list[Any] = []
        if args.like_goal:  # the goal rows' other impls, each side against its own server
            echo = _Echo()
            closers.append(echo)
            here: Callable[[], list[bytes]] = functools.partial(
                local.encrypt_many if args.op == "enc" else local.decrypt_many, subj, items
            )
            request = wire.encode_frame({"context": None}, items, subj)
            for side in ("base", "this"):
                http = cls(urls[side], token=sv.token, timeout=300)
                http._frames = False
                cached = cls(urls[side], token=sv.token, timeout=300, cache_max_age=3600)
                closers += [http, cached]
                others[side] = [
                    here,
                    functools.partial(getattr(http, op), subj, items),
                    functools.partial(getattr(cached, op), subj, items),
                    _floor(echo, here, request),
                ]
        calls: dict[str, Callable[[], object]] = {
            side: functools.partial(getattr(c, op), subj, items) for side, c in clients.items()
        }
        for side in ("base", "this"):
            for fn in [calls[side], *others[side]]:
                for _ in range(20):
                    fn()
        wall: dict[str, list[float]] = {"base": [], "this": []}
        cpu: dict[str, list[int]] = {"base": [], "this": []}
        server = {k: -_cpu_of(s) for k, s in socks.items()}
        for r in range(args.rounds):
            order = ("base", "this") if r % 2 == 0 else ("this", "base")
            for side in order:
                for fn in others[side]:
                    fn()
                c0 = time.thread_time_ns()
                t0 = time.perf_counter()
                calls[side]()
                wall[side].append(time.perf_counter() - t0)
                cpu[side].append(time.thread_time_ns() - c0)
            if r % 500 == 0:
                load.append(os.getloadavg()[0])
        for k, s in socks.items():
            server[k] += _cpu_of(s)
        for c in closers:
            c.close()
        clients["base"].close()
    load.append(os.getloadavg()[0])
    n = args.rounds
    print(
        f"{args.op}, one record per call, {n} rounds, clients: {args.clients}"
        f"{', like the goal rows' if args.like_goal else ''}; workers {args.workers or 'default'}"
    )
    print(f"{'side':6s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}  client CPU  server CPU")
    for side in ("base", "this"):
        ws = [w * 1e6 for w in wall[side]]
        print(
            f"{side:6s} {statistics.median(ws):8.0f} {_pct(ws, 0.9):8.0f} {_pct(ws, 0.99):8.0f} "
            f"{max(ws):8.0f}  {statistics.median(cpu[side]) / 1e3:8.0f} us "
            f"{server[side] / n * 1e6:8.0f} us  (whole calls in us)"
        )
    paired = [t / b for b, t in zip(wall["base"], wall["this"], strict=True)]
    print(f"this/base time, per round: median {statistics.median(paired):.3f}")
    for q in (0.5, 0.9, 0.99):
        b, th = _pct(wall["base"], q), _pct(wall["this"], q)
        print(f"  p{round(q * 100)}: this/base {th / b:.3f}")
    print(f"load average (1 min) during the run: {min(load):.2f}-{max(load):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
