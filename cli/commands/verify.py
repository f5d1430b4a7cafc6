"""``keysplit verify prove|status|complete``: the proof-of-possession steps of a ``--verify``
ceremony (``init --verify``, ``rekey --verify``), one library call each.

Each custodian runs ``keysplit share prove FILE`` and gives the operator the code; the
operator records it (``verify prove``, no quorum); once everyone has proven, the next
quorum ceremony switches, or ``verify complete`` switches now, naming every custodian who
has not proven.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .._common import handle_errors
from .._output import JSON_HELP
from .._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    STORE_OPTION,
    QuorumSource,
    open_keyring,
)
from .._verification import complete, record_proof, show_status

__all__ = ["app"]

app = typer.Typer()

DIR_ARG = typer.Argument(..., metavar="DIR", help="Keyring directory.")


@app.command("prove")
@handle_errors
def prove_cmd(
    directory: Path = DIR_ARG,
    name: str = typer.Argument(..., metavar="NAME", help="The custodian whose code this is."),
    code_file: Path | None = typer.Option(
        None, "--code-file", help="Read the code from FILE (default: a prompt)."
    ),
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Record custodian NAME's proof code (from 'keysplit share prove'); needs no quorum.

    A wrong code is refused and counted. When every custodian has proven, the next
    ceremony with a quorum (of the NEW shares after a rekey) switches and records it.

    Example: keysplit verify prove vault ana --code-file ana.code

    Exit codes: 0 recorded; 1 wrong code, unknown custodian, nothing pending; 2 usage.
    """
    record_proof(open_keyring(directory, store), name, code_file, as_json)


@app.command("status")
@handle_errors
def status_cmd(
    directory: Path = DIR_ARG,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show who has proven possession of the pending shares, who is missing, wrong codes.

    Example: keysplit verify status vault --json

    Exit codes: 0 shown; 1 nothing pending (without --json); 2 usage.
    """
    show_status(open_keyring(directory, store), as_json)


@app.command("complete")
@handle_errors
def complete_cmd(
    directory: Path = DIR_ARG,
    missing: list[str] = typer.Option(
        [], "--missing", metavar="NAME", help="A custodian who has not proven (repeatable)."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Switch to the verified generation now, with a quorum of its NEW shares (of the current
    ones after 'init --verify').

    Every custodian who has not proven must be named with --missing, exactly; the audit
    entry 'verify-complete' lists them as unproven.

    Example: keysplit verify complete vault --missing cy -s ana.g2.kss -s ben.g2.kss

    Exit codes: 0 switched; 1 bad quorum or wrong --missing list; 2 usage.
    """
    kr = open_keyring(directory, store)
    complete(kr, QuorumSource(share, identity, passphrase_file), missing, as_json=as_json)
