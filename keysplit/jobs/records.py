"""Per-subject record encryption of a Dask DataFrame column (and so of Parquet datasets).

Every partition runs the library's one record engine
(:class:`~keysplit.keyring.records.Records`) over the picklable
:class:`~keysplit.keyring.DataKeys` it was given (:class:`~keysplit.jobs.ServiceDataKeys`,
or :func:`~keysplit.jobs.serve_keys`' handle): the keys of the distinct subjects it holds
arrive in **one** batch (once per job and worker: :mod:`keysplit.jobs._cache`), and the column
is sealed or opened with ``encrypt_many`` / ``decrypt_many``. The ``*_dataset`` helpers
(encrypt, decrypt) skip Dask DataFrames: the driver child packs the Parquet row groups into
one bounded part per worker thread or more and each task seals its part with pyarrow
(:mod:`keysplit.jobs._parquet`, which says why). The records are ordinary keysplit
records: ``UnsealedKeyring.decrypt(record, subject=..., context=...)`` opens them, and a
row moved to another subject (or context) fails with :class:`IntegrityError`.

Values: ``bytes`` (``str`` is sealed as its UTF-8 bytes; ``text=True`` decodes on the way
back); nulls stay null. Subjects: non-null ``str``. Dask converts object columns to strings
by default, which would mangle bytes: build DataFrames holding bytes under
``dask.config.set({"dataframe.convert-string": False})`` (the ``*_dataset`` helpers do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import pandas as pd
from dask.base import compute
from dask.delayed import delayed
from distributed import Client, as_completed

from .. import names, record
from .._fileio import durable_rename, remove_dead_stages, remove_stage, staging_dir
from ..errors import FormatError, IntegrityError, KeysplitError
from ..keyring import DataKeys
from ..keyring.records import Records
from ..record import DataKey
from . import _parquet as _pq
from ._cache import job_keys, job_records
from ._channel import Channel
from ._isolate import ITEMS_LINE, JobError, Message, clean, progress_of, run_job
from .cluster import LOST_SETTLE, Cluster, check_timeout, planned_workers, scheduler_lost
from .datakeys import ServiceDataKeys, served_here

if TYPE_CHECKING:  # ~1 s of CPU to import (beyond pandas): only the column API and scans need
    # it (their callers have it already); a dataset job's driver and parts never do
    import dask.dataframe as dd

__all__ = [
    "BadRecord",
    "ScanReport",
    "check_columns",
    "check_destination",
    "decrypt_column",
    "decrypt_dataset",
    "encrypt_column",
    "encrypt_dataset",
    "scan",
    "scan_dataset",
]

Progress = Callable[[int, int], None]
Release = Callable[[int], None]
"""``before_release(rows)``: runs once a dataset job's output is complete, before it is put
in place (see :func:`decrypt_dataset`)."""
Context = Mapping[str, str] | None


def _source(service: DataKeys | str, token: str | None) -> DataKeys:
    if isinstance(service, str):
        if not token:
            raise ValueError("a key service URL needs a token allowed 'datakey'")
        return ServiceDataKeys(service, token)
    if token is not None:
        raise ValueError("give token only with a service URL")
    return service


def _columns(df: pd.DataFrame, column: str, subject_column: str) -> tuple[list[int], list[str]]:
    """Positions of the non-null values and their subjects (checked)."""
    rows = [i for i, na in enumerate(df[column].isna().to_numpy()) if not na]
    subs = df[subject_column].to_numpy(dtype=object)
    subjects = [subs[i] for i in rows]
    if not all(isinstance(s, str) for s in subjects):
        nulls = sum(1 for s in subjects if pd.api.types.is_scalar(s) and pd.isna(s))
        if nulls:  # None, NaN, pd.NA: pandas' nulls of an object column
            raise _pq.null_subjects(subject_column, nulls, column)
        bad = next(s for s in subjects if not isinstance(s, str))
        raise KeysplitError(
            f"subject column {subject_column!r} must hold strings (it holds a {type(bad).__name__})"
        )
    return rows, subjects


def _keys(source: DataKeys, subjects: Sequence[str]) -> dict[str, DataKey]:
    """Keys of those (distinct) subjects that have one, under any spelling."""
    uniq = list(dict.fromkeys(subjects))
    keys = Records(source).keys(uniq) if uniq else []
    return {s: k for s, k in zip(uniq, keys, strict=True) if k is not None}


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    raise KeysplitError(f"cannot encrypt a value of type {type(v).__name__} (bytes or str)")


def _with(df: pd.DataFrame, column: str, rows: list[int], out: Sequence[Any]) -> pd.DataFrame:
    col: list[Any] = [None] * len(df)
    for i, v in zip(rows, out, strict=True):
        col[i] = v
    res = df.copy()
    res[column] = pd.Series(col, index=df.index, dtype=object)
    return res


def _encrypt_part(
    df: pd.DataFrame,
    column: str,
    subject_column: str,
    source: DataKeys,
    context: Context,
    job_id: str,
) -> pd.DataFrame:
    rows, subjects = _columns(df, column, subject_column)
    values = df[column].to_numpy(dtype=object)
    plaintexts = [_as_bytes(values[i]) for i in rows]
    with _pq.subject_errors(subject_column):
        out = job_records(source, job_id).encrypt_many(subjects, plaintexts, context)
    return _with(df, column, rows, out)


def _decrypt_part(
    df: pd.DataFrame,
    column: str,
    subject_column: str,
    source: DataKeys,
    context: Context,
    text: bool,
    job_id: str,
) -> pd.DataFrame:
    rows, subjects = _columns(df, column, subject_column)
    values = df[column].to_numpy(dtype=object)
    records = [_as_record(values[i], column) for i in rows]
    with _pq.subject_errors(subject_column), _pq.record_errors(column, records):
        out: list[Any] = job_records(source, job_id).decrypt_many(subjects, records, context)
    if text:
        try:
            out = [b.decode("utf-8") for b in out]
        except UnicodeDecodeError:
            raise KeysplitError("a decrypted value is not UTF-8 text (drop text=True)") from None
    return _with(df, column, rows, out)


def _as_record(v: Any, column: str) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    raise _pq.not_sealed(column, "not a keysplit record (the column must hold bytes)")


def check_columns(column: str, subject_column: str) -> None:
    """Refuse ``column`` equal to ``subject_column`` (a caller checks it before a quorum).

    A column sealed under its own values would hide the subjects its records need: no
    decrypt could name them again (the column lost once the source is gone)."""
    if column == subject_column:
        raise KeysplitError(
            f"column {column!r} cannot be sealed as its own subject column",
            hint="name the column holding each row's subject (user id) with the subject column",
        )


def _meta(ddf: dd.DataFrame, column: str, subject_column: str, text: bool = False) -> Any:
    check_columns(column, subject_column)
    for c in (column, subject_column):
        if c not in ddf.columns:
            raise KeysplitError(f"no column {c!r} in the dataset")
    meta = ddf._meta.copy()
    meta[column] = pd.Series([], dtype=object if not text else "str")
    return meta


def encrypt_column(
    ddf: dd.DataFrame,
    column: str,
    subject_column: str,
    *,
    service: DataKeys | str,
    token: str | None = None,
    context: Context = None,
) -> dd.DataFrame:
    """``ddf`` with ``column`` sealed per row for the row's ``subject_column`` (lazy).

    ``service`` is a :class:`DataKeys` or a key service URL (then ``token``, allowed
    ``datakey``, is required). Missing data keys are created. Whoever computes the result
    with a Dask client unpickles what workers return: never compute it on a cluster in
    the process that holds the unsealed keyring (a :func:`serve_keys` source); use
    :func:`encrypt_dataset` with ``cluster=``, whose client runs in a child process.
    """
    source = _source(service, token)
    return ddf.map_partitions(
        _encrypt_part,
        column,
        subject_column,
        source,
        context,
        secrets.token_hex(16),  # this call's job id: each worker derives a key once per job
        meta=_meta(ddf, column, subject_column),
    )


def decrypt_column(
    ddf: dd.DataFrame,
    column: str,
    subject_column: str,
    *,
    service: DataKeys | str,
    token: str | None = None,
    context: Context = None,
    text: bool = False,
) -> dd.DataFrame:
    """Inverse of :func:`encrypt_column` (lazy); computing it raises IntegrityError if any
    record fails (moved, altered, shredded subject): use :func:`scan` to find which.
    Compute it on a cluster only outside the keyring's process (as :func:`encrypt_column`)."""
    source = _source(service, token)
    return ddf.map_partitions(
        _decrypt_part,
        column,
        subject_column,
        source,
        context,
        text,
        secrets.token_hex(16),
        meta=_meta(ddf, column, subject_column, text),
    )


