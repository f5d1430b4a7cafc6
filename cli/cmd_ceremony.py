"""Key ceremonies: ``keysplit init|unseal|rekey|rotate|rewrap|retire|shred|hold|status``.

A thin shell over :mod:`keysplit.keyring`. Every command that needs the master key gathers
a quorum through :func:`._quorum.gather_quorum`; every change is recorded in the keyring's
MAC-protected audit log, naming the custodians who contributed (names and share
fingerprints, never share bytes). The master key is never printed.

Exit codes (all commands): 0 success, 1 expected failure (bad share, wrong passphrase,
too few shares, legal hold, ...), 2 usage error.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keysplit import (
    Keyring,
    KeysplitError,
    Recipient,
    Share,
    UnsealedKeyring,
    check_custodian_name,
    seal_share,
    seal_share_with_passphrase,
)
from keysplit._fileio import atomic_write

from . import _quorum
from ._common import EXIT_USAGE, err_console, fail, handle_errors, info
from ._progress import rewrap_with_progress
from ._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    Passphrases,
    QuorumSource,
    gather_quorum,
    prompt_passphrase,
    relabel,
    share_file_text,
)
from .app import app
from .cmd_jobs import SCHEDULER_OPTION, rewrap_on_dask

__all__: list[str] = []


CUSTODIAN_OPTION_HELP = (
    "NAME=PUBFILE seals NAME's share to their public key (from 'keysplit custodian keygen'); "
    "NAME alone seals it under a passphrase NAME types (repeatable, one per custodian)."
)


# -- custodians and their share files ---------------------------------------------------------


@dataclass(frozen=True)
class _Custody:
    """How one custodian's share is protected (public data plus maybe a passphrase)."""

    name: str
    recipient: Recipient | None
    passphrase: bytes | None

    @property
    def protection(self) -> str:
        if self.recipient is not None:
            return f"key {self.recipient.fingerprint}"
        return "passphrase" if self.passphrase is not None else "none (plain)"

    def __repr__(self) -> str:
        return f"_Custody({self.name!r}, {self.protection})"


def _is_custodian_name(name: str) -> bool:
    try:
        check_custodian_name(name)
    except ValueError:
        return False
    return True


def _parse_custodians(
    specs: list[str], passphrase_specs: list[str], plain: bool, option: str
) -> list[_Custody]:
    """Read public keys and passphrases before anything is created (a typo costs nothing)."""
    if not specs:
        fail("give the custodians with --custodian NAME[=PUBFILE]", code=EXIT_USAGE)
    passphrases = Passphrases(passphrase_specs, option=option)
    out: list[_Custody] = []
    for spec in specs:
        name, sep, pub = spec.partition("=")
        if not _is_custodian_name(name) or (sep and not pub):
            fail(
                f"--custodian expects NAME or NAME=PUBFILE, got {spec!r}",
                "names are 1-64 characters of A-Z a-z 0-9 . _ @ + -",
                code=EXIT_USAGE,
            )
        if pub:
            try:
                recipient = Recipient.from_bytes(Path(pub).read_bytes())
            except KeysplitError as exc:
                raise relabel(exc, pub) from None
            if recipient.name != name:
                fail(
                    f"{pub} is the public key of {recipient.name!r}, not {name!r}",
                    "check which file belongs to which custodian",
                )
            out.append(_Custody(name, recipient, None))
        elif plain:
            out.append(_Custody(name, None, None))
        else:
            pw = passphrases.get(name) or prompt_passphrase(f"custodian {name!r}", confirm=True)
            out.append(_Custody(name, None, pw))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        fail("each custodian may appear only once", code=EXIT_USAGE)
    if plain:
        info(
            "[yellow]warning:[/] --plain-shares writes shares unprotected: anyone who reads "
            "enough of these files has the master key (use only for demos and tests)"
        )
    return out


