"""bench_stream follows the benchmark contract (tiny sizes; timings are never asserted)."""

from __future__ import annotations

import pytest

from benchmarks import bench_stream, harness

# The benchmark smoke tests run real (small) benchmarks: make test-fast skips them. No
# gc.collect() before each timed call (tests/conftest.py: rows are checked, not timings).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("harness_without_collections")]


def test_bench_stream_rows_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    mib = 1 << 20
    monkeypatch.setattr(bench_stream, "_sizes", lambda quick: (2 * mib, (mib, 2 * mib)))
    monkeypatch.setattr(bench_stream.shutil, "which", lambda name: None)  # skip age here
    rows = harness.validate_rows(bench_stream.run(quick=True))
    impls = {(r["benchmark"], r["impl"]) for r in rows}
    assert ("stream encrypt 1 MiB chunks", "keysplit encrypt_stream") in impls
    assert ("stream decrypt 1 MiB chunks", "keysplit decrypt_stream") in impls
    for r in rows:
        if r["impl"].startswith("keysplit"):
            assert r["peak_mb"] > 0 and "peak RSS" in r["note"]
