"""One verified share round trip per key: split 3-of-5, text-encode, parse, combine.

What a key ceremony pays per secret for keysplit's durable shares (set id, checksums,
recovery tag, interpolation of extra shares) next to pycryptodome's raw ``Shamir``
(baseline: no encoding, no verification, a wrong share gives a wrong key) and
shamir-mnemonic's SLIP-39 (verified, mnemonic words; its passphrase KDF runs at the
lowest iteration exponent, 0). Single keys, so this is per-call overhead, not the batch
core (see bench_shamir). Self-contained: only ``time.perf_counter`` and ``statistics``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from keysplit import Share, combine, split

K, N = 3, 5


def _measure(fn: Callable[[], None], n: int, repeats: int) -> tuple[float, float, float]:
    fn()  # warm up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), min(rates), max(rates)


def _row(impl: str, n: int, stats: tuple[float, float, float], baseline: bool) -> dict[str, Any]:
    med, lo, hi = stats
    return {
        "benchmark": f"share round trip {K}-of-{N}, 16-byte key",
        "impl": impl,
        "n": n,
        "unit": "keys/s",
        "median": med,
        "min": lo,
        "max": hi,
        "baseline": baseline,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    from Crypto.Protocol.SecretSharing import Shamir
    from shamir_mnemonic import combine_mnemonics, generate_mnemonics

    n = 20 if quick else 200
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

    return [
        _row("pycryptodome Shamir (raw)", n, _measure(pycryptodome_rt, n, repeats), True),
        _row("keysplit Share (verified, text)", n, _measure(keysplit_rt, n, repeats), False),
        _row("shamir-mnemonic SLIP-39 (words)", n, _measure(slip39_rt, n, repeats), False),
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(f"{r['impl']:34s} {r['median']:>10.0f} {r['unit']}", end="")
        print(f"  (min {r['min']:.0f}, max {r['max']:.0f})")
