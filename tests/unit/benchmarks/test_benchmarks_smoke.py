"""Smoke tests of the benchmark harness: it runs modules, survives failures, writes results.

Tiny sizes only, and no assertion on any timing (a shared machine makes them meaningless).
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from paths import REPO

from benchmarks import bench_records, bench_shamir, harness
from benchmarks.harness import plots, report, runner, timing

# The benchmark smoke tests run real (small) benchmarks: make test-fast skips them. No
# gc.collect() before each timed call (tests/conftest.py: rows are checked, not timings).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("harness_without_collections")]

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


def test_bench_records_tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_records gives each benchmark one baseline and every keysplit row its ratio
    target as a rate (issue 23's rows)."""
    monkeypatch.setattr(bench_records, "SUBJECTS", 20)
    monkeypatch.setattr(bench_records, "N_QUICK", 200)
    rows = harness.validate_rows(bench_records.run(quick=True))
    assert {r["benchmark"] for r in rows} == {"records-encrypt-1KiB", "records-decrypt-1KiB"}
    assert sum(r["baseline"] for r in rows) == 2
    targets = [r for r in rows if "target" in r]
    assert len(targets) == 6 and all("x the bare loop" in r["note"] for r in rows)
    assert {r["impl"] for r in targets if "packed" in r["impl"]} == {
        "UnsealedKeyring.encrypt_packed, 10k subjects",
        "UnsealedKeyring.decrypt_packed, 10k subjects",
    }


def test_cli_bench_runs_the_installed_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keysplit_benchmarks.harness as installed
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "bench_zz_tiny.py").write_text(TINY)
    # main() looks modules up through runner.discover (harness.discover is its re-export)
    monkeypatch.setattr(
        installed.runner, "discover", lambda only, extra=(): [mods / "bench_zz_tiny.py"]
    )
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


# --------------------------------------------------------------------------- the package split

# Names bench modules and tests import from the harness (on main and on the wave-1 branches
# bench_service / bench_jobs): they must keep working from ``benchmarks.harness``.
MODULE_FACING = {
    "measure": timing,
    "row": timing,
    "progress": timing,
    "peak_memory_mb": timing,
    "validate_rows": timing,
    "REQUIRED_KEYS": timing,
    "Stats": timing,
    "throughput": timing,
    "time_calls": timing,
    "latency_ms": timing,
    "measure_interleaved": timing,
    "add_ratios": report,
    "reference_medians": report,
    "run_standalone": report,
    "render_markdown": report,
    "render_table": report,
    "machine_info": report,
    "build_document": report,
    "draw_plots": plots,
    "discover": runner,
    "load_module": runner,
    "main": runner,
    "run_suite": runner,
    "run_module": runner,
    "write_results": runner,
    "ModuleResult": runner,
}


@pytest.mark.parametrize("package", ["benchmarks.harness", "keysplit_benchmarks.harness"])
def test_harness_package_reexports_each_name_from_its_module(package: str) -> None:
    pkg = importlib.import_module(package)
    assert sorted(pkg.__all__) == sorted(set(pkg.__all__))
    for name in pkg.__all__:
        assert hasattr(pkg, name), name
    for name, module in MODULE_FACING.items():
        assert name in pkg.__all__, name
        home = importlib.import_module(f"{package}.{module.__name__.rsplit('.', 1)[1]}")
        assert getattr(pkg, name) is getattr(home, name), name


def test_runner_knows_the_suite_package_and_directory() -> None:
    import keysplit_benchmarks.harness as installed

    assert runner.PACKAGE == "benchmarks"
    assert installed.PACKAGE == "keysplit_benchmarks"
    assert Path(harness.__file__).resolve().parent.parent == runner.PACKAGE_DIR
    assert (runner.PACKAGE_DIR / "_worker.py").exists()


