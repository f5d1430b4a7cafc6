"""Regenerate tests/vectors/vault.json and tests/vectors/proof.json (run from the repo root:
``.venv/bin/python tests/vectors/generate_custodians.py``).

Vault keys come from tests/support/vault_reference.py (an independent transcription of Vault's
shamir.go) under a seeded ``random.Random``; shares for the proof codes come from
:func:`keysplit.split` through the seeded RNG seam, and each code is computed from the
specification in keysplit/proof.py by hand here, not by ``keysplit.proof``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "support"))

from vault_reference import REF  # noqa: E402

from keysplit import split  # noqa: E402
from keysplit.rng import DeterministicRandom  # noqa: E402

ALPHABET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _b64(keys: list[bytes]) -> list[str]:
    return [base64.b64encode(k).decode() for k in keys]


def vault_cases() -> list[dict[str, object]]:
    rnd = random.Random(20261203)
    cases: list[dict[str, object]] = []
    for name, size, n, k in (("3-of-5 unseal key", 32, 5, 3), ("2-of-3 short", 16, 3, 2)):
        secret = bytes(rnd.randrange(256) for _ in range(size))
        keys = REF.split(secret, n, k, rnd)
        base = {"secret": secret.hex(), "threshold": k}
        cases.append({"name": f"{name}: all keys", **base, "keys": _b64(keys), "expect": "ok"})
        cases.append({"name": f"{name}: exactly k", **base, "keys": _b64(keys[:k]), "expect": "ok"})
        bad = bytearray(keys[0])
        bad[1] ^= 0x40
        wrong = [bytes(bad), *keys[1:]]
        cases.append(
            {
                "name": f"{name}: one key wrong, k+1 given",
                **base,
                "keys": _b64(wrong[: k + 1]),
                "expect": "inconsistent",
            }
        )
        cases.append(
            {
                "name": f"{name}: one key wrong, exactly k (undetectable)",
                **base,
                "keys": _b64(wrong[:k]),
                "expect": "wrong-secret",
            }
        )
        cases.append(
            {"name": f"{name}: too few", **base, "keys": _b64(keys[: k - 1]), "expect": "too-few"}
        )
        cases.append(
            {
                "name": f"{name}: duplicate",
                **base,
                "keys": _b64([keys[0], *keys[:k]]),
                "expect": "duplicate",
            }
        )
    return cases


def _code(payload: bytes, set_id: bytes, params: bytes) -> str:
    mac = hmac.new(
        payload, b"keysplit proof of possession v1\x00" + set_id + params, hashlib.sha256
    ).digest()
    bits = int.from_bytes(mac[:5], "big")
    chars = "".join(ALPHABET[(bits >> (35 - 5 * i)) & 31] for i in range(8))
    return chars[:4] + "-" + chars[4:]


def proof_cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = []
    for seed, secret, k, n in (("proof-a", "00" * 16, 2, 3), ("proof-b", "ff" * 32, 3, 5)):
        for s in split(bytes.fromhex(secret), k, n, rng=DeterministicRandom(seed)):
            params = bytes([s.version, s.threshold, s.count, s.index])
            code = _code(s.payload, s.set_id, params)
            cases.append({"share": str(s), "code": code, "expect": "ok"})
            wrong = ALPHABET[(ALPHABET.index(code[0]) + 1) % 32] + code[1:]
            cases.append({"share": str(s), "code": wrong, "expect": "mismatch"})
    cases.append({"share": cases[0]["share"], "code": "k7m2-qx9b", "expect": "bad-format"})
    return cases


if __name__ == "__main__":
    for fname, cases in (("vault.json", vault_cases()), ("proof.json", proof_cases())):
        doc = {"generator": "tests/vectors/generate_custodians.py", "cases": cases}
        (HERE / fname).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {len(cases)} cases to tests/vectors/{fname}")
