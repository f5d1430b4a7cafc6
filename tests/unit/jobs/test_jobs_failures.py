"""Red team (issue 23 follow-up): dataset jobs that fail part-way, and keys across jobs.

* A job that fails after some of its parts were written (a subject shredded whose rows
  are in a later part; the key fetch thread's error surfaces in the engine call) must
  not leave a destination that reads as a finished dataset: before, ``dst`` kept the
  parts written so far (plaintext, for a decrypt), and ``pyarrow.parquet.read_table(dst)``
  read them as if they were the whole dataset.
* A subject shredded and then used again between two jobs gets a new key; the second
  job's worker must seal with the new key, never the first job's derived key.

In process (``cluster=None``), so parts run one after another and the failure point is
deterministic.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from service_helpers import pid_gone as _pid_gone

import keysplit._fileio as fileio
import keysplit.jobs.records as jr
from keysplit import Keyring, UnsealedKeyring, jobs
from keysplit import errors as ke
from keysplit.jobs import serve_keys

NAMES = ["alice", "bob", "carol"]


def _dataset(path: Path, n: int = 600) -> None:
    """One file of many row groups; ``late/x`` owns only the last rows."""
    users = [f"u/{i % 13}" for i in range(n - 10)] + ["late/x"] * 10
    path.mkdir()
    table = pa.table({"id": list(range(n)), "user": users, "body": [b"v%d" % i for i in range(n)]})
    pq.write_table(table, path / "big.parquet", row_group_size=50)


def _unsealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UnsealedKeyring:
    """A keyring unsealed, the dataset ``in`` beside it, parts of ~2 KB (many, in order)."""
    monkeypatch.setattr(jr, "PART_BYTES", 2048)
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    _dataset(tmp_path / "in")
    return kr.unseal([shares["bob"], shares["carol"]])


@pytest.mark.parametrize("kind", ["decrypt", "bad-file"])
def test_a_job_failing_part_way_leaves_no_dataset_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
        assert len(list((tmp_path / "enc").iterdir())) > 3
        if kind == "decrypt":
            assert ukr.shred("late/x") is True
            with pytest.raises(ke.KeysplitError):
                jobs.decrypt_dataset(
                    tmp_path / "enc", tmp_path / "out", "body", "user", service=src
                )
        else:  # a later file of another column type: another failure, same rule
            bad = pq.read_table(tmp_path / "enc" / "part.00003.parquet")
            bad = bad.set_column(2, "body", pa.array([1] * bad.num_rows, pa.int64()))
            pq.write_table(bad, tmp_path / "enc" / "part.00003.parquet")
            with pytest.raises(ke.KeysplitError):
                jobs.decrypt_dataset(
                    tmp_path / "enc", tmp_path / "out", "body", "user", service=src
                )
    out = tmp_path / "out"
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"a failed job left {left}"
    stray = [p.name for p in tmp_path.iterdir() if p.name not in {"enc", "in", "kr", "out"}]
    assert stray == [], f"staging left behind: {stray}"


def test_a_finished_job_fills_an_existing_empty_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "enc").mkdir()  # an empty directory is a valid destination
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        n = jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
        assert n == 600
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_bytes(b"keep")
        with pytest.raises(ke.KeysplitError, match="not an empty directory"):
            jobs.encrypt_dataset(tmp_path / "in", tmp_path / "full", "body", "user", service=src)
    assert (tmp_path / "full" / "x").read_bytes() == b"keep"
    assert (tmp_path / "enc").stat().st_mode & 0o777 == 0o700
    assert pq.read_table(tmp_path / "enc").num_rows == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "full", "in", "kr"]


def test_shred_then_reuse_between_jobs_never_seals_with_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "e1", "body", "user", service=src)
        assert ukr.shred("late/x") is True
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "e2", "body", "user", service=src)
        for part in sorted((tmp_path / "e2").iterdir()):
            t = pq.read_table(part).to_pydict()
            for u, rec, i in zip(t["user"], t["body"], t["id"], strict=True):
                assert ukr.decrypt(rec, subject=u) == b"v%d" % i
        first = pq.read_table(tmp_path / "e1").to_pydict()
        late = [r for u, r in zip(first["user"], first["body"], strict=True) if u == "late/x"]
        with pytest.raises(ke.ShreddedError):
            ukr.decrypt(late[0], subject="late/x")


def test_a_killed_jobs_stage_is_removed_by_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver killed mid-job (SIGKILL: no ``finally``) leaves its staging directory, a
    decrypt's plaintext parts in it. The next job for the same destination removes the
    stages of this host's dead processes, and only those: not a live process's, not
    another host's (a shared directory), never through a symbolic link."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead, host = proc.pid, fileio._host_tag()
    other_host = "%08x" % (int(host, 16) ^ 1)

    def stage(host_tag: str, pid: int, tail: str) -> Path:
        return tmp_path / f".enc.keysplit-{host_tag}-{pid}-{tail}"

    killed = stage(host, dead, "k1lled")
    killed.mkdir()
    (killed / "part.00000.parquet").write_bytes(b"decrypted rows")
    live, elsewhere = stage(host, os.getpid(), "l1ve"), stage(other_host, dead, "0ther")
    live.mkdir()
    elsewhere.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_bytes(b"not a stage")
    stage(host, dead, "l1nk").symlink_to(victim, target_is_directory=True)
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
    assert not killed.exists(), "the dead job's stage (plaintext parts) is still there"
    assert live.is_dir() and elsewhere.is_dir(), "a live or another host's stage was removed"
    assert (victim / "keep").read_bytes() == b"not a stage"
    assert pq.read_table(tmp_path / "enc").num_rows == 600


_ORPHAN = """
import os, sys, threading
from pathlib import Path
from keysplit import _fileio
from keysplit.jobs import _driver
_driver.ORPHAN_GRACE = 0.2
root = Path(sys.argv[1])
done = _fileio.staging_dir(root / "done")
(done / "part.00000.parquet").write_bytes(b"finished rows")
os.rename(done, root / "done")  # a job that finished: renamed into place
stage = _fileio.staging_dir(root / "dec")
(stage / "part.00000.parquet").write_bytes(b"decrypted rows")
r, w = os.pipe()
threading.Thread(target=_driver._watch_parent, args=(r, []), daemon=True).start()
os.close(w)  # the keyring process is gone: EOF on the lifeline
threading.Event().wait(60)  # a job whose cleanup never comes (stuck on its workers)
"""


def test_an_orphaned_driver_killed_past_its_grace_removes_its_jobs_stage(tmp_path: Path) -> None:
    """A driver child whose keyring process died closes its Dask client so that its job
    fails and removes its stage; if the job has not ended ORPHAN_GRACE later, the child
    kills itself (SIGKILL: no ``finally``). Before, that left the job's stage (a decrypt's
    plaintext parts) until a later job to the same target on this host: seen once in CI,
    test_a_driver_child_whose_keyring_process_was_killed_ends_its_job left
    '.enc.keysplit-...'. Now the child removes the stages its jobs made first; a finished
    job's output (renamed into place) is left alone. A real process, its job stuck."""
    r = subprocess.run(
        [sys.executable, "-c", _ORPHAN, str(tmp_path)],
        start_new_session=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]
    assert (tmp_path / "done" / "part.00000.parquet").read_bytes() == b"finished rows"