@dataclass(frozen=True)
class BadRecord:
    """A row that did not decrypt: partition number, row label, subject, why."""

    partition: int
    row: Any
    subject: str | None
    reason: str  # "no data key" | "malformed" | "authentication failed"


@dataclass
class ScanReport:
    """What :func:`scan` found: ``checked`` records, the ``bad`` ones listed."""

    checked: int = 0
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad


def _available(source: DataKeys, subjects: list[str]) -> dict[str, DataKey]:
    """Keys of those subjects that have one (one batch; a bad subject has none)."""
    try:
        return _keys(source, subjects)
    except (ValueError, TypeError):
        return _keys(source, [s for s in subjects if _valid_subject(s)])


def _valid_subject(subject: str) -> bool:
    try:
        names.check_subject(subject)
    except (ValueError, TypeError):
        return False
    return True


def _scan_part(
    df: pd.DataFrame,
    part: int,
    column: str,
    subject_column: str,
    source: DataKeys,
    context: Context,
    job_id: str,
) -> tuple[int, list[BadRecord]]:
    values = df[column].to_numpy(dtype=object)
    subs = df[subject_column].to_numpy(dtype=object)
    rows = [i for i, na in enumerate(df[column].isna().to_numpy()) if not na]
    subjects = [subs[i] for i in rows]
    named = [s for s in dict.fromkeys(subjects) if isinstance(s, str) and s]
    keys = _available(job_keys(source, job_id), named)
    bad: list[BadRecord] = []
    try:
        for i, s in zip(rows, subjects, strict=True):
            label = df.index[i]
            key = keys.get(s) if isinstance(s, str) else None
            if key is None:
                bad.append(BadRecord(part, label, s if isinstance(s, str) else None, "no data key"))
                continue
            try:
                record.decrypt(key, _as_record(values[i], column), subject=s, context=context)
            except FormatError:
                bad.append(BadRecord(part, label, s, "malformed"))
            except IntegrityError:
                bad.append(BadRecord(part, label, s, "authentication failed"))
    finally:
        keys.clear()
    return len(rows), bad


