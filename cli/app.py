"""The ``keysplit`` command: the Typer app, its command tree and the entry point.

The whole tree is written down here, statically, in help order: ``TOP_LEVEL`` lists the
modules whose commands sit at the top (``keysplit init``), ``GROUPS`` each group with its
help and the modules whose commands it holds (``keysplit share convert``). Each module of
``cli/commands/`` owns a ``typer.Typer()`` called ``app`` with its commands and imports
neither this module nor another command module (tests/cli/test_cli_plumbing.py).

To add a command module: write ``cli/commands/NAME.py`` and add it to ONE of the lists.

Start-up is paid by every call: importing this module imports every command module, so
those (and ``cli/_*.py``) import library parts and heavy packages (numpy through the
library, rich tables and progress, the service, jobs, interop) inside the functions that
use them, with ``if TYPE_CHECKING:`` imports for annotations; at module level only what
option declarations need (typer, ``pathlib``, enums, ``keysplit``'s errors, constants of
light modules). :func:`main` builds only the command it runs (:func:`app_for`).
tests/cli/test_cli_startup.py checks both.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import typer
import typer.core
import typer.main
import typer.models

import keysplit

from . import _params
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

TOP_LEVEL = (init, unseal, status, rekey, keys, files, split, demo, bench, service, dataset)
"""Modules whose commands are top-level, in help order."""

GROUPS = (
    ("verify", "Proofs of possession for a --verify ceremony: prove, status, complete.", (verify,)),
    (
        "keyring",
        "Keyring trust, the known-keyrings file that encrypt checks: pin, trusted, forget.",
        (keyring,),
    ),
    ("audit", "The keyring's audit log: verify, show, repair.", (audit,)),
    (
        "share",
        "Share files: inspect, verify, prove, print, convert, convert-vault.",
        (share, convert),
    ),
    ("custodian", "Custodian key pairs for sealing shares: keygen, show.", (custodian,)),
    (
        "token",
        "Key-service tokens: create (needs a quorum), add, list, revoke.",
        (token,),
    ),
    (
        "cluster",
        "Key clusters, no single host can decrypt: create, abandon, status, refresh, replace, "
        "rotate, shred.",
        (cluster,),
    ),
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

_argument_type = typer.core.TyperArgument.display_type_rich


def _repeated_argument_type(self: Any, ctx: Any) -> str | None:
    """A repeated argument (``FILE...``) shows the type of one value and ``...``, as a repeated
    option does: ``<path>...``, where Typer would show the Python type ``<list[Path]>``."""
    shown = _argument_type(self, ctx)
    m = re.fullmatch(r"<list\[(\w+)\]>", shown or "")
    if m is None:
        return shown
    return f"<{'path' if m.group(1) == 'Path' else m.group(1)}>..."


typer.core.TyperArgument.display_type_rich = _repeated_argument_type  # type: ignore[method-assign]

_params.install()  # plain option values coerced without pydantic (cli/_params.py)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"keysplit {keysplit.__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
) -> None:
    """Split-key encryption toolkit."""


HELP = (
    "Split-key encryption: Shamir-split master keys among custodians, sealed keyrings, "
    "AES-128-GCM records, key ceremonies.\n\n"
    "Exit codes: 0 success, 1 expected failure (bad share, wrong passphrase, "
    "tampered data...), 2 usage error; shred and cluster shred also 3 (no such data key) and 4 "
    "(a live holder did not drop it within --wait); 141 when the reader of stdout went away."
)


def _build(only: str | None = None) -> typer.Typer:
    """The app with every command, or with only the top-level command or group ``only``."""
    root = typer.Typer(
        name="keysplit",
        help=HELP,
        no_args_is_help=True,
        add_completion=True,  # keysplit --install-completion / --show-completion (README)
        pretty_exceptions_enable=False,
    )
    root.callback()(_root)
    for module in TOP_LEVEL:
        root.registered_commands += [
            c for c in module.app.registered_commands if only in (None, _name(c))
        ]
    for name, group_help, modules in GROUPS:
        if only not in (None, name):
            continue
        group = typer.Typer(help=group_help, no_args_is_help=True)
        for module in modules:
            group.registered_commands += module.app.registered_commands
        root.add_typer(group, name=name)
    return root


def _name(command: typer.models.CommandInfo) -> str:
    assert command.callback is not None
    return command.name or typer.main.get_command_name(command.callback.__name__)


app = _build()
"""The whole command tree (what the tests invoke, what --help and completion show)."""

NAMES = frozenset([_name(c) for c in app.registered_commands] + [name for name, _, _ in GROUPS])
"""The top-level command and group names."""


def app_for(args: Sequence[str]) -> typer.Typer:
    """The app to run ``keysplit ARGS`` with: only the top-level command or group that
    ``args`` name, when they name one, else the whole tree (root help, an unknown command).

    Typer builds a Click command, with each of its parameters, for every command of the
    app it runs, on every start: for the whole tree (about 50 commands) that took ~0.1 s of
    a command's start; running one command needs only its own. The root options are flags
    (no value), so the first argument that is no option is the command's name; what the
    user sees (help, usage errors) is the same as with the whole tree
    (tests/cli/test_cli_startup.py)."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return app  # shell completion lists the whole tree
    first = next((a for a in args if not a.startswith("-")), None)
    if first is None or first not in NAMES:
        return app
    return _build(first)


def _quiet_logging() -> None:
    """Library and driver log records (psycopg_pool's reconnect attempts, a fleet lease's
    failed renewal during a store outage) are not the CLI's output: with no handler Python
    printed each one raw on stderr (its last-resort handler), beside the single ``error:``
    line. They are dropped, unless ``KEYSPLIT_LOG=debug|info|warning`` asks for them. One
    kind is the operator's business and always shown, as a ``warning:`` line: the SQLite
    store's word that a shredded key's old page is still on disk (a reader held an older
    snapshot past the erase bound), which a ``shred`` otherwise reported as plain success."""
    import logging

    level = os.environ.get("KEYSPLIT_LOG", "").upper()
    if level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        logging.basicConfig(level=level, format="log: %(name)s: %(levelname)s: %(message)s")
    else:
        logging.getLogger().addHandler(logging.NullHandler())
        erase = logging.StreamHandler(sys.stderr)
        erase.setLevel(logging.WARNING)
        erase.setFormatter(logging.Formatter("warning: %(message)s"))
        logging.getLogger("keysplit.store.sqlite").addHandler(erase)


def main() -> None:
    """Console-script entry point."""
    _quiet_logging()
    app_for(sys.argv[1:])()
