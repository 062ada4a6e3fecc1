"""Helpers of the acceptance tests of events and of the scanner role: a bucket wired to its
own SQS queue by ``s3q events setup`` (the ``wired`` fixture lives in the test modules, which
import :func:`wire`), and reading a worker's JSON log."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus
from uuid import uuid4

import boto3

from tests.acceptance.conftest import Cli, wait_for
from tests.s3server import S3Endpoint

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

Log = Callable[[], list[dict[str, Any]]]


@dataclass
class Wired:
    cli: Cli
    bucket: str
    sqs: SQSClient
    url: str  # the SQS queue's URL

    def messages(self) -> int:
        """Messages in the queue, visible or not."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages",
                                               "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(v) for v in attrs["Attributes"].values())

    def event(self, name: str) -> str:
        """The body S3 (moto) sends for wait/NAME: the key form-encoded, "/" too."""
        key = quote_plus(f"q/wait/{name}")
        return json.dumps({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": self.bucket}, "object": {"key": key, "size": 1}}}]})


def sqs_client(endpoint: S3Endpoint) -> SQSClient:
    return boto3.client("sqs", endpoint_url=endpoint.endpoint_url, region_name=endpoint.region,
                        aws_access_key_id=endpoint.access_key_id,
                        aws_secret_access_key=endpoint.secret_access_key)


def wire(cli: Cli, s3_endpoint: S3Endpoint) -> Wired:
    """A fresh bucket whose wait/ notifications go to a fresh SQS queue (s3q events setup);
    the cli's queue is s3://BUCKET/q with events_queue set."""
    bucket = f"s3q-ev-{uuid4().hex[:12]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    name = f"s3q-ev-{uuid4().hex[:8]}"
    env = {**cli.env, "S3Q_QUEUE": f"s3://{bucket}/q", "S3Q_EVENTS_QUEUE": name}
    events_cli = replace(cli, env=env, queue=env["S3Q_QUEUE"])
    events_cli.run("events", "setup")
    sqs = sqs_client(s3_endpoint)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return Wired(events_cli, bucket, sqs, url)


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a worker (its stdout and stderr file)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def seen(log: Log, event: str, request: str | None = None,
         ) -> bool:
    return any(e.get("event") == event and (request is None or e.get("request") == request)
               for e in log())


def started(wired: Wired, procs: list[subprocess.Popen[str]], *args: str,
            env: dict[str, str] | None = None, next_listing: float = 0.0,
            ) -> tuple[subprocess.Popen[str], Log]:
    """A worker with events, once it listens on SQS and has found wait/ empty, and its next
    listing of wait/ is at least ``next_listing`` seconds away."""
    before = set(wired.cli.tmp.glob("worker-*.log"))
    proc = wired.cli.worker(*args, env=env)
    procs.append(proc)
    [path] = set(wired.cli.tmp.glob("worker-*.log")) - before

    def log() -> list[dict[str, Any]]:
        return log_events(path)

    def ready() -> bool:
        return seen(log, "events_listening") and any(
            e.get("event") == "idle" and e["seconds"] >= next_listing for e in log())

    wait_for(ready, 60, "the worker to listen and go idle")
    return proc, log


def order(log: list[dict[str, Any]], *wanted: tuple[str, str]) -> list[int]:
    """Positions in the log of the first line of each (event, request)."""
    return [next(i for i, e in enumerate(log) if (e.get("event"), e.get("request")) == w)
            for w in wanted]
