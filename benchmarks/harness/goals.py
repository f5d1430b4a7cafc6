"""The project's throughput goals (issues 20 and 23), judged on the rows of one run.

Each goal names rows by benchmark, size and a substring of the implementation, and is a
same-run ratio (to the row's own baseline, or to another row of the same benchmark and
size), a latency or an absolute rate. ``make bench`` prints the table after the results;
``python -m benchmarks.harness.goals A.json B.json C.json`` prints each run's value and
their median (the figure the issue notes quote: "targets hold on a quiet run, three
runs' medians").

Why a fixed list here rather than a ``target`` field on rows: a goal such as "4 clients
>= 1.5x one client" relates two rows, and a module that stops producing a row must show
up as a missing figure, not silently drop its goal.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GOALS", "Goal", "evaluate", "main", "render"]


@dataclass(frozen=True)
class Goal:
    """One goal: ``impl`` of ``benchmark`` at ``n`` (None: the largest n measured).

    ``against``: None = the row's own same-run ratio; an impl substring = the ratio to
    that row (same benchmark and n); ``"p99"`` = the row's p99 latency in ms;
    ``"M/s"`` = the row's median in millions per second.
    """

    label: str
    benchmark: str
    n: int | None
    impl: str
    against: str | None
    op: str
    goal: float
    issue: int

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.goal
        if self.op == "<=":
            return value <= self.goal
        return value > self.goal


GOALS: tuple[Goal, ...] = (
    Goal("encrypt_many, 10k subjects, vs bare AESGCM loop", "records-encrypt-1KiB", None,
         "UnsealedKeyring.encrypt_many", None, ">=", 0.9, 23),
    Goal("decrypt_many, 10k subjects, vs bare AESGCM loop", "records-decrypt-1KiB", None,
         "UnsealedKeyring.decrypt_many", None, ">=", 0.9, 23),
    Goal("encrypt_packed (one buffer), 10k subjects, vs bare loop", "records-encrypt-1KiB",
         None, "UnsealedKeyring.encrypt_packed", None, ">=", 0.9, 23),
    Goal("decrypt_packed (one buffer), 10k subjects, vs bare loop", "records-decrypt-1KiB",
         None, "UnsealedKeyring.decrypt_packed", None, ">=", 0.9, 23),
    Goal("encrypt one record per call vs bare loop", "records-encrypt-1KiB", None,
         "UnsealedKeyring.encrypt, one", None, ">=", 0.6, 23),
    Goal("decrypt one record per call vs bare loop", "records-decrypt-1KiB", None,
         "UnsealedKeyring.decrypt, one", None, ">=", 0.6, 23),
    Goal("service, 1 client, encrypt_many(1000) vs in-process", "service-encrypt-1KiB", 1000,
         "keysplit.Client over Unix socket", None, ">=", 0.5, 23),
    Goal("service, 1 client, decrypt_many(1000) vs in-process", "service-decrypt-1KiB", 1000,
         "keysplit.Client over Unix socket", None, ">=", 0.5, 23),
    Goal("service, 4 clients vs 1 client (batches of 1000)", "service-clients-encrypt-1KiB",
         1000, "4 clients", "1 client", ">=", 1.5, 23),
    Goal("service, single-record encrypt p99 (ms)", "service-encrypt-1KiB", 1,
         "keysplit.Client over Unix socket", "p99", "<=", 2.0, 23),
    Goal("PostgreSQL store, first record of a new subject, vs SQLite", "store-first-record",
         None, "PostgreSQL", None, ">=", 0.5, 23),
    Goal("encrypt_dataset, 1 worker, vs in-process pandas", "encrypt-jobs", None,
         "1 worker", None, ">=", 0.8, 23),
    Goal("encrypt_dataset, 2 workers vs 1 worker", "encrypt-jobs", None,
         "2 worker", "1 worker", ">", 1.0, 23),
    Goal("jobs.rewrap on PostgreSQL, 2 workers vs 1", "rewrap-jobs-pg", None,
         "2 worker", "1 worker", ">=", 1.3, 23),
    Goal("split_batch 3-of-5 at 4*10^6 keys (M keys/s)", "shamir split 3-of-5, 16-byte keys",
         4_000_000, "keysplit split_batch", "M/s", ">=", 20.0, 23),
    Goal("wrap_batch at 10^6 keys (M keys/s)", "keywrap-wrap-16B", 1_000_000,
         "keysplit wrap_batch", "M/s", ">=", 20.0, 23),
    Goal("cluster data keys, batch 1, vs single-host service", "cluster-datakey", 1,
         "ClusterDataKeys.resolve", None, ">=", 0.25, 20),
    Goal("cluster data keys, batch 100, vs single-host service", "cluster-datakey", 100,
         "ClusterDataKeys.resolve", None, ">=", 0.25, 20),
    Goal("cluster data keys, batch 10^4, vs single-host service", "cluster-datakey", 10_000,
         "ClusterDataKeys.resolve", None, ">=", 0.25, 20),
    Goal("ClusterClient records, cached keys (10^4), vs in-process", "cluster-encrypt-1KiB",
         10_000, "ClusterClient", None, ">=", 0.9, 20),
)  # fmt: skip


def _pick(rows: Sequence[dict[str, Any]], bench: str, n: int | None, impl: str) -> Any:
    found = [r for r in rows if r["benchmark"] == bench and impl in r["impl"]]
    if n is None:
        if not found:
            return None
        top = max(r["n"] for r in found)
        found = [r for r in found if r["n"] == top]
    else:
        found = [r for r in found if r["n"] == n]
    return found[0] if found else None


def evaluate(goal: Goal, rows: Sequence[dict[str, Any]]) -> float | None:
    """The goal's figure in this run's rows; None when a row is missing."""
    row = _pick(rows, goal.benchmark, goal.n, goal.impl)
    if row is None:
        return None
    if goal.against is None:
        ratio = row.get("ratio")
        return None if ratio is None else float(ratio)
    if goal.against == "p99":
        p99 = row.get("p99_ms")
        return None if p99 is None else float(p99)
    if goal.against == "M/s":
        return float(row["median"]) / 1e6
    base = _pick(rows, goal.benchmark, row["n"], goal.against)
    return None if base is None else float(row["median"]) / float(base["median"])


def render(runs: Sequence[Sequence[dict[str, Any]]], *, only_measured: bool = False) -> list[str]:
    """Markdown lines: one row per goal, a column per run, the median, met or not."""
    head = "| issue | goal | " + "".join(f"run {i + 1} | " for i in range(len(runs)))
    lines = [head + "median | target | met |", "|---|---|" + "---:|" * (len(runs) + 1) + "---|---|"]
    for goal in GOALS:
        vals = [evaluate(goal, rows) for rows in runs]
        got = [v for v in vals if v is not None]
        if only_measured and not got:
            continue
        med = statistics.median(got) if got else None
        met = "-" if med is None else ("yes" if goal.met(med) else "**no**")
        cells = "".join(("-" if v is None else f"{v:.3g}") + " | " for v in vals)
        shown = "-" if med is None else f"{med:.3g}"
        lines.append(
            f"| {goal.issue} | {goal.label} | {cells}{shown} | {goal.op} {goal.goal:g} | {met} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the goals table over one or more ``latest.json`` files."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m benchmarks.harness.goals RESULTS.json [...]", file=sys.stderr)
        return 2
    runs = [json.loads(Path(p).read_text())["rows"] for p in paths]
    print("\n".join(render(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
