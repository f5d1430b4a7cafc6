"""Shared test configuration: bounded, deadline-free hypothesis profile for CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The helper modules (fixtures, the memory store, the throwaway PostgreSQL, paths) live in
# tests/support/ and are imported by their bare names from every test directory; some use
# the benchmarks package (the throwaway PostgreSQL server), so the checkout's root is on the
# path too: a bare `pytest` works as well as `python -m pytest`.
# (Only sys.path calls may precede the imports below: anything else there is ruff E402.)
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # a duplicate entry is harmless

import pytest
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


@pytest.fixture(autouse=True)
def _known_keyrings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test pins keyrings in its own known-keyrings file, never the user's."""
    path = tmp_path_factory.mktemp("known") / "known_keyrings"
    monkeypatch.setenv("KEYSPLIT_KNOWN_KEYRINGS", str(path))
