"""The chaos suite runs the real executable like the acceptance tests, with their fixtures."""

from tests.acceptance.conftest import cli, procs

__all__ = ["cli", "procs"]
