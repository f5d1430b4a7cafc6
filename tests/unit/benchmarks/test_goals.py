"""The issues' throughput goals are judged on the right rows (no timing is asserted here)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from paths import REPO

from benchmarks import bench_keywrap
from benchmarks.harness import goals
from benchmarks.harness.report import render_markdown


def _row(bench: str, n: int, impl: str, median: float, **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": bench,
        "n": n,
        "impl": impl,
        **{"median": median, "min": median, "max": median, "unit": "x/s", "baseline": False},
        **extra,
    }


def _goal(label_part: str) -> goals.Goal:
    return next(g for g in goals.GOALS if label_part in g.label)


def test_ratio_to_another_row_of_the_same_size() -> None:
    g = _goal("4 clients vs 1")
    rows = [
        _row(g.benchmark, 1000, "1 client", 100.0),
        _row(g.benchmark, 1000, "4 clients", 160.0),
        _row(g.benchmark, 10, "1 client", 1.0),  # another size: never the baseline
    ]
    assert goals.evaluate(g, rows) == 1.6
    assert g.met(1.6) and not g.met(1.4)


def test_largest_size_own_ratio_latency_and_rate() -> None:
    g = _goal("encrypt_many, 10k")
    rows = [
        _row(g.benchmark, 10, g.impl + ", 10k subjects", 1.0, ratio=0.1),
        _row(g.benchmark, 50_000, g.impl + ", 10k subjects", 1.0, ratio=0.93),
    ]
    assert goals.evaluate(g, rows) == 0.93
    p99 = _goal("p99")
    assert goals.evaluate(p99, [_row(p99.benchmark, 1, p99.impl, 5.0, p99_ms=2.5)]) == 2.5
    assert not p99.met(2.5) and p99.met(1.9)
    rate = _goal("split_batch")
    assert goals.evaluate(rate, [_row(rate.benchmark, 4_000_000, rate.impl, 25e6)]) == 25.0


def test_a_missing_row_is_shown_missing_not_met() -> None:
    g = _goal("4 clients vs 1")
    assert goals.evaluate(g, [_row(g.benchmark, 1000, "4 clients", 160.0)]) is None
    lines = goals.render([[]])
    assert all(line.endswith("| - |") for line in lines[2:])
    assert len(lines) == 2 + len(goals.GOALS)


def test_report_lists_only_measured_goals() -> None:
    g = _goal("4 clients vs 1")
    doc = json.loads((REPO / "benchmarks" / "results" / "latest.json").read_text())
    doc.update(plots=[])
    doc.update(
        rows=[
            _row(g.benchmark, 1000, "1 client", 100.0, baseline=True, ratio=1.0),
            _row(g.benchmark, 1000, "4 clients", 120.0, ratio=1.2),
        ]
    )
    md = render_markdown(doc)
    assert "## Issue goals" in md
    assert (
        "| 23 | service, 4 clients vs 1 client (batches of 1000) | 1.2 | 1.2 | >= 1.5 | **no** |"
        in md
    )
    assert "encrypt_many, 10k" not in md.split("## Issue goals")[1]


def test_wrap_batch_goal_reads_wrap_batch_not_its_aes_ceiling() -> None:
    """bench_keywrap's ceiling row sits next to wrap_batch's: the goal must not pick it up."""
    g = _goal("wrap_batch at 10^6")
    rows = [
        _row(g.benchmark, 1_000_000, bench_keywrap.ceiling_label(16), 40e6),
        _row(g.benchmark, 1_000_000, "keysplit wrap_batch", 15e6),
        _row(g.benchmark, 1_000_000, "keysplit wrap_batch, per-row IV (subject-bound)", 14e6),
    ]
    assert goals.evaluate(g, rows) == 15.0
    bench_keywrap.ecb_ceiling(b"k" * 16, 3 * (1 << 17) + 5, 12, threads=2)  # runs, any size


@pytest.mark.parametrize(("key_bytes", "passes"), [(16, 12), (24, 18), (32, 24)])
def test_keywrap_ceiling_row_names_the_passes_of_its_key_size(key_bytes: int, passes: int) -> None:
    """The ceiling row said "12 passes" whatever the key size: RFC 3394 makes 6 passes per
    64-bit half-block of the key (its 2.2.1 wrap loop), so 12 only for 16-byte keys."""
    assert bench_keywrap.ecb_passes(key_bytes) == passes
    assert f"the {passes} ECB passes" in bench_keywrap.ceiling_label(key_bytes)
