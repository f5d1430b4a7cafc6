"""Bulk jobs on a Dask ``distributed`` cluster: rewrap data keys, encrypt datasets.

Needs the optional extra ``keysplit[dask]``. :func:`rewrap` moves a store's data keys to
the current KEK in parallel (workers get only the KEKs involved, sealed to a per-job key
of each worker); :func:`encrypt_column` / :func:`decrypt_column` / :func:`scan` work on
Dask DataFrames (so on Parquet datasets), fetching the data keys each partition needs in
one batch from the picklable :class:`~keysplit.keyring.DataKeys` they are given
(:class:`ServiceDataKeys` for ``keysplit serve``, :func:`serve_keys` for a keyring
unsealed in the driver) and running the library's one record engine over them. SECURITY.md says
exactly what a compromised worker learns.
"""

from __future__ import annotations

try:
    import distributed as _distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"keysplit.jobs needs Dask distributed ({exc}); install the 'dask' extra: "
        "pip install '.[dask]' in a keysplit checkout (not on PyPI)"
    ) from None

from ._isolate import JobError, check_driver
from .cluster import Cluster, ClusterError
from .datakeys import LoopbackDataKeys, ServiceDataKeys, serve_keys
from .records import (
    BadRecord,
    ScanReport,
    check_columns,
    check_destination,
    decrypt_column,
    decrypt_dataset,
    encrypt_column,
    encrypt_dataset,
    scan,
    scan_dataset,
)
from .rewrap import SubjectRange, plan, rewrap

__all__ = [
    "BadRecord",
    "Cluster",
    "ClusterError",
    "JobError",
    "LoopbackDataKeys",
    "ScanReport",
    "ServiceDataKeys",
    "SubjectRange",
    "check_columns",
    "check_destination",
    "check_driver",
    "decrypt_column",
    "decrypt_dataset",
    "encrypt_column",
    "encrypt_dataset",
    "plan",
    "rewrap",
    "scan",
    "scan_dataset",
    "serve_keys",
]
