"""``keysplit custodian keygen|show``: custodian key pairs that shares are sealed to.

The identity (private) file is written 0600, encrypted under a passphrase typed at a
hidden prompt unless told otherwise; the public key is printed by fingerprint only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from keysplit import KeysplitError

from .. import _common
from .._common import EXIT_USAGE, check_output_dir, fail, handle_errors, relabel
from .._opener import prompt_passphrase, read_passphrase_file
from .._output import JSON_HELP, note

__all__ = ["app"]

app = typer.Typer()


@app.command("keygen")
@handle_errors
def keygen_cmd(
    name: str = typer.Argument(..., help="Custodian name (letters, digits, . _ @ + -)."),
    out_dir: Path = typer.Option(Path("."), "--out-dir", help="Where to write the two files."),
    no_passphrase: bool = typer.Option(
        False, "--no-passphrase", help="Store the identity unencrypted (not recommended)."
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Read the identity passphrase from this file."
    ),
    pq: bool = typer.Option(
        False, "--pq", help="Post-quantum hybrid key (ML-KEM-768 + X25519) instead of X25519."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create NAME.pub (share it) and NAME.identity (private, 0600, passphrase-protected).

    Prints the key's fingerprint: compare it with the custodian out of band.

    Example: keysplit custodian keygen ana --out-dir keys

    Exit codes: 0 written; 1 a file exists or cannot be written; 2 usage.
    """
    from keysplit import Identity
    from keysplit.files import atomic_write

    try:
        ident = Identity.generate(name, suite="mlkem768-x25519" if pq else "x25519")
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    if no_passphrase and passphrase_file:
        fail("--no-passphrase and --passphrase-file exclude each other", code=EXIT_USAGE)
    check_output_dir(out_dir, "--out-dir")
    pub_path = out_dir / f"{name}.pub"
    id_path = out_dir / f"{name}.identity"
    for p in (pub_path, id_path):
        if os.path.lexists(p):  # a link to nowhere is there too
            fail(f"refusing to overwrite existing file: {p}")
    passphrase: bytes | None = None
    if passphrase_file is not None:
        passphrase = read_passphrase_file(passphrase_file)
    elif not no_passphrase:
        passphrase = prompt_passphrase(f"the identity of {name!r}", confirm=True)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(id_path, ident.to_bytes(passphrase, kdf=_common.KDF), overwrite=False)
    atomic_write(pub_path, ident.recipient.to_text().encode(), mode=0o644, overwrite=False)
    note(f"wrote {pub_path} (public) and {id_path} (private, mode 0600)")
    note("compare the fingerprint with the custodian out of band before sealing shares to it")
    doc = {
        "custodian": name,
        "suite": ident.recipient.suite,
        "fingerprint": ident.fingerprint,
        "public_key_file": str(pub_path),
        "identity_file": str(id_path),
        "encrypted": passphrase is not None,
    }
    typer.echo(json.dumps(doc) if as_json else ident.fingerprint)


@app.command("show")
@handle_errors
def show_cmd(
    file: Path = typer.Argument(..., help="A public key (.pub) file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a custodian public key's name, suite and fingerprint.

    Example: keysplit custodian show keys/ana.pub --json

    Exit codes: 0 shown; 1 not a public key file, or unreadable; 2 usage.
    """
    from keysplit import Recipient

    try:
        r = Recipient.from_file(file)
    except KeysplitError as exc:
        raise relabel(exc, str(file)) from None
    doc = {"custodian": r.name, "suite": r.suite, "fingerprint": r.fingerprint}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        for key, value in doc.items():
            typer.echo(f"{key}: {value}")
