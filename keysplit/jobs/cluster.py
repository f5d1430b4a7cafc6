"""Where a job runs: :class:`Cluster` (a scheduler address and the TLS that authenticates it).

A job's Dask client never runs in the process that holds the unsealed keyring (see
:mod:`keysplit.jobs._isolate`): it runs in a child process that connects to ``scheduler``
or, with no address, starts a LocalCluster of its own on this host. That cluster is
**authenticated**: its scheduler, workers and client use a fresh self-signed certificate
made in memory for the job (``Security.temporary()``, mutual TLS), so another local user
cannot attach a worker and receive keys.

An external scheduler is accepted without TLS only on a loopback address (this host; say so
in your threat model: any local user who can reach that port can attach a worker). Any other
address must be ``tls://`` with a CA and a client certificate and key (mutual TLS, Dask's
``Security``; ``require_encryption``), so only workers holding a certificate of that CA can
join and receive a job's keys. The TLS fields are file paths or PEM text, as in Dask;
:meth:`Cluster.from_dask_config` takes them from Dask's own configuration
(``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``, e.g. the
``DASK_DISTRIBUTED__COMM__TLS__CA_FILE`` environment variable).
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import KeysplitError

__all__ = [
    "Cluster",
    "ClusterError",
    "check_timeout",
    "local_memory",
    "local_workers",
    "planned_threads",
    "planned_workers",
]


class ClusterError(KeysplitError):
    """The cluster is not acceptable for a job (unauthenticated remote scheduler, bad address)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Cluster:
    """A Dask cluster for one job (see the module docstring for what is accepted)."""

    scheduler: str | None = None
    """``tls://host:port`` (or ``tcp://`` on loopback only); None: a LocalCluster."""
    workers: int | None = None
    """LocalCluster: worker processes (None: Dask's default for this host, one per CPU).
    A scheduler: the worker processes (of ``threads_per_worker`` threads) a job plans its
    parts for (None: the workers connected when it plans; see :func:`planned_workers`)."""
    threads_per_worker: int = 1
    memory_limit: int | None = None
    """Bytes of memory per worker process a dataset job sizes its parts for. LocalCluster:
    its workers' limit (None: Dask's default, this host's memory shared evenly). A
    scheduler given ``workers``: None is no stated limit (parts of
    :data:`keysplit.jobs.records.PART_BYTES`); not given ``workers``: unused."""
    tls_ca: str | None = field(default=None, repr=False)
    tls_cert: str | None = field(default=None, repr=False)
    tls_key: str | None = field(default=None, repr=False)
    timeout: float = 120.0
    """Seconds to connect to the scheduler."""

    def __post_init__(self) -> None:
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ValueError("workers must be a positive int")
        if self.memory_limit is not None and (
            isinstance(self.memory_limit, bool)
            or not isinstance(self.memory_limit, int)
            or self.memory_limit < 1
        ):
            raise ValueError("memory_limit must be a positive int (bytes)")
        tls = (self.tls_ca, self.tls_cert, self.tls_key)
        if any(v is not None for v in tls) and not all(isinstance(v, str) and v for v in tls):
            raise ClusterError(
                "TLS needs all three of a CA, a client certificate and its key",
                hint="give tls_ca, tls_cert and tls_key (paths or PEM text)",
            )
        if self.scheduler is None:
            return
        if not isinstance(self.scheduler, str):
            raise TypeError("scheduler must be an address string")
        parts = urlsplit(self.scheduler if "://" in self.scheduler else f"tcp://{self.scheduler}")
        scheme, host = parts.scheme, parts.hostname or ""
        if scheme not in ("tcp", "tls") or not host:
            raise ClusterError(
                f"not a Dask scheduler address: {self.scheduler!r}",
                hint="use tls://HOST:PORT (or tcp://127.0.0.1:PORT on this host)",
            )
        if scheme == "tls" and not self.authenticated:
            raise ClusterError(
                "a tls:// scheduler needs a CA, a client certificate and its key",
                hint="set Dask's distributed.comm.tls.* options or pass tls_ca/tls_cert/tls_key",
            )
        if scheme == "tcp" and not _loopback(host):
            raise ClusterError(
                f"refusing an unauthenticated scheduler on another host ({host}): a job "
                "hands its workers keys, so only certified workers may join",
                hint="run the cluster with TLS (tls:// address, CA and client certificate)",
            )

    @property
    def authenticated(self) -> bool:
        """True if the connection is mutual TLS (always true for a LocalCluster of the job)."""
        return self.scheduler is None or self.tls_ca is not None

    @property
    def local(self) -> bool:
        """True if the job starts its own LocalCluster on this host."""
        return self.scheduler is None

    @classmethod
    def from_dask_config(cls, scheduler: str | None, **kwargs: Any) -> Cluster:
        """A cluster whose TLS files come from Dask's configuration (if set there)."""
        import dask.config

        def get(key: str) -> str | None:
            value = dask.config.get(f"distributed.comm.tls.{key}", default=None)
            return value if isinstance(value, str) and value else None

        ca, cert, key = get("ca-file"), get("client.cert"), get("client.key")
        if scheduler is None or ca is None:
            return cls(scheduler, **kwargs)
        return cls(scheduler, tls_ca=ca, tls_cert=cert, tls_key=key, **kwargs)

    def to_doc(self) -> dict[str, Any]:
        """The child's copy (plain JSON types)."""
        return {
            "scheduler": self.scheduler,
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
            "tls": None
            if self.tls_ca is None
            else {"ca": self.tls_ca, "cert": self.tls_cert, "key": self.tls_key},
            "timeout": self.timeout,
        }


