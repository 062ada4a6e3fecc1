"""Servers dying, stopping and misbehaving, with the real ``s3q`` executable on moto S3."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli, kill_tree, wait_for
from tests.s3server import S3Endpoint

SLOW = {"S3Q_TEST_SLEEP": "60"}


def test_killed_worker_restarted_completes_its_job_once(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    [name] = cli.submit(1)
    worker = cli.worker("--worker-id", "server-1", "--lease-ttl", "60", env=SLOW)
    procs.append(worker)
    wait_for(lambda: cli.runs("start")[name] == 1, 30, "the job to start")
    # a job shows in processing/ once it has run processing_view_after (1 s)
    wait_for(lambda: cli.counts()["processing"] == 1, 30, "its processing/ view")
    kill_tree(worker, signal.SIGKILL)  # the server dies, handler and all
    assert cli.counts()["processing"] == 1

    t0 = time.monotonic()
    restarted = cli.worker("--worker-id", "server-1", "--lease-ttl", "60", "--burst")
    procs.append(restarted)
    assert restarted.wait(60) == 0
    # Own recovery: at once, not after the 60 s lease.
    assert time.monotonic() - t0 < 30
    assert cli.runs("done") == {name: 1}
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


def test_worker_that_never_returns_is_taken_over_after_the_lease_ttl(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    [name] = cli.submit(1)
    dead = cli.worker("--worker-id", "server-dead", "--lease-ttl", "5", env=SLOW)
    procs.append(dead)
    wait_for(lambda: cli.runs("start")[name] == 1, 30, "the job to start")
    kill_tree(dead, signal.SIGKILL)

    t0 = time.monotonic()
    survivor = cli.worker("--worker-id", "server-2", "--lease-ttl", "5", "--max-jobs", "1")
    procs.append(survivor)
    assert survivor.wait(60) == 0
    waited = time.monotonic() - t0
    # lease 5 s + 2 s clock margin + a scan every 2.5 s, and nothing sooner
    assert 3 < waited < 20, waited
    assert cli.runs("done") == {name: 1}
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


def test_sigterm_gives_the_running_job_back_and_exits_zero(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    [name] = cli.submit(1)
    worker = cli.worker("--grace", "2", env=SLOW)
    procs.append(worker)
    wait_for(lambda: cli.runs("start")[name] == 1, 30, "the job to start")
    t0 = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert time.monotonic() - t0 < 2 + 8
    assert cli.counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}
    assert cli.runs("done") == {}
    # Another server picks it up at once (no lease to wait for).
    again = cli.worker("--burst")
    procs.append(again)
    assert again.wait(60) == 0
    assert cli.runs("done") == {name: 1}


def test_two_workers_never_process_a_request_twice(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    names = cli.submit(40)
    workers = [cli.worker("--worker-id", f"w{i}", "-c", "3", "--burst") for i in range(2)]
    procs.extend(workers)
    assert [w.wait(120) for w in workers] == [0, 0]
    assert cli.runs("done") == dict.fromkeys(names, 1)
    assert cli.runs("start") == dict.fromkeys(names, 1)
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 40, "failed": 0}


def test_a_request_that_always_crashes_its_handler_ends_in_failed(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    [name] = cli.submit(1)
    for _ in range(3):  # each burst ends while the retry waits
        worker = cli.worker("--max-attempts", "3", "--retry-base-delay", "0",
                            "--retry-max-delay", "0", "--burst", env={"S3Q_TEST_EXIT": "1"})
        procs.append(worker)
        assert worker.wait(60) == 0
    assert cli.runs("start") == {name: 3}
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    shown = json.loads(cli.run("show", name, "--json").stdout)
    text = json.dumps(shown)
    assert "boom: cannot handle" in text and "exit code 1" in text


def test_a_hanging_exec_handler_is_killed_at_its_timeout(
        cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    [name] = cli.submit(1)
    t0 = time.monotonic()
    worker = cli.worker("--job-timeout", "2", "--max-attempts", "1", "--burst", env=SLOW)
    procs.append(worker)
    assert worker.wait(60) == 0
    assert time.monotonic() - t0 < 30
    assert cli.counts()["failed"] == 1
    assert "timed out after 2s" in cli.run("show", name, "--json").stdout


@pytest.mark.skipif(shutil.which("aws", path=str(Path(sys.executable).parent)) is None,
                    reason="awscli not installed in the venv")
def test_the_seeds_own_reset_command_loses_nothing(
        cli: Cli, procs: list[subprocess.Popen[str]], s3_endpoint: S3Endpoint) -> None:
    names = cli.submit(12)
    worker = cli.worker("--worker-id", "server-1", "-c", "3", env=SLOW)
    procs.append(worker)
    wait_for(lambda: len(cli.runs("start")) == 3, 30, "three jobs in flight")
    wait_for(lambda: cli.counts()["processing"] == 3, 30, "their processing/ views")
    kill_tree(worker, signal.SIGKILL)
    assert cli.counts()["processing"] == 3

    # The seed's resetProcessing.sh, verbatim but for the endpoint and the queue prefix.
    root = cli.queue.rstrip("/")
    aws = str(Path(sys.executable).parent / "aws")
    endpoint = ["--endpoint-url", s3_endpoint.endpoint_url] if s3_endpoint.endpoint_url else []
    subprocess.run([aws, "s3", "mv", f"{root}/processing/", f"{root}/wait/", "--exclude", "*",
                    "--include", "*request.json", "--recursive", *endpoint],
                   env=cli.env, check=True, capture_output=True, timeout=120)
    assert cli.counts() == {"wait": 12, "processing": 0, "finish": 0, "failed": 0}

    restarted = cli.worker("--worker-id", "server-1", "-c", "3", "--burst")
    procs.append(restarted)
    assert restarted.wait(120) == 0
    assert cli.runs("done") == dict.fromkeys(names, 1)
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 12, "failed": 0}
    assert json.loads(cli.run("status", "--json").stdout)["counts"]["finish"] == 12
