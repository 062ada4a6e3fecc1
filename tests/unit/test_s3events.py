"""Reading S3 event notifications as SQS delivers them (s3q.s3events): keys form-URL-decoded
with or without encoded slashes, the queue's wait/ prefix and bucket, test events, SNS
envelopes, malformed messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s3q.s3events import decode_key, parse_message

BUCKET = "acme-requests"
WAIT = "requests/wait/"


def record(key: str, *, bucket: str = BUCKET, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One record as S3 writes it (only the fields s3q reads, and a few it ignores)."""
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": event,
            "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": key, "size": 2, "eTag": "abc"}}}


def body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


# ------------------------------------------------------------------ decode_key
@pytest.mark.parametrize(("raw", "key"), [
    # AWS keeps "/" and writes a space as "+", a plus as %2B
    ("requests/wait/a+b%2Bc_request.json", "requests/wait/a b+c_request.json"),
    # moto encodes the whole key, "/" included
    ("requests%2Fwait%2Fa+b%2Bc_request.json", "requests/wait/a b+c_request.json"),
    ("q%2Fwait%2Fcopy+%C3%A9.json", "q/wait/copy é.json"),
    ("q/wait/100%25_request.json", "q/wait/100%_request.json"),
    ("q/wait/plain_request.json", "q/wait/plain_request.json"),
])
def test_keys_are_form_url_decoded_with_or_without_encoded_slashes(raw: str, key: str) -> None:
    assert decode_key(raw) == key


def test_a_percent_escape_that_is_not_utf8_is_an_error() -> None:
    with pytest.raises(ValueError):
        decode_key("q/wait/%FF_request.json")


# ------------------------------------------------------------------ parse_message
def test_created_objects_under_wait_are_named_relative_to_wait() -> None:
    notice = parse_message(body(record("requests/wait/2026/11/a+b_request.json"),
                                record("requests%2Fwait%2Fc_request.json",
                                       event="ObjectCreated:Copy")),
                           bucket=BUCKET, wait_prefix=WAIT)
    assert notice.kind == "records" and not notice.problems
    assert notice.names == ["2026/11/a b_request.json", "c_request.json"]


def test_the_test_event_is_recognised() -> None:
    test = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-01T21:07:26Z",
            "Bucket": BUCKET}
    assert parse_message(json.dumps(test), bucket=BUCKET, wait_prefix=WAIT).kind == "test"


@pytest.mark.parametrize("other", [
    record("requests/wait/a_request.json", bucket="another-bucket"),
    record("requests/processing/a_request.json"),
    record("other/wait/a_request.json"),
    record("requests/wait/"),  # the "folder" a console creates
    record("requests/wait/a_request.json", event="ObjectRemoved:Delete"),
])
def test_records_about_something_else_are_foreign(other: dict[str, Any]) -> None:
    notice = parse_message(body(other), bucket=BUCKET, wait_prefix=WAIT)
    assert (notice.kind, notice.names, notice.foreign, notice.problems) == ("records", [], 1, [])


def test_duplicate_records_name_a_request_once() -> None:
    notice = parse_message(body(record("requests/wait/a_request.json"),
                                record("requests%2Fwait%2Fa_request.json")),
                           bucket=BUCKET, wait_prefix=WAIT)
    assert notice.names == ["a_request.json"]


def test_an_sns_envelope_is_opened() -> None:
    envelope = {"Type": "Notification", "MessageId": "1", "TopicArn": "arn:aws:sns:x:1:t",
                "Message": body(record("requests/wait/a_request.json"))}
    notice = parse_message(json.dumps(envelope), bucket=BUCKET, wait_prefix=WAIT)
    assert notice.names == ["a_request.json"]


@pytest.mark.parametrize("text", [
    "not json", "", "[1, 2]", "null", '"a string"', "{}", '{"Records": []}',
    '{"Records": "x"}', '{"Records": [1]}', '{"Records": [{"s3": 1}]}',
    json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {},
                                                                     "object": {}}}]}),
    json.dumps({"Type": "Notification", "Message": "not json either"}),
    body(record("requests/wait/%FF_request.json")),
])
def test_malformed_messages_are_reported_not_raised(text: str) -> None:
    notice = parse_message(text, bucket=BUCKET, wait_prefix=WAIT)
    assert notice.kind == "malformed" and notice.names == [] and notice.problems


def test_a_message_with_one_bad_record_keeps_the_good_ones() -> None:
    notice = parse_message(body(record("requests/wait/a_request.json"), {"s3": None}),
                           bucket=BUCKET, wait_prefix=WAIT)
    assert notice.kind == "records" and notice.names == ["a_request.json"]
    assert len(notice.problems) == 1 and notice.problems[0].startswith("record 1:")


def test_a_queue_at_the_bucket_root() -> None:
    notice = parse_message(body(record("wait/a_request.json"), record("x/wait/b")),
                           bucket=BUCKET, wait_prefix="wait/")
    assert (notice.names, notice.foreign) == (["a_request.json"], 1)


def test_an_sns_subscription_confirmation_says_how_to_confirm_it() -> None:
    """S3 → SNS → SQS across accounts: the first message is SNS's confirmation. It was
    'malformed (no Records and not an s3:TestEvent)', its body cut at 300 characters in the
    log, so the confirmation URL was lost with it and no notification ever came."""
    url = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:"
           "sns:eu-west-1:123456789012:s3q&Token=" + "2336412f37fb687f5d51e6e2425" * 12)
    body = json.dumps({"Type": "SubscriptionConfirmation", "MessageId": "m",
                       "Token": "2336412f37fb687f5d51e6e2425" * 12, "SubscribeURL": url,
                       "Message": "You have chosen to subscribe to the topic ..."})
    notice = parse_message(body, bucket="acme", wait_prefix="requests/wait/")
    assert notice.kind == "malformed" and notice.names == []
    [problem] = notice.problems
    assert "SNS subscription confirmation" in problem and url in problem
