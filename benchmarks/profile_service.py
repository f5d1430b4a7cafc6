"""Where one client's batch goes: a timeline of ``Client.encrypt_many`` / ``decrypt_many``.

    .venv/bin/python -m benchmarks.profile_service [--op enc|dec] [--calls 300] [--n 1000]

Issue 23 wants one client at >= 0.5x the in-process call for batches of 1,000. This runs a
real ``keysplit serve --workers 1`` (bench_service's set-up) whose program wraps a few of
its functions with timestamps (``time.monotonic_ns``, one clock for both processes), calls
the in-process ``encrypt_many`` and the ``Client``'s in turn, and prints the median of each
step of the client's call: its own encoding, the server's wake-up and HTTP parsing until
the handler runs, the token check, the body read, the handler (decode, record engine,
answer frame), the answer's trip until ``getresponse`` returns, the body read and decode in
the client. The steps on the critical path add up to the call. Not part of ``make bench``.

An ``encrypt`` batch of more than ``STREAM_PIECE`` is a streamed answer: the handler step
is then only the frame's decode and the keys, ``getresponse`` returns once the first piece
is sealed, and the client's read-and-cut step runs while the server seals the rest.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keysplit.service import _wire as wire
from keysplit.service import client as client_mod

from .bench_service import SERVE, served

_TIMED = """
import json, sys, time
import aiohttp.web_protocol as wp
import keysplit.service.core as core, keysplit.service.server as server
log = []

def timed(owner, name, tag, is_async=False):
    fn = getattr(owner, name)
    if is_async:
        async def wrapper(*a, **k):
            t = time.monotonic_ns(); r = await fn(*a, **k)
            log.append((tag, t, time.monotonic_ns())); return r
    else:
        def wrapper(*a, **k):
            t = time.monotonic_ns(); r = fn(*a, **k)
            log.append((tag, t, time.monotonic_ns())); return r
    setattr(owner, name, wrapper)

timed(wp.RequestHandler, "data_received", "data")
timed(core.KeyService, "route_kind", "route")
timed(core.KeyService, "precheck", "precheck")
timed(core.KeyService, "handle", "handle")
timed(core.KeyService, "respond", "handle")
timed(server, "_read_body", "read", True)
timed(server, "_send", "send", True)
timed(server, "_stream", "send", True)
try:
    exec(SERVE)
except SystemExit:
    pass
finally:
    with open(LOG, "w") as fh:
        json.dump(log, fh)
"""

Event = tuple[str, int, int]


@contextmanager
def _client_timed(log: list[Event]) -> Iterator[None]:
    """Timestamps around the client's send, ``getresponse`` and frame decode."""
    conn = http.client.HTTPConnection
    saved = (client_mod._sendmsg_all, conn.getresponse, wire.read_frame)

    def wrap(fn: Callable[..., Any], tag: str) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.monotonic_ns()
            r = fn(*a, **k)
            log.append((tag, t, time.monotonic_ns()))
            return r

        return wrapper

    client_mod._sendmsg_all = wrap(saved[0], "sent")
    conn.getresponse = wrap(saved[1], "status")  # type: ignore[method-assign]
    wire.read_frame = wrap(saved[2], "decode")
    try:
        yield
    finally:
        client_mod._sendmsg_all = saved[0]
        conn.getresponse = saved[1]  # type: ignore[method-assign]
        wire.read_frame = saved[2]


def _steps(call: tuple[int, int], events: list[Event]) -> dict[str, float] | None:
    """The critical-path steps of one client call (us), from the events inside it."""
    t1, t2 = call
    first: dict[str, tuple[int, int]] = {}
    for tag, a, b in sorted(e for e in events if t1 <= e[1] <= t2):
        first.setdefault(tag, (a, b))
    if len(first) < 8:
        return None
    sent, data, route, pre = first["sent"], first["data"], first["route"], first["precheck"]
    read, handle, send = first["read"], first["handle"], first["send"]
    status, dec = first["status"], first["decode"]
    us = 1e-3
    return {
        "client: encode the frame, until sendmsg": (sent[0] - t1) * us,
        "server: first bytes read (wake-up)": (data[0] - sent[0]) * us,
        "server: HTTP parsing until the handler": (route[0] - data[0]) * us,
        "server: token check (precheck)": (pre[1] - pre[0]) * us,
        "server: rest of the body read": (read[1] - pre[1]) * us,
        "server: handler (decode, keys; whole answer: engine, frame)": (handle[1] - handle[0]) * us,
        "server -> client: until getresponse (streamed: 1st piece)": (status[1] - send[0]) * us,
        "client: until the frame reader starts": (dec[0] - status[1]) * us,
        "client: read and cut the frame (streamed: overlaps)": (dec[1] - dec[0]) * us,
        "client: after decode": (t2 - dec[1]) * us,
        "whole call": (t2 - t1) * us,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", choices=("enc", "dec"), default="enc")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ksp", dir="/tmp") as t:
        log_path = Path(t) / "server.json"
        code = _TIMED.replace("SERVE", repr(SERVE)).replace("LOG", repr(str(log_path)))
        names = [f"user/{i:04d}" for i in range(args.n)]
        pts = [os.urandom(1024) for _ in range(64)]
        plain = [pts[i % 64] for i in range(args.n)]
        mine: list[Event] = []
        calls: list[tuple[int, int]] = []
        local_ns: list[int] = []
        with served("--workers", "1", code=code) as sv, sv.local() as local:
            client = sv.client
            client.encrypt_many(names, plain)  # every data key exists
            recs = local.encrypt_many(names, plain)
            ops: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
                "enc": (
                    lambda: local.encrypt_many(names, plain),
                    lambda: client.encrypt_many(names, plain),
                ),
                "dec": (
                    lambda: local.decrypt_many(names, recs),
                    lambda: client.decrypt_many(names, recs),
                ),
            }
            in_process, remote = ops[args.op]
            in_process()
            remote()
            with _client_timed(mine):
                for _ in range(args.calls):
                    t0 = time.monotonic_ns()
                    in_process()
                    t1 = time.monotonic_ns()
                    remote()
                    calls.append((t1, time.monotonic_ns()))
                    local_ns.append(t1 - t0)
        with open(log_path) as fh:  # written when the server stopped
            theirs = [tuple(e) for e in json.load(fh)]
    events: list[Event] = mine + theirs
    steps = [s for c in calls[5:] if (s := _steps(c, events)) is not None]
    print(f"{args.op} batches of {args.n}, {len(steps)} calls; load {os.getloadavg()[0]:.2f}")
    print(f"{'in-process call':52s} {statistics.median(local_ns) / 1e3:8.1f} us")
    for key in steps[0]:
        print(f"{key:52s} {statistics.median(s[key] for s in steps):8.1f} us")
    ratio = statistics.median(local_ns) / 1e3 / statistics.median(s["whole call"] for s in steps)
    print(f"ratio in-process / client (medians): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
