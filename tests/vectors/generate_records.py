"""Regenerate tests/vectors/record.json (run from the repo root).

Records are sealed through the seeded RNG seam (DeterministicRandom), then mutated to
produce the negative cases. Each entry says what must happen when it is opened with the
given data key, subject and context.
"""

from __future__ import annotations

import json
from pathlib import Path

from keysplit import record
from keysplit.rng import DeterministicRandom

OUT = Path(__file__).parent / "record.json"


def main() -> None:
    rng = DeterministicRandom("record vectors v1")
    cases: list[dict[str, object]] = []

    def add(
        name: str, key: bytes, subject: str, ctx: dict[str, str], rec: bytes, pt: bytes, expect: str
    ) -> None:
        cases.append(
            {
                "name": name,
                "data_key": key.hex(),
                "subject": subject,
                "context": ctx,
                "record": rec.hex(),
                "plaintext": pt.hex() if expect == "ok" else None,
                "expect": expect,
            }
        )

    key = rng.random_bytes(16)
    dk = record.DataKey(key)
    ctx = {"table": "messages", "column": "body"}
    pt = b"hello, keysplit"
    rec = record.encrypt(dk, pt, subject="user-1", context=ctx, rng=rng)
    add("basic", key, "user-1", ctx, rec, pt, "ok")
    add(
        "empty plaintext, no context",
        key,
        "user-1",
        {},
        record.encrypt(dk, b"", subject="user-1", rng=rng),
        b"",
        "ok",
    )
    uni = {"région": "eu-west", "ключ": "значение"}
    add(
        "unicode subject and context",
        key,
        "Zoë ✓",
        uni,
        record.encrypt(dk, bytes(range(256)), subject="Zoë ✓", context=uni, rng=rng),
        bytes(range(256)),
        "ok",
    )
    add("other subject", key, "user-2", ctx, rec, pt, "integrity")
    add("other context value", key, "user-1", {**ctx, "column": "title"}, rec, pt, "integrity")
    add("extra context entry", key, "user-1", {**ctx, "x": ""}, rec, pt, "integrity")
    add("missing context", key, "user-1", {}, rec, pt, "integrity")
    other = rng.random_bytes(16)
    add("other data key", other, "user-1", ctx, rec, pt, "integrity")
    for name, pos in (
        ("flip in commitment", 6),
        ("flip in nonce", 40),
        ("flip in ciphertext", 56),
        ("flip in tag", len(rec) - 1),
    ):
        bad = bytearray(rec)
        bad[pos] ^= 0x01
        add(name, key, "user-1", ctx, bytes(bad), pt, "integrity")
    add("truncated tag", key, "user-1", ctx, rec[:-1], pt, "integrity")
    add("truncated below minimum", key, "user-1", ctx, rec[: record.OVERHEAD - 1], pt, "truncated")
    add("bad magic", key, "user-1", ctx, b"KSRX" + rec[4:], pt, "bad-magic")
    add(
        "unknown version",
        key,
        "user-1",
        ctx,
        rec[:4] + b"\x02" + rec[5:],
        pt,
        "unsupported-version",
    )
    add("unknown suite", key, "user-1", ctx, rec[:5] + b"\x09" + rec[6:], pt, "unsupported-suite")
    OUT.write_text(
        json.dumps({"format": "keysplit record v1", "cases": cases}, indent=1, ensure_ascii=False)
        + "\n"
    )


if __name__ == "__main__":
    main()
