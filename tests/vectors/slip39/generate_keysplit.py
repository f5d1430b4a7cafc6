"""Regenerate tests/vectors/slip39/keysplit.json (run from the repo root).

Known answers for keysplit's own SLIP-39 generator, through the seeded RNG seam. Each
valid case is cross-checked against shamir-mnemonic before it is written; the invalid
cases are derived from valid ones and say what must happen.
"""

from __future__ import annotations

import json
from pathlib import Path

import shamir_mnemonic

from keysplit.interop import slip39
from keysplit.rng import DeterministicRandom

OUT = Path(__file__).with_name("keysplit.json")
CASES = [
    ("1-of-1 128-bit, extendable", "bb54aac4b89dc868ba37d9cc21b2cece", 1, [(1, 1)], "", 0, True),
    (
        "3-of-5 128-bit, passphrase",
        "00112233445566778899aabbccddeeff",
        1,
        [(3, 5)],
        "TREZOR",
        1,
        True,
    ),
    ("2-of-3 256-bit, classic", "ff" * 32, 1, [(2, 3)], "", 0, False),
    ("2 of 4 groups", "0f" * 16, 2, [(1, 1), (1, 1), (3, 5), (2, 6)], "x", 0, True),
]


def _flip_last_word(m: str) -> str:
    words = m.split()
    words[-1] = "academic" if words[-1] != "academic" else "acid"
    return " ".join(words)


def main() -> None:
    out = []
    for name, secret_hex, gt, groups, pw, e, ext in CASES:
        secret = bytes.fromhex(secret_hex)
        ms = slip39.generate_mnemonics(
            gt,
            groups,
            secret,
            passphrase=pw.encode(),
            iteration_exponent=e,
            extendable=ext,
            rng=DeterministicRandom(name),
        )
        pick = [m for g in range(gt) for m in ms[g][: groups[g][0]]]
        assert shamir_mnemonic.combine_mnemonics(pick, pw.encode()) == secret
        base = {
            "name": name,
            "seed": name,
            "group_threshold": gt,
            "groups": groups,
            "passphrase": pw,
            "iteration_exponent": e,
            "extendable": ext,
        }
        out.append({**base, "secret": secret_hex, "mnemonics": ms, "combine": pick, "expect": "ok"})
        out.append(
            {
                **base,
                "name": name + ": typo in one word",
                "secret": "",
                "combine": [_flip_last_word(pick[0]), *pick[1:]],
                "expect": "bad-checksum",
            }
        )
        if len(pick) > 1:
            out.append(
                {
                    **base,
                    "name": name + ": one share short",
                    "secret": "",
                    "combine": pick[1:],
                    "expect": "insufficient",
                }
            )
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
