"""One client's batch split across the service's workers? (``-m benchmarks.ab_service_pipeline``)

Issue 23 wants one client at >= 0.5x in-process ``encrypt_many`` for batches of 1,000. One
way to get there would be for ``keysplit.Client`` to split a batch into 2 or 4 requests sent
back to back over separate connections (the leader hands connections to the worker
processes round robin), so both workers seal parts while the client frames the next and
reads the first answer. This measures that against the unsplit call and the in-process
baseline, calls interleaved, against a real ``keysplit serve`` (default workers) over its
Unix socket. Not part of ``make bench``: it records a design choice that was measured and
not adopted (benchmarks/README.md, "Issue goals": within noise of the unsplit call on this
2-core machine, and it takes the second core from other clients).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from typing import Any

from keysplit import Client
from keysplit.service import _wire as wire
from keysplit.service.client import _header

from .bench_service import served
from .harness import time_calls

N = 1000
CALLS = 40


def pipelined(
    clients: list[Client], path: str, subjects: list[str], items: list[bytes]
) -> list[bytes]:
    """``items`` in ``len(clients)`` requests, all sent before any answer is read."""
    n, parts = len(items), len(clients)
    step = -(-n // parts)
    sent = []
    for j, c in enumerate(clients):
        lo, hi = j * step, min(n, (j + 1) * step)
        body = wire.encode_parts(_header(None, hi - lo), items[lo:hi], subjects[lo:hi])
        conn = c._conn()
        c._send(conn, "POST", path, body, sum(map(len, body)), wire.BATCH_TYPE, True)
        sent.append(conn)
    out: list[Any] = []
    for conn in sent:
        head, _, got = wire.decode_frame(conn.getresponse().read(), "answer")
        if head.get("errors"):
            raise RuntimeError(f"errors: {head['errors']}")
        out.extend(got)
    return out


def main() -> None:
    with served() as sv:
        client = sv.client
        two = [Client(sv.url, token=sv.token) for _ in range(2)]
        four = [Client(sv.url, token=sv.token) for _ in range(4)]
        local = sv.local()
        names = [f"user/{i:04d}" for i in range(N)]
        pts = [os.urandom(1024) for _ in range(64)]
        plain = [pts[i % 64] for i in range(N)]
        client.encrypt_many(names, plain)  # every data key exists
        recs = local.encrypt_many(names, plain)
        assert local.decrypt_many(names, pipelined(four, "/v1/encrypt", names, plain)) == plain
        fns: dict[str, Callable[[], object]] = {
            "encrypt, in process *": lambda: local.encrypt_many(names, plain),
            "encrypt, Client, one request": lambda: client.encrypt_many(names, plain),
            "encrypt, split in 2 pipelined": lambda: pipelined(two, "/v1/encrypt", names, plain),
            "encrypt, split in 4 pipelined": lambda: pipelined(four, "/v1/encrypt", names, plain),
            "decrypt, in process *": lambda: local.decrypt_many(names, recs),
            "decrypt, Client, one request": lambda: client.decrypt_many(names, recs),
            "decrypt, split in 2 pipelined": lambda: pipelined(two, "/v1/decrypt", names, recs),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():
            f()
        for _ in range(CALLS):
            for k, f in fns.items():
                times[k].extend(time_calls(f, 1, warmup=0, min_calls=1))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"batches of {N:,} 1 KiB records, {CALLS} interleaved calls each, medians")
        for k, v in med.items():
            base = med[k.split(",")[0] + ", in process *"]
            print(f"  {k:32s} {N / v / 1e3:7.0f} k records/s  {base / v:.3f}x")


if __name__ == "__main__":
    main()
