"""Batch RFC 3394 key wrap vs a per-key ``cryptography`` ``aes_key_wrap`` loop.

Both wrap (and unwrap) the same N random 16-byte data keys under one KEK in the same
run. Target (DESIGN.md §8): >= 20 M keys/s in batch and >= 10x the per-key loop. The
keyring wraps with per-row IVs (subject binding): those rows, and the keyed IV derivation
itself, are measured too.

The ceiling row: the AES work ``wrap_batch`` cannot avoid (``6 * L / 8`` AES-ECB passes
over one 16-byte block per key, with ``cryptography``, in ``wrap_batch``'s chunks and
threads, and nothing else: no loads, xors or output), timed interleaved with
``wrap_batch``. Its ratio says what share of this host's AES the batch path reaches, so a
slow run on a loaded host reads as the host (both fall) or the code (only wrap_batch falls).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from keysplit.hazmat import _outputs, _parallel, keywrap
from keysplit.keyring.datakeys import _SubjectIV

from .harness import Stats, measure, measure_interleaved, row, run_standalone


def ecb_passes(key_bytes: int) -> int:
    """AES-ECB passes a wrap of ``key_bytes``-byte keys makes over one block per key: RFC
    3394's 6 steps over its ``key_bytes / 8`` half-blocks (12 for 16-byte keys, 24 for 32)."""
    return 6 * key_bytes // 8


def ceiling_label(key_bytes: int) -> str:
    """The ceiling row's name: the passes it runs, for the key size it is run with."""
    return f"AES-ECB ceiling: the {ecb_passes(key_bytes)} ECB passes alone (same chunks, threads)"


def ecb_ceiling(kek: bytes, count: int, steps: int, threads: int | None = None) -> None:
    """``steps`` AES-ECB passes over one 16-byte block per key in ``wrap_batch``'s chunks
    and threads: the AES a batch key wrap cannot avoid, with no numpy around it."""
    chunk = keywrap._CHUNK

    def work(lo0: int, hi0: int) -> None:
        enc = Cipher(algorithms.AES(kek), modes.ECB()).encryptor()
        buf = bytearray(16 * min(chunk, hi0 - lo0) + 16)  # update_into wants 16 spare bytes
        for lo in range(lo0, hi0, chunk):
            src = memoryview(buf)[: 16 * (min(hi0, lo + chunk) - lo)]
            for _ in range(steps):
                enc.update_into(src, buf)  # in place, one cache-resident buffer

    _parallel.run_ranges(work, count, chunk, threads)


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
    # wrap_batch and its AES ceiling interleaved: their ratio is a same-run figure.
    paired = measure_interleaved(
        {
            "wrap": lambda: keywrap.wrap_batch(kek, keys),
            "ceiling": lambda: ecb_ceiling(kek, n, ecb_passes(keys.shape[1])),
        },
        n,
        repeats,
    )
    share = paired["wrap"][0] / paired["ceiling"][0]
    cases: list[tuple[str, str, Callable[[], object] | Stats, bool]] = [
        ("keywrap-wrap-16B", "cryptography aes_key_wrap loop", loop_wrap, True),
        ("keywrap-wrap-16B", "keysplit wrap_batch", paired["wrap"], False),
        ("keywrap-unwrap-16B", "cryptography aes_key_unwrap loop", loop_unwrap, True),
        ("keywrap-unwrap-16B", "keysplit unwrap_batch (+ validity mask)",
         lambda: keywrap.unwrap_batch(kek, wrapped), False),
        ("keywrap-wrap-16B", "keysplit wrap_batch, per-row IV (subject-bound)",
         lambda: keywrap.wrap_batch(kek, keys, iv=ivs), False),
        ("keywrap-unwrap-16B", "keysplit unwrap_batch, per-row IV (subject-bound)",
         lambda: keywrap.unwrap_batch(kek, wrapped_iv, iv=ivs), False),
        ("keywrap-subject-iv", "keyed subject IVs (HMAC-SHA256 per row, hashlib)",
         lambda: binder.ivs(subjects), True),
    ]  # fmt: skip
    target = {"target": 20e6} if n == 1_000_000 else {}  # issue 23: by default at 10^6
    rows = [
        row(
            bench,
            impl,
            n,
            "keys/s",
            fn if isinstance(fn, tuple) else measure(fn, n, repeats),
            baseline=base,
            **(target if impl == "keysplit wrap_batch" else {}),
        )
        for bench, impl, fn, base in cases
    ]
    rows.append(
        row(
            "keywrap-wrap-16B",
            ceiling_label(keys.shape[1]),
            n,
            "keys/s",
            paired["ceiling"],
            note=f"wrap_batch reached {share:.2f} of the AES-ECB ceiling (medians, "
            "interleaved in this run)",
        )
    )
    rows.append(
        row(
            "keywrap-wrap-16B",
            "keysplit wrap_batch, cold (fresh pages every call)",
            n,
            "keys/s",
            measure(lambda: keywrap.wrap_batch(kek, keys), n, repeats, setup=_outputs.clear),
            note="hazmat/_outputs.py dropped before each call: first-touch page faults of "
            "the output, as on a first call",
        )
    )
    return rows


if __name__ == "__main__":
    run_standalone(run, sys.argv)
