"""Smoke test of benchmarks/bench_shares.py: tiny size, rows honour the contract."""

from __future__ import annotations

import pytest

from benchmarks import bench_shares, harness

# The benchmark smoke tests run real (small) benchmarks: make test-fast skips them. No
# gc.collect() before each timed call (tests/conftest.py: rows are checked, not timings).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("harness_without_collections")]


def test_bench_shares_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_shares, "QUICK_N", 2)
    rows = harness.validate_rows(bench_shares.run(quick=True))
    assert [r["baseline"] for r in rows] == [True, False, False]
    assert {r["n"] for r in rows} == {2}
    assert all(r["median"] > 0 for r in rows)  # a throughput, never asserted against a figure