_FORKED_THEN_KILLED = """
import os, signal, sys
from keysplit.jobs import _isolate
out = open(sys.argv[1], "w", buffering=1)
proc = _isolate._start()  # an idle driver child, as between two jobs
keep = _isolate._lifelines[proc]
pid = os.fork()  # as gunicorn --preload or multiprocessing's 'fork' would
if pid == 0:  # the forked child lives on, doing its own work, until the test ends it
    try:
        os.fstat(keep)
    except OSError:
        out.write("child-closed\\n")
    else:
        out.write("child-holds\\n")
    signal.pause()
    os._exit(0)
os.fstat(keep)  # the parent's own end is still open
out.write(f"driver {proc.pid}\\nfork {pid}\\n")
out.close()
os.kill(os.getpid(), signal.SIGKILL)  # the keyring process dies
"""


def _noted(notes: Path) -> dict[str, int]:
    """The driver child's and the forked child's pids a script noted (those noted yet)."""
    words = notes.read_text().split() if notes.exists() else []
    return {w: int(n) for w, n in itertools.pairwise(words) if w in ("driver", "fork")}


def _kill_noted(notes: Path) -> None:
    """(Cleanup) SIGKILL the driver child's group and the forked child a script noted."""
    pids = _noted(notes)
    if "driver" in pids and not _pid_gone(pids["driver"]):
        with contextlib.suppress(OSError):
            os.killpg(pids["driver"], signal.SIGKILL)  # its group: started as leader
    if "fork" in pids:
        with contextlib.suppress(OSError):
            os.kill(pids["fork"], signal.SIGKILL)


