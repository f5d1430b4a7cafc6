"""benchmarks/dprf_designs.py runs end to end on a tiny batch (no timing asserted)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import dprf_designs


def test_dprf_designs_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["dprf_designs", "--batch", "20", "--repeats", "1"])
    assert dprf_designs.main() == 0
    out = capsys.readouterr().out
    assert "DLEQ verify" in out and "ECB under 2 subset keys" in out and "ratio DDH/DiSE" in out
