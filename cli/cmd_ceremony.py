"""Key ceremonies: ``keysplit init|unseal|rekey|rotate|rewrap|retire|shred|hold|status``.

Prompts and prints only: each command is one call into :mod:`keysplit.ceremony`, which
runs the ceremony and records it in the keyring's MAC-protected audit log (names and share
fingerprints of the quorum, never share bytes). The quorum is fed by :func:`._quorum.quorum`
(share files or prompts). The master key is never printed.

Exit codes (all commands): 0 success, 1 expected failure (bad share, wrong passphrase,
too few shares, legal hold, ...), 2 usage error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keysplit import Keyring, KeysplitError, Recipient, ceremony, trust
from keysplit.ceremony import Contributor, Custody, DirectorySink, ShareFileExists, WrittenShare
from keysplit.custody import check_custodian_name
from keysplit.store import check_store_url
from keysplit.trust import KnownKeyrings

from . import _common
from ._common import EXIT_USAGE, err_console, fail, handle_errors, info, relabel
from ._opener import Passphrases, prompt_passphrase
from ._progress import progress_bar
from ._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    STORE_OPTION,
    QuorumSource,
    open_keyring,
    quorum,
)
from ._specs import parse_name_file
from .cmd_jobs import SCHEDULER_OPTION, dask_rewrap

__all__ = ["app"]

app = typer.Typer()

CUSTODIAN_OPTION_HELP = (
    "NAME=PUBFILE seals NAME's share to their public key (from 'keysplit custodian keygen'); "
    "NAME alone seals it under a passphrase NAME types (repeatable, one per custodian)."
)


# -- custodians and their share files ---------------------------------------------------------


def _is_custodian_name(name: str) -> bool:
    try:
        check_custodian_name(name)
    except ValueError:
        return False
    return True


def _parse_custodians(
    specs: list[str], passphrase_specs: list[str], plain: bool, option: str
) -> list[Custody]:
    """Read public keys and passphrases before anything is created (a typo costs nothing)."""
    if not specs:
        fail("give the custodians with --custodian NAME[=PUBFILE]", code=EXIT_USAGE)
    passphrases = Passphrases(passphrase_specs, option=option)
    out: list[Custody] = []
    for spec in specs:
        parsed = parse_name_file(spec)
        if parsed is None or not _is_custodian_name(parsed[0]):
            fail(
                f"--custodian expects NAME or NAME=PUBFILE, got {spec!r}",
                "names are 1-64 characters of A-Z a-z 0-9 . _ @ + -",
                code=EXIT_USAGE,
            )
        name, pub = parsed
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
            out.append(Custody(name, recipient=recipient))
        elif plain:
            out.append(Custody(name))
        else:
            pw = passphrases.get(name) or prompt_passphrase(f"custodian {name!r}", confirm=True)
            out.append(Custody(name, passphrase=pw))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        fail("each custodian may appear only once", code=EXIT_USAGE)
    if plain:
        info(
            "[yellow]warning:[/] --plain-shares writes shares unprotected: anyone who reads "
            "enough of these files has the master key (use only for demos and tests)"
        )
    return out


def _sink(shares_dir: Path | None, directory: Path) -> DirectorySink:
    if shares_dir is None:
        d = directory if directory.name else directory.resolve()
        shares_dir = d.parent / f"{d.name}-shares"
    return DirectorySink(shares_dir)


def _check_threshold(k: int, custody: list[Custody]) -> None:
    if not 2 <= k <= len(custody):
        fail(f"--threshold must be between 2 and {len(custody)} (the custodians)", code=EXIT_USAGE)


def _print_share_table(title: str, shares: Sequence[WrittenShare]) -> None:
    table = Table(title=escape(title))
    for col in ("custodian", "share file", "share fingerprint", "protection"):
        table.add_column(col, overflow="fold")
    for w in shares:
        table.add_row(
            *(escape(str(v)) for v in (w.custodian, w.location, w.fingerprint, w.protection))
        )
    err_console.print(table)


def _source(shares: list[Path], identity: list[Path], passphrase_file: list[str]) -> QuorumSource:
    return QuorumSource(list(shares), list(identity), list(passphrase_file))


def _names(contributors: Sequence[Contributor]) -> str:
    return ", ".join(c.custodian for c in contributors)


SHARES_DIR_HELP = "Where to write the share files (default: DIR-shares beside DIR)."
VERIFY_HELP = (
    "Every custodian must prove possession of their new share ('keysplit share prove FILE', "
    "recorded with 'keysplit rekey DIR --prove NAME') before it is relied on."
)
SHEETS_HELP = (
    "Also write one printable PDF share sheet per custodian into DIR (as secret as the shares)."
)


def _verify_note(directory: Path, until: str) -> None:
    info(
        f"[yellow]pending verification:[/] {until} until every custodian has proven "
        f"possession: each runs 'keysplit share prove FILE' and the code is recorded with "
        f"'keysplit rekey {directory} --prove NAME'; see 'keysplit rekey {directory} "
        "--verify-status'"
    )


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
    verify: bool = typer.Option(False, "--verify", help=VERIFY_HELP),
    sheets: Path | None = typer.Option(None, "--sheets", metavar="DIR", help=SHEETS_HELP),
    store: str | None = typer.Option(
        None,
        "--store",
        metavar="URL",
        help="Key store URL recorded in the keyring (default: sqlite:keys.sqlite inside DIR; "
        "postgresql://... without a password: libpq's PGPASSFILE/.pgpass).",
    ),
) -> None:
    """Create a keyring: a fresh master key split K-of-N among the custodians.

    Writes one share file per custodian (mode 0600) and an 'init' audit entry.

    Prints the keyring fingerprint (ksk1...) and pins it in the known-keyrings file
    ($KEYSPLIT_KNOWN_KEYRINGS or ~/.config/keysplit/known_keyrings): encrypt checks it.

    The master key is never written or printed: keep K share files safe.

    Exit codes: 0 created; 1 failure (bad public key, existing keyring or share file); 2 usage.
    """
    url = check_store_url(store) if store is not None else None
    custody = _parse_custodians(custodian, passphrase_file, plain_shares, "--passphrase-file")
    _check_threshold(threshold, custody)
    try:
        done = ceremony.init(
            directory,
            threshold,
            custody,
            _sink(shares_dir, directory),
            kdf=_common.KDF,
            pin=KnownKeyrings(),
            store_url=url,
            verify=verify,
            sheets=None if sheets is None else ceremony.SheetWriter(sheets),
        )
    except ShareFileExists as exc:
        fail(str(exc), "choose another --shares-dir")
    kr = done.keyring
    _print_share_table(f"keyring {kr.keyring_id}: {threshold} of {len(custody)}", done.shares)
    if sheets is not None:
        info(f"share sheets (as secret as the shares): {sheets}/NAME.g1.pdf")
    info(f"audit log head: {done.entry.hash}")
    if verify:
        _verify_note(directory, "the keyring serves no ceremony and no encrypt")
    info(f"keyring fingerprint: {kr.fingerprint}")
    if done.pinned is not None:
        info(
            f"pinned in {KnownKeyrings().path}; on other machines: "
            f"keysplit keyring pin DIR --expect {kr.fingerprint}"
        )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "keyring_id": kr.keyring_id,
                    "fingerprint": kr.fingerprint,
                    "store_url": kr.store_url,
                    "threshold": threshold,
                    "shares": [w.as_dict() for w in done.shares],
                    "audit_head": done.entry.hash,
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
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    server: str | None = typer.Option(
        None, "--server", metavar="URL", help="Unseal a running key service (unix:PATH, https://)."
    ),
    reset: bool = typer.Option(False, "--reset", help="With --server: discard unseal progress."),
) -> None:
    """Check that a quorum of custodians can unseal the keyring (an unseal drill).

    With --server, send this custodian's share (sealed to the service) to 'keysplit serve'.

    Verifies every share and the recovered master key and reports the keyring id.

    Records an 'unseal-check' audit entry naming the contributing custodians.

    Exit codes: 0 verified; 1 bad, foreign or too few shares, wrong secret; 2 usage.
    """
    if server is not None:
        from .cmd_service import remote_unseal

        src = _source(share, identity, passphrase_file)
        return remote_unseal(directory, server, src, as_json=as_json, reset=reset)
    if reset:
        fail("--reset needs --server", code=EXIT_USAGE)
    kr = open_keyring(directory, store)
    done = ceremony.unseal_check(kr, quorum(kr, _source(share, identity, passphrase_file)))
    info(f"[green]quorum verified[/]: {_names(done.contributors)} unsealed keyring {kr.keyring_id}")
    assert done.entry is not None
    doc = {
        "keyring_id": kr.keyring_id,
        "generation": kr.meta.generation,
        "set_id": kr.meta.set_id,
        "public_key": kr.meta.public_key,
        "custodians": [c.as_dict() for c in done.contributors],
        "audit_head": done.entry.hash,
    }
    typer.echo(json.dumps(doc) if as_json else kr.keyring_id)


@app.command("status")
@handle_errors
def status_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    store: str | None = STORE_OPTION,
) -> None:
    """Show versions, custodians and key counts (public data only; needs no quorum).

    Exit codes: 0 shown (even if the audit chain is broken: see its line); 1 no keyring; 2 usage.
    """
    kr = open_keyring(directory, store)
    doc = kr.status().as_dict()
    doc["trust"] = trust.trust_state(kr).as_dict()
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
    tr = doc["trust"]
    pin = (
        "not pinned: encrypt refuses without --expect (keysplit keyring pin)"
        if not tr["pinned"]
        else "pinned, matches"
        if tr["pin_matches"]
        else "PINNED TO ANOTHER KEY: the public key was replaced; do not encrypt to it"
    )
    for field_, value in (
        ("path", doc["path"]),
        ("generation", str(doc["generation"])),
        ("quorum", f"{doc['threshold']} of {len(doc['custodians'])}"),
        ("custodians", custodians),
        ("share set", doc["set_id"]),
        ("public key", doc["public_key"]),
        ("fingerprint", tr["fingerprint"]),
        ("trust", f"{pin} ({tr['known_keyrings']})"),
        ("store", doc["store_url"]),
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
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    abort: bool = typer.Option(
        False,
        "--abort",
        help="Discard an unfinished rekey (left by a crash) with a quorum of the CURRENT "
        "shares; its new shares become useless.",
    ),
    verify: bool = typer.Option(
        False, "--verify", help=VERIFY_HELP + " The switch waits; the old shares keep working."
    ),
    sheets: Path | None = typer.Option(None, "--sheets", metavar="DIR", help=SHEETS_HELP),
    prove: str | None = typer.Option(
        None,
        "--prove",
        metavar="NAME",
        help="Record custodian NAME's proof code (from 'keysplit share prove'); no quorum.",
    ),
    code_file: Path | None = typer.Option(
        None, "--code-file", help="With --prove: read the code from FILE (default: a prompt)."
    ),
    verify_status: bool = typer.Option(
        False, "--verify-status", help="Show who has proven possession of the pending shares."
    ),
    complete: bool = typer.Option(
        False,
        "--complete",
        help="Switch to the verified generation with a quorum of its NEW shares (of the "
        "current ones after 'init --verify'); custodians who have not proven must be "
        "named with --missing.",
    ),
    missing: list[str] = typer.Option(
        [], "--missing", metavar="NAME", help="With --complete: a custodian who has not proven."
    ),
) -> None:
    """New master key and new shares for the given custodians; every old share dies.

    Needs a quorum of the current shares. With --abort: discard an unfinished rekey instead.

    The new share files are written before the switch: on failure the old shares still work.

    Data keys and data are untouched.

    Exit codes: 0 rekeyed; 1 bad quorum or write failure (old shares still work); 2 usage.
    """
    kr = open_keyring(directory, store)
    if abort:
        _abort_rekey(kr, _source(share, identity, passphrase_file))
        return
    if verify_status:
        _show_verify_status(kr, as_json)
        return
    if prove is not None:
        _record_proof(kr, prove, code_file, as_json)
        return
    if missing and not complete:
        fail("--missing goes with --complete", code=EXIT_USAGE)
    if complete:
        src = _source(share, identity, passphrase_file)
        drill = ceremony.unseal_check(kr, quorum(kr, src, complete_missing=missing))
        info(
            f"verification complete ({_names(drill.contributors)}); keyring {kr.keyring_id} "
            f"is at generation {kr.meta.generation}"
        )
        typer.echo(kr.keyring_id)
        return
    custody = _parse_custodians(
        custodian, new_passphrase_file, plain_shares, "--new-passphrase-file"
    )
    k = threshold if threshold is not None else min(kr.meta.threshold, len(custody))
    _check_threshold(k, custody)
    try:
        done = ceremony.rekey(
            kr,
            quorum(kr, _source(share, identity, passphrase_file)),
            custody,
            _sink(shares_dir, directory),
            threshold=k,
            kdf=_common.KDF,
            verify=verify,
            sheets=None if sheets is None else ceremony.SheetWriter(sheets),
        )
    except ShareFileExists as exc:
        fail(str(exc), "choose another --shares-dir")
    _print_share_table(f"keyring {kr.keyring_id} rekeyed: {k} of {len(custody)}", done.shares)
    if sheets is not None:
        info(f"share sheets (as secret as the shares): {sheets}/NAME.g{done.generation}.pdf")
    if done.pending:
        _verify_note(directory, "the switch waits (the old shares still work)")
    else:
        info("old shares no longer unseal this keyring")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "keyring_id": kr.keyring_id,
                    "generation": done.generation,
                    "pending_verification": done.pending,
                    "threshold": k,
                    "shares": [w.as_dict() for w in done.shares],
                    "audit_head": done.entry.hash,
                }
            )
        )
    else:
        typer.echo(kr.keyring_id)


def _show_verify_status(kr: Keyring, as_json: bool) -> None:
    v = ceremony.pending_verification(kr)
    if v is None:
        if as_json:
            typer.echo(json.dumps({"pending": False}))
            return
        fail("no share generation of this keyring awaits proofs of possession")
    st = v.status
    if as_json:
        typer.echo(
            json.dumps(
                {"pending": True, "kind": v.kind, "generation": v.generation, **st.to_json()}
            )
        )
        return
    table = Table(title=escape(f"keyring {kr.keyring_id}: {v.kind} generation {v.generation}"))
    for col in ("custodian", "proof", "wrong codes"):
        table.add_column(col)
    for name in v.state.custodians:
        table.add_row(
            escape(name),
            "proven" if name in st.proven else "MISSING",
            str(st.failures.get(name, 0)),
        )
    err_console.print(table)
    if st.completed:
        info("every custodian has proven (or was named missing): ready to switch")
    typer.echo(f"{len(st.proven)}/{len(st.proven) + len(st.missing)} proven")


def _record_proof(kr: Keyring, name: str, code_file: Path | None, as_json: bool) -> None:
    if code_file is not None:
        code = code_file.read_text().strip()
    else:
        code = str(typer.prompt(f"Proof code of {name} (xxxx-xxxx)", err=True)).strip()
    st = ceremony.prove(kr, name, code)
    info(f"[green]proof recorded[/] for {escape(name)}; missing: {', '.join(st.missing) or 'none'}")
    if st.completed:
        info(
            "every custodian has proven: the next ceremony with a quorum (of the NEW shares "
            "after a rekey) switches and records it, e.g. 'keysplit rekey DIR --complete'"
        )
    typer.echo(json.dumps(st.to_json()) if as_json else f"{len(st.proven)}/{st.count} proven")


def _abort_rekey(kr: Keyring, source: QuorumSource) -> None:
    existed = ceremony.abort_rekey(kr, quorum(kr, source)).value
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
    store: str | None = STORE_OPTION,
) -> None:
    """Create a new KEK version; new data keys use it (then run rewrap). Prints the version.

    Exit codes: 0 rotated; 1 bad quorum; 2 usage.
    """
    kr = open_keyring(directory, store)
    version = ceremony.rotate(kr, quorum(kr, _source(share, identity, passphrase_file))).value
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
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    dask: bool = typer.Option(False, "--dask", help="Run as a Dask job (keysplit[dask])."),
    scheduler: str | None = SCHEDULER_OPTION,
) -> None:
    """Re-wrap every data key under the current KEK (records untouched; resumable).

    Each batch commits on its own: if interrupted, run it again to continue.

    Exit codes: 0 done; 1 bad quorum or a stored key failed authentication; 2 usage.
    """
    kr = open_keyring(directory, store)
    with progress_bar("rewrapping data keys") as bar:
        done = ceremony.rewrap(
            kr,
            quorum(kr, _source(share, identity, passphrase_file)),
            batch_size=batch_size,
            progress=bar,
            runner=dask_rewrap(scheduler) if dask else None,
        )
        bar.finish(done.value.rewrapped)
    result, entry = done.value, done.entry
    assert entry is not None
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
    store: str | None = STORE_OPTION,
) -> None:
    """Delete an old KEK version (after rewrap): old backups of the key store become useless.

    Exit codes: 0 retired; 1 bad quorum, version current, unknown or still in use; 2 usage.
    """
    kr = open_keyring(directory, store)
    ceremony.retire(kr, quorum(kr, _source(share, identity, passphrase_file)), version)
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
    store: str | None = STORE_OPTION,
) -> None:
    """Destroy SUBJECT's data key: their records can never be decrypted again.

    Refused (exit 1) while the subject is under legal hold.

    Exit codes: 0 shredded; 1 not confirmed, legal hold or bad quorum; 2 usage.
    """
    kr = open_keyring(directory, store)
    if not yes and not typer.confirm(
        f"Destroy the data key of {subject!r}? Their records become unrecoverable",
        err=True,
    ):
        fail("not confirmed: nothing was shredded")
    src = _source(share, identity, passphrase_file)
    existed = ceremony.shred(kr, quorum(kr, src), subject).value
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
    store: str | None = STORE_OPTION,
) -> None:
    """Place (--on) or lift (--off) a legal hold: a held subject cannot be shredded.

    Exit codes: 0 done; 1 bad quorum; 2 usage.
    """
    kr = open_keyring(directory, store)
    ceremony.hold(kr, quorum(kr, _source(share, identity, passphrase_file)), subject, on)
    info(f"legal hold on {subject!r}: {'on' if on else 'off'}")