def test_a_forked_child_of_the_keyring_process_does_not_keep_its_driver_child_alive(
    tmp_path: Path,
) -> None:
    """A keyring process with a driver child forks (not exec's) and is SIGKILLed; its
    forked child lives on. Before, the forked child's copy of the lifeline pipe's write
    end kept the pipe open, so the driver child never read EOF and ran on, orphaned, for as
    long as the forked child lived. Now an ``os.register_at_fork`` hook closes the forked
    child's copy (only the child's: the parent's stays open): the driver child reads EOF
    and, running no job, is gone at once, within the 20 s bound. (Before the hook: alive
    at the bound; before the idle driver exited at once, dask4's report: it waited out its
    ``ORPHAN_GRACE``, 30 s, its standard input still open in the forked child, and failed
    the bound.)"""
    notes = tmp_path / "notes"
    try:
        with (tmp_path / "stderr.log").open("w") as err:
            proc = subprocess.run(
                [sys.executable, "-c", _FORKED_THEN_KILLED, str(notes)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=120,
            )  # fmt: skip
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.log").read_text()
        words = notes.read_text().split()
        pids = _noted(notes)
        for _ in range(100):  # the forked child notes what it holds (bounded: 10 s)
            if {"child-closed", "child-holds"} & set(words):
                break
            threading.Event().wait(0.1)
            words = notes.read_text().split()
        for _ in range(200):  # bounded: 20 s, well inside ORPHAN_GRACE (30 s)
            if _pid_gone(pids["driver"]):
                break
            threading.Event().wait(0.1)
        assert _pid_gone(pids["driver"])  # (before: alive, waiting out ORPHAN_GRACE)
        assert not _pid_gone(pids["fork"])  # which it still does
        assert "child-closed" in words  # its copy of the write end (before: "child-holds")
    finally:
        _kill_noted(notes)


_KILLED_WHILE_ITS_DRIVER_STARTS = """
import os, signal, sys
from keysplit.jobs import _isolate
out = open(sys.argv[1], "w", buffering=1)
os.environ["PYTHONPATH"] = sys.argv[2]  # the driver's imports (Dask) never end
proc = _isolate._start()
out.write(f"driver {proc.pid}\\n")
out.close()
os.kill(os.getpid(), signal.SIGKILL)  # the keyring process dies while its driver starts
"""


def test_a_driver_child_whose_keyring_process_dies_while_it_starts_ends_at_once(
    tmp_path: Path,
) -> None:
    """The driver child read its lifeline only once it had imported keysplit.jobs (Dask,
    pandas, pyarrow: ~3 s of CPU, 20-50 s of wall time at load 25-33), so a driver whose
    keyring process died while it started ran on that long (under load,
    test_a_forked_child_of_the_keyring_process_does_not_keep_its_driver_child_alive found
    it alive past its 20 s bound). Now ``keysplit._jobs_boot`` reads the lifeline from the
    process's start. Here the driver's import of Dask never ends (a stand-in
    ``distributed`` that waits 120 s): before, the driver was alive at the bound; now it is
    gone within it."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "distributed.py").write_text("import threading\nthreading.Event().wait(120)\n")
    notes = tmp_path / "notes"
    try:
        with (tmp_path / "stderr.log").open("w") as err:
            proc = subprocess.run(
                [sys.executable, "-c", _KILLED_WHILE_ITS_DRIVER_STARTS, str(notes), str(slow)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=120,
            )  # fmt: skip
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.log").read_text()
        driver = _noted(notes)["driver"]
        for _ in range(200):  # bounded: 20 s (the stand-in import waits 120 s)
            if _pid_gone(driver):
                break
            threading.Event().wait(0.1)
        assert _pid_gone(driver)  # (before: alive, still importing)
    finally:
        _kill_noted(notes)
    # Once started, the driver takes the lifeline over: an EOF then runs its own orphan
    # handling (client closed, stages removed, its group SIGKILLed), not the early exit.
    from keysplit.jobs import _isolate

    proc = _isolate._start()
    try:
        for _ in range(600):  # until it waits for its first request (imports done; 60 s)
            wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
            call = Path(f"/proc/{proc.pid}/syscall").read_text()
            if "pipe" in wchan or call.startswith("0 0x0 "):
                break
            threading.Event().wait(0.1)
        os.close(_isolate._lifelines.pop(proc))  # this process "dies": EOF on the lifeline
        assert proc.wait(timeout=60) == -signal.SIGKILL  # (the early exit: 1)
    finally:
        _isolate._stop(proc)


_FORKED_THEN_EXITS = """
import atexit, os, signal, sys, time
out = open(sys.argv[1], "w", buffering=1)
began = []
# registered before _isolate's handler, so it runs after it: how long the stop took
atexit.register(lambda: out.write(f"stopped {time.monotonic() - began[0]:.2f}\\n"))
from keysplit.jobs import _isolate
proc = _isolate._start()  # an idle driver child, as between two jobs
_isolate._idle.setdefault("local", []).append(proc)
for _ in range(600):  # until it waits for its first request (its imports done; 60 s)
    wchan = open(f"/proc/{proc.pid}/wchan").read()
    if "pipe" in wchan or open(f"/proc/{proc.pid}/syscall").read().startswith("0 0x0 "):
        break
    time.sleep(0.1)
pipe = os.readlink(f"/proc/self/fd/{proc.stdin.fileno()}")  # its stdin's write end
pid = os.fork()  # as gunicorn --preload or multiprocessing's 'fork' would
if pid == 0:  # the forked child lives on, doing its own work, until the test ends it
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # (the listing's own, closed by now)
            pass
    out.write("child-holds\\n" if pipe in mine else "child-closed\\n")
    signal.pause()
    os._exit(0)
out.write(f"driver {proc.pid}\\nfork {pid}\\n")
began.append(time.monotonic())
sys.exit(0)  # a clean exit: at exit the idle driver is told to stop (its stdin closed)
"""


def test_a_forked_child_of_the_keyring_process_does_not_hold_its_driver_childs_stdin(
    tmp_path: Path,
) -> None:
    """A keyring process with an idle driver child forks (not exec's) and exits cleanly,
    its forked child living on. At exit it closes the driver's stdin and waits up to
    STOP_GRACE (30 s) for it to leave; the forked child's copy of that pipe's write end
    kept it open, so the driver never read EOF: the exit waited out the grace and then
    killed the driver (SECURITY.md's stated limit). Now the fork hook points the child's
    copies of every driver's pipes at /dev/null (the descriptor numbers stay valid: a
    later close of the inherited file objects closes nothing of the parent's): the driver
    reads EOF and the keyring process's stop of it takes seconds (bound: 15 s)."""
    notes = tmp_path / "notes"
    with (tmp_path / "stderr.log").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _FORKED_THEN_EXITS, str(notes)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )  # fmt: skip
    try:
        code = proc.wait(timeout=120)
        words = notes.read_text().split()
        pids = _noted(notes)
        assert code == 0, (tmp_path / "stderr.log").read_text()
        said = dict(itertools.pairwise(words))
        assert float(said["stopped"]) < 15  # (before: 30.0, the grace, then killed)
        assert _pid_gone(pids["driver"])
        assert not _pid_gone(pids["fork"])  # which lives on
        assert "child-closed" in words  # (before: "child-holds")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_noted(notes)


_LATE_PART = """
import sys
from keysplit._fileio import atomic_writer
try:
    with atomic_writer(sys.argv[1], mode=0o600) as fh:  # as run_part writes a part
        fh.write(b"decrypted rows of a part still running when its job failed")
except FileNotFoundError:
    print("no stage")
else:
    print("written")
"""


@pytest.mark.parametrize("cleanup", ["failed-job", "orphaned-driver"])
def test_a_part_committed_while_its_stage_is_removed_leaves_no_plaintext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: str
) -> None:
    """A job that fails (a part's error, its timeout, or its driver orphaned: the lifeline
    closes its Dask client) cancels its parts and removes its stage at once, but a part
    already running on a worker runs on (Dask cannot stop it) and commits its file by
    path. Before, the stage was removed with ``rmtree`` where it was: a part committed
    between rmtree's listing and its final ``rmdir`` made that fail (ENOTEMPTY, ignored)
    and left the stage with a decrypted part in it, for as long as the driver lived. Now
    the stage is first renamed away, so a late part finds no directory. The late writer
    is a real process, committing its part at that very moment (from ``os.rmdir``)."""
    staged: list[Path] = []
    real_staging_dir, real_rmdir = fileio.staging_dir, os.rmdir

    def staging_dir(target: Path) -> Path:
        staged.append(real_staging_dir(target))
        return staged[-1]

    said: list[str] = []

    def rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if staged and not said and Path(path).name.startswith(staged[-1].name):
            r = subprocess.run(
                [sys.executable, "-c", _LATE_PART, str(staged[-1] / "part.00099.parquet")],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            said.append(r.stdout.strip() or r.stderr)
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(jr, "staging_dir", staging_dir)
    monkeypatch.setattr(os, "rmdir", rmdir)
    if cleanup == "failed-job":
        with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
            jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
            assert ukr.shred("late/x") is True  # its rows are in the last part
            with pytest.raises(ke.KeysplitError):
                jobs.decrypt_dataset(
                    tmp_path / "enc", tmp_path / "out", "body", "user", service=src
                )
        assert len(staged) == 2  # the encrypt's stage (in place), the decrypt's
        keep = {"enc", "in", "kr"}
    else:  # the lifeline thread past ORPHAN_GRACE: _fileio.remove_own_stages
        staged.append(fileio.staging_dir(tmp_path / "dec"))
        (staged[-1] / "part.00000.parquet").write_bytes(b"decrypted rows")
        fileio.remove_own_stages()
        keep = set()
    assert said == ["no stage"], said
    stray = sorted(p.name for p in tmp_path.iterdir() if p.name not in keep)
    assert stray == [], f"plaintext parts left behind: {stray}"


def test_an_orphaned_drivers_cleanup_never_empties_an_output_put_in_place_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lifeline thread's cleanup (``remove_own_stages``, past ORPHAN_GRACE) runs while
    the job's own thread may be putting the finished stage in place. Before, it ran
    ``rmtree`` on the stage's path: a rename of the stage to the output after rmtree had
    opened it left rmtree emptying the *output* (a destination that read as an empty
    dataset). Now the cleanup takes the stage away by renaming it first: the output is
    whole, or it never appears. The rename is made at rmtree's listing (``os.scandir``)."""
    stage = fileio.staging_dir(tmp_path / "out")
    (stage / "part.00000.parquet").write_bytes(b"finished rows")
    real_scandir = os.scandir
    outcome: list[str] = []

    def scandir(path: Any = ".") -> Any:
        if not outcome:  # the job's thread: durable_rename(stage, out), right now
            try:
                fileio.durable_rename(stage, tmp_path / "out")
                outcome.append("put in place")
            except FileNotFoundError:
                outcome.append("stage gone first")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    fileio.remove_own_stages()
    monkeypatch.undo()
    out = tmp_path / "out"
    if outcome == ["put in place"]:
        assert sorted(p.name for p in out.iterdir()) == ["part.00000.parquet"], "emptied"
    else:
        assert outcome == ["stage gone first"] and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ({"k\udcff": "v"}, "context key is not valid Unicode text"),
        ({"k": "\udcff"}, "context value is not valid Unicode text"),
        ({"k": "v" * 70_000}, "record context is larger than 65535 bytes"),
    ],
)
@pytest.mark.parametrize("kind", ["encrypt", "decrypt", "scan"])
def test_a_context_no_record_can_carry_is_refused_before_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, context: dict[str, str], reason: str
) -> None:
    """Red team: a context no record can carry (not Unicode: argv bytes that are not UTF-8
    become lone surrogates) failed inside the job's first part, and what reached the
    caller was a bare ``JobError('ValueError')``; now a ValueError with the reason, from the
    call itself, before any part runs or any destination is made."""
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        call = {
            "encrypt": lambda: jobs.encrypt_dataset(
                tmp_path / "in", tmp_path / "out", "body", "user", service=src, context=context
            ),
            "decrypt": lambda: jobs.decrypt_dataset(
                tmp_path / "in", tmp_path / "out", "body", "user", service=src, context=context
            ),
            "scan": lambda: jobs.scan_dataset(
                tmp_path / "in", "body", "user", service=src, context=context
            ),
        }[kind]
        with pytest.raises(ValueError, match=reason):
            call()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["encrypt", "decrypt", "scan"])
