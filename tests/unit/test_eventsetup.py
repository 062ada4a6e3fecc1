"""Naming the SQS queue (s3q.sqs.parse_queue) and merging ``s3q events setup`` into what a
bucket and a queue already have (s3q.eventsetup): pure functions, no AWS."""

from __future__ import annotations

from typing import Any

import pytest

from s3q.eventsetup import (
    SetupConflict,
    merge_notification,
    merge_policy,
    notification_rule,
    policy_statement,
)
from s3q.sqs import parse_queue

BUCKET = "acme-requests"
WAIT = "requests/wait/"


# ------------------------------------------------------------------ parse_queue
def test_queue_names_urls_and_arns() -> None:
    url = parse_queue("https://sqs.eu-west-1.amazonaws.com/123456789012/s3q-events")
    assert (url.name, url.region, url.account, url.endpoint_url) == (
        "s3q-events", "eu-west-1", "123456789012", None)
    assert url.arn() == "arn:aws:sqs:eu-west-1:123456789012:s3q-events"
    moto = parse_queue("http://127.0.0.1:5000/123456789012/s3q-events")
    assert (moto.name, moto.region, moto.endpoint_url) == (
        "s3q-events", None, "http://127.0.0.1:5000")
    arn = parse_queue("arn:aws-cn:sqs:cn-north-1:123456789012:q_1")
    assert (arn.name, arn.region, arn.account, arn.url) == (
        "q_1", "cn-north-1", "123456789012", None)
    name = parse_queue("s3q-events")
    assert name.arn("aws", "us-east-1") == "arn:aws:sqs:us-east-1:*:s3q-events"


@pytest.mark.parametrize(("text", "why"), [
    ("s3q-events.fifo", "FIFO"),
    ("has space", "not an SQS queue name"),
    ("https://sqs.eu-west-1.amazonaws.com/s3q-events", "not a queue URL"),
    ("arn:aws:sns:eu-west-1:1:topic", "not an SQS queue ARN"),
    ("x" * 81, "not an SQS queue name"),
])
def test_bad_queue_names_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_queue(text)


# ------------------------------------------------------------------ the set-up's merges
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:s3q-events"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"


def test_the_policy_statement_is_added_to_the_others_once() -> None:
    statement = policy_statement(QUEUE_ARN, BUCKET_ARN, "123456789012")
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage" and statement["Resource"] == QUEUE_ARN
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": BUCKET_ARN},
                                      "StringEquals": {"aws:SourceAccount": "123456789012"}}
    other = {"Sid": "Other", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"},
             "Action": "sqs:*", "Resource": QUEUE_ARN}
    merged = merge_policy({"Version": "2012-10-17", "Id": "mine", "Statement": [other]},
                          statement)
    assert merged is not None and merged["Id"] == "mine"
    assert merged["Statement"] == [other, statement]
    assert merge_policy(merged, statement) is None
    assert merge_policy(None, statement) == {"Version": "2012-10-17", "Statement": [statement]}
    # an equivalent statement written by hand (another Sid, ArnEquals, no account) will do
    by_hand = {"Effect": "Allow", "Principal": {"Service": ["s3.amazonaws.com"]},
               "Action": ["sqs:SendMessage"], "Resource": QUEUE_ARN,
               "Condition": {"ArnEquals": {"aws:SourceArn": BUCKET_ARN}}}
    assert merge_policy({"Statement": by_hand}, statement) is None
    assert policy_statement(QUEUE_ARN, BUCKET_ARN, None)["Condition"] == {
        "ArnLike": {"aws:SourceArn": BUCKET_ARN}}


def rule(arn: str, prefix: str | None, events: list[str], *, suffix: str | None = None,
         kind: str = "QueueArn", id_: str = "theirs") -> dict[str, Any]:
    rules = [{"Name": "Prefix", "Value": prefix}] if prefix is not None else []
    rules += [{"Name": "Suffix", "Value": suffix}] if suffix is not None else []
    out: dict[str, Any] = {"Id": id_, kind: arn, "Events": events}
    if rules:
        out["Filter"] = {"Key": {"FilterRules": rules}}
    return out


def test_the_notification_rule_is_merged_with_the_other_rules() -> None:
    ours = notification_rule(QUEUE_ARN, WAIT)
    assert ours["Events"] == ["s3:ObjectCreated:*"] and ours["QueueArn"] == QUEUE_ARN
    assert ours["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": WAIT}]}}
    existing = {
        "QueueConfigurations": [rule("arn:aws:sqs:eu-west-1:1:other", "other/wait/",
                                     ["s3:ObjectCreated:*"])],
        "TopicConfigurations": [rule("arn:aws:sns:eu-west-1:1:t", "requests/wait/",
                                     ["s3:ObjectRemoved:*"], kind="TopicArn")],
        "LambdaFunctionConfigurations": [rule("arn:aws:lambda:eu-west-1:1:function:f", None,
                                              ["s3:ObjectCreated:Put"], suffix=".jpg",
                                              kind="LambdaFunctionArn")],
        "EventBridgeConfiguration": {},
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }
    with pytest.raises(SetupConflict, match=r"'theirs'.*\.jpg.*function:f"):
        merge_notification(existing, ours)  # the Lambda's rule covers every prefix
    del existing["LambdaFunctionConfigurations"]
    merged = merge_notification(existing, ours)
    assert merged is not None and "ResponseMetadata" not in merged
    assert merged["QueueConfigurations"] == [*existing["QueueConfigurations"], ours]
    assert merged["TopicConfigurations"] == existing["TopicConfigurations"]
    assert merged["EventBridgeConfiguration"] == {}
    assert merge_notification(merged, ours) is None  # run twice: unchanged


