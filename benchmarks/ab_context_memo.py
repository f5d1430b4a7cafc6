"""Before/after: single-record ``encrypt``/``decrypt`` of two ``records.py`` in one process.

    git show <rev>:keysplit/keyring/records.py > /tmp/records-before.py
    .venv/bin/python -m benchmarks.ab_context_memo /tmp/records-before.py [--rounds 300]

Three arms, each its own ``Records`` engine over the same ``DataKeys`` (the same key
objects and key cache), memo warmed: ``before`` (the file given), ``after`` and ``after2``
(this tree's ``records.py``, loaded twice: the A/A). A round runs every arm over the next
1,000 of 10k subjects (1 KiB plaintexts, context ``{"table": "messages"}``: the
bench_records row; ``--fresh-context``: an equal dict made per call; ``--alternate``: each
subject called with ``{"table": "messages"}`` then ``{"table": "mail"}``, so the key's memo
mostly holds the other context, the caller that made the single-record paths check the
context twice, stop 41 D1), arms in turn; the figure is thread CPU per call, and each arm's
paired difference with ``before`` (median over rounds). Not a ``bench_*`` module: the
harness does not run it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keysplit
from benchmarks.harness.timing import in_turn
from keysplit import Keyring

_SUBJECTS = 10_000
_BLOCK = 1_000
_MAIL = {"table": "mail"}


def _load(path: Path, name: str) -> Any:
    """The ``Records`` class of a ``records.py`` file, its relative imports made absolute."""
    src = (
        path.read_text()
        .replace("from .. import", "from keysplit import")
        .replace("from ..", "from keysplit.")
        .replace("from .datakeys", "from keysplit.keyring.datakeys")
    )
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(src, str(path), "exec"), module.__dict__)
    return module.Records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="the records.py to compare with this tree's")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument(
        "--fresh-context", action="store_true", help="a new context dict per call (a literal)"
    )
    ap.add_argument(
        "--alternate", action="store_true", help="two contexts in turn per subject (see above)"
    )
    args = ap.parse_args()
    here = Path(keysplit.__file__).parent / "keyring" / "records.py"
    arms = {
        "before": _load(args.before, "records_before"),
        "after": _load(here, "records_after"),
        "after2": _load(here, "records_after2"),
    }
    names = [f"user-{i:05d}" for i in range(_SUBJECTS)]
    pts = [os.urandom(1024) for _ in range(256)]
    plain = [pts[i % 256] for i in range(_SUBJECTS)]
    ctx = {"table": "messages"}
    fresh = bool(args.fresh_context)
    res: dict[tuple[str, str], list[float]] = {(a, op): [] for a in arms for op in ("enc", "dec")}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            recs = ku.encrypt_many(names, plain, ctx)
            engines = {a: cls(ku.records.datakeys) for a, cls in arms.items()}
            for e in engines.values():  # memo entries made, keys cached
                for s, p, r in zip(names, plain, recs, strict=True):
                    e.encrypt(p, subject=s, context=ctx)
                    assert e.decrypt(r, subject=s, context=ctx) == p
            # --alternate: each arm its own subjects (a key's memo is on the key, shared by
            # engines: one arm's calls would move the next arm's path)
            own = {a: [f"{a}-{s}" for s in names] for a in arms}
            alt = {
                a: (ku.encrypt_many(own[a], plain, ctx), ku.encrypt_many(own[a], plain, _MAIL))
                for a in (arms if args.alternate else ())
            }
            for rnd in range(args.rounds):
                lo = (rnd * _BLOCK) % _SUBJECTS
                hi = lo + _BLOCK
                block = list(zip(names[lo:hi], plain[lo:hi], recs[lo:hi], strict=True))
                if args.alternate:
                    for op, i in (("enc", 1), ("dec", 2)):
                        for a in in_turn(list(arms), rnd):
                            fn = getattr(engines[a], "encrypt" if i == 1 else "decrypt")
                            rows_ctx, rows_mail = (
                                list(zip(own[a][lo:hi], plain[lo:hi], r[lo:hi], strict=True))
                                for r in alt[a]
                            )
                            res[a, op].append(_alternating(fn, rows_ctx, rows_mail, i))
                    continue
                for a in in_turn(list(arms), rnd):
                    res[a, "enc"].append(_per_call(engines[a].encrypt, block, 1, fresh, ctx))
                for a in in_turn(list(arms), rnd):
                    res[a, "dec"].append(_per_call(engines[a].decrypt, block, 2, fresh, ctx))
    load.append(os.getloadavg()[0])
    print(f"load {load[0]:.1f} -> {load[1]:.1f}, {args.rounds} rounds of {_BLOCK} calls per arm")
    print("thread CPU ns per call: median of rounds; paired median difference per round")
    for op in ("enc", "dec"):
        base = res["before", op]
        for a in arms:
            mine = res[a, op]
            diff = statistics.median(x - y for x, y in zip(mine, base, strict=True))
            print(f"{op} {a:7s} {statistics.median(mine):7.0f}  vs before {diff:+6.0f}")


def _alternating(
    fn: Callable[..., bytes],
    block: list[tuple[str, bytes, bytes]],
    other: list[tuple[str, bytes, bytes]],
    i: int,
) -> float:
    """Thread CPU ns per call of ``fn``, each subject of ``block`` called under the bench
    context, then (``other``: the same subjects' rows under it) under ``{"table": "mail"}``."""
    ctx, mail = {"table": "messages"}, dict(_MAIL)
    t = time.thread_time_ns()
    for row, row2 in zip(block, other, strict=True):
        fn(row[i], subject=row[0], context=ctx)
        fn(row2[i], subject=row2[0], context=mail)
    return (time.thread_time_ns() - t) / (2 * len(block))


def _per_call(
    fn: Callable[..., bytes],
    block: list[tuple[str, bytes, bytes]],
    i: int,
    fresh: bool,
    ctx: dict[str, str],
) -> float:
    """Thread CPU ns per call of ``fn`` over ``block`` (``i``: the plaintext or the record),
    with ``ctx`` or (``fresh``) an equal dict made for each call."""
    if fresh:
        t = time.thread_time_ns()
        for row in block:
            fn(row[i], subject=row[0], context={"table": "messages"})
    else:
        t = time.thread_time_ns()
        for row in block:
            fn(row[i], subject=row[0], context=ctx)
    return (time.thread_time_ns() - t) / len(block)


if __name__ == "__main__":
    main()