def test_pyproject_ships_the_harness_package() -> None:
    import tomllib

    root = REPO
    config = tomllib.loads((root / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("keysplit_benchmarks", *p.parent.relative_to(root / "benchmarks").parts))
        for p in (root / "benchmarks").rglob("__init__.py")
    }
    assert "keysplit_benchmarks.harness" in found
    assert found <= declared


def test_measure_interleaved_runs_each_impl_in_turn() -> None:
    order: list[str] = []
    stats = timing.measure_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 10, 3
    )
    # one warm-up round, then three interleaved repeats, each starting one impl later
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(stats) == {"a", "b"}
    assert all(0 < lo <= med <= hi for med, lo, hi in stats.values())


def test_in_turn_puts_each_impl_in_each_place_once_per_cycle() -> None:
    impls = ["in process", "client", "http", "cached", "floor"]
    rounds = [timing.in_turn(impls, r) for r in range(2 * len(impls))]
    assert all(sorted(order) == sorted(impls) for order in rounds)
    for place in range(len(impls)):
        assert sorted(order[place] for order in rounds) == sorted(impls * 2)
    assert timing.in_turn(range(3), 4) == [1, 2, 0] and timing.in_turn([], 3) == []


def test_time_calls_and_throughput() -> None:
    calls: list[int] = []
    times = timing.time_calls(lambda: calls.append(1), 4, warmup=2)
    assert len(times) == 4 and len(calls) == 6 and all(t >= 0 for t in times)
    assert len(timing.time_calls(lambda: None, 1000, budget_s=0.0, min_calls=3)) == 3
    assert timing.throughput(100, [1.0, 2.0, 4.0]) == (50.0, 25.0, 100.0)
    with pytest.raises(ValueError):
        timing.throughput(1, [])
    p50, p99 = timing.latency_ms([i / 1000 for i in range(1, 102)])  # 1 ms .. 101 ms
    assert p50 == pytest.approx(51.0) and p99 == pytest.approx(100.0)
    assert timing.latency_ms([0.002]) == (2.0, 2.0)


def test_reference_medians_and_standalone_print(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        _row(median=2.0, max=3.0),
        _row(impl="kept", baseline=False, median=4.0, min=4.0, max=4.0),
        _row(impl="j", baseline=False, median=8.0, min=8.0, max=8.0, note="a note"),
    ]
    kept = report.reference_medians(rows, lambda r: r["impl"] == "kept")
    assert report.reference_medians(rows) == {("b", 1): 2.0}
    assert kept == {("b", 1): 4.0}
    report.run_standalone(lambda quick: rows if quick else [], ["bench_x.py"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert "i *" in out[0] and out[0].endswith(" x1")
    assert out[1].endswith(" x2") and out[2].endswith(" x4")
    assert out[3] == "note: b: a note"
    assert "ratio" not in rows[0]  # the caller's rows are left as they were


# A wave-1 module written on another branch before the harness split: it uses the
# harness's rows but still reads its own clock; to be moved onto harness.timing.
PENDING: set[str] = set()
# Reading these is timing a measurement; time.monotonic/time.sleep (deadlines) are fine.
CLOCKS = {"perf_counter", "perf_counter_ns", "process_time", "thread_time", "time"}


def _bench_modules() -> list[Path]:
    return [p for p in harness.discover() if p.stem not in PENDING]


@pytest.mark.parametrize("path", _bench_modules(), ids=lambda p: p.stem)
def test_bench_module_times_and_builds_rows_only_through_the_harness(path: Path) -> None:
    """One timing/row module: no bench module reads a clock, takes a median or builds a row."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.split(".")[0]}
            if node.module == "time":
                assert not {a.name for a in node.names} & CLOCKS, where
        else:
            names = set()
        assert not names & {"timeit", "statistics"}, where
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "time"
        ):
            assert node.attr not in CLOCKS, f"{where} reads time.{node.attr}"
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            assert "median" not in keys, f"{where} builds a row by hand"
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "harness"]
    assert imports and all(n.level == 1 for n in imports), "import the harness relatively"
