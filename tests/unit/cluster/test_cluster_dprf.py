"""keysplit.cluster.dprf: RFC 9497 vectors for the DLEQ proof and hashes, and the DPRF's
threshold properties (any T combine alike, T-1 or a wrong share do not)."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit.cluster import dkg, dprf
from keysplit.errors import ClusterError
from keysplit.hazmat.ristretto import Point, Scalar, hash_to_group, hash_to_scalar
from keysplit.rng import DeterministicRandom

# RFC 9497 appendix A.1.2: ristretto255-SHA512, VOPRF mode.
RFC_CONTEXT = b"OPRFV1-\x01-ristretto255-SHA512"
SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
SKSM = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909"
PKSM = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
VECTORS = [
    {  # Test Vector 1, batch size 1
        "inputs": ["00"],
        "blinds": ["64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706"],
        "blinded": ["863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945"],
        "evaluated": ["aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e"],
        "proof": "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06"
        "6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        "r": "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        "outputs": [
            "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
            "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"
        ],
    },
    {  # Test Vector 3, batch size 2
        "inputs": ["00", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],
        "blinds": [
            "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
            "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        ],
        "blinded": [
            "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
            "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
        ],
        "evaluated": [
            "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
            "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a",
        ],
        "proof": "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a"
        "5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
        "r": "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
        "outputs": [
            "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
            "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c",
            "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
            "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6",
        ],
    },
]


def _pt(h: str) -> Point:
    return Point.from_bytes(bytes.fromhex(h))


def _sc(h: str) -> Scalar:
    return Scalar.from_bytes(bytes.fromhex(h))


def test_derive_key_pair_matches_rfc9497() -> None:
    # DeriveKeyPair: HashToScalar(seed || lp(info) || counter 0, "DeriveKeyPair" || ctx)
    derive_input = SEED + len(KEY_INFO).to_bytes(2, "big") + KEY_INFO + b"\x00"
    sk = hash_to_scalar(derive_input, b"DeriveKeyPair" + RFC_CONTEXT)
    assert sk.to_bytes().hex() == SKSM
    assert Point.base_mul(sk).hex() == PKSM


@pytest.mark.parametrize("vector", VECTORS, ids=["tv1", "tv3-batch2"])
def test_voprf_vectors_of_rfc9497(vector: dict[str, object]) -> None:
    sk, pk = _sc(SKSM), _pt(PKSM)
    inputs = [bytes.fromhex(x) for x in vector["inputs"]]  # type: ignore[attr-defined]
    blinds = [_sc(x) for x in vector["blinds"]]  # type: ignore[attr-defined]
    blinded = [
        hash_to_group(x, b"HashToGroup-" + RFC_CONTEXT) * b
        for x, b in zip(inputs, blinds, strict=True)
    ]
    assert [p.hex() for p in blinded] == vector["blinded"]
    evaluated = dprf.evaluate(sk, blinded)
    assert [p.hex() for p in evaluated] == vector["evaluated"]
    # the proof, byte for byte, with the vector's ProofRandomScalar
    proof = dprf._generate_proof(
        sk,
        Point.base(),
        pk,
        blinded,
        evaluated,
        _sc(vector["r"]),
        RFC_CONTEXT,  # type: ignore[arg-type]
    )
    assert proof.hex() == vector["proof"]
    dprf.verify(pk, blinded, evaluated, proof, context=RFC_CONTEXT)
    # Finalize: Hash(lp(input) || lp(blind^-1 · Z) || "Finalize")
    for x, b, z, out in zip(inputs, blinds, evaluated, vector["outputs"], strict=True):  # type: ignore[call-overload]
        y = z * b.invert()
        digest = hashlib.sha512(
            len(x).to_bytes(2, "big") + x + (32).to_bytes(2, "big") + y.to_bytes() + b"Finalize"
        ).hexdigest()
        assert digest == out
    # every single replaced element, and a flipped proof bit, fail verification
    for i in range(len(evaluated)):
        bad = list(evaluated)
        bad[i] = bad[i] + Point.base()
        with pytest.raises(ClusterError):
            dprf.verify(pk, blinded, bad, proof, context=RFC_CONTEXT, node=7)
    flipped = bytes([proof[0] ^ 1]) + proof[1:]
    with pytest.raises(ClusterError):
        dprf.verify(pk, blinded, evaluated, flipped, context=RFC_CONTEXT)


# -- the cluster's own use ----------------------------------------------------------------


def _cluster(
    n: int, t: int, seed: str = "cluster"
) -> tuple[dict[int, dkg.NodeShare], dict[int, Point], Point]:
    rng = DeterministicRandom(seed)
    idx = list(range(1, n + 1))
    rounds = [dkg.deal(i, t, idx, rng=rng) for i in idx]
    dealings = [d for d, _ in rounds]
    shares = {i: dkg.finish(i, dealings, {d.dealer: s[i] for d, s in rounds}) for i in idx}
    return shares, dkg.public_shares(dealings, idx), dkg.cluster_public_key(dealings)


def _answer(
    shares: dict[int, dkg.NodeShare], subset: tuple[int, ...], points: list[Point]
) -> dict[int, list[Point]]:
    lam = dprf.lagrange(subset)
    return {i: dprf.evaluate(shares[i], points, coefficient=lam[i]) for i in subset}


SHARES, PUBLIC, KEY = _cluster(4, 3)
POINTS = [dprf.point_for(b"\x01" * 16, "in", f"contacts/{i}", 1) for i in range(3)]


def _reference(points: list[Point]) -> list[Point]:
    """x·H with x interpolated from all shares (test-only: the cluster never does this)."""
    x = dkg.interpolate({i: s.share for i, s in SHARES.items()})
    assert Point.base_mul(x) == KEY
    return [p * x for p in points]


def test_any_t_of_n_combine_to_the_same_outputs() -> None:
    expected = _reference(POINTS)
    for subset in itertools.combinations(SHARES, 3):
        assert dprf.combine(_answer(SHARES, subset, POINTS), 3) == expected
        raw = {i: dprf.evaluate(SHARES[i], POINTS) for i in subset}
        assert dprf.combine(raw, 3, premultiplied=False) == expected


def test_t_minus_one_shares_do_not_combine() -> None:
    expected = _reference(POINTS)
    with pytest.raises(ClusterError):
        dprf.combine(_answer(SHARES, (1, 2, 3), POINTS) | {}, 2)
    # Interpolating only T-1 shares gives some other value, never the PRF output.
    two = dprf.combine(_answer(SHARES, (1, 2), POINTS), 2)
    assert all(a != b for a, b in zip(two, expected, strict=True))


def test_a_wrong_answer_is_named_by_its_proof() -> None:
    subset = (1, 3, 4)
    lam = dprf.lagrange(subset)
    rng = DeterministicRandom("proofs")
    for i in subset:
        z = dprf.evaluate(SHARES[i], POINTS, coefficient=lam[i])
        proof = dprf.prove(SHARES[i], POINTS, z, coefficient=lam[i], rng=rng)
        dprf.verify(PUBLIC[i], POINTS, z, proof, coefficient=lam[i], node=i)
        # the same answer checked as another node's, or under another coefficient, fails
        other = 2 if i != 2 else 1
        with pytest.raises(ClusterError) as err:
            dprf.verify(PUBLIC[other], POINTS, z, proof, coefficient=lam[i], node=other)
        assert err.value.node == other
        if lam[i] != Scalar.one():  # (λ_4 = 1 for {1, 3, 4})
            with pytest.raises(ClusterError):
                dprf.verify(PUBLIC[i], POINTS, z, proof, node=i)
    # a node using a wrong share (bit rot, malice) cannot make a valid proof for its answer
    wrong = SHARES[3].share + Scalar.one()
    z = dprf.evaluate(wrong, POINTS, coefficient=lam[3])
    proof = dprf.prove(wrong, POINTS, z, coefficient=lam[3], rng=rng)
    with pytest.raises(ClusterError, match="node 3") as err:
        dprf.verify(PUBLIC[3], POINTS, z, proof, coefficient=lam[3], node=3)
    assert err.value.node == 3


def test_every_spelling_of_a_subject_hashes_to_the_node_point() -> None:
    """(red team) A node hashes the NFC subject; a client verifying its proof for another
    spelling (a shredded subject's NFD form, asked for its tombstone) hashed that spelling,
    so every honest node's proof failed and the client excluded them all for good."""
    cid = b"\x01" * 16
    nfc, nfd = "contacts/Jos\u00e9", "contacts/Jose\u0301"
    node_side = [dprf.point_for(cid, "in", nfc, 1)]  # the node: the NFC subject
    z = dprf.evaluate(SHARES[2], node_side)
    proof = dprf.prove(SHARES[2], node_side, z, rng=DeterministicRandom("nfd"))
    for spelling in (nfc, nfd):  # the client: the spelling it holds
        client_side = [dprf.point_for(cid, "in", spelling, 1)]
        assert client_side == node_side
        dprf.verify(PUBLIC[2], client_side, z, proof, node=2)


def test_identity_answers_and_malformed_proofs_are_refused() -> None:
    z = dprf.evaluate(SHARES[1], POINTS)
    proof = dprf.prove(SHARES[1], POINTS, z)
    for bad in (b"", proof[:63], proof + b"\x00", b"\xff" * 64):
        with pytest.raises(ClusterError):
            dprf.verify(PUBLIC[1], POINTS, z, bad, node=1)
    with pytest.raises(ClusterError):
        dprf.verify(PUBLIC[1], POINTS, [Point.identity()] * 3, proof, node=1)
    with pytest.raises(ValueError):
        dprf.verify(PUBLIC[1], POINTS, z[:2], proof)


def test_one_nodes_share_alone_cannot_derive_a_kek() -> None:
    cid, subject = b"\x01" * 16, "contacts/0"
    kek = dprf.derive_kek(_reference(POINTS)[0], cid, subject, 1)
    # Everything node 1 holds: its share, its public data, every coefficient it could use.
    tries = [dprf.evaluate(SHARES[1], POINTS[:1])[0]]
    for subset in itertools.combinations(SHARES, 3):
        if 1 in subset:
            tries += _answer(SHARES, subset, POINTS[:1])[1]
    assert all(dprf.derive_kek(y, cid, subject, 1) != kek for y in tries)


def test_point_for_and_kek_are_domain_separated() -> None:
    base = dprf.point_for(b"c" * 16, "in", "s", 1)
    assert (
        len(
            {
                base,
                dprf.point_for(b"d" * 16, "in", "s", 1),
                dprf.point_for(b"c" * 16, "eu", "s", 1),
                dprf.point_for(b"c" * 16, "in", "t", 1),
                dprf.point_for(b"c" * 16, "in", "s", 2),
            }
        )
        == 5
    )
    # length prefixes: moving bytes between fields changes the point
    assert dprf.point_for(b"ab", "c", "s", 1) != dprf.point_for(b"a", "bc", "s", 1)
    y = POINTS[0]
    keks = {
        dprf.derive_kek(y, b"c" * 16, "s", 1),
        dprf.derive_kek(y, b"d" * 16, "s", 1),
        dprf.derive_kek(y, b"c" * 16, "t", 1),
        dprf.derive_kek(y, b"c" * 16, "s", 2),
    }
    assert len(keks) == 4 and all(len(k) == 16 for k in keks)
    with pytest.raises(ClusterError):
        dprf.derive_kek(Point.identity(), b"c", "s", 1)
    with pytest.raises(ValueError):
        dprf.point_for(b"c", "in", "s", -1)


def test_lagrange_coefficients_interpolate() -> None:
    lam = dprf.lagrange([1, 2, 3])
    # f(x) = 5 + 7x + 11x^2 at 1, 2, 3 -> f(0) = 5
    values = {i: Scalar.from_int(5 + 7 * i + 11 * i * i) for i in (1, 2, 3)}
    total = Scalar.zero()
    for i, v in values.items():
        total = total + lam[i] * v
    assert total == Scalar.from_int(5)
    assert dkg.interpolate(values, at=4) == Scalar.from_int(5 + 28 + 176)


@settings(max_examples=8)
@given(st.integers(2, 4), st.integers(0, 2), st.data())
def test_property_any_subset_of_size_t_agrees(t: int, extra: int, data: st.DataObject) -> None:
    n = t + extra
    shares, _public, _ = _cluster(n, t, seed=f"p{t}{extra}")
    subset = tuple(
        sorted(
            data.draw(
                st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=t, unique=True)
            )
        )
    )
    other = tuple(
        sorted(
            data.draw(
                st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=t, unique=True)
            )
        )
    )
    pts = POINTS[:1]
    assert dprf.combine(_answer(shares, subset, pts), t) == dprf.combine(
        _answer(shares, other, pts), t
    )
    # a wrong share in the subset changes the output
    bad = dict(shares)
    victim = subset[0]
    bad[victim] = dkg.NodeShare(victim, shares[victim].share + Scalar.one())
    assert dprf.combine(_answer(bad, subset, pts), t) != dprf.combine(
        _answer(shares, subset, pts), t
    )
