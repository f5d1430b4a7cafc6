"""Reporting: machine details, same-run ratios, the terminal table and ``results/latest.md``.

A ratio is only ever taken between rows of one run (same machine, same load), never
against a figure from another run: on a shared machine absolute figures drift with the
load, ratios much less.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .runner import ModuleResult

__all__ = [
    "add_ratios",
    "build_document",
    "fmt",
    "fmt_n",
    "machine_info",
    "print_rows",
    "reference_medians",
    "render_markdown",
    "render_table",
    "run_standalone",
]


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


# --------------------------------------------------------------------------- ratios and tables


def reference_medians(
    rows: Iterable[dict[str, Any]],
    is_reference: Callable[[dict[str, Any]], bool] = lambda r: bool(r["baseline"]),
) -> dict[tuple[str, int], float]:
    """The median of the reference row of each (benchmark, n): the baseline by default.

    Every same-run ratio divides by one of these, so a module with a second reference
    (e.g. bench_records' loop that keeps its outputs) computes it the same way.
    """
    return {(r["benchmark"], r["n"]): r["median"] for r in rows if is_reference(r)}


def add_ratios(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's ``ratio``: its median over the median of the baseline of its (benchmark, n)."""
    rows = list(rows)
    base = reference_medians(rows)
    for r in rows:
        b = base.get((r["benchmark"], r["n"]))
        r["ratio"] = r["median"] / b if b else None
    return rows


def fmt(v: float) -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def fmt_n(n: int) -> str:
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
            f"| {r['benchmark']} | {fmt_n(r['n'])} | {impl} | {fmt(r['median'])} | "
            f"{fmt(r['min'])} | {fmt(r['max'])} | {r['unit']} | {ratio} | {peak} |"
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
                f"| {r['benchmark']} | {fmt_n(r['n'])} | {r['impl']} | {fmt(r['median'])} | "
                f"{fmt(r['target'])} {r['unit']} | {met} |"
            )
    from .goals import render as render_goals  # lazy: `python -m benchmarks.harness.goals`

    goal_lines = render_goals([doc["rows"]], only_measured=True)
    if len(goal_lines) > 2:
        lines += ["", "## Issue goals (same-run figures; benchmarks/harness/goals.py)", ""]
        lines += goal_lines
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
            fmt_n(r["n"]),
            impl,
            fmt(r["median"]),
            fmt(r["min"]),
            fmt(r["max"]),
            r["unit"],
            ratio,
        )
    return table


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


def print_rows(rows: Sequence[dict[str, Any]], file: TextIO | None = None) -> None:
    """Plain lines for a module run on its own (``python -m benchmarks.bench_x``).

    One line per row with its same-run ratio to the baseline, then the notes; the suite's
    table and results files come from ``python -m benchmarks`` instead.
    """
    out = file or sys.stdout
    rows = add_ratios([dict(r) for r in rows])
    wb = max((len(r["benchmark"]) for r in rows), default=0)
    wi = max((len(r["impl"]) + 2 * r["baseline"] for r in rows), default=0)
    for r in rows:
        impl = r["impl"] + (" *" if r["baseline"] else "")
        ratio = "" if r["ratio"] is None else f" x{r['ratio']:.3g}"
        extra = f" peak {r['peak_mb']:.0f} MB" if r.get("peak_mb") is not None else ""
        if r.get("timed_n"):
            extra += f" (timed on {r['timed_n']:,})"
        print(
            f"{r['benchmark']:{wb}} {impl:{wi}} n={fmt_n(r['n']):>9} median "
            f"{fmt(r['median']):>8} {r['unit']} (min {fmt(r['min'])}, max {fmt(r['max'])})"
            f"{ratio}{extra}",
            file=out,
        )
    for bench, note in sorted({(r["benchmark"], r["note"]) for r in rows if r.get("note")}):
        print(f"note: {bench}: {note}", file=out)


def run_standalone(run: Callable[[bool], list[dict[str, Any]]], argv: Sequence[str]) -> None:
    """``if __name__ == "__main__": run_standalone(run, sys.argv)`` in a bench module."""
    print_rows(run("--full" not in argv))
