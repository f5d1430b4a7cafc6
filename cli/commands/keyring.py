"""``keysplit keyring pin|trusted|forget``: the known-keyrings file that ``encrypt`` checks.

A pin ties a keyring id to its fingerprint (ksk1..., over the public key and the share
set), so a keyring directory whose public key was replaced is refused by ``encrypt``.
Only the fingerprint is read: no quorum.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from keysplit import Keyring, trust
from keysplit.trust import KnownKeyrings

from .._common import fail, handle_errors, info

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
) -> None:
    """Pin a keyring's fingerprint so that encrypt accepts it (and refuses a replaced key).

    Exit codes: 0 pinned; 1 fingerprint mismatch or pinned to another key; 2 usage.
    """
    kr = Keyring.open(directory)
    if expect is None:
        info(
            f"[yellow]warning:[/] pinning {kr.fingerprint} without --expect trusts the "
            "directory as it is now; compare it with the owner's"
        )
    entry = trust.pin_keyring(kr, expect=expect, label=label, replace=replace)
    info(f"pinned keyring {entry.keyring_id} in {KnownKeyrings().path}")
    typer.echo(entry.fingerprint)


@app.command("trusted")
@handle_errors
def trusted_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable.")) -> None:
    """List the pinned keyrings: id, fingerprint, label.

    Exit codes: 0 listed; 1 unreadable known-keyrings file.
    """
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
) -> None:
    """Remove a keyring's pin (encrypt then refuses it until pinned again).

    Exit codes: 0 removed; 1 not pinned.
    """
    if not KnownKeyrings().remove(keyring_id):
        fail(f"keyring {keyring_id} is not pinned in {KnownKeyrings().path}")
    info(f"forgot keyring {keyring_id}")
