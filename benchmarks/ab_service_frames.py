"""Same-run A/B of the key service's two transports for one client's batches: the Unix
socket's frame transport (``keysplit.Client``'s default) against HTTP (the same client with
frames off), with the in-process call as the baseline.

    .venv/bin/python -m benchmarks.ab_service_frames [--rounds 60] [--n 1000]

A real ``keysplit serve --workers 1`` (bench_service's set-up). Each round calls the
in-process ``encrypt_many`` (or ``decrypt_many``), then the framed client, then the HTTP
client; the ratios are medians of the per-round ratios, so the drifting load of a shared
machine hits all three alike. CPU per call is also counted, which the load moves much
less than wall time: the client's (``time.thread_time``) and the serving process's
(``/proc/PID/schedstat``) around each call, as medians. Not part of ``make bench``.
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

from .bench_service import served


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    n = args.n
    with served("--workers", "1") as sv, sv.local() as local:
        names = [f"user/{i:04d}" for i in range(n)]
        pts = [os.urandom(1024) for _ in range(64)]
        plain = [pts[i % 64] for i in range(n)]
        sv.client.encrypt_many(names, plain)
        recs = local.encrypt_many(names, plain)
        framed = Client(sv.url, token=sv.token, timeout=300)
        http = Client(sv.url, token=sv.token, timeout=300)
        http._frames = False
        assert framed.decrypt_many(names, framed.encrypt_many(names, plain)) == plain
        sock = framed._fconn().sock
        assert sock is not None
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        print(f"batches of {n} 1 KiB records, {args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
        for op, items in (("encrypt", plain), ("decrypt", recs)):
            calls: dict[str, Callable[[], object]] = {
                "in process": partial(getattr(local, f"{op}_many"), names, items),
                "frames": partial(getattr(framed, f"{op}_many"), names, items),
                "HTTP": partial(getattr(http, f"{op}_many"), names, items),
            }
            wall: dict[str, list[float]] = {k: [] for k in calls}
            mine: dict[str, list[int]] = {k: [] for k in calls}
            theirs: dict[str, list[int]] = {k: [] for k in calls}
            for f in calls.values():
                f()
            for _ in range(args.rounds):
                for k, f in calls.items():
                    s0, c0, t = _cpu_ns(pid), time.thread_time_ns(), time.perf_counter()
                    f()
                    wall[k].append(time.perf_counter() - t)
                    mine[k].append(time.thread_time_ns() - c0)
                    theirs[k].append(_cpu_ns(pid) - s0)
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
                server = statistics.median(theirs[k]) / 1e3 if k != "in process" else 0.0
                print(
                    f"  {op} {k:10s} CPU per call (medians): client {client:6.0f} us, "
                    f"server {server:6.0f} us"
                )
        framed.close()
        http.close()
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
