"""A bulk job's driver process is ``sys.executable -m keysplit._jobs_boot``
(:mod:`keysplit.jobs._isolate`). A frozen build (PyInstaller, cx_Freeze: ``sys.frozen``,
``sys.executable`` the application itself) or an interpreter embedded in another program
has no interpreter to start: the job says so, before anything is started or asked for."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")
import pandas as pd
from service_helpers import KEYSPLIT

from keysplit import Keyring, jobs
from keysplit.jobs import JobError, serve_keys

NAMES = ["alice", "bob", "carol"]
WHY = "bulk jobs need a Python interpreter to start their driver process: "
_CASES = itertools.count()


def _frozen(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "frozen":  # as PyInstaller sets them: sys.executable is the keysplit app
        monkeypatch.setattr(sys, "frozen", True, raising=False)
        monkeypatch.setattr(sys, "executable", KEYSPLIT)
    else:  # an interpreter embedded in another program
        monkeypatch.setattr(sys, "executable", "")


def _started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The argv of every process started from now on (they still start)."""
    started: list[Any] = []
    real = subprocess.Popen.__init__

    def init(self: subprocess.Popen[bytes], args: Any, *a: Any, **k: Any) -> None:
        started.append(args)
        real(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    return started


def _cluster() -> jobs.Cluster:
    return jobs.Cluster(timeout=2000 + next(_CASES))  # never a driver kept by another test


@pytest.mark.parametrize("how", ["frozen", "embedded"])
def test_a_job_without_an_interpreter_to_start_says_so_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Before: a frozen build ran the application itself with ``-m keysplit.jobs._driver``
    (keysplit's CLI: a usage error, exit 2), and the job failed with "the job driver
    process ended without a result (exit code 2)"; an empty ``sys.executable`` raised
    PermissionError out of ``subprocess``, not a keysplit error."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    ds = tmp_path / "in"
    ds.mkdir()
    pd.DataFrame({"user": ["u/1", "u/2"], "body": [b"a", b"b"]}).to_parquet(ds / "p.parquet")
    with kr.unseal([shares["alice"], shares["bob"]]) as ukr:
        ukr.encrypt(b"x", subject="u/1")  # a data key under KEK v1 ...
        ukr.rotate()  # ... stale: the rewrap has work for a driver
        with serve_keys(ukr) as source:
            _frozen(monkeypatch, how)
            started = _started(monkeypatch)
            with pytest.raises(JobError) as e:
                jobs.rewrap(ukr, cluster=_cluster())
            assert str(e.value).startswith(WHY) and how in str(e.value), e.value
            with pytest.raises(JobError, match=WHY):
                jobs.encrypt_dataset(ds, tmp_path / "out", "body", "user", service=source,
                                     cluster=_cluster())  # fmt: skip
            assert started == []
        assert ukr.status().keys_by_version == {1: 1}  # nothing was rewrapped
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "kr"]  # no stage either


def test_the_cli_says_so_before_it_asks_for_a_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keysplit_cli.app import app
    from typer.testing import CliRunner

    kr, _ = Keyring.create(tmp_path / "kr", 2, NAMES)
    ds = tmp_path / "in"
    ds.mkdir()
    pd.DataFrame({"user": ["u/1"], "body": [b"a"]}).to_parquet(ds / "p.parquet")
    _frozen(monkeypatch, "frozen")
    started = _started(monkeypatch)
    runs = [
        ["rewrap", str(kr.path), "--dask"],
        ["encrypt-dataset", str(ds), str(tmp_path / "out"), "--column", "body",
         "--subject-column", "user", "--keyring", str(kr.path)],
    ]  # fmt: skip
    for args in runs:
        r = CliRunner().invoke(app, args, input="")
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.startswith(f"error: {WHY}a frozen build"), (args, r.stderr)
        assert r.stderr.count("error:") == 1 and "Traceback" not in r.output
        assert "share" not in r.stderr.lower(), r.stderr  # no quorum was asked for
    assert started == []
    assert not (tmp_path / "out").exists()
