"""The benchmark harness: discover ``bench_*.py``, run each in its own process, report.

Why one process per module: a crash (or an out-of-memory kill) in one module is reported
without ending the run, each module starts from a clean heap, and the child's
``ru_maxrss`` is an honest whole-module peak memory figure. The child is
``<package>._worker``; it loads the module with :func:`load_module` and writes its rows as
JSON, which are checked against the contract (:func:`.timing.validate_rows`) here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plots import draw_plots
from .report import build_document, render_markdown, render_table
from .timing import PROGRESS_PREFIX, validate_rows

__all__ = [
    "PACKAGE",
    "PACKAGE_DIR",
    "ModuleResult",
    "discover",
    "load_module",
    "main",
    "run_module",
    "run_suite",
    "write_results",
]

# The suite's own package: ``benchmarks`` from a checkout, ``keysplit_benchmarks`` installed.
PACKAGE = (__package__ or "benchmarks.harness").rpartition(".")[0] or "benchmarks"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
TIMEOUT_S = {True: 600.0, False: 3 * 3600.0}


def discover(only: Sequence[str] = (), extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """Paths of the ``bench_*.py`` modules of the suite (and in ``extra_dirs``), filtered.

    ``only`` takes topic or module names (``shamir`` or ``bench_shamir``).
    """
    found: dict[str, Path] = {}
    for d in (PACKAGE_DIR, *extra_dirs):
        for p in sorted(Path(d).glob("bench_*.py")):
            found.setdefault(p.stem, p.resolve())
    names = sorted(found)
    if only:
        wanted = {w if w.startswith("bench_") else f"bench_{w}" for w in only}
        names = [n for n in names if n in wanted]
    return [found[n] for n in names]


def load_module(path: Path) -> Any:
    """Import a benchmark module from its file, as a submodule of the suite's package.

    Loading it under that package's name keeps its relative imports (``from .harness
    import measure``) working for modules in other directories too.
    """
    name = f"{PACKAGE}.{path.stem}"
    if path.resolve().parent == PACKAGE_DIR:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class ModuleResult:
    """What one module's run produced (rows, or the error that ended it)."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    max_rss_mb: float | None = None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    parent = str(PACKAGE_DIR.parent)
    env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_module(
    path: Path, quick: bool, on_progress: Callable[[str], None] = lambda _m: None
) -> ModuleResult:
    """Run one module in a child process (see this module's docstring for why)."""
    result = ModuleResult(path.stem)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keysplit-bench-") as tmp:
        out_path = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", f"{PACKAGE}._worker", str(path), "1" if quick else "0"]
        cmd.append(str(out_path))
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_child_env()
        )
        tail: list[str] = []

        def reader() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                line = line.rstrip("\n")
                if line.startswith(PROGRESS_PREFIX):
                    on_progress(line[len(PROGRESS_PREFIX) :])
                else:
                    tail.append(line)
                    del tail[:-30]

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            rc = proc.wait(timeout=TIMEOUT_S[quick])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        th.join(timeout=5)
        result.seconds = time.perf_counter() - t0
        if rc is None:
            result.error = f"timed out after {TIMEOUT_S[quick]:.0f} s"
            return result
        if rc != 0 or not out_path.exists():
            last = next((ln for ln in reversed(tail) if ln.strip()), "")
            result.error = f"exit code {rc}: {last}" if last else f"exit code {rc}"
            return result
        payload = json.loads(out_path.read_text())
    if payload.get("error"):
        result.error = payload["error"]
        return result
    try:
        result.rows = validate_rows(payload["rows"])
    except ValueError as exc:
        result.error = f"bad rows: {exc}"
    result.max_rss_mb = payload.get("max_rss_mb")
    return result


def run_suite(paths: Sequence[Path], quick: bool, show_progress: bool = True) -> list[ModuleResult]:
    """Run the modules in order, showing progress on stderr with rich."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    results: list[ModuleResult] = []
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[module]}[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not show_progress,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=len(paths), module="")
        for path in paths:
            name = path.stem
            bar.update(task, module=name, description="starting")
            res = run_module(path, quick, lambda m: bar.update(task, description=m))
            status = f"failed: {res.error}" if res.error else f"{len(res.rows)} rows"
            bar.update(task, advance=1, description="")
            if show_progress:
                console.print(f"  {name}: {status} ({res.seconds:.1f} s)")
            results.append(res)
    return results


def write_results(doc: dict[str, Any], outdir: Path, plots: bool = True) -> list[Path]:
    """Write ``latest.json``, ``latest.md`` and the PNG plots into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    doc["plots"] = []
    if plots:
        try:
            doc["plots"] = draw_plots(doc, outdir)
        except ImportError:
            doc["plots_error"] = "matplotlib is not installed: no plots"
    (outdir / "latest.json").write_text(json.dumps(doc, indent=1) + "\n")
    (outdir / "latest.md").write_text(render_markdown(doc))
    return [outdir / "latest.json", outdir / "latest.md", *(outdir / p for p in doc["plots"])]


def main(argv: Sequence[str] | None = None, default_outdir: Path | None = None) -> int:
    """``python -m benchmarks [--quick|--full] [--only NAME ...] [--out DIR] [--no-plots]``."""
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, >= 3 repeats (default)")
    mode.add_argument("--full", action="store_true", help="all sizes, >= 5 repeats")
    parser.add_argument(
        "--only", nargs="+", action="extend", default=[], help="module names, e.g. shamir"
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--dir", type=Path, action="append", default=[], help="also run bench_*.py found here"
    )
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    paths = discover(args.only, args.dir)
    if args.list:
        print("\n".join(str(p) for p in paths))
        return 0
    quick = not args.full
    outdir = args.out or default_outdir or PACKAGE_DIR / "results"
    if not paths:
        print("error: no benchmark modules matched", file=sys.stderr)
        names = ", ".join(p.stem.removeprefix("bench_") for p in discover((), args.dir))
        print(f"hint: available modules: {names}", file=sys.stderr)
        return 1
    load_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    results = run_suite(paths, quick)
    command = "python -m benchmarks " + ("--quick" if quick else "--full")
    if args.only:
        command += " --only " + " ".join(args.only)
    doc = build_document(results, quick, command)
    doc["machine"]["load_average_start"] = load_start
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(render_table(doc["rows"]))
    from .goals import render as render_goals  # lazy: `python -m benchmarks.harness.goals`

    goal_lines = render_goals([doc["rows"]], only_measured=True)
    if len(goal_lines) > 2:  # the issues' goals measured in this run (make bench prints them)
        print("\nIssue goals (same-run figures):\n" + "\n".join(goal_lines))
    written = write_results(doc, outdir, plots=not args.no_plots)
    print(f"wrote {written[1]} and {len(written) - 1} more files in {outdir}", file=sys.stderr)
    failed = [r.name for r in results if r.error]
    if failed:
        print(f"error: {len(failed)} module(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
