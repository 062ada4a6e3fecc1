"""``s3q events setup`` on moto (S3 and SQS in one server): idempotent, merged with the
bucket's other notification rules, refusing a rule that points elsewhere; and the IAM
policy's SQS statement."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest

from tests.acceptance.conftest import Cli
from tests.acceptance.eventing import sqs_client
from tests.s3server import S3Endpoint


# ---------------------------------------------------------------------------- set-up
def test_setup_is_idempotent_and_merges_with_the_buckets_other_rules(
        cli: Cli, s3_endpoint: S3Endpoint) -> None:
    if not s3_endpoint.is_moto:
        pytest.skip("needs moto's SQS")
    bucket = f"s3q-ev-{uuid4().hex[:12]}"
    s3 = s3_endpoint.client()
    s3.create_bucket(Bucket=bucket)
    sqs = sqs_client(s3_endpoint)
    other = sqs.create_queue(QueueName=f"other-{uuid4().hex[:8]}")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    theirs: Any = {"Id": "theirs", "QueueArn": other_arn, "Events": ["s3:ObjectCreated:*"],
              "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [theirs]})
    name = f"s3q-ev-{uuid4().hex[:8]}"
    env = {**cli.env, "S3Q_QUEUE": f"s3://{bucket}/q", "S3Q_EVENTS_QUEUE": name}
    c = replace(cli, env=env)

    dry = json.loads(c.run("events", "setup", "--dry-run", "--json").stdout)
    assert [(s["what"], s["state"]) for s in dry["steps"]] == [("queue", "would create")]
    with pytest.raises(Exception, match="does not exist"):
        sqs.get_queue_url(QueueName=name)

    first = json.loads(c.run("events", "setup", "--json").stdout)
    assert [(s["what"], s["state"]) for s in first["steps"]] == [
        ("queue", "created"), ("access policy", "added"), ("notification", "added")]
    second = json.loads(c.run("events", "setup", "--json").stdout)
    assert [(s["what"], s["state"]) for s in second["steps"]] == [
        ("queue", "exists"), ("access policy", "present"), ("notification", "present")]
    assert second["changed"] is False and second["queue_arn"] == first["queue_arn"]

    config = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert [r["Id"] for r in config] == ["theirs", config[1]["Id"]]
    assert config[0]["QueueArn"] == other_arn
    assert (config[1]["QueueArn"], config[1]["Events"]) == (first["queue_arn"],
                                                             ["s3:ObjectCreated:*"])
    assert config[1]["Filter"]["Key"]["FilterRules"][0]["Value"] == "q/wait/"
    policy = json.loads(sqs.get_queue_attributes(
        QueueUrl=first["queue_url"], AttributeNames=["Policy"])["Attributes"]["Policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
        "StringEquals": {"aws:SourceAccount": first["queue_arn"].split(":")[4]}}

    # a second queue on the same prefix, wired to another SQS queue: refused, nothing changed
    clash = c.run("events", "setup", env={"S3Q_EVENTS_QUEUE": f"{name}-2"}, check=False)
    assert clash.returncode == 1, clash.stderr
    assert "S3 allows one destination per event and key" in clash.stderr
    assert first["queue_arn"] in clash.stderr
    again = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert again == config


def test_iam_policy_adds_receiving_from_the_events_queue(cli: Cli) -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/s3q-events"
    policy = json.loads(cli.run("iam-policy", env={"S3Q_EVENTS_QUEUE": url}).stdout)
    [sqs] = [s for s in policy["Statement"] if s["Sid"] == "ReceiveBucketNotifications"]
    assert sqs["Resource"] == "arn:aws:sqs:eu-west-1:123456789012:s3q-events"
    assert sorted(sqs["Action"]) == ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
                                     "sqs:ReceiveMessage"]
    plain = json.loads(cli.run("iam-policy").stdout)
    assert "ReceiveBucketNotifications" not in {s["Sid"] for s in plain["Statement"]}
