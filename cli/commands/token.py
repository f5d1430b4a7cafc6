"""``keysplit token create|add|list|revoke``: key-service tokens, created with a quorum, listed
and revoked without. A token is printed once on stdout; the keyring keeps only its
SHA-256 and policy, in a list MACed under a key only an unsealed keyring derives.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from keysplit.service.tokens import OPERATIONS

from .._common import EXIT_USAGE, fail, handle_errors, info
from .._output import JSON_HELP
from .._quorum import IDENTITY_OPTION, PASSPHRASE_OPTION, SHARE_OPTION, QuorumSource, quorum
from .._service import TOKEN_FILE_HELP, read_token

if TYPE_CHECKING:
    from keysplit.service.tokens import TokenPolicy

__all__ = ["app"]

app = typer.Typer()


def _policy(pol: TokenPolicy) -> dict[str, object]:
    """A token's public description (never the token)."""
    return {
        "name": pol.name,
        "id": pol.id,
        "allow": list(pol.allow),
        "subject_prefix": pol.subject_prefix,
        **({"expires": pol.expires} if pol.expires else {}),
    }


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
EXPIRES_HELP = (
    "The service stops accepting the token after this long: N followed by s, m, h or d "
    "(90d, 12h; a bare N is seconds). Default: never."
)


def _duration(text: str | None) -> float | None:
    """``--expires-in``: seconds from ``N[smhd]`` (None when not given)."""
    if text is None:
        return None
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:], 0)
    digits = t[:-1] if unit else t
    if not digits.isdigit() or not digits.isascii():
        fail(
            f"--expires-in: {text!r} is not a duration like 90d, 12h, 30m or 3600s", code=EXIT_USAGE
        )
    from keysplit.service.tokens import check_expires_in

    # more digits than any century has seconds: too long (float() of a huge int overflowed)
    digits = digits.lstrip("0") or "0"
    seconds = int(digits) * (unit or 1) if len(digits) <= 15 else math.inf
    try:
        return check_expires_in(float(seconds))
    except ValueError as exc:
        fail(f"--expires-in: {exc}", code=EXIT_USAGE)


def _expires(pol: TokenPolicy) -> str:
    return f"; expires {pol.expires}" if pol.expires else ""


