"""Known-answer vectors of the key cluster (tests/vectors/cluster.json), reproduced through
the RNG seam and checked along a second path (the key interpolated from all shares)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from keysplit.cluster import dkg, dprf
from keysplit.cluster.dkg import Dealing, NodeShare
from keysplit.errors import ClusterError, FormatError
from keysplit.hazmat.ristretto import Point, Scalar

VECTORS = Path(__file__).parents[2] / "vectors"
TEXT = (VECTORS / "cluster.json").read_text()
DOC = json.loads(TEXT)
_spec = importlib.util.spec_from_file_location("generate_cluster", VECTORS / "generate_cluster.py")
assert _spec and _spec.loader
GEN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(GEN)


def _pt(h: str) -> Point:
    return Point.from_bytes(bytes.fromhex(h))


def _sc(h: str) -> Scalar:
    return Scalar.from_bytes(bytes.fromhex(h))


def test_vectors_are_reproduced_byte_for_byte() -> None:
    assert GEN.render() == TEXT


def test_vector_file_covers_every_expect() -> None:
    assert {c["expect"] for c in DOC["cases"]} == set(DOC["expect_values"])


def _key(shares: dict[str, Any]) -> Scalar:
    return dkg.interpolate({int(i): _sc(s["share"]) for i, s in shares.items()})


@pytest.mark.parametrize("phase", ["dkg", "refresh"])
def test_evaluations_match_the_interpolated_key(phase: str) -> None:
    part = DOC[phase]
    x = _key(part["shares"])
    commitments = [_pt(c) for c in part["commitments"]]
    assert Point.base_mul(x) == commitments[0] == _pt(DOC["dkg"]["public_key"])
    cid = bytes.fromhex(DOC["cluster_id"])
    points = [dprf.point_for(cid, DOC["region"], s, DOC["version"]) for s in DOC["subjects"]]
    assert [p.hex() for p in points] == DOC["points"]
    evaluations = DOC["evaluations"] if phase == "dkg" else part["evaluations"]
    for ev in evaluations:
        assert ev["outputs"] == [(p * x).hex() for p in points]
        assert ev["keks"] == [
            dprf.derive_kek(p * x, cid, s, DOC["version"]).hex()
            for p, s in zip(points, DOC["subjects"], strict=True)
        ]
        for i in ev["subset"]:
            share = _sc(part["shares"][str(i)]["share"])
            lam = _sc(ev["coefficients"][str(i)])
            assert ev["answers"][str(i)] == [(p * (share * lam)).hex() for p in points]
            dprf.verify(
                dkg.public_share(commitments, i),
                points,
                [_pt(z) for z in ev["answers"][str(i)]],
                bytes.fromhex(ev["proofs"][str(i)]),
                coefficient=lam,
                node=i,
            )
    # a refresh changes every share and no output
    if phase == "refresh":
        assert [e["outputs"] for e in part["evaluations"]] == [
            e["outputs"] for e in DOC["evaluations"]
        ]
        for i, s in part["shares"].items():
            assert s["share"] != DOC["dkg"]["shares"][i]["share"]


def test_dkg_and_recovery_vectors() -> None:
    part = DOC["dkg"]
    dealings = [Dealing.from_bytes(bytes.fromhex(d["encoded"])) for d in part["dealings"]]
    for d, raw in zip(dealings, part["dealings"], strict=True):
        assert [c.hex() for c in d.commitments] == raw["commitments"]
        assert d.digest().hex() == raw["digest"]
    assert [c.hex() for c in dkg.combined_commitments(dealings)] == part["commitments"]
    for i, s in part["shares"].items():
        subs = {d["dealer"]: _sc(d["subshares"][i]) for d in part["dealings"]}
        share = dkg.finish(int(i), dealings, subs)
        assert share.share.to_bytes().hex() == s["share"]
        assert share.public_share.hex() == s["public_share"]
        assert NodeShare.from_bytes(bytes.fromhex(s["encoded"])) == share
    rec = DOC["recovery"]
    lost = rec["lost"]
    assert rec["recovered"] == DOC["refresh"]["shares"][str(lost)]["share"]
    recovered = dkg.recover_share(
        lost,
        {int(i): _sc(v) for i, v in rec["blinded"].items()},
        [Dealing.from_bytes(bytes.fromhex(d["encoded"])) for d in rec["dealings"]],
        [_pt(c) for c in DOC["refresh"]["commitments"]],
    )
    assert recovered.share.to_bytes().hex() == rec["recovered"]


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["name"] for c in DOC["cases"]])
def test_cases(case: dict[str, Any]) -> None:
    expect = case["expect"]

    def run() -> None:
        kind = case["kind"]
        if kind == "verify":
            coefficient = _sc(case["coefficient"]) if case["coefficient"] else None
            dprf.verify(
                _pt(case["public_share"]),
                [_pt(p) for p in case["points"]],
                [_pt(z) for z in case["outputs"]],
                bytes.fromhex(case["proof"]),
                coefficient=coefficient,
                node=case["node"],
            )
        elif kind == "subshare":
            dealing = Dealing.from_bytes(bytes.fromhex(case["dealing"]))
            dkg.verify_subshare(dealing, case["index"], _sc(case["subshare"]))
        elif kind == "refresh":
            dealing = Dealing.from_bytes(bytes.fromhex(case["dealing"]))
            old = NodeShare(case["index"], Scalar.one())
            dkg.refresh(old, [dealing], {dealing.dealer: _sc(case["subshare"])})
        elif kind == "dealing":
            Dealing.from_bytes(bytes.fromhex(case["encoded"]))
        elif kind == "node-share":
            public = _pt(case["public_share"]) if "public_share" in case else None
            NodeShare.from_bytes(bytes.fromhex(case["encoded"]), public_share=public)
        else:  # pragma: no cover
            raise AssertionError(kind)

    if expect == "ok":
        run()
    elif expect == "format":
        with pytest.raises(FormatError):
            run()
    else:
        with pytest.raises(ClusterError) as err:
            run()
        if expect == "bad-proof":
            assert err.value.node == case["node"]
        elif expect in ("bad-subshare", "not-refresh"):
            assert err.value.node == Dealing.from_bytes(bytes.fromhex(case["dealing"])).dealer
