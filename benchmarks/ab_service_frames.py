"""Same-run A/B of the key service's two transports for one client's batches: the Unix
socket's frame transport (``keysplit.Client``'s default) against HTTP (the same client with
frames off), with the in-process call as the baseline.

    .venv/bin/python -m benchmarks.ab_service_frames [--rounds 60] [--n 1000]
        [--workers 1] [--like-goal] [--in-turn]

A real ``keysplit serve --workers 1`` (bench_service's set-up). Each round calls the
in-process ``encrypt_many`` (or ``decrypt_many``), then the framed client, then the HTTP
client; the ratios are medians of the per-round ratios, so the drifting load of a shared
machine hits all three alike. CPU per call is also counted, which the load moves much
less than wall time: the client's (``time.thread_time``) and the serving processes'
(``/proc/PID/schedstat``, summed over the leader and its workers) around each call, as
medians. Not part of ``make bench``.

``--like-goal`` runs each round as ``bench_service``'s goal rows do (the data-key cache
client and the floor row after the HTTP client), and ``--workers`` sets the server's
process count (the goal rows run ``--workers`` = cores): with both, this tool reads what
the goal row reads, with its counters beside it. Without them a served process is warm
for every framed call (it served the HTTP call just before the in-process one), and the
in-process baseline follows two client calls instead of the floor row's identical call,
which is worth ~0.15 of the ratio (benchmarks/README.md, "0.40 in the goal row, 0.59 in the
frame A/B"). ``--in-turn`` rotates each round's order by one (``harness.in_turn``), as the goal
rows do since stop 40; without it the order is fixed, as they did before.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import time
from collections.abc import Callable
from functools import partial

from keysplit import Client
from keysplit.service import _wire as wire

from .bench_service import _bound, _Echo, _floor, served
from .harness import in_turn


def _cpu_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total


def _children(pid: int) -> list[int]:
    """The worker processes of the served leader ``pid`` (its children)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument(
        "--like-goal",
        action="store_true",
        help="each round as bench_service's goal rows: + the cached client and the floor",
    )
    parser.add_argument(
        "--in-turn", action="store_true", help="rotate each round's order by one (harness.in_turn)"
    )
    args = parser.parse_args()
    n = args.n
    with served("--workers", str(args.workers)) as sv, sv.local() as local:
        names = [f"user/{i:04d}" for i in range(n)]
        pts = [os.urandom(1024) for _ in range(64)]
        plain = [pts[i % 64] for i in range(n)]
        sv.client.encrypt_many(names, plain)
        recs = local.encrypt_many(names, plain)
        framed = Client(sv.url, token=sv.token, timeout=300)
        http = Client(sv.url, token=sv.token, timeout=300)
        http._frames = False
        cached = Client(sv.url, token=sv.token, timeout=300, cache_max_age=3600)
        echo = _Echo()
        assert framed.decrypt_many(names, framed.encrypt_many(names, plain)) == plain
        sock = framed._fconn().sock
        assert sock is not None
        leader = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        pids = [leader, *_children(leader)]
        print(
            f"batches of {n} 1 KiB records, {args.rounds} rounds, {len(pids)} server "
            f"process(es){', rounds as the goal rows' if args.like_goal else ''}"
            f"{', in turn' if args.in_turn else ''}; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        for op, items in (("encrypt", plain), ("decrypt", recs)):
            here = getattr(local, f"{op}_many")
            calls: dict[str, Callable[[], object]] = {
                "in process": partial(here, names, items),
                "frames": partial(getattr(framed, f"{op}_many"), names, items),
                "HTTP": partial(getattr(http, f"{op}_many"), names, items),
            }
            if args.like_goal:  # bench_service.run's impls, in its order
                calls["cached"] = partial(getattr(cached, f"{op}_many"), names, items)
                request = wire.encode_frame({"context": None}, items, names)
                calls["floor"] = _floor(echo, _bound(here, names, items), request)
            wall: dict[str, list[float]] = {k: [] for k in calls}
            mine: dict[str, list[int]] = {k: [] for k in calls}
            theirs: dict[str, list[int]] = {k: [] for k in calls}
            for f in calls.values():
                f()
            for r in range(args.rounds):
                for k in in_turn(list(calls), r) if args.in_turn else calls:
                    f = calls[k]
                    s0, c0, t = _cpu_ns(pids), time.thread_time_ns(), time.perf_counter()
                    f()
                    wall[k].append(time.perf_counter() - t)
                    mine[k].append(time.thread_time_ns() - c0)
                    theirs[k].append(_cpu_ns(pids) - s0)
            base = wall["in process"]
            ratio = {
                k: statistics.median(a / b for a, b in zip(base, wall[k], strict=True))
                for k in ("frames", "HTTP")
            }
            gain = statistics.median(
                b / a for a, b in zip(wall["frames"], wall["HTTP"], strict=True)
            )
            print(
                f"{op}: vs in process (median of per-round ratios): frames {ratio['frames']:.3f}, "
                f"HTTP {ratio['HTTP']:.3f}; frames faster than HTTP {gain:.3f}x"
            )
            for k in calls:
                client = statistics.median(mine[k]) / 1e3
                server = statistics.median(theirs[k]) / 1e3
                print(
                    f"  {op} {k:10s} CPU per call (medians): client {client:6.0f} us, "
                    f"server {server:6.0f} us; wall {statistics.median(wall[k]) * 1e6:6.0f} us"
                )
        echo.close()
        cached.close()
        framed.close()
        http.close()
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
