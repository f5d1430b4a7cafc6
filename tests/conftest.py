"""Shared test configuration: bounded, deadline-free hypothesis profile for CI."""

from __future__ import annotations

import os
import sys
import types
import weakref
from pathlib import Path
from typing import Any

# The helper modules (fixtures, the memory store, the throwaway PostgreSQL, paths) live in
# tests/support/ and are imported by their bare names from every test directory; some use
# the benchmarks package (the throwaway PostgreSQL server), so the checkout's root is on the
# path too: a bare `pytest` works as well as `python -m pytest`.
# (Only sys.path calls may precede the imports below: anything else there is ruff E402.)
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # a duplicate entry is harmless

import pytest
import typer.main
import typer.testing
from hypothesis import HealthCheck, settings
from pg_fixture import pg_server, pytest_runtest_makereport  # noqa: F401  (throwaway PostgreSQL)

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# typer's CliRunner.invoke built the app's whole Click command tree (every command and
# parameter, about 50 commands) again on every call: 0.25 s a call under load, 82 of the
# 258 s of tests/cli/test_cli_ceremony.py + test_cli_files.py (325 builds). The installed
# `keysplit` builds its command once per process; so do the tests now, once per app and
# shape of its registry (a command or group added later builds it again), and invoke it
# again and again as Click does (a fresh context per call; the command holds no state).
_COMMANDS: weakref.WeakKeyDictionary[typer.Typer, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _shape(app: typer.Typer) -> tuple[Any, ...]:
    groups = tuple((id(g), _shape(g.typer_instance)) for g in app.registered_groups
                   if g.typer_instance is not None)  # fmt: skip
    return (id(app.registered_callback), tuple(map(id, app.registered_commands)), groups)


def _built_once(app: typer.Typer) -> Any:
    shape = _shape(app)
    cached = _COMMANDS.get(app)
    if cached is None or cached[0] != shape:
        cached = _COMMANDS[app] = (shape, typer.main.get_command(app))
    return cached[1]


typer.testing._get_command = _built_once  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _known_keyrings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test pins keyrings in its own known-keyrings file, never the user's."""
    path = tmp_path_factory.mktemp("known") / "known_keyrings"
    monkeypatch.setenv("KEYSPLIT_KNOWN_KEYRINGS", str(path))


@pytest.fixture
def harness_without_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark harness runs ``gc.collect()`` before every timed call, outside the
    timed window (so a row does not pay for the previous one's garbage). The benchmark smoke
    tests check rows, never timings, and in a pytest worker that has collected the whole
    suite (265k objects) one collection costs 0.23-0.27 s of CPU: test_bench_records_tiny
    made 84 of them, ~20 of its 21 s. Those tests take this fixture: no collection."""
    from benchmarks.harness import timing

    monkeypatch.setattr(timing, "gc", types.SimpleNamespace(collect=lambda *_: 0))


# The longest modules first. `make test` runs pytest-xdist with --dist loadfile (and
# --no-loadscope-reorder, without which xdist sorted modules by their number of tests and
# undid this order): whole modules are handed out in this order, so one started last leaves
# one worker alone with it at the end. Retaken at stop 43 from stop 42's full
# `--durations=0` run (seconds per module, setup and teardown included; the two this stop
# cut, test_fleet_processes and test_cli_custodian_side, scaled to their new share):
# every module of 14 s or more, longest first. The rest (under 14 s each) keep their
# collection order. A stable sort: order within a module is kept
# (tests/contract/test_pytest_schedule.py checks the names exist).
_LONG_MODULES = (
    "tests/unit/jobs/test_jobs.py",  # 372-407 s
    "tests/unit/keyring/test_crash.py",  # 123
    "tests/unit/service/test_cluster_interrupted.py",  # 122
    "tests/cli/test_cli_files.py",  # 80
    "tests/unit/service/test_service_fleet.py",  # 73
    "tests/unit/store/test_store_postgres.py",  # 64
    "tests/unit/service/test_service.py",  # 56
    "tests/unit/jobs/test_jobs_failures.py",  # 47
    "tests/unit/store/test_postgres_rotation_commit.py",  # 45
    "tests/unit/benchmarks/test_benchmarks_smoke.py",  # 42
    "tests/unit/service/test_cluster_nodes.py",  # 40
    "tests/unit/jobs/test_jobs_renew.py",  # 40
    "tests/unit/service/test_frames_transport.py",  # 37
    "tests/unit/service/test_fleet_processes.py",  # 33 (55 before stop 43)
    "tests/contract/test_store_contract.py",  # 31
    "tests/unit/jobs/test_jobs_provision.py",  # 28
    "tests/unit/service/test_service_limits.py",  # 26
    "tests/unit/service/test_serve_cli_errors.py",  # 23
    "tests/unit/service/test_token_expiry.py",  # 23
    "tests/cli/test_cli_store.py",  # 19
    "tests/contract/test_readme_cluster.py",  # 17
    "tests/cli/test_cli_legacy_spellings.py",  # 16
    "tests/unit/service/test_cluster_tls.py",  # 16
    "tests/unit/store/test_pg_server_cleanup.py",  # 16
    "tests/unit/service/test_cluster_create_cut.py",  # 14
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {m: i for i, m in enumerate(_LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
