"""``keysplit unseal``: an unseal drill with a quorum of custodians, or (``--server URL``)
one custodian's share sent to a running key service.

The drill is one :func:`keysplit.ceremony.unseal_check` (audited as 'unseal-check'). The
remote unseal opens each share here and HPKE-seals it to the attempt key the service
publishes, so it never travels in clear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from keysplit import Keyring, KeysplitError, ceremony
from keysplit.service import Client
from keysplit.service.unseal import key_fingerprint

from .._common import EXIT_USAGE, fail, handle_errors, info, relabel
from .._opener import Passphrases, ShareOpener
from .._output import JSON_HELP, names
from .._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    STORE_OPTION,
    QuorumSource,
    open_keyring,
    quorum,
)

__all__ = ["app"]

app = typer.Typer()

_MAX_TRIES = 5


@app.command("unseal")
@handle_errors
def unseal_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    server: str | None = typer.Option(
        None, "--server", metavar="URL", help="Unseal a running key service (unix:PATH, https://)."
    ),
    reset: bool = typer.Option(False, "--reset", help="With --server: discard unseal progress."),
) -> None:
    """Check that a quorum of custodians can unseal the keyring (an unseal drill).

    With --server, send this custodian's share (sealed to the service) to 'keysplit serve'.

    Verifies every share and the recovered master key and reports the keyring id.

    Records an 'unseal-check' audit entry naming the contributing custodians.

    Exit codes: 0 verified; 1 bad, foreign or too few shares, wrong secret; 2 usage.
    """
    if server is not None:
        src = QuorumSource(share, identity, passphrase_file)
        return remote_unseal(directory, server, src, as_json=as_json, reset=reset)
    if reset:
        fail("--reset needs --server", code=EXIT_USAGE)
    kr = open_keyring(directory, store)
    done = ceremony.unseal_check(kr, quorum(kr, QuorumSource(share, identity, passphrase_file)))
    info(f"[green]quorum verified[/]: {names(done.contributors)} unsealed keyring {kr.keyring_id}")
    assert done.entry is not None
    doc = {
        "keyring_id": kr.keyring_id,
        "generation": kr.meta.generation,
        "set_id": kr.meta.set_id,
        "public_key": kr.meta.public_key,
        "custodians": [c.as_dict() for c in done.contributors],
        "audit_head": done.entry.hash,
    }
    typer.echo(json.dumps(doc) if as_json else kr.keyring_id)


def remote_unseal(
    directory: Path, server: str, src: QuorumSource, *, as_json: bool, reset: bool = False
) -> None:
    """``keysplit unseal DIR --server URL``: send this custodian's share(s) to the service.

    Each share is opened here and HPKE-sealed to the attempt key the server publishes, so
    it never travels in clear. The server checks it at once and names what is wrong;
    interactively the custodian may then try another file.
    """
    kr = Keyring.open(directory)
    with Client(server) as client:
        if reset:
            had = client.reset_unseal()
            info("unseal progress discarded" if had else "no unseal progress to discard")
            if src.interactive:
                typer.echo(json.dumps({"reset": had}) if as_json else "reset")
                return
        offer = client.unseal_offer()
        if not offer.get("sealed", True):
            info(f"keyring {kr.keyring_id} is already unsealed at {server}")
            typer.echo(json.dumps({"sealed": False}) if as_json else "unsealed")
            return
        fp = key_fingerprint(bytes.fromhex(str(offer["public_key"])))
        info(f"unseal attempt key {fp} (compare with the server's log)")
        passphrases = Passphrases(src.passphrase_files)
        opener = ShareOpener(src.identities, passphrases, interactive=src.interactive)
        result: dict[str, Any] = {}

        def send(path: Path) -> bool:
            """Send one share; False once the service is unsealed (nothing more needed)."""
            nonlocal result
            share = opener.open_path(path)
            current = client.unseal_offer()
            if not current.get("sealed", True):
                info(f"  {path}: not needed (already unsealed)")
                return False
            try:
                result = client.submit_share(share, current, keyring_id=kr.keyring_id)
            except KeysplitError as exc:
                raise relabel(exc, str(path)) from None
            p = result["progress"]
            state = "sealed" if result["sealed"] else "unsealed"
            info(f"  [{p['have']}/{p['need']}] {path} accepted; service {state}")
            return bool(result["sealed"])

        if not src.interactive:
            for path in src.shares:
                if not send(path):
                    break
        else:
            for _ in range(_MAX_TRIES):
                answer = str(
                    typer.prompt(
                        "Share file (empty to stop)", default="", show_default=False, err=True
                    )
                ).strip()
                if not answer:
                    break
                try:
                    send(Path(answer).expanduser())
                    break
                except (KeysplitError, OSError) as exc:
                    msg = str(exc) if isinstance(exc, KeysplitError) else f"cannot read {answer}"
                    typer.echo(f"rejected: {msg}", err=True)
            else:
                fail(f"giving up after {_MAX_TRIES} rejected shares")
    sealed = result.get("sealed", True) if result else True
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo("sealed" if sealed else "unsealed")