@app.command("create")
@handle_errors
def token_create_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    name: str = typer.Option(..., "--name", help="Token name (unique among active tokens)."),
    allow: str = typer.Option(
        ..., "--allow", metavar="OPS", help=f"Comma-separated, of: {', '.join(OPERATIONS)}."
    ),
    subject_prefix: str = typer.Option(
        ..., "--subject-prefix", help="Only subjects starting with this ('' = every subject)."
    ),
    expires_in: str | None = typer.Option(
        None, "--expires-in", metavar="DURATION", help=EXPIRES_HELP
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Mint a service token with a quorum; prints it ONCE on stdout.

    The keyring keeps only its SHA-256 and policy, in a list MACed under a key only an
    unsealed keyring derives. Audited as 'token-create'.

    Example: keysplit token create vault --name billing --allow encrypt,decrypt
    --subject-prefix billing/ --expires-in 90d -s ana.g1.kss -s ben.g1.kss > billing.token

    Exit codes: 0 created; 1 bad quorum, name taken, list tampered; 2 usage.
    """
    from keysplit import Keyring, ceremony

    life = _duration(expires_in)
    kr = Keyring.open(directory)
    try:
        done = ceremony.create_token(
            kr,
            quorum(kr, QuorumSource(share, identity, passphrase_file)),
            name=name,
            allow=allow.split(","),
            subject_prefix=subject_prefix,
            expires_in=life,
        )
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    token, pol = done.value.token, done.value.policy
    info(
        f"token {pol.name!r} ({pol.id}) created: {','.join(pol.allow)} on "
        f"{pol.subject_prefix!r}*{_expires(pol)}"
    )
    info("it is shown only now; store it as a secret")
    if as_json:
        typer.echo(json.dumps({"token": token, **_policy(pol)}))
    else:
        typer.echo(token)


@app.command("add")
@handle_errors
def token_add_cmd(
    directory: Path = typer.Argument(..., metavar="NODE_DIR", help="Keyring directory."),
    name: str = typer.Option(..., "--name", help="Token name (unique among active tokens)."),
    token_file: Path = typer.Option(..., "--token-file", help=TOKEN_FILE_HELP),
    allow: str = typer.Option(
        ..., "--allow", metavar="OPS", help=f"Comma-separated, of: {', '.join(OPERATIONS)}."
    ),
    subject_prefix: str = typer.Option(
        ..., "--subject-prefix", help="Only subjects starting with this ('' = every subject)."
    ),
    region: str = typer.Option(
        "", "--region", help="Pin the token to a cluster region ('' = any region)."
    ),
    expires_in: str | None = typer.Option(
        None, "--expires-in", metavar="DURATION", help=EXPIRES_HELP
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Register an existing token (made by 'token create' on another keyring) here, with
    this keyring's own quorum and policy: so no single node's custodians can authorize a
    client on the T nodes of a key cluster. Audited as 'token-create' (added: true).

    Example: keysplit token add n2 --name app --token-file token --allow datakey
    --subject-prefix contacts/ --share n2-shares/n2a.g1.kss --share n2-shares/n2b.g1.kss

    Exit codes: 0 added; 1 bad quorum, name taken, token known, list tampered; 2 usage.
    """
    from keysplit import Keyring, ceremony

    token = read_token(token_file)
    assert token is not None
    life = _duration(expires_in)
    if region:
        from keysplit.service.cluster_config import check_region

        try:
            check_region(region)
        except ValueError as exc:
            fail(str(exc), code=EXIT_USAGE)

    kr = Keyring.open(directory)
    try:
        pol = ceremony.add_token(
            kr,
            quorum(kr, QuorumSource(share, identity, passphrase_file)),
            token,
            name=name,
            allow=allow.split(","),
            subject_prefix=subject_prefix,
            region=region,
            expires_in=life,
        ).value
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    info(
        f"token {pol.name!r} ({pol.id}) added: {','.join(pol.allow)} on "
        f"{pol.subject_prefix!r}*{_expires(pol)}"
    )
    doc = {**_policy(pol), "region": pol.region}
    typer.echo(json.dumps(doc) if as_json else pol.id)


@app.command("list")
@handle_errors
def token_list_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable list."),
) -> None:
    """List tokens and their policies (no quorum: the MAC is checked by the service).

    Example: keysplit token list vault --json

    Exit codes: 0 listed; 1 unreadable list; 2 usage.
    """
    from keysplit import Keyring
    from keysplit.service.tokens import TokenList

    kr = Keyring.open(directory)
    tl = TokenList.read(directory, kr.keyring_id)
    dead = set(tl.revoked) | set(tl.pending_revocations)
    rows = [dict(t.public_dict(), revoked=t.id in dead, expired=t.expired()) for t in tl.tokens]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        info("no tokens")
    for r in rows:
        state = "revoked" if r["revoked"] else "expired" if r["expired"] else "active"
        until = f"  expires {r['expires']}" if r.get("expires") else ""
        typer.echo(
            f"{r['id']}  {r['name']:<16} {state:<8} {','.join(r['allow'])}  "
            f"prefix={r['subject_prefix']!r}  created {r['created']}{until}"
        )


@app.command("revoke")
@handle_errors
def token_revoke_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    name: str = typer.Argument(..., metavar="NAME|ID", help="Token to revoke."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Revoke a token at once, without a quorum.

    A running service notices on its next request (and on SIGHUP), stops accepting the
    token, and audits the revocation.

    Example: keysplit token revoke vault billing

    Exit codes: 0 revoked; 1 unknown or already revoked; 2 usage.
    """
    from keysplit import Keyring
    from keysplit.service.tokens import TokenList

    kr = Keyring.open(directory)
    pol = TokenList.read(directory, kr.keyring_id).revoke(name)
    info(f"token {pol.name!r} ({pol.id}) revoked")
    if as_json:
        typer.echo(json.dumps({"revoked": True, **_policy(pol)}))
