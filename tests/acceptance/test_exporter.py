"""``s3q exporter`` on moto: the queue gauges over HTTP, and the backlog per instance in
CloudWatch (moto's) for an Auto Scaling target-tracking policy."""

from __future__ import annotations

import subprocess
import urllib.request
from typing import TYPE_CHECKING

import boto3

from tests.acceptance.conftest import Cli, wait_for
from tests.s3server import S3Endpoint, free_port

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef


def test_the_exporter_serves_gauges_and_publishes_the_backlog_per_instance(
        cli: Cli, procs: list[subprocess.Popen[str]], s3_endpoint: S3Endpoint) -> None:
    cli.submit(6)
    port = free_port()
    procs.append(cli.spawn("exporter", "--refresh", "1", "--cloudwatch-namespace",
                           "s3q-acceptance", env={"S3Q_METRICS_ADDR": f"127.0.0.1:{port}"}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text: list[str] = []

    def scraped() -> bool:
        try:
            with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text[:] = [answer.read().decode()]
        except OSError:
            return False
        return True

    wait_for(scraped, 60, "the exporter to answer")
    assert 's3q_queue_requests{state="wait"} 6.0' in text[0]
    assert "s3q_queue_backlog_per_worker 6.0" in text[0]  # no live worker: all of it

    cloudwatch = boto3.client("cloudwatch", region_name=s3_endpoint.region,
                              endpoint_url=s3_endpoint.endpoint_url,
                              aws_access_key_id=s3_endpoint.access_key_id,
                              aws_secret_access_key=s3_endpoint.secret_access_key)
    dims: list[DimensionTypeDef] = [{"Name": "Queue", "Value": cli.queue}]

    def published() -> list[float]:
        stats = cloudwatch.get_metric_statistics(
            Namespace="s3q-acceptance", MetricName="BacklogPerInstance", Dimensions=dims,
            StartTime="2000-01-01T00:00:00Z", EndTime="2100-01-01T00:00:00Z", Period=60,
            Statistics=["Maximum"])
        return [p["Maximum"] for p in stats["Datapoints"]]

    wait_for(published, 60, "BacklogPerInstance in CloudWatch")
    assert max(published()) == 6.0
