"""Bulk jobs on Dask: ``keysplit encrypt-dataset|decrypt-dataset|scan-dataset``.

Each command is one call into :mod:`keysplit.jobs` with a progress bar over partitions,
run on the cluster of :mod:`.._dask` (a LocalCluster, or ``--scheduler``). Data keys
come from the key service (``--server URL --token-file F``, a token allowed ``datakey``)
or, without a service, from a keyring unsealed in this process (``--keyring DIR`` and a
quorum), served to workers on this host over an authenticated Unix socket: then the
command is the ceremony :func:`keysplit.ceremony.dataset`, recorded in the audit log.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keysplit import KeysplitError

from .._common import EXIT_USAGE, check_output_dir, err_console, fail, handle_errors, info
from .._dask import (
    JOB_TIMEOUT_OPTION,
    SCHEDULER_OPTION,
    WORKERS_OPTION,
    job_cluster,
    job_timeout,
    jobs_module,
)
from .._output import JSON_HELP, emit, shown
from .._quorum import IDENTITY_OPTION, PASSPHRASE_OPTION, SHARE_OPTION, QuorumSource, quorum
from .._service import CA_OPTION, CERT_OPTION, KEY_OPTION, SERVER_FORMS, Tls, connect, read_token

if TYPE_CHECKING:
    from keysplit import UnsealedKeyring

__all__ = ["app"]

app = typer.Typer()


@contextlib.contextmanager
def _bar(what: str) -> Iterator[Callable[[int, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _context(pairs: list[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            fail(f"--context wants KEY=VALUE, got {p!r}", code=EXIT_USAGE)
        out[key] = value
    from keysplit.record import check_context

    try:
        check_context(out)
    except ValueError as exc:  # too long, or not Unicode (argv bytes that are not UTF-8)
        fail(f"--context: {exc}", code=EXIT_USAGE)
    return out or None


@contextlib.contextmanager
def _source(
    server: str | None,
    token_file: Path | None,
    tls: Tls,
    keyring: Path | None,
    src: QuorumSource,
) -> Iterator[Any]:
    jobs = jobs_module()
    if (server is None) == (keyring is None):
        fail("give --server URL (with --token-file) or --keyring DIR", code=EXIT_USAGE)
    if server is not None:
        if token_file is None:
            fail("--server needs --token-file (a token allowed 'datakey')", code=EXIT_USAGE)
        token = read_token(token_file)
        connect(server, tls, token=token).close()  # a bad URL or TLS file: one error line
        ca, cert, key = (None if p is None else str(p) for p in tls)
        yield jobs.ServiceDataKeys(server, token, ca=ca, cert=cert, key=key)
        return
    raise AssertionError("--keyring runs as a ceremony (_dataset_job)")  # pragma: no cover


def _check_paths(src: Path, dst: Path | None, column: str, subject_column: str) -> None:
    """IN exists, OUT can be made (a new or empty directory) and the two columns differ,
    checked before a quorum is asked for or a cluster started."""
    try:
        jobs_module().check_columns(column, subject_column)
    except KeysplitError as exc:
        fail(f"--column: {exc}", exc.hint, code=EXIT_USAGE)
    if not src.exists():  # exit 1, as every command's missing input (README, "Exit codes")
        fail(f"IN: no such file or directory: {src}")
    if dst is not None:
        check_output_dir(dst, "OUT")
        try:
            jobs_module().check_destination(dst, src)
        except KeysplitError as exc:
            fail(f"OUT: {exc}", exc.hint, code=EXIT_USAGE)


SRC_ARG = typer.Argument(..., metavar="IN", help="Input Parquet file or dataset directory.")


DST_ARG = typer.Argument(..., metavar="OUT", help="Output dataset directory (new or empty).")


COLUMN = typer.Option(..., "--column", metavar="C", help="The column to seal or open.")


SUBJECT = typer.Option(..., "--subject-column", metavar="S", help="Column of subject ids.")


SERVER = typer.Option(None, "--server", metavar="URL", help=f"Key service: {SERVER_FORMS}.")


TOKEN = typer.Option(
    None,
    "--token-file",
    metavar="FILE",
    help="File holding a token allowed 'datakey' on the column's subjects (token create).",
)


KEYRING = typer.Option(
    None, "--keyring", metavar="DIR", help="No service: unseal this keyring here (quorum)."
)


CONTEXT = typer.Option([], "--context", metavar="KEY=VALUE", help="Record context (repeatable).")


def _dataset_job(
    what: str,
    job: Callable[[Any, Any, Callable[[int, int], None], Any], Any],
    server: str | None,
    token_file: Path | None,
    tls: Tls,
    keyring: Path | None,
    quorum_source: QuorumSource,
    scheduler: tuple[str | None, int | None],
    record: dict[str, Any],
) -> Any:
    """Run ``job(source, cluster, progress, release)`` with the key source and bar open (the
    Dask client runs in the job's own child process, never in this one: see keysplit.jobs).

    With ``--keyring`` (and no ``--server``) this is the library ceremony
    :func:`keysplit.ceremony.dataset`: quorum, job, one ``dataset`` audit entry (``record``
    holds its fields), recorded by ``release`` before the output is put in place.
    ``scheduler``: ``--scheduler`` and ``--workers``."""
    from keysplit import Keyring, ceremony

    if keyring is not None and server is None:
        kr = Keyring.open(keyring)

        def run(ukr: UnsealedKeyring, release: Callable[[Any], None]) -> Any:
            with jobs_module().serve_keys(ukr) as source, _bar(f"{what} (partitions)") as step:
                return job(source, job_cluster(*scheduler), step, release)

        return ceremony.dataset(kr, quorum(kr, quorum_source), run=run, **record).value
    with (
        _source(server, token_file, tls, keyring, quorum_source) as source,
        _bar(f"{what} (partitions)") as step,
    ):
        return job(source, job_cluster(*scheduler), step, None)


def _rows(n: int) -> tuple[int, int]:
    return n, 0


@app.command("encrypt-dataset")
@handle_errors
def encrypt_dataset_cmd(
    src: Path = SRC_ARG,
    dst: Path = DST_ARG,
    column: str = COLUMN,
    subject_column: str = SUBJECT,
    server: str | None = SERVER,
    token_file: Path | None = TOKEN,
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    keyring: Path | None = KEYRING,
    context: list[str] = CONTEXT,
    scheduler: str | None = SCHEDULER_OPTION,
    workers: int | None = WORKERS_OPTION,
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    timeout: float | None = JOB_TIMEOUT_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Seal column C of a Parquet dataset per row for the subject in column S.

    Example: keysplit encrypt-dataset users.parquet users.enc --column email
    --subject-column user_id --server unix:/run/ks.sock --token-file app.token

    Exit codes: 0 done; 1 bad input or key service error; 2 usage.
    """
    limit = job_timeout(timeout)
    ctx = _context(context)
    _check_paths(src, dst, column, subject_column)
    qs = QuorumSource(list(share), list(identity), list(passphrase_file))
    rows = _dataset_job(
        "encrypting",
        lambda source, cluster, step, release: jobs_module().encrypt_dataset(
            src,
            dst,
            column,
            subject_column,
            service=source,
            context=ctx,
            cluster=cluster,
            progress=step,
            timeout=limit,
            before_release=release,
        ),
        server,
        token_file,
        (ca, cert, key),
        keyring,
        qs,
        (scheduler, workers),
        {
            "operation": "encrypt",
            "source": str(src),
            "destination": str(dst),
            "column": column,
            "count": _rows,
        },
    )
    info(f"sealed column {column!r} of {rows} rows into {dst}")
    emit({"rows": rows, "column": column, "out": str(dst)}, as_json, rows)


@app.command("decrypt-dataset")
@handle_errors
def decrypt_dataset_cmd(
    src: Path = SRC_ARG,
    dst: Path = DST_ARG,
    column: str = COLUMN,
    subject_column: str = SUBJECT,
    server: str | None = SERVER,
    token_file: Path | None = TOKEN,
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    keyring: Path | None = KEYRING,
    context: list[str] = CONTEXT,
    text: bool = typer.Option(False, "--text", help="Decode the opened values as UTF-8."),
    scheduler: str | None = SCHEDULER_OPTION,
    workers: int | None = WORKERS_OPTION,
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    timeout: float | None = JOB_TIMEOUT_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Open column C of a dataset made by encrypt-dataset (all or nothing).

    Example: keysplit decrypt-dataset users.enc users.out --column email
    --subject-column user_id --server unix:/run/ks.sock --token-file app.token

    Exit codes: 0 done; 1 a record failed (moved, altered, shredded: see scan-dataset) or
    bad input; 2 usage.
    """
    limit = job_timeout(timeout)
    ctx = _context(context)
    _check_paths(src, dst, column, subject_column)
    qs = QuorumSource(list(share), list(identity), list(passphrase_file))
    rows = _dataset_job(
        "decrypting",
        lambda source, cluster, step, release: jobs_module().decrypt_dataset(
            src,
            dst,
            column,
            subject_column,
            service=source,
            context=ctx,
            text=text,
            cluster=cluster,
            progress=step,
            timeout=limit,
            before_release=release,
        ),
        server,
        token_file,
        (ca, cert, key),
        keyring,
        qs,
        (scheduler, workers),
        {
            "operation": "decrypt",
            "source": str(src),
            "destination": str(dst),
            "column": column,
            "count": _rows,
        },
    )
    info(f"opened column {column!r} of {rows} rows into {dst}")
    emit({"rows": rows, "column": column, "out": str(dst)}, as_json, rows)


@app.command("scan-dataset")
@handle_errors
def scan_dataset_cmd(
    src: Path = SRC_ARG,
    column: str = COLUMN,
    subject_column: str = SUBJECT,
    server: str | None = SERVER,
    token_file: Path | None = TOKEN,
    ca: Path | None = CA_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    keyring: Path | None = KEYRING,
    context: list[str] = CONTEXT,
    scheduler: str | None = SCHEDULER_OPTION,
    workers: int | None = WORKERS_OPTION,
    share: list[Path] = SHARE_OPTION,
    identity: list[Path] = IDENTITY_OPTION,
    passphrase_file: list[str] = PASSPHRASE_OPTION,
    timeout: float | None = JOB_TIMEOUT_OPTION,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Check that every record of column C decrypts; print the bad rows (tab-separated;
    control characters in a row label or subject escaped, as \\x1b; --json has them as they are).

    Example: keysplit scan-dataset users.enc --column email --subject-column user_id
    --keyring vault -s ana.g1.kss -s ben.g1.kss

    Exit codes: 0 every record opens; 1 some do not (listed on stdout); 2 usage.
    """
    limit = job_timeout(timeout)
    ctx = _context(context)
    _check_paths(src, None, column, subject_column)
    qs = QuorumSource(list(share), list(identity), list(passphrase_file))
    report = _dataset_job(
        "scanning",
        lambda source, cluster, step, _release: jobs_module().scan_dataset(
            src,
            column,
            subject_column,
            service=source,
            context=ctx,
            cluster=cluster,
            progress=step,
            timeout=limit,
        ),
        server,
        token_file,
        (ca, cert, key),
        keyring,
        qs,
        (scheduler, workers),
        {
            "operation": "scan",
            "source": str(src),
            "destination": None,
            "column": column,
            "count": lambda r: (r.checked, len(r.bad)),
        },
    )
    if as_json:
        bad = [
            {"partition": b.partition, "row": b.row, "subject": b.subject, "reason": b.reason}
            for b in report.bad
        ]
        typer.echo(json.dumps({"checked": report.checked, "bad": bad}))
    for b in [] if as_json else report.bad:  # the row and subject are the dataset's: escaped
        typer.echo("\t".join(shown(str(v)) for v in (b.partition, b.row, b.subject, b.reason)))
    info(f"checked {report.checked} records: {len(report.bad)} bad")
    if report.bad:
        raise KeysplitError(f"{len(report.bad)} of {report.checked} records do not decrypt")
