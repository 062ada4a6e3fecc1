"""Reading S3 event notifications as SQS delivers them (s3q.s3events): keys form-URL-decoded
with or without encoded slashes, the queue's wait/ prefix and bucket, test events, SNS
envelopes, malformed messages."""

from __future__ import annotations

import json
import logging
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


# ------------------------------------------------------------------ another queue's
def test_notifications_about_another_queue_are_said_so_once_in_a_while(
        caplog: pytest.LogCaptureFixture) -> None:
    """One server of a fleet runs with another queue (a prefix typed wrong, a profile's
    queue changed on one host) and the fleet's events_queue: it receives the fleet's
    notifications, finds them about objects outside its queue and deletes them, so the
    fleet's workers never get them and their requests wait for the safety-net listing
    (minutes), which warns that the bucket's notifications do not arrive. That server said
    nothing at all. It now warns (once every 10 minutes, with the count), naming one;
    records about the queue's own objects outside wait/ (a rule notifying the whole
    prefix), objects in no wait/ (an SNS fan-out of the whole bucket), other events, and
    the console's wait/ folder are no other queue's requests."""
    from s3q import Queue
    from s3q.backends.delegating import DelegatingStore
    from s3q.backends.memory import MemoryStore
    from s3q.events import MISSED_EVERY, EventSource
    from s3q.sqs import Message, QueueRef

    class OnS3(DelegatingStore):
        bucket, prefix = BUCKET, "requets"  # (this server's typo; the fleet's: requests)

    now = [0.0]

    class Sqs:
        ref = QueueRef("s3q-requests")

        def __init__(self) -> None:
            self.batches: list[list[Message]] = []
            self.deleted: list[str] = []

        def receive(self, most: int, *, wait: int, visibility: int) -> list[Message]:
            return self.batches.pop(0) if self.batches else []

        def delete(self, receipts: list[str]) -> None:
            self.deleted += receipts

        def hide(self, receipts: list[tuple[str, int]]) -> None:
            pass

    sqs = Sqs()
    source = EventSource(Queue(OnS3(MemoryStore("events"))), sqs,  # type: ignore[arg-type]
                         "w", monotonic=lambda: now[0])
    source._capacity = lambda: 10

    def deliver(*keys: str, bucket: str = BUCKET, event: str = "ObjectCreated:Put") -> None:
        sqs.batches.append([Message(k, body(record(k, bucket=bucket, event=event)), 1)
                            for k in keys])
        source._round()

    def warned() -> list[tuple[str, int]]:
        return [(r.about, r.count) for r in caplog.records  # type: ignore[attr-defined]
                if getattr(r, "event", None) == "events_outside"]

    with caplog.at_level(logging.INFO, logger="s3q"):
        deliver("requets/finish/a_request.json", "requets/.s3q/lease/a_request.json",
                "requets/wait/", "images/wait.png", "images/a/wait/")
        deliver("photos/cat.png", bucket="another-bucket")  # (a fan-out of the whole bucket)
        deliver("requests/wait/a_request.json", event="ObjectRemoved:Delete")
        assert warned() == []
        deliver("requests/wait/a_request.json")
        assert "requests/wait/a_request.json" in sqs.deleted  # (lost to the fleet)
        assert warned() == [(f"s3://{BUCKET}/requests/wait/a_request.json", 1)]
        deliver("requests/wait/b_request.json", "requests/wait/c_request.json")
        assert len(warned()) == 1  # (counted until the next warning)
        now[0] += MISSED_EVERY
        deliver("requests/wait/d_request.json", bucket="another-bucket")
        assert warned()[1:] == [("s3://another-bucket/requests/wait/d_request.json", 3)]
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "events_outside"][:1]
    assert warning.levelno == logging.WARNING
    assert "is this server's queue setting the fleet's?" in warning.getMessage()