def test_a_column_sealed_under_itself_is_refused_before_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Red team: ``encrypt_dataset(src, dst, "user", "user")`` sealed the subject column
    under its own values and reported success; the output's subjects were ciphertext, so
    no decrypt could ever name them ("subject column 'user' must hold strings"): once the
    source was deleted the column was lost. Refused now, before any part or destination."""
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        call = {
            "encrypt": lambda: jobs.encrypt_dataset(
                tmp_path / "in", tmp_path / "out", "user", "user", service=src
            ),
            "decrypt": lambda: jobs.decrypt_dataset(
                tmp_path / "in", tmp_path / "out", "user", "user", service=src
            ),
            "scan": lambda: jobs.scan_dataset(tmp_path / "in", "user", "user", service=src),
        }[kind]
        with pytest.raises(ke.KeysplitError, match="its own subject column"):
            call()
        with pytest.raises(ke.KeysplitError, match="its own subject column"):
            jobs.encrypt_column(jr._read(str(tmp_path / "in")), "user", "user", service=src)
        assert ukr.status().keys_by_version == {}  # no key was made for the job
    assert not (tmp_path / "out").exists()


def test_view_columns_with_nulls_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: a dataset written with ``string_view`` columns (pyarrow keeps the type in
    the file's Arrow schema) failed with a bare ``ArrowNotImplementedError`` (no filter
    kernel for views) as soon as the value column had a null; now views are read as
    their plain types and the values round-trip."""
    users = pa.array([f"u/{i % 3}" for i in range(12)], pa.string_view())
    body = pa.array([None if i % 4 == 1 else f"v{i}é" for i in range(12)], pa.string_view())
    blob = pa.array([None if i % 5 == 2 else b"b%d" % i for i in range(12)], pa.binary_view())
    (tmp_path / "views").mkdir()
    pq.write_table(
        pa.table({"user": users, "body": body, "blob": blob}), tmp_path / "views" / "p.parquet"
    )
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        for col in ("body", "blob"):
            jobs.encrypt_dataset(
                tmp_path / "views", tmp_path / f"e-{col}", col, "user", service=src
            )
            jobs.decrypt_dataset(
                tmp_path / f"e-{col}", tmp_path / f"d-{col}", col, "user", service=src
            )
            back = pq.read_table(tmp_path / f"d-{col}").column(col).to_pylist()
            assert back == pq.read_table(tmp_path / "views").column(col).to_pylist()


