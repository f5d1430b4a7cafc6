"""The ``keysplit`` command: the Typer app, its command tree and the entry point.

The whole tree is written down here, statically, in help order: ``TOP_LEVEL`` lists the
modules whose commands sit at the top (``keysplit init``), ``GROUPS`` each group with its
help and the modules whose commands it holds (``keysplit share convert``). Each module of
``cli/commands/`` owns a ``typer.Typer()`` called ``app`` with its commands and imports
neither this module nor another command module (tests/cli/test_cli_plumbing.py).

To add a command module: write ``cli/commands/NAME.py`` and add it to ONE of the lists.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.core

import keysplit

from .commands import (
    audit,
    bench,
    cluster,
    convert,
    custodian,
    dataset,
    demo,
    files,
    init,
    keyring,
    keys,
    rekey,
    service,
    share,
    split,
    status,
    token,
    unseal,
    verify,
)

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

TOP_LEVEL = (init, unseal, status, rekey, keys, files, split, demo, bench, service, dataset)
"""Modules whose commands are top-level, in help order."""

GROUPS = (
    ("verify", "Proofs of possession for a --verify ceremony: record, show, complete.", (verify,)),
    (
        "keyring",
        "Keyring trust: pin fingerprints in the known-keyrings file that encrypt checks.",
        (keyring,),
    ),
    ("audit", "Verify and show the keyring's audit log.", (audit,)),
    ("share", "Inspect and verify share files.", (share, convert)),
    ("custodian", "Custodian key pairs for sealing shares.", (custodian,)),
    ("token", "Key-service tokens: created with a quorum, listed and revoked without.", (token,)),
    ("cluster", "Key clusters: no single host can decrypt (DKG among node keyrings).", (cluster,)),
)
"""``(name, help, modules)`` of each command group, in help order."""

COMMAND_MODULES = tuple(
    m.__name__.rpartition(".")[2] for m in TOP_LEVEL + tuple(m for _, _, ms in GROUPS for m in ms)
)
"""Every command module's name (``cli/commands/NAME.py``)."""


_display_type = typer.core.TyperOption.display_type_rich


def _no_flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """A flag takes no value: its help row shows none (Typer would show ``<bool>``)."""
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _no_flag_type  # type: ignore[method-assign]


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


for _module in TOP_LEVEL:
    app.registered_commands += _module.app.registered_commands
for _name, _help, _modules in GROUPS:
    _group = typer.Typer(help=_help, no_args_is_help=True)
    for _module in _modules:
        _group.registered_commands += _module.app.registered_commands
    app.add_typer(_group, name=_name)


def main() -> None:
    """Console-script entry point."""
    app()
