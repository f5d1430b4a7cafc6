"""Per-evaluation cost of the two DPRF designs issue 20 offers, on this machine (one core).

``python -m benchmarks.dprf_designs [--batch 2000] [--repeats 7] [--n 3 --t 2]``

(a) DDH over ristretto255 (keysplit.cluster.dprf, through rbcl/libsodium): per subject a
    hash to the group, one scalar multiplication per answering node, the batched DLEQ
    proof (prove on the node, verify on the client), the client's combination (T-1 point
    additions) and HKDF.
(b) DiSE's symmetric DPRF (Agrawal et al., CCS 2018): every (n-T+1)-subset of nodes shares
    an AES-128 key; a node answers AES_k(h(x)) under each of its C(n-1, n-T) subset keys,
    batched as one ECB call per key; the client XORs one answer per subset (C(n, n-T+1)
    blocks) and derives the KEK with HKDF as in (a). No proofs exist in this design.

Each line is the median over ``--repeats`` runs of the whole batch, divided by the batch
size (microseconds per subject), with min and max. Same run, same process: the ratios are
the reading to trust on a loaded machine; the script prints ``os.getloadavg()`` beside
them. This is a one-off design measurement, not part of ``make bench`` (the cluster's
end-to-end rows are ``bench_cluster.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keysplit.cluster import dkg, dprf
from keysplit.hazmat.ristretto import Point, Scalar
from keysplit.rng import DeterministicRandom


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), min(runs), max(runs)


def _ddh(n: int, t: int, batch: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    rng = DeterministicRandom("bench")
    idx = list(range(1, n + 1))
    rounds = [dkg.deal(i, t, idx, rng=rng) for i in idx]
    dealings = [d for d, _ in rounds]
    shares = {i: dkg.finish(i, dealings, {d.dealer: s[i] for d, s in rounds}) for i in idx}
    public = dkg.public_shares(dealings, idx)
    subset = tuple(idx[:t])
    lam = dprf.lagrange(subset)
    cid = b"\x01" * 16
    subjects = [f"contacts/{j}" for j in range(batch)]
    points = [dprf.point_for(cid, "in", s, 1) for s in subjects]
    node = subset[0]
    answers = {i: dprf.evaluate(shares[i], points, coefficient=lam[i]) for i in subset}
    proof = dprf.prove(shares[node], points, answers[node], coefficient=lam[node])
    ys = dprf.combine(answers, t)
    out = {
        "hash to group (point_for)": _time(
            lambda: [dprf.point_for(cid, "in", s, 1) for s in subjects], repeats
        ),
        "scalar mult (evaluate), one node": _time(
            lambda: dprf.evaluate(shares[node], points, coefficient=lam[node]), repeats
        ),
        "DLEQ prove (batched), one node": _time(
            lambda: dprf.prove(shares[node], points, answers[node], coefficient=lam[node]),
            repeats,
        ),
        "DLEQ verify (batched, client), one node's answer": _time(
            lambda: dprf.verify(
                public[node], points, answers[node], proof, coefficient=lam[node], node=node
            ),
            repeats,
        ),
        f"combine {t} answers (client)": _time(lambda: dprf.combine(answers, t), repeats),
        "HKDF KEK (client)": _time(
            lambda: [dprf.derive_kek(y, cid, s, 1) for y, s in zip(ys, subjects, strict=True)],
            repeats,
        ),
    }
    # the bare libsodium operations, for reference
    s = Scalar.random()
    p = Point.base_mul(Scalar.random())
    k = 20
    out["  rbcl scalarmult alone"] = _time(lambda: [p * s for _ in range(batch // k)], repeats)
    out["  rbcl point add alone"] = _time(lambda: [p + p for _ in range(batch // k)], repeats)
    for name in ("  rbcl scalarmult alone", "  rbcl point add alone"):
        med, lo, hi = out[name]
        out[name] = (med * k, lo * k, hi * k)  # per-op figures scaled to the batch
    return out


def _dise(n: int, t: int, batch: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    rng = DeterministicRandom("dise")
    idx = list(range(1, n + 1))
    subsets = list(itertools.combinations(idx, n - t + 1))
    keys = {sub: rng.random_bytes(16) for sub in subsets}
    node = idx[0]
    mine = [sub for sub in subsets if node in sub]
    subjects = [f"contacts/{j}".encode() for j in range(batch)]

    def blocks() -> bytes:
        return b"".join(hashlib.sha256(b"dise|" + s).digest()[:16] for s in subjects)

    x = blocks()

    def node_eval(for_subsets: list[tuple[int, ...]]) -> list[bytes]:
        outs = []
        for sub in for_subsets:
            enc = Cipher(algorithms.AES(keys[sub]), modes.ECB()).encryptor()
            outs.append(enc.update(x))
        return outs

    all_answers = node_eval(subsets)

    def combine() -> bytes:
        acc = np.zeros(16 * batch, dtype=np.uint8)
        for a in all_answers:
            acc ^= np.frombuffer(a, dtype=np.uint8)
        return acc.tobytes()

    combined = combine()
    cid = b"\x01" * 16

    def kek() -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        for j, s in enumerate(subjects):
            HKDF(hashes.SHA256(), 16, b"kek", cid + s).derive(combined[16 * j : 16 * j + 16])

    return {
        "hash subject to a block (SHA-256)": _time(blocks, repeats),
        f"ECB under {len(mine)} subset keys, one node": _time(lambda: node_eval(mine), repeats),
        f"XOR {len(subsets)} subset answers (client)": _time(combine, repeats),
        "HKDF KEK (client)": _time(kek, repeats),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--t", type=int, default=2)
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"# DPRF designs, {args.t}-of-{args.n}, batch {args.batch}, {args.repeats} repeats, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    per = 1e6 / args.batch
    totals = {}
    mins: dict[str, float] = {}
    for design, rows in (
        ("DDH ristretto255 (rbcl)", _ddh(args.n, args.t, args.batch, args.repeats)),
        ("DiSE AES-128 (cryptography)", _dise(args.n, args.t, args.batch, args.repeats)),
    ):
        print(f"\n## {design}\n\n| step | us per subject, median (min-max) |\n|---|---:|")
        node = client = node_min = 0.0
        for name, (med, lo, hi) in rows.items():
            print(f"| {name} | {med * per:.2f} ({lo * per:.2f}-{hi * per:.2f}) |")
            if name.startswith("  "):
                continue
            if "client" in name:
                client += med * per
            else:
                node += med * per
                node_min += lo * per
        mins["ddh-node" if design.startswith("DDH") else "dise-node"] = node_min
        if design.startswith("DDH"):
            # the client hashes each subject too (it never trusts a node's point) and
            # checks T answers; without proofs it only combines and derives
            h2g = rows["hash to group (point_for)"][0] * per
            verify = rows["DLEQ verify (batched, client), one node's answer"][0] * per
            plain = client - verify
            client = plain + h2g + args.t * verify
            print(f"| **client total without proofs** (combine + HKDF) | {plain:.2f} |")
            print(f"| **client total verifying {args.t} proofs** (+ hash) | {client:.2f} |")
        else:
            print(f"| **client total** (combine + HKDF) | {client:.2f} |")
        totals[design] = (node, client)
        print(f"| **node total** (hash + evaluate [+ prove]) | {node:.2f} |")
    (ddh_node, ddh_client), (dise_node, dise_client) = totals.values()
    print(
        f"\nratio DDH/DiSE per subject (medians): node {ddh_node / dise_node:.0f}x, "
        f"client {ddh_client / dise_client:.0f}x"
    )
    print(
        f"fastest runs: DDH node {mins['ddh-node']:.1f} us, DiSE node {mins['dise-node']:.2f} us "
        f"per subject (on a loaded machine the minima are the steadier reading)"
    )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
