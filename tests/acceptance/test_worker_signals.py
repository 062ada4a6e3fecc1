"""A SIGTERM at any moment of a worker's start-up stops it (issue 9: a worker restarted just
before its SIGTERM kept running for minutes). The real ``s3q`` executable, local queue."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.acceptance.conftest import S3Q, Cli, wait_for


def _start(local: Cli, procs: list[subprocess.Popen[str]], **kw: object
           ) -> tuple[subprocess.Popen[str], float]:
    local.submit(2)  # creates the queue; the worker has something to claim
    worker = subprocess.Popen(
        [S3Q, "worker", "--exec", "sleep 0.2", "--poll-interval", "1"], env=local.env,
        text=True, stdout=(local.tmp / "worker.log").open("w"), stderr=subprocess.STDOUT,
        **kw)  # type: ignore[call-overload]
    procs.append(worker)
    return worker, time.monotonic()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 2.0, 3.0])
def test_a_sigterm_at_any_moment_of_start_up_stops_the_worker(
        local: Cli, procs: list[subprocess.Popen[str]], delay: float) -> None:
    worker, _ = _start(local, procs)
    time.sleep(delay)
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(60)  # it never keeps running
    log = (local.tmp / "worker.log").read_text()
    # before Python set up its handler the default action ends it; after, it stops cleanly
    assert code in (0, -signal.SIGTERM), (code, log[-2000:])
    if code == 0:
        assert '"event": "stopping"' in log, log[-2000:]
        assert '"event": "worker_stopped"' in log, log[-2000:]


def test_a_signal_ignored_by_the_parent_still_stops_a_started_worker(
        local: Cli, procs: list[subprocess.Popen[str]]) -> None:
    """A parent that ignores SIGTERM (which children inherit) cannot silence it once the
    worker runs: the worker installs its own handler before anything else it does."""
    worker, _ = _start(local, procs, preexec_fn=lambda: signal.signal(signal.SIGTERM,
                                                                       signal.SIG_IGN))
    wait_for(lambda: '"event": "worker_started"' in (local.tmp / "worker.log").read_text(),
             60, "the worker to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
