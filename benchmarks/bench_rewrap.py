"""Rewrap end to end: move every data key of a store to a new KEK version, SQLite included.

Store with N subjects (1,000,000 in full mode) in the keyring's SQLite key store; each
repeat rotates (so every key is stale) and rewraps everything in batches of 10,000 (one
transaction each, ``synchronous=FULL``). Reference in the same run: the same loop over
the same store API with a per-key ``cryptography`` ``aes_key_unwrap``/``aes_key_wrap``
instead of the batched key wrap, so the ratio isolates what batching buys end to end.
The keyring's rows are bound to their subject (two keyed IVs per row: the old version's to
unwrap, the new one's to wrap); the reference runs over default-IV rows in a store of its
own, as keyrings wrote them before the binding.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from keysplit import Keyring, UnsealedKeyring
from keysplit.hazmat import keywrap
from keysplit.store import WrappedKey

from .harness import Stats, measure, row, run_standalone

BATCH = 10_000


def _populate(ku: UnsealedKeyring, n: int, *, bound: bool) -> None:
    """Benchmark setup: rows as the keyring wraps them (bound to their subject), or with
    RFC 3394's default IV for the per-key reference (what keyrings wrote before binding)."""
    keks = ku.keks_for_rewrap()
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        raw = np.frombuffer(os.urandom(16 * m), np.uint8).reshape(m, 16)
        subjects = [f"user-{lo + i:08d}" for i in range(m)]
        if bound:
            rows = keks.wrap(subjects, raw)
        else:
            w = keywrap.wrap_batch(keks.kek(keks.current), raw)
            rows = [WrappedKey(s, keks.current, w[i].tobytes()) for i, s in enumerate(subjects)]
        ku.store.insert_many(rows)


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


def _repeat(ku: UnsealedKeyring, n: int, fn: Callable[[], int], repeats: int) -> Stats:
    """Each repeat first rotates (untimed: every key is stale), then rewraps all ``n``."""

    def rewrap_all() -> None:
        done = fn()
        assert done == n, (done, n)

    return measure(rewrap_all, n, repeats, warmup=0, setup=ku.rotate)


def run(quick: bool) -> list[dict[str, Any]]:
    n = 50_000 if quick else 1_000_000
    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "ref", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            _populate(ku, n, bound=False)
            base = _repeat(ku, n, lambda: _naive_rewrap(ku), repeats)
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            _populate(ku, n, bound=True)
            ours = _repeat(ku, n, lambda: ku.rewrap(batch_size=BATCH).rewrapped, repeats)
            # every row still opens under its own subject: spot check one
            assert ku.data_keys(["user-00000000"])[0] is not None
    unit = "subjects/s"
    return [
        row("rewrap-sqlite", "per-key aes_key_(un)wrap + same SQLite batches", n, unit, base,
            baseline=True),
        row("rewrap-sqlite", "UnsealedKeyring.rewrap (batched key wrap, subject-bound)", n, unit,
            ours),
    ]  # fmt: skip


if __name__ == "__main__":
    run_standalone(run, sys.argv)
