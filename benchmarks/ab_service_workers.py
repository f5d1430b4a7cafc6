"""Threads or processes for the key service's cores? (``python -m benchmarks.ab_service_workers``)

The work a service worker does per request, ``UnsealedKeyring.encrypt_many`` of 1,000
1 KiB records, run for a few seconds in k threads sharing one unsealed keyring (what an
executor behind the event loop would do) and in k processes each holding its own (what
``keysplit serve --workers`` does). Prints aggregate records/s per k. Not part of
``make bench``: it justifies a design choice (keysplit/service/fleet.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from keysplit import Keyring

N = 1000
SECS = 3.0
SUBJECTS = [f"user/{i:04d}" for i in range(N)]
PLAIN = [os.urandom(1024) for _ in range(N)]


def _loop(u: Any, out: list[float]) -> None:
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECS:
        u.encrypt_many(SUBJECTS, PLAIN)
        n += N
    out.append(n / (time.perf_counter() - t0))


def _proc(path: Path, shares: list[Any], q: Any) -> None:
    u = Keyring.open(path).unseal(shares)
    u.encrypt_many(SUBJECTS, PLAIN)
    out: list[float] = []
    _loop(u, out)
    q.put(out[0])


def main() -> None:
    with tempfile.TemporaryDirectory() as t:
        kr, sh = Keyring.create(Path(t) / "kr", 2, ["a", "b"])
        shares = [sh["a"], sh["b"]]
        u = kr.unseal(shares)
        u.encrypt_many(SUBJECTS, PLAIN)
        for k in (1, 2, 4):
            out: list[float] = []
            th = [threading.Thread(target=_loop, args=(u, out)) for _ in range(k)]
            for x in th:
                x.start()
            for x in th:
                x.join()
            print(f"threads={k}: {sum(out):,.0f} records/s")
        for k in (1, 2, 4):
            q: Any = mp.Queue()
            ps = [mp.Process(target=_proc, args=(kr.path, shares, q)) for _ in range(k)]
            for p in ps:
                p.start()
            rate = sum(q.get() for _ in ps)
            for p in ps:
                p.join()
            print(f"processes={k}: {rate:,.0f} records/s")
    print(f"load: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
