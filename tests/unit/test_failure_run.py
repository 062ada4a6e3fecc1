"""logs.FailureRun: a run of failures said once (WARNING), the others at DEBUG with their
count, and its end at INFO; a new run is said again. The exporter's scrapes and its
CloudWatch refreshes say theirs with it (tests/unit/test_exporter.py)."""

from __future__ import annotations

import logging

import pytest

from s3q.logs import FailureRun


def test_a_run_of_failures_is_said_once_and_its_end_too(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("s3q.test_failure_run")
    run = FailureRun(log, "scrapes", failed_event="x_failed", ended_event="x_answered")
    with caplog.at_level(logging.DEBUG, logger="s3q.test_failure_run"):
        run.ended("answered again, after %d that could not")  # (no run: nothing said)
        for _ in range(3):
            run.failed("cannot read: boom")
        run.ended("answered again, after %d that could not")
        run.ended("answered again, after %d that could not")
        run.failed("cannot read: again")
    said = [(r.levelno, r.getMessage(), getattr(r, "event", None), getattr(r, "failed", None))
            for r in caplog.records]
    assert said == [
        (logging.WARNING, "cannot read: boom", "x_failed", 1),
        (logging.DEBUG, "cannot read: boom (2 scrapes in a row)", "x_failed", 2),
        (logging.DEBUG, "cannot read: boom (3 scrapes in a row)", "x_failed", 3),
        (logging.INFO, "answered again, after 3 that could not", "x_answered", 3),
        (logging.WARNING, "cannot read: again", "x_failed", 1)]