def test_decrypt_dataset_restores_every_columns_own_arrow_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: decrypt gave back only "str" or "bytes" as ``string``/``binary``: a
    ``large_string``, ``large_binary``, ``fixed_size_binary(3)``, dictionary, view or
    all-null column came back with another type (a reader bound to the dataset's schema
    then failed). The sealed dataset now records the column's own type and decrypt
    restores it, values and nulls included."""
    n = 12
    strs = [None if i == 4 else ("" if i == 6 else f"v{i}é") for i in range(n)]
    blobs = [None if i == 4 else (b"" if i == 6 else bytes([i]) * 3) for i in range(n)]
    columns = {
        "string": pa.array(strs, pa.string()),
        "large_string": pa.array(strs, pa.large_string()),
        "string_view": pa.array(strs, pa.string_view()),
        "binary": pa.array(blobs, pa.binary()),
        "large_binary": pa.array(blobs, pa.large_binary()),
        "binary_view": pa.array(blobs, pa.binary_view()),
        "fixed": pa.array([None if b is None else (b + b"xyz")[:3] for b in blobs], pa.binary(3)),
        "dict_string": pa.array(strs, pa.string()).dictionary_encode(),
        "dict_binary": pa.array(blobs, pa.binary()).dictionary_encode(),
        "all_null": pa.nulls(n),
    }
    users = pa.array([f"u/{i % 3}" for i in range(n)])
    (tmp_path / "src").mkdir()
    pq.write_table(pa.table({"user": users, **columns}), tmp_path / "src" / "p.parquet")
    want = pq.read_table(tmp_path / "src")
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        here = tmp_path / "src"
        for i, name in enumerate(columns):  # seal them all, one after the other
            jobs.encrypt_dataset(here, tmp_path / f"e{i}", name, "user", service=src)
            here = tmp_path / f"e{i}"
        assert all(pq.read_table(here).schema.field(c).type == pa.binary() for c in columns)
        for i, name in enumerate(columns):
            jobs.decrypt_dataset(here, tmp_path / f"d{i}", name, "user", service=src)
            here = tmp_path / f"d{i}"
    got = pq.read_table(here)
    for name in columns:
        assert got.schema.field(name).type == want.schema.field(name).type, name
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert b"keysplit" not in (got.schema.metadata or {})


def test_a_dictionary_columns_index_type_round_trips_on_real_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pandas categorical is written as a dictionary with int8 (or int16) indices;
    sealed and opened on a real cluster it came back with int32 indices: another Arrow
    type than the dataset's (the tag kept the value type only; fails before). The tag now
    records the index type. The subject column is a categorical too, null where the row
    has no value, and every record opens under its own row's subject."""
    n = 300  # more categories than int8 holds in the second column: int16
    df = pd.DataFrame(
        {
            "id": range(n),
            "user": pd.Categorical([None if i == 7 else f"u/{i % 5}" for i in range(n)]),
            "body": pd.Categorical([None if i == 7 else f"v{i % 3}é" for i in range(n)]),
            "tag": pd.Categorical([None if i == 7 else f"t{i:03d}" for i in range(n)]),
        }
    )
    (tmp_path / "cat").mkdir()
    df.to_parquet(tmp_path / "cat" / "p.parquet")
    want = pq.read_table(tmp_path / "cat")
    assert want.schema.field("body").type.index_type == pa.int8()  # as pandas writes it
    assert want.schema.field("tag").type.index_type == pa.int16()
    cluster = jobs.Cluster(workers=1, timeout=1000 + next(_CASES))  # its own driver
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        here = tmp_path / "cat"
        for name in ("body", "tag"):
            jobs.encrypt_dataset(here, tmp_path / f"e-{name}", name, "user", service=src,
                                 cluster=cluster)  # fmt: skip
            here = tmp_path / f"e-{name}"
        sealed = pq.read_table(here).sort_by("id")
        for i in (0, 1, 150):
            rec, user = sealed["body"][i].as_py(), sealed["user"][i].as_py()
            assert ukr.decrypt(rec, subject=user) == df["body"][i].encode()
        for name in ("body", "tag"):
            jobs.decrypt_dataset(here, tmp_path / f"d-{name}", name, "user", service=src,
                                 text=True, cluster=cluster)  # fmt: skip
            here = tmp_path / f"d-{name}"
    got = pq.read_table(here)
    for name in ("user", "body", "tag"):  # (before: body and tag with int32 indices)
        assert got.schema.field(name).type == want.schema.field(name).type, name
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    back = pd.read_parquet(here)
    pd.testing.assert_frame_equal(back.sort_values("id").reset_index(drop=True), df)


def test_an_ordered_dictionary_column_is_refused_before_any_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordered categorical's order is its dictionary, which sealing cannot keep without
    its values in the clear: decrypting gave it back unordered, its categories in another
    order (``df.tag < "t5"`` changed meaning). It is now refused with a KeysplitError
    before any part is written."""
    df = pd.DataFrame(
        {"user": ["u/1", "u/2"], "tag": pd.Categorical(["b", "a"], ["b", "a"], ordered=True)}
    )
    (tmp_path / "cat").mkdir()
    df.to_parquet(tmp_path / "cat" / "p.parquet")
    with (
        _unsealed(tmp_path, monkeypatch) as ukr,
        serve_keys(ukr) as src,
        pytest.raises(ke.KeysplitError, match="ordered dictionary") as info,
    ):
        jobs.encrypt_dataset(tmp_path / "cat", tmp_path / "enc", "tag", "user", service=src)
    assert "cast it" in (info.value.hint or "")
    assert not (tmp_path / "enc").exists()


def test_odd_pandas_metadata_is_ignored_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team: a file whose ``pandas`` schema metadata is JSON of another shape (its
    ``columns`` not a list) failed the job with a bare ``TypeError``; the entry is only a
    hint for pandas and is now left alone when it cannot be read."""
    (tmp_path / "odd").mkdir()
    meta = {b"pandas": b'{"columns": 5}'}
    table = pa.table({"user": ["u/1", "u/2"], "v": [b"a", b"b"]}).replace_schema_metadata(meta)
    pq.write_table(table, tmp_path / "odd" / "p.parquet")
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "odd", tmp_path / "e", "v", "user", service=src)
        jobs.decrypt_dataset(tmp_path / "e", tmp_path / "d", "v", "user", service=src)
    assert pq.read_table(tmp_path / "d").column("v").to_pylist() == [b"a", b"b"]


