"""What the commands that talk to a key service share: ``--server``, the TLS options
``--ca/--cert/--key`` (the same on every such command), the token file, and one way to
connect that turns a bad URL or certificate file into one ``error:`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, overload

import typer

from ._common import EXIT_USAGE, fail, read_small_text

if TYPE_CHECKING:
    from keysplit.service import Client
    from keysplit.service.cluster_client import TlsFiles

__all__ = [
    "CA_OPTION",
    "CERT_OPTION",
    "KEY_OPTION",
    "SERVER_FORMS",
    "TOKEN_FILE_HELP",
    "Tls",
    "connect",
    "read_token",
    "tls_files",
]

SERVER_FORMS = "unix:PATH (the service's socket) or https://HOST:PORT"
"""The forms of ``--server`` a service listens on (no plain http: tokens and shares)."""

TOKEN_FILE_HELP = "File holding the service token (never pass tokens in argv)."  # noqa: S105

CA_OPTION = typer.Option(
    None,
    "--ca",
    metavar="FILE",
    help="https: the CA (PEM) that signed the service's certificate (default: the system's).",
)
CERT_OPTION = typer.Option(
    None,
    "--cert",
    metavar="FILE",
    help="https: client certificate (PEM) for a service run with --client-ca (mTLS).",
)
KEY_OPTION = typer.Option(
    None, "--key", metavar="FILE", help="https: the private key (PEM) of --cert."
)

Tls = tuple[Path | None, Path | None, Path | None]
"""``(ca, cert, key)`` as given."""


@overload
def read_token(path: Path) -> str: ...
@overload
def read_token(path: Path | None) -> str | None: ...
def read_token(path: Path | None) -> str | None:
    """The token in ``path`` (``--token-file``; None: none given), bounded and stripped;
    an empty file is one ``error:`` line, not a request that fails later as unauthorized."""
    if path is None:
        return None
    token = read_small_text(path, "token file")
    if not token:
        fail(f"token file {path} is empty")
    return token


def _check_tls(tls: Tls) -> None:
    ca, cert, key = tls
    if key is not None and cert is None:
        fail("--key goes with --cert (the client certificate)", code=EXIT_USAGE)
    for opt, path in (("--ca", ca), ("--cert", cert), ("--key", key)):  # a missing input: 1
        if path is not None and not path.is_file():
            what = "not a file" if path.exists() else "no such file"
            fail(f"{opt}: {what}: {path}")


def tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> TlsFiles:
    """``--ca/--cert/--key`` of a command that talks to every node of a cluster (the files
    apply to its ``https://`` nodes), checked as :func:`connect` checks them."""
    from keysplit.service.cluster_client import TlsFiles

    _check_tls((ca, cert, key))
    return TlsFiles(*(None if p is None else str(p) for p in (ca, cert, key)))


def connect(server: str, tls: Tls = (None, None, None), *, token: str | None = None) -> Client:
    """A :class:`keysplit.Client` for ``--server`` (not connected yet: the first request
    connects, and a failure then carries a TLS or socket hint)."""
    import ssl

    from keysplit.service import Client

    ca, cert, key = tls
    if server.startswith("unix:") and any(v is not None for v in tls):
        fail("--ca, --cert and --key apply to https:// servers", code=EXIT_USAGE)
    _check_tls(tls)
    if ca is not None and server.startswith("https:"):
        try:  # what Client does first: a bad bundle is not the client certificate's fault
            ssl.create_default_context(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            fail(
                f"--ca: cannot load the CA bundle {ca}: {getattr(exc, 'reason', None) or exc}",
                "--ca takes PEM CA certificates",
            )
    try:
        return Client(
            server,
            token=token,
            ca=None if ca is None else str(ca),
            cert=None if cert is None else str(cert),
            key=None if key is None else str(key),
        )
    except ssl.SSLError as exc:
        fail(
            f"cannot load the client certificate {cert}"
            + (f" with key {key}" if key else "")
            + f": {exc.reason or exc}",
            "--cert takes a PEM certificate and --key its PEM private key (unencrypted)",
        )
    except ValueError as exc:
        if "url" in str(exc).lower():
            fail(
                f"--server {server!r} is not a key service address",
                f"use {SERVER_FORMS}",
                code=EXIT_USAGE,
            )
        fail(str(exc), code=EXIT_USAGE)