def _timed_out(timeout: float | None, left: int, total: int) -> JobError:
    return JobError(
        f"the job did not finish within {timeout:g} s ({left} of {total} parts left)",
        hint="a worker or the key service may be stuck; nothing was written: run it again",
    )


def _lost(client: Client, exc: BaseException, settle: float = 0.0) -> JobError | None:
    """The job's error if ``exc`` came of its client losing the scheduler (every future
    cancelled), else None: then nothing more is asked of the cluster (a ``cancel`` would
    wait out Dask's reconnect) and nothing of the job was written."""
    if not isinstance(exc, Exception):
        return None
    lost = scheduler_lost(client, settle)
    if lost is None:
        return None
    return JobError(
        f"the job {lost} (Dask cancelled its tasks); nothing was written",
        hint="run the job again once the scheduler is back",
    )


def _run_parts(
    client: Client | None,
    tasks: list[Any],
    progress: Progress | None,
    timeout: float | None = None,
) -> list[Any]:
    """Compute delayed partition tasks, in order, reporting ``progress(done, total)``;
    on a cluster, :class:`JobError` once ``timeout`` seconds pass (the rest cancelled)."""
    total = len(tasks)
    if progress is not None:
        progress(0, total)
    if client is None:
        out = []
        for i, t in enumerate(tasks):
            out.append(compute(t, scheduler="sync")[0])
            if progress is not None:
                progress(i + 1, total)
        return out
    futures = client.compute(tasks)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * total
    n = 0
    try:
        for n, fut in enumerate(as_completed(futures, timeout=timeout), 1):
            results[index[fut.key]] = fut.result()
            if progress is not None:
                progress(n, total)
    except TimeoutError:
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise _timed_out(timeout, total - n, total) from None
    except Exception as exc:
        lost = _lost(client, exc)
        if lost is None:
            raise
        raise lost from None
    return results


