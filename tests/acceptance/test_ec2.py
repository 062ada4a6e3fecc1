"""EC2 behaviour with the real executable: draining at a Spot interruption notice served
by an IMDSv2 stand-in on loopback, and the deployment commands."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.acceptance.conftest import Cli, wait_for
from tests.fakeimds import FakeIMDS, imds

__all__ = ["imds"]


def test_spot_interruption_drains_the_worker(
        cli: Cli, procs: list[subprocess.Popen[str]], imds: FakeIMDS) -> None:
    [name] = cli.submit(1)
    env = {"S3Q_IMDS_ENDPOINT": imds.url, "S3Q_IMDS": "", "S3Q_TEST_SLEEP": "120"}
    worker = cli.worker("--worker-id", "spot-1", "--drain-on-interruption", "--grace", "3",
                        env=env)
    procs.append(worker)
    wait_for(lambda: cli.runs("start")[name] == 1, 30, "the job to start")
    wait_for(lambda: imds.count("GET") >= 2, 30, "the worker to poll the IMDS")
    assert worker.poll() is None
    t0 = time.monotonic()
    imds.spot = json.dumps({"action": "terminate", "time": "2026-11-29T12:00:00Z"})
    assert worker.wait(120) == 0  # drained: poll (5 s) + grace (3 s) + give back
    drained_in = time.monotonic() - t0
    assert drained_in < 30, drained_in
    assert cli.counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}
    # A second worker picks it up at once.
    other = cli.worker("--worker-id", "spot-2", "--burst")
    procs.append(other)
    assert other.wait(60) == 0
    assert cli.runs("done") == {name: 1}
    assert worker.returncode == 0 and other.returncode == 0


def test_iam_policy_covers_the_queue(cli: Cli) -> None:
    policy = json.loads(cli.run("iam-policy").stdout)
    assert policy["Version"] == "2012-10-17"
    bucket, _, prefix = cli.queue.removeprefix("s3://").partition("/")
    resources = json.dumps(policy)
    for state in ("wait", "processing", "finish", "failed", ".s3q"):
        assert f"arn:aws:s3:::{bucket}/{prefix}/{state}/*" in resources
    assert "ssm:GetParameter" not in resources and "kms:Decrypt" not in resources


def test_deploy_init_writes_a_bundle_once(cli: Cli, tmp_path: Path) -> None:
    out = cli.run("deploy", "init", str(tmp_path / "app"))
    written = {Path(p).relative_to(tmp_path / "app").as_posix()
               for p in out.stdout.split()}
    assert {"appspec.yml", "deploy/s3q-worker.service", "deploy/s3q.toml"} <= written
    again = cli.run("deploy", "init", str(tmp_path / "app"), check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    assert cli.run("deploy", "init", str(tmp_path / "app"), "--force").returncode == 0
