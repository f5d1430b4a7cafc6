"""Regenerate tests/vectors/share_custodian.json (run from the repo root).

Identities are built from seeded private keys and passphrase-sealed shares draw salt and
nonce through the seeded RNG seam, so those entries are reproducible. HPKE sealing draws
its ephemeral key inside `cryptography` (no seam), so rerunning this script changes the
`hpke` ciphertexts; tests check them in the decrypt direction only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from keysplit import Argon2Params, Identity, seal_share, seal_share_with_passphrase, split
from keysplit.rng import DeterministicRandom

FAST = Argon2Params(time_cost=1, memory_kib=64, lanes=1)


def _rechecksum(data: bytes) -> bytes:
    body = data[:-4]
    return body + hashlib.sha256(body).digest()[:4]


def _typo(text: str) -> str:
    pos = text.rindex("\n", 0, len(text) - 1) + 40  # inside the key bytes
    return text[:pos] + ("A" if text[pos] != "A" else "B") + text[pos + 1 :]


def main() -> None:
    rng = DeterministicRandom("custodian-vectors")
    alice = Identity("alice", "x25519", rng.random_bytes(32))
    carol = Identity("carol", "mlkem768-x25519", rng.random_bytes(96))
    secret = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    shares = split(secret, 2, 3, rng=DeterministicRandom("custodian-shares"))

    identities = [
        {
            "name": "alice plain",
            "hex": alice.to_bytes().hex(),
            "expect": "ok",
            "fingerprint": alice.fingerprint,
            "custodian": "alice",
        },
        {
            "name": "alice under passphrase",
            "passphrase": "correct horse",
            "hex": alice.to_bytes(b"correct horse", kdf=FAST, rng=rng).hex(),
            "expect": "ok",
            "fingerprint": alice.fingerprint,
            "custodian": "alice",
        },
        {
            "name": "carol hybrid plain",
            "hex": carol.to_bytes().hex(),
            "expect": "ok",
            "fingerprint": carol.fingerprint,
            "custodian": "carol",
        },
    ]
    enc = bytes.fromhex(identities[1]["hex"])
    identities += [
        {
            "name": "wrong passphrase",
            "hex": enc.hex(),
            "passphrase": "wrong horse",
            "expect": "wrong-passphrase",
        },
        {"name": "missing passphrase", "hex": enc.hex(), "expect": "wrong-passphrase"},
        {
            "name": "ciphertext flipped, checksum fixed",
            "passphrase": "correct horse",
            "hex": _rechecksum(enc[:-10] + bytes([enc[-10] ^ 1]) + enc[-9:]).hex(),
            "expect": "wrong-passphrase",
        },
        {
            "name": "bit flipped",
            "hex": (enc[:-12] + bytes([enc[-12] ^ 4]) + enc[-11:]).hex(),
            "passphrase": "correct horse",
            "expect": "bad-checksum",
        },
        {"name": "truncated", "hex": enc[:-1].hex(), "expect": "truncated"},
        {"name": "trailing", "hex": (enc + b"\0").hex(), "expect": "trailing"},
        {
            "name": "version 2",
            "hex": (enc[:4] + b"\x02" + enc[5:]).hex(),
            "expect": "unknown-version",
        },
        {"name": "bad magic", "hex": (b"KSIX" + enc[4:]).hex(), "expect": "bad-magic"},
    ]

    recipients = [
        {
            "name": "alice text",
            "text": alice.recipient.to_text(),
            "expect": "ok",
            "fingerprint": alice.fingerprint,
        },
        {
            "name": "carol binary",
            "hex": carol.recipient.to_bytes().hex(),
            "expect": "ok",
            "fingerprint": carol.fingerprint,
        },
        {
            "name": "alice binary truncated",
            "hex": alice.recipient.to_bytes()[:-1].hex(),
            "expect": "truncated",
        },
        {
            "name": "alice text, one character changed",
            "expect": "bad-checksum",
            "text": _typo(alice.recipient.to_text()),
        },
        {"name": "not a public key", "text": "hello\n", "expect": "bad-magic"},
    ]

    sealed_alice = seal_share(shares[0], alice.recipient)
    sealed_carol = seal_share(shares[1], carol.recipient)
    sealed_pw = seal_share_with_passphrase(shares[2], "dave", b"hunter2", kdf=FAST, rng=rng)
    name_at = 7  # offset of the custodian name in the header
    relabelled = _rechecksum(sealed_alice[:name_at] + b"b" + sealed_alice[name_at + 1 :])
    sealed = [
        {
            "name": "hpke x25519",
            "hex": sealed_alice.hex(),
            "identity": "alice plain",
            "expect": "ok",
            "index": 1,
            "custodian": "alice",
        },
        {
            "name": "hpke mlkem768-x25519",
            "hex": sealed_carol.hex(),
            "identity": "carol hybrid plain",
            "expect": "ok",
            "index": 2,
            "custodian": "carol",
        },
        {
            "name": "passphrase",
            "hex": sealed_pw.hex(),
            "passphrase": "hunter2",
            "expect": "ok",
            "index": 3,
            "custodian": "dave",
        },
        {
            "name": "hpke wrong identity",
            "hex": sealed_carol.hex(),
            "identity": "alice plain",
            "expect": "wrong-identity",
            "custodian": "carol",
        },
        {
            "name": "wrong passphrase",
            "hex": sealed_pw.hex(),
            "passphrase": "hunter3",
            "expect": "wrong-passphrase",
            "custodian": "dave",
        },
        {
            "name": "custodian renamed, checksum fixed",
            "hex": relabelled.hex(),
            "identity": "alice plain",
            "expect": "tampered",
            "custodian": "blice",
        },
        {
            "name": "index changed, checksum fixed",
            "identity": "alice plain",
            "hex": _rechecksum(sealed_alice[:22] + b"\x02" + sealed_alice[23:]).hex(),
            "expect": "tampered",
        },
        {
            "name": "kdf salt changed, checksum fixed",
            "passphrase": "hunter2",
            "hex": _rechecksum(sealed_pw[:35] + bytes([sealed_pw[35] ^ 1]) + sealed_pw[36:]).hex(),
            "expect": "wrong-passphrase",
        },
        {
            "name": "bit flipped",
            "hex": (sealed_pw[:-30] + bytes([sealed_pw[-30] ^ 1]) + sealed_pw[-29:]).hex(),
            "passphrase": "hunter2",
            "expect": "bad-checksum",
        },
        {
            "name": "truncated",
            "hex": sealed_alice[:-1].hex(),
            "identity": "alice plain",
            "expect": "truncated",
        },
        {
            "name": "trailing",
            "hex": (sealed_alice + b"\0").hex(),
            "identity": "alice plain",
            "expect": "trailing",
        },
        {
            "name": "version 2",
            "hex": (sealed_pw[:4] + b"\x02" + sealed_pw[5:]).hex(),
            "passphrase": "hunter2",
            "expect": "unknown-version",
        },
    ]
    doc = {
        "description": "keysplit.custodian known answers (docs/format/custodian.md); "
        "Argon2id parameters here are test-only (t=1, m=64 KiB, p=1); expect: ok | "
        "wrong-passphrase | wrong-identity | tampered | bad-checksum | truncated | trailing "
        "| unknown-version | bad-magic",
        "secret": secret.hex(),
        "identities": identities,
        "recipients": recipients,
        "sealed": sealed,
    }
    path = Path(__file__).with_name("share_custodian.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
