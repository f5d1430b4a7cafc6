"""Regenerate tests/vectors/keyring.json (run from the repo root).

A 2-of-3 keyring is created through the seeded RNG seam (DeterministicRandom), so the file,
the shares and the sealed secrets are reproducible. Mutations of the file give the
negative cases; each says what must happen when the file is opened and unsealed.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

from keysplit import combine
from keysplit.keyring import KEYRING_FILE, Keyring
from keysplit.keyring import file as kf
from keysplit.rng import DeterministicRandom

OUT = Path(__file__).parent / "keyring.json"


def _with_meta(data: bytes, meta_json: bytes) -> bytes:
    """Same file with the metadata replaced (length fixed up), ciphertext unchanged."""
    (mlen,) = struct.unpack_from(">I", data, 5)
    return data[:5] + struct.pack(">I", len(meta_json)) + meta_json + data[9 + mlen :]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _, shares = Keyring.create(
            Path(tmp) / "kr", 2, ["alice", "bob", "carol"], rng=DeterministicRandom("keyring v1")
        )
        data = (Path(tmp) / "kr" / KEYRING_FILE).read_bytes()
    master = combine([shares["alice"], shares["bob"]])
    meta, secrets = kf.open_secrets(data, master)
    (mlen,) = struct.unpack_from(">I", data, 5)
    mj = data[9 : 9 + mlen]
    obj = json.loads(mj)
    cases: list[dict[str, object]] = []

    def add(name: str, blob: bytes, expect: str) -> None:
        cases.append({"name": name, "file": blob.hex(), "expect": expect})

    add("valid 2-of-3 keyring", data, "ok")
    add("bad magic", b"KSKX" + data[4:], "bad-magic")
    add("unknown version", data[:4] + b"\x02" + data[5:], "unsupported-version")
    add("truncated header", data[:7], "truncated")
    add("truncated tag", data[:-1], "truncated")
    add("trailing byte", data + b"\x00", "trailing-bytes")
    bad = bytearray(data)
    bad[-20] ^= 1
    add("flipped ciphertext bit", bytes(bad), "integrity")
    bad = bytearray(data)
    bad[9 + mlen] ^= 1
    add("flipped nonce bit", bytes(bad), "integrity")
    raised = dict(obj, share_set=dict(obj["share_set"], threshold=3))
    canon = json.dumps(raised, sort_keys=True, separators=(",", ":")).encode()
    # caught before combining: the shares disagree with the (tampered) threshold
    add("threshold raised in metadata (canonical)", _with_meta(data, canon), "mixed-shares")
    custs = [dict(c) for c in obj["share_set"]["custodians"]]
    custs[0]["name"] = "mallory"
    renamed = dict(obj, share_set=dict(obj["share_set"], custodians=custs))
    canon = json.dumps(renamed, sort_keys=True, separators=(",", ":")).encode()
    add("custodian renamed in metadata (canonical)", _with_meta(data, canon), "integrity")
    gen = json.dumps(dict(obj, generation=9), sort_keys=True, separators=(",", ":")).encode()
    add("generation changed (replay/rollback)", _with_meta(data, gen), "integrity")
    spaced = json.dumps(obj, sort_keys=True).encode()
    add("metadata not canonical", _with_meta(data, spaced), "bad-metadata")
    extra = json.dumps(dict(obj, extra=1), sort_keys=True, separators=(",", ":")).encode()
    add("unknown metadata field", _with_meta(data, extra), "bad-metadata")
    add("metadata not JSON", _with_meta(data, b"{" + mj[1:-1]), "bad-metadata")
    doc = {
        "format": "keysplit keyring v1",
        "shares": {name: str(s) for name, s in shares.items()},
        "expected": {
            "keyring_id": meta.keyring_id,
            "set_id": meta.set_id,
            "public_key": meta.public_key,
            "x25519_private": secrets.x25519_private.hex(),
            "kek_1": secrets.keks[1].hex(),
            "master_key": master.hex(),
        },
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
