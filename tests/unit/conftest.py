"""Unit-test fixtures shared by every module here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.world import stop_all_threads


@pytest.fixture(autouse=True)
def _stop_world_threads() -> Iterator[None]:
    """After each test, the lease keepers of the worlds it made stop (tests/unit/world.py):
    a world's processes end with the test."""
    yield
    stop_all_threads()