@pytest.mark.parametrize("present", [
    rule(QUEUE_ARN, WAIT, ["s3:ObjectCreated:*"]),  # ours, by hand, "Prefix" capitalised
    rule(QUEUE_ARN, "requests/", ["s3:ObjectCreated:*"]),  # a broader prefix, same queue
    rule(QUEUE_ARN, None, ["s3:ObjectCreated:Put", "s3:ObjectCreated:Post",
                           "s3:ObjectCreated:Copy", "s3:ObjectCreated:CompleteMultipartUpload"]),
])
def test_a_rule_already_sending_the_events_to_the_queue_is_enough(
        present: dict[str, Any]) -> None:
    assert merge_notification({"QueueConfigurations": [present]},
                              notification_rule(QUEUE_ARN, WAIT)) is None


@pytest.mark.parametrize("overlapping", [
    rule("arn:aws:sqs:eu-west-1:123456789012:another", WAIT, ["s3:ObjectCreated:*"]),
    rule("arn:aws:sqs:eu-west-1:123456789012:another", "requests/wait/2026/",
         ["s3:ObjectCreated:Put"]),
    rule("arn:aws:sns:eu-west-1:1:topic", "requests/", ["s3:ObjectCreated:*"],
         kind="TopicArn"),
    rule(QUEUE_ARN, WAIT, ["s3:ObjectCreated:Put"]),  # our queue, but not every creation
    rule(QUEUE_ARN, WAIT, ["s3:ObjectCreated:*"], suffix="request.json"),
])
def test_an_overlapping_rule_pointing_elsewhere_is_refused(
        overlapping: dict[str, Any]) -> None:
    with pytest.raises(SetupConflict, match="S3 allows one destination per event and key"):
        merge_notification({"QueueConfigurations": [overlapping]},
                           notification_rule(QUEUE_ARN, WAIT))


def test_a_queue_the_bucket_already_notifies_for_other_keys_is_refused() -> None:
    """One SQS queue per s3q queue: a worker deletes every message that is not about its own
    queue's wait/. Two queues of one bucket given the same events_queue (a profile's
    default in s3q.toml) were both wired to it, and each one's workers deleted the other's
    notifications: its requests waited for the listing, and 's3q events setup', which
    events_missed tells to run, found everything in place."""
    prod = notification_rule(QUEUE_ARN, "prod/wait/")
    with pytest.raises(SetupConflict, match=r"prod/wait/.*one SQS queue per s3q queue"):
        merge_notification({"QueueConfigurations": [prod]},
                           notification_rule(QUEUE_ARN, "staging/wait/"))
    # run again for the queue already wired, alongside a rule of another queue
    staging = rule(QUEUE_ARN, "staging/wait/", ["s3:ObjectCreated:*"])
    with pytest.raises(SetupConflict, match=r"staging/wait/.*one SQS queue per s3q queue"):
        merge_notification({"QueueConfigurations": [prod, staging]},
                           notification_rule(QUEUE_ARN, "prod/wait/"))
    # other events for other keys to the same queue take nothing from it
    removed = rule(QUEUE_ARN, "staging/wait/", ["s3:ObjectRemoved:*"])
    assert merge_notification({"QueueConfigurations": [prod, removed]},
                              notification_rule(QUEUE_ARN, "prod/wait/")) is None


@pytest.mark.parametrize("narrow", [
    rule(QUEUE_ARN, WAIT, ["s3:ObjectCreated:Put"]),  # no multipart upload, no copy
    rule(QUEUE_ARN, WAIT, ["s3:ObjectCreated:*"], suffix="request.json"),
    rule(QUEUE_ARN, "requests/wait/2026/", ["s3:ObjectCreated:*"]),
])
def test_a_narrower_rule_to_the_queue_itself_is_refused_with_what_to_do(
        narrow: dict[str, Any]) -> None:
    """A rule of the bucket already sends some of wait/'s creations to events_queue itself
    (written by hand, or by another tool): the refusal told the operator to 'point
    events_queue at that queue', which it already is. It must say what to do instead:
    widen that rule to every creation under wait/, or remove it and run the setup again."""
    with pytest.raises(SetupConflict) as refused:
        merge_notification({"QueueConfigurations": [narrow]},
                           notification_rule(QUEUE_ARN, WAIT))
    message = str(refused.value)
    assert "Point events_queue at that queue" not in message
    assert f"s3:ObjectCreated:* for every key starting with {WAIT!r}" in message
    assert "or remove it and run 's3q events setup' again" in message
