"""``keysplit token create|add|list|revoke``: key-service tokens, created with a quorum, listed
and revoked without. A token is printed once on stdout; the keyring keeps only its
SHA-256 and policy, in a list MACed under a key only an unsealed keyring derives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from keysplit import Keyring
from keysplit.service.tokens import OPERATIONS, TokenList, TokenPolicy, mac_key

from .._common import EXIT_USAGE, fail, handle_errors, info
from .._output import JSON_HELP
from .._quorum import IDENTITY_OPTION, PASSPHRASE_OPTION, SHARE_OPTION, QuorumSource, quorum
from .._service import TOKEN_FILE_HELP, read_token

__all__ = ["app"]

app = typer.Typer()


def _change_tokens(
    directory: Path,
    src: QuorumSource,
    mint: Callable[[TokenList, bytes, list[str]], TokenPolicy],
    **audit: Any,
) -> TokenPolicy:
    """With a quorum: fold pending revocations, add one token (``mint``), audit both."""
    kr = Keyring.open(directory)
    q = quorum(kr, src)
    with q.unseal() as ukr:
        tl = TokenList.read(directory, kr.keyring_id)
        key = mac_key(ukr.audit_key(), kr.keyring_id)
        folded = list(tl.pending_revocations)
        try:
            pol = mint(tl, key, [c.custodian for c in q.contributors])
        except ValueError as exc:
            fail(str(exc), code=EXIT_USAGE)
        log = ukr.audit_log()
        for r in folded:
            log.append("token-revoke", token_id=r, list_serial=tl.serial)
        if pol.region:
            audit["region"] = pol.region
        log.append(
            "token-create",
            list_serial=tl.serial,
            token=pol.name,
            token_id=pol.id,
            allow=list(pol.allow),
            subject_prefix=pol.subject_prefix,
            custodians=[c.as_dict() for c in q.contributors],
            **audit,
        )
    return pol


def _policy(pol: TokenPolicy) -> dict[str, object]:
    """A token's public description (never the token)."""
    return {
        "name": pol.name,
        "id": pol.id,
        "allow": list(pol.allow),
        "subject_prefix": pol.subject_prefix,
    }


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
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Mint a service token with a quorum; prints it ONCE on stdout.

    The keyring keeps only its SHA-256 and policy, in a list MACed under a key only an
    unsealed keyring derives. Audited as 'token-create'.

    Example: keysplit token create vault --name billing --allow encrypt,decrypt
    --subject-prefix billing/ -s ana.g1.kss -s ben.g1.kss > billing.token

    Exit codes: 0 created; 1 bad quorum, name taken, list tampered; 2 usage.
    """
    allowed = allow.split(",")
    token = ""

    def mint(tl: TokenList, key: bytes, by: list[str]) -> TokenPolicy:
        nonlocal token
        token, pol = tl.create(
            key, name=name, allow=allowed, subject_prefix=subject_prefix, created_by=by
        )
        return pol

    pol = _change_tokens(directory, QuorumSource(share, identity, passphrase_file), mint)
    info(f"token {pol.name!r} ({pol.id}) created: {','.join(pol.allow)} on {pol.subject_prefix!r}*")
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
    token = read_token(token_file)
    assert token is not None
    if region:
        from keysplit.service.cluster_config import check_region

        try:
            check_region(region)
        except ValueError as exc:
            fail(str(exc), code=EXIT_USAGE)

    def mint(tl: TokenList, key: bytes, by: list[str]) -> TokenPolicy:
        return tl.add(
            key,
            token,
            name=name,
            allow=allow.split(","),
            subject_prefix=subject_prefix,
            region=region,
            created_by=by,
        )

    pol = _change_tokens(
        directory, QuorumSource(share, identity, passphrase_file), mint, added=True
    )
    info(f"token {pol.name!r} ({pol.id}) added: {','.join(pol.allow)} on {pol.subject_prefix!r}*")
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
    kr = Keyring.open(directory)
    tl = TokenList.read(directory, kr.keyring_id)
    dead = set(tl.revoked) | set(tl.pending_revocations)
    rows = [dict(t.public_dict(), revoked=t.id in dead) for t in tl.tokens]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        info("no tokens")
    for r in rows:
        state = "revoked" if r["revoked"] else "active"
        typer.echo(
            f"{r['id']}  {r['name']:<16} {state:<8} {','.join(r['allow'])}  "
            f"prefix={r['subject_prefix']!r}  created {r['created']}"
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
    kr = Keyring.open(directory)
    pol = TokenList.read(directory, kr.keyring_id).revoke(name)
    info(f"token {pol.name!r} ({pol.id}) revoked")
    if as_json:
        typer.echo(json.dumps({"revoked": True, **_policy(pol)}))