LOST_POLL = 0.05
"""(Driver child) Seconds between two looks of :func:`closed_when_lost` at its client."""
LOST_SETTLE = 5.0
"""(Driver child) Seconds :func:`scheduler_lost` waits, for a call that failed on a closed
connection, for the client to see that its scheduler is gone (the call's connection and
the client's own one close at the same moment; the client may learn it a moment later)."""

_addresses: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def scheduler_lost(client: Any, settle: float = 0.0) -> str | None:
    """(Driver child) Why a job cannot go on if its Dask client lost the scheduler, else None.

    When the client's connection to the scheduler closes (the scheduler was killed, its
    host went away), Dask cancels every future of the client at once and then tries to
    reconnect for the client's ``timeout`` (:attr:`Cluster.timeout`, 120 s by default,
    whatever the job's own ``timeout``); every call made meanwhile (``register_plugin``,
    ``client.run`` to provision workers, ``scheduler_info``, ``cancel``) waits for that, and
    futures submitted meanwhile are never cancelled. :func:`closed_when_lost` closes such a
    client at once, which fails those calls; the job stops as soon as it sees this, and its
    driver child is retired (see :mod:`keysplit.jobs._driver`). ``settle``: seconds to wait
    for a client that still says "running" to notice (after a call failed on a closed
    connection)."""
    deadline = time.monotonic() + settle
    while getattr(client, "status", "running") == "running":
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
    address = _addresses.get(client) or getattr(getattr(client, "scheduler", None), "address", None)
    return f"lost the connection to the Dask scheduler at {address or 'its address'}"


@contextlib.contextmanager
def closed_when_lost(client: Any, close_timeout: float) -> Iterator[None]:
    """(Driver child) While inside, close ``client`` as soon as it loses its scheduler.

    Dask has no public setting for its reconnect wait (the client's connect timeout): a
    thread looks at the client's ``status`` every :data:`LOST_POLL` seconds and, once it says
    "connecting" (the connection is gone, Dask tries again), closes the client (public
    ``Client.close``). Closing cancels the client's futures and its pending connections, so
    whatever call the job is in fails at once and :func:`scheduler_lost` names the cause."""
    with contextlib.suppress(AttributeError, TypeError):
        _addresses[client] = str(client.scheduler.address)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(LOST_POLL):
            status = getattr(client, "status", "running")
            if status == "connecting":
                with contextlib.suppress(Exception):
                    client.close(timeout=close_timeout)
                return
            if status != "running":  # closed by its owner
                return

    thread = threading.Thread(target=watch, name="keysplit-scheduler-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def local_workers(doc: Mapping[str, Any]) -> int:
    """(Driver child) The worker processes a job's LocalCluster starts: ``workers``, or
    Dask's own default for this host (one per CPU for single-threaded workers)."""
    if doc["workers"] is not None:
        return int(doc["workers"])
    from dask.system import CPU_COUNT

    return max(1, CPU_COUNT // max(1, int(doc["threads_per_worker"])))


def local_memory(doc: Mapping[str, Any]) -> int:
    """(Driver child) Each worker's memory limit in a job's LocalCluster: ``memory_limit``,
    or Dask's own default (this host's memory shared evenly among :func:`local_workers`),
    given to the LocalCluster explicitly so the job sizes its parts for what its workers
    have, not for what is connected when it plans."""
    if doc["memory_limit"] is not None:
        return int(doc["memory_limit"])
    from distributed.system import MEMORY_LIMIT  # what Dask's "auto" shares out

    return max(1, int(MEMORY_LIMIT) // local_workers(doc))


def planned_workers(doc: Mapping[str, Any]) -> list[tuple[int, int]] | None:
    """(Driver child) ``(memory limit, threads)`` of each worker a job plans for, from its
    cluster's options (:meth:`Cluster.to_doc`) alone (a memory limit of 0: none stated);
    None for a scheduler given no ``workers`` (then: the workers connected when it plans).

    Before, a rewrap planned 4 partitions per thread and a dataset job sized its parts by
    the memory limits of the workers *connected at that moment*: a worker restarting or
    slow to join changed the plan, so it depended on timing, not on the options."""
    threads = max(1, int(doc["threads_per_worker"]))
    if doc["scheduler"] is None:
        return [(local_memory(doc), threads)] * local_workers(doc)
    if doc["workers"] is None:
        return None
    return [(int(doc["memory_limit"] or 0), threads)] * int(doc["workers"])


def planned_threads(doc: Mapping[str, Any]) -> int | None:
    """(Driver child) The worker threads a job plans its parts for, from its cluster's
    options (:meth:`Cluster.to_doc`) alone; None for a scheduler given no ``workers``.

    Before, a dataset job planned one part per thread *connected at that moment*: under
    load a worker restarting or slow to join (the scheduler drops a worker whose
    connection broke, and its nanny starts a new one) made a job of 2 parts one of 1, so
    the output's part count depended on timing, not on the input and the options."""
    workers = planned_workers(doc)
    return None if workers is None else sum(threads for _, threads in workers)


def check_timeout(value: float | None) -> float | None:
    """A job's ``timeout``: None (wait as long as it takes) or finite positive seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise ValueError("timeout must be a finite positive number of seconds (or None)")
    return float(value)
