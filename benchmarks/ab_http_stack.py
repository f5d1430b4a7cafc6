"""Which HTTP stack carries the key service: aiohttp vs Starlette on uvicorn (and raw ASGI).

Not a harness module (it needs both stacks installed; only aiohttp is in the lock): run it
by hand when revisiting the choice::

    .venv/bin/pip install starlette uvicorn httptools   # candidates not in the lock
    .venv/bin/python -m benchmarks.ab_http_stack [--quick]

Each candidate serves the same :class:`keysplit.service.core.KeyService` (unsealed, same
keyring, same token) on its own Unix socket in a child process, all three at once; the
client is ``keysplit.Client`` in this process, and calls alternate between the stacks.
Reported: records/s for batch encrypt and decrypt
of 1 KiB records at batch sizes 1, 100 and 10,000 (median of repeats), same run.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from keysplit import Keyring
from keysplit.service import Client
from keysplit.service.core import KeyService, Request
from keysplit.service.tokens import TokenList


def _make(tmp: Path) -> tuple[Path, list[Any], str]:
    kr, shares = Keyring.create(tmp / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as ukr:
        from keysplit.service.tokens import mac_key

        tl = TokenList.read(kr.path, kr.keyring_id)
        token, _ = tl.create(
            mac_key(ukr.audit_key(), kr.keyring_id),
            name="bench",
            allow=["encrypt", "decrypt", "datakey"],
            subject_prefix="",
        )
    return kr.path, [shares["a"], shares["b"]], token


def _service(directory: Path, shares: list[Any]) -> KeyService:
    svc = KeyService(directory, log=lambda m: None)
    kr = svc.keyring.unseal(shares)
    svc._unsealed(kr, ["a", "b"])
    return svc


def _serve_aiohttp(directory: Path, shares: list[Any], sock: str) -> None:
    from aiohttp import web

    svc = _service(directory, shares)

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        r = svc.handle(
            Request(
                request.method,
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                True,
            )
        )
        return web.Response(status=r.status, body=r.body, content_type=r.content_type)

    app = web.Application(client_max_size=256 << 20)
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, path=sock, print=None)


def _serve_starlette(directory: Path, shares: list[Any], sock: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request as SRequest
    from starlette.responses import Response as SResponse
    from starlette.routing import Route

    svc = _service(directory, shares)

    async def endpoint(request: SRequest) -> SResponse:
        body = await request.body()
        r = svc.handle(Request(request.method, request.url.path, dict(request.headers), body, True))
        return SResponse(r.body, status_code=r.status, media_type=r.content_type)

    app = Starlette(routes=[Route("/{tail:path}", endpoint, methods=["GET", "POST"])])
    uvicorn.run(app, uds=sock, log_level="warning", http="httptools")


def _serve_raw_asgi(directory: Path, shares: list[Any], sock: str) -> None:
    import uvicorn

    svc = _service(directory, shares)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        r = svc.handle(Request(scope["method"], scope["path"], headers, b"".join(chunks), True))
        await send(
            {
                "type": "http.response.start",
                "status": r.status,
                "headers": [(b"content-type", r.content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": r.body})

    uvicorn.run(app, uds=sock, log_level="warning", http="httptools")


def _wait(sock: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 7
    sizes = (1, 100, 10_000)
    payload = os.urandom(1024)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        directory, shares, token = _make(tmp)
        stacks = {
            "aiohttp": _serve_aiohttp,
            "starlette+uvicorn(httptools)": _serve_starlette,
            "raw ASGI on uvicorn(httptools)": _serve_raw_asgi,
        }
        results: dict[str, dict[str, float]] = {}
        procs: list[SpawnProcess] = []
        clients: dict[str, Client] = {}
        try:
            for name, fn in stacks.items():
                sock = str(tmp / f"{len(procs)}.sock")
                p = mp.get_context("spawn").Process(target=fn, args=(directory, shares, sock))
                p.start()
                procs.append(p)
                _wait(sock)
                clients[name] = Client(f"unix:{sock}", token=token)
            # Interleaved: each repeat times one call on every stack in turn, so load from
            # other jobs on this shared machine hits all candidates alike.
            for n in sizes:
                subjects = [f"u/{i % 1000}" for i in range(n)]
                pts = [payload] * n
                recs = {name: c.encrypt_many(subjects, pts) for name, c in clients.items()}
                reps = max(repeats, 300 // n) if n < 100 else repeats * (3 if n == 100 else 1)
                for op in ("encrypt", "decrypt"):
                    rates: dict[str, list[float]] = {name: [] for name in clients}
                    for _ in range(reps):
                        for name, c in clients.items():
                            t0 = time.perf_counter()
                            if op == "encrypt":
                                c.encrypt_many(subjects, pts)
                            else:
                                c.decrypt_many(subjects, recs[name])
                            rates[name].append(n / (time.perf_counter() - t0))
                    results[f"{op} n={n}"] = {k: statistics.median(v) for k, v in rates.items()}
        finally:
            for c in clients.values():
                c.close()
            for p in procs:
                p.terminate()
                p.join(10)
        names = list(stacks)
        print(f"{'records/s (1 KiB)':20}" + "".join(f"{n:>32}" for n in names))
        for k, v in results.items():
            print(f"{k:20}" + "".join(f"{v[n]:>32,.0f}" for n in names))
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
