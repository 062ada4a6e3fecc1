"""Unit-test fixtures shared by every module here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3q import config as config_module
from tests.s3server import S3Endpoint
from tests.unit.world import stop_all_threads


@pytest.fixture(autouse=True)
def _stop_world_threads() -> Iterator[None]:
    """After each test, the lease keepers of the worlds it made stop (tests/unit/world.py):
    a world's processes end with the test."""
    yield
    stop_all_threads()


@pytest.fixture
def isolated_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the CLI's tests (``pytestmark = pytest.mark.usefixtures("isolated_cli")``): an
    empty working directory, no S3Q_* variables, no config file of the host's, no IMDS
    request, and lock files in ``tmp_path`` (not the host's /tmp)."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("S3Q_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("S3Q_IMDS", "off")
    monkeypatch.setenv("S3Q_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(config_module, "SEARCH_PATH", ("s3q.toml",))


@pytest.fixture
def ssm(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """moto's SSM (on the S3 endpoint); the standard chain finds moto's credentials."""
    if not s3_endpoint.is_moto:
        pytest.skip("SSM parameters are only created on moto")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.access_key_id or "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret_access_key or "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_endpoint
