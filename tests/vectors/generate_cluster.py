"""Regenerate tests/vectors/cluster.json (run from the repo root).

Everything random (polynomial coefficients, proof nonces) is drawn through the RNG seam
from ``DeterministicRandom(SEED)`` in the order this script calls the library, so
``build()`` reproduces the file byte for byte. The file holds a 2-of-3 DKG (dealings,
sub-shares, shares, public data), DPRF evaluations through every 2-subset (answers,
proofs, combined outputs, KEKs), a refresh, a share recovery, and ``cases`` whose
``expect`` says what a parser or check must do with them. docs/format/cluster.md explains
every field. These are test keys: never use them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from keysplit.cluster import dkg, dprf
from keysplit.hazmat.ristretto import Point, Scalar
from keysplit.rng import DeterministicRandom

SEED = "keysplit cluster vectors v1"
CLUSTER_ID = bytes.fromhex("6b73636c7573746572766563746f7273")  # "ksclustervectors"
REGION = "in"
VERSION = 1
THRESHOLD = 2
INDICES = [1, 2, 3]
SUBJECTS = ["contacts/1", "contacts/2", "messages/\u00e9t\u00e9"]

# expect -> what the test maps it to
EXPECT_VALUES = {
    "ok": "accepted",
    "bad-proof": "ClusterError naming the node",
    "bad-subshare": "ClusterError naming the dealer",
    "not-refresh": "ClusterError naming the dealer (non-zero constant term)",
    "share-mismatch": "ClusterError (the share is not the one cluster.json commits to)",
    "format": "FormatError",
}


def _hex_map(values: dict[int, Any]) -> dict[str, str]:
    return {str(k): v.to_bytes().hex() for k, v in sorted(values.items())}


def _round(rounds: list[tuple[dkg.Dealing, dict[int, Scalar]]]) -> list[dict[str, Any]]:
    return [
        {
            "dealer": d.dealer,
            "commitments": [c.hex() for c in d.commitments],
            "encoded": d.to_bytes().hex(),
            "digest": d.digest().hex(),
            "subshares": _hex_map(subs),
        }
        for d, subs in rounds
    ]


def _finish(rounds: list[tuple[dkg.Dealing, dict[int, Scalar]]]) -> dict[int, dkg.NodeShare]:
    dealings = [d for d, _ in rounds]
    return {i: dkg.finish(i, dealings, {d.dealer: s[i] for d, s in rounds}) for i in INDICES}


def _shares(shares: dict[int, dkg.NodeShare]) -> dict[str, Any]:
    return {
        str(i): {
            "share": s.share.to_bytes().hex(),
            "public_share": s.public_share.hex(),
            "encoded": s.to_bytes().hex(),
        }
        for i, s in sorted(shares.items())
    }


def _evaluations(
    shares: dict[int, dkg.NodeShare], rng: DeterministicRandom
) -> list[dict[str, Any]]:
    points = [dprf.point_for(CLUSTER_ID, REGION, s, VERSION) for s in SUBJECTS]
    out = []
    for subset in itertools.combinations(INDICES, THRESHOLD):
        lam = dprf.lagrange(subset)
        answers = {i: dprf.evaluate(shares[i], points, coefficient=lam[i]) for i in subset}
        proofs = {
            i: dprf.prove(shares[i], points, answers[i], coefficient=lam[i], rng=rng)
            for i in subset
        }
        outputs = dprf.combine(answers, THRESHOLD)
        out.append(
            {
                "subset": list(subset),
                "coefficients": _hex_map(lam),
                "answers": {str(i): [z.hex() for z in answers[i]] for i in subset},
                "proofs": {str(i): p.hex() for i, p in proofs.items()},
                "outputs": [y.hex() for y in outputs],
                "keks": [
                    dprf.derive_kek(y, CLUSTER_ID, s, VERSION).hex()
                    for y, s in zip(outputs, SUBJECTS, strict=True)
                ],
            }
        )
    return out


def build() -> dict[str, Any]:
    rng = DeterministicRandom(SEED)
    rounds = [dkg.deal(i, THRESHOLD, INDICES, rng=rng) for i in INDICES]
    dealings = [d for d, _ in rounds]
    shares = _finish(rounds)
    commitments = dkg.combined_commitments(dealings)
    points = [dprf.point_for(CLUSTER_ID, REGION, s, VERSION) for s in SUBJECTS]
    evaluations = _evaluations(shares, rng)

    refresh_rounds = [dkg.deal_refresh(i, THRESHOLD, INDICES, rng=rng) for i in INDICES]
    refresh_dealings = [d for d, _ in refresh_rounds]
    new_shares = {
        i: dkg.refresh(shares[i], refresh_dealings, {d.dealer: s[i] for d, s in refresh_rounds})
        for i in INDICES
    }
    new_commitments = dkg.refresh_commitments(commitments, refresh_dealings)
    refreshed_evaluations = _evaluations(new_shares, rng)

    lost, helpers = 3, [1, 2]
    rec_rounds = [dkg.deal_recovery(h, helpers, lost, rng=rng) for h in helpers]
    rec_dealings = [d for d, _ in rec_rounds]
    blinded = {
        h: dkg.blind_share(
            new_shares[h], lost, rec_dealings, {d.dealer: s[h] for d, s in rec_rounds}
        )
        for h in helpers
    }
    recovered = dkg.recover_share(lost, blinded, rec_dealings, new_commitments)

    first = evaluations[0]
    i0 = first["subset"][0]
    proof = bytes.fromhex(first["proofs"][str(i0)])
    bad_answer = list(first["answers"][str(i0)])
    bad_answer[1] = (Point.from_bytes(bytes.fromhex(bad_answer[1])) + Point.base()).hex()
    bad_sub = (
        (Scalar.from_bytes(bytes.fromhex(_round(rounds)[1]["subshares"]["1"])) + Scalar.one())
        .to_bytes()
        .hex()
    )
    non_refresh, non_refresh_subs = dkg.deal(2, THRESHOLD, INDICES, rng=rng)

    verify_base = {
        "kind": "verify",
        "node": i0,
        "public_share": shares[i0].public_share.hex(),
        "coefficient": first["coefficients"][str(i0)],
        "points": [p.hex() for p in points],
        "outputs": first["answers"][str(i0)],
        "proof": proof.hex(),
    }
    cases: list[dict[str, Any]] = [
        {"name": "answer with its proof", **verify_base, "expect": "ok"},
        {"name": "one output changed", **verify_base, "outputs": bad_answer, "expect": "bad-proof"},
        {
            "name": "proof checked without the coefficient",
            **verify_base,
            "coefficient": None,
            "expect": "bad-proof",
        },
        {
            "name": "proof bit flipped",
            **verify_base,
            "proof": (bytes([proof[0] ^ 0x80]) + proof[1:]).hex(),
            "expect": "bad-proof",
        },
        {
            "name": "another node's public share",
            **verify_base,
            "public_share": shares[3].public_share.hex(),
            "expect": "bad-proof",
        },
        {
            "name": "subshare from dealer 2 for node 1",
            "kind": "subshare",
            "dealing": dealings[1].to_bytes().hex(),
            "index": 1,
            "subshare": _round(rounds)[1]["subshares"]["1"],
            "expect": "ok",
        },
        {
            "name": "subshare off by one",
            "kind": "subshare",
            "dealing": dealings[1].to_bytes().hex(),
            "index": 1,
            "subshare": bad_sub,
            "expect": "bad-subshare",
        },
        {
            "name": "subshare for the wrong index",
            "kind": "subshare",
            "dealing": dealings[1].to_bytes().hex(),
            "index": 2,
            "subshare": _round(rounds)[1]["subshares"]["1"],
            "expect": "bad-subshare",
        },
        {
            "name": "refresh dealing with a non-zero constant",
            "kind": "refresh",
            "dealing": non_refresh.to_bytes().hex(),
            "index": 1,
            "subshare": non_refresh_subs[1].to_bytes().hex(),
            "expect": "not-refresh",
        },
        {
            "name": "dealing truncated",
            "kind": "dealing",
            "encoded": dealings[0].to_bytes()[:-1].hex(),
            "expect": "format",
        },
        {
            "name": "dealing with a non-canonical commitment",
            "kind": "dealing",
            "encoded": (
                dealings[0].to_bytes()[:7] + b"\xff" * 32 + dealings[0].to_bytes()[39:]
            ).hex(),
            "expect": "format",
        },
        {
            "name": "node share with a non-canonical scalar",
            "kind": "node-share",
            "encoded": (shares[1].to_bytes()[:6] + b"\xff" * 32).hex(),
            "expect": "format",
        },
        {
            "name": "node share that does not match its public share",
            "kind": "node-share",
            "encoded": shares[1].to_bytes().hex(),
            "public_share": shares[2].public_share.hex(),
            "expect": "share-mismatch",
        },
    ]
    return {
        "description": "keysplit key cluster: DKG, DPRF, refresh and recovery known answers "
        "(docs/format/cluster.md). TEST KEYS ONLY.",
        "seed": SEED,
        "context": dprf.CONTEXT.decode(),
        "cluster_id": CLUSTER_ID.hex(),
        "region": REGION,
        "version": VERSION,
        "threshold": THRESHOLD,
        "indices": INDICES,
        "subjects": SUBJECTS,
        "points": [p.hex() for p in points],
        "dkg": {
            "dealings": _round(rounds),
            "commitments": [c.hex() for c in commitments],
            "public_key": commitments[0].hex(),
            "shares": _shares(shares),
        },
        "evaluations": evaluations,
        "refresh": {
            "dealings": _round(refresh_rounds),
            "commitments": [c.hex() for c in new_commitments],
            "shares": _shares(new_shares),
            "evaluations": refreshed_evaluations,
        },
        "recovery": {
            "lost": lost,
            "helpers": helpers,
            "dealings": _round(rec_rounds),
            "blinded": _hex_map(blinded),
            "recovered": recovered.share.to_bytes().hex(),
        },
        "expect_values": EXPECT_VALUES,
        "cases": cases,
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=True) + "\n"


def main() -> None:
    path = Path(__file__).with_name("cluster.json")
    path.write_text(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
