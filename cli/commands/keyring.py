"""``keysplit keyring pin|trusted|forget``: the known-keyrings file that ``encrypt`` checks.

A pin ties a keyring id to its fingerprint (ksk1..., over the public key and the share
set), so a keyring directory whose public key was replaced is refused by ``encrypt``.
Only the fingerprint is read: no quorum.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .._common import fail, handle_errors, info
from .._output import JSON_HELP

__all__ = ["app"]

app = typer.Typer()


@app.command("pin")
@handle_errors
def pin_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    expect: str | None = typer.Option(
        None,
        "--expect",
        metavar="FPR",
        help="Pin only if the keyring's fingerprint is FPR (as the owner gave it). Without "
        "it, trusts the directory as it is now.",
    ),
    label: str | None = typer.Option(None, "--label", help="Free text (default: DIR)."),
    replace: bool = typer.Option(
        False, "--replace", help="Re-pin a keyring pinned to another fingerprint."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Pin a keyring's fingerprint so that encrypt accepts it (and refuses a replaced key).

    Example: keysplit keyring pin /mnt/vault --expect ksk1qq...  (the owner's fingerprint)

    Exit codes: 0 pinned; 1 fingerprint mismatch or pinned to another key; 2 usage.
    """
    from keysplit import Keyring, trust
    from keysplit.trust import KnownKeyrings

    kr = Keyring.open(directory)
    if expect is None:
        info(
            f"pinning {kr.fingerprint} without --expect trusts the directory as it is now; "
            "compare it with the owner's",
            lead="warning:",
            style="yellow",
        )
    entry = trust.pin_keyring(kr, expect=expect, label=label, replace=replace)
    info(f"pinned keyring {entry.keyring_id} in {KnownKeyrings().path}")
    doc = {"keyring_id": entry.keyring_id, "fingerprint": entry.fingerprint, "label": entry.label}
    typer.echo(json.dumps(doc) if as_json else entry.fingerprint)


@app.command("trusted")
@handle_errors
def trusted_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable.")) -> None:
    """List the pinned keyrings: id, fingerprint, label.

    Example: keysplit keyring trusted --json

    Exit codes: 0 listed; 1 unreadable known-keyrings file.
    """
    from keysplit.trust import KnownKeyrings

    entries = KnownKeyrings().entries()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"keyring_id": e.keyring_id, "fingerprint": e.fingerprint, "label": e.label}
                    for e in entries
                ]
            )
        )
        return
    for e in entries:
        typer.echo(f"{e.keyring_id} {e.fingerprint} {e.label}".rstrip())


@app.command("forget")
@handle_errors
def forget_cmd(
    keyring_id: str = typer.Argument(..., metavar="KEYRING_ID", help="The pinned keyring id."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove a keyring's pin (encrypt then refuses it until pinned again).

    Example: keysplit keyring forget 7f3a9c2e51d04b6a

    Exit codes: 0 removed; 1 not pinned.
    """
    from keysplit.trust import KnownKeyrings

    if not KnownKeyrings().remove(keyring_id):
        fail(f"keyring {keyring_id} is not pinned in {KnownKeyrings().path}")
    info(f"forgot keyring {keyring_id}")
    if as_json:
        typer.echo(json.dumps({"keyring_id": keyring_id, "forgotten": True}))
