"""libsodium (through keysplit.hazmat.ristretto) against a plain-integer ristretto255 written
from RFC 9496 (ristretto_ref.py): group operations, the one-way map, and the DLEQ proofs of
keysplit.cluster.dprf verified along this second path."""

from __future__ import annotations

import hashlib

import pytest
import ristretto_ref as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cluster_ristretto import BAD_ENCODINGS, HASH_TO_POINT, SMALL_MULTIPLES

from keysplit.cluster import dkg, dprf
from keysplit.errors import FormatError
from keysplit.hazmat.ristretto import Point, Scalar, expand_message_xmd
from keysplit.rng import DeterministicRandom

scalars = st.integers(min_value=0, max_value=ref.L - 1)


def test_the_reference_itself_reproduces_rfc9496() -> None:
    assert ref.SQRT_M1**2 % ref.P == ref.P - 1
    assert (ref.D * 121666 + 121665) % ref.P == 0
    for i, expected in enumerate(SMALL_MULTIPLES):
        assert ref.encode(ref.mul(i, ref.BASE)).hex() == expected
    for bad in BAD_ENCODINGS:
        with pytest.raises(ValueError):
            ref.decode(bytes.fromhex(bad))
    for label, expected in HASH_TO_POINT:
        assert (
            ref.encode(ref.from_uniform(hashlib.sha512(label.encode()).digest())).hex() == expected
        )


@settings(max_examples=25)
@given(scalars, scalars)
def test_scalar_mult_and_addition_agree(a: int, b: int) -> None:
    pa = Point.base_mul(Scalar.from_int(a))
    ra = ref.mul(a, ref.BASE)
    assert pa.to_bytes() == ref.encode(ra)
    q = pa * Scalar.from_int(b)
    assert q.to_bytes() == ref.encode(ref.mul(b, ra))
    assert (pa + q).to_bytes() == ref.encode(ref.add(ra, ref.mul(b, ra)))
    assert (pa - q).to_bytes() == ref.encode(ref.add(ra, ref.neg(ref.mul(b, ra))))


@settings(max_examples=40)
@given(st.binary(min_size=64, max_size=64))
def test_one_way_map_agrees(data: bytes) -> None:
    assert Point.from_uniform(data).to_bytes() == ref.encode(ref.from_uniform(data))


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_decoding_accepts_exactly_what_the_rfc_accepts(data: bytes) -> None:
    try:
        ref.decode(data)
        ok = True
    except ValueError:
        ok = False
    if ok:
        assert Point.from_bytes(data).to_bytes() == data
    else:
        with pytest.raises(FormatError):
            Point.from_bytes(data)


@given(st.binary(max_size=300), st.binary(min_size=1, max_size=40), st.integers(1, 300))
def test_expand_message_xmd_agrees(msg: bytes, dst: bytes, n: int) -> None:
    assert expand_message_xmd(msg, dst, n) == ref.xmd_sha512(msg, dst, n)


def test_dleq_proofs_verify_along_the_second_path() -> None:
    rng = DeterministicRandom("crosscheck")
    idx = [1, 2, 3]
    rounds = [dkg.deal(i, 2, idx, rng=rng) for i in idx]
    dealings = [d for d, _ in rounds]
    shares = {i: dkg.finish(i, dealings, {d.dealer: s[i] for d, s in rounds}) for i in idx}
    public = dkg.public_shares(dealings, idx)
    points = [dprf.point_for(b"\x02" * 16, "eu", f"s{j}", 3) for j in range(3)]
    lam = dprf.lagrange([2, 3])
    z = dprf.evaluate(shares[3], points, coefficient=lam[3])
    proof = dprf.prove(shares[3], points, z, coefficient=lam[3], rng=rng)
    k_pub = (public[3] * lam[3]).to_bytes()
    cs = [p.to_bytes() for p in points]
    ds = [p.to_bytes() for p in z]
    assert ref.dleq_verify(k_pub, cs, ds, proof, dprf.CONTEXT)
    # the reference rejects what keysplit rejects
    assert not ref.dleq_verify(public[3].to_bytes(), cs, ds, proof, dprf.CONTEXT)
    assert not ref.dleq_verify(k_pub, cs, [ds[1], ds[0], ds[2]], proof, dprf.CONTEXT)
    assert not ref.dleq_verify(k_pub, cs, ds, proof, b"another context")
    # and the outputs are x_3·λ_3·H along the reference too
    x3 = int.from_bytes((shares[3].share * lam[3]).to_bytes(), "little")
    assert ds == [ref.encode(ref.mul(x3, ref.decode(c))) for c in cs]
