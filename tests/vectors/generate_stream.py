"""Regenerate tests/vectors/stream.json (run from the repo root).

Every "ok" case is produced through the seeded RNG seam (file key and HPKE ephemeral key
both come from ``DeterministicRandom(seed)``) and decrypted with ``cryptography``'s own
HPKE before it is written. Tampered cases name a base case and a mutation, so the file
stays small while each failure mode is pinned down.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keysplit.errors import FormatError, IntegrityError
from keysplit.rng import DeterministicRandom
from keysplit.stream import MIN_CHUNK_SIZE, TAG_SIZE, decrypt_stream, encrypt_stream, read_header

C = MIN_CHUNK_SIZE


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def recipient(seed: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(DeterministicRandom(seed).random_bytes(32))


BASES: list[dict[str, Any]] = [
    {"name": "empty", "plaintext_pattern": 0, "context": {}, "seed": "stream-empty"},
    {
        "name": "short with context",
        "plaintext_hex": b"hello, keysplit\n".hex(),
        "context": {"subject": "u42", "kind": "backup", "région": "eu-west"},
        "seed": "stream-short",
    },
    {"name": "exactly one chunk", "plaintext_pattern": C, "context": {}, "seed": "stream-one"},
    {
        "name": "one chunk and one byte",
        "plaintext_pattern": C + 1,
        "context": {"kind": "x"},
        "seed": "stream-two",
    },
]

MUTATIONS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "truncated to the header",
        "short with context",
        {"op": "truncate-body", "length": 0},
        "tag-failure",
    ),
    ("tag cut short", "short with context", {"op": "truncate-body", "length": 20}, "tag-failure"),
    (
        "body bit flip",
        "short with context",
        {"op": "flip-body", "byte": 3, "bit": 0},
        "tag-failure",
    ),
    ("tag bit flip", "empty", {"op": "flip-body", "byte": 15, "bit": 7}, "tag-failure"),
    ("appended byte", "exactly one chunk", {"op": "append", "hex": "00"}, "tag-failure"),
    (
        "dropped final chunk",
        "one chunk and one byte",
        {"op": "chunks", "order": [0]},
        "tag-failure",
    ),
    (
        "dropped first chunk",
        "one chunk and one byte",
        {"op": "chunks", "order": [1]},
        "tag-failure",
    ),
    ("swapped chunks", "one chunk and one byte", {"op": "chunks", "order": [1, 0]}, "tag-failure"),
    (
        "duplicated chunk",
        "one chunk and one byte",
        {"op": "chunks", "order": [0, 0, 1]},
        "tag-failure",
    ),
    (
        "context edited in header",
        "short with context",
        {"op": "flip-header", "byte": 31, "bit": 0},
        "tag-failure",
    ),
    (
        "chunk size edited",
        "exactly one chunk",
        {"op": "flip-header", "byte": 11, "bit": 0},
        "tag-failure",
    ),
    ("recipient id edited", "empty", {"op": "flip-header", "byte": 13, "bit": 0}, "tag-failure"),
    ("sealed key edited", "empty", {"op": "flip-header", "byte": -1, "bit": 0}, "tag-failure"),
    ("bad magic", "empty", {"op": "flip-header", "byte": 0, "bit": 0}, "bad-header"),
    ("unknown version", "empty", {"op": "flip-header", "byte": 8, "bit": 1}, "unsupported-version"),
    ("chunk size out of range", "empty", {"op": "flip-header", "byte": 10, "bit": 7}, "bad-header"),
    ("header truncated", "short with context", {"op": "truncate", "length": 40}, "bad-header"),
    (
        "wrong expected context",
        "short with context",
        {"op": "none", "context": {"subject": "u43"}},
        "wrong-context",
    ),
    ("wrong recipient", "empty", {"op": "none", "recipient": "someone-else"}, "wrong-recipient"),
]


def plaintext(case: dict[str, Any]) -> bytes:
    if "plaintext_hex" in case:
        return bytes.fromhex(case["plaintext_hex"])
    return pattern(case["plaintext_pattern"])


def apply(blob: bytes, m: dict[str, Any]) -> bytes:
    """Apply one mutation (the tests use this same definition, see test_stream_vectors)."""
    hlen = read_header(io.BytesIO(blob)).size
    header, body = bytearray(blob[:hlen]), blob[hlen:]
    op = m["op"]
    if op == "none":
        return blob
    if op == "truncate":
        return blob[: m["length"]]
    if op == "truncate-body":
        return bytes(header) + body[: m["length"]]
    if op == "append":
        return blob + bytes.fromhex(m["hex"])
    if op == "flip-body":
        b = bytearray(body)
        b[m["byte"]] ^= 1 << m["bit"]
        return bytes(header) + bytes(b)
    if op == "flip-header":
        header[m["byte"]] ^= 1 << m["bit"]
        return bytes(header) + body
    if op == "chunks":
        size = read_header(io.BytesIO(blob)).chunk_size + TAG_SIZE
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        return bytes(header) + b"".join(chunks[i] for i in m["order"])
    raise ValueError(op)


EXPECT = {
    "bad-header": FormatError,
    "unsupported-version": FormatError,
    "tag-failure": IntegrityError,
    "wrong-context": IntegrityError,
    "wrong-recipient": IntegrityError,
}


def check(blob: bytes, mutation: dict[str, Any], expect: str, sk: X25519PrivateKey) -> None:
    """Make sure a tampered case fails the way it claims to before writing it."""
    opener = recipient(mutation["recipient"]) if "recipient" in mutation else sk
    try:
        decrypt_stream(io.BytesIO(blob), io.BytesIO(), opener, context=mutation.get("context"))
    except EXPECT[expect]:
        return
    raise AssertionError(f"mutation {mutation} did not fail with {expect}")


def main() -> None:
    sk = recipient("stream-recipient")
    cases: list[dict[str, Any]] = []
    blobs: dict[str, bytes] = {}
    for base in BASES:
        pt = plaintext(base)
        out = io.BytesIO()
        encrypt_stream(
            io.BytesIO(pt),
            out,
            sk.public_key(),
            context=base["context"],
            chunk_size=C,
            rng=DeterministicRandom(base["seed"]),
        )
        blob = out.getvalue()
        back = io.BytesIO()
        decrypt_stream(io.BytesIO(blob), back, sk, context=base["context"])
        assert back.getvalue() == pt
        blobs[base["name"]] = blob
        cases.append({**base, "chunk_size": C, "ciphertext": blob.hex(), "expect": "ok"})
    for name, base, mutation, expect in MUTATIONS:
        case = {"name": name, "base": base, "mutation": mutation, "expect": expect}
        check(apply(blobs[base], mutation), mutation, expect, sk)
        cases.append(case)
    doc = {
        "description": "keysplit stream v1 known answers (docs/format/stream.md). "
        "recipient_private is the X25519 key that opens every case; ok cases are "
        "reproduced byte for byte by encrypt_stream(rng=DeterministicRandom(seed), "
        "chunk_size=chunk_size); plaintext_pattern n means bytes(i % 251 for i in "
        "range(n)); mutated cases apply 'mutation' to the named base ciphertext "
        "(byte offsets of flip-header may be negative, counting from the header end; "
        "flip-body/truncate-body count from the first body byte; chunks reorders "
        "body chunks of chunk_size + 16 bytes). A case may give an expected 'context' "
        "or a different 'recipient' seed for the opener inside the mutation.",
        "recipient_private": sk.private_bytes_raw().hex(),
        "recipient_public": sk.public_key().public_bytes_raw().hex(),
        "expect_values": {
            "ok": "decrypts to the plaintext",
            "bad-header": "FormatError",
            "unsupported-version": "FormatError",
            "tag-failure": "IntegrityError",
            "wrong-context": "IntegrityError",
            "wrong-recipient": "IntegrityError",
        },
        "cases": cases,
    }
    Path(__file__).with_name("stream.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
