"""The benchmark harness: discover ``bench_*.py``, run each in its own process, report.

Contract for a benchmark module (``benchmarks/bench_<topic>.py``)::

    def run(quick: bool) -> list[dict]

Each row is ``{"benchmark": str, "impl": str, "n": int, "unit": str, "median": float,
"min": float, "max": float, "baseline": bool}``: median/min/max are *throughputs* (higher
is better) over >= 5 repeats (quick mode: >= 3 repeats and small sizes). Exactly one row
per (benchmark, n) has ``baseline: True``: the reference measured in the same run, against
which every other row's ratio is computed. Optional keys: ``"peak_mb"`` (peak memory of
one call, e.g. from :func:`peak_memory_mb`), ``"timed_n"`` (when a slow peer was timed on a
sample of ``timed_n`` items and reported per item), ``"target"`` (the project's target
for this row, same unit: drawn on the plot and listed as met or not) and ``"note"`` (one
short sentence).

Why one process per module: a crash (or an out-of-memory kill) in one module is reported
without ending the run, each module starts from a clean heap, and the child's
``ru_maxrss`` is an honest whole-module peak memory figure.

Modules should import helpers relatively (``from .harness import measure``): the suite
runs as ``benchmarks`` from a checkout and as ``keysplit_benchmarks`` when installed.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "REQUIRED_KEYS",
    "ModuleResult",
    "discover",
    "load_module",
    "main",
    "measure",
    "peak_memory_mb",
    "progress",
    "row",
    "run_suite",
    "validate_rows",
]

REQUIRED_KEYS = {
    "benchmark": str,
    "impl": str,
    "n": int,
    "unit": str,
    "median": float,
    "min": float,
    "max": float,
    "baseline": bool,
}
PROGRESS_PREFIX = "::progress::"
PACKAGE = __package__ or "benchmarks"
PACKAGE_DIR = Path(__file__).resolve().parent
TIMEOUT_S = {True: 600.0, False: 3 * 3600.0}


# --------------------------------------------------------------------------- helpers for modules


def measure(
    fn: Callable[[], object],
    work: float,
    repeats: int,
    *,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
) -> tuple[float, float, float]:
    """Time ``fn`` ``repeats`` times; return (median, min, max) throughput = ``work / seconds``.

    ``setup`` (untimed) runs before every call, e.g. to reset a buffer. ``warmup`` untimed
    calls come first (thread pools, lazy imports, first-touch page faults of reused buffers).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    rates = [work / max(t, 1e-12) for t in times]
    return statistics.median(rates), min(rates), max(rates)


def row(
    benchmark: str,
    impl: str,
    n: int,
    unit: str,
    stats: tuple[float, float, float],
    *,
    baseline: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Build a contract row from :func:`measure`'s result."""
    med, lo, hi = stats
    out: dict[str, Any] = {
        "benchmark": benchmark,
        "impl": impl,
        "n": int(n),
        "unit": unit,
        "median": float(med),
        "min": float(lo),
        "max": float(hi),
        "baseline": bool(baseline),
    }
    out.update(extra)
    return out


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """Peak memory (MB) allocated while ``fn`` runs, via tracemalloc.

    numpy reports its buffers to tracemalloc, so this counts arrays and Python objects;
    memory that C libraries allocate privately (OpenSSL contexts) is not seen. Run it outside
    the timed loop: tracing slows Python-level code down.
    """
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def progress(message: str) -> None:
    """Tell the harness what is running now (shown in its progress display)."""
    sys.stderr.write(f"{PROGRESS_PREFIX}{message}\n")
    sys.stderr.flush()


def validate_rows(rows: object) -> list[dict[str, Any]]:
    """Check rows against the contract; raise ``ValueError`` naming the first problem."""
    if not isinstance(rows, list):
        raise ValueError(f"run() must return a list of dicts, got {type(rows).__name__}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"row {i}: not a dict")
        for key, typ in REQUIRED_KEYS.items():
            if key not in r:
                raise ValueError(f"row {i}: missing key {key!r}")
            v = r[key]
            if typ is float:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            elif typ is int:
                ok = isinstance(v, int) and not isinstance(v, bool)
            else:
                ok = isinstance(v, typ)
            if not ok:
                raise ValueError(f"row {i}: {key!r} must be {typ.__name__}, got {v!r}")
        if not r["min"] <= r["median"] <= r["max"]:
            raise ValueError(f"row {i}: need min <= median <= max")
        for key in ("target", "peak_mb"):
            v = r.get(key)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"row {i}: {key!r} must be a non-negative number, got {v!r}")
    groups: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["benchmark"], r["n"])
        groups[key] = groups.get(key, 0) + (1 if r["baseline"] else 0)
    for (bench, n), count in groups.items():
        if count != 1:
            raise ValueError(f"{bench!r} n={n}: {count} baseline rows (need exactly one)")
    return rows


