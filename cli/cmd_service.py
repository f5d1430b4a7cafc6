"""The key service from the command line: ``keysplit serve``, ``seal``, ``token ...``, and
the remote half of ``keysplit unseal DIR --server URL``.

Thin glue over :mod:`keysplit.service`: quorums are gathered with ``_quorum`` exactly as
every ceremony command does; tokens are printed once on stdout and never accepted in argv
(``--token-file``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from keysplit import Keyring, KeysplitError, ceremony
from keysplit.service import Client
from keysplit.service.tokens import OPERATIONS, TokenList
from keysplit.service.unseal import key_fingerprint

from ._common import EXIT_USAGE, fail, handle_errors, info, relabel
from ._opener import Passphrases, ShareOpener
from ._quorum import IDENTITY_OPTION, PASSPHRASE_OPTION, SHARE_OPTION, QuorumSource, quorum

__all__ = ["app", "remote_unseal"]

app = typer.Typer()
token_app = typer.Typer(
    help="Key-service tokens: created with a quorum, listed and revoked without.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

_MAX_TRIES = 5
TOKEN_FILE_HELP = "File holding the service token (never pass tokens in argv)."  # noqa: S105


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text("utf-8").strip()
    if not token:
        fail(f"token file {path} is empty")
    return token


@app.command("serve")
@handle_errors
def serve_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory to serve."),
    socket_path: Path | None = typer.Option(
        None, "--socket", metavar="PATH", help="Unix socket to listen on (created with mode 0600)."
    ),
    listen: str | None = typer.Option(
        None, "--listen", metavar="HOST:PORT", help="Also listen on TCP with TLS."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", metavar="FILE", help="TLS cert."),
    tls_key: Path | None = typer.Option(None, "--tls-key", metavar="FILE", help="TLS key."),
    client_ca: Path | None = typer.Option(
        None, "--client-ca", metavar="FILE", help="Require client certificates from this CA."
    ),
    unseal_timeout: float = typer.Option(
        600.0, "--unseal-timeout", metavar="SECONDS", help="Partial unseal progress expires."
    ),
) -> None:
    """Run the key service. It starts sealed: custodians unseal it with
    'keysplit unseal DIR --server URL'.

    SIGTERM/SIGINT and 'keysplit seal' drop every key; SIGHUP reloads the token list.

    Exit codes: 0 stopped by a signal; 1 failure (no keyring, socket in use); 2 usage.
    """
    try:
        from keysplit.service.server import ServeOptions, run
    except ImportError:
        fail("keysplit serve needs aiohttp", "pip install 'keysplit[service]'")
    if socket_path is None and listen is None:
        fail("give --socket PATH and/or --listen HOST:PORT", code=EXIT_USAGE)
    addr = None
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            fail("--listen expects HOST:PORT", code=EXIT_USAGE)
        addr = (host.strip("[]"), int(port))
        if tls_cert is None or tls_key is None:
            fail("--listen needs --tls-cert and --tls-key", code=EXIT_USAGE)
    if unseal_timeout <= 0:
        fail("--unseal-timeout must be positive", code=EXIT_USAGE)
    Keyring.open(directory)  # fail early with a clean error
    opts = ServeOptions(directory, socket_path, addr, tls_cert, tls_key, client_ca, unseal_timeout)
    raise typer.Exit(run(opts))


@app.command("seal")
@handle_errors
def seal_cmd(
    server: str = typer.Option(..., "--server", metavar="URL", help="unix:PATH or https://..."),
    token_file: Path | None = typer.Option(None, "--token-file", help=TOKEN_FILE_HELP),
    ca: Path | None = typer.Option(None, "--ca", metavar="FILE", help="CA of the server cert."),
) -> None:
    """Seal a running key service: it drops every key until custodians unseal it again.

    Over the Unix socket no token is needed; over TCP a token allowed 'seal'.

    Exit codes: 0 sealed (or already sealed); 1 failure; 2 usage.
    """
    with Client(server, token=_read_token(token_file), ca=str(ca) if ca else None) as c:
        was = c.seal()
    info("sealed" if was else "already sealed")


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


@token_app.command("create")
@handle_errors
def token_create_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    name: str = typer.Option(..., "--name", help="Token name (unique among active tokens)."),
    allow: str = typer.Option(
        ..., "--allow", metavar="OPS", help=f"Comma-separated: {','.join(OPERATIONS)}."
    ),
    subject_prefix: str = typer.Option(
        ..., "--subject-prefix", help="Only subjects starting with this ('' = every subject)."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
) -> None:
    """Mint a service token with a quorum; prints it ONCE on stdout.

    The keyring keeps only its SHA-256 and policy, in a list MACed under a key only an
    unsealed keyring derives. Audited as 'token-create'.

    Exit codes: 0 created; 1 bad quorum, name taken, list tampered; 2 usage.
    """
    kr = Keyring.open(directory)
    try:
        done = ceremony.create_token(
            kr,
            quorum(kr, QuorumSource(share, identity, passphrase_file)),
            name=name,
            allow=allow.split(","),
            subject_prefix=subject_prefix,
        )
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    token, pol = done.value.token, done.value.policy
    info(f"token {pol.name!r} ({pol.id}) created: {','.join(pol.allow)} on {pol.subject_prefix!r}*")
    info("it is shown only now; store it as a secret")
    typer.echo(token)


@token_app.command("list")
@handle_errors
def token_list_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable list."),
) -> None:
    """List tokens and their policies (no quorum: the MAC is checked by the service).

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


@token_app.command("revoke")
@handle_errors
def token_revoke_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    name: str = typer.Argument(..., metavar="NAME|ID", help="Token to revoke."),
) -> None:
    """Revoke a token at once, without a quorum.

    A running service notices on its next request (and on SIGHUP), stops accepting the
    token, and audits the revocation.

    Exit codes: 0 revoked; 1 unknown or already revoked; 2 usage.
    """
    kr = Keyring.open(directory)
    pol = TokenList.read(directory, kr.keyring_id).revoke(name)
    info(f"token {pol.name!r} ({pol.id}) revoked")
