"""Publish the backlog per instance to CloudWatch, so that an EC2 Auto Scaling group can
scale the fleet with a target-tracking policy (``s3q exporter --cloudwatch-namespace NS``).

Every ``refresh`` the exporter puts, with the dimension ``Queue`` = the queue URL:

* ``BacklogPerInstance`` — requests in wait/ per live worker (the whole backlog when none
  is live, so that an empty group scales out): the metric to track;
* ``Backlog`` (requests in wait/), ``LiveWorkers``, ``OldestWaitingAge`` (seconds),
  ``InFlight``, ``Failed``.

One PutMetricData per refresh (CloudWatch custom metrics are billed per metric per month,
and per 1,000 requests). The exporter's role needs ``cloudwatch:PutMetricData``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from s3q.dashboard.snapshot import Snapshot, Snapshots
from s3q.errors import ConfigError
from s3q.logs import FailureRun
from s3q.store import StoreError

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.literals import StandardUnitType
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDatumTypeDef

__all__ = ["BacklogPublisher", "datapoints"]

log = logging.getLogger("s3q.cloudwatch")


def datapoints(snap: Snapshot) -> list[tuple[str, float, StandardUnitType]]:
    """(metric name, value, unit) of one snapshot."""
    live = len(snap.live_workers)
    backlog = snap.counts["wait"].count
    return [("BacklogPerInstance", backlog / max(1, live), "Count"),
            ("Backlog", float(backlog), "Count"), ("LiveWorkers", float(live), "Count"),
            ("OldestWaitingAge", snap.oldest_waiting_age or 0.0, "Seconds"),
            ("InFlight", float(len(snap.in_flight)), "Count"),
            ("Failed", float(snap.counts["failed"].count), "Count")]


class BacklogPublisher:
    """Puts :func:`datapoints` into CloudWatch namespace ``namespace``."""

    def __init__(self, namespace: str, *, region: str | None = None,
                 client: Any = None) -> None:
        self.namespace = namespace
        if client is None:
            import boto3

            # (botocore reads AWS_DEFAULT_REGION and the profile's, not AWS_REGION: the S3
            # and SQS clients take it too)
            region = region or os.environ.get("AWS_REGION")
            try:
                client = boto3.session.Session().client("cloudwatch", region_name=region)
            except Exception as e:  # no region, a bad endpoint URL, a profile not found
                raise ConfigError(f"--cloudwatch-namespace: cannot make a CloudWatch client: "
                                  f"{e} (set region, or AWS_REGION)") from e
        self.client: CloudWatchClient = client
        self.published = 0
        #: refreshes in a row that put nothing (said at the first only, and their end)
        self.failures = FailureRun(log, "refreshes", failed_event="cloudwatch_failed",
                                   ended_event="cloudwatch_published")

    def publish_latest(self, snapshots: Snapshots) -> None:
        """:meth:`publish` the latest snapshot. One the store failed to give puts nothing
        (no datapoint: target tracking takes it for missing data, never for an empty
        queue) and is logged; the next refresh tries again, as a scrape does."""
        try:
            snap = snapshots.get()
        except StoreError as e:
            self.failures.failed(f"cannot read the queue to publish to CloudWatch: {e}")
            return
        self.publish(snap)

    def publish(self, snap: Snapshot) -> None:
        """One PutMetricData; errors are logged (the next refresh tries again): the first
        of a run of failed refreshes at WARNING, the others at DEBUG, and its end."""
        from botocore.exceptions import BotoCoreError, ClientError

        dims: list[DimensionTypeDef] = [{"Name": "Queue", "Value": snap.queue_url[:1024]}]
        data: list[MetricDatumTypeDef] = [
            {"MetricName": name, "Value": value, "Unit": unit, "Dimensions": dims}
            for name, value, unit in datapoints(snap)]
        try:
            self.client.put_metric_data(Namespace=self.namespace, MetricData=data)
            self.published += 1
        except (BotoCoreError, ClientError) as e:
            self.failures.failed(f"cannot publish to CloudWatch: {e}")
            return
        self.failures.ended("publishing to CloudWatch again, after %d refreshes that could "
                            "not")
