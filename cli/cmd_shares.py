"""``keysplit split|combine``, ``keysplit share ...`` and ``keysplit custodian ...``.

A thin shell over :mod:`keysplit.share` and :mod:`keysplit.custodian`: secrets come from
stdin, files or hidden prompts (never argv), data goes to stdout, messages to stderr, and
every failure names the file or share at fault.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from keysplit import (
    FormatError,
    Identity,
    KeysplitError,
    Recipient,
    Share,
    combine,
    load_share,
    seal_share,
    seal_share_with_passphrase,
    secret_fingerprint,
    split,
    verify_set,
)
from keysplit.ceremony import share_file_text
from keysplit.custody import is_sealed, read_share_file, sealed_share_info
from keysplit.files import atomic_write

from . import _common, cmd_convert, cmd_custody
from ._common import EXIT_USAGE, fail, handle_errors, read_input, relabel
from ._opener import (
    ALLOW_EXPENSIVE_KDF,
    Passphrases,
    ShareOpener,
    prompt_passphrase,
    read_passphrase_file,
)
from ._specs import parse_name_file

__all__ = ["app"]

app = typer.Typer()
share_app = typer.Typer(help="Inspect and verify share files.", no_args_is_help=True)
custodian_app = typer.Typer(help="Custodian key pairs for sealing shares.", no_args_is_help=True)
app.add_typer(share_app, name="share")
app.add_typer(custodian_app, name="custodian")


# -- helpers -----------------------------------------------------------------------------


def _parse_secret(raw: bytes) -> bytes:
    try:
        text = raw.decode("ascii")
        secret = bytes.fromhex("".join(text.split()))
    except (UnicodeDecodeError, ValueError):
        fail("the secret must be given in hex", "e.g. 32 hex digits for an AES-128 key")
    if not secret:
        fail("no secret given on stdin or in --in")
    return secret


def _opener(
    identity: list[Path], passphrase_file: Path | None, allow_expensive_kdf: bool
) -> ShareOpener:
    """One passphrase file for every sealed share and identity (or prompts)."""
    return ShareOpener(
        identity, Passphrases.single(passphrase_file), allow_expensive_kdf=allow_expensive_kdf
    )


_ALLOW_KDF_HELP = (
    "Derive Argon2id keys heavier than 1 GiB x passes without asking (scripted runs; "
    "only for share and identity files you trust)."
)


def _stdin_shares() -> list[tuple[str, bytes]]:
    """Share lines from stdin, one share per line (``#`` comments and blank lines skipped)."""
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("stdin is not text: pass binary or sealed shares as files") from None
    lines = [ln.strip() for ln in text.splitlines()]
    shares = [ln for ln in lines if ln and not ln.startswith("#")]
    return [(f"stdin share {i}", ln.encode()) for i, ln in enumerate(shares, 1)]


def _note(message: str) -> None:
    """A plain (unwrapped, markup-free) message on stderr."""
    typer.echo(message, err=True)


# -- split / combine -------------------------------------------------------------------------


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
        [], "--custodian", help="NAME=PUBFILE: seal the next share to this public key."
    ),
    passphrase_custodian: list[str] = typer.Option(
        [], "--passphrase-custodian", help="NAME: seal the next share under a passphrase."
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Passphrase for --passphrase-custodian shares."
    ),
) -> None:
    """Split a secret (hex, from stdin or --in) into N shares, any K of which recover it."""
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
    recipients: list[Recipient] = []
    for spec in custodian:
        parsed = parse_name_file(spec)
        if parsed is None or parsed[1] is None:
            fail(f"--custodian expects NAME=PUBFILE, got {spec!r}", code=EXIT_USAGE)
        name, pub = parsed[0], parsed[1]
        try:
            recipient = Recipient.from_file(pub)
        except KeysplitError as exc:
            raise relabel(exc, pub) from None
        if recipient.name != name:
            fail(
                f"{pub} is the public key of {recipient.name!r}, not {name!r}",
                "check which file belongs to which custodian",
            )
        recipients.append(recipient)
    names = [r.name for r in recipients] + list(passphrase_custodian)
    if len(set(names)) != len(names):
        fail("each custodian may appear only once", code=EXIT_USAGE)
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
    _note(
        f"split a {len(secret)}-byte secret (fingerprint {secret_fingerprint(secret)}) "
        f"{threshold}-of-{shares}, set id {made[0].set_id_hex}"
    )
    if out_dir is None:
        for s in made:
            typer.echo(str(s))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(made):
        if not sealing:
            path = out_dir / f"share-{s.index}.txt"
            atomic_write(path, share_file_text(s).encode(), overwrite=False)
        elif i < len(recipients):
            path = out_dir / f"share-{s.index}-{recipients[i].name}.kss"
            atomic_write(path, seal_share(s, recipients[i]), overwrite=False)
        else:
            name = passphrase_custodian[i - len(recipients)]
            sealed = seal_share_with_passphrase(
                s, name, passphrases[i - len(recipients)], kdf=_common.KDF
            )
            path = out_dir / f"share-{s.index}-{name}.kss"
            atomic_write(path, sealed, overwrite=False)
        _note(f"  share {s.index}: {path}")


