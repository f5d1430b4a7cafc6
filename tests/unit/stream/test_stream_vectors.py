"""Known-answer vectors for the stream format (tests/vectors/stream.json)."""

from __future__ import annotations

import importlib.util
import io
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paths import VECTORS_DIR

from keysplit import FormatError, IntegrityError
from keysplit.rng import DeterministicRandom
from keysplit.stream import decrypt_stream, encrypt_stream, read_header, recipient_id

VECTORS = VECTORS_DIR
DOC = json.loads((VECTORS / "stream.json").read_text())
_spec = importlib.util.spec_from_file_location("generate_stream", VECTORS / "generate_stream.py")
assert _spec and _spec.loader
GEN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(GEN)

SK = X25519PrivateKey.from_private_bytes(bytes.fromhex(DOC["recipient_private"]))
BASES = {c["name"]: c for c in DOC["cases"] if c["expect"] == "ok"}
EXPECT: dict[str, type[Exception]] = {
    "bad-header": FormatError,
    "unsupported-version": FormatError,
    "tag-failure": IntegrityError,
    "wrong-context": IntegrityError,
    "wrong-recipient": IntegrityError,
}
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def test_vector_file_covers_every_expect() -> None:
    assert {c["expect"] for c in DOC["cases"]} == {"ok", *EXPECT}
    assert set(DOC["expect_values"]) == {"ok", *EXPECT}
    assert SK.public_key().public_bytes_raw().hex() == DOC["recipient_public"]


@pytest.mark.parametrize("case", list(BASES.values()), ids=list(BASES))
def test_ok_vectors(case: dict[str, Any]) -> None:
    blob = bytes.fromhex(case["ciphertext"])
    plaintext = GEN.plaintext(case)
    # Encryption is reproduced byte for byte through the seeded RNG seam ...
    out = io.BytesIO()
    encrypt_stream(
        io.BytesIO(plaintext),
        out,
        SK.public_key(),
        context=case["context"],
        chunk_size=case["chunk_size"],
        rng=DeterministicRandom(case["seed"]),
    )
    assert out.getvalue() == blob
    # ... and the vector opens with cryptography's own HPKE as the opener.
    back = io.BytesIO()
    decrypt_stream(
        io.BytesIO(blob),
        back,
        lambda ct, info: SUITE.decrypt(ct, SK, info),
        context=case["context"],
    )
    assert back.getvalue() == plaintext
    header = read_header(io.BytesIO(blob))
    assert header.recipient_id == recipient_id(SK.public_key())
    assert dict(header.context) == case["context"]


MUTATED = [c for c in DOC["cases"] if c["expect"] != "ok"]


@pytest.mark.parametrize("case", MUTATED, ids=[c["name"] for c in MUTATED])
def test_tampered_vectors(case: dict[str, Any]) -> None:
    m = case["mutation"]
    blob = GEN.apply(bytes.fromhex(BASES[case["base"]]["ciphertext"]), m)
    opener = GEN.recipient(m["recipient"]) if "recipient" in m else SK
    sink = io.BytesIO()
    with pytest.raises(EXPECT[case["expect"]]):
        decrypt_stream(io.BytesIO(blob), sink, opener, context=m.get("context"))
    assert sink.getvalue() == b"" or case["base"] == "one chunk and one byte"
