"""What bounds ``encrypt_many``/``decrypt_many`` below a one-key loop (issue 23), by thread CPU.

    .venv/bin/python -m benchmarks.ab_records_ceiling [--n 50000] [--rounds 15]
        [--ops enc,dec] [--only REGEX]

Not a ``bench_*`` module (the harness does not run it). bench_records' layout: ``n`` 1 KiB
records, 10,000 subjects (record ``i`` is subject ``i % 10000``'s), context
``{"table": "messages"}``. Every arm runs once per round, arms in turn (rotated each round,
:func:`~benchmarks.harness.timing.in_turn`), each run right after a run of the one-key loop
(the machine is shared: a pair is a fraction of a second apart, a round many seconds); the
figure is thread CPU per record, and each arm's rate against the one-key loop run just
before it (median over rounds, with the quartiles; and the ratio of the two fastest runs,
``min/min``, the least disturbed by other work on a loaded host). ``bare2`` is that loop
again: the A/A.
Arms, per direction:

* ``bare``: one key, input order, ``nonce + ct`` kept (bench_records' baseline);
* ``K=1 ... K=10000``: the same loop over K keys, records grouped by key as the engine
  groups them (no header, no AAD): where per-key cost appears;
* ``10k groups, 1 key``: K=10000's grouping and loop with one key object in every group:
  the grouping's share of K=10000 (the rest is the keys' state);
* ``1 key, header`` / ``+ const AAD`` / ``+ header+tail AAD``: a v1 record's work at one
  key in steps (the 50-byte header joined and kept; an AAD of the record's length given
  as one ready object, so its bytes go through GHASH with no joining; the AAD joined per
  record as the format does); ``... , *_into one buffer``: the last sealed or opened in
  place into one ``bytearray`` (as :meth:`Records.sealer` does);
* ``engine``: ``UnsealedKeyring.encrypt_many`` / ``decrypt_many``, keys loaded;
* ``engine, packed``: ``encrypt_packed`` / ``decrypt_packed`` of a ``Packed`` (one buffer
  out, records sealed and opened in place); ``packed from a list``: ``decrypt_packed`` of
  the ``encrypt_many`` list (joined into one buffer first);
* ``engine's loop``: :func:`keysplit.record.seal_planned`'s loop written out over the
  engine's own key objects and AAD tails, the grouping made before timing: the engine
  minus this row is keysplit's own work around the AEAD calls (checks, planning, key
  lookup, tails, nonces).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysplit import Keyring, record

from ._record_loops import (
    Arm,
    dec_grouped,
    enc_grouped,
    grouped,
    layout,
    one_key_arms,
    open_grouped,
    seal_grouped,
    sealed,
)
from .harness.timing import in_turn

_SUBJECTS = 10_000
_KS = (1, 10, 100, 1000, 10_000)


def _cpu_ns(fn: Arm) -> int:
    t = time.thread_time_ns()
    fn()
    return time.thread_time_ns() - t


def _report(op: str, res: dict[str, list[tuple[int, int]]], n: int) -> None:
    print(f"\n{op}: thread CPU ns/record (median); rate vs the bare run just before (median, IQR)")
    bare = statistics.median(b for pairs in res.values() for b, _ in pairs) / n
    print(f"  {'bare (every run before an arm)':42s} {bare:7.0f} ns")
    for arm, pairs in res.items():
        ratios = sorted(b / x for b, x in pairs)
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        ns = statistics.median(x for _, x in pairs) / n
        med = statistics.median(ratios)
        best = min(b for b, _ in pairs) / min(x for _, x in pairs)  # least disturbed runs
        print(f"  {arm:42s} {ns:7.0f} ns   {med:.3f}  (IQR {q1:.3f}-{q3:.3f})  min/min {best:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="records per arm run (bench quick: 50k)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ops", default="enc,dec", help="enc, dec or both (comma-separated)")
    ap.add_argument("--only", default="", help="arms whose name matches (regex); bare always")
    args = ap.parse_args()
    n = args.n
    plain, names, subjects = layout(n, _SUBJECTS)
    ctx = {"table": "messages"}
    one = AESGCM(os.urandom(16))
    sets = {k: [AESGCM(os.urandom(16)) for _ in range(k)] for k in _KS}
    groups = {k: grouped(k, n) for k in _KS}

    enc: dict[str, Arm] = {"bare": enc_grouped([one], groups[1], plain, n)}
    dec: dict[str, Arm] = {"bare": dec_grouped([one], groups[1], sealed([one], plain), n)}
    enc["bare2"], dec["bare2"] = enc["bare"], dec["bare"]
    for k in _KS:
        enc[f"K={k} grouped"] = enc_grouped(sets[k], groups[k], plain, n)
        dec[f"K={k} grouped"] = dec_grouped(sets[k], groups[k], sealed(sets[k], plain), n)
    same = [one] * _SUBJECTS
    enc["10k groups, 1 key"] = enc_grouped(same, groups[_SUBJECTS], plain, n)
    dec["10k groups, 1 key"] = dec_grouped(same, groups[_SUBJECTS], sealed([one], plain), n)
    prefix = record.MAGIC + bytes([record.VERSION, 1]) + os.urandom(32)
    e1, d1 = one_key_arms(one, prefix, record.encode_aad(names[0], ctx), plain, n)
    enc.update(e1)
    dec.update(d1)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            recs = ku.encrypt_many(subjects, plain, ctx)  # creates the 10k data keys
            uniq, order, ends = record.plan_groups(subjects)
            dks = ku.data_keys(uniq)
            triples = [
                (k._aead, k._prefix, record.encode_aad(s, ctx))  # type: ignore[union-attr]
                for k, s in zip(dks, uniq, strict=True)
            ]
            order_l, ends_l = list(order), list(ends)
            packed = ku.encrypt_packed(subjects, plain, ctx)
            enc["engine"] = lambda: ku.encrypt_many(subjects, plain, ctx)
            dec["engine"] = lambda: ku.decrypt_many(subjects, recs, ctx)
            enc["engine, packed"] = lambda: ku.encrypt_packed(subjects, plain, ctx)
            dec["engine, packed"] = lambda: ku.decrypt_packed(subjects, packed, ctx)
            dec["engine, packed from a list"] = lambda: ku.decrypt_packed(subjects, recs, ctx)
            enc["engine's loop"] = seal_grouped(triples, order_l, ends_l, plain, n)
            dec["engine's loop"] = open_grouped(triples, order_l, ends_l, recs, n)
            ops = [(op, arms) for op, arms in (("enc", enc), ("dec", dec)) if op in args.ops]
            for _, arms in ops:
                for a in [a for a in arms if a not in ("bare", "bare2")]:
                    if not re.search(args.only, a):
                        del arms[a]
                for fn in arms.values():  # warm up
                    fn()
            res: dict[str, dict[str, list[tuple[int, int]]]] = {
                op: {a: [] for a in arms if a != "bare"} for op, arms in ops
            }
            for rnd in range(args.rounds):
                for op, arms in ops:
                    bare = arms["bare"]
                    for a in in_turn(list(res[op]), rnd):
                        res[op][a].append((_cpu_ns(bare), _cpu_ns(arms[a])))
    load.append(os.getloadavg()[0])
    print(
        f"{' '.join(sys.argv)}: n={n}, {args.rounds} rounds, load {load[0]:.1f} -> {load[1]:.1f}",
    )
    for op in res:
        _report(op, res[op], n)
        r = {a: min(x for _, x in pairs) for a, pairs in res[op].items()}
        if "K=10000 grouped" in r and "10k groups, 1 key" in r:
            key_ns = (r["K=10000 grouped"] - r["10k groups, 1 key"]) / _SUBJECTS
            print(f"  per distinct key at K=10000 (minus 10k groups, 1 key; mins): {key_ns:.0f} ns")


if __name__ == "__main__":
    main()