@pytest.mark.parametrize(("subject", "why"), [("", "must not be empty"), ("a\x00b", "NUL")])
def test_a_subject_no_key_can_have_is_a_keysplit_error_naming_the_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subject: str, why: str
) -> None:
    """(red team) A dataset row whose subject is empty (or holds NUL) failed with the
    engine's bare ValueError, which crossed the job's process boundary as
    ``error: ValueError`` (its class name only): now a KeysplitError that names the
    subject column and what is wrong, on encrypt and on decrypt; nothing is written."""
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        (tmp_path / "odd").mkdir()
        table = pa.table({"user": ["u/1", subject, "u/2"], "body": [b"a", b"b", b"c"]})
        pq.write_table(table, tmp_path / "odd" / "p.parquet")
        with pytest.raises(ke.KeysplitError, match=f"subject column 'user': .*{why}"):
            jobs.encrypt_dataset(tmp_path / "odd", tmp_path / "enc", "body", "user", service=src)
        assert not (tmp_path / "enc").exists()
        # a sealed dataset whose subject cell was emptied (or NUL-ed) afterwards
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
        part = tmp_path / "enc" / "part.00000.parquet"
        sealed = pq.read_table(part)
        users = sealed.column("user").to_pylist()
        users[0] = subject
        pq.write_table(sealed.set_column(1, "user", pa.array(users)), part)
        with pytest.raises(ke.KeysplitError, match=f"subject column 'user': .*{why}"):
            jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "out", "body", "user", service=src)
    assert not (tmp_path / "out").exists()


def test_an_output_inside_its_input_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(red team) ``encrypt_dataset(IN, IN/enc)`` was accepted: the sealed parts then lay
    inside the input, and every later read of IN (a rerun, a scan, pyarrow) took them as
    input rows; a decrypt into the sealed dataset left plaintext inside it. Refused now,
    also through a link to the input; nothing is written."""
    (tmp_path / "link").symlink_to(tmp_path / "in")
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        rows = pq.read_table(tmp_path / "in").num_rows
        for dst in (tmp_path / "in" / "enc", tmp_path / "link" / "sub" / "enc"):
            with pytest.raises(ke.KeysplitError, match="is inside the input dataset"):
                jobs.encrypt_dataset(tmp_path / "in", dst, "body", "user", service=src)
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
        with pytest.raises(ke.KeysplitError, match="is inside the input dataset"):
            jobs.decrypt_dataset(
                tmp_path / "enc", tmp_path / "enc" / "plain", "body", "user", service=src
            )
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["big.parquet"]
    assert not (tmp_path / "enc" / "plain").exists()
    assert pq.read_table(tmp_path / "in").num_rows == rows


@pytest.mark.parametrize("version", [2, 0, True, "1"])
def test_keysplit_metadata_of_another_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: object
) -> None:
    """(red team) The ``keysplit`` schema metadata's ``"v"`` was never read: a dataset
    written by a later format (``"v": 2``) was opened as this one. Refused now, with the
    version named; nothing is written."""
    import json

    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
        for part in sorted((tmp_path / "enc").iterdir()):
            table = pq.read_table(part)
            doc = json.loads(table.schema.metadata[b"keysplit"])
            doc["v"] = version
            meta = {**table.schema.metadata, b"keysplit": json.dumps(doc).encode()}
            pq.write_table(table.replace_schema_metadata(meta), part)
        with pytest.raises(ke.FormatError, match="unsupported keysplit Parquet metadata version"):
            jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "out", "body", "user", service=src)
    assert not (tmp_path / "out").exists()


def test_a_subject_no_key_can_have_in_a_dask_column_is_a_keysplit_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(red team) encrypt_column/decrypt_column over a DataFrame with an empty subject
    raised the engine's bare ValueError, as the dataset jobs did (fixed there first)."""
    import dask
    import dask.dataframe as dd
    import pandas as pd

    frame = pd.DataFrame({"user": ["u/1", ""], "body": [b"a", b"b"]})
    with (
        _unsealed(tmp_path, monkeypatch) as ukr,
        serve_keys(ukr) as src,
        dask.config.set({"dataframe.convert-string": False}),
    ):
        ddf = dd.from_pandas(frame, npartitions=1)
        with pytest.raises(ke.KeysplitError, match=r"subject column 'user': .*must not be empty"):
            jobs.encrypt_column(ddf, "body", "user", service=src).compute(scheduler="sync")
        good = jobs.encrypt_column(
            dd.from_pandas(frame.iloc[:1], npartitions=1), "body", "user", service=src
        ).compute(scheduler="sync")
        moved = good.assign(user=[""])
        with pytest.raises(ke.KeysplitError, match=r"subject column 'user': .*must not be empty"):
            jobs.decrypt_column(
                dd.from_pandas(moved, npartitions=1), "body", "user", service=src
            ).compute(scheduler="sync")


def test_an_output_that_is_a_symbolic_link_is_refused_before_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(red team) OUT a link to an empty directory (or to nowhere) passed the up-front
    check, the whole job ran, and only the final rename of the parts failed: "cannot move
    the finished parts to OUT: [Errno 20] Not a directory". Refused before the job now."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        for out in ("link", "dangling"):
            with pytest.raises(ke.KeysplitError, match="is a symbolic link") as err:
                jobs.encrypt_dataset(tmp_path / "in", tmp_path / out, "body", "user", service=src)
            assert "Not a directory" not in str(err.value)
        assert ukr.status().keys_by_version == {}  # refused before any key was made
    assert list((tmp_path / "real").iterdir()) == []
    assert (tmp_path / "link").is_symlink() and (tmp_path / "dangling").is_symlink()


