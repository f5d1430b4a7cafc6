"""The key service over its Unix socket vs the in-process ``UnsealedKeyring``, same run.

A real ``keysplit serve`` child process holds the keyring (unsealed remotely, as
custodians would); ``keysplit.Client`` in this process sends batches of 1 to 10,000 items.
The baseline for every (benchmark, batch size) is the same work in process: ``datakey``
rows compare with the service's own raw-key function on an in-process keyring (keys/s),
encrypt/decrypt rows with ``UnsealedKeyring.encrypt_many``/``decrypt_many`` of 1 KiB
records over 1,000 subjects whose keys already exist (records/s). Rows report throughput
per batch call (median/min/max over calls) plus per-call latency p50/p99 in ms. A last
row per size shows ``Client`` with its client-side data-key cache (records sealed locally,
keys fetched once), which is what a backend that accepts the cache trade-off pays.
The floor rows run the in-process call and then send the request's frame to a forked
echo process over a socketpair and read back as many bytes as the answer's frame: what a
single-threaded service over a Unix socket could reach with HTTP and framing for free.
``keysplit.Client`` sends its ``encrypt``/``decrypt`` batches over the Unix socket's frame
transport (no HTTP); the "HTTP only" rows are the same client with it off, in the same run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from keysplit import Client, Keyring, Share, UnsealedKeyring
from keysplit.service import _wire as wire
from keysplit.service.fleet import default_workers
from keysplit.service.heap import keep_heap
from keysplit.service.tokens import OPERATIONS, TokenList, mac_key

from .harness import in_turn, latency_ms, progress, row, throughput, time_calls

SUBJECTS = 1000
SIZE = 1024
FLOOR = "floor: in-process + raw socket echo of the same bytes"
HTTP_ONLY = "keysplit.Client, HTTP only (frames off)"
"""The same client with the Unix socket's frame transport off: every batch over HTTP
(benchmarks/README.md, "service transport")."""


def _calls(fns: list[Callable[[], object]], n: int, quick: bool) -> list[list[float]]:
    """Per-call seconds of each of ``fns``, their calls interleaved (a, b, c, b, c, a, ...,
    each round in turn: :func:`in_turn`) so the drifting load of this shared machine, and
    the caches one call leaves the next, hit every impl alike: enough calls for a p99 at
    small batches (600 in quick mode: the p99 lies between the 6th and 7th slowest call,
    where 60 calls made it nearly the slowest one), bounded time at large (one untimed
    warm-up call each)."""
    want = (600 if quick else 2000) if n <= 10 else (20 if quick else 60) if n <= 1000 else 5
    budget = (5 if quick else 20) * len(fns)
    for fn in fns:
        fn()  # connection, caches
    out: list[list[float]] = [[] for _ in fns]
    deadline = time.monotonic() + budget
    for i in range(want):
        for j in in_turn(range(len(fns)), i):
            out[j].extend(time_calls(fns[j], 1, warmup=0, min_calls=1))
        if time.monotonic() > deadline and i >= 2:
            break
    return out


def _row(
    bench: str, impl: str, n: int, unit: str, times: list[float], base: bool
) -> dict[str, Any]:
    p50, p99 = latency_ms(times)
    r = row(
        bench,
        impl,
        n,
        unit,
        throughput(n, times),
        baseline=base,
        p50_ms=round(p50, 3),
        p99_ms=round(p99, 3),
        calls=len(times),
    )
    r["note"] = f"p50 {p50:.3f} ms, p99 {p99:.3f} ms per call of {n} ({len(times)} calls)"
    return r


SERVE = "import sys; from keysplit_cli.app import main; sys.argv[0] = 'keysplit'; main()"
"""The ``python -c`` program of a served keyring (benchmarks.profile_service wraps it)."""


def _start(directory: Path, sock: Path, *extra: str, code: str = SERVE) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(directory), "--socket", str(sock), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("keysplit serve did not start")
        time.sleep(0.05)
    return proc


def _sizes(quick: bool) -> tuple[int, ...]:
    return (1, 1000, 10_000) if quick else (1, 10, 100, 1000, 10_000)


class _Echo:
    """A forked process on a socketpair that reads ``n`` bytes and answers ``m`` bytes:
    the floor of any service over a Unix socket (the same bytes each way, no HTTP, no
    parsing, no crypto), for the floor rows."""

    def __init__(self) -> None:
        self.sock, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (self.sock, peer):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            self.sock.close()
            code = 0
            try:
                self._serve(peer)
            except BaseException:
                code = 1
            os._exit(code)
        peer.close()
        self._buf = bytearray()

    @staticmethod
    def _serve(s: socket.socket) -> None:
        buf = bytearray(1 << 20)
        answer = b""
        while True:
            head = s.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return
            n, m = struct.unpack(">II", head)
            if len(buf) < n:
                buf = bytearray(n)
            view = memoryview(buf)
            got = 0
            while got < n:
                k = s.recv_into(view[got:n])
                if not k:
                    return
                got += k
            if len(answer) != m:
                answer = os.urandom(m)
            s.sendall(answer)

    def exchange(self, request: bytes, answer_size: int) -> None:
        self.sock.sendall(struct.pack(">II", len(request), answer_size) + request)
        if len(self._buf) < answer_size:
            self._buf = bytearray(answer_size)
        view = memoryview(self._buf)
        got = 0
        while got < answer_size:
            got += self.sock.recv_into(view[got:answer_size])

    def close(self) -> None:
        self.sock.close()
        os.waitpid(self.pid, 0)


def _bound(
    op: Callable[[list[str], list[bytes]], list[bytes]], subjects: list[str], items: list[bytes]
) -> Callable[[], list[bytes]]:
    """``op(subjects, items)`` as a call without arguments, for the timing loop."""
    return lambda: op(subjects, items)


def _floor(echo: _Echo, op: Callable[[], list[bytes]], request: bytes) -> Callable[[], object]:
    """In-process ``op`` plus an echo of the request's and the answer's bytes: what a
    single-threaded service could reach if HTTP and framing cost nothing."""
    answer = sum(map(len, op())) + 16 + 8 * len(op())

    def run() -> None:
        op()
        echo.exchange(request, answer)

    return run


SCALE_BATCH = 1000
"""Batch size of the scaling rows (issue 23: 4 clients >= 1.5x one client at 1000)."""


def _scale_params(quick: bool) -> tuple[float, int]:
    """(seconds per measurement, repeats) of the scaling rows."""
    return (1.5, 3) if quick else (4.0, 5)


def _client_loop(
    url: str,
    token: str,
    secs: float,
    go: Any,
    q: Any,
    cls: type[Client] = Client,
    heap: bool = False,
) -> None:
    """One client process: encrypt_many batches of SCALE_BATCH for ``secs`` after ``go``
    (``cls``: the client class, another tree's in benchmarks.ab_service_stream; ``heap``:
    the process calls :func:`keysplit.service.keep_heap` first)."""
    if heap:
        keep_heap()
    c = cls(url, token=token, timeout=300)
    subjects = [f"user/{i % SUBJECTS:04d}" for i in range(SCALE_BATCH)]
    plain = [os.urandom(SIZE) for _ in range(SCALE_BATCH)]
    c.encrypt_many(subjects, plain)  # connect, warm up
    go.wait(60)
    times = time_calls(lambda: c.encrypt_many(subjects, plain), 10**6, warmup=0, budget_s=secs)
    q.put(SCALE_BATCH * len(times) / sum(times))
    c.close()


def _aggregate(
    url: str,
    token: str,
    clients: int,
    secs: float,
    cls: type[Client] = Client,
    heap: bool = False,
) -> float:
    """Records/s of ``clients`` client processes running at once (summed)."""
    ctx = mp.get_context("fork")
    go, q = ctx.Event(), ctx.Queue()
    args = (url, token, secs, go, q, cls, heap)
    ps = [ctx.Process(target=_client_loop, args=args) for _ in range(clients)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    go.set()
    total: float = sum(q.get(timeout=300) for _ in ps)
    for p in ps:
        p.join(60)
    return total


HEAP = ", clients call keep_heap()"
"""The rows whose client processes keep freed heap memory (:func:`keysplit.service.keep_heap`,
what ``keysplit serve`` does): the goal rows are the ones without it (a backend's default)."""


def _scaling_rows(urls: dict[str, str], token: str, quick: bool) -> list[dict[str, Any]]:
    """Client processes at once against ``--workers`` = cores and ``--workers 1``; the
    baseline is one client against the default service, in the same run."""
    secs, reps = _scale_params(quick)
    cases = [
        ("1 client", urls["default"], 1, True),
        ("2 clients", urls["default"], 2, False),
        ("4 clients", urls["default"], 4, False),
        ("4 clients, --workers 1", urls["one"], 4, False),
        ("1 client, --workers 1", urls["one"], 1, False),
        ("1 client" + HEAP, urls["default"], 1, False),
        ("4 clients" + HEAP, urls["default"], 4, False),
    ]
    rates: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for r in range(reps):  # interleaved, in turn: every case sees the same drift in load
        for name, url, k, _base in in_turn(cases, r):
            rates[name].append(_aggregate(url, token, k, secs, heap=HEAP in name))
    rows = []
    stats = {name: throughput(1.0, [1.0 / r for r in rs]) for name, rs in rates.items()}
    base = stats["1 client"][0]
    for name, _url, _k, is_base in cases:
        mine = stats["1 client" + HEAP][0] if HEAP in name else base
        rows.append(
            row(
                "service-clients-encrypt-1KiB",
                name,
                SCALE_BATCH,
                "records/s",
                stats[name],
                baseline=is_base,
                workers=(1 if "--workers 1" in name else default_workers()),
                note=f"{stats[name][0] / base:.2f}x one client (same run); "
                + (f"{stats[name][0] / mine:.2f}x one client{HEAP}; " if HEAP in name else "")
                + f"client processes of encrypt_many({SCALE_BATCH}) for {secs:g} s each",
            )
        )
    return rows


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def _unsealed(
    kr: Keyring, shares: dict[str, Share], token: str, sock: Path, *extra: str, code: str = SERVE
) -> Iterator[Client]:
    """A real ``keysplit serve`` of ``kr`` on ``sock``, unsealed remotely by custodians a and
    b as in production, and a ``Client`` of it; the process is stopped on exit."""
    proc = _start(kr.path, sock, *extra, code=code)
    try:
        with Client(f"unix:{sock}", token=token, timeout=300) as client:
            for n in "ab":
                client.submit_share(shares[n], client.unseal_offer(), keyring_id=kr.keyring_id)
            yield client
    finally:
        _stop(proc)


@dataclass(frozen=True)
class Served:
    """A throwaway 2-of-3 keyring (custodians a, b, c), a token allowing every operation
    on every subject, and an unsealed ``keysplit serve`` of it: the set-up of every
    service benchmark, so they all measure the same service."""

    tmp: Path
    keyring: Keyring
    shares: dict[str, Share]
    token: str
    client: Client
    """Unsealed the service; timeout 300 s."""

    @property
    def url(self) -> str:
        return self.client.url

    def local(self) -> UnsealedKeyring:
        """The same keyring unsealed in this process (custodians b and c): the baseline."""
        return Keyring.open(self.keyring.path).unseal([self.shares["b"], self.shares["c"]])

    def another(self, sock: str, *extra: str) -> AbstractContextManager[Client]:
        """A second service of the same keyring on ``tmp/sock`` (``extra``: serve options)."""
        return _unsealed(self.keyring, self.shares, self.token, self.tmp / sock, *extra)


@contextmanager
def served(*extra: str, code: str = SERVE) -> Iterator[Served]:
    """Create the keyring and its token in a temporary directory, serve and unseal it
    (``extra``: serve options; ``code``: the serving program, :data:`SERVE`)."""
    with tempfile.TemporaryDirectory(prefix="ksb", dir="/tmp") as t:
        tmp = Path(t)
        kr, shares = Keyring.create(tmp / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as u:
            token = TokenList.read(kr.path, kr.keyring_id).create(
                mac_key(u.audit_key(), kr.keyring_id),
                name="bench",
                allow=list(OPERATIONS),
                subject_prefix="",
            )[0]
        with _unsealed(kr, shares, token, tmp / "s.sock", *extra, code=code) as client:
            yield Served(tmp, kr, shares, token, client)


def run(quick: bool) -> list[dict[str, Any]]:
    sizes = _sizes(quick)
    rows: list[dict[str, Any]] = []
    pts = [os.urandom(SIZE) for _ in range(64)]
    with served() as sv:
        client, token = sv.client, sv.token
        cached = Client(sv.url, token=token, timeout=300, cache_max_age=3600)
        http = Client(sv.url, token=token, timeout=300)
        http._frames = False  # the same batches over HTTP: the frame transport's A/B
        local = sv.local()
        names = [f"user/{i:04d}" for i in range(SUBJECTS)]
        client.encrypt_many(names, [b"x"] * SUBJECTS)  # create every data key once
        echo = _Echo()
        for n in sizes:
            progress(f"service batch {n}")
            subjects = [names[i % SUBJECTS] for i in range(n)]
            plain = [pts[i % 64] for i in range(n)]
            recs = local.encrypt_many(subjects, plain)
            cases: list[tuple[str, str, list[tuple[str, Callable[[], object]]]]] = [
                (
                    "service-datakey",
                    "keys/s",
                    [
                        (
                            "in-process keyring (same raw-key function)",
                            partial(local.records.export, subjects, create=True),
                        ),
                        (
                            "keysplit.Client over Unix socket",
                            partial(client.datakeys, subjects),
                        ),
                    ],
                ),
            ]
            for op, items, here, remote, remote_cached in (
                ("encrypt", plain, local.encrypt_many, client.encrypt_many, cached.encrypt_many),
                ("decrypt", recs, local.decrypt_many, client.decrypt_many, cached.decrypt_many),
            ):
                request = wire.encode_frame({"context": None}, items, subjects)
                impls: list[tuple[str, Callable[[], object]]] = [
                    (f"UnsealedKeyring.{op}_many (in process)", _bound(here, subjects, items)),
                    ("keysplit.Client over Unix socket", _bound(remote, subjects, items)),
                    (HTTP_ONLY, _bound(getattr(http, f"{op}_many"), subjects, items)),
                    ("keysplit.Client, data-key cache on", _bound(remote_cached, subjects, items)),
                    (FLOOR, _floor(echo, _bound(here, subjects, items), request)),
                ]
                cases.append((f"service-{op}-1KiB", "records/s", impls))
            for bench, unit, impls in cases:
                timed = _calls([fn for _, fn in impls], n, quick)
                for i, ((impl, _), times) in enumerate(zip(impls, timed, strict=True)):
                    rows.append(_row(bench, impl, n, unit, times, i == 0))
        echo.close()
        local.close()
        client.close()
        cached.close()
        http.close()
        progress("service client processes (scaling)")
        with sv.another("one.sock", "--workers", "1") as one:
            one.close()
            scaling = _scaling_rows({"default": sv.url, "one": one.url}, token, quick)
    for r in rows:
        if not r["baseline"] and not r["benchmark"].startswith("service-clients"):
            base = next(
                q
                for q in rows
                if q["benchmark"] == r["benchmark"] and q["n"] == r["n"] and q["baseline"]
            )
            r["note"] += f"; {r['median'] / base['median']:.1%} of in-process (same run)"
    return rows + scaling


if __name__ == "__main__":
    for r in run("--full" not in sys.argv):
        print(
            f"{r['benchmark']:22} {r['impl']:44} n={r['n']:>6,} {r['median']:>12,.0f} "
            f"{r['unit']}  {r.get('note', '')}"
        )
