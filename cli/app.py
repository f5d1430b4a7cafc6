"""The ``keysplit`` command: the Typer app and its entry point."""

from __future__ import annotations

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


def _register() -> None:
    # Each command module adds its commands to `app`; the import order is the help order.
    from . import (
        cmd_demo,  # noqa: F401
        cmd_shares,  # noqa: F401
    )


_register()


def main() -> None:
    """Console-script entry point."""
    app()
