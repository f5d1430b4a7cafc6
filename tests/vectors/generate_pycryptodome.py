"""Regenerate tests/vectors/pycryptodome.json (run from the repo root).

Shares in pycryptodome's GF(2^128) form (``index-hex`` lines), made by
``keysplit.interop.pycryptodome.split_pycryptodome`` through the seeded RNG seam and cross-checked
with pycryptodome's own ``Shamir.combine`` before they are written. Each entry says what
combining ``text`` (with ``threshold`` and ``ssss``) must do.
"""

from __future__ import annotations

import json
from pathlib import Path

from Crypto.Protocol.SecretSharing import Shamir

from keysplit.interop import pycryptodome
from keysplit.rng import DeterministicRandom

OUT = Path(__file__).with_name("pycryptodome.json")
SECRET = "000102030405060708090a0b0c0d0e0f"


def main() -> None:
    out = []
    for k, n, ssss in ((2, 3, False), (3, 5, False), (3, 5, True), (1, 1, False)):
        name = f"{k}-of-{n}{' ssss' if ssss else ''}"
        shares = pycryptodome.split_pycryptodome(
            bytes.fromhex(SECRET), k, n, ssss=ssss, rng=DeterministicRandom(name)
        )
        assert Shamir.combine(shares[-k:], ssss=ssss).hex() == SECRET
        text = pycryptodome.format_pycryptodome(shares)
        base = {"threshold": k, "ssss": ssss, "seed": name, "count": n}
        out.append({**base, "name": name, "text": text, "secret": SECRET, "expect": "ok"})
        if n > k:
            x, y = shares[-1]
            flipped = (x, bytes([y[0] ^ 0x80]) + y[1:])
            bad = pycryptodome.format_pycryptodome([*shares[:-1], flipped])
            out.append(
                {
                    **base,
                    "name": name + ": last share altered",
                    "text": bad,
                    "secret": "",
                    "expect": "recovery-failed",
                }
            )
            short = pycryptodome.format_pycryptodome(shares[: k - 1])
            if k > 1:
                out.append(
                    {
                        **base,
                        "name": name + ": too few",
                        "text": short,
                        "secret": "",
                        "expect": "insufficient",
                    }
                )
            dup = pycryptodome.format_pycryptodome([shares[0], shares[0], *shares[1:k]])
            out.append(
                {
                    **base,
                    "name": name + ": duplicate",
                    "text": dup,
                    "secret": "",
                    "expect": "duplicate",
                }
            )
    out.append(
        {
            "name": "truncated hex",
            "threshold": 2,
            "ssss": False,
            "text": "1-00ff\n",
            "secret": "",
            "expect": "bad-format",
        }
    )
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
