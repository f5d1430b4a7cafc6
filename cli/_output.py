"""Output conventions shared by the command modules: data on stdout, messages on stderr.

A command prints its result on stdout (one value, or one JSON document with --json)
and everything meant for a person on stderr, so keysplit ... | jq and
x=$(keysplit ...) see only the result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from ._common import err_console

if TYPE_CHECKING:
    from keysplit.ceremony import Contributor, WrittenShare

__all__ = ["JSON_HELP", "emit", "names", "note", "print_share_table", "shown"]

JSON_HELP = "Print a machine-readable result on stdout."


def emit(doc: Any, as_json: bool, text: object) -> None:
    """The result on stdout: doc as one JSON line with --json, else text."""
    typer.echo(json.dumps(doc) if as_json else text)


def note(message: str) -> None:
    """A plain (unwrapped, markup-free) message on stderr."""
    typer.echo(message, err=True)


def shown(text: str) -> str:
    """``text`` safe for a terminal: each character that is not printable (escape
    sequences, carriage returns, bidirectional overrides) as its Python escape (``\\x1b``),
    so a value someone else chose (a subject in the audit log) cannot move the cursor,
    clear or rewrite what is on screen, or reorder what is shown."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def names(contributors: Sequence[Contributor]) -> str:
    """The custodians of a quorum, for a message."""
    return ", ".join(c.custodian for c in contributors)


def print_share_table(title: str, shares: Sequence[WrittenShare]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for col in ("custodian", "share file", "share fingerprint", "protection"):
        table.add_column(col, overflow="fold")
    for w in shares:
        table.add_row(
            *(escape(str(v)) for v in (w.custodian, w.location, w.fingerprint, w.protection))
        )
    err_console.print(table)
