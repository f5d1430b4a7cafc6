"""``keysplit share inspect|verify|prove|print``: one custodian's share files.

Share files are opened the way ``keysplit combine`` opens them (:mod:`.._opener`); the
secret is never printed: ``prove`` prints a code bound to the share, ``print`` writes a
sheet as secret as the share. (``share convert`` is :mod:`.convert`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keysplit import DuplicateShareError, KeysplitError, MixedSharesError

from .._common import EXIT_USAGE, check_output_file, fail, handle_errors, info, relabel
from .._opener import (
    ALLOW_EXPENSIVE_KDF,
    ALLOW_EXPENSIVE_KDF_HELP,
    Passphrases,
    ShareOpener,
    read_share_path,
)
from .._output import note

if TYPE_CHECKING:
    from keysplit import Share
    from keysplit import sheet as ks_sheet

__all__ = ["app"]

app = typer.Typer()

IDENTITY_HELP = "Identity file opening a share sealed to a public key (repeatable)."


UNLOCK_HELP = "Passphrase of a passphrase-sealed share, or of the identity (else a prompt)."


def _metadata(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """What a share file says about itself; ``data`` if already read."""
    from keysplit import load_share
    from keysplit.custody import is_sealed, read_share_file, sealed_share_info

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


@app.command("inspect")
@handle_errors
def inspect_cmd(
    file: Path = typer.Argument(..., help="A share file (text, binary or sealed)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a share's metadata (set id, index, threshold, custodian); never secret bytes.

    Example: keysplit share inspect ana.g1.kss

    Exit codes: 0 shown; 1 not a share file, or unreadable; 2 usage.
    """
    doc = _metadata(file)
    if as_json:
        typer.echo(json.dumps(doc))
        return
    for key, value in doc.items():
        typer.echo(f"{key}: {value}")


