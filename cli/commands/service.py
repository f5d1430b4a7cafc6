"""The key service from the command line: ``keysplit serve`` and ``keysplit seal``.

Thin glue over :mod:`keysplit.service`. Custodians unseal a running service with
``keysplit unseal --server URL`` (:mod:`.unseal`); tokens are ``keysplit token ...``
(:mod:`.token`). Tokens are never accepted in argv (``--token-file``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from keysplit import KeysplitError

from .._common import EXIT_USAGE, fail, handle_errors, info
from .._output import JSON_HELP
from .._service import (
    CA_OPTION,
    CERT_OPTION,
    KEY_OPTION,
    SERVER_FORMS,
    TOKEN_FILE_HELP,
    connect,
    read_token,
)

__all__ = ["app"]

app = typer.Typer()


@app.command("serve")
@handle_errors
def serve_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory to serve."),
    socket_path: Path | None = typer.Option(
        None, "--socket", metavar="PATH", help="Unix socket to listen on (created with mode 0600)."
    ),
    listen: str | None = typer.Option(
        None,
        "--listen",
        metavar="HOST:PORT",
        help="Also listen on TCP with TLS (port 0: one the system picks, logged).",
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", metavar="FILE", help="TLS cert."),
    tls_key: Path | None = typer.Option(None, "--tls-key", metavar="FILE", help="TLS key."),
    client_ca: Path | None = typer.Option(
        None, "--client-ca", metavar="FILE", help="Require client certificates from this CA."
    ),
    unseal_timeout: float = typer.Option(
        600.0, "--unseal-timeout", metavar="SECONDS", help="Partial unseal progress expires."
    ),
    idle_timeout: float = typer.Option(
        30.0,
        "--idle-timeout",
        metavar="SECONDS",
        help="Close a connection idle (or still sending its request header) this long.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        metavar="N",
        help="Processes serving once unsealed (default: the number of cores).",
    ),
    io_timeout: float = typer.Option(
        60.0,
        "--io-timeout",
        metavar="SECONDS",
        help="Close a connection whose request body or response takes longer than this.",
    ),
) -> None:
    """Run the key service. It starts sealed: custodians unseal it with
    'keysplit unseal --server URL' (the URL and their own share: no keyring directory).

    SIGTERM/SIGINT and 'keysplit seal' drop every key; SIGHUP reloads the token list.

    Example: keysplit serve vault --socket /run/keysplit.sock

    Exit codes: 0 stopped by a signal; 1 failure (no keyring, socket in use); 2 usage.
    """
    from keysplit import Keyring

    try:
        from keysplit.service.server import Limits, ServeOptions, run
    except ImportError:
        fail(
            "keysplit serve needs aiohttp",
            "install the 'service' extra: pip install '.[service]' in a keysplit checkout "
            "(not on PyPI)",
        )
    if socket_path is None and listen is None:
        fail("give --socket PATH and/or --listen HOST:PORT", code=EXIT_USAGE)
    addr = None
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            fail("--listen expects HOST:PORT", code=EXIT_USAGE)
        if not 0 <= int(port) <= 65535:  # 99999 was bound as 99999 % 65536
            fail(f"--listen: port {port} is not from 0 to 65535", code=EXIT_USAGE)
        addr = (host.strip("[]"), int(port))
        if tls_cert is None or tls_key is None:
            fail("--listen needs --tls-cert and --tls-key", code=EXIT_USAGE)
    if not 0 < unseal_timeout <= 86_400:  # NaN too: it made the attempt never expire
        fail("--unseal-timeout must be between 0 and 86400 seconds", code=EXIT_USAGE)
    Keyring.open(directory)  # fail early with a clean error
    try:
        limits = Limits(idle=idle_timeout, io=io_timeout, handshake=min(idle_timeout, 10.0))
    except ValueError as exc:
        fail(f"--idle-timeout/--io-timeout: {exc}", code=EXIT_USAGE)
    if workers is not None and not 1 <= workers <= 256:
        fail("--workers must be from 1 to 256", code=EXIT_USAGE)
    opts = ServeOptions(
        directory, socket_path, addr, tls_cert, tls_key, client_ca, unseal_timeout, limits
    )
    if workers is not None:
        opts = dataclasses.replace(opts, workers=workers)
    raise typer.Exit(run(opts))


@app.command("seal")
@handle_errors
def seal_cmd(
    directory: Path | None = typer.Argument(
        None, metavar="[DIR]", help="Keyring directory: the service must serve this keyring."
    ),
    server: str = typer.Option(..., "--server", metavar="URL", help=SERVER_FORMS),
    token_file: Path | None = typer.Option(None, "--token-file", help=TOKEN_FILE_HELP),
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Seal a running key service: it drops every key until custodians unseal it again.

    Over the Unix socket no token is needed; over TCP a token allowed 'seal'.

    Example: keysplit seal --server unix:/run/keysplit.sock

    Exit codes: 0 sealed (or already sealed); 1 failure; 2 usage.
    """
    from keysplit import Keyring

    expected = Keyring.open(directory).keyring_id if directory is not None else None
    with connect(server, (ca, cert, key), token=read_token(token_file)) as c:
        serving = c.service_status().get("keyring_id")
        if expected is not None and serving != expected:
            raise KeysplitError(
                f"the key service serves keyring {serving}, not {expected} (DIR)",
                hint="check --server and the keyring directory",
            )
        was = c.seal()
    info("sealed" if was else "already sealed")
    if as_json:
        typer.echo(json.dumps({"sealed": True, "was_unsealed": was, "keyring_id": serving}))
