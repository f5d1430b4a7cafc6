"""PNG plots of a results document (matplotlib, Agg backend: no display needed).

matplotlib is optional (the ``bench`` extra): without it the run writes no plots and
says so in ``latest.json``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .report import fmt, fmt_n

__all__ = ["draw_plots"]


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
    labels = [f"{r['benchmark']} (n={fmt_n(r['n'])}): {r['impl']}" for r in picked]
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
            ax.axhline(target, color="tab:red", linestyle="-.", label=f"target {fmt(target)}")
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
