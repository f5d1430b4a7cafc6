"""The ``keysplit`` command: the Typer app and its entry point."""

from __future__ import annotations

import importlib

import typer

import keysplit

app = typer.Typer(
    name="keysplit",
    help=(
        "Split-key encryption: Shamir-split master keys among custodians, sealed keyrings, "
        "AES-128-GCM records, key ceremonies.\n\n"
        "Exit codes: 0 success, 1 expected failure (bad share, wrong passphrase, "
        "tampered data...), 2 usage error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keysplit {keysplit.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Split-key encryption toolkit."""


# Command modules add their commands to `app` when imported; this order is the help order.
_COMMAND_MODULES = (
    "cmd_ceremony",
    "cmd_files",
    "cmd_audit",
    "cmd_shares",
    "cmd_convert",
    "cmd_demo",
    "cmd_bench",
)


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")


_register()
from .cmd_jobs import app as _jobs_app  # noqa: E402 - keysplit.jobs commands (own Typer app)

app.registered_commands += _jobs_app.registered_commands


def main() -> None:
    """Console-script entry point."""
    app()
