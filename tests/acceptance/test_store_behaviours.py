"""Real ``s3q worker`` processes on stores that behave unlike moto (tests/storeproxy.py): the
promise of docs/PROTOCOL.md must hold there too."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.acceptance.conftest import Cli
from tests.s3server import S3Endpoint
from tests.storeproxy import Behaviour, StoreProxy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def opaque(s3_endpoint: S3Endpoint) -> Iterator[StoreProxy]:
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("needs a local S3 endpoint to put the proxy in front of")
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour(opaque_etags=True))
    yield proxy
    proxy.close()


def test_the_proxy_gives_every_write_its_own_etag(opaque: StoreProxy,
                                                  s3_endpoint: S3Endpoint) -> None:
    """The layer the next test relies on: same bytes, different ETags; conditions still mean
    what they say (checked with a raw boto3 client, as any S3 client would see it)."""
    s3 = boto3.client("s3", endpoint_url=opaque.url, region_name=s3_endpoint.region,
                      aws_access_key_id=s3_endpoint.access_key_id,
                      aws_secret_access_key=s3_endpoint.secret_access_key)
    bucket = s3_endpoint.bucket
    a = s3.put_object(Bucket=bucket, Key="opaque/a", Body=b"same")["ETag"]
    b = s3.put_object(Bucket=bucket, Key="opaque/b", Body=b"same")["ETag"]
    c = s3.copy_object(Bucket=bucket, Key="opaque/c",
                       CopySource={"Bucket": bucket, "Key": "opaque/a"})
    assert len({a, b, c["CopyObjectResult"]["ETag"]}) == 3
    assert s3.head_object(Bucket=bucket, Key="opaque/a")["ETag"] == a
    listed = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(
        Bucket=bucket, Prefix="opaque/")["Contents"]}
    assert listed == {"opaque/a": a, "opaque/b": b, "opaque/c": c["CopyObjectResult"]["ETag"]}
    s3.put_object(Bucket=bucket, Key="opaque/a", Body=b"v2", IfMatch=a)
    with pytest.raises(s3.exceptions.ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=bucket, Key="opaque/a", Body=b"v3", IfMatch=a)  # a is stale
    with pytest.raises(s3.exceptions.ClientError, match="PreconditionFailed"):
        s3.delete_object(Bucket=bucket, Key="opaque/b", IfMatch=a)  # a is a's, not b's
    s3.delete_object(Bucket=bucket, Key="opaque/b", IfMatch=b)


def test_workers_on_opaque_etags_finish_each_request_once(opaque: StoreProxy, cli: Cli,
                                                          ) -> None:
    """Issue 8: with a new ETag for every write (SSE-KMS), two real workers finish 40
    requests exactly once each, and a poison request reaches failed/ after exactly
    max_attempts attempts."""
    log = cli.tmp / "runs.log"
    env = {"AWS_ENDPOINT_URL": opaque.url, "PYTHONPATH": str(ROOT),
           "S3Q_CHAOS_LOG": str(log), "S3Q_MAX_ATTEMPTS": "3",
           "S3Q_RETRY_BASE_DELAY": "0.2", "S3Q_RETRY_MAX_DELAY": "0.5"}
    src = cli.tmp / "in"
    src.mkdir()
    names = [f"k{i:02d}_request.json" for i in range(40)]
    for name in names:
        (src / name).write_text(json.dumps({"sleep": 0.05}))
    (src / "poison_request.json").write_text(json.dumps({"crash": True}))
    cli.run("submit", str(src), env=env)
    workers = [cli.spawn("worker", "--handler", "tests.chaos.handlers:record", "-c", "2",
                         "--burst", "--worker-id", f"opaque-{i}", env=env)
               for i in range(2)]
    assert [w.wait(300) for w in workers] == [0, 0]
    events = [line.split() for line in log.read_text().splitlines()]
    done = Counter(name for event, name, _ in events if event == "done")
    starts = Counter(name for event, name, _ in events if event == "start")
    assert {n: done[n] for n in names} == dict.fromkeys(names, 1)
    assert starts["poison_request.json"] == 3 and done["poison_request.json"] == 0
    shown = json.loads(cli.run("show", "poison_request.json", "--json", env=env).stdout)
    assert shown["error"]["attempts"] == 3
    assert cli.counts() == {"wait": 0, "processing": 0, "finish": 40, "failed": 1}
    assert opaque.counts["etags issued"] > 100  # every write really got its own


FAIL = f"{sys.executable} -c 'import sys; sys.exit(3)'"


@pytest.fixture
def refusing(s3_endpoint: S3Endpoint) -> Iterator[StoreProxy]:
    """S3 refusing one request's key (403, as IAM does) and failing another's (503 every
    time: what the client sees as a store gone away)."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("needs a local S3 endpoint to put the proxy in front of")
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour(
        deny_keys=frozenset({("PutObject", ".s3q/lease/r1_request.json")}),
        down_keys=frozenset({("PutObject", ".s3q/lease/r3_request.json")})))
    yield proxy
    proxy.close()


def test_requeue_all_says_what_it_did_when_s3_refuses_one_request_or_goes_away(
        refusing: StoreProxy, cli: Cli) -> None:
    """`s3q requeue --all` on S3: r1's lease write is denied (reported, the others go on),
    r3's keeps failing with 503 (the store is unavailable: it stops there). It prints what
    it requeued, what failed and why, what it did not attempt, and exits 3; the denied
    request stays in failed/, nothing is lost."""
    names = [f"r{i}_request.json" for i in range(5)]
    src = cli.tmp / "in"
    src.mkdir()
    for name in names:
        (src / name).write_text("{}")
    cli.run("submit", str(src))  # straight to S3: the proxy is for the requeue alone
    cli.run("worker", "--exec", FAIL, "--burst", "--max-attempts", "1",
            "--breaker-threshold", "0")
    assert cli.counts()["failed"] == 5
    via = {"AWS_ENDPOINT_URL": refusing.url, "S3Q_CONCURRENCY": "1"}
    out = cli.run("requeue", "--all", "--yes", "--json", env=via, check=False)
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["requeued"] == ["r0_request.json", "r2_request.json"]
    failed = {f["name"]: f["error"] for f in doc["failed"]}
    assert "access denied" in failed["r1_request.json"]
    assert "SlowDown" in failed["r3_request.json"]
    assert doc["not_attempted"] == ["r4_request.json"]
    [line] = [x for x in out.stderr.splitlines() if x.startswith("s3q: error: ")]
    assert "stopped, store unavailable" in line and "2 requeued, 2 failed, 1 not attempted" \
        in line and "re-running is safe" in line
    assert refusing.counts["denied"] >= 1 and refusing.counts["down"] >= 1
    counts = cli.counts()
    assert counts["wait"] == 2 and counts["failed"] == 3
