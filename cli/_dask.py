"""Dask for the CLI: the client the dataset commands run on, and the runner behind
``keysplit rewrap DIR --dask [--scheduler ADDRESS]`` (the rewrap stays one
:func:`keysplit.ceremony.rewrap`, recorded in the audit log; :func:`dask_rewrap` only does
its work on a cluster).

Without a scheduler address (``--scheduler`` or ``DASK_SCHEDULER_ADDRESS``) a LocalCluster
(worker processes on this host, mutual TLS with a certificate made for the job) is started;
with one the job runs on that cluster, whose workers must reach the input and output paths
(or the key store, for rewrap). A scheduler on another host must be ``tls://`` with Dask's
TLS settings (``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``, e.g.
``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``): a job hands its workers keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from keysplit import KeysplitError

from ._common import EXIT_USAGE, fail, info

if TYPE_CHECKING:
    from keysplit import UnsealedKeyring
    from keysplit.ceremony import RewrapRunner
    from keysplit.keyring import RewrapResult

__all__ = [
    "JOB_TIMEOUT_OPTION",
    "SCHEDULER_OPTION",
    "WORKERS_OPTION",
    "dask_rewrap",
    "job_cluster",
    "job_timeout",
    "jobs_module",
]

SCHEDULER_OPTION = typer.Option(
    None,
    "--scheduler",
    metavar="ADDRESS",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Dask scheduler (e.g. tcp://host:8786); default: a LocalCluster on this host.",
)


WORKERS_OPTION = typer.Option(
    None,
    "--workers",
    metavar="N",
    min=1,
    max=4096,
    help="Worker processes the job plans for: with --scheduler, that cluster's workers "
    "(default: those connected when the job starts); else the local cluster's (default: "
    "one per CPU).",
)


def jobs_module() -> Any:
    """:mod:`keysplit.jobs`, once it can run here (Dask installed, an interpreter for the
    job's driver process): every job command asks before a quorum or a cluster."""
    try:
        from keysplit import jobs
    except ImportError as exc:
        fail(
            str(exc).partition("; install")[0],  # the install advice goes in the hint line
            "install the 'dask' extra: pip install '.[dask]' in a keysplit checkout (not on PyPI)",
        )
    try:
        jobs.check_driver()
    except KeysplitError as exc:
        fail(str(exc), exc.hint)
    return jobs


def job_cluster(scheduler: str | None, workers: int | None = None) -> Any:
    """The cluster a job runs on: ``scheduler`` (TLS from Dask's configuration; a remote
    one must be ``tls://``), or a fresh authenticated LocalCluster on this host; ``workers``:
    the worker processes its job plans for (``--workers``: a plan that does not depend on
    which workers are connected when the job starts)."""
    jobs = jobs_module()
    if not scheduler:
        info("starting a local Dask cluster (worker processes on this host, mutual TLS)")
    return jobs.Cluster.from_dask_config(scheduler or None, workers=workers)


JOB_TIMEOUT_OPTION = typer.Option(
    None,
    "--timeout",
    metavar="SECONDS",
    help="Fail the Dask job if it has not finished after SECONDS (its running parts are "
    "cancelled; what it committed stays valid); default: no limit.",
)


def job_timeout(value: float | None) -> float | None:
    """``--timeout``, checked: a usage error unless a finite positive number."""
    if value is not None and not 0 < value < 1e9:  # also refuses nan
        fail("--timeout must be a positive number of seconds", code=EXIT_USAGE)
    return value


def dask_rewrap(
    scheduler: str | None, timeout: float | None = None, workers: int | None = None
) -> RewrapRunner:
    """The runner of ``keysplit rewrap DIR --dask``: the ceremony unseals and records, this
    runs the work as a Dask job (same result). Fails at once if Dask is not installed, so
    before anyone gives a share; the cluster starts only once the quorum is complete."""
    jobs = jobs_module()

    def run(
        ukr: UnsealedKeyring, batch_size: int, progress: Callable[[int, int], None] | None
    ) -> RewrapResult:
        result: RewrapResult = jobs.rewrap(
            ukr,
            cluster=job_cluster(scheduler, workers),
            batch_size=batch_size,
            progress=progress,
            timeout=timeout,
        )
        return result

    return run