# --------------------------------------------------------------------------- running the suite


def discover(only: Sequence[str] = (), extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """Paths of the ``bench_*.py`` modules here (and in ``extra_dirs``), optionally filtered.

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
    """Import a benchmark module from its file, as a submodule of this package.

    Loading it under this package's name keeps its relative imports (``from .harness
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
    """Run one module in a child process (see module docstring for why)."""
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


# --------------------------------------------------------------------------- machine details


def _openssl_speed(quick: bool) -> dict[str, Any] | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    seconds = "1" if quick else "3"
    try:
        proc = subprocess.run(
            [exe, "speed", "-evp", "aes-128-gcm", "-seconds", seconds, "-bytes", "16384"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        version = subprocess.run(
            [exe, "version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # Last table line: "AES-128-GCM   123456.78k" (1000s of bytes per second).
    match = re.search(r"(?im)^aes-128-gcm\s+([\d.]+)k\s*$", proc.stdout)
    if not match:
        return None
    return {
        "command": f"openssl speed -evp aes-128-gcm -seconds {seconds} -bytes 16384",
        "version": version,
        "gb_per_s": float(match.group(1)) * 1e3 / 1e9,
        "block_bytes": 16384,
    }


def machine_info(quick: bool) -> dict[str, Any]:
    """CPU, cores, library versions and the system OpenSSL's GCM speed."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if quick else "full",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
    }
    try:
        import cryptography
        from cryptography.hazmat.backends.openssl.backend import backend

        info["cryptography"] = cryptography.__version__
        info["cryptography_openssl"] = backend.openssl_version_text()
    except Exception:  # pragma: no cover - cryptography is a hard dependency
        pass
    try:
        import keysplit

        info["keysplit"] = keysplit.__version__
    except Exception:  # pragma: no cover
        pass
    info["openssl_speed"] = _openssl_speed(quick)
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return info


# --------------------------------------------------------------------------- reporting


def add_ratios(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's ``ratio``: its median over the median of the baseline of its (benchmark, n)."""
    rows = list(rows)
    base = {(r["benchmark"], r["n"]): r["median"] for r in rows if r["baseline"]}
    for r in rows:
        b = base.get((r["benchmark"], r["n"]))
        r["ratio"] = r["median"] / b if b else None
    return rows


def _fmt(v: float) -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _fmt_n(n: int) -> str:
    if n >= 1000 and n == 10 ** round(math.log10(n)):
        return f"10^{round(math.log10(n))}"
    return f"{n:,}"


def render_markdown(doc: dict[str, Any]) -> str:
    """The results document (``latest.md``): machine, table, failures."""
    m = doc["machine"]
    lines = [
        f"# keysplit benchmark results ({m['mode']} mode)",
        "",
        f"- date: {m['date']}",
        f"- command: `{doc['command']}`",
        f"- CPU: {m['cpu']}, {m['cores']} cores (shared machine: figures are medians)",
        f"- Python {m['python']}, numpy {m['numpy']}, cryptography {m.get('cryptography')}"
        f" ({m.get('cryptography_openssl')}), keysplit {m.get('keysplit')}",
        f"- platform: {m['platform']}",
    ]
    if m.get("load_average_start") or m.get("load_average_end"):
        lines.append(
            f"- load average (1, 5, 15 min) at start {m.get('load_average_start')}, at end "
            f"{m.get('load_average_end')}: above ~1 the other core was busy with other jobs"
        )
    ssl = m.get("openssl_speed")
    if ssl:
        lines.append(
            f"- machine reference line: `{ssl['command']}` ({ssl['version']}): "
            f"{ssl['gb_per_s']:.2f} GB/s AES-128-GCM. This is the *system* OpenSSL CLI; the "
            "OpenSSL bundled in the cryptography wheel is markedly faster at GCM (~4.7x "
            "measured while sizing the targets), so this line is not a ceiling."
        )
    else:
        lines.append("- machine reference line: `openssl` command not found, skipped")
    lines += [
        "",
        "Throughput: higher is better. **ratio** = median / median of the baseline row "
        "(marked \\*) of the same benchmark and n, measured in the same run. "
        "*timed on* = a slow per-item peer timed on a sample of that many items and "
        "reported per item. peak MB = peak memory of one call (tracemalloc) where measured.",
        "",
        "| benchmark | n | impl | median | min | max | unit | ratio | peak MB |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in doc["rows"]:
        impl = r["impl"] + (" \\*" if r["baseline"] else "")
        if r.get("timed_n"):
            impl += f" (timed on {r['timed_n']:,})"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3g}x"
        peak = "" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f}"
        lines.append(
            f"| {r['benchmark']} | {_fmt_n(r['n'])} | {impl} | {_fmt(r['median'])} | "
            f"{_fmt(r['min'])} | {_fmt(r['max'])} | {r['unit']} | {ratio} | {peak} |"
        )
    lines += [
        "",
        "## Modules",
        "",
        "| module | status | seconds | peak RSS MB |",
        "|---|---|---:|---:|",
    ]
    for mod in doc["modules"]:
        status = f"FAILED: {mod['error']}" if mod["error"] else f"{mod['rows']} rows"
        rss = "" if mod["max_rss_mb"] is None else f"{mod['max_rss_mb']:.0f}"
        lines.append(f"| {mod['name']} | {status} | {mod['seconds']:.1f} | {rss} |")
    targets = [r for r in doc["rows"] if r.get("target")]
    if targets:
        lines += [
            "",
            "## Targets",
            "",
            "| benchmark | n | impl | median | target | met |",
            "|---|---:|---|---:|---:|---|",
        ]
        for r in targets:
            met = "yes" if r["median"] >= r["target"] else "**no**"
            lines.append(
                f"| {r['benchmark']} | {_fmt_n(r['n'])} | {r['impl']} | {_fmt(r['median'])} | "
                f"{_fmt(r['target'])} {r['unit']} | {met} |"
            )
    notes = sorted({(r["benchmark"], r["note"]) for r in doc["rows"] if r.get("note")})
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{b}**: {n}" for b, n in notes]
    if doc.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in doc["plots"]]
    return "\n".join(lines) + "\n"


def render_table(rows: Sequence[dict[str, Any]]) -> Any:
    """A rich table of the rows, for the terminal."""
    from rich.table import Table

    table = Table(title="keysplit benchmarks (throughput, higher is better)")
    for col, just in (
        ("benchmark", "left"),
        ("n", "right"),
        ("impl", "left"),
        ("median", "right"),
        ("min", "right"),
        ("max", "right"),
        ("unit", "left"),
        ("ratio", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        impl = r["impl"] + (" *" if r["baseline"] else "")
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3g}x"
        table.add_row(
            r["benchmark"],
            _fmt_n(r["n"]),
            impl,
            _fmt(r["median"]),
            _fmt(r["min"]),
            _fmt(r["max"]),
            r["unit"],
            ratio,
        )
    return table


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _bar_color(r: dict[str, Any]) -> str:
    if r["baseline"]:
        return "tab:gray"
    return "tab:blue" if r["impl"].startswith("keysplit") else "tab:orange"


def _draw_summary(plt: Any, doc: dict[str, Any], outdir: Path) -> str | None:
    """keysplit vs baseline at each benchmark's largest n: one bar per keysplit row."""
    largest: dict[str, int] = {}
    for r in doc["rows"]:
        largest[r["benchmark"]] = max(largest.get(r["benchmark"], 0), r["n"])
    picked = [
        r
        for r in doc["rows"]
        if r["n"] == largest[r["benchmark"]]
        and not r["baseline"]
        and r["impl"].startswith("keysplit")
        and r.get("ratio")
    ]
    if not picked:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(picked) + 1.6), dpi=110)
    labels = [f"{r['benchmark']} (n={_fmt_n(r['n'])}): {r['impl']}" for r in picked]
    ax.barh(range(len(picked)), [r["ratio"] for r in picked], color="tab:blue")
    ax.set_yticks(range(len(picked)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1, color="grey", linestyle=":")
    ax.set_xlabel("throughput ratio to the same-run baseline (log; 1 = baseline)")
    ax.set_title("keysplit vs its reference, largest n of each benchmark")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(outdir / "summary.png", bbox_inches="tight")
    plt.close(fig)
    return "summary.png"


def draw_plots(doc: dict[str, Any], outdir: Path) -> list[str]:
    """One PNG per benchmark: throughput vs n (log-log) per impl, or bars for a single n.

    Returns the file names written. Needs matplotlib (Agg backend: no display needed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_bench: dict[str, list[dict[str, Any]]] = {}
    for r in doc["rows"]:
        by_bench.setdefault(r["benchmark"], []).append(r)
    written = []
    for bench, rows in by_bench.items():
        fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=110)
        ns = sorted({r["n"] for r in rows})
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        unit = rows[0]["unit"]
        if len(ns) > 1:
            for impl in impls:
                pts = sorted((r["n"], r) for r in rows if r["impl"] == impl)
                xs = [n for n, _ in pts]
                med = [r["median"] for _, r in pts]
                lo = [r["median"] - r["min"] for _, r in pts]
                hi = [r["max"] - r["median"] for _, r in pts]
                sampled = any(r.get("timed_n") for _, r in pts)
                ax.errorbar(
                    xs,
                    med,
                    yerr=[lo, hi],
                    marker="o",
                    capsize=3,
                    linestyle="--" if sampled else "-",
                    label=impl + (" [timed on a sample]" if sampled else ""),
                )
            ax.set_xscale("log")
            ax.set_xlabel("n")
        else:
            picked = [next(r for r in rows if r["impl"] == i) for i in impls]
            med = [r["median"] for r in picked]
            lo = [r["median"] - r["min"] for r in picked]
            hi = [r["max"] - r["median"] for r in picked]
            colors = [_bar_color(r) for r in picked]
            ax.bar(range(len(impls)), med, yerr=[lo, hi], capsize=3, color=colors)
            ax.set_xticks(range(len(impls)), impls, rotation=20, ha="right", fontsize=8)
            ax.set_xlabel(f"n = {ns[0]:,}")
        for target in sorted({r["target"] for r in rows if r.get("target")}):
            ax.axhline(target, color="tab:red", linestyle="-.", label=f"target {_fmt(target)}")
        ssl = doc["machine"].get("openssl_speed")
        if ssl and unit in ("GB/s", "MB/s"):
            ref = ssl["gb_per_s"] * (1 if unit == "GB/s" else 1e3)
            ax.axhline(
                ref, color="grey", linestyle=":", label="system openssl speed (not a ceiling)"
            )
        ax.set_yscale("log")
        ax.set_ylabel(f"{unit} (median, min-max bars)")
        ax.set_title(bench)
        ax.grid(True, which="both", alpha=0.3)
        if len(ns) > 1:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
        elif (ssl and unit in ("GB/s", "MB/s")) or any(r.get("target") for r in rows):
            ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"{_slug(bench)}.png"
        fig.savefig(outdir / name, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    summary = _draw_summary(plt, doc, outdir)
    if summary:
        written.insert(0, summary)
    return written


def _ordered(results: Sequence[ModuleResult]) -> list[dict[str, Any]]:
    """Rows by module, then benchmark (first appearance), n, baseline first."""
    keyed = []
    for mi, res in enumerate(results):
        first: dict[str, int] = {}
        for r in res.rows:
            first.setdefault(r["benchmark"], len(first))
        for ri, r in enumerate(res.rows):
            keyed.append(((mi, first[r["benchmark"]], r["n"], not r["baseline"], ri), r))
    return [r for _, r in sorted(keyed, key=lambda t: t[0])]


def build_document(results: Sequence[ModuleResult], quick: bool, command: str) -> dict[str, Any]:
    """The JSON document: machine details, rows with ratios, per-module status."""
    rows = add_ratios(_ordered(results))
    return {
        "command": command,
        "machine": machine_info(quick),
        "rows": rows,
        "modules": [
            {
                "name": res.name,
                "rows": len(res.rows),
                "error": res.error,
                "seconds": round(res.seconds, 2),
                "max_rss_mb": res.max_rss_mb,
            }
            for res in results
        ],
    }


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
    written = write_results(doc, outdir, plots=not args.no_plots)
    print(f"wrote {written[1]} and {len(written) - 1} more files in {outdir}", file=sys.stderr)
    failed = [r.name for r in results if r.error]
    if failed:
        print(f"error: {len(failed)} module(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
