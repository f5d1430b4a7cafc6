"""The ``keysplit`` command: the Typer app and its entry point.

Commands are registered here, from one fixed list, in help order. Each command module
``cli/cmd_NAME.py`` owns a ``typer.Typer()`` called ``app`` holding its commands and groups,
and never imports this module (so any command module imports on its own, with no cycle).

To add a command module, add ONE line to ``COMMAND_MODULES``, e.g. ``"cmd_service",``.
(``share convert`` is added by ``cmd_shares``, which owns the ``share`` group.)
"""

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
    add_completion=True,  # keysplit --install-completion / --show-completion (README)
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


COMMAND_MODULES = (
    "cmd_ceremony",
    "cmd_files",
    "cmd_audit",
    "cmd_shares",
    "cmd_demo",
    "cmd_bench",
    "cmd_service",
    "cmd_jobs",
    "cmd_cluster",
)
"""The command modules, one per line, in help order."""


def _register() -> None:
    """Every module's commands, then every module's groups (the help lists them so)."""
    for name in COMMAND_MODULES:
        commands = importlib.import_module(f"{__package__}.{name}").app
        app.registered_commands += commands.registered_commands
    for name in COMMAND_MODULES:
        commands = importlib.import_module(f"{__package__}.{name}").app
        app.registered_groups += commands.registered_groups


_register()


def main() -> None:
    """Console-script entry point."""
    app()
