"""The keys behind the records: ``keysplit rotate|rewrap|retire`` (KEK versions) and
``keysplit shred|hold`` (one subject's data key). Each needs a quorum and is one
:mod:`keysplit.ceremony` call, recorded in the audit log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keysplit.store.base import MAX_BATCH

from .._common import EXIT_USAGE, check_subject_arg, fail, handle_errors, info
from .._dask import JOB_TIMEOUT_OPTION, SCHEDULER_OPTION, WORKERS_OPTION, dask_rewrap, job_timeout
from .._output import JSON_HELP, emit
from .._progress import progress_bar
from .._quorum import (
    IDENTITY_OPTION,
    PASSPHRASE_OPTION,
    SHARE_OPTION,
    STORE_OPTION,
    QuorumSource,
    open_keyring,
    quorum,
)
from .._shred import confirm_shred, report_shred

if TYPE_CHECKING:
    from keysplit import ceremony
    from keysplit.store.base import Lease

__all__ = ["app"]

app = typer.Typer()


def _head(done: ceremony.Done[Any]) -> str | None:
    """The hash of the audit entry a ceremony recorded (the new head of the log)."""
    return None if done.entry is None else done.entry.hash


@app.command("rotate")
@handle_errors
def rotate_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create a new KEK version; new data keys use it (then run rewrap). Prints the version.

    Example: keysplit rotate vault -s ana.g1.kss -s ben.g1.kss -i ana.identity -i ben.identity

    Exit codes: 0 rotated; 1 bad quorum; 2 usage.
    """
    from keysplit import ceremony

    kr = open_keyring(directory, store)
    done = ceremony.rotate(kr, quorum(kr, QuorumSource(share, identity, passphrase_file)))
    version = done.value
    info(f"new KEK version v{version}; run 'keysplit rewrap' to move existing data keys to it")
    doc = {"keyring_id": kr.keyring_id, "kek_version": version, "audit_head": _head(done)}
    emit(doc, as_json, version)


@app.command("rewrap")
@handle_errors
def rewrap_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    batch_size: int = typer.Option(
        10_000, "--batch-size", min=1, max=MAX_BATCH, help="Keys per transaction."
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    dask: bool = typer.Option(False, "--dask", help="Run as a Dask job (keysplit[dask])."),
    scheduler: str | None = SCHEDULER_OPTION,
    workers: int | None = WORKERS_OPTION,
    timeout: float | None = JOB_TIMEOUT_OPTION,
) -> None:
    """Re-wrap every data key under the current KEK (records untouched; resumable).

    Each batch commits on its own: if interrupted, run it again to continue.

    Example: keysplit rewrap vault --batch-size 50000 -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 done; 1 bad quorum or a stored key failed authentication; 2 usage.
    """
    from keysplit import ceremony

    if timeout is not None and not dask:
        fail("--timeout bounds a Dask job: give it with --dask", code=EXIT_USAGE)
    if workers is not None and not dask:
        fail("--workers sizes a Dask job: give it with --dask", code=EXIT_USAGE)
    limit = job_timeout(timeout)
    kr = open_keyring(directory, store)
    with progress_bar("rewrapping data keys") as bar:
        done = ceremony.rewrap(
            kr,
            quorum(kr, QuorumSource(share, identity, passphrase_file)),
            batch_size=batch_size,
            progress=bar,
            runner=dask_rewrap(scheduler, limit, workers) if dask else None,
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
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Delete an old KEK version (after rewrap): old backups of the key store become useless.

    Example: keysplit retire vault 1 -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 retired; 1 bad quorum, version current, unknown or still in use; 2 usage.
    """
    from keysplit import ceremony

    kr = open_keyring(directory, store)
    done = ceremony.retire(kr, quorum(kr, QuorumSource(share, identity, passphrase_file)), version)
    info(f"KEK v{version} retired")
    if as_json:
        doc = {"keyring_id": kr.keyring_id, "retired": version, "audit_head": _head(done)}
        emit(doc, True, "")


@app.command("shred")
@handle_errors
def shred_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Keyring directory."),
    subject: str = typer.Argument(..., help="The subject (user id) whose data key to destroy."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        metavar="SECONDS",
        help="Wait up to SECONDS until every live process holding the keyring has dropped "
        "the key from its cache; name those that have not.",
    ),
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Destroy SUBJECT's data key: their records can never be decrypted again.

    Refused (exit 1) while the subject is under legal hold. A tombstone (a keyed hash of
    the subject) is written with the delete; every process holding the keyring drops the
    key within its poll interval, and before its lease expires in any case.

    Example: keysplit shred vault user-4711 --yes --wait 10 --json -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 shredded (and, with --wait, acknowledged by every live holder); 1 not
    confirmed, legal hold or bad quorum; 2 usage; 3 the subject had no data key (nothing
    shredded, the request is still recorded; an earlier shred that destroyed it, such as
    an interrupted run of this command, is named: --json's shredded_before); 4 shredded,
    but some live holders did not
    acknowledge within --wait (named).
    """
    from keysplit import ceremony
    from keysplit.keyring import fleet

    check_subject_arg(subject)
    kr = open_keyring(directory, store)
    confirm_shred(subject, yes)
    src = QuorumSource(share, identity, passphrase_file)
    done = ceremony.shred(kr, quorum(kr, src), subject)
    existed = done.value.existed
    no_key = f"{subject!r} has no data key: nothing was shredded (the request is recorded)"
    no_key_hint = None
    if done.value.shredded_before:  # a repeat, or a shred killed before it reported
        no_key = (
            f"{subject!r} has no data key: an earlier shred destroyed it (its tombstone is in "
            "the store); nothing more to shred (the request is recorded)"
        )
        no_key_hint = (
            "its records can no longer be decrypted; a shred that was interrupted took effect"
        )
    pending: list[Lease] = []
    held = kr.open_store()
    try:
        seq = held.state().tombstone_seq
        if existed and wait > 0:
            pending = fleet.wait_for_acks(held, seq, wait)
        live = held.leases()
    finally:
        held.close()
    report_shred(
        subject,
        existed=existed,
        tombstone_seq=seq,
        holders=len(live),
        pending=pending,
        wait=wait,
        as_json=as_json,
        no_key=no_key,
        no_key_hint=no_key_hint,
        holder=("process(es)", "holder"),
        extra={"shredded_before": done.value.shredded_before, "audit_head": _head(done)},
    )


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
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Place (--on) or lift (--off) a legal hold: a held subject cannot be shredded.

    Example: keysplit hold vault user-4711 --on -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 done; 1 bad quorum; 2 usage.
    """
    from keysplit import ceremony

    check_subject_arg(subject)
    kr = open_keyring(directory, store)
    src = QuorumSource(share, identity, passphrase_file)
    done = ceremony.hold(kr, quorum(kr, src), subject, on)
    info(f"legal hold on {subject!r}: {'on' if on else 'off'}")
    if as_json:
        doc = {"subject": subject, "legal_hold": on, "audit_head": _head(done)}
        emit(doc, True, "")
