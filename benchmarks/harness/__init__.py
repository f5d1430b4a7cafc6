"""The benchmark harness: discover ``bench_*.py``, run each in its own process, report.

Contract for a benchmark module (``benchmarks/bench_<topic>.py``)::

    def run(quick: bool) -> list[dict]

returning rows built with :func:`row` from :func:`measure` (the contract, checked by
:func:`validate_rows`, is in :mod:`.timing`'s docstring). Modules import these helpers
relatively (``from .harness import measure, row``): the suite runs as ``benchmarks`` from
a checkout and as ``keysplit_benchmarks`` when installed.

The package, one job per module:

* :mod:`.timing`: clocks, repeats, (median, min, max) throughput, contract rows, progress;
  the only timing code every bench module uses;
* :mod:`.runner`: discovery, one child process per module, ``--quick/--full/--only``,
  collecting and checking rows, writing the results (``main``);
* :mod:`.report`: machine details, same-run ratios, the terminal table, ``latest.md``;
* :mod:`.plots`: the PNG plots (matplotlib).
"""

from __future__ import annotations

from .plots import draw_plots
from .report import (
    add_ratios,
    build_document,
    machine_info,
    print_rows,
    reference_medians,
    render_markdown,
    render_table,
    run_standalone,
)
from .runner import (
    PACKAGE,
    PACKAGE_DIR,
    TIMEOUT_S,
    ModuleResult,
    discover,
    load_module,
    main,
    run_module,
    run_suite,
    write_results,
)
from .timing import (
    PROGRESS_PREFIX,
    REQUIRED_KEYS,
    Stats,
    in_turn,
    latency_ms,
    measure,
    measure_interleaved,
    peak_memory_mb,
    progress,
    row,
    throughput,
    time_calls,
    validate_rows,
)

__all__ = [
    "PACKAGE",
    "PACKAGE_DIR",
    "PROGRESS_PREFIX",
    "REQUIRED_KEYS",
    "TIMEOUT_S",
    "ModuleResult",
    "Stats",
    "add_ratios",
    "build_document",
    "discover",
    "draw_plots",
    "in_turn",
    "latency_ms",
    "load_module",
    "machine_info",
    "main",
    "measure",
    "measure_interleaved",
    "peak_memory_mb",
    "print_rows",
    "progress",
    "reference_medians",
    "render_markdown",
    "render_table",
    "row",
    "run_module",
    "run_standalone",
    "run_suite",
    "throughput",
    "time_calls",
    "validate_rows",
    "write_results",
]