def test_decrypting_a_column_that_is_not_sealed_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(leftovers) ``decrypt-dataset`` of a column never sealed said only "not a keysplit
    record (bad magic)": no column, no hint. The error now names the column and says it
    does not look sealed; a column mixing sealed and plain values is told apart."""
    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
        with pytest.raises(ke.FormatError) as info:  # "body" of the plain dataset
            jobs.decrypt_dataset(tmp_path / "in", tmp_path / "out", "body", "user", service=src)
        assert str(info.value) == "column 'body': not a keysplit record (bad magic)"
        assert info.value.hint is not None
        assert "column 'body' does not look sealed" in info.value.hint
        with pytest.raises(ke.FormatError) as info:  # a column of another type
            jobs.decrypt_dataset(tmp_path / "in", tmp_path / "out", "id", "user", service=src)
        assert str(info.value).startswith("column 'id': not a keysplit record")
        assert "column 'id' does not look sealed" in (info.value.hint or "")
        # one value of a sealed part put back in clear: a mixed column, not "not sealed"
        part = tmp_path / "enc" / "part.00000.parquet"
        table = pq.read_table(part)
        body = table.column("body").to_pylist()
        body[0] = b"plain"
        pq.write_table(table.set_column(2, "body", pa.array(body, pa.binary())), part)
        with pytest.raises(ke.FormatError) as info:
            jobs.decrypt_dataset(tmp_path / "enc", tmp_path / "out", "body", "user", service=src)
        assert str(info.value) == "column 'body': not a keysplit record (bad magic)"
        hint = info.value.hint or ""
        assert "are not keysplit records" in hint and "scan-dataset" in hint, hint


def test_a_context_too_large_for_a_dask_column_is_not_a_subject_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: subject_errors took every ValueError of the engine for a subject's, so a
    context over MAX_CONTEXT_BYTES (ContextTooLargeError, a FormatError and ValueError)
    came out of encrypt_column/decrypt_column as a plain KeysplitError "subject column
    'user': record context is larger than ...". The library's own errors pass unchanged."""
    import dask
    import dask.dataframe as dd
    import pandas as pd

    from keysplit.record import ContextTooLargeError

    frame = pd.DataFrame({"user": ["u/1"], "body": [b"a"]})
    big = {"k": "x" * 70_000}
    with (
        _unsealed(tmp_path, monkeypatch) as ukr,
        serve_keys(ukr) as src,
        dask.config.set({"dataframe.convert-string": False}),
    ):
        ddf = dd.from_pandas(frame, npartitions=1)
        with pytest.raises(ContextTooLargeError) as info:
            jobs.encrypt_column(ddf, "body", "user", service=src, context=big).compute(
                scheduler="sync"
            )
        assert "subject column" not in str(info.value)
        sealed = jobs.encrypt_column(ddf, "body", "user", service=src).compute(scheduler="sync")
        with pytest.raises(ContextTooLargeError) as info:
            jobs.decrypt_column(
                dd.from_pandas(sealed, npartitions=1), "body", "user", service=src, context=big
            ).compute(scheduler="sync")
        assert "subject column" not in str(info.value)


def test_an_encrypt_datasets_format_error_does_not_say_the_column_is_not_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: record_errors, meant for a decrypt's values that are not records, wrapped the
    encrypt engine too, whose values are plaintexts: a FormatError sealing them (here a
    malformed key reply, stood in for) became "column 'body': ..." with the hint that the
    column does not look sealed and to decrypt only a sealed column."""
    from keysplit.keyring.records import Records

    def malformed(*_: object, **__: object) -> list[bytes]:
        raise ke.FormatError("malformed data key reply")

    with _unsealed(tmp_path, monkeypatch) as ukr, serve_keys(ukr) as src:
        monkeypatch.setattr(Records, "encrypt_many", malformed)
        with pytest.raises(ke.FormatError) as info:
            jobs.encrypt_dataset(tmp_path / "in", tmp_path / "enc", "body", "user", service=src)
    assert str(info.value) == "malformed data key reply"
    assert "sealed" not in (info.value.hint or "")


# -- a hostile driver child (a real process over the real pipes) ------------------------------

_FAKE_DRIVER = r"""
import json, select, sys
from pathlib import Path
script, marker = json.loads(sys.argv[1]), Path(sys.argv[2])
sys.stdin.buffer.readline()  # the request
def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n"); sys.stdout.flush()
for step in script:
    send(step["msg"])
    if step.get("ask"):
        ready, _, _ = select.select([sys.stdin], [], [], 10)
        with marker.open("a") as f:
            f.write(("reply " + sys.stdin.readline().strip()) if ready else "gave up")
            f.write("\n")
while sys.stdin.buffer.readline():  # then as a real driver: until the parent closes
    pass
