"""A Dask worker preload (``dask worker --preload PATH``) that kills the job's scheduler from
inside a keysplit job, at the point ``KS_TEST_KILL_AT`` names, so that the job's driver
child is in that very call when its scheduler goes:

* ``setup``: in the job's worker plugin's ``setup`` (the driver is in ``register_plugin``);
* ``run``: when the driver asks for the worker's job key (it is in ``client.run``);
* ``batch``: in a rewrap partition's first batch; the batch then waits (at most 60 s) until
  this worker's job plugins hold no KEKs (the worker-side probe) and notes ``forgotten``
  in the file ``KS_TEST_NOTES``; each later batch of the worker notes ``batch after``.

``KS_TEST_SCHEDULER_PID`` is the scheduler's process id. Each point fires once per load.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from keysplit.jobs import _worker

_PID = int(os.environ["KS_TEST_SCHEDULER_PID"])
_AT = os.environ["KS_TEST_KILL_AT"]
_fired: list[str] = []


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _kill(point: str) -> None:
    if point != _AT or _fired:
        return
    _fired.append(point)
    os.kill(_PID, signal.SIGKILL)
    for _ in range(500):  # dead (a zombie until the test reaps it): its sockets are closed
        if _gone(_PID):
            return
        time.sleep(0.02)


# Dask loads a preload file twice (and once more per reload): patch the class once.
_setup = getattr(_worker.JobKeysPlugin.setup, "unpatched", _worker.JobKeysPlugin.setup)
_public_key = getattr(
    _worker.JobKeysPlugin.public_key, "unpatched", _worker.JobKeysPlugin.public_key
)


def _setup_then_kill(self: _worker.JobKeysPlugin, worker: Any) -> None:
    _kill("setup")
    _setup(self, worker)


def _public_key_then_kill(self: _worker.JobKeysPlugin) -> bytes | None:
    _kill("run")
    return _public_key(self)


_setup_then_kill.unpatched = _setup  # type: ignore[attr-defined]
_public_key_then_kill.unpatched = _public_key  # type: ignore[attr-defined]
_rewrap = importlib.import_module("keysplit.jobs.rewrap")
_rewrap_rows = getattr(_rewrap.rewrap_rows, "unpatched", _rewrap.rewrap_rows)


def _holding_keys() -> bool:
    from distributed import get_worker

    plugins = get_worker().plugins.values()
    return any(isinstance(p, _worker.JobKeysPlugin) and p.keks is not None for p in plugins)


def _note(line: str) -> None:
    with open(os.environ["KS_TEST_NOTES"], "a") as f:
        f.write(line + "\n")


def _rows_then_kill(keks: Any, rows: Any) -> Any:
    if _AT == "batch":
        if _fired:
            _note("batch after")
        else:
            _kill("batch")
            for _ in range(3000):
                if not _holding_keys():
                    _note("forgotten")
                    break
                time.sleep(0.02)
    return _rewrap_rows(keks, rows)


_rows_then_kill.unpatched = _rewrap_rows  # type: ignore[attr-defined]
_rewrap.rewrap_rows = _rows_then_kill
_worker.JobKeysPlugin.setup = _setup_then_kill  # type: ignore[method-assign]
_worker.JobKeysPlugin.public_key = _public_key_then_kill  # type: ignore[method-assign]