def scan(
    ddf: dd.DataFrame,
    column: str,
    subject_column: str,
    *,
    service: DataKeys | str,
    token: str | None = None,
    context: Context = None,
    client: Client | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
) -> ScanReport:
    """Integrity scan: try every record of ``column``; list those that do not decrypt.

    Plaintexts are discarded. ``client=None`` runs in this process (``timeout`` applies on
    a cluster only, as for :func:`encrypt_dataset`). A Dask ``client``
    unpickles what workers return, so it is refused with a :func:`serve_keys` source served
    by this process (which then holds the unsealed keyring): use :func:`scan_dataset` with
    ``cluster=``, whose client runs in a child process.
    """
    source = _source(service, token)
    timeout = check_timeout(timeout)
    if client is not None and served_here(source):
        raise JobError(
            "scan(client=...) would deserialize worker results in the process that holds "
            "the unsealed keyring",
            hint="use jobs.scan_dataset(..., cluster=jobs.Cluster(...)), or client=None",
        )
    _meta(ddf, column, subject_column)
    job_id = secrets.token_hex(16)
    tasks = [
        delayed(_scan_part)(p, i, column, subject_column, source, context, job_id)
        for i, p in enumerate(ddf.to_delayed())
    ]
    report = ScanReport()
    for n, bad in _run_parts(client, tasks, progress, timeout):
        report.checked += n
        report.bad += bad
    return report


PART_BYTES = 64 << 20
"""Target in-memory size of one partition (the least, for the dataset jobs: see
:func:`part_bytes`): a Parquet file larger than this is read as several partitions (by
row groups), so a worker's memory stays bounded whatever the input's file sizes (a file
of one huge row group is read in slices of about this size: keysplit.jobs._parquet.run_part)."""
PART_BYTES_MAX = 512 << 20
PART_SHARE = 16
"""A dataset part is planned at most 1/16 of a worker thread's memory limit: a worker's
resident size peaked at about 6.5 times its part's Arrow size (1.8 GB for a part of 272 MB:
Arrow in, grouped, sealed, back in row order, the Parquet writer, the process itself)."""


