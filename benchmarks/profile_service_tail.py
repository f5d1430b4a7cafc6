"""What makes a slow single-record call slow: per-call timestamps on both ends, GC included.

    .venv/bin/python -m benchmarks.profile_service_tail [--calls 3000] [--workers 2]
        [--like-goal] [--op enc|dec] [--top 30]

Issue 23's single-record row is a p99 (<= 2 ms). This serves a keyring as bench_service
does (``keysplit serve --workers N``, unsealed remotely), wraps a few of the served
program's functions with timestamps (``time.monotonic_ns``, one clock for both processes,
and the served thread's CPU time around ``KeyService.respond``), records every garbage
collection in the client and in every served process (``gc.callbacks``), then makes
``--calls`` single-record calls over the frame transport (``--like-goal``: each between the
goal rows' other impls, in turn, as ``bench_service`` runs them). It prints the
distribution of each step of a call (client encode, server wake-up, respond, answer trip,
client decode), then the slowest calls with their steps and the collections that
overlapped them. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keysplit import Client
from keysplit.service import _wire as wire
from keysplit.service import client as client_mod

from .bench_service import FLOOR, HTTP_ONLY, SERVE, _Echo, _floor, served
from .harness import in_turn

_TIMED = """
import gc, json, os, sys, time
import keysplit.service._frames as frames, keysplit.service.core as core
log = []
mono, cpu = time.monotonic_ns, time.thread_time_ns

def on_gc(phase, info):
    log.append(("gc" + phase[:3], mono(), info["generation"], os.getpid(), cpu()))
gc.callbacks.append(on_gc)

first = frames.FrameProtocol.buffer_updated
def buffer_updated(self, n):
    if self._buf is None and self._got == 0:
        log.append(("wake", mono(), 0, os.getpid()))
    return first(self, n)
frames.FrameProtocol.buffer_updated = buffer_updated

respond = core.KeyService.respond
def timed_respond(self, req):
    t, c = mono(), cpu()
    r = respond(self, req)
    log.append(("respond", t, mono(), cpu() - c, os.getpid()))
    return r
core.KeyService.respond = timed_respond

def dump():
    sizes = [len(gc.get_objects(g)) for g in range(3)] + [gc.get_freeze_count()]
    log.append(("heap", mono(), sizes, os.getpid()))
    with open(LOG + "." + str(os.getpid()), "w") as fh:
        json.dump(log, fh)
real_exit = os._exit
def _exit(code):
    dump()
    real_exit(code)
os._exit = _exit
try:
    exec(SERVE)
except SystemExit:
    pass
finally:
    dump()
