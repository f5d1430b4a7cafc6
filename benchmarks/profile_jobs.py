"""Where ``jobs.encrypt_dataset`` spends its time (by hand; bench_jobs' dataset and cluster).

    .venv/bin/python -m benchmarks.profile_jobs [--workers N] [--rows N] [--repeats N]

bench_jobs gives the rate; this gives the parts of one job, wall clock, no profiler (a
profiler in the worker inflated the engine's per-record Python several times over): the
task functions and the record engine are wrapped on the workers through ``client.run``
(tasks look them up by module attribute), the key server's export is timed in this
process (the keyring's), and the scheduler's task stream gives each task's compute time.
Medians over the repeats after one warm-up job, in ms and as a share of the job; the
in-process baseline of bench_jobs is timed before each job. Parts overlap (prefetch
thread, two workers), so shares need not add up to 100 %.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _wrap_on_worker(dask_worker: Any = None) -> None:
    """(On each worker) time the job's steps into ``keysplit.jobs._parquet._times``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import keysplit.jobs._cache as cache
    import keysplit.jobs._parquet as part
    import keysplit.jobs.datakeys as dk
    import keysplit.keyring.records as engine
    import keysplit.record as record

    if hasattr(part, "_times"):
        return
    times: dict[str, float] = {}
    part._times = times  # type: ignore[attr-defined]

    def wrap(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label] = times.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)

    wrap(part, "run_part", "worker: whole part task")
    wrap(part, "_read", "worker: read Parquet")
    wrap(part, "_transform", "worker: seal the column (all)")
    wrap(part, "_group", "worker: rows grouped by subject")
    wrap(part, "_seal", "worker: sealing (engine calls, key batches)")
    wrap(part._KeyFetch, "wait", "worker: waiting for a key batch")
    wrap(part, "_binary", "worker: output array built")
    wrap(engine.Records, "encrypt_many", "worker: Records.encrypt_many")
    wrap(cache._JobKeys, "resolve", "worker: keys (wait, fetch, derive, look up)")
    wrap(cache._JobKeys, "_fetch", "worker: keys fetched + derived")
    wrap(dk.LoopbackDataKeys, "export", "worker: key fetch over the socket")
    wrap(record, "seal_planned", "worker: AES-GCM loop (seal_planned)")
    wrap(pq, "write_table", "worker: pq.write_table")
    wrap(os, "fsync", "worker: fsync")  # (keysplit._fileio calls os.fsync)
    wrap(part, "_sizes", "worker: row group sizes (footers)")
    wrap(part, "_spread", "worker: nulls spread back")
    wrap(pq.ParquetWriter, "write_table", "worker: ParquetWriter.write_table")
    wrap(pq.ParquetWriter, "close", "worker: ParquetWriter.close")
    wrap(pc, "take", "worker: take (group order, back)")  # (pyarrow's Array.take calls it)
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            label = "worker: garbage collection (all threads)"
            times[label] = times.get(label, 0.0) + time.perf_counter() - gc_start[0]

    gc.callbacks.append(on_gc)
    # (the engine calls record.seal_planned through its alias ``fmt``: the same module)


def _take_times(dask_worker: Any = None) -> dict[str, float]:
    import keysplit.jobs._parquet as part

    times: dict[str, float] = part._times  # type: ignore[attr-defined]
    out = dict(times)
    times.clear()
    return out


def _peak_rss_mb(dask_worker: Any = None) -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    from keysplit import Keyring, jobs
    from keysplit.keyring.records import Records

    from .bench_jobs import dataset

    n = args.rows
    tmp = Path(tempfile.mkdtemp())
    try:
        kr, shares = Keyring.create(tmp / "kr", 2, ["a", "b", "c"])
        with kr.unseal([shares["a"], shares["b"]]) as ku:
            src, dst, in_process = dataset(ku, tmp, n)

            served = [0.0]
            export: Callable[..., Any] = Records.export

            def timed_export(self: Records, subjects: Any, *, create: bool = False) -> Any:
                t0 = time.perf_counter()
                try:
                    return export(self, subjects, create=create)
                finally:
                    served[0] += time.perf_counter() - t0

            Records.export = timed_export  # type: ignore[method-assign]
            with (
                LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=40,
                ) as lc,
                Client(lc) as client,
            ):
                client.wait_for_workers(args.workers)
                client.run(_wrap_on_worker)
                cluster = jobs.Cluster(client.scheduler.address)
                runs: list[dict[str, float]] = []
                with jobs.serve_keys(ku) as source:
                    for i in range(args.repeats + 1):
                        shutil.rmtree(dst, ignore_errors=True)
                        t0 = time.perf_counter()
                        in_process()
                        baseline = time.perf_counter() - t0
                        shutil.rmtree(dst, ignore_errors=True)
                        client.run(_take_times)
                        served[0] = 0.0
                        start = time.time()
                        t0 = time.perf_counter()
                        jobs.encrypt_dataset(src, dst, "v", "s", service=source, cluster=cluster)
                        total = time.perf_counter() - t0
                        run = {"job (encrypt_dataset)": total, "baseline (in process)": baseline}
                        run["tasks' compute (sum)"] = sum(
                            s["stop"] - s["start"]
                            for t in client.get_task_stream(start=start)
                            for s in t["startstops"]
                            if s["action"] == "compute"
                        )
                        run["keyring process: key export"] = served[0]
                        for times in client.run(_take_times).values():
                            for k, v in times.items():
                                run[k] = run.get(k, 0.0) + v
                        if i:  # the first job warms the driver child and the workers
                            runs.append(run)
                peaks = client.run(_peak_rss_mb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
    job = med["job (encrypt_dataset)"]
    print(f"encrypt_dataset, {n:,} rows in 8 files, {args.workers} worker(s), ")
    print(f"medians of {args.repeats} jobs; load {os.getloadavg()[0]:.1f}")
    for k, v in med.items():
        print(f"  {k:46s} {v * 1e3:8.1f} ms {100 * v / job:6.1f} %")
    print(f"  workers' peak RSS: {', '.join(f'{v:.0f} MB' for v in peaks.values())}")
    print(f"  ratio to the in-process baseline: {med['baseline (in process)'] / job:.3f}")


if __name__ == "__main__":
    main()
