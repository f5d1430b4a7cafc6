"""Batch RFC 3394 key wrap vs a per-key ``cryptography`` ``aes_key_wrap`` loop.

Both wrap (and unwrap) the same N random 16-byte data keys under one KEK in the same
run. Target (DESIGN.md §8): >= 20 M keys/s in batch and >= 10x the per-key loop. The
keyring wraps with per-row IVs (subject binding): those rows, and the keyed IV derivation
itself, are measured too.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from keysplit import keywrap
from keysplit.keyring.datakeys import _SubjectIV

from .harness import measure, row


def _row(
    bench: str, impl: str, n: int, stats: tuple[float, float, float], baseline: bool, **extra: Any
) -> dict[str, Any]:
    return row(bench, impl, n, "keys/s", stats, baseline=baseline, **extra)


def run(quick: bool) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    repeats = 3 if quick else 5
    kek = os.urandom(16)
    keys = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16)
    key_list = [keys[i].tobytes() for i in range(n)]
    wrapped = keywrap.wrap_batch(kek, keys)
    wrapped_list = [wrapped[i].tobytes() for i in range(n)]
    assert wrapped_list[n // 2] == aes_key_wrap(kek, key_list[n // 2])

    def loop_wrap() -> None:
        for k in key_list:
            aes_key_wrap(kek, k)

    def loop_unwrap() -> None:
        for w in wrapped_list:
            aes_key_unwrap(kek, w)

    ivs = np.frombuffer(os.urandom(8 * n), np.uint8).reshape(n, 8)
    wrapped_iv = keywrap.wrap_batch(kek, keys, iv=ivs)
    subjects = [f"user-{i:08d}" for i in range(n)]
    binder = _SubjectIV(kek, "00" * 16, 1)
    rows = [
        _row(
            "keywrap-wrap-16B",
            "cryptography aes_key_wrap loop",
            n,
            measure(loop_wrap, n, repeats),
            True,
        ),
        _row(
            "keywrap-wrap-16B",
            "keysplit wrap_batch",
            n,
            measure(lambda: keywrap.wrap_batch(kek, keys), n, repeats),
            False,
        ),
        _row(
            "keywrap-unwrap-16B",
            "cryptography aes_key_unwrap loop",
            n,
            measure(loop_unwrap, n, repeats),
            True,
        ),
        _row(
            "keywrap-unwrap-16B",
            "keysplit unwrap_batch (+ validity mask)",
            n,
            measure(lambda: keywrap.unwrap_batch(kek, wrapped), n, repeats),
            False,
        ),
        _row(
            "keywrap-wrap-16B",
            "keysplit wrap_batch, per-row IV (subject-bound)",
            n,
            measure(lambda: keywrap.wrap_batch(kek, keys, iv=ivs), n, repeats),
            False,
        ),
        _row(
            "keywrap-unwrap-16B",
            "keysplit unwrap_batch, per-row IV (subject-bound)",
            n,
            measure(lambda: keywrap.unwrap_batch(kek, wrapped_iv, iv=ivs), n, repeats),
            False,
        ),
        _row(
            "keywrap-subject-iv",
            "keyed subject IVs (HMAC-SHA256 per row, hashlib)",
            n,
            measure(lambda: binder.ivs(subjects), n, repeats),
            True,
        ),
    ]
    return rows


if __name__ == "__main__":
    import sys

    for r in run("--full" not in sys.argv):
        print(
            f"{r['benchmark']:20} {r['impl']:42} n={r['n']:>9,} median {r['median']:>14,.0f} "
            f"{r['unit']} (min {r['min']:,.0f}, max {r['max']:,.0f})"
        )