"""


def _hostile_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: list[dict[str, object]], kind: str
) -> tuple[object, list[int], str]:
    """Run a dataset job whose driver child is ``script`` (messages, some awaiting a reply);
    returns the job's result or error, the rows before_release saw and what the child
    noted (the replies it got, or "gave up" when none came)."""
    import keysplit.jobs._isolate as iso

    marker = tmp_path / f"marker-{next(_CASES)}"
    marker.touch()

    def fake() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", _FAKE_DRIVER, json.dumps(script), str(marker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    monkeypatch.setattr(iso, "_start", fake)
    cluster = jobs.Cluster(timeout=1000 + next(_CASES))  # its own driver: never one reused
    seen: list[int] = []
    args = (tmp_path / "in", tmp_path / f"out{next(_CASES)}", "body", "user")
    opts: dict[str, object] = {"service": "https://127.0.0.1:1", "token": "t", "cluster": cluster}
    try:
        if kind == "encrypt":
            result: object = jobs.encrypt_dataset(*args, **opts)  # type: ignore[arg-type]
        elif kind == "scan":
            result = jobs.scan_dataset(args[0], "body", "user", **opts)  # type: ignore[arg-type]
        else:
            result = jobs.decrypt_dataset(*args, **opts, before_release=seen.append)  # type: ignore[arg-type]
    except ke.KeysplitError as exc:
        result = exc
    finally:
        with iso._idle_lock:
            mine = [
                p
                for ps in iso._idle.values()
                for p in ps
                if p.args[0] == sys.executable and "-c" in p.args
            ]
            for ps in iso._idle.values():
                ps[:] = [p for p in ps if p not in mine]
        for p in mine:
            iso._stop(p, 10)
    return result, seen, marker.read_text()


_CASES = itertools.count()

_RELEASE = {"t": "release", "rows": 300}
_DONE = {"t": "done", "rows": 300}


def _ask(msg: dict[str, object]) -> dict[str, object]:
    return {"msg": msg, "ask": True}  # the child waits for the parent's answer


def _say(msg: dict[str, object]) -> dict[str, object]:
    return {"msg": msg}


@pytest.mark.parametrize(
    ("kind", "script", "error"),
    [
        # a release the job does not take: nobody answered it, the child waited for ever
        ("encrypt", [_ask(_RELEASE), _say(_DONE)], "'release' message, which the encrypt job"),
        ("scan", [_ask(_RELEASE), _say({"t": "done", "checked": 1})], "'release' message"),
        # a second release: before_release (the job's audit entry) ran twice
        ("decrypt", [_ask(_RELEASE), _ask(_RELEASE), _say(_DONE)], "asked twice to release"),
        # malformed releases
        ("decrypt", [_ask({"t": "release", "rows": "300"}), _say(_DONE)], "malformed release"),
        ("decrypt", [_ask({"t": "release", "rows": True}), _say(_DONE)], "malformed release"),
        ("decrypt", [_ask({"t": "release"}), _say(_DONE)], "malformed release"),
        ("decrypt", [_ask({**_RELEASE, "x": 1}), _say(_DONE)], "malformed release"),
        # a message no dataset job sends
        ("encrypt", [_ask({"t": "keys", "subjects": []}), _say(_DONE)], "'keys' message"),
        ("encrypt", [_say({"t": "bad", "rows": []}), _say(_DONE)], "'bad' message"),
        # done without the release a staged job must ask for, or with another count
        ("decrypt", [_say(_DONE)], "without asking to release"),
        ("decrypt", [_ask(_RELEASE), _say({**_DONE, "rows": 299})], "released 300 rows and then"),
    ],
)  # fmt: skip
def test_a_hostile_driver_childs_messages_fail_the_job_at_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    script: list[dict[str, object]],
    error: str,
) -> None:
    """A driver child is as trusted as a worker. A "release" the job did not take was left
    unanswered (the child waits for the answer: the job hung), a second one ran
    before_release again (a second audit entry), a message of an unknown kind was ignored,
    a malformed release failed as a "malformed result"; now each fails the job at once
    with a JobError saying what came, and the child is stopped without waiting (it never
    "gave up" waiting for an answer)."""
    _dataset(tmp_path / "in")
    result, seen, noted = _hostile_job(tmp_path, monkeypatch, script, kind)
    assert isinstance(result, jobs.JobError), result
    assert error in str(result)
    assert "gave up" not in noted
    assert len(seen) <= 1 and noted.count("reply") == len(seen)


def test_null_subjects_name_the_column_and_how_many_rows_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(known problem) Rows with a value but a null subject failed the job with "subject
    column 'user' must hold strings", naming neither the nulls nor how many. Now the error
    says the subject column is null in N rows with a value (a row whose value is null too
    is left as it is: nothing to seal), that subjects cannot be null, and nothing is
    written: never a row skipped with its value in the clear, nor one keyed under
    another subject. The pandas path (encrypt_column) says the same."""
    import dask.dataframe as dd

    monkeypatch.setattr(jr, "PART_BYTES", 1 << 20)  # one part
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    users = ["a", None, "b", None, None, "c"]
    body = [b"1", b"2", b"3", None, b"5", b"6"]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"user": users, "body": body}), tmp_path / "in" / "x.parquet")
    with kr.unseal([shares["bob"], shares["carol"]]) as ukr, serve_keys(ukr) as src:
        with pytest.raises(ke.KeysplitError) as info:
            jobs.encrypt_dataset(tmp_path / "in", tmp_path / "out", "body", "user", service=src)
        text = str(info.value)
        assert "subject column 'user' is null in 2 row(s) with a value in 'body'" in text
        assert "subjects cannot be null" in text and "x.parquet" in text, text
        assert info.value.hint and "give those rows a subject" in info.value.hint
        assert not (tmp_path / "out").exists()
        frame = dd.from_pandas(pd.DataFrame({"user": users, "body": body}), npartitions=1)
        with pytest.raises(ke.KeysplitError, match=r"'user' is null in 2 row\(s\) with a value"):
            jobs.encrypt_column(frame, "body", "user", service=src).compute(scheduler="sync")


def test_null_subjects_in_a_part_read_in_slices_are_counted_over_the_whole_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(stop 40, found) A part whose row group is larger than the part size is read in
    slices; the null-subject error counted only the rows read up to the first slice with a
    null subject (here 1 of 4). Now it counts the whole part's rows, still writing nothing."""
    n = 3000
    users: list[str | None] = [f"u/{i % 97}" for i in range(n)]
    body: list[bytes | None] = [os.urandom(100) for _ in range(n)]  # no dictionary: ~300 KB
    for i in (1500, 2400, 2999):  # past the first slices, so some are sealed first
        users[i] = None
    users[2000] = body[2000] = None  # no value: nothing to seal, not counted
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"user": users, "body": body}),
        tmp_path / "in" / "big.parquet",
        row_group_size=n,
    )
    monkeypatch.setattr(jr, "PART_BYTES", 64 << 10)  # the row group is ~5 times larger
    kr, shares = Keyring.create(tmp_path / "kr", 2, NAMES)
    with (
        kr.unseal([shares["bob"], shares["carol"]]) as ukr,
        serve_keys(ukr) as src,
        pytest.raises(ke.KeysplitError) as info,
    ):
        jobs.encrypt_dataset(tmp_path / "in", tmp_path / "out", "body", "user", service=src)
    text = str(info.value)
    assert "subject column 'user' is null in 3 row(s) with a value in 'body'" in text, text
    assert "big.parquet" in text
    assert not (tmp_path / "out").exists()