def _load_all(
    files: list[Path],
    identity: list[Path],
    passphrase_file: Path | None,
    skip_bad: bool,
    allow_expensive_kdf: bool,
) -> tuple[list[Share], list[str]]:
    opener = _opener(identity, passphrase_file, allow_expensive_kdf)
    sources = [(str(p), read_share_file(p)) for p in files] if files else _stdin_shares()
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
            _note(f"skipped {exc}")
    return loaded, problems


@app.command("combine")
@handle_errors
def combine_cmd(
    files: list[Path] | None = typer.Argument(
        None, help="Share files (text, binary or sealed); default: share lines on stdin."
    ),
    identity: list[Path] = typer.Option(
        [], "--identity", "-i", help="Identity file to open sealed shares (repeatable)."
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
    allow_expensive_kdf: bool = typer.Option(False, ALLOW_EXPENSIVE_KDF, help=_ALLOW_KDF_HELP),
) -> None:
    """Recover a secret from shares; prints only its fingerprint unless --reveal or --out."""
    shares, problems = _load_all(
        list(files or []), identity, passphrase_file, skip_bad, allow_expensive_kdf
    )
    try:
        secret = combine(shares)
    except KeysplitError as exc:
        if problems:
            exc.hint = exc.hint or f"{len(problems)} share(s) were skipped as unreadable"
        raise
    fp = secret_fingerprint(secret)
    if out is not None:
        atomic_write(out, secret.hex().encode() + b"\n", overwrite=False)
        _note(f"wrote the secret to {out} (mode 0600)")
    indices = sorted(s.index for s in shares)
    _note(
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
            _note("fingerprint only; use --reveal to print the secret or --out FILE to save it")


# -- share inspect / verify ------------------------------------------------------------------


def _metadata(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """What a share file says about itself; ``data`` if already read."""
    if data is None:
        data = read_share_file(path)
    try:
        if is_sealed(data):
            meta = sealed_share_info(data)
            doc: dict[str, Any] = {
                "kind": "sealed",
                "custodian": meta.custodian,
                "set_id": meta.set_id_hex,
                "index": meta.index,
                "threshold": meta.threshold,
                "count": meta.count,
                "fingerprint": meta.fingerprint,
                "protection": meta.method,
            }
            if meta.recipient_fingerprint:
                doc["recipient_fingerprint"] = meta.recipient_fingerprint
            if meta.kdf:
                doc["kdf"] = {
                    "algorithm": "argon2id",
                    "time_cost": meta.kdf.time_cost,
                    "memory_kib": meta.kdf.memory_kib,
                    "lanes": meta.kdf.lanes,
                }
            return doc
        share = load_share(data)
    except KeysplitError as exc:
        raise relabel(exc, str(path)) from None
    return {
        "kind": "text" if not data.startswith(b"KSSH") else "binary",
        "set_id": share.set_id_hex,
        "index": share.index,
        "threshold": share.threshold,
        "count": share.count,
        "fingerprint": share.fingerprint,
        "secret_length": share.secret_len,
    }


@share_app.command("inspect")
@handle_errors
def inspect_cmd(
    file: Path = typer.Argument(..., help="A share file (text, binary or sealed)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a share's metadata (set id, index, threshold, custodian); never secret bytes."""
    doc = _metadata(file)
    if as_json:
        typer.echo(json.dumps(doc))
        return
    for key, value in doc.items():
        typer.echo(f"{key}: {value}")


@share_app.command("verify")
@handle_errors
def verify_cmd(
    files: list[Path] = typer.Argument(..., help="Share files to check."),
    identity: list[Path] = typer.Option(
        [], "--identity", "-i", help="Also open sealed shares with these identities."
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Passphrase to open passphrase-sealed shares."
    ),
    allow_expensive_kdf: bool = typer.Option(False, ALLOW_EXPENSIVE_KDF, help=_ALLOW_KDF_HELP),
) -> None:
    """Check checksums and that the shares belong together, without combining them."""
    opener = (
        _opener(identity, passphrase_file, allow_expensive_kdf)
        if (identity or passphrase_file)
        else None
    )
    bad: list[str] = []
    plain: list[Share] = []
    metas: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        try:
            data = read_share_file(path)
            meta = _metadata(path, data)
            if opener is not None or meta["kind"] != "sealed":
                share = opener.open(str(path), data) if opener else load_share(data)
                plain.append(share)
            metas.append((path, meta))
            typer.echo(f"ok   {path}: share {meta['index']} of set {meta['set_id']}")
        except KeysplitError as exc:
            bad.append(str(path))
            typer.echo(f"BAD  {exc}")
    try:
        verify_set(plain)
        _verify_headers(metas)
    except KeysplitError as exc:
        fail(f"{exc}")
    if bad:
        fail(f"{len(bad)} bad share file(s): {', '.join(bad)}")
    if metas:
        k = metas[0][1]["threshold"]
        have = len(metas)
        more = "enough to recover" if have >= k else f"{k - have} more needed"
        _note(f"{have} consistent share(s) of set {metas[0][1]['set_id']}, threshold {k}: {more}")


def _verify_headers(metas: list[tuple[Path, dict[str, Any]]]) -> None:
    """Consistency of metadata alone (sealed shares that were not opened)."""
    if not metas:
        return
    ref_path, ref = metas[0]
    seen: dict[int, Path] = {}
    for path, m in metas:
        for key in ("set_id", "threshold", "count"):
            if m[key] != ref[key]:
                raise FormatError(
                    f"{path} (share {m['index']}) and {ref_path} disagree on the {key}: "
                    "shares come from different splits"
                )
        if m["index"] in seen:
            raise FormatError(f"{path} and {seen[m['index']]} are both share {m['index']}")
        seen[m["index"]] = path


# -- custodian keygen / show -------------------------------------------------------------------


@custodian_app.command("keygen")
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
) -> None:
    """Create NAME.pub (share it) and NAME.identity (private, 0600, passphrase-protected)."""
    try:
        ident = Identity.generate(name, suite="mlkem768-x25519" if pq else "x25519")
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    if no_passphrase and passphrase_file:
        fail("--no-passphrase and --passphrase-file exclude each other", code=EXIT_USAGE)
    pub_path = out_dir / f"{name}.pub"
    id_path = out_dir / f"{name}.identity"
    for p in (pub_path, id_path):
        if p.exists():
            fail(f"refusing to overwrite existing file: {p}")
    passphrase: bytes | None = None
    if passphrase_file is not None:
        passphrase = read_passphrase_file(passphrase_file)
    elif not no_passphrase:
        passphrase = prompt_passphrase(f"the identity of {name!r}", confirm=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(id_path, ident.to_bytes(passphrase, kdf=_common.KDF), overwrite=False)
    atomic_write(pub_path, ident.recipient.to_text().encode(), mode=0o644, overwrite=False)
    _note(f"wrote {pub_path} (public) and {id_path} (private, mode 0600)")
    _note("compare the fingerprint with the custodian out of band before sealing shares to it")
    typer.echo(ident.fingerprint)


@custodian_app.command("show")
@handle_errors
def show_cmd(
    file: Path = typer.Argument(..., help="A public key (.pub) file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a custodian public key's name, suite and fingerprint."""
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


# `share convert` lives in its own module; it joins the share group after inspect/verify.
share_app.add_typer(cmd_convert.app)
# share prove / print / convert-vault (custodians' side of ceremonies).
share_app.add_typer(cmd_custody.app)