"""

Event = list[Any]


@contextmanager
def _client_timed(log: list[Event]) -> Iterator[None]:
    """Timestamps around the frame connection's send and first read, and the client's GCs."""
    fc = client_mod._FrameConn
    saved = (fc.send, fc.read)

    def send(self: Any, parts: list[Any]) -> None:
        log.append(["send", time.monotonic_ns()])
        saved[0](self, parts)

    def read(self: Any, k: int) -> bytes:
        r = saved[1](self, k)
        if k == wire.FRAME_ANSWER.size:
            log.append(["answer", time.monotonic_ns()])
        return r

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        log.append(
            [
                "gc" + phase[:3],
                time.monotonic_ns(),
                info["generation"],
                os.getpid(),
                time.thread_time_ns(),
            ]
        )

    fc.send, fc.read = send, read  # type: ignore[method-assign]
    import gc

    gc.callbacks.append(on_gc)
    try:
        yield
    finally:
        fc.send, fc.read = saved  # type: ignore[method-assign]
        gc.callbacks.remove(on_gc)


def _gcs(events: list[Event]) -> list[tuple[int, int, int, str, int]]:
    """(start, stop, generation, where, thread CPU ns) of every collection in ``events``."""
    out, open_ = [], {}
    for e in sorted(events, key=lambda e: e[1]):
        if e[0] == "gcsta":
            open_[e[3]] = (e[1], e[2], e[4])
        elif e[0] == "gcsto" and e[3] in open_:
            t, g, c = open_.pop(e[3])
            out.append((t, e[1], g, str(e[3]), e[4] - c))
    return out


def _between(events: list[Event], t0: int, t1: int) -> list[Event]:
    """The events of ``events`` (sorted by time) stamped from ``t0`` to ``t1``."""
    lo = bisect.bisect_left(events, t0, key=lambda e: e[1])
    hi = bisect.bisect_right(events, t1, key=lambda e: e[1])
    return events[lo:hi]


def _steps(
    call: tuple[int, int], mine: list[Event], theirs: list[Event]
) -> dict[str, float] | None:
    """The steps of one call (us) from the events between its start and end."""
    t0, t1 = call
    c = {e[0]: e for e in reversed(_between(mine, t0, t1))}
    s = {e[0]: e for e in reversed(_between(theirs, t0, t1))}
    if not {"send", "answer"} <= c.keys() or not {"wake", "respond"} <= s.keys():
        return None
    us = 1e-3
    resp = s["respond"]
    return {
        "client: until send": (c["send"][1] - t0) * us,
        "server wake-up after send": (s["wake"][1] - c["send"][1]) * us,
        "server: head read until respond": (resp[1] - s["wake"][1]) * us,
        "server: respond (wall)": (resp[2] - resp[1]) * us,
        "server: respond (thread CPU)": resp[3] * us,
        "answer's trip, until read": (c["answer"][1] - resp[2]) * us,
        "client: read and decode": (t1 - c["answer"][1]) * us,
        "whole call": (t1 - t0) * us,
    }


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--op", choices=("enc", "dec"), default="enc")
    parser.add_argument("--like-goal", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--serve", default=SERVE, help="the served program (another tree's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kst", dir="/tmp") as t:
        log_path = Path(t) / "server.json"
        code = _TIMED.replace("SERVE", repr(args.serve)).replace("LOG", repr(str(log_path)))
        mine: list[Event] = []
        calls: list[tuple[int, int]] = []
        with served("--workers", str(args.workers), code=code) as sv, sv.local() as local:
            client = sv.client
            names = [f"user/{i:04d}" for i in range(1000)]
            client.encrypt_many(names, [b"x"] * len(names))
            pts = [os.urandom(1024) for _ in range(64)]
            subj, plain = ["user/0000"], [pts[0]]
            recs = local.encrypt_many(subj, plain)
            if args.op == "enc":
                here: Callable[[], object] = lambda: local.encrypt_many(subj, plain)  # noqa: E731
                remote: Callable[[], object] = lambda: client.encrypt_many(subj, plain)  # noqa: E731
                items = plain
            else:
                here = lambda: local.decrypt_many(subj, recs)  # noqa: E731
                remote = lambda: client.decrypt_many(subj, recs)  # noqa: E731
                items = recs
            others: list[tuple[str, Callable[[], object]]] = []
            if args.like_goal:
                http = Client(sv.url, token=sv.token, timeout=300)
                http._frames = False
                cached = Client(sv.url, token=sv.token, timeout=300, cache_max_age=3600)
                echo = _Echo()
                op = "encrypt_many" if args.op == "enc" else "decrypt_many"
                request = wire.encode_frame({"context": None}, items, subj)
                others = [
                    ("in process", here),
                    (HTTP_ONLY, lambda: getattr(http, op)(subj, items)),
                    ("cached", lambda: getattr(cached, op)(subj, items)),
                    (FLOOR, _floor(echo, here, request)),  # type: ignore[arg-type]
                ]
            impls: list[tuple[str, Callable[[], object]]] = [("frames", remote), *others]
            for _, fn in impls:
                fn()
            with _client_timed(mine):
                for i in range(args.calls):
                    for name, fn in in_turn(impls, i):
                        if name != "frames":
                            fn()
                            continue
                        t0 = time.monotonic_ns()
                        fn()
                        calls.append((t0, time.monotonic_ns()))
            load = os.getloadavg()[0]
            if args.like_goal:
                http.close()
                cached.close()
                echo.close()
        theirs: list[Event] = []
        for p in Path(t).glob("server.json.*"):
            theirs.extend(json.loads(p.read_text()))
    theirs.sort(key=lambda e: e[1])
    mine.sort(key=lambda e: e[1])
    start, end = calls[0][0], calls[-1][1]
    gcs = [g for g in _gcs(mine) + _gcs(theirs) if start <= g[0] <= end]
    for e in theirs:
        if e[0] == "heap":
            print(f"served process {e[3]} at its exit: objects in gen 0/1/2, frozen: {e[2]}")
    client_pid = str(os.getpid())
    rows = [(c, s) for c in calls if (s := _steps(c, mine, theirs)) is not None]
    print(
        f"{args.op}, one record per call, {len(rows)} of {len(calls)} calls timed; "
        f"--workers {args.workers}{' --like-goal' if args.like_goal else ''}; load {load:.2f}"
    )
    keys = list(rows[0][1])
    print(f"{'step (us)':36s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}")
    for k in keys:
        xs = [s[k] for _, s in rows]
        print(
            f"{k:36s} {statistics.median(xs):8.1f} {_pct(xs, 0.9):8.1f} "
            f"{_pct(xs, 0.99):8.1f} {max(xs):8.1f}"
        )
    for where in ("client", "server"):
        mine_gc = [g for g in gcs if (g[3] == client_pid) == (where == "client")]
        for gen in (0, 1, 2):
            d = [(b - a) / 1e3 for a, b, g, _, _ in mine_gc if g == gen]
            cpu = [c / 1e3 for _, _, g, _, c in mine_gc if g == gen]
            if d:
                print(
                    f"{where} gen-{gen} collections: {len(d)}, wall median "
                    f"{statistics.median(d):.0f} max {max(d):.0f} us; CPU median "
                    f"{statistics.median(cpu):.0f}"
                    f" max {max(cpu):.0f} us"
                )
    whole = sorted(rows, key=lambda r: -r[1]["whole call"])
    p99 = _pct([s["whole call"] for _, s in rows], 0.99)
    slow = [r for r in rows if r[1]["whole call"] >= p99]
    hit = 0
    for (t0, t1), _ in slow:
        if any(a < t1 and b > t0 for a, b, *_ in gcs):
            hit += 1
    print(f"calls at or over the p99 ({p99:.0f} us): {len(slow)}, with a GC inside: {hit}")
    print(f"slowest {args.top} (us): " + ", ".join(k.split(":")[0][:6] for k in keys))
    for (t0, t1), s in whole[: args.top]:
        inside = [
            f"{'C' if w == client_pid else 'S'}g{g}:{(b - a) / 1e3:.0f}/{c / 1e3:.0f}"
            for a, b, g, w, c in gcs
            if a < t1 and b > t0
        ]
        print(" ".join(f"{s[k]:7.0f}" for k in keys) + "  " + " ".join(inside))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
