"""Shared test configuration: bounded, deadline-free hypothesis profile for CI."""

from __future__ import annotations

import os
import sys
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


# The longest modules first. `make test` runs pytest-xdist with --dist loadfile (and
# --no-loadscope-reorder, without which xdist sorted modules by their number of tests and
# undid this order): whole modules are handed out in this order, so one started last leaves
# one worker alone with it at the end. Stop 40's longest: test_jobs 213 s, test_crash 204 s,
# test_cluster_interrupted 151 s on the 2-core CI machine; stop 41's run (load 15-30) put
# test_jobs_failures, test_benchmarks_smoke, test_cli_files and test_store_postgres next;
# the rest as stop 30's `--durations` (15-70 s each). A stable sort: order within a module,
# and of the rest, is kept (tests/contract/test_pytest_schedule.py checks the names exist).
_LONG_MODULES = (
    "tests/unit/jobs/test_jobs.py",
    "tests/unit/keyring/test_crash.py",
    "tests/unit/service/test_cluster_interrupted.py",
    "tests/unit/jobs/test_jobs_failures.py",
    "tests/unit/benchmarks/test_benchmarks_smoke.py",
    "tests/cli/test_cli_files.py",
    "tests/unit/store/test_store_postgres.py",
    "tests/unit/service/test_fleet_processes.py",
    "tests/unit/service/test_cluster_nodes.py",
    "tests/unit/service/test_service.py",
    "tests/unit/record/test_record.py",
    "tests/contract/test_store_contract.py",
    "tests/cli/test_cli_legacy_spellings.py",
    "tests/unit/service/test_cluster_tls.py",
    "tests/cli/test_cli_numbers.py",
    "tests/cli/test_e2e_ceremony.py",
    "tests/cli/test_cli_custodian_side.py",
    "tests/contract/test_readme_cluster.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {m: i for i, m in enumerate(_LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
