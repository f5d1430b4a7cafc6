"""Regenerate tests/vectors/shamir.json (run from the repo root).

Each case is produced through the seeded RNG seam and cross-checked against
shamir-mnemonic's independent interpolation before it is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from shamir_mnemonic.shamir import RawShare, _interpolate

from keysplit.hazmat import shamir
from keysplit.rng import DeterministicRandom

CASES = [
    ("2-of-2 one byte", "00", 2, 2, "seed-a"),
    ("2-of-3 aes128", "000102030405060708090a0b0c0d0e0f", 2, 3, "seed-b"),
    ("3-of-5 aes128", "2b7e151628aed2a6abf7158809cf4f3c", 3, 5, "seed-c"),
    (
        "5-of-9 aes256",
        "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        5,
        9,
        "seed-d",
    ),
    ("2-of-255 max count", "ff", 2, 255, "seed-e"),
    ("255-of-255 max threshold", "a5a5", 255, 255, "seed-f"),
]


def main() -> None:
    out = []
    for name, secret_hex, k, n, seed in CASES:
        secret = bytes.fromhex(secret_hex)
        shares = shamir.split(secret, k, n, rng=DeterministicRandom(seed))
        assert _interpolate([RawShare(x, y) for x, y in shares[:k]], 0) == secret
        out.append(
            {
                "name": name,
                "secret": secret_hex,
                "threshold": k,
                "count": n,
                "seed": seed,
                "shares": [[x, y.hex()] for x, y in shares],
            }
        )
    doc = {
        "description": "keysplit.shamir.split known answers; seeded via "
        "keysplit.rng.DeterministicRandom(seed); x = 1..count",
        "cases": out,
    }
    path = Path(__file__).with_name("shamir.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
