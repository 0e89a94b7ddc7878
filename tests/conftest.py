"""Hypothesis profiles: `make test` runs a bounded number of examples; `make fuzz` (HYPOTHESIS_PROFILE=fuzz)
runs the fuzz targets much longer. Every test gets a cache of its own: conversions keep what they make in
$XDG_CACHE_HOME/obdlayout, and one test's layers must not become another's cache hits."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's cache directory (the default one of every conversion it runs, in process or not)."""
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "obdlayout"
