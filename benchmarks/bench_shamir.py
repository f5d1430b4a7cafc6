"""Batch Shamir split/combine of 16-byte keys vs pycryptodome and shamir-mnemonic (SLIP-39).

keysplit's ``split_batch``/``combine_batch`` run on N keys at once (randomness included:
the default CSPRNG). The peers only work one key at a time, so they are timed as a per-key
loop on a sample of keys in the same run and reported per key (``timed_n`` says how many):
a per-key loop's throughput does not depend on N. pycryptodome's ``Shamir`` (GF(2^128),
16-byte secrets) is the baseline of every ratio. For 3-of-5, shamir-mnemonic (SLIP-39) is
shown twice: its raw GF(256) sharing (``_split_secret``/``_recover_secret``) and the full
path its users call (``generate_mnemonics``/``combine_mnemonics``, which add PBKDF2
passphrase encryption, a digest share and mnemonic words; a different, heavier job).

Combine uses the shares at x = 2, 4, 5, whose Lagrange coefficients are general field
elements. (x = 1, 2, 3 would be unrepresentatively fast: all three coefficients are 1.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from keysplit.hazmat import _outputs, shamir

from .harness import measure, peak_memory_mb, progress, row, time_calls

KEY_BYTES = 16
TARGET = 20e6  # DESIGN.md section 8 / issue 23: >= 20 M keys/s, 3-of-5, at 10^6 and 4*10^6
SETTINGS = ((2, 3), (3, 5), (5, 9))
COMBINE_XS = {2: [2, 3], 3: [2, 4, 5], 5: [2, 4, 5, 7, 9]}


SPLIT_NOTE = (
    "randomness included: AES-128-CTR keystream keyed from os.urandom (keysplit.rng); "
    "default threads = min(cores, 4); a fresh output array page-faults on first write, "
    "out= reuses a buffer"
)


SLIP39_NOTE = (
    "shamir-mnemonic rows: _split_secret/_recover_secret are its raw GF(256) sharing; "
    "generate_mnemonics/combine_mnemonics are the full SLIP-39 path (PBKDF2 passphrase "
    "encryption at the minimum iteration_exponent=0, digest share, mnemonic words)"
)


def _sizes(quick: bool, k: int, m: int) -> list[int]:
    if quick:
        return [10**3, 10**4, 10**5, 10**6, 4 * 10**6] if (k, m) == (3, 5) else [10**4, 10**6]
    return [10**3, 10**4, 10**5, 10**6, 4 * 10**6, 10**7]


def _repeats(n: int, quick: bool) -> int:
    if quick:
        return 3
    return 5 if n >= 10**7 else 7


def _sample_size(one: Callable[[], object], quick: bool) -> int:
    """How many keys to time a per-key peer on: about 40 ms (quick) or 0.3 s per repeat."""
    per_key = sum(time_calls(one, 5)) / 5
    budget = 0.04 if quick else 0.3
    return max(5, min(1000, int(budget / max(per_key, 1e-9))))


def _slip39_full_row(
    bench: str, n: int, k: int, m: int, keys: list[bytes], quick: bool, combine: bool
) -> list[dict[str, Any]]:
    """The whole SLIP-39 path users call (PBKDF2 encryption + mnemonic words) per key."""
    import shamir_mnemonic as sm

    def gen(key: bytes) -> list[str]:
        group: list[str] = sm.generate_mnemonics(1, [(k, m)], key, b"", iteration_exponent=0)[0]
        return group

    if combine:
        sample = _sample_size(lambda: sm.combine_mnemonics(gen(keys[0])[:k]), quick)
        words = [gen(key)[1 : k + 1] for key in keys[:sample]]

        def fn() -> None:
            for w in words:
                sm.combine_mnemonics(w)
    else:
        sample = _sample_size(lambda: gen(keys[0]), quick)

        def fn() -> None:
            for key in keys[:sample]:
                gen(key)

    name = "combine_mnemonics" if combine else "generate_mnemonics"
    return [
        row(
            bench,
            f"shamir-mnemonic {name} (full SLIP-39, per key)",
            n,
            "keys/s",
            measure(fn, sample, 3 if quick else 5),
            timed_n=sample,
            note=SLIP39_NOTE,
        )
    ]


def _peer_rows(
    bench: str, n: int, k: int, m: int, quick: bool, combine: bool
) -> list[dict[str, Any]]:
    """pycryptodome (baseline) and, for 3-of-5, shamir-mnemonic, per key on a sample."""
    from Crypto.Protocol.SecretSharing import Shamir

    rows = []
    keys = [os.urandom(KEY_BYTES) for _ in range(1000)]
    reps = 3 if quick else 5
    if combine:
        xs = COMBINE_XS[k]
        sample = _sample_size(lambda: Shamir.combine(Shamir.split(k, m, keys[0])[:k]), quick)
        shares = [[s for s in Shamir.split(k, m, key) if s[0] in xs] for key in keys[:sample]]

        def pyc() -> None:
            for sh in shares[:sample]:
                Shamir.combine(sh)
    else:
        sample = _sample_size(lambda: Shamir.split(k, m, keys[0]), quick)

        def pyc() -> None:
            for key in keys[:sample]:
                Shamir.split(k, m, key)

    op = "combine" if combine else "split"
    rows.append(
        row(
            bench,
            f"pycryptodome Shamir.{op} (per key)",
            n,
            "keys/s",
            measure(pyc, sample, reps),
            baseline=True,
            timed_n=sample,
        )
    )
    if (k, m) == (3, 5):
        from shamir_mnemonic.shamir import _recover_secret, _split_secret

        slip_sample = _sample_size(lambda: _split_secret(k, m, keys[0]), quick)
        slip_keys = keys[:slip_sample]
        if combine:
            xs = COMBINE_XS[k]
            raw = [[s for s in _split_secret(k, m, key) if s.x + 1 in xs] for key in slip_keys]

            def slip() -> None:
                for sh in raw:
                    _recover_secret(k, sh)
        else:

            def slip() -> None:
                for key in slip_keys:
                    _split_secret(k, m, key)

        rows += _slip39_full_row(bench, n, k, m, keys, quick, combine)
        name = "_recover_secret" if combine else "_split_secret"
        rows.append(
            row(
                bench,
                f"shamir-mnemonic {name} (per key)",
                n,
                "keys/s",
                measure(slip, slip_sample, reps),
                timed_n=slip_sample,
            )
        )
    return rows


def _keysplit_rows(
    k: int, m: int, n: int, quick: bool, gen: np.random.Generator
) -> list[dict[str, Any]]:
    split_name = f"shamir split {k}-of-{m}, 16-byte keys"
    combine_name = f"shamir combine {k}-of-{m}, 16-byte keys"
    xs = COMBINE_XS[k]
    reps = _repeats(n, quick)
    target: dict[str, Any] = (
        {"target": TARGET} if (k, m) == (3, 5) and n in (10**6, 4 * 10**6) else {}
    )
    secrets = gen.integers(0, 256, size=(n, KEY_BYTES), dtype=np.uint8)
    rows = []

    def fresh(threads: int | None = None) -> None:
        shamir.split_batch(secrets, k, m, threads=threads)

    rows.append(
        row(
            split_name,
            "keysplit split_batch",
            n,
            "keys/s",
            measure(fresh, n, reps),
            peak_mb=peak_memory_mb(fresh),
            note=SPLIT_NOTE,
            **target,
        )
    )
    if (k, m) == (3, 5) and n >= 10**6:  # first-touch page faults, measured not guessed
        rows.append(
            row(
                split_name,
                "keysplit split_batch, cold (fresh pages every call)",
                n,
                "keys/s",
                measure(fresh, n, reps, setup=_outputs.clear),
                note="hazmat/_outputs.py dropped before each call: the output page-faults "
                "as on a first call; the default row reuses the pages of dropped results",
            )
        )
    if (k, m) == (3, 5):
        rows.append(
            row(
                split_name,
                "keysplit split_batch(threads=1)",
                n,
                "keys/s",
                measure(lambda: fresh(1), n, reps),
            )
        )
    out = np.empty((m, n, KEY_BYTES), dtype=np.uint8)
    out.fill(0)  # touch every page once: the timed calls do not page-fault

    def reuse(o: np.ndarray = out) -> None:
        shamir.split_batch(secrets, k, m, out=o)

    rows.append(
        row(
            split_name,
            "keysplit split_batch(out=preallocated)",
            n,
            "keys/s",
            measure(reuse, n, reps),
            peak_mb=peak_memory_mb(reuse),
        )
    )
    ys = np.ascontiguousarray(out[[x - 1 for x in xs]])
    del out
    if not np.array_equal(shamir.combine_batch(xs, ys), secrets):
        raise RuntimeError("combine_batch did not recover the secrets")

    def comb(threads: int | None = None) -> None:
        shamir.combine_batch(xs, ys, threads=threads)

    rows.append(
        row(
            combine_name,
            "keysplit combine_batch",
            n,
            "keys/s",
            measure(comb, n, reps),
            peak_mb=peak_memory_mb(comb),
            note=f"shares at x = {xs}",
            **target,
        )
    )
    if (k, m) == (3, 5):
        rows.append(
            row(
                combine_name,
                "keysplit combine_batch(threads=1)",
                n,
                "keys/s",
                measure(lambda: comb(1), n, reps),
            )
        )
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    gen = np.random.default_rng()
    for k, m in SETTINGS:
        for n in _sizes(quick, k, m):
            progress(f"{k}-of-{m} n={n:,}")
            rows += _keysplit_rows(k, m, n, quick, gen)
            rows += _peer_rows(f"shamir split {k}-of-{m}, 16-byte keys", n, k, m, quick, False)
            rows += _peer_rows(f"shamir combine {k}-of-{m}, 16-byte keys", n, k, m, quick, True)
    return rows
