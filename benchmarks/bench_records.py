"""Records: ``encrypt_many``/``decrypt_many`` of 1 KiB records across 10,000 subjects vs a
bare ``AESGCM.encrypt``/``decrypt`` loop with one key (no header, no context, no key
lookup), all in the same run.

The keysplit rows include everything a backend pays per record: random nonce (drawn in
bulk), header with key commitment, canonical subject/context AAD, per-subject key lookup.
``UnsealedKeyring`` rows also go through the keyring's data-key cache (keys already loaded:
first-use creation and store I/O are measured by bench_rewrap / the tests, not here).
Records are processed in batches of 100,000 and dropped, so memory stays bounded. The
bare loop discards each ciphertext at once; a second reference row keeps them in a list as
``encrypt_many`` must, to show how much of the gap is just allocating 100k results
(same for decrypt). Every keysplit row's ``note`` gives its ratio to both references,
measured in the same run; ``ratio`` in the report is to the discarding loop (the baseline).
Target (DESIGN.md §8): >= 1 M records/s and >= 50 % of the bare loop.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysplit import Keyring, record

from .harness import measure, reference_medians, row, run_standalone

SUBJECTS = 10_000
BATCH = 100_000
SIZE = 1024
TARGET = 1_000_000.0
UNIT = "records/s"


def run(quick: bool) -> list[dict[str, Any]]:
    n = 200_000 if quick else 1_000_000
    repeats = 3 if quick else 5
    batches = n // BATCH
    pts = [os.urandom(SIZE) for _ in range(256)]
    plain = [pts[i % 256] for i in range(BATCH)]
    names = [f"user-{i:05d}" for i in range(SUBJECTS)]
    subjects = [names[i % SUBJECTS] for i in range(BATCH)]
    dks = [record.DataKey(os.urandom(16)) for _ in range(SUBJECTS)]
    keys = [dks[i % SUBJECTS] for i in range(BATCH)]
    ctx = {"table": "messages"}
    bare = AESGCM(os.urandom(16))
    nonce = os.urandom(12)
    bare_ct = [bare.encrypt(nonce, p, None) for p in plain]
    recs = record.encrypt_many(keys, subjects, plain, ctx)

    def bare_enc() -> None:
        for _ in range(batches):
            for p in plain:
                bare.encrypt(nonce, p, None)

    def bare_dec() -> None:
        for _ in range(batches):
            for c in bare_ct:
                bare.decrypt(nonce, c, None)

    def bare_enc_keep() -> None:
        for _ in range(batches):
            out = []
            for p in plain:
                out.append(bare.encrypt(nonce, p, None))

    def bare_dec_keep() -> None:
        for _ in range(batches):
            out = []
            for c in bare_ct:
                out.append(bare.decrypt(nonce, c, None))

    def env_enc() -> None:
        for _ in range(batches):
            record.encrypt_many(keys, subjects, plain, ctx)

    def env_dec() -> None:
        for _ in range(batches):
            record.decrypt_many(keys, subjects, recs, ctx)

    enc, dec = "records-encrypt-1KiB", "records-decrypt-1KiB"
    kept_note = {"note": "the bare loop keeping its 100k results alive, as any batch API must"}
    cases: list[tuple[str, str, Callable[[], object], bool, dict[str, Any]]] = [
        (enc, "AESGCM.encrypt loop, 1 key (bare)", bare_enc, True, {}),
        (enc, "AESGCM.encrypt loop, 1 key, outputs kept", bare_enc_keep, False, kept_note),
        (enc, "record.encrypt_many, 10k subjects", env_enc, False, {"target": TARGET}),
        (dec, "AESGCM.decrypt loop, 1 key (bare)", bare_dec, True, {}),
        (dec, "AESGCM.decrypt loop, 1 key, outputs kept", bare_dec_keep, False, {}),
        (dec, "record.decrypt_many, 10k subjects", env_dec, False, {}),
    ]
    rows = [
        row(bench, impl, n, UNIT, measure(fn, n, repeats), baseline=base, **extra)
        for bench, impl, fn, base, extra in cases
    ]
    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            ku_recs = ku.encrypt_many(subjects, plain, ctx)  # creates the 10k data keys

            def kr_enc() -> None:
                for _ in range(batches):
                    ku.encrypt_many(subjects, plain, ctx)

            def kr_dec() -> None:
                for _ in range(batches):
                    ku.decrypt_many(subjects, ku_recs, ctx)

            rows.insert(
                2,
                row(enc, "UnsealedKeyring.encrypt_many, 10k subjects", n, UNIT,
                    measure(kr_enc, n, repeats), target=TARGET),
            )
            rows.append(
                row(dec, "UnsealedKeyring.decrypt_many, 10k subjects", n, UNIT,
                    measure(kr_dec, n, repeats))
            )  # fmt: skip
    return _annotate(rows)


def _annotate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each keysplit row its same-run ratios to both bare loops (discarding, keeping)."""
    bare = reference_medians(rows)
    kept = reference_medians(rows, lambda q: "outputs kept" in q["impl"])
    for r in rows:
        if r["baseline"] or "outputs kept" in r["impl"]:
            continue
        key = (r["benchmark"], r["n"])
        r["note"] = (
            f"{r['impl']}: {r['median'] / bare[key]:.0%} of the bare loop, "
            f"{r['median'] / kept[key]:.0%} of the bare loop that keeps its outputs (same run)"
        )
    return rows


if __name__ == "__main__":
    run_standalone(run, sys.argv)
