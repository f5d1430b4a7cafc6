"""keysplit.jobs on Dask: rewrap keys/s and record-encryption rows/s vs workers, and the
scheduler's overhead per task, each against the in-process path in the same run.

* ``rewrap-jobs``: a SQLite key store of N subjects; every repeat rotates (all keys stale)
  and rewraps everything. Baseline: ``UnsealedKeyring.rewrap`` in this process; then
  ``keysplit.jobs.rewrap`` on a LocalCluster of 1 and 2 worker processes (1 thread each),
  timed end to end (the job's driver child process, plan, KEK provisioning, partition
  tasks, commits).
* ``encrypt-jobs``: a Parquet dataset (8 files) of N rows of 256-byte values over N/10
  subjects whose keys exist, sealed into a new dataset. Baseline: in this process, pandas
  reads it, ``UnsealedKeyring.encrypt_many`` seals all rows, pandas writes it; then
  ``keysplit.jobs.encrypt_dataset`` (workers read, seal, write; keys fetched per partition
  in one batch from ``jobs.serve_keys()`` over a loopback Unix socket).
* ``rewrap-jobs-pg``: the same rewrap with the key store on PostgreSQL 15 (a throwaway
  server, benchmarks/_pgserver.py): in process, then 1 and 2 workers.
* ``dask-task``: a no-op task: direct calls vs ``client.map`` + ``gather`` round trips on 2
  workers; the note gives the scheduler overhead per task in microseconds.

Every job runs its Dask client in a child process (SECURITY.md: the keyring process never
deserializes what the cluster produced); its start (~1-3 s: Python, Dask) is inside each
timed job, so ratios improve with N. ``--workers-only`` is not offered: the in-process
baseline is always measured in the same run. ``KEYSPLIT_BENCH_JOBS=encrypt`` in the
environment gives the ``encrypt-jobs`` rows only (the store is populated as in a whole run,
the rewrap, PostgreSQL and task rows are skipped): about a minute at ``--full`` instead of
seven, for iterating on the dataset jobs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from keysplit import Keyring, UnsealedKeyring

from .harness import measure, progress, row, run_standalone


def _noop(x: int) -> int:
    return x


@contextmanager
def _cluster(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers, timeout=120)
        yield client


def _populate(ku: UnsealedKeyring, n: int) -> None:
    keks = ku.keks_for_rewrap().only([])
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        raw = np.frombuffer(os.urandom(16 * m), np.uint8).reshape(m, 16)
        ku.store.insert_many(keks.wrap([f"user-{lo + i:08d}" for i in range(m)], raw))


def dataset(ku: UnsealedKeyring, tmp: Path, n_rows: int) -> tuple[Path, Path, Callable[[], None]]:
    """The encrypt rows' dataset: ``tmp/in`` (8 Parquet files, ``n_rows`` rows of 256 bytes
    over ``n_rows / 10`` subjects whose keys exist), the output directory ``tmp/out`` and
    the in-process baseline (pandas reads, ``encrypt_many`` seals, pandas writes)."""
    import pandas as pd

    subjects = [f"user-{i % (n_rows // 10):08d}" for i in range(n_rows)]
    values = [os.urandom(256) for _ in range(1000)] * (n_rows // 1000)
    src, dst = tmp / "in", tmp / "out"
    src.mkdir()
    frame = pd.DataFrame({"s": subjects, "v": values})
    for i, part in enumerate(np.array_split(np.arange(n_rows), 8)):
        frame.iloc[part].to_parquet(src / f"part.{i}.parquet")
    ku.encrypt_many(subjects[: n_rows // 10], values[: n_rows // 10])  # keys exist

    def in_process() -> None:
        df = pd.read_parquet(src)
        df["v"] = ku.encrypt_many(df["s"].tolist(), df["v"].tolist())
        dst.mkdir()
        df.to_parquet(dst / "part.0.parquet")

    return src, dst, in_process


def _noop_loop(m: int) -> list[int]:
    return [_noop(i) for i in range(m)]


def _noop_tasks(client: Any, m: int) -> list[int]:
    """``m`` no-op tasks through the Dask ``client`` (what a task costs, against a call)."""
    done: list[int] = client.gather(client.map(_noop, range(m), pure=False))
    return done


def _jobs_rewrap(ku: UnsealedKeyring, cluster: Any) -> int:
    from keysplit import jobs

    return jobs.rewrap(ku, cluster=cluster).rewrapped


def _rewrap_rate(ku: UnsealedKeyring, n: int, fn: Callable[[], int], repeats: int) -> Any:
    def once() -> None:
        done = fn()
        assert done == n, (done, n)

    return measure(once, n, repeats, warmup=0, setup=ku.rotate)


def _pg_rows(n_keys: int, repeats: int) -> list[dict[str, Any]]:
    """Rewrap on a PostgreSQL key store: in process, then 1 and 2 workers (same run)."""
    from keysplit import jobs

    from ._pgserver import PostgresUnavailable, throwaway_postgres

    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(throwaway_postgres(durable=True))
        except PostgresUnavailable as exc:
            progress(f"rewrap-pg: skipped ({exc})")
            return rows
        with tempfile.TemporaryDirectory() as tmp:
            kr, shares = Keyring.create(
                Path(tmp) / "kr", 2, ["a", "b", "c"], store_url=f"{server.url}&schema=bench"
            )
            with kr.unseal([shares["a"], shares["b"]]) as ku:
                progress(f"rewrap-pg: populating {n_keys:,} keys")
                _populate(ku, n_keys)
                progress("rewrap-pg: in process")
                base = _rewrap_rate(ku, n_keys, lambda: ku.rewrap().rewrapped, repeats)
                rows.append(
                    row(
                        "rewrap-jobs-pg",
                        "UnsealedKeyring.rewrap (in process), PostgreSQL",
                        n_keys,
                        "keys/s",
                        base,
                        baseline=True,
                    )
                )
                for workers in (1, 2):
                    with _cluster(workers) as client:
                        cluster = jobs.Cluster(client.scheduler.address)
                        progress(f"rewrap-pg: dask, {workers} worker(s)")
                        stats = _rewrap_rate(
                            ku,
                            n_keys,
                            partial(_jobs_rewrap, ku, cluster),
                            repeats,
                        )
                        rows.append(
                            row(
                                "rewrap-jobs-pg",
                                f"keysplit.jobs.rewrap, {workers} worker(s), PostgreSQL",
                                n_keys,
                                "keys/s",
                                stats,
                                workers=workers,
                            )
                        )
    return rows


def _encrypt_only() -> bool:
    return os.environ.get("KEYSPLIT_BENCH_JOBS", "") == "encrypt"


def run(quick: bool) -> list[dict[str, Any]]:
    from keysplit import jobs

    n_keys = 100_000 if quick else 1_000_000
    n_rows = 100_000 if quick else 1_000_000
    repeats = 3
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        kr, shares = Keyring.create(Path(tmp) / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            progress(f"rewrap: populating {n_keys:,} keys")
            _populate(ku, n_keys)
            if not _encrypt_only():
                progress("rewrap: in process")
                base = _rewrap_rate(ku, n_keys, lambda: ku.rewrap().rewrapped, repeats)
                rows.append(
                    row(
                        "rewrap-jobs",
                        "UnsealedKeyring.rewrap (in process)",
                        n_keys,
                        "keys/s",
                        base,
                        baseline=True,
                    )
                )
            src, dst, in_process = dataset(ku, Path(tmp), n_rows)

            def clean() -> None:
                shutil.rmtree(dst, ignore_errors=True)

            progress("encrypt: in process")
            enc_base = measure(in_process, n_rows, repeats, setup=clean)
            enc_rows = [
                row(
                    "encrypt-jobs",
                    "read Parquet, UnsealedKeyring.encrypt_many, write (in process)",
                    n_rows,
                    "rows/s",
                    enc_base,
                    baseline=True,
                )
            ]
            task_rows: list[dict[str, Any]] = []
            for workers in (1, 2):
                with _cluster(workers) as client:
                    # jobs run their Dask client in a child process (SECURITY.md), on this
                    # loopback cluster; each job's time includes starting that process
                    cluster = jobs.Cluster(client.scheduler.address)
                    if not _encrypt_only():
                        progress(f"rewrap: dask, {workers} worker(s)")
                        stats = _rewrap_rate(
                            ku,
                            n_keys,
                            partial(_jobs_rewrap, ku, cluster),
                            repeats,
                        )
                        rows.append(
                            row(
                                "rewrap-jobs",
                                f"keysplit.jobs.rewrap, {workers} worker(s)",
                                n_keys,
                                "keys/s",
                                stats,
                                workers=workers,
                            )
                        )
                    progress(f"encrypt: dask, {workers} worker(s)")
                    with jobs.serve_keys(ku) as source:
                        stats = measure(
                            partial(
                                jobs.encrypt_dataset,
                                src,
                                dst,
                                "v",
                                "s",
                                service=source,
                                cluster=cluster,
                            ),
                            n_rows,
                            repeats,
                            setup=clean,
                        )
                    enc_rows.append(
                        row(
                            "encrypt-jobs",
                            f"keysplit.jobs.encrypt_dataset, {workers} worker(s)",
                            n_rows,
                            "rows/s",
                            stats,
                            workers=workers,
                        )
                    )
                    if workers == 2 and not _encrypt_only():
                        progress("dask: task overhead")
                        m = 2000 if quick else 10_000
                        direct = measure(partial(_noop_loop, m), m, repeats)
                        tasks = measure(
                            partial(_noop_tasks, client, m),
                            m,
                            repeats,
                        )
                        task_rows = [
                            row("dask-task", "direct call", m, "tasks/s", direct, baseline=True),
                            row(
                                "dask-task",
                                "client.map + gather, 2 workers",
                                m,
                                "tasks/s",
                                tasks,
                                note=f"{1e6 / tasks[0]:.0f} us per task (median)",
                            ),
                        ]
    if _encrypt_only():
        return enc_rows
    return rows + enc_rows + _pg_rows(n_keys, repeats) + task_rows


if __name__ == "__main__":
    import sys

    run_standalone(run, sys.argv)
