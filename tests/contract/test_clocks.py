"""Local durations run on ``time.monotonic()``; the wall clock only where hosts share it.

A lease, timeout or deadline measured within one process (or host) must not expire early
or last longer when the wall clock steps (NTP, an operator, a VM resumed). An AST scan
finds every ``time.time()`` in keysplit/ and each must be one of the listed sites, which
are timestamps other processes or hosts compare by design (SECURITY.md, "Leases" and the
jobs' key lease); every other clock read is monotonic. Then the two designs are checked
with a wall clock patched to jump a day forward and back: a keyring's own lease (what
bounds its cache) and a job worker's key lease.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from keysplit import Keyring

KEYSPLIT = Path(__file__).resolve().parents[2] / "keysplit"
DAY = 86_400.0

WALL_CLOCK_SITES = {
    # the job driver's send time plus the lease: read on the worker's host, so a renewal
    # that sat queued for a stuck worker extends nothing (cross-host: off by the skew)
    ("jobs/rewrap.py", "renew"): "the jobs' renewal deadline, sent to the workers",
    ("jobs/_worker.py", "renew"): "the same deadline, compared on the worker",
    # the store's clock: a lease's expiry and a tombstone's time are rows every process
    # sharing the store reads (PostgreSQL uses the server's clock_timestamp())
    ("store/sqlite.py", "work"): "a lease's expiry, written on renewal",
    ("store/sqlite.py", "_leases"): "which leases are live, by the store's clock",
    ("store/sqlite.py", "delete_many"): "a tombstone's time (a timestamp, no deadline)",
    ("store/sqlite.py", "clock"): "the store's clock, which its leases' expiries are on",
    # a lease's time left for status: the store's clock, this host's only for a store
    # that keeps none (its expiries are then on this host's)
    ("keyring/status.py", "_clock"): "a store without a clock: this host's",
}


def _wall_clock_reads() -> list[tuple[str, str, int]]:
    """(file, innermost enclosing function, line) of every ``time.time()``/``time_ns()``."""
    out: list[tuple[str, str, int]] = []

    class Reads(ast.NodeVisitor):
        def __init__(self, name: str) -> None:
            self.name, self.where = name, ["<module>"]

        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            self.where.append(node.name)
            self.generic_visit(node)
            self.where.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Call(self, node: ast.Call) -> None:
            f = node.func
            if (
                isinstance(f, ast.Attribute)
                and f.attr in ("time", "time_ns")
                and isinstance(f.value, ast.Name)
                and f.value.id == "time"
            ):
                out.append((self.name, self.where[-1], node.lineno))
            self.generic_visit(node)

    for path in sorted(KEYSPLIT.rglob("*.py")):
        name = str(path.relative_to(KEYSPLIT))
        Reads(name).visit(ast.parse(path.read_text(), name))
    return out


def test_every_wall_clock_read_in_keysplit_is_a_listed_cross_process_timestamp() -> None:
    reads = _wall_clock_reads()
    unlisted = sorted({r for r in reads if r[:2] not in WALL_CLOCK_SITES})
    assert not unlisted, (
        f"time.time() at {unlisted}: a local duration (lease, timeout, deadline) is "
        "measured with time.monotonic(); a timestamp other hosts compare is listed here "
        "with its reason"
    )
    assert {r[:2] for r in reads} == set(WALL_CLOCK_SITES)  # (no stale entry)


def _jump(monkeypatch: pytest.MonkeyPatch, by: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + by)


@pytest.mark.parametrize("step", [DAY, -DAY])
def test_a_keyring_serves_its_cache_by_its_own_clock_whatever_the_wall_clock_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    """The lease that bounds a process's cache runs on its monotonic clock: a wall step
    neither lapses it nor lengthens it. The store's record of the lease is on the store's
    (wall) clock by design; a forward step makes it look expired only until the next
    renewal writes it again from the new time."""
    kr, shares = Keyring.create(tmp_path / "kr", 2, ["a", "b", "c"])
    with kr.unseal([shares["a"], shares["b"]]) as u:
        rec = u.encrypt(b"x", subject="s")
        member = u.local_data_keys().member
        deadline = member._deadline
        _jump(monkeypatch, step)
        assert member.valid() and member._deadline == deadline
        assert u.decrypt(rec, subject="s") == b"x"
        member.renew()
        assert member._deadline - time.monotonic() <= member.ttl  # not a day longer
        assert [x.id for x in member.store.leases()] == [member.id]  # live again


@pytest.mark.parametrize("step", [DAY, -DAY])
def test_a_job_workers_key_lease_is_bounded_by_its_own_clock(
    monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    """A job worker keeps its keys ``lease`` seconds past a renewal on its monotonic clock;
    the renewal's deadline is the driver's wall clock (its send time plus the lease), so a
    step between send and arrival can only make that one renewal extend nothing (a step
    forward) and never extend past a lease from now (a step back); the keys do not lapse
    for it, and the next renewal, sent by the new clock, extends them again."""
    pytest.importorskip("distributed")
    from keysplit.jobs._worker import JobKeysPlugin
    from keysplit.keyring import KekSet

    class _Worker:
        address = "tcp://127.0.0.1:1"

    lease = 60.0
    plugin = JobKeysPlugin("4" * 32, "kid", lease=lease)
    plugin.setup(_Worker())
    plugin.keks = KekSet.__new__(KekSet)
    try:
        sent = time.time() + lease  # the driver's deadline, before the step
        _jump(monkeypatch, step)
        plugin.renew(sent)
        due = plugin._due()
        assert due is not None and due <= time.monotonic() + lease
        assert not plugin.lapsed() and plugin.keks is not None
        plugin.renew(time.time() + lease)  # the next one, sent after the step
        renewed = plugin._due()
        assert renewed is not None and time.monotonic() + lease - 5 < renewed
        assert renewed <= time.monotonic() + lease
    finally:
        plugin.teardown(_Worker())
