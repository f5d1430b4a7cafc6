"""Records at the speed of the AEAD call (issue 23): 1 KiB records, 10,000 subjects.

The baseline of each benchmark is a bare ``AESGCM`` loop with one key that keeps what a
record must keep: nonces drawn in bulk, ``nonce + ciphertext`` as bytes in a list (for
decrypt: the plaintexts of such blobs). Against it, same run, repeats interleaved
(``measure_interleaved``: the machine is shared, the load drifts):

* ``UnsealedKeyring.encrypt_many`` / ``decrypt_many`` (target >= 0.9x): the one record
  engine (:class:`keysplit.keyring.records.Records`) with its keys already loaded (first
  use and store I/O are bench_rewrap's and the tests' business);
* ``UnsealedKeyring.encrypt_packed`` / ``decrypt_packed`` (target >= 0.9x): the same
  batch into one buffer (a ``keysplit.packed.Packed``, records sealed and opened in place,
  decrypt opening the ``Packed`` encrypt gave): no ``bytes`` per record, for a backend
  that writes rows from one buffer;
* ``UnsealedKeyring.encrypt`` / ``decrypt`` one record per call (target >= 0.6x);
* ``record.encrypt_many`` / ``decrypt_many`` with the keys given (the format's loops alone);
* the bare loop over the same 10,000 keys, grouped by key as the engine groups records
  (no header, no AAD): what having 10k keys costs by itself, to read the rows above;
* the same grouped loop doing a v1 record's own work (a 38-byte key prefix + nonce as the
  header, header + a subject/context tail as the AAD, header + ciphertext kept; for
  decrypt the header sliced off and checked): the tightest Python loop the unchanged
  format allows, so "grouped, no header" -> "grouped, record header and AAD" is the
  format's share of the gap and the rest, down to ``encrypt_many``, the engine's
  (grouping, AAD tails and keys per call: ``record.encrypt_many`` shows that part alone);
* the bare loop grouped over 1, 10, 100 and 1,000 keys (record ``i`` is key ``i % K``'s):
  where the per-key cost appears as the keys' state (2.6 KB per ``AESGCM`` object) outgrows
  the caches (benchmarks/ab_records_ceiling.py splits it further, by thread CPU);
* the record loop at one key (a v1 header and AAD, input order), and the same sealed or
  opened in place into one ``bytearray`` (``encrypt_into``/``decrypt_into``): the format's
  own cost with no second key, and what one buffer saves of it;
* the bare loop and the record loop over the 10k keys in subject order (round-robin, as
  one record per call meets them): a different key every call, so each AEAD call reads its
  key schedule from further away, to read the one-record-per-call rows by (not a ceiling:
  where the keys' objects sit in memory moves these rows by 10-20 % on a busy machine).

Reading the decomposition (quiet run, issue 23's note): bare 1.0 -> 10k keys grouped
(keys) -> + header/AAD (the v1 format) -> record.encrypt_many (per-call planning) ->
UnsealedKeyring.encrypt_many (the key cache).

Every keysplit row's ``target`` is its ratio target times the baseline's median (so the
plot draws it as a rate), and its ``note`` names the ratio.
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

from ._record_loops import dec_grouped, enc_grouped, layout, one_key_arms, sealed
from ._record_loops import grouped as by_key
from .harness import measure_interleaved, row, run_standalone

SUBJECTS = 10_000
KEY_COUNTS = (1, 10, 100, 1000)  # the grouped rows under 10k (10k: the rows below them)
UNIT = "records/s"
N_QUICK, N_FULL = 50_000, 200_000


def run(quick: bool) -> list[dict[str, Any]]:
    n = N_QUICK if quick else N_FULL
    repeats = 3 if quick else 5
    plain, names, subjects = layout(n, SUBJECTS)
    ctx = {"table": "messages"}
    bare = AESGCM(os.urandom(16))
    many = [AESGCM(os.urandom(16)) for _ in range(SUBJECTS)]
    grouped = by_key(SUBJECTS, n)

    def bare_enc() -> list[bytes]:
        nonces = os.urandom(12 * n)
        out: list[bytes] = []
        append, enc = out.append, bare.encrypt
        for i, p in enumerate(plain):
            nonce = nonces[12 * i : 12 * i + 12]
            append(nonce + enc(nonce, p, None))
        return out

    blobs = bare_enc()

    def bare_dec() -> None:
        out: list[bytes] = []
        append, dec = out.append, bare.decrypt
        for b in blobs:
            append(dec(b[:12], b[12:], None))

    prefixes = [b"KSRC\x01\x01" + os.urandom(32) for _ in range(SUBJECTS)]  # v1: 38 bytes
    tails = [record.encode_aad(s, ctx) for s in names]
    rr = [many[i % SUBJECTS] for i in range(n)]  # subjects[i]'s key, in input order
    rr_fmt = [(many[j], prefixes[j], tails[j]) for j in (i % SUBJECTS for i in range(n))]

    def fmt_enc() -> list[bytes]:
        nonces = os.urandom(12 * n)
        done = [b""] * n
        for aead, prefix, tail, idx in zip(many, prefixes, tails, grouped, strict=True):
            enc = aead.encrypt
            for i in idx:
                nonce = nonces[12 * i : 12 * i + 12]
                header = prefix + nonce
                done[i] = header + enc(nonce, plain[i], header + tail)
        return done

    def rr_enc() -> None:
        nonces = os.urandom(12 * n)
        out: list[bytes] = []
        append = out.append
        for i, (aead, p) in enumerate(zip(rr, plain, strict=True)):
            nonce = nonces[12 * i : 12 * i + 12]
            append(nonce + aead.encrypt(nonce, p, None))

    def rr_fmt_enc() -> None:
        nonces = os.urandom(12 * n)
        out: list[bytes] = []
        append = out.append
        for i, ((aead, prefix, tail), p) in enumerate(zip(rr_fmt, plain, strict=True)):
            nonce = nonces[12 * i : 12 * i + 12]
            header = prefix + nonce
            append(header + aead.encrypt(nonce, p, header + tail))

    fmt_blobs = fmt_enc()

    def fmt_dec() -> None:
        done = [b""] * n
        for aead, prefix, tail, idx in zip(many, prefixes, tails, grouped, strict=True):
            dec = aead.decrypt
            for i in idx:
                b = fmt_blobs[i]
                if not b.startswith(prefix):  # the engine's header check, one C call
                    raise ValueError("wrong key")
                header = b[:50]
                done[i] = dec(header[38:], b[50:], header + tail)

    def rr_dec() -> None:
        out: list[bytes] = []
        append = out.append
        for aead, b in zip(rr, many_blobs, strict=True):
            append(aead.decrypt(b[:12], b[12:], None))

    def rr_fmt_dec() -> None:
        out: list[bytes] = []
        append = out.append
        for (aead, prefix, tail), b in zip(rr_fmt, fmt_blobs, strict=True):
            if not b.startswith(prefix):
                raise ValueError("wrong key")
            header = b[:50]
            append(aead.decrypt(header[38:], b[50:], header + tail))

    many_blobs = sealed(many, plain)  # record i under many[i % SUBJECTS], as grouped says
    keys_enc = enc_grouped(many, grouped, plain, n)
    keys_dec = dec_grouped(many, grouped, many_blobs, n)

    sweep_enc: dict[str, tuple[Callable[[], object], float | None]] = {}
    sweep_dec: dict[str, tuple[Callable[[], object], float | None]] = {}
    for k in KEY_COUNTS:
        aeads = [AESGCM(os.urandom(16)) for _ in range(k)]
        label = f"{k} key{'s' if k > 1 else ''} grouped, no header/AAD"
        sweep_enc[f"AESGCM.encrypt loop, {label}"] = (
            enc_grouped(aeads, by_key(k, n), plain, n),
            None,
        )
        sweep_dec[f"AESGCM.decrypt loop, {label}"] = (
            dec_grouped(aeads, by_key(k, n), sealed(aeads, plain), n),
            None,
        )
    fmt1_enc, fmt1_dec = one_key_arms(bare, prefixes[0], tails[0], plain, n)
    for op, arms, sweep in (("encrypt", fmt1_enc, sweep_enc), ("decrypt", fmt1_dec, sweep_dec)):
        sweep[f"AESGCM.{op} loop, 1 key, record header and AAD"] = (
            arms["1 key, header + header+tail AAD"],
            None,
        )
        sweep[f"AESGCM.{op}_into loop, 1 key, record header and AAD, one buffer"] = (
            arms[f"1 key, header+AAD, {op}_into 1 buffer"],
            None,
        )

    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            recs = ku.encrypt_many(subjects, plain, ctx)  # creates the 10k data keys
            packed = ku.encrypt_packed(subjects, plain, ctx)
            keys = ku.data_keys(subjects)
            mod_recs = record.encrypt_many(keys, subjects, plain, ctx)  # type: ignore[arg-type]

            def one_enc() -> None:
                enc = ku.encrypt
                for s, p in zip(subjects, plain, strict=True):
                    enc(p, subject=s, context=ctx)

            def one_dec() -> None:
                dec = ku.decrypt
                for s, r in zip(subjects, recs, strict=True):
                    dec(r, subject=s, context=ctx)

            enc_cases: dict[str, tuple[Callable[[], object], float | None]] = {
                "AESGCM.encrypt loop, 1 key, keeps nonce+ct (bare)": (bare_enc, None),
                "UnsealedKeyring.encrypt_many, 10k subjects": (
                    lambda: ku.encrypt_many(subjects, plain, ctx),
                    0.9,
                ),
                "UnsealedKeyring.encrypt_packed, 10k subjects": (
                    lambda: ku.encrypt_packed(subjects, plain, ctx),
                    0.9,
                ),
                "UnsealedKeyring.encrypt, one record per call": (one_enc, 0.6),
                "record.encrypt_many, keys given": (
                    lambda: record.encrypt_many(keys, subjects, plain, ctx),  # type: ignore[arg-type]
                    None,
                ),
                **sweep_enc,
                "AESGCM.encrypt loop, 10k keys grouped, no header/AAD": (keys_enc, None),
                "AESGCM.encrypt loop, 10k keys grouped, record header and AAD": (fmt_enc, None),
                "AESGCM.encrypt loop, 10k keys round-robin, no header/AAD": (rr_enc, None),
                "AESGCM.encrypt loop, 10k keys round-robin, record header and AAD": (
                    rr_fmt_enc,
                    None,
                ),
            }
            dec_cases: dict[str, tuple[Callable[[], object], float | None]] = {
                "AESGCM.decrypt loop, 1 key, keeps plaintexts (bare)": (bare_dec, None),
                "UnsealedKeyring.decrypt_many, 10k subjects": (
                    lambda: ku.decrypt_many(subjects, recs, ctx),
                    0.9,
                ),
                "UnsealedKeyring.decrypt_packed, 10k subjects": (
                    lambda: ku.decrypt_packed(subjects, packed, ctx),
                    0.9,
                ),
                "UnsealedKeyring.decrypt, one record per call": (one_dec, 0.6),
                "record.decrypt_many, keys given": (
                    lambda: record.decrypt_many(keys, subjects, mod_recs, ctx),  # type: ignore[arg-type]
                    None,
                ),
                **sweep_dec,
                "AESGCM.decrypt loop, 10k keys grouped, no header/AAD": (keys_dec, None),
                "AESGCM.decrypt loop, 10k keys grouped, record header and AAD": (fmt_dec, None),
                "AESGCM.decrypt loop, 10k keys round-robin, no header/AAD": (rr_dec, None),
                "AESGCM.decrypt loop, 10k keys round-robin, record header and AAD": (
                    rr_fmt_dec,
                    None,
                ),
            }
            rows: list[dict[str, Any]] = []
            for bench, cases in (
                ("records-encrypt-1KiB", enc_cases),
                ("records-decrypt-1KiB", dec_cases),
            ):
                stats = measure_interleaved(
                    {impl: fn for impl, (fn, _) in cases.items()}, n, repeats
                )
                base_impl = next(iter(cases))
                base = stats[base_impl][0]
                for impl, (_, target) in cases.items():
                    extra: dict[str, Any] = {"note": f"{stats[impl][0] / base:.2f}x the bare loop"}
                    if target is not None:
                        extra["target"] = target * base
                        extra["note"] += f" (target {target}x)"
                    rows.append(
                        row(bench, impl, n, UNIT, stats[impl], baseline=impl == base_impl, **extra)
                    )
    return rows


if __name__ == "__main__":
    run_standalone(run, sys.argv)
