"""One verified share round trip per key: split 3-of-5, text-encode, parse, combine.

What a key ceremony pays per secret for keysplit's durable shares (set id, checksums,
recovery tag, interpolation of extra shares) next to pycryptodome's raw ``Shamir``
(baseline: no encoding, no verification, a wrong share gives a wrong key) and
shamir-mnemonic's SLIP-39 (verified, mnemonic words; its passphrase KDF runs at the
lowest iteration exponent, 0). Single keys, so this is per-call overhead, not the batch
core (see bench_shamir).
"""

from __future__ import annotations

import os
from typing import Any

from keysplit import Share, combine, split

from .harness import measure, progress, row

K, N = 3, 5
QUICK_N, FULL_N = 20, 200
BENCH = f"share round trip {K}-of-{N}, 16-byte key"


def run(quick: bool) -> list[dict[str, Any]]:
    from Crypto.Protocol.SecretSharing import Shamir
    from shamir_mnemonic import combine_mnemonics, generate_mnemonics

    n = QUICK_N if quick else FULL_N
    repeats = 3 if quick else 7
    keys = [os.urandom(16) for _ in range(n)]

    def keysplit_rt() -> None:
        for key in keys:
            texts = [str(s) for s in split(key, K, N)]
            assert combine([Share.parse(t) for t in texts[1:4]]) == key

    def pycryptodome_rt() -> None:
        for key in keys:
            assert Shamir.combine(Shamir.split(K, N, key)[1:4]) == key

    def slip39_rt() -> None:
        for key in keys:
            words = generate_mnemonics(1, [(K, N)], key, iteration_exponent=0)[0]
            assert combine_mnemonics(words[1:4]) == key

    rows = []
    for impl, fn, base in (
        ("pycryptodome Shamir (raw)", pycryptodome_rt, True),
        ("keysplit Share (verified, text)", keysplit_rt, False),
        ("shamir-mnemonic SLIP-39 (words)", slip39_rt, False),
    ):
        progress(f"shares: {impl}")
        rows.append(row(BENCH, impl, n, "keys/s", measure(fn, n, repeats), baseline=base))
    return rows
