"""Smoke tests of the benchmark harness: it runs modules, survives failures, writes results.

Tiny sizes only, and no assertion on any timing (a shared machine makes them meaningless).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_shamir, harness

TINY = """
from .harness import measure, progress, row


def run(quick):
    progress("tiny")
    rows = []
    for n in (10, 100):
        work = list(range(n))
        rows.append(row("sum", "builtin sum", n, "items/s", measure(lambda: sum(work), n, 3),
                        baseline=True))
        rows.append(row("sum", "keysplit list copy", n, "items/s",
                        measure(lambda: [x for x in work], n, 3), peak_mb=0.0, note="a note",
                        target=1e15))
    return rows
"""
BROKEN = "def run(quick):\n    raise RuntimeError('deliberately broken')\n"
BAD_ROWS = "def run(quick):\n    return [{'benchmark': 'x'}]\n"


def _row(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "benchmark": "b",
        "impl": "i",
        "n": 1,
        "unit": "x/s",
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "baseline": True,
    }
    r.update(over)
    return r


def test_validate_rows_accepts_contract() -> None:
    rows = [_row(), _row(impl="j", baseline=False), _row(n=2)]
    assert harness.validate_rows(rows) == rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("nope", "list"),
        ([_row(median=None)], "'median'"),
        ([_row(n=1.5)], "'n'"),
        ([_row(baseline=1)], "'baseline'"),
        ([{k: v for k, v in _row().items() if k != "unit"}], "missing key 'unit'"),
        ([_row(median=5.0)], "min <= median <= max"),
        ([_row(median=float("nan"))], "'median'"),
        ([_row(), _row(impl="j")], "2 baseline rows"),
        ([_row(baseline=False)], "0 baseline rows"),
        ([_row(target=-1.0)], "'target'"),
        ([_row(peak_mb="big")], "'peak_mb'"),
    ],
)
def test_validate_rows_rejects(rows: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        harness.validate_rows(rows)


def test_measure_is_throughput() -> None:
    calls = []
    med, lo, hi = harness.measure(lambda: calls.append(1), 1000, 3, warmup=2)
    assert len(calls) == 5
    assert 0 < lo <= med <= hi


def test_ratios() -> None:
    rows = harness.add_ratios(
        [_row(median=2.0), _row(impl="j", baseline=False, median=6.0, max=9.0)]
    )
    assert [r["ratio"] for r in rows] == [1.0, 3.0]


def test_suite_runs_writes_table_and_survives_a_broken_module(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "bench_zz_tiny.py").write_text(TINY)
    (mods / "bench_zz_broken.py").write_text(BROKEN)
    (mods / "bench_zz_badrows.py").write_text(BAD_ROWS)
    out = tmp_path / "results"
    rc = harness.main(
        [
            "--quick",
            "--dir",
            str(mods),
            "--only",
            "zz_tiny",
            "zz_broken",
            "zz_badrows",
            "--out",
            str(out),
        ]
    )
    assert rc == 1  # a module failed, and the run still finished and wrote its results
    doc = json.loads((out / "latest.json").read_text())
    status = {m["name"]: m for m in doc["modules"]}
    assert status["bench_zz_tiny"]["error"] is None
    assert status["bench_zz_tiny"]["max_rss_mb"] > 0
    assert "deliberately broken" in status["bench_zz_broken"]["error"]
    assert "bad rows" in status["bench_zz_badrows"]["error"]
    assert len(doc["rows"]) == 4
    assert {r["ratio"] for r in doc["rows"] if r["baseline"]} == {1.0}
    for key in ("cpu", "cores", "python", "numpy", "cryptography", "date", "mode"):
        assert doc["machine"][key]
    assert doc["machine"]["mode"] == "quick"
    md = (out / "latest.md").read_text()
    assert "| sum | 100 | builtin sum \\* |" in md
    assert "FAILED: RuntimeError: deliberately broken" in md
    assert "a note" in md
    assert "| sum | 100 | keysplit list copy |" in md.split("## Targets")[1]
    assert "**no**" in md
    assert doc["plots"] == ["summary.png", "sum.png"]
    assert (out / "sum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_discover_finds_the_shamir_module() -> None:
    assert "bench_shamir" in [p.stem for p in harness.discover()]
    assert [p.stem for p in harness.discover(["shamir"])] == ["bench_shamir"]


def test_bench_shamir_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_shamir, "_sizes", lambda quick, k, m: [1000])
    monkeypatch.setattr(bench_shamir, "SETTINGS", ((3, 5),))
    monkeypatch.setattr(bench_shamir, "_sample_size", lambda one, quick: 5)
    rows = harness.validate_rows(bench_shamir.run(quick=True))
    impls = {(r["benchmark"], r["impl"]) for r in rows}
    assert ("shamir split 3-of-5, 16-byte keys", "keysplit split_batch") in impls
    assert ("shamir combine 3-of-5, 16-byte keys", "keysplit combine_batch") in impls
    assert any(r["impl"].startswith("shamir-mnemonic") for r in rows)
    assert all(r["unit"] == "keys/s" and r["n"] == 1000 for r in rows)


def test_cli_bench_runs_the_installed_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keysplit_benchmarks.harness as installed
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "bench_zz_tiny.py").write_text(TINY)
    monkeypatch.setattr(installed, "discover", lambda only, extra=(): [mods / "bench_zz_tiny.py"])
    out = tmp_path / "res"
    result = CliRunner().invoke(app, ["bench", "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "builtin sum" in result.stdout
    assert (out / "latest.md").exists()
    assert not list(out.glob("*.png"))


def test_cli_bench_unknown_module(tmp_path: Path) -> None:
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["bench", "--only", "no_such_topic", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: no benchmark modules matched" in result.stderr
    assert "hint: available modules:" in result.stderr
    assert "shamir" in result.stderr
