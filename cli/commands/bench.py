"""``keysplit bench``: run the benchmark suite that ships with the package.

The suite lives in the repository's ``benchmarks/`` folder and is installed as the
``keysplit_benchmarks`` package (like ``cli/`` -> ``keysplit_cli``), so the same code runs
from a checkout (``make bench``) and from an installed wheel. It stays out of the library:
``keysplit`` never imports it, and the peers it measures (pycryptodome, shamir-mnemonic,
matplotlib for plots) are optional; a module whose peer is missing is reported as failed
without stopping the others.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .._common import fail, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def bench(
    full: bool = typer.Option(
        False, "--full", help="All sizes (up to 10^7 keys) and more repeats; takes many minutes."
    ),
    only: list[str] = typer.Option(
        [],
        "--only",
        metavar="MODULE",
        help="Run only this module (e.g. shamir); repeat for several.",
    ),
    out: Path = typer.Option(
        Path("keysplit-bench-results"),
        "--out",
        help="Directory for latest.md, latest.json and the PNG plots.",
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw PNG plots (matplotlib)."),
) -> None:
    """Measure keysplit against its peers (quick mode by default) and write a results table.

    The table goes to stdout, progress to stderr; results and plots go to --out.

    Example: keysplit bench --only shamir

    Exit codes: 0 measured; 1 no module matched, a module failed, or the benchmark suite
    is not installed (a checkout's 'make bench' is); 2 usage.
    """
    try:
        from keysplit_benchmarks import harness
    except ImportError:
        fail(
            "the benchmark suite is not installed with this keysplit",
            hint="from a checkout, run `make bench`",
        )
    argv = ["--full" if full else "--quick", "--out", str(out)]
    for name in only:
        argv += ["--only", name]
    if not plots:
        argv.append("--no-plots")
    code = harness.main(argv)
    if code:
        raise typer.Exit(code)