def _share_paths(shares_dir: Path, custody: list[_Custody], generation: int) -> dict[str, Path]:
    """The share file names, checked free (and their directory made) before any key exists."""
    shares_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = {}
    for c in custody:
        ext = "kss" if (c.recipient or c.passphrase) else "txt"
        paths[c.name] = shares_dir / f"{c.name}.g{generation}.{ext}"
    for p in paths.values():
        if p.exists():
            fail(f"refusing to overwrite existing share file: {p}", "choose another --shares-dir")
    return paths


def _write_shares(
    shares: dict[str, Share], custody: list[_Custody], paths: dict[str, Path]
) -> list[dict[str, Any]]:
    """Seal each share for its custodian and write it atomically (0600); the summary rows."""
    rows = []
    for c in custody:
        share = shares[c.name]
        if c.recipient is not None:
            data = seal_share(share, c.recipient)
        elif c.passphrase is not None:
            data = seal_share_with_passphrase(share, c.name, c.passphrase, kdf=_quorum.KDF)
        else:
            data = share_file_text(share, c.name).encode()
        path = paths[c.name]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, data, overwrite=False)
        rows.append(
            {
                "custodian": c.name,
                "index": share.index,
                "file": str(path),
                "share": share.fingerprint,
                "protection": c.protection,
            }
        )
    return rows


def _print_share_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=escape(title))
    for col in ("custodian", "share file", "share fingerprint", "protection"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(escape(str(r[k])) for k in ("custodian", "file", "share", "protection")))
    err_console.print(table)


def _default_shares_dir(directory: Path) -> Path:
    d = directory if directory.name else directory.resolve()
    return d.parent / f"{d.name}-shares"


def _source(shares: list[Path], identity: list[Path], passphrase_file: list[str]) -> QuorumSource:
    return QuorumSource(list(shares), list(identity), list(passphrase_file))


def _open(directory: Path) -> Keyring:
    return Keyring.open(directory)


def _unseal(kr: Keyring, src: QuorumSource) -> tuple[UnsealedKeyring, list[dict[str, Any]]]:
    ukr, contributors = gather_quorum(kr, src)
    return ukr, [c.as_dict() for c in contributors]


def _names(contributors: list[dict[str, Any]]) -> str:
    return ", ".join(str(c["custodian"]) for c in contributors)


SHARES_DIR_HELP = "Where to write the share files (default: DIR-shares beside DIR)."
JSON_HELP = "Print a machine-readable result on stdout."


# -- init -------------------------------------------------------------------------------------


