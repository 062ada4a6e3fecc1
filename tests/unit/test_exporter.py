"""``s3q exporter --cloudwatch-namespace``: the publishing loop under store and CloudWatch
failures (CloudWatch: moto's, on the S3 endpoint)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from click.testing import CliRunner

from s3q import Queue
from s3q.backends.local import LocalStore
from s3q.backends.memory import MemoryStore
from s3q.cli import cli
from s3q.cloudwatch import BacklogPublisher
from s3q.dashboard import metered
from s3q.dashboard.snapshot import take_snapshot
from s3q.store import StoreUnavailable
from tests.s3server import S3Endpoint, free_port

T = TypeVar("T")

pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture
def cloudwatch(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto's CloudWatch, where the exporter's client (the standard chain) finds it."""
    if not s3_endpoint.is_moto:
        pytest.skip("CloudWatch is moto's only")
    assert s3_endpoint.endpoint_url is not None
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", s3_endpoint.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_endpoint.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.access_key_id or "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret_access_key or "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return boto3.client("cloudwatch", region_name=s3_endpoint.region,
                        endpoint_url=s3_endpoint.endpoint_url)


def backlog_points(client: Any, namespace: str, queue: str) -> list[float]:
    stats = client.get_metric_statistics(
        Namespace=namespace, MetricName="Backlog",
        Dimensions=[{"Name": "Queue", "Value": queue}],
        StartTime="2000-01-01T00:00:00Z", EndTime="2100-01-01T00:00:00Z", Period=60,
        Statistics=["SampleCount"])
    return [p["SampleCount"] for p in stats["Datapoints"]]


@pytest.fixture(autouse=True)
def _sigterm_restored() -> Iterator[None]:
    """The exporter run in this process sets its SIGTERM handler (exit 0): put back
    pytest's after the test."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def listings_of_wait(monkeypatch: pytest.MonkeyPatch, plan: dict[int, BaseException],
                     healed: threading.Event | None = None) -> None:
    """The exporter's store (its request meter) raises ``plan[n]`` at its ``n``-th listing
    of wait/ (1: the check at start; then one per snapshot), until ``healed`` is set."""
    seen = [0]

    class Faulty(metered.MeteredStore):
        def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
            if op == "list" and args["prefix"] == "wait/":
                seen[0] += 1
                if seen[0] in plan and not (healed and healed.is_set()):
                    raise plan[seen[0]]
            return super()._call(op, args, fn)

    monkeypatch.setattr(metered, "MeteredStore", Faulty)


def test_the_cloudwatch_publisher_outlives_a_store_error(
        tmp_path: Path, cloudwatch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    qdir = tmp_path / "q"
    LocalStore(qdir).put("wait/0_request.json", b"{}")
    # snapshots 1 and 3 are read, 2 is not (the store unavailable), then the exporter stops
    listings_of_wait(monkeypatch, {3: StoreUnavailable("SlowDown: wait/ (retries exhausted)"),
                                   5: KeyboardInterrupt()})
    result = CliRunner().invoke(cli, [
        "exporter", "--queue", str(qdir), "--refresh", "1", "--cloudwatch-namespace",
        "s3q-outlives", "--metrics-addr", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 0, result.output
    assert "SlowDown" in result.output  # (said, in the log)
    # the refresh the store failed put nothing (no datapoint: not an empty queue)
    assert sum(backlog_points(cloudwatch, "s3q-outlives", LocalStore(qdir).url)) == 2


def test_the_cloudwatch_client_takes_the_region_as_the_s3_one_or_says_it_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")  # (as S3's and SQS's clients take it)
    assert BacklogPublisher("s3q").client.meta.region_name == "eu-west-3"
    monkeypatch.delenv("AWS_REGION")
    qdir = tmp_path / "q"
    LocalStore(qdir).put("wait/0_request.json", b"{}")
    result = CliRunner().invoke(cli, [
        "exporter", "--queue", str(qdir), "--cloudwatch-namespace", "s3q",
        "--metrics-addr", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 2, result.exception  # (a traceback before)
    assert "s3q: error: --cloudwatch-namespace: cannot make a CloudWatch client" in \
        result.output and "region" in result.output


def test_cloudwatch_failing_refresh_after_refresh_is_said_once_and_its_end_too(
        cloudwatch: Any, s3_endpoint: S3Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="s3q.cloudwatch")
    snap = take_snapshot(Queue(MemoryStore("cw")))
    unreachable = boto3.client("cloudwatch", region_name=s3_endpoint.region,
                               endpoint_url=f"http://127.0.0.1:{free_port()}",
                               config=Config(retries={"total_max_attempts": 1}))
    publisher = BacklogPublisher("s3q-said-once", client=unreachable)
    for _ in range(40):  # ten minutes of refreshes (15 s)
        publisher.publish(snap)
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "cannot publish to CloudWatch" in said[0].getMessage()
    publisher.client = cloudwatch  # (it answers again)
    publisher.publish(snap)
    assert publisher.published == 1
    assert [r.getMessage() for r in caplog.records][-1] == (
        "publishing to CloudWatch again, after 40 refreshes that could not")
    publisher.client = unreachable  # a new outage is said again
    publisher.publish(snap)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2


def test_a_scrape_the_store_fails_is_answered_in_one_line_and_said_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails (unavailable) from the exporter's first reading on: each scrape
    fails, as it must (Prometheus: up 0, never gauges of an empty queue), and says why in
    a line; the log says it once, not a traceback per scrape, and when it ends."""
    qdir = tmp_path / "q"
    LocalStore(qdir).put("wait/0_request.json", b"{}")
    healed = threading.Event()
    failing: dict[int, BaseException] = {
        n: StoreUnavailable("SlowDown: wait/ (retries exhausted)")
        for n in range(2, 100)}  # (1: the check at start)
    listings_of_wait(monkeypatch, failing, healed)
    port = free_port()
    answers: list[tuple[int, str]] = []

    def scrape() -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def prometheus() -> None:
        try:
            for _ in range(600):  # (until it serves)
                try:
                    answers.append(scrape())
                    break
                except urllib.error.URLError:
                    threading.Event().wait(0.05)
            answers.extend(scrape() for _ in range(2))
            healed.set()
            answers.append(scrape())
        finally:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=prometheus, daemon=True).start()
    result = CliRunner().invoke(cli, ["exporter", "--queue", str(qdir),
                                      "--metrics-addr", f"127.0.0.1:{port}"])
    assert result.exit_code == 0, result.output
    assert [code for code, _ in answers] == [503, 503, 503, 200]
    assert answers[0][1] == ("s3q exporter: cannot read the queue: SlowDown: wait/ (retries "
                             "exhausted)\n")
    assert 's3q_queue_requests{state="wait"} 1.0' in answers[-1][1]
    assert "Traceback" not in result.output
    assert result.output.count("cannot read the queue for a scrape") == 1
    assert "scrapes answered again, after 3 that could not" in result.output
