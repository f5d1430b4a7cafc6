"""Red team (issue 23 follow-up): batch split and combine at chunk and thread boundaries.

The batch paths work in chunks (split: a chunk size from the schedule's depth, aligned to
64 bytes; combine: fixed) over ranges cut per thread. With the chunk constants shrunk to
a few dozen bytes, small batches cross many chunk and thread boundaries, and every share
byte is checked against an independent interpolation written here (plain Python GF(2^8),
no tables, nothing from keysplit): any k shares give the secret, and k + 1 shares lie
on one polynomial of degree k - 1.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysplit.hazmat import shamir


def _mul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return r


def _inv(a: int) -> int:
    return next(x for x in range(1, 256) if _mul(a, x) == 1)


def _at(points: list[tuple[int, int]], x0: int) -> int:
    """Lagrange interpolation of ``points`` evaluated at ``x0``."""
    acc = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = _mul(num, x0 ^ xj)
                den = _mul(den, xi ^ xj)
        acc ^= _mul(yi, _mul(num, _inv(den)))
    return acc


SMALL = {"_CHUNK_BYTES": 256, "_MIN_CHUNK": 16, "_MAX_CHUNK": 64, "_COMBINE_CHUNK": 48}


@settings(max_examples=60, deadline=None)
@given(
    n_keys=st.integers(1, 90),
    length=st.integers(1, 17),
    kn=st.tuples(st.integers(2, 5), st.integers(0, 3)),
    threads=st.integers(1, 4),
    seed=st.binary(min_size=8, max_size=8),
)
def test_split_and_combine_across_chunk_and_thread_boundaries(
    n_keys: int,
    length: int,
    kn: tuple[int, int],
    threads: int,
    seed: bytes,
) -> None:
    k, extra = kn
    n = k + extra
    rng = np.random.default_rng(list(seed))
    secrets = rng.integers(0, 256, size=(n_keys, length), dtype=np.uint8)
    with pytest.MonkeyPatch.context() as m:
        for name, value in SMALL.items():
            m.setattr(shamir, name, value)
        shares = shamir.split_batch(secrets, k, n, threads=threads)
        combined = [
            (
                subset,
                shamir.combine_batch(
                    [j + 1 for j in subset], shares[list(subset)], threads=threads
                ),
            )
            for subset in itertools.islice(itertools.combinations(range(n), k), 4)
        ]
    assert shares.shape == (n, n_keys, length)
    flat_s = secrets.reshape(-1)
    flat = shares.reshape(n, -1)
    total = flat_s.size
    # every byte: k shares interpolate to the secret; a (k+1)-th share (if any) lies on
    # the same polynomial; checked on every byte up to 256, on a sample beyond
    idx = range(total) if total <= 256 else sorted(set(rng.integers(0, total, 256).tolist()))
    for b in idx:
        pts = [(j + 1, int(flat[j, b])) for j in range(k)]
        assert _at(pts, 0) == flat_s[b], (b, pts)
        if n > k:
            assert _at(pts, n) == flat[n - 1, b], b
    for subset, got in combined:
        np.testing.assert_array_equal(got, secrets, err_msg=str(subset))
