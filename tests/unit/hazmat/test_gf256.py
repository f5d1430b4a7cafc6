"""GF(2^8) with the AES polynomial: known answers and a slow bitwise reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysplit.hazmat import gf256


def ref_mul(a: int, b: int) -> int:
    """Schoolbook carry-less multiply then reduce by 0x11B: independent of the tables."""
    p = 0
    for i in range(8):
        if (b >> i) & 1:
            p ^= a << i
    for bit in range(14, 7, -1):
        if (p >> bit) & 1:
            p ^= 0x11B << (bit - 8)
    return p


ALL = np.arange(256, dtype=np.uint8)


def test_known_answers() -> None:
    # FIPS-197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}; and 3 * 7 = 9.
    assert ref_mul(0x57, 0x83) == 0xC1
    assert gf256.mul_scalar(0x57, 0x83) == 0xC1
    assert gf256.mul_scalar(0x57, 0x13) == 0xFE
    assert gf256.mul_scalar(3, 7) == 9
    # FIPS-197 section 4.2.1: xtime chain of {57}.
    chain = [0x57, 0xAE, 0x47, 0x8E, 0x07]
    for a, b in itertools.pairwise(chain):
        assert int(gf256.xtime(np.array([a], dtype=np.uint8))[0]) == b


def test_full_multiplication_table_matches_reference() -> None:
    table = np.array([[ref_mul(a, b) for b in range(256)] for a in range(256)], dtype=np.uint8)
    for c in range(256):
        assert np.array_equal(gf256.mul_const(ALL, c), table[:, c]), c
        assert all(gf256.mul_scalar(a, c) == table[a, c] for a in range(256))
    aa, bb = np.meshgrid(ALL, ALL, indexing="ij")
    assert np.array_equal(gf256.mul(aa, bb), table)


def test_inverse_of_every_element() -> None:
    inv = gf256.inv(ALL)
    assert inv[0] == 0
    for a in range(1, 256):
        assert ref_mul(a, int(inv[a])) == 1
        assert gf256.inv_scalar(a) == inv[a]


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        gf256.inv_scalar(0)
    with pytest.raises(ValueError):
        gf256.mul_scalar(256, 1)
    with pytest.raises(TypeError):
        gf256.xtime(np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError):
        gf256.mul_const(ALL, 256)


@given(st.binary(min_size=1, max_size=64), st.integers(0, 255))
def test_mul_const_distributes_over_xor(data: bytes, c: int) -> None:
    a = np.frombuffer(data, dtype=np.uint8)
    b = a[::-1].copy()
    assert np.array_equal(gf256.mul_const(a ^ b, c), gf256.mul_const(a, c) ^ gf256.mul_const(b, c))
