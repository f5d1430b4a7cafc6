"""``keysplit encrypt|decrypt``: files sealed to a keyring (format: docs/format/stream.md).

Anyone with the keyring directory (only its public key is used) can encrypt, once the
keyring's fingerprint is trusted: ``--expect FPR`` or a pin in the known-keyrings file
(``keysplit keyring pin``; ``init`` pins on the machine that ran it). Decrypting needs a
quorum. ``-`` means stdin/stdout. Decrypting to a file is atomic: the plaintext
appears only once the whole stream has authenticated. Decrypting to stdout cannot be
atomic: on failure the exit code is 1 and whatever was written must be discarded.

Exit codes: 0 success, 1 expected failure (tampered, truncated or foreign file, bad
quorum), 2 usage error.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import typer

from .._common import EXIT_USAGE, check_output_file, fail, handle_errors, info
from .._output import JSON_HELP, UnprintableOutput, printable_stdout
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


def _json_needs_stdout(as_json: bool, out_path: str) -> None:
    if as_json and out_path == "-":
        fail("--json writes to stdout, and so does OUT -: give OUT a file", code=EXIT_USAGE)


def _no_ciphertext_to_terminal(out_path: str) -> None:
    """``encrypt DIR IN -`` with stdout a terminal would print binary ciphertext to the
    screen: refused, as age does. Decrypting to a terminal prints plain text only (see
    ``decrypt``'s --allow-unprintable)."""
    if out_path == "-" and sys.stdout.isatty():
        fail(
            "refusing to write the encrypted file to the terminal",
            "redirect stdout (> FILE.ks, | ...) or give OUT a file name",
            code=EXIT_USAGE,
        )


def _check_not_stdout(in_path: str, out_path: str) -> None:
    """A usage error, before any share is asked for, for ``decrypt DIR f - >> f``: the
    plaintext would be appended to the file being read (the library refuses it too)."""
    if out_path != "-":
        return
    try:
        mine = os.fstat(0) if in_path == "-" else os.stat(in_path)
        out = os.fstat(1)
    except (OSError, ValueError):
        return
    if stat.S_ISREG(mine.st_mode) and (mine.st_dev, mine.st_ino) == (out.st_dev, out.st_ino):
        fail(f"input file is output file: {in_path}", code=EXIT_USAGE)


def _no_secret_from_stdin(shares: list[Path], passphrase_files: list[str]) -> None:
    """With the file to decrypt on stdin, a share or passphrase file that is stdin too
    (``--passphrase-file carol=/dev/stdin``) read the stream: "wrong passphrase" for the
    ciphertext taken as carol's passphrase. A usage error, before anything is read."""
    from .._specs import parse_name_file

    named = [str(p) for p in shares]
    for spec in passphrase_files:
        parsed = parse_name_file(spec)
        named.append(spec if parsed is None or parsed[1] is None else parsed[1])
    for path in named:
        if _is_stdin(path):
            fail(
                f"{path}: standard input carries the file to decrypt, so it cannot also "
                "carry a share or passphrase",
                "give the share or passphrase in a file",
                code=EXIT_USAGE,
            )


def _is_stdin(in_path: str) -> bool:
    """IN is standard input: ``-``, or a name of it (``/dev/stdin``, ``/dev/fd/0``, any path
    to the pipe or file that fd 0 is). A prompt would then read the file being decrypted:
    carol's passphrase prompt took the stream's first line as her passphrase."""
    if in_path == "-":
        return True
    try:
        mine, stdin = os.stat(in_path), os.fstat(0)
    except (OSError, ValueError):
        return False
    return (mine.st_dev, mine.st_ino) == (stdin.st_dev, stdin.st_ino)


def _parse_context(items: list[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--context expects KEY=VALUE, got {item!r}", code=EXIT_USAGE)
        if key in context:
            fail(f"--context key {key!r} given twice", code=EXIT_USAGE)
        context[key] = value
    from keysplit.stream import check_context

    try:
        check_context(context)
    except ValueError as exc:  # too long, or not Unicode (argv bytes that are not UTF-8)
        fail(f"--context: {exc}", code=EXIT_USAGE)
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
    expect: str | None = typer.Option(
        None,
        "--expect",
        metavar="FPR",
        help="The keyring fingerprint (ksk1..., from init or 'keysplit status' on the owner's "
        "machine); encrypt refuses a keyring that does not match it.",
    ),
    trust_on_first_use: bool = typer.Option(
        False,
        "--trust-on-first-use",
        help="If the keyring is not pinned, pin its current fingerprint and encrypt "
        "(trusts the directory as it is now, like SSH's first connection).",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " (not with OUT -)."),
) -> None:
    """Seal a file to the keyring's public key (HPKE + chunked AES-128-GCM); no quorum needed.

    The keyring's fingerprint must match --expect or its pin in the known-keyrings file;
    an unpinned keyring is refused without --expect or --trust-on-first-use.

    Example: keysplit encrypt vault report.pdf report.pdf.ks --context doc=report

    Exit codes: 0 encrypted; 1 untrusted keyring, unreadable input, existing output or no
    keyring (nothing written); 2 usage.
    """
    from keysplit import Keyring, encrypt_file, trust

    ctx = _parse_context(context)
    _json_needs_stdout(as_json, out_path)
    _no_ciphertext_to_terminal(out_path)
    check_output_file(out_path, "OUT", overwrite=force)
    kr = Keyring.open(directory)
    sealed = encrypt_file(
        kr,
        in_path,
        out_path,
        expect=expect,
        trust_on_first_use=trust_on_first_use,
        context=ctx or None,
        overwrite=force,
    )
    result = sealed.info
    if sealed.trust == trust.TRUST_FIRST_USE:
        info(
            f"keyring {kr.keyring_id} was not pinned; pinned its fingerprint "
            f"{kr.fingerprint} now (trust on first use: compare it with the owner's)",
            lead="warning:",
            style="yellow",
        )
    chunks = f"{result.chunks} chunk{'' if result.chunks == 1 else 's'}"
    info(
        f"encrypted {result.plaintext_size} bytes to keyring {kr.keyring_id} "
        f"({chunks}{', context ' + json.dumps(ctx) if ctx else ''})"
    )
    if as_json:
        doc = {
            "keyring_id": kr.keyring_id,
            "fingerprint": kr.fingerprint,
            "out": out_path,
            "plaintext_size": result.plaintext_size,
            "chunks": result.chunks,
            "context": ctx,
            "trust": sealed.trust,
        }
        typer.echo(json.dumps(doc))


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
        help="KEY=VALUE the file's context must equal exactly (repeatable). Without it the "
        "context is not checked; either way it is shown (authenticated with the file).",
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUT if it exists."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP + " (not with OUT -)."),
    allow_unprintable: bool = typer.Option(
        False,
        "--allow-unprintable",
        help="With OUT - and stdout a terminal, write the plaintext even if it is not plain "
        "text (binary, escape sequences: they act on the terminal).",
    ),
) -> None:
    """Decrypt a file sealed to the keyring (needs a quorum); records an audit entry.

    Example: keysplit decrypt vault report.pdf.ks report.pdf -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 decrypted; 1 tampered, truncated or foreign file, bad quorum, plaintext
    that is not plain text bound for a terminal; 2 usage.

    On failure no output file is left behind. With OUT - and stdout a terminal, plaintext
    that is not UTF-8 text or holds control characters (escape sequences could rewrite the
    screen or worse) stops the decrypt before it is written, unless --allow-unprintable;
    a pipe or a redirect gets the plaintext as it is.
    """
    from keysplit import ceremony

    ctx = _parse_context(context)
    _json_needs_stdout(as_json, out_path)
    from_stdin = _is_stdin(in_path)
    if from_stdin and not share:
        fail("reading the file from stdin needs --share (the prompts use stdin)", code=EXIT_USAGE)
    if from_stdin:
        _no_secret_from_stdin(share, passphrase_file)
    check_output_file(out_path, "OUT", overwrite=force)
    _check_not_stdout(in_path, out_path)
    kr = open_keyring(directory, store)
    to_terminal = out_path == "-" and not allow_unprintable and sys.stdout.isatty()
    try:
        with printable_stdout(to_terminal):
            done = ceremony.decrypt_file(
                kr,
                quorum(
                    kr, QuorumSource(share, identity, passphrase_file, stdin_is_data=from_stdin)
                ),
                in_path,
                out_path,
                context=ctx or None,
                overwrite=force,
            )
    except UnprintableOutput:
        fail(
            "refusing to write the decrypted file to the terminal: it is not plain text "
            "(binary data or control characters)",
            "redirect stdout (> FILE, | ...), give OUT a file name, or pass --allow-unprintable",
        )
    result = done.value
    stored = dict(result.header.context)
    if not stored:
        shown = ""
    elif ctx:
        shown = f", context {json.dumps(stored)} (as expected)"
    else:
        shown = f", context {json.dumps(stored)} (not checked: --context requires it)"
    info(f"decrypted {result.plaintext_size} bytes (authenticated) to {out_path}{shown}")
    if as_json:
        doc = {
            "keyring_id": kr.keyring_id,
            "out": out_path,
            "plaintext_size": result.plaintext_size,
            "context": stored,
            "context_checked": bool(ctx),
            "custodians": [c.as_dict() for c in done.contributors],
            "audit_head": None if done.entry is None else done.entry.hash,
        }
        typer.echo(json.dumps(doc))
