"""Waking on S3 events, with the real ``s3q`` executable on moto's server, which delivers
the bucket's notifications to its own SQS (an s3:TestEvent when the configuration is set,
then ObjectCreated:Put/Copy records, the whole key form-encoded). Each test gets its own
bucket (notification rules are per bucket) and SQS queue, wired by ``s3q events setup``."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest

from tests.acceptance.conftest import Cli, wait_for
from tests.acceptance.eventing import Wired, log_events, order, seen, started, wire
from tests.s3server import S3Endpoint

#: A listing every hour: nothing a test waits for can come from it (once the worker
#: planned its next listing in 1800-3600 s: ``started(..., next_listing=LATER)``).
NO_LISTING = ("--events-list-interval", "3600", "--log-level", "debug")
LATER = 1800.0


@pytest.fixture
def wired(cli: Cli, s3_endpoint: S3Endpoint) -> Wired:
    if not s3_endpoint.is_moto:
        pytest.skip("needs moto's SQS (S3 notifications on another endpoint: not set up)")
    return wire(cli, s3_endpoint)


# ---------------------------------------------------------------------------- waking
def test_an_idle_worker_wakes_on_the_event(wired: Wired,
                                           procs: list[subprocess.Popen[str]]) -> None:
    worker, log = started(wired, procs, "-c", "1", *NO_LISTING, next_listing=LATER)
    # a space, a plus, a percent sign and a non-ASCII letter in the key: moto sends
    # "q%2Fwait%2Fa+b%2Bc%25%C3%A9000_request.json"
    [name] = wired.cli.submit(1, prefix="a b+c%é")
    wait_for(lambda: seen(log, "completed", name), 60, "the request to be processed")
    notified, claimed = order(log(), ("notified", name), ("claimed", name))
    assert notified < claimed
    assert wired.cli.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    wait_for(lambda: wired.messages() == 0, 60, "the message to be deleted")
    assert worker.poll() is None


def test_a_lost_notification_is_found_by_the_listing(
        wired: Wired, procs: list[subprocess.Popen[str]]) -> None:
    """While its only slot runs A, a worker receives nothing; the notification of B, sent
    meanwhile, is taken off the queue (lost). B is processed anyway: the listing finds it."""
    worker, log = started(wired, procs, "-c", "1", "--events-list-interval", "2",
                          "--log-level", "debug", env={"S3Q_TEST_SLEEP": "4"})
    [a] = wired.cli.submit(1, prefix="a")
    wait_for(lambda: wired.cli.runs("start")[a] == 1, 60, "A to start")
    [b] = wired.cli.submit(1, prefix="b")
    lost = False
    while not lost:  # (A's own message may still be there too: taking it is harmless)
        answer = wired.sqs.receive_message(QueueUrl=wired.url, WaitTimeSeconds=3,
                                           MaxNumberOfMessages=10)
        assert answer.get("Messages"), "B's notification never came"
        for message in answer["Messages"]:
            lost = lost or "b000_request.json" in message["Body"]
            wired.sqs.delete_message(QueueUrl=wired.url,
                                     ReceiptHandle=message["ReceiptHandle"])
    wait_for(lambda: wired.cli.runs("done") == {a: 1, b: 1}, 60, "B to be found and run")
    assert not seen(log, "notified", b)
    assert wired.cli.counts() == {"wait": 0, "processing": 0, "finish": 2, "failed": 0}
    assert worker.poll() is None


def test_duplicate_notifications_run_the_request_once(
        wired: Wired, procs: list[subprocess.Popen[str]]) -> None:
    worker, log = started(wired, procs, "-c", "2", *NO_LISTING, next_listing=LATER)
    [a] = wired.cli.submit(1, prefix="a")
    wait_for(lambda: wired.cli.runs("done")[a] == 1, 60, "A to run")
    for _ in range(2):  # late duplicates of A's event: A is done, gone from wait/
        wired.sqs.send_message(QueueUrl=wired.url, MessageBody=wired.event(a))
    [b] = wired.cli.submit(1, prefix="b")  # B's event and a duplicate, at once
    wired.sqs.send_message(QueueUrl=wired.url, MessageBody=wired.event(b))
    wait_for(lambda: wired.cli.runs("done")[b] == 1, 60, "B to run")
    wait_for(lambda: wired.messages() == 0, 60, "every message to be deleted")
    assert wired.cli.runs("start") == {a: 1, b: 1}
    assert wired.cli.counts() == {"wait": 0, "processing": 0, "finish": 2, "failed": 0}
    assert worker.poll() is None and not seen(log, "events_failed")


def test_malformed_messages_are_logged_deleted_and_survived(
        wired: Wired, procs: list[subprocess.Popen[str]]) -> None:
    worker, log = started(wired, procs, "-c", "2", *NO_LISTING, next_listing=LATER)
    bodies = ["not json", "[]", '{"Records": "x"}', '{"Records": [{"s3": 1}]}',
              json.dumps({"Type": "Notification", "Message": "{"}),
              wired.event("x").replace("q%2Fwait%2Fx", "q%2Fwait%2F%FF")]  # not UTF-8
    for text in bodies:
        wired.sqs.send_message(QueueUrl=wired.url, MessageBody=text)
    wait_for(lambda: wired.messages() == 0, 60, "the malformed messages to be deleted")
    [name] = wired.cli.submit(1)
    wait_for(lambda: wired.cli.runs("done")[name] == 1, 60, "the next request to run")
    assert sum(1 for e in log() if e.get("event") == "events_malformed") == len(bodies)
    assert worker.poll() is None


def test_sqs_failing_is_never_fatal_and_the_worker_polls_meanwhile(
        cli: Cli, s3_endpoint: S3Endpoint, procs: list[subprocess.Popen[str]]) -> None:
    """events_queue names a queue that does not exist yet: the worker logs the failure,
    retries with backoff and lists wait/ at its poll_interval meanwhile; once the queue is
    wired, it listens and wakes on events."""
    if not s3_endpoint.is_moto:
        pytest.skip("needs moto's SQS")
    bucket = f"s3q-ev-{uuid4().hex[:12]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    env = {**cli.env, "S3Q_QUEUE": f"s3://{bucket}/q",
           "S3Q_EVENTS_QUEUE": f"s3q-ev-{uuid4().hex[:8]}"}
    late = replace(cli, env=env, queue=env["S3Q_QUEUE"])
    before = set(cli.tmp.glob("worker-*.log"))
    worker = late.worker("-c", "1", "--poll-interval", "1", "--events-list-interval", "3600",
                         "--log-level", "debug")
    procs.append(worker)
    [path] = set(cli.tmp.glob("worker-*.log")) - before

    def log() -> list[dict[str, Any]]:
        return log_events(path)

    wait_for(lambda: seen(log, "events_failed"), 60, "the SQS failure to be logged")
    [a] = late.submit(1, prefix="a")
    wait_for(lambda: seen(log, "completed", a), 60, "A to be found by polling")
    assert not seen(log, "notified", a) and worker.poll() is None
    late.run("events", "setup")
    wait_for(lambda: seen(log, "events_listening"), 90, "the event source to recover")
    wait_for(lambda: any(e.get("event") == "idle" and e["seconds"] >= LATER for e in log()),
             60, "the worker to rely on events")
    [b] = late.submit(1, prefix="b")
    wait_for(lambda: seen(log, "completed", b), 60, "B to be processed")
    assert seen(log, "notified", b) and worker.poll() is None
