"""``keysplit encrypt|decrypt``: files sealed to a keyring (format: docs/format/stream.md).

Anyone with the keyring directory (only its public key is used) can encrypt; decrypting
needs a quorum. ``-`` means stdin/stdout. Decrypting to a file is atomic: the plaintext
appears only once the whole stream has authenticated. Decrypting to stdout cannot be
atomic: on failure the exit code is 1 and whatever was written must be discarded.

Exit codes: 0 success, 1 expected failure (tampered, truncated or foreign file, bad
quorum), 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from keysplit import Keyring, ceremony, encrypt_file

from ._common import EXIT_USAGE, fail, handle_errors, info
from ._quorum import IDENTITY_OPTION, PASSPHRASE_OPTION, SHARE_OPTION, QuorumSource, quorum

__all__ = ["app"]

app = typer.Typer()


def _parse_context(items: list[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--context expects KEY=VALUE, got {item!r}", code=EXIT_USAGE)
        if key in context:
            fail(f"--context key {key!r} given twice", code=EXIT_USAGE)
        context[key] = value
    return context


@app.command("encrypt")
@handle_errors
def encrypt_cmd(
    directory: Path = typer.Argument(
        ..., metavar="DIR", help="Keyring directory (only its public key is read)."
    ),
    in_path: str = typer.Argument(..., metavar="IN", help="File to encrypt, or - for stdin."),
    out_path: str = typer.Argument(..., metavar="OUT", help="Output file, or - for stdout."),
    context: list[str] = typer.Option(
        [],
        "--context",
        metavar="KEY=VALUE",
        help="KEY=VALUE stored in clear and authenticated (repeatable).",
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists."),
) -> None:
    """Seal a file to the keyring's public key (HPKE + chunked AES-128-GCM); no quorum needed.

    Exit codes: 0 encrypted; 1 unreadable input, existing output or no keyring; 2 usage.
    """
    ctx = _parse_context(context)
    kr = Keyring.open(directory)
    result = encrypt_file(in_path, out_path, kr.public_key, context=ctx or None, overwrite=force)
    info(
        f"encrypted {result.plaintext_size} bytes to keyring {kr.keyring_id} "
        f"({result.chunks} chunks{', context ' + json.dumps(ctx) if ctx else ''})"
    )


@app.command("decrypt")
@handle_errors
def decrypt_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    in_path: str = typer.Argument(..., metavar="IN", help="Encrypted file, or - for stdin."),
    out_path: str = typer.Argument(..., metavar="OUT", help="Output file, or - for stdout."),
    context: list[str] = typer.Option(
        [],
        "--context",
        metavar="KEY=VALUE",
        help="KEY=VALUE the file's context must equal exactly (repeatable).",
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
) -> None:
    """Decrypt a file sealed to the keyring (needs a quorum); records an audit entry.

    Exit codes: 0 decrypted; 1 tampered, truncated or foreign file, bad quorum; 2 usage.

    On failure no output file is left behind.
    """
    ctx = _parse_context(context)
    if in_path == "-" and not share:
        fail("reading the file from stdin needs --share (the prompts use stdin)", code=EXIT_USAGE)
    if out_path != "-" and not force and Path(out_path).exists():
        fail(f"refusing to overwrite existing file: {out_path}", "pass --force")
    kr = Keyring.open(directory)
    result = ceremony.decrypt_file(
        kr,
        quorum(kr, QuorumSource(share, identity, passphrase_file)),
        in_path,
        out_path,
        context=ctx or None,
        overwrite=force,
    ).value
    info(f"decrypted {result.plaintext_size} bytes (authenticated) to {out_path}")
