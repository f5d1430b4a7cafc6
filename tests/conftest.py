"""Shared test configuration: bounded, deadline-free hypothesis profile for CI."""

from __future__ import annotations

import os

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
