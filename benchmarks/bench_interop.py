"""SLIP-39 and pycryptodome-form shares: keysplit's implementations vs the originals.

Whole operations per second on one 16-byte secret, 3-of-5, timed in the same run:

* SLIP-39 generate / combine (iteration exponent 0, empty passphrase): keysplit.interop.slip39 vs
  shamir-mnemonic (baseline). Both spend most of their time in the same PBKDF2 Feistel
  rounds (10000 iterations of HMAC-SHA256 per operation), so this shows the overhead of
  the sharing layer and encoding, not a faster KDF.
* pycryptodome form split / combine: keysplit.interop.pycryptodome vs pycryptodome's
  Shamir (baseline), both pure Python over GF(2^128).
"""

from __future__ import annotations

import os
from typing import Any

import shamir_mnemonic
from Crypto.Protocol.SecretSharing import Shamir

from keysplit.interop import pycryptodome, slip39

from .harness import measure, progress, row

SECRET = os.urandom(16)


def run(quick: bool) -> list[dict[str, Any]]:
    n = 20 if quick else 100
    repeats = 3 if quick else 7
    rows: list[dict[str, Any]] = []

    def bench(name: str, unit: str, impls: list[tuple[str, Any, bool]]) -> None:
        progress(name)
        for impl, fn, base in impls:

            def loop(fn: Any = fn) -> None:
                for _ in range(n):
                    fn()

            rows.append(row(name, impl, n, unit, measure(loop, n, repeats), baseline=base))

    bench(
        "SLIP-39 generate 3-of-5",
        "backups/s",
        [
            (
                "shamir-mnemonic",
                lambda: shamir_mnemonic.generate_mnemonics(1, [(3, 5)], SECRET, b"", True, 0),
                True,
            ),
            (
                "keysplit",
                lambda: slip39.generate_mnemonics(1, [(3, 5)], SECRET, iteration_exponent=0),
                False,
            ),
        ],
    )
    ms = slip39.generate_mnemonics(1, [(3, 5)], SECRET, iteration_exponent=0)[0][:3]
    bench(
        "SLIP-39 combine 3 shares",
        "secrets/s",
        [
            ("shamir-mnemonic", lambda: shamir_mnemonic.combine_mnemonics(ms), True),
            ("keysplit", lambda: slip39.combine_mnemonics(ms), False),
        ],
    )
    bench(
        "pycryptodome-form split 3-of-5",
        "splits/s",
        [
            ("pycryptodome", lambda: Shamir.split(3, 5, SECRET), True),
            ("keysplit", lambda: pycryptodome.split_pycryptodome(SECRET, 3, 5), False),
        ],
    )
    shares = Shamir.split(3, 5, SECRET)[1:4]
    bench(
        "pycryptodome-form combine 3 shares",
        "secrets/s",
        [
            ("pycryptodome", lambda: Shamir.combine(shares), True),
            ("keysplit", lambda: pycryptodome.combine_pycryptodome(shares), False),
        ],
    )
    return rows
