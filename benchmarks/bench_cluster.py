"""The key cluster (2 of 3 real ``keysplit serve`` node processes) vs the single-host service.

Four keyrings: three cluster nodes and one single-host service, each served by its own
``keysplit serve`` child process on a Unix socket and unsealed remotely as custodians would;
``keysplit.service.cluster_admin.create_cluster`` runs the DKG among the three nodes.
Everything runs on this one machine (2 cores shared by every process), so the cluster
rows pay two node processes' work on the same cores as the client.

Rows (each ratio against the baseline row of the same benchmark and batch size, same run):

* ``cluster-datakey`` (keys/s): data keys of existing subjects, batches 1..10^4. Baseline:
  the single-host service's ``datakey`` endpoint (``Client.datakeys``) over its socket.
  Cluster: ``ClusterDataKeys.resolve`` (T=2 nodes evaluate the DPRF, one scalar
  multiplication + one hash to group per subject per node, in parallel; the client adds
  the points, derives each KEK and unwraps the stored key). The "with DLEQ proofs" row forces
  every answer's batched proof to be made and checked (what creating a key costs).
* ``cluster-encrypt-1KiB`` (records/s): ``ClusterClient`` with its data-key cache on (keys
  fetched once, records sealed locally) vs ``UnsealedKeyring.encrypt_many`` in process.

Per-call latency p50/p99 (ms) is in every row's note.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from keysplit import Client, Keyring
from keysplit.service.cluster_admin import create_cluster
from keysplit.service.cluster_client import ClusterClient
from keysplit.service.tokens import TokenList, mac_key

from .harness import latency_ms, progress, row, throughput, time_calls

SUBJECTS = 10_000
SIZE = 1024


def _calls(fn: Callable[[], object], n: int, quick: bool) -> list[float]:
    want = (40 if quick else 200) if n <= 10 else (10 if quick else 40) if n <= 1000 else 5
    return time_calls(fn, want, budget_s=8 if quick else 30)


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


def _start(directory: Path, sock: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from keysplit_cli.app import main; sys.argv[0] = 'keysplit'; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(directory), "--socket", str(sock)],
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
    return (1, 100, 10_000) if quick else (1, 10, 100, 1000, 10_000)


def run(quick: bool) -> list[dict[str, Any]]:
    sizes = _sizes(quick)
    rows: list[dict[str, Any]] = []
    procs: list[subprocess.Popen[bytes]] = []
    pts = [os.urandom(SIZE) for _ in range(64)]
    with tempfile.TemporaryDirectory(prefix="ksc", dir="/tmp") as t:
        tmp = Path(t)
        try:
            token = ""
            urls: dict[str, str] = {}
            local = None
            for name in ("single", "n1", "n2", "n3"):
                kr, shares = Keyring.create(tmp / name, 2, ["a", "b"])
                with kr.unseal([shares["a"], shares["b"]]) as u:
                    tl = TokenList.read(kr.path, kr.keyring_id)
                    key = mac_key(u.audit_key(), kr.keyring_id)
                    if not token:
                        token, _ = tl.create(key, name="b", allow=["datakey"], subject_prefix="")
                    else:
                        tl.add(key, token, name="b", allow=["datakey"], subject_prefix="")
                sock = tmp / f"{name}.sock"
                procs.append(_start(kr.path, sock))
                urls[name] = f"unix:{sock}"
                c = Client(urls[name], timeout=300)
                for s in "ab":
                    c.submit_share(shares[s], c.unseal_offer(), keyring_id=kr.keyring_id)
                c.close()
                if name == "single":
                    local = Keyring.open(kr.path).unseal([shares["a"], shares["b"]])
            assert local is not None
            create_cluster(
                tmp / "cl",
                threshold=2,
                region="in",
                nodes=[(n, urls[n]) for n in ("n1", "n2", "n3")],
            )
            single = Client(urls["single"], token=token, timeout=300)
            cl = ClusterClient(tmp / "cl", token=token, timeout=300)
            cached = ClusterClient(tmp / "cl", token=token, timeout=300, cache_max_age=3600)
            dk = cl.datakeys
            names = [f"user/{i:05d}" for i in range(SUBJECTS)]
            progress("creating 10^4 data keys on both")
            for lo in range(0, SUBJECTS, 2000):
                single.datakeys(names[lo : lo + 2000], create=True)
                cl.datakeys.resolve(names[lo : lo + 2000], create=True)
            for n in sizes:
                progress(f"cluster batch {n}")
                subjects = names[:n]
                plain = [pts[i % 64] for i in range(n)]
                cases: list[tuple[str, str, list[tuple[str, Callable[[], object]]]]] = [
                    (
                        "cluster-datakey",
                        "keys/s",
                        [
                            (
                                "single-host keysplit serve, Client.datakeys",
                                partial(single.datakeys, subjects, create=False),
                            ),
                            (
                                "2-of-3 cluster, ClusterDataKeys.resolve",
                                partial(dk.resolve, subjects, create=False),
                            ),
                        ],
                    ),
                    (
                        "cluster-encrypt-1KiB",
                        "records/s",
                        [
                            (
                                "UnsealedKeyring.encrypt_many (in process)",
                                partial(local.encrypt_many, subjects, plain),
                            ),
                            (
                                "ClusterClient, data-key cache on",
                                partial(cached.encrypt_many, subjects, plain),
                            ),
                        ],
                    ),
                ]
                if n <= (100 if quick else 10_000):
                    cases[0][2].append(
                        (
                            "2-of-3 cluster, every answer's DLEQ proof made and checked",
                            partial(dk.evaluate, subjects, proof=True),
                        )
                    )
                for bench, unit, impls in cases:
                    for i, (impl, fn) in enumerate(impls):
                        rows.append(_row(bench, impl, n, unit, _calls(fn, n, quick), i == 0))
            for cluster_client in (cl, cached):
                cluster_client.close()
            single.close()
            local.close()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    for r in rows:
        if not r["baseline"]:
            base = next(
                q
                for q in rows
                if q["benchmark"] == r["benchmark"] and q["n"] == r["n"] and q["baseline"]
            )
            r["note"] += f"; {r['median'] / base['median']:.1%} of the baseline (same run)"
    return rows


if __name__ == "__main__":
    for r in run("--full" not in sys.argv):
        print(
            f"{r['benchmark']:22} {r['impl']:58} n={r['n']:>6,} {r['median']:>12,.0f} "
            f"{r['unit']}  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
        )
