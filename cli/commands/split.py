"""``keysplit split|combine``: Shamir-split a secret into shares and recover it.

A thin shell over :mod:`keysplit.share`: the secret comes from stdin or a file (never
argv), shares go to stdout or one 0600 file each, and every failure names the share at
fault. Only the fingerprint of a recovered secret is printed unless asked otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keysplit import FormatError, KeysplitError

from .. import _common
from .._common import (
    EXIT_USAGE,
    check_output_dir,
    check_output_file,
    fail,
    handle_errors,
    read_input,
    write_all_or_none,
)
from .._custodians import read_recipient
from .._opener import (
    ALLOW_EXPENSIVE_KDF,
    ALLOW_EXPENSIVE_KDF_HELP,
    Passphrases,
    ShareOpener,
    prompt_passphrase,
    read_passphrase_file,
    read_share_path,
)
from .._output import note
from .._specs import parse_name_file

if TYPE_CHECKING:
    from keysplit import Recipient, Share

__all__ = ["app"]

app = typer.Typer()


def _parse_secret(raw: bytes) -> bytes:
    try:
        text = raw.decode("ascii")
        secret = bytes.fromhex("".join(text.split()))
    except (UnicodeDecodeError, ValueError):
        fail("the secret must be given in hex", "e.g. 32 hex digits for an AES-128 key")
    if not secret:
        fail("no secret given on stdin or in --in")
    return secret


def _stdin_shares() -> list[tuple[str, bytes]]:
    """Share lines from stdin, one share per line (``#`` comments and blank lines skipped)."""
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("stdin is not text: pass binary or sealed shares as files") from None
    lines = [ln.strip() for ln in text.splitlines()]
    shares = [ln for ln in lines if ln and not ln.startswith("#")]
    return [(f"stdin share {i}", ln.encode()) for i, ln in enumerate(shares, 1)]


@app.command("split")
@handle_errors
def split_cmd(
    threshold: int = typer.Option(..., "--threshold", "-k", help="Shares needed to recover."),
    shares: int = typer.Option(..., "--shares", "-n", help="Number of shares to make."),
    in_file: Path | None = typer.Option(
        None, "--in", help="File with the secret in hex (default: stdin)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Write one 0600 file per share here instead of stdout."
    ),
    custodian: list[str] = typer.Option(
        [],
        "--custodian",
        metavar="NAME=PUBFILE",
        help="Seal the next share to NAME's public key (repeatable; with sealing, one"
        " --custodian or --passphrase-custodian per share, keys first).",
    ),
    passphrase_custodian: list[str] = typer.Option(
        [],
        "--passphrase-custodian",
        metavar="NAME",
        help="Seal the next share under a passphrase NAME types (repeatable).",
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Passphrase for --passphrase-custodian shares."
    ),
) -> None:
    """Split a secret (hex, from stdin or --in) into N shares, any K of which recover it.

    Example: keysplit split -k 2 -n 3 --out-dir shares < secret.hex

    Exit codes: 0 split; 1 a secret that is not hex, an unreadable public key or a share
    file that exists (nothing written); 2 usage.
    """
    from keysplit import seal_share, seal_share_with_passphrase, secret_fingerprint, split
    from keysplit.ceremony import Custody, check_custody, share_file_text

    sealing = bool(custodian or passphrase_custodian)
    if sealing and len(custodian) + len(passphrase_custodian) != shares:
        fail(
            f"{shares} shares need {shares} custodians, got "
            f"{len(custodian) + len(passphrase_custodian)}",
            code=EXIT_USAGE,
        )
    if sealing and out_dir is None:
        fail("sealed shares are files: give --out-dir", code=EXIT_USAGE)
    if not 2 <= threshold <= shares <= 255:
        fail("need 2 <= --threshold <= --shares <= 255", code=EXIT_USAGE)
    if out_dir is not None:
        check_output_dir(out_dir, "--out-dir")
    recipients: list[Recipient] = []
    for spec in custodian:
        parsed = parse_name_file(spec)
        if parsed is None or parsed[1] is None:
            fail(f"--custodian expects NAME=PUBFILE, got {spec!r}", code=EXIT_USAGE)
        recipients.append(read_recipient(parsed[0], parsed[1]))
    names = [r.name for r in recipients] + list(passphrase_custodian)
    if len(set(names)) != len(names):
        fail("each custodian may appear only once", code=EXIT_USAGE)
    check_custody([Custody(r.name, recipient=r) for r in recipients])
    passphrases: list[bytes] = []
    for name in passphrase_custodian:
        if passphrase_file is not None:
            passphrases.append(read_passphrase_file(passphrase_file))
        else:
            passphrases.append(prompt_passphrase(f"custodian {name!r}", confirm=True))

    secret = _parse_secret(read_input(in_file))
    try:
        made = split(secret, threshold, shares)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    summary = (
        f"split a {len(secret)}-byte secret (fingerprint {secret_fingerprint(secret)}) "
        f"{threshold}-of-{shares}, set id {made[0].set_id_hex}"
    )
    if out_dir is None:
        note(summary)
        for s in made:
            typer.echo(str(s))
        return
    files: list[tuple[Path, bytes]] = []  # sealed first, then written all or none
    for i, s in enumerate(made):
        if not sealing:
            files.append((out_dir / f"share-{s.index}.kss", share_file_text(s).encode()))
        elif i < len(recipients):
            name = recipients[i].name
            files.append((out_dir / f"share-{s.index}-{name}.kss", seal_share(s, recipients[i])))
        else:
            name = passphrase_custodian[i - len(recipients)]
            sealed = seal_share_with_passphrase(
                s, name, passphrases[i - len(recipients)], kdf=_common.KDF
            )
            files.append((out_dir / f"share-{s.index}-{name}.kss", sealed))
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_all_or_none(files)
    note(summary)  # only once the set exists: a refused write names no set
    for s, (path, _) in zip(made, files, strict=True):
        note(f"  share {s.index}: {path}")


def _load_all(
    files: list[Path], opener: ShareOpener, skip_bad: bool
) -> tuple[list[Share], list[str]]:
    sources = [(str(p), read_share_path(p)) for p in files] if files else _stdin_shares()
    if not sources:
        fail("no shares given", "pass share files, or share lines on stdin")
    loaded: list[Share] = []
    problems: list[str] = []
    for label, data in sources:
        try:
            loaded.append(opener.open(label, data))
        except KeysplitError as exc:
            if not skip_bad:
                if exc.hint is None and len(sources) > 1:
                    exc.hint = "leave this share out, or pass --skip-bad"
                raise
            problems.append(str(exc))
            note(f"skipped {exc}")
    return loaded, problems


@app.command("combine")
@handle_errors
def combine_cmd(
    files: list[Path] | None = typer.Argument(
        None,
        metavar="FILE",
        help="Share files (text, binary or sealed); default: share lines on stdin.",
    ),
    identity: list[Path] = typer.Option(
        [],
        "--identity",
        "-i",
        metavar="FILE",
        help="Identity file to open sealed shares (repeatable).",
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Passphrase for sealed shares and identities."
    ),
    reveal: bool = typer.Option(False, "--reveal", help="Print the secret in hex on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Write the secret (hex) to a 0600 file."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out unreadable shares (each is reported) and go on."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
    allow_expensive_kdf: bool = typer.Option(
        False, ALLOW_EXPENSIVE_KDF, help=ALLOW_EXPENSIVE_KDF_HELP
    ),
) -> None:
    """Recover a secret from shares; prints only its fingerprint unless --reveal or --out.

    Example: keysplit combine shares/share-1.kss shares/share-3.kss --json

    Exit codes: 0 recovered; 1 a bad, foreign or duplicate share, too few shares, a wrong
    identity or passphrase; 2 usage.
    """
    from keysplit import combine, secret_fingerprint
    from keysplit.files import atomic_write

    if out is not None:
        check_output_file(out, "--out", force=None)
    opener = ShareOpener(
        identity, Passphrases.single(passphrase_file), allow_expensive_kdf=allow_expensive_kdf
    )
    shares, problems = _load_all(list(files or []), opener, skip_bad)
    try:
        secret = combine(shares, custodian_of=opener.custodian_of)
    except KeysplitError as exc:
        if problems:
            exc.hint = exc.hint or f"{len(problems)} share(s) were skipped as unreadable"
        raise
    fp = secret_fingerprint(secret)
    if out is not None:
        atomic_write(out, secret.hex().encode() + b"\n", overwrite=False)
        note(f"wrote the secret to {out} (mode 0600)")
    indices = sorted(s.index for s in shares)
    note(
        f"recovered a verified {len(secret)}-byte secret from shares "
        f"{', '.join(map(str, indices))} of set {shares[0].set_id_hex}"
    )
    if as_json:
        doc: dict[str, Any] = {
            "set_id": shares[0].set_id_hex,
            "threshold": shares[0].threshold,
            "shares": indices,
            "fingerprint": fp,
            "skipped": problems,
        }
        if reveal:
            doc["secret"] = secret.hex()
        typer.echo(json.dumps(doc))
    elif reveal:
        typer.echo(secret.hex())
    else:
        typer.echo(fp)
        if out is None:
            note("fingerprint only; use --reveal to print the secret or --out FILE to save it")