@app.command("init")
@handle_errors
def init_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="New keyring directory (created)."),
    threshold: int = typer.Option(..., "--threshold", "-k", help="Custodians needed to unseal."),
    custodian: list[str] = typer.Option(
        [], "--custodian", "-c", metavar="NAME[=PUBFILE]", help=CUSTODIAN_OPTION_HELP
    ),
    passphrase_file: list[str] = typer.Option(
        [],
        "--passphrase-file",
        metavar="[NAME=]FILE",
        help="NAME=FILE: passphrase for custodian NAME's share; FILE alone: for all "
        "(automation; default: a hidden prompt with confirmation).",
    ),
    shares_dir: Path | None = typer.Option(None, "--shares-dir", help=SHARES_DIR_HELP),
    plain_shares: bool = typer.Option(
        False,
        "--plain-shares",
        help="Custodians without a key get unprotected share files (demos and tests only).",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create a keyring: a fresh master key split K-of-N among the custodians.

    Writes one share file per custodian (mode 0600) and an 'init' audit entry.

    The master key is never written or printed: keep K share files safe.

    Exit codes: 0 created; 1 failure (bad public key, existing keyring or share file); 2 usage.
    """
    custody = _parse_custodians(custodian, passphrase_file, plain_shares, "--passphrase-file")
    if not 2 <= threshold <= len(custody):
        fail(f"--threshold must be between 2 and {len(custody)} (the custodians)", code=EXIT_USAGE)
    out_dir = shares_dir or _default_shares_dir(directory)
    paths = _share_paths(out_dir, custody, 1)
    kr, shares = Keyring.create(directory, threshold, [c.name for c in custody])
    try:
        rows = _write_shares(shares, custody, paths)
    except (OSError, KeysplitError) as exc:
        # Without all its shares the new keyring can never be unsealed: say so plainly.
        for p in paths.values():
            with contextlib.suppress(OSError):
                p.unlink()
        fail(
            f"could not write the share files ({exc}); the keyring at {directory} was created "
            "but can never be unsealed",
            f"remove {directory} and run init again",
        )
    with kr.unseal(list(shares.values())[:threshold]) as ukr:
        entry = ukr.audit_log().append(
            "init",
            keyring_id=kr.keyring_id,
            generation=kr.meta.generation,
            threshold=threshold,
            custodians=[
                {k: r[k] for k in ("custodian", "index", "share", "protection")} for r in rows
            ],
        )
    shares.clear()
    _print_share_table(f"keyring {kr.keyring_id}: {threshold} of {len(custody)}", rows)
    info(f"audit log head: {entry.hash}")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "keyring_id": kr.keyring_id,
                    "threshold": threshold,
                    "shares": rows,
                    "audit_head": entry.hash,
                }
            )
        )
    else:
        typer.echo(kr.keyring_id)


# -- unseal / status --------------------------------------------------------------------------


@app.command("unseal")
@handle_errors
def unseal_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check that a quorum of custodians can unseal the keyring (an unseal drill).

    Verifies every share and the recovered master key and reports the keyring id.

    Records an 'unseal-check' audit entry naming the contributing custodians.

    Exit codes: 0 verified; 1 bad, foreign or too few shares, wrong secret; 2 usage.
    """
    kr = _open(directory)
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        entry = ukr.audit_log().append(
            "unseal-check", generation=kr.meta.generation, custodians=contributors
        )
    info(f"[green]quorum verified[/]: {_names(contributors)} unsealed keyring {kr.keyring_id}")
    doc = {
        "keyring_id": kr.keyring_id,
        "generation": kr.meta.generation,
        "set_id": kr.meta.set_id,
        "public_key": kr.meta.public_key,
        "custodians": contributors,
        "audit_head": entry.hash,
    }
    typer.echo(json.dumps(doc) if as_json else kr.keyring_id)


@app.command("status")
@handle_errors
def status_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show versions, custodians and key counts (public data only; needs no quorum).

    Exit codes: 0 shown (even if the audit chain is broken: see its line); 1 no keyring; 2 usage.
    """
    kr = _open(directory)
    doc = kr.status().as_dict()
    log = kr.audit_log()
    try:
        report = log.verify()
        doc["audit"] = {"entries": report.entries, "head": report.head, "chain_ok": True}
    except KeysplitError as exc:
        doc["audit"] = {"chain_ok": False, "error": str(exc)}
    if as_json:
        typer.echo(json.dumps(doc))
        return
    table = Table(title=f"keyring {doc['keyring_id']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    custodians = ", ".join(f"{c['name']} (#{c['index']})" for c in doc["custodians"])
    versions = ", ".join(f"v{k}: {v}" for k, v in doc["keys_by_version"].items()) or "none"
    audit = doc["audit"]
    for field_, value in (
        ("path", doc["path"]),
        ("generation", str(doc["generation"])),
        ("quorum", f"{doc['threshold']} of {len(doc['custodians'])}"),
        ("custodians", custodians),
        ("share set", doc["set_id"]),
        ("public key", doc["public_key"]),
        ("current KEK", f"v{doc['current_kek']}"),
        ("KEK versions", ", ".join(f"v{v}" for v in doc["kek_versions"])),
        ("data keys", f"{doc['data_keys']} ({versions})"),
        ("legal holds", str(doc["legal_holds"])),
        ("pending rekey", "yes" if doc["pending_rekey"] else "no"),
        (
            "audit log",
            f"{audit['entries']} entries, head {audit['head']}"
            if audit["chain_ok"]
            else f"BROKEN: {audit['error']}",
        ),
    ):
        table.add_row(field_, escape(value))
    Console(highlight=False, width=max(Console().width, 100)).print(table)


# -- rekey ------------------------------------------------------------------------------------


@app.command("rekey")
@handle_errors
def rekey_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    custodian: list[str] = typer.Option(
        [],
        "--custodian",
        "-c",
        metavar="NAME[=PUBFILE]",
        help="The NEW custodian list: " + CUSTODIAN_OPTION_HELP,
    ),
    threshold: int | None = typer.Option(
        None, "--threshold", "-k", help="New threshold (default: the current one)."
    ),
    new_passphrase_file: list[str] = typer.Option(
        [],
        "--new-passphrase-file",
        metavar="NAME=FILE",
        help="NAME=FILE: passphrase for NAME's NEW share.",
    ),
    shares_dir: Path | None = typer.Option(None, "--shares-dir", help=SHARES_DIR_HELP),
    plain_shares: bool = typer.Option(
        False, "--plain-shares", help="Unprotected new share files (demos and tests only)."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    abort: bool = typer.Option(
        False,
        "--abort",
        help="Discard an unfinished rekey (left by a crash) with a quorum of the CURRENT "
        "shares; its new shares become useless.",
    ),
) -> None:
    """New master key and new shares for the given custodians; every old share dies.

    Needs a quorum of the current shares. With --abort: discard an unfinished rekey instead.

    The new share files are written before the switch: on failure the old shares still work.

    Data keys and data are untouched.

    Exit codes: 0 rekeyed; 1 bad quorum or write failure (old shares still work); 2 usage.
    """
    kr = _open(directory)
    if abort:
        _abort_rekey(kr, _source(share, identity, passphrase_file))
        return
    custody = _parse_custodians(
        custodian, new_passphrase_file, plain_shares, "--new-passphrase-file"
    )
    k = threshold if threshold is not None else min(kr.meta.threshold, len(custody))
    if not 2 <= k <= len(custody):
        fail(f"--threshold must be between 2 and {len(custody)} (the custodians)", code=EXIT_USAGE)
    out_dir = shares_dir or _default_shares_dir(directory)
    paths = _share_paths(out_dir, custody, kr.meta.generation + 1)
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        old = kr.meta
        shares = ukr.prepare_rekey(threshold=k, custodians=[c.name for c in custody])
        try:
            rows = _write_shares(shares, custody, paths)
        except BaseException:
            ukr.abort_rekey()
            for p in paths.values():
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
        ukr.commit_rekey()
        shares.clear()
        entry = ukr.audit_log().append(
            "rekey",
            generation=kr.meta.generation,
            old_threshold=old.threshold,
            old_custodians=[c.name for c in old.custodians],
            threshold=k,
            custodians=[
                {x: r[x] for x in ("custodian", "index", "share", "protection")} for r in rows
            ],
            authorized_by=contributors,
        )
    _print_share_table(f"keyring {kr.keyring_id} rekeyed: {k} of {len(custody)}", rows)
    info("old shares no longer unseal this keyring")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "keyring_id": kr.keyring_id,
                    "generation": kr.meta.generation,
                    "threshold": k,
                    "shares": rows,
                    "audit_head": entry.hash,
                }
            )
        )
    else:
        typer.echo(kr.keyring_id)


def _abort_rekey(kr: Keyring, source: QuorumSource) -> None:
    if kr.status().pending_rekey is False:
        fail("no rekey is pending for this keyring")
    ukr, contributors = _unseal(kr, source)
    with ukr:
        existed = ukr.abort_rekey()
        if existed:
            ukr.audit_log().append(
                "rekey-abort", generation=kr.meta.generation, authorized_by=contributors
            )
    info(
        "pending rekey discarded; the current shares stay valid" if existed else "nothing to abort"
    )


# -- rotate / rewrap / retire -----------------------------------------------------------------


@app.command("rotate")
@handle_errors
def rotate_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
) -> None:
    """Create a new KEK version; new data keys use it (then run rewrap). Prints the version.

    Exit codes: 0 rotated; 1 bad quorum; 2 usage.
    """
    kr = _open(directory)
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        version = ukr.rotate()
        ukr.audit_log().append("rotate", kek_version=version, authorized_by=contributors)
    info(f"new KEK version v{version}; run 'keysplit rewrap' to move existing data keys to it")
    typer.echo(version)


@app.command("rewrap")
@handle_errors
def rewrap_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    batch_size: int = typer.Option(10_000, "--batch-size", min=1, help="Keys per transaction."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    dask: bool = typer.Option(False, "--dask", help="Run as a Dask job (keysplit[dask])."),
    scheduler: str | None = SCHEDULER_OPTION,
) -> None:
    """Re-wrap every data key under the current KEK (records untouched; resumable).

    Each batch commits on its own: if interrupted, run it again to continue.

    Exit codes: 0 done; 1 bad quorum or a stored key failed authentication; 2 usage.
    """
    kr = _open(directory)
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        if dask:
            result = rewrap_on_dask(ukr, scheduler, batch_size)
        else:
            result = rewrap_with_progress(ukr, batch_size)
        entry = ukr.audit_log().append(
            "rewrap",
            kek_version=result.kek_version,
            rewrapped=result.rewrapped,
            remaining=result.remaining,
            authorized_by=contributors,
        )
    info(f"rewrapped {result.rewrapped} data keys to KEK v{result.kek_version}")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "rewrapped": result.rewrapped,
                    "kek_version": result.kek_version,
                    "remaining": result.remaining,
                    "audit_head": entry.hash,
                }
            )
        )
    else:
        typer.echo(result.rewrapped)


@app.command("retire")
@handle_errors
def retire_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    version: int = typer.Argument(..., help="KEK version to delete (no data key may use it)."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
) -> None:
    """Delete an old KEK version (after rewrap): old backups of the key store become useless.

    Exit codes: 0 retired; 1 bad quorum, version current, unknown or still in use; 2 usage.
    """
    kr = _open(directory)
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        ukr.retire(version)
        ukr.audit_log().append("retire", kek_version=version, authorized_by=contributors)
    info(f"KEK v{version} retired")


# -- shred / hold -----------------------------------------------------------------------------


@app.command("shred")
@handle_errors
def shred_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    subject: str = typer.Argument(..., help="The subject (user id) whose data key to destroy."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
) -> None:
    """Destroy SUBJECT's data key: their records can never be decrypted again.

    Refused (exit 1) while the subject is under legal hold.

    Exit codes: 0 shredded; 1 not confirmed, legal hold or bad quorum; 2 usage.
    """
    kr = _open(directory)
    if not yes and not typer.confirm(
        f"Destroy the data key of {subject!r}? Their records become unrecoverable",
        err=True,
    ):
        fail("not confirmed: nothing was shredded")
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        existed = ukr.shred(subject)
        ukr.audit_log().append(
            "shred", subject=subject, existed=existed, authorized_by=contributors
        )
    if existed:
        info(f"shredded the data key of {subject!r}")
    else:
        info(f"{subject!r} had no data key (nothing to shred; recorded anyway)")


@app.command("hold")
@handle_errors
def hold_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    subject: str = typer.Argument(..., help="The subject (user id)."),
    on: bool = typer.Option(..., "--on/--off", help="Place or lift the legal hold."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
) -> None:
    """Place (--on) or lift (--off) a legal hold: a held subject cannot be shredded.

    Exit codes: 0 done; 1 bad quorum; 2 usage.
    """
    kr = _open(directory)
    ukr, contributors = _unseal(kr, _source(share, identity, passphrase_file))
    with ukr:
        ukr.set_legal_hold(subject, on)
        ukr.audit_log().append("legal-hold", subject=subject, hold=on, authorized_by=contributors)
    info(f"legal hold on {subject!r}: {'on' if on else 'off'}")
