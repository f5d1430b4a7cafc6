"""Dask for the CLI: the client the dataset commands run on, and the runner behind
``keysplit rewrap DIR --dask [--scheduler ADDRESS]`` (the rewrap stays one
:func:`keysplit.ceremony.rewrap`, recorded in the audit log; :func:`dask_rewrap` only does
its work on a cluster).

Without a scheduler address (``--scheduler`` or ``DASK_SCHEDULER_ADDRESS``) a LocalCluster
(worker processes on this host) is started; with one (``tcp://host:8786``) the job runs on
that cluster, whose workers must reach the input and output paths (or the key store, for
rewrap).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import typer

from keysplit import UnsealedKeyring
from keysplit.ceremony import RewrapRunner
from keysplit.keyring import RewrapResult

from ._common import fail, info

__all__ = ["SCHEDULER_OPTION", "dask_client", "dask_rewrap", "jobs_module"]

SCHEDULER_OPTION = typer.Option(
    None,
    "--scheduler",
    metavar="ADDRESS",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Dask scheduler (e.g. tcp://host:8786); default: a LocalCluster on this host.",
)


def jobs_module() -> Any:
    try:
        from keysplit import jobs
    except ImportError as exc:
        fail(str(exc), "pip install 'keysplit[dask]'")
    return jobs


@contextlib.contextmanager
def dask_client(scheduler: str | None) -> Iterator[Any]:
    """A Dask client: connected to ``scheduler``, or to a fresh LocalCluster."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout=60) as client:
            yield client
        return
    info("starting a local Dask cluster (worker processes on this host)")
    with (
        LocalCluster(processes=True, dashboard_address=":0", silence_logs=40) as cluster,
        Client(cluster) as client,
    ):
        yield client


def dask_rewrap(scheduler: str | None) -> RewrapRunner:
    """The runner of ``keysplit rewrap DIR --dask``: the ceremony unseals and records, this
    runs the work as a Dask job (same result). Fails at once if Dask is not installed, so
    before anyone gives a share; the cluster starts only once the quorum is complete."""
    jobs = jobs_module()

    def run(
        ukr: UnsealedKeyring, batch_size: int, progress: Callable[[int, int], None] | None
    ) -> RewrapResult:
        with dask_client(scheduler) as client:
            result: RewrapResult = jobs.rewrap(
                ukr, client=client, batch_size=batch_size, progress=progress
            )
        return result

    return run
