"""EC2 behaviour with the real executable: draining at a Spot interruption notice served
by an IMDSv2 stand-in on loopback, and the deployment commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

import pytest

from tests.acceptance.conftest import Cli, wait_for
from tests.chaos.faultproxy import FaultProxy
from tests.fakeimds import FakeIMDS, imds
from tests.s3server import S3Endpoint
from tests.unit.test_iam import allowed

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


def _s3_action(method: str, path: str, copy_source: str | None, body: bytes = b""
               ) -> list[tuple[str, str, dict[str, str]]]:
    """(IAM action, resource ARN, condition context) of one path-style S3 request."""
    parts = urlsplit(path)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    query = parse_qs(parts.query, keep_blank_values=True)
    if not key and method == "POST" and "delete" in query:
        # DeleteObjects: s3:DeleteObject on each key, and s3:GetObject for its ETag condition
        keys = [k.text for k in ElementTree.fromstring(body).iter()
                if k.tag.rsplit("}", 1)[-1] == "Key"]
        return [(action, f"arn:aws:s3:::{bucket}/{k}", {}) for k in keys
                for action in ("s3:DeleteObject", "s3:GetObject")]
    if not key:  # bucket-level: ListObjectsV2 (HeadBucket is tolerated: see below)
        return [("s3:ListBucket", f"arn:aws:s3:::{bucket}",
                 {"s3:prefix": query.get("prefix", [""])[0]})]
    obj = f"arn:aws:s3:::{bucket}/{key}"
    if method in ("GET", "HEAD"):
        return [("s3:GetObject", obj, {})]
    if method == "DELETE":
        return [("s3:DeleteObject", obj, {})]
    actions: list[tuple[str, str, dict[str, str]]] = [("s3:PutObject", obj, {})]
    if copy_source:
        actions.append(("s3:GetObject", f"arn:aws:s3:::{unquote(copy_source).lstrip('/')}",
                        {}))
    return actions


def test_the_iam_policy_allows_every_request_of_a_real_run(
        cli: Cli, procs: list[subprocess.Popen[str]], s3_endpoint: S3Endpoint) -> None:
    """Every S3 request the executable sends — submit, a worker failing requests into
    failed/, requeue, a worker completing them, status, recover, purge — recorded by a
    proxy, is allowed by `s3q iam-policy`, and the policy names nothing else."""
    if not s3_endpoint.endpoint_url:
        pytest.skip("needs a local endpoint to record requests")
    proxy = FaultProxy(s3_endpoint.endpoint_url, rate=0.0)
    env = {"AWS_ENDPOINT_URL": proxy.url}
    try:
        cli.env.update(env)
        cli.submit(3)
        cli.run("worker", "--exec", f"{sys.executable} -c 'import sys; sys.exit(1)'",
                "--burst", "--max-attempts", "1")
        cli.run("requeue", "--all", "--yes")
        cli.run("worker", "--exec", "true", "--burst")
        cli.run("status", "--json")
        cli.run("recover", "--all", "--yes")
        cli.run("purge", "finish", "--yes")
        policy = json.loads(cli.run("iam-policy").stdout)
    finally:
        proxy.close()
    denied = []
    seen = batched = 0
    for i, (method, path, source) in enumerate(proxy.requests):
        if method == "HEAD" and urlsplit(path).path.strip("/").count("/") == 0:
            continue  # HeadBucket, only to read the server's Date: a 403 serves as well
        batched += "delete" in parse_qs(urlsplit(path).query, keep_blank_values=True)
        for action, resource, context in _s3_action(method, path, source,
                                                    proxy.posted.get(i, b"")):
            seen += 1
            if not allowed(policy, action, resource, context):
                denied.append((action, resource, context))
    assert seen > 50 and denied == []
    assert batched  # the probe's DeleteObjects at least (and commits that met)
    # and nothing broader than the queue's own prefixes
    bucket, _, prefix = cli.queue.removeprefix("s3://").partition("/")
    assert not allowed(policy, "s3:GetObject", f"arn:aws:s3:::{bucket}/other/x")
    assert not allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": ""})
    assert allowed(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                   {"s3:prefix": f"{prefix}/wait/"})
