"""Red-team variants of issue 21 item 2: the keyring process never runs a Dask client.

``jobs.*_dataset(cluster=...)`` and ``jobs.rewrap`` run their client in a child process;
``jobs.scan`` takes a Dask ``client`` of the caller's and used to compute on it in the
calling process, so with a :func:`serve_keys` source (the keyring unsealed right there)
every partition result was unpickled in the keyring process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

import dask.dataframe as dd
import pandas as pd

from keysplit import Keyring
from keysplit.jobs import JobError, scan, serve_keys


class _RecordingClient:
    """Stands in for a distributed Client: any use of it is recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        raise AssertionError(f"the keyring process used its Dask client ({name})")


def test_scan_with_a_client_is_refused_beside_the_keyring(tmp_path: Path) -> None:
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    ddf = dd.from_pandas(pd.DataFrame({"user": ["u/1"], "body": [b"x"]}), npartitions=1)
    client = _RecordingClient()
    with kr.unseal([shares["a"], shares["b"]]) as ukr, serve_keys(ukr) as source:
        with pytest.raises(JobError, match="holds the unsealed keyring") as info:
            scan(ddf, "body", "user", service=source, client=client)  # type: ignore[arg-type]
        assert "scan_dataset" in (info.value.hint or "")
        assert client.calls == []
        report = scan(ddf, "body", "user", service=source)  # client=None: in this process
        assert report.checked == 1 and [b.reason for b in report.bad] == ["no data key"]