def part_bytes(workers: Sequence[tuple[int, int]]) -> int:
    """Target size of a dataset job's part for workers of ``(memory limit, threads)``.

    The record engine's work per distinct subject (key lookup, AAD tail, grouping, a cold
    AES key schedule) is paid once per part, and a dataset's subjects recur in every part:
    at 10^6 rows over 10^5 subjects, sealing in 5 parts of 64 MB took 2.46 s, in one 1.56 s
    (issue 23). So a worker thread gets as large a part as its memory share allows:
    1/:data:`PART_SHARE` of the smallest limit per thread, within :data:`PART_BYTES` and
    :data:`PART_BYTES_MAX`; :data:`PART_BYTES` where no worker states a limit."""
    shares = [int(mem) // max(1, int(threads)) for mem, threads in workers if mem]
    if not shares:
        return PART_BYTES
    return max(PART_BYTES, min(PART_BYTES_MAX, min(shares) // PART_SHARE))


Planned = Sequence[tuple[int, int]]
"""(memory limit, threads) of each worker a job plans for, from its cluster's options
(:func:`keysplit.jobs.cluster.planned_workers`)."""


def _part_bytes(client: Client | None, planned: Planned | None = None) -> int:
    """:func:`part_bytes` for the ``planned`` workers, else (a scheduler given no worker
    count) for those connected now; :data:`PART_BYTES` in process."""
    if client is None:
        return PART_BYTES  # in this process: no stated limit
    if planned is not None:
        return part_bytes(planned)
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # a distributed without n_workers lists every worker
        info = client.scheduler_info()
    workers = info.get("workers", {}).values()
    return part_bytes([(w.get("memory_limit") or 0, w.get("nthreads") or 1) for w in workers])


def _read(src: str) -> dd.DataFrame:
    import dask.dataframe as dd  # here: the dataset jobs' parts and drivers never need it

    return dd.read_parquet(src, engine="pyarrow", split_row_groups="adaptive", blocksize=PART_BYTES)


def _slots(client: Client | None, planned: Planned | None = None) -> int:
    """The least number of parts: the worker threads the job's cluster options name
    (``planned``), else those connected now (a scheduler given no worker count); 1 in
    process."""
    if client is None:
        return 1
    if planned is not None:
        return max(1, sum(threads for _, threads in planned))
    return max(1, sum(int(n) for n in client.nthreads().values()))


def check_destination(
    dst: str | os.PathLike[str], src: str | os.PathLike[str] | None = None
) -> None:
    """Raise KeysplitError if ``dst`` exists and is not an empty directory, or lies inside
    the input dataset ``src``: what :func:`encrypt_dataset` and :func:`decrypt_dataset`
    refuse, checkable up front (before a quorum is gathered for the job).

    A symbolic link (to an empty directory, or to nowhere) is refused: the job ran to its
    end and then failed to rename its parts onto it (ENOTDIR), after the quorum and all
    the work. An output inside its input became part of it: the next read of ``src`` (a rerun, a
    scan, any Parquet reader of the directory) took the sealed or opened parts as rows of
    the input, and a decrypt left plaintext inside the sealed dataset."""
    out = Path(dst)
    if out.is_symlink():  # the finished parts are renamed to dst: never onto a link
        raise KeysplitError(
            f"{out.absolute()} is a symbolic link",
            hint=f"name the directory itself ({out.resolve()})"
            if out.exists()
            else "name a new directory",
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KeysplitError(f"{out.absolute()} exists and is not an empty directory")
    if src is not None:
        inp = Path(src).resolve()
        if inp.is_dir() and out.resolve().is_relative_to(inp):
            raise KeysplitError(
                f"{out.absolute()} is inside the input dataset {inp}",
                hint="write the output dataset outside the input directory",
            )


def _transform_dataset(
    client: Client | None,
    progress: Progress | None,
    spec_of: Callable[[Any], _pq.PartSpec],
    src: str,
    dst: str,
    timeout: float | None = None,
    release: Release | None = None,
    planned: Planned | None = None,
) -> int:
    """Plan ``src`` into parts (:func:`keysplit.jobs._parquet.plan`) and run one task per
    part, each writing ``part.NNNNN.parquet``; the rows written.

    The parts are written into a private staging directory beside ``dst`` (mode 0700),
    renamed to ``dst`` only once every part is written: a job that fails part-way (a
    shredded subject in a later part, a bad file) leaves no ``dst`` that reads as a whole
    dataset, and no decrypted part behind (the staging directory is removed; one that a
    killed job left is removed by the next job for the same ``dst`` on this host:
    :func:`keysplit._fileio.staging_dir`). ``release(rows)`` runs once every part is
    written and before they are put in place (a ceremony records its entry there); if it
    raises, ``dst`` never appears and the staging directory is removed. ``planned``: the
    workers the cluster's options name (:func:`_slots`, :func:`_part_bytes`)."""
    out = Path(dst).absolute()  # the workers' working directory is not ours
    check_destination(out, src)
    size = _part_bytes(client, planned)
    layout = _pq.plan(src, _slots(client, planned), size)
    spec = dataclasses.replace(spec_of(layout.schema), part_bytes=size)
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stage = staging_dir(out)  # also removes stages this host's killed jobs left
    try:
        done = _run_dataset_parts(client, progress, spec, layout.parts, stage, timeout)
        if release is not None:
            release(done)
        try:
            durable_rename(stage, out)  # replaces an empty directory, never a full one
        except OSError as exc:
            raise KeysplitError(f"cannot move the finished parts to {out}: {exc}") from None
    except BaseException:
        remove_stage(stage)  # parts still running may commit meanwhile: see remove_stage
        raise
    return done


def _run_dataset_parts(
    client: Client | None,
    progress: Progress | None,
    spec: _pq.PartSpec,
    parts: list[list[_pq.Piece]],
    out: Path,
    timeout: float | None = None,
) -> int:
    """Run one task per part, each writing ``out/part.NNNNN.parquet``; the rows written.
    On a failure, or once ``timeout`` seconds pass, the parts not yet finished are
    cancelled."""
    calls = [(spec, pieces, str(out / f"part.{i:05d}.parquet")) for i, pieces in enumerate(parts)]
    total = len(calls)
    if progress is not None:
        progress(0, total)
    done = 0
    if client is None:
        for n, call in enumerate(calls, 1):
            done += _pq.run_part(*call)
            if progress is not None:
                progress(n, total)
        return done
    futures = [
        client.submit(_pq.run_part, *call, key=f"keysplit-part-{spec.job_id}-{i}")
        for i, call in enumerate(calls)
    ]
    n = 0
    try:
        try:
            for n, fut in enumerate(as_completed(futures, timeout=timeout), 1):
                rows = fut.result()
                if isinstance(rows, bool) or not isinstance(rows, int):
                    raise JobError("a worker returned a malformed part result")
                done += rows
                if progress is not None:
                    progress(n, total)
        except TimeoutError:
            raise _timed_out(timeout, total - n, total) from None
    except BaseException as exc:
        lost = _lost(client, exc)
        if lost is not None:
            raise lost from None
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise
    return done


@dataclass(frozen=True)
class _DatasetJob:
    """One dataset job as the child receives it (picklable: paths, names, the key source)."""

    kind: str  # "encrypt" | "decrypt" | "scan"
    src: str
    dst: str | None
    column: str
    subject_column: str
    source: DataKeys
    context: dict[str, str] | None
    text: bool = False
    timeout: float | None = None

    staged: bool = False  # (on a cluster) ask the parent to release the output: _ask_release

    def run(
        self,
        client: Client | None,
        progress: Progress | None,
        release: Release | None = None,
        planned: Planned | None = None,
    ) -> Any:
        """Run it in this process (``client``: its Dask client, or None: no cluster);
        ``release`` and ``planned`` as in :func:`_transform_dataset`."""
        if self.kind == "scan":
            with dask.config.set({"dataframe.convert-string": False}):
                return scan(
                    _read(self.src),
                    self.column,
                    self.subject_column,
                    service=self.source,
                    context=self.context,
                    client=client,
                    progress=progress,
                    timeout=self.timeout,
                )
        assert self.dst is not None
        return _transform_dataset(
            client, progress, self._spec, self.src, self.dst, self.timeout, release, planned
        )

    def _spec(self, schema: Any) -> _pq.PartSpec:
        """What each part task gets; a sealed str column opens as str (its original type)."""
        text = self.text or (
            self.kind == "decrypt" and _pq.sealed_types(schema).get(self.column) == "str"
        )
        return _pq.PartSpec(
            self.kind,
            self.column,
            self.subject_column,
            self.source,
            self.context,
            text,
            secrets.token_hex(16),  # the job id: each worker derives a key once per job
            schema,
            _pq.output_metadata(schema, self.kind, self.column, self.subject_column),
            _pq.original_type(schema, self.column) if self.kind == "decrypt" else None,
        )


_REASONS = frozenset({"no data key", "malformed", "authentication failed"})


def _label(row: Any) -> int | str:
    """A row label as plain JSON (an integer label stays an integer)."""
    try:
        if isinstance(row, bool):
            return str(row)
        if int(row) == row:
            return int(row)
    except (TypeError, ValueError, OverflowError):
        pass
    return str(row)


def child_job(client: Client, request: dict[str, Any], chan: Channel) -> dict[str, Any]:
    """(Child) Run a dataset job on ``client``; only counts and bad-row lists go out."""
    job: _DatasetJob = request["job"]

    def release(rows: int) -> None:
        # the parent records the job's audit entry, then answers: the output is put in
        # place only on its "ok" (its end of the pipe closing, killed: never)
        reply = chan.ask({"t": "release", "rows": int(rows)})
        if reply.get("ok") is not True:
            raise JobError("the output was not put in place: its audit entry was not recorded")

    try:
        planned = planned_workers(request["cluster"])  # the options', not who is connected
        result = job.run(client, chan.progress, release if job.staged else None, planned)
    except Exception as exc:  # a call to the cluster failed: its scheduler may be gone
        lost = _lost(client, exc, LOST_SETTLE if isinstance(exc, OSError) else 0.0)
        if lost is None:
            raise
        raise lost from None
    if job.kind != "scan":
        return {"rows": int(result)}
    bad = [[b.partition, _label(b.row), b.subject, b.reason] for b in result.bad]
    chan.send_items("bad", "rows", bad, ITEMS_LINE)
    return {"checked": int(result.checked)}


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise JobError("the job driver sent a malformed result")
    return value


def _bad_rows(rows: object) -> list[BadRecord]:
    """(Parent) Bad rows from the child, checked field by field."""
    if not isinstance(rows, list):
        raise JobError("the job driver sent a malformed scan report")
    out = []
    for r in rows:
        if not (isinstance(r, list) and len(r) == 4):
            raise JobError("the job driver sent a malformed scan report")
        part, label, subject, reason = r
        if (
            isinstance(part, bool)
            or not isinstance(part, int)
            or not isinstance(label, int | str)
            or not (subject is None or isinstance(subject, str))
            or reason not in _REASONS
        ):
            raise JobError("the job driver sent a malformed scan report")
        out.append(BadRecord(part, label, subject, reason))
    return out


def _isolated(
    job: _DatasetJob,
    cluster: Cluster | None,
    progress: Progress | None,
    before_release: Release | None = None,
) -> Any:
    """Run a dataset job here (``cluster=None``) or, on a cluster, from a child process;
    ``before_release`` as in :func:`decrypt_dataset`."""
    if cluster is None:
        return job.run(None, progress, before_release)
    if not isinstance(cluster, Cluster):
        raise TypeError("cluster must be a keysplit.jobs.Cluster")
    if before_release is not None:
        job = dataclasses.replace(job, staged=True)
    bad: list[BadRecord] = []
    refused: list[Exception] = []  # why before_release failed: the job's error
    released: list[int] = []  # the rows of the one release asked for (and answered)

    def on_message(msg: Message) -> Message | None:
        # Only the messages this job can send, each once where once is the protocol: any
        # other fails the job now (run_job then kills the child), instead of being left
        # unanswered (a "release" nobody answers holds the job: the child waits for it)
        # or answered twice (before_release is the job's one audit entry).
        step = progress_of(msg)
        if step is not None:
            if progress is not None:
                progress(*step)
            return None
        if msg["t"] == "bad" and job.kind == "scan":
            bad.extend(_bad_rows(msg.get("rows")))
            return None
        if msg["t"] != "release" or before_release is None:
            kind = clean(msg["t"], 40)
            raise JobError(
                f"the job driver sent a {kind!r} message, which the {job.kind} job does not take",
                hint=_MISBEHAVES,
            )
        if released or refused:
            raise JobError("the job driver asked twice to release the output", hint=_MISBEHAVES)
        rows = msg.get("rows")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0 or len(msg) != 2:
            raise JobError("the job driver sent a malformed release message", hint=_MISBEHAVES)
        released.append(rows)
        try:
            before_release(rows)
        except Exception as exc:  # the child removes its staging and reports an error
            refused.append(exc)
            return {"ok": False}
        return {"ok": True}

    try:
        done = run_job({"kind": "dataset", "job": job}, cluster, on_message, budget=job.timeout)
    except KeysplitError:
        if job.dst is not None:  # a driver killed past its deadline left its stage
            remove_dead_stages(Path(job.dst))
        if refused:
            raise refused[0] from None
        raise
    if job.kind != "scan":
        rows = _count(done.get("rows"))
        if before_release is not None and released != [rows]:
            raise JobError(
                "the job driver finished without asking to release the output"
                if not released
                else f"the job driver released {released[0]} rows and then reported {rows}",
                hint=_MISBEHAVES,
            )
        return rows
    return ScanReport(_count(done.get("checked")), bad)


_MISBEHAVES = "the job's driver process, or a worker of the cluster, misbehaves; run the job again"


def _job(
    kind: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None,
    column: str,
    subject_column: str,
    service: DataKeys | str,
    token: str | None,
    context: Context,
    text: bool = False,
    timeout: float | None = None,
) -> _DatasetJob:
    record.check_context(context)  # here, with its reason (in a part: JobError('ValueError'))
    check_columns(column, subject_column)
    return _DatasetJob(
        kind,
        str(Path(src).absolute()),  # the workers' working directory is not ours
        None if dst is None else str(Path(dst).absolute()),
        column,
        subject_column,
        _source(service, token),
        None if context is None else dict(context),
        text,
        check_timeout(timeout),
    )


def encrypt_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    column: str,
    subject_column: str,
    *,
    service: DataKeys | str,
    token: str | None = None,
    context: Context = None,
    cluster: Cluster | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
    before_release: Release | None = None,
) -> int:
    """Read the Parquet dataset ``src``, seal ``column``, write the dataset ``dst`` (a new
    directory of ``part.NNNNN.parquet`` files, one per partition); returns the row count.

    ``cluster=None`` runs in this process; with a :class:`Cluster` the Dask client runs in
    a child process (this one deserializes nothing from the cluster) and ``service`` must
    be picklable (a URL, :class:`ServiceDataKeys`, or :func:`serve_keys`' handle).
    ``timeout`` (on a cluster): seconds the whole job may take; past them the parts not
    finished are cancelled and :class:`JobError` says so, ``dst`` untouched (a stuck
    worker otherwise holds the job until Dask declares it dead, minutes later).
    ``before_release`` as in :func:`decrypt_dataset`.
    """
    job = _job("encrypt", src, dst, column, subject_column, service, token, context, False, timeout)
    return int(_isolated(job, cluster, progress, before_release))


def decrypt_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    column: str,
    subject_column: str,
    *,
    service: DataKeys | str,
    token: str | None = None,
    context: Context = None,
    text: bool = False,
    cluster: Cluster | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
    before_release: Release | None = None,
) -> int:
    """Inverse of :func:`encrypt_dataset`; IntegrityError if any record fails.

    ``before_release(rows)`` runs in this process once every part is written and before
    ``dst`` is put in place (on a cluster the driver child waits for it): a ceremony
    records its audit entry there, so a kill between the two leaves an entry for a dataset
    that never appeared, never plaintext without its entry. If it raises, ``dst`` never
    appears, the staging directory is removed and its exception is the job's."""
    job = _job("decrypt", src, dst, column, subject_column, service, token, context, text, timeout)
    return int(_isolated(job, cluster, progress, before_release))


def scan_dataset(
    src: str | os.PathLike[str],
    column: str,
    subject_column: str,
    *,
    service: DataKeys | str,
    token: str | None = None,
    context: Context = None,
    cluster: Cluster | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
) -> ScanReport:
    """:func:`scan` over a Parquet dataset (``cluster``, ``timeout`` as in
    :func:`encrypt_dataset`)."""
    job = _job("scan", src, None, column, subject_column, service, token, context, False, timeout)
    report: ScanReport = _isolated(job, cluster, progress)
    return report
