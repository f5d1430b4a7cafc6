"""The Dask tests' cluster: a LocalCluster of 2 single-threaded worker processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from distributed import Client, LocalCluster
from distributed.security import Security


@contextlib.contextmanager
def two_workers(security: Security | None = None) -> Iterator[Client]:
    """A client of a fresh local cluster of 2 worker processes (one thread each), both up;
    ``security``: e.g. mutual TLS, as a real cluster must run."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=40,
            death_timeout=120,
            security=security,
        ) as cluster,
        Client(cluster, timeout=120, security=security) as c,
    ):
        c.wait_for_workers(2, timeout=120)
        yield c
