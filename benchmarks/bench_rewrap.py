"""Rewrap end to end: move every data key of a store to a new KEK version, SQLite included.

Store with N subjects (1,000,000 in full mode) in the keyring's SQLite key store; each
repeat rotates (so every key is stale) and rewraps everything in batches of 10,000 (one
transaction each, ``synchronous=FULL``). Reference in the same run: the same loop over
the same store API with a per-key ``cryptography`` ``aes_key_unwrap``/``aes_key_wrap``
instead of the batched key wrap, so the ratio isolates what batching buys end to end.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from keysplit import Keyring, UnsealedKeyring, WrappedKey

BATCH = 10_000


def _row(bench: str, impl: str, n: int, rates: list[float], baseline: bool) -> dict[str, Any]:
    return {
        "benchmark": bench,
        "impl": impl,
        "n": n,
        "unit": "subjects/s",
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "baseline": baseline,
    }


def _populate(ku: UnsealedKeyring, n: int) -> None:
    keks = ku.keks_for_rewrap()  # benchmark setup: rows as the keyring itself wraps them
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        raw = np.frombuffer(os.urandom(16 * m), np.uint8).reshape(m, 16)
        ku.store.insert_many(keks.wrap([f"user-{lo + i:08d}" for i in range(m)], raw))


def _naive_rewrap(ku: UnsealedKeyring) -> int:
    store = ku.store
    current = ku.keyring.meta.current_kek
    keks = ku.keks_for_rewrap()
    after, done = "", 0
    while rows := store.stale_batch(current, after, BATCH):
        after = rows[-1].subject
        pairs = []
        for r in rows:
            key = aes_key_unwrap(keks.kek(r.kek_version), r.wrapped)
            pairs.append((r, WrappedKey(r.subject, current, aes_key_wrap(keks.kek(current), key))))
        done += store.replace_many(pairs)
    return done


def _repeat(ku: UnsealedKeyring, n: int, fn: Callable[[], int], repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        ku.rotate()
        t0 = time.perf_counter()
        done = fn()
        rates.append(n / (time.perf_counter() - t0))
        assert done == n, (done, n)
    return rates


def run(quick: bool) -> list[dict[str, Any]]:
    n = 50_000 if quick else 1_000_000
    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            _populate(ku, n)
            base = _repeat(ku, n, lambda: _naive_rewrap(ku), repeats)
            ours = _repeat(ku, n, lambda: ku.rewrap(batch_size=BATCH).rewrapped, repeats)
            # the records written before any of this still open: spot check one subject
            assert ku.store.get("user-00000000") is not None
    return [
        _row("rewrap-sqlite", "per-key aes_key_(un)wrap + same SQLite batches", n, base, True),
        _row("rewrap-sqlite", "UnsealedKeyring.rewrap (batched key wrap)", n, ours, False),
    ]


if __name__ == "__main__":
    import sys

    for r in run("--full" not in sys.argv):
        print(
            f"{r['benchmark']:14} {r['impl']:48} n={r['n']:>9,} median {r['median']:>12,.0f} "
            f"{r['unit']} (min {r['min']:,.0f}, max {r['max']:,.0f})"
        )
