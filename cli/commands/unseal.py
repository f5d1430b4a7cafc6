"""``keysplit unseal``: an unseal drill with a quorum of custodians, or (``--server URL``)
one custodian's share sent to a running key service.

The drill is one :func:`keysplit.ceremony.unseal_check` (audited as 'unseal-check'). The
remote unseal opens each share here and HPKE-seals it to the attempt key the service
publishes, so it never travels in clear.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keysplit import KeysplitError, MixedSharesError

from .._common import EXIT_USAGE, fail, handle_errors, info, relabel
from .._opener import Passphrases, ShareOpener
from .._output import JSON_HELP, names
from .._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    STORE_OPTION,
    QuorumSource,
    ask_for_shares,
    open_keyring,
    quorum,
)
from .._service import CA_OPTION, CERT_OPTION, KEY_OPTION, SERVER_FORMS, Tls, connect

if TYPE_CHECKING:
    from keysplit import Share

__all__ = ["app"]

app = typer.Typer()


@app.command("unseal")
@handle_errors
def unseal_cmd(
    directory: Path | None = typer.Argument(
        None, metavar="[DIR]", help="Keyring directory (optional with --server)."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    server: str | None = typer.Option(
        None, "--server", metavar="URL", help=f"Unseal a running key service: {SERVER_FORMS}."
    ),
    reset: bool = typer.Option(False, "--reset", help="With --server: discard unseal progress."),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
) -> None:
    """Check that a quorum of custodians can unseal the keyring (an unseal drill).

    Verifies every share and the recovered master key and reports the keyring id.
    Records an 'unseal-check' audit entry naming the contributing custodians.

    With --server, send this custodian's share to a running 'keysplit serve' instead: only
    the URL and the share (and its identity or passphrase) are needed; the keyring id and
    the attempt key come from the service (compare the fingerprint shown with its log).
    With DIR too, the service must serve that keyring.

    Example: keysplit unseal vault -s ana.g1.kss -s ben.g1.kss -i ana.identity

    Example: keysplit unseal --server https://kms:8443 --ca ca.pem --cert a.pem --key a.key -s a.kss

    Exit codes: 0 verified; 1 bad, foreign or too few shares, wrong secret; 2 usage.
    """
    from keysplit import ceremony

    src = QuorumSource(share, identity, passphrase_file)
    if server is not None:
        return remote_unseal(directory, server, (ca, cert, key), src, as_json=as_json, reset=reset)
    if reset:
        fail("--reset needs --server", code=EXIT_USAGE)
    if ca or cert or key:
        fail("--ca, --cert and --key go with --server", code=EXIT_USAGE)
    if directory is None:
        fail("give the keyring directory DIR (or --server URL)", code=EXIT_USAGE)
    kr = open_keyring(directory, store)
    done = ceremony.unseal_check(kr, quorum(kr, src))
    who = names(done.contributors)
    info(f"{who} unsealed keyring {kr.keyring_id}", lead="quorum verified:", style="green")
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


def _with_custodian(name: str, exc: KeysplitError, who: str | None) -> str:
    """``name`` and, when the service's message does not name them, the custodian the
    share's file names: the service names only the custodians of its own keyring, and
    a share of another keyring or share set (MixedSharesError) is by index and set."""
    if who is None or not isinstance(exc, MixedSharesError):  # not a verdict on a quorum
        return name
    if re.search(rf"\({re.escape(who)}[,)]", str(exc)):  # "share 1 (ana)", "(ana, set ...)"
        return name
    return f"{name} (custodian {who})"


def remote_unseal(
    directory: Path | None,
    server: str,
    tls: Tls,
    src: QuorumSource,
    *,
    as_json: bool,
    reset: bool = False,
) -> None:
    """``keysplit unseal [DIR] --server URL``: send this custodian's share(s) to the service.

    Each share is opened here and HPKE-sealed to the attempt key the server publishes, so
    it never travels in clear. The server checks it at once and names what is wrong;
    interactively the custodian may then try another share.
    """
    from keysplit import Keyring
    from keysplit.service.unseal import key_fingerprint

    expected = Keyring.open(directory).keyring_id if directory is not None else None
    with connect(server, tls) as client:
        if reset:
            had = client.reset_unseal()
            info("unseal progress discarded" if had else "no unseal progress to discard")
            if src.interactive:
                typer.echo(json.dumps({"reset": had}) if as_json else "reset")
                return
        offer = client.unseal_offer()
        keyring_id = str(offer.get("keyring_id"))
        if expected is not None and keyring_id != expected:
            raise KeysplitError(
                f"the key service serves keyring {keyring_id}, not {expected} (DIR)",
                hint="check --server and the keyring directory",
            )
        if not offer.get("sealed", True):
            info(f"keyring {keyring_id} is already unsealed at {server}")
            typer.echo(json.dumps({"sealed": False}) if as_json else "unsealed")
            return
        fp = key_fingerprint(bytes.fromhex(str(offer["public_key"])))
        info(f"keyring {keyring_id}: unseal attempt key {fp} (compare with the server's log)")
        passphrases = Passphrases(src.passphrase_files)
        opener = ShareOpener(src.identities, passphrases, interactive=src.interactive)
        result: dict[str, Any] = {}

        def send(name: str, share: Share) -> bool:
            """Send one share; False once the service is unsealed (nothing more needed)."""
            nonlocal result
            current = client.unseal_offer()
            if not current.get("sealed", True):
                info(f"  {name}: not needed (already unsealed)")
                return False
            if current.get("public_key") != offer["public_key"]:  # only the key shown
                try:
                    new = key_fingerprint(bytes.fromhex(str(current.get("public_key"))))
                except ValueError:
                    new = "a malformed key"
                raise KeysplitError(
                    f"the service's unseal attempt key changed ({fp} -> {new}) before "
                    f"{name} was sent: the attempt was reset or timed out (or the answer "
                    "was tampered with); nothing was sent",
                    hint="run the command again and compare the new key with the server's log",
                )
            try:
                result = client.submit_share(share, current, keyring_id=keyring_id)
            except KeysplitError as exc:
                raise relabel(exc, _with_custodian(name, exc, opener.custodian_of(share))) from None
            p = result["progress"]
            state = "sealed" if result["sealed"] else "unsealed"
            info(f"  [{p['have']}/{p['need']}] {name} accepted; service {state}")
            return bool(result["sealed"])

        if not src.interactive:
            for path in src.shares:
                if not send(str(path), opener.open_path(path)):
                    break
        else:
            asked = False

            def prompt() -> str | None:
                nonlocal asked
                if asked and result:
                    return None  # one custodian, one share: done once it is accepted
                asked = True
                return "Share"

            ask_for_shares(opener, prompt, send)
    sealed = result.get("sealed", True) if result else True
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo("sealed" if sealed else "unsealed")