@app.command("verify")
@handle_errors
def verify_cmd(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="Share files to check."),
    identity: list[Path] = typer.Option(
        [],
        "--identity",
        "-i",
        metavar="FILE",
        help="Also open sealed shares with this identity (repeatable).",
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Passphrase to open passphrase-sealed shares."
    ),
    allow_expensive_kdf: bool = typer.Option(
        False, ALLOW_EXPENSIVE_KDF, help=ALLOW_EXPENSIVE_KDF_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Check checksums and that the shares belong together, without combining them.

    Sealed shares are checked by their headers alone unless --identity or --passphrase-file
    opens them. Prints one line per file (or, with --json, one document), then whether
    they are enough to recover.

    Example: keysplit share verify ana.g1.kss ben.g1.kss --identity ana.identity

    Exit codes: 0 consistent; 1 a bad file, or shares that do not belong together; 2 usage.
    """
    from keysplit import verify_set

    opener = ShareOpener(
        identity, Passphrases.single(passphrase_file), allow_expensive_kdf=allow_expensive_kdf
    )
    opens_sealed = bool(identity or passphrase_file)
    bad: list[str] = []
    rows: list[dict[str, Any]] = []
    plain: list[Share] = []
    metas: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        try:
            data = read_share_path(path)
            meta = _metadata(path, data)
            if opens_sealed or meta["kind"] != "sealed":
                share = opener.open(str(path), data)
                plain.append(share)
                meta.setdefault("custodian", opener.custodian_of(share))
            metas.append((path, meta))
            rows.append({"file": str(path), "ok": True, "index": meta["index"],
                         "set_id": meta["set_id"], "opened": meta["kind"] != "sealed" or
                         opens_sealed})  # fmt: skip
            if not as_json:
                typer.echo(f"ok   {path}: share {meta['index']} of set {meta['set_id']}")
        except KeysplitError as exc:
            bad.append(str(path))
            rows.append({"file": str(path), "ok": False, "error": str(exc)})
            if not as_json:
                typer.echo(f"BAD  {exc}")
    problem = None
    try:
        verify_set(plain, custodian_of=opener.custodian_of)
        _verify_headers(metas)
    except KeysplitError as exc:
        problem = str(exc)
    if as_json:
        k = metas[0][1]["threshold"] if metas else None
        doc = {
            "ok": not bad and problem is None,
            "files": rows,
            "set_id": metas[0][1]["set_id"] if metas else None,
            "threshold": k,
            "consistent": len(metas) if problem is None else 0,
            "enough": problem is None and k is not None and len(metas) >= k,
            "error": problem,
        }
        typer.echo(json.dumps(doc))
    if problem is not None:
        fail(problem)
    if bad:
        fail(f"{len(bad)} bad share file(s): {', '.join(bad)}")
    if metas:
        k = metas[0][1]["threshold"]
        have = len(metas)
        more = "enough to recover" if have >= k else f"{k - have} more needed"
        note(f"{have} consistent share(s) of set {metas[0][1]['set_id']}, threshold {k}: {more}")


def _verify_headers(metas: list[tuple[Path, dict[str, Any]]]) -> None:
    """Consistency of metadata alone (sealed shares that were not opened)."""
    if not metas:
        return

    def named(path: Path, m: dict[str, Any]) -> str:
        who = m.get("custodian")
        return f"{path} (share {m['index']}" + (f", custodian {who})" if who else ")")

    ref_path, ref = metas[0]
    seen: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path, m in metas:
        for key in ("set_id", "threshold", "count"):
            if m[key] != ref[key]:
                raise MixedSharesError(
                    f"{named(path, m)} and {named(ref_path, ref)} disagree on the {key}: "
                    "shares come from different splits",
                    index=m["index"],
                )
        if m["index"] in seen:
            raise DuplicateShareError(
                f"{named(path, m)} and {named(*seen[m['index']])} are both share {m['index']}",
                index=m["index"],
            )
        seen[m["index"]] = (path, m)


def _open_share(path: Path, opener: ShareOpener) -> tuple[Share, str | None]:
    """The share in ``path`` and its custodian's name when the file records it."""
    share = opener.open(str(path), read_share_path(path))
    return share, opener.custodian_of(share)


@app.command("prove")
@handle_errors
def prove_cmd(
    file: Path = typer.Argument(..., help="Your (new) share file."),
    identity: list[Path] = typer.Option([], "--identity", "-i", metavar="FILE", help=IDENTITY_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=UNLOCK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a proof-of-possession code for your share, for a '--verify' ceremony.

    Opens the share (so it proves you can), then prints a short code bound to the share
    set and your index. The code reveals nothing about the share; give it to the
    ceremony operator.

    Example: keysplit share prove ana.g2.kss --identity ana.identity

    Exit codes: 0 code printed; 1 the share does not open (wrong identity or passphrase,
    damaged file); 2 usage.
    """
    from keysplit import proof as ks_proof

    share, who = _open_share(file, ShareOpener(identity, Passphrases.single(passphrase_file)))
    code = ks_proof.prove(share)
    if as_json:
        doc = {"custodian": who, "set_id": share.set_id_hex, "index": share.index, "code": code}
        typer.echo(json.dumps(doc))
        return
    info(
        f"proof of possession of share {share.index} of set {share.set_id_hex}"
        + (f" (custodian {who})" if who else "")
        + ": give this code to the ceremony operator"
    )
    typer.echo(code)


@app.command("print")
@handle_errors
def print_cmd(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="Share files; one page each."),
    out: Path = typer.Option(..., "--out", "-o", help="The PDF to write (0600, not replaced)."),
    identity: list[Path] = typer.Option([], "--identity", "-i", metavar="FILE", help=IDENTITY_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help=UNLOCK_HELP),
    custodian: str | None = typer.Option(
        None, "--custodian", help="Custodian name for a plain share file that does not say."
    ),
    keyring_id: str | None = typer.Option(
        None, "--keyring-id", help="Keyring id to print (see 'keysplit status')."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
) -> None:
    """Write printable share sheets: one PDF page per share, with text, QR code, instructions.

    A sheet holds its share file in the same protection: a sealed share is printed sealed
    (its KSSS- text; no identity needed) and says who opens it, a plain one in the clear.
    Keep it like the share file (a safe); shred it when the keyring is rekeyed. Needs the
    'sheets' extra (segno, fpdf2).
    Example: keysplit share print ana.g1.kss --out ana-sheet.pdf

    Exit codes: 0 written; 1 a share that does not open or names no custodian, the
    'sheets' extra missing, --out exists; 2 usage.
    """
    from keysplit import sheet as ks_sheet
    from keysplit.custody import is_sealed

    check_output_file(out, "--out", overwrite=force)
    opener = ShareOpener(identity, Passphrases.single(passphrase_file))
    sheets: list[ks_sheet.ShareSheet | ks_sheet.SealedSheet] = []
    for path in files:
        data = read_share_path(path)
        if is_sealed(data):
            try:
                sheets.append(ks_sheet.SealedSheet(data, keyring_id=keyring_id))
            except KeysplitError as exc:  # damaged, or too large for a QR code
                raise relabel(exc, str(path)) from None
            except ValueError as exc:
                fail(str(exc), code=EXIT_USAGE)
            continue
        share, who = _open_share(path, opener)
        name = who or custodian
        if name is None:
            fail(f"{path}: the file does not name its custodian", hint="give --custodian NAME")
        try:
            sheets.append(ks_sheet.ShareSheet(share, name, keyring_id=keyring_id))
        except ValueError as exc:
            fail(str(exc), code=EXIT_USAGE)
    ks_sheet.write_pdf(out, sheets, overwrite=force)
    info(f"wrote {len(sheets)} share sheet(s) to {out} (secret: store it offline)")
