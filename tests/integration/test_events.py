"""The event source in process, on moto's S3 and SQS: a message about a request that waits
for its retry is hidden until the retry is due (ChangeMessageVisibility) and claimed when
SQS delivers it again; and a worker's SQS calls are exactly those its IAM policy allows."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.s3 import S3Store
from s3q.events import MAX_HIDE, MISSED_AGE, EventSource
from s3q.eventsetup import setup_events
from s3q.iam import iam_policy
from s3q.job import Job
from s3q.sqs import Message, SqsError, SqsQueue, parse_queue
from s3q.store import Page
from s3q.worker import Worker, WorkerOptions
from tests.acceptance.conftest import wait_for
from tests.s3server import S3Endpoint
from tests.unit.test_iam import SQS_ACTIONS, allowed


class Records(logging.Handler):
    """The s3q log records with an ``event`` field."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "event"):
            self.events.append(dict(vars(record)))


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("s3q")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def sqs_queue(endpoint: S3Endpoint, name: str) -> SqsQueue:
    return SqsQueue(parse_queue(name), region=endpoint.region, endpoint_url=endpoint.endpoint_url,
                    access_key_id=endpoint.access_key_id,
                    secret_access_key=endpoint.secret_access_key)


def bucket_with_sqs(endpoint: S3Endpoint, *, notifying: bool = True) -> tuple[str, str]:
    """A new bucket and SQS queue on moto (bucket, queue name); ``notifying``: the bucket's
    wait/ notifies the queue (``s3q events setup``), else the queue hears nothing."""
    if not endpoint.is_moto:
        pytest.skip("needs moto's SQS")
    bucket, name = f"s3q-ev-{uuid4().hex[:12]}", f"s3q-ev-{uuid4().hex[:8]}"
    s3 = endpoint.client()
    s3.create_bucket(Bucket=bucket)
    sqs = sqs_queue(endpoint, name)
    if notifying:
        setup_events(s3, sqs, bucket=bucket, wait_prefix="q/wait/")
    else:
        sqs.create()
    sqs.close()
    return bucket, name


@contextlib.contextmanager
def listening(worker: Worker, records: Records, idle: float) -> Iterator[None]:
    """Run ``worker`` until the block ends, from once it relies on events (its idle sleep
    reached ``idle`` seconds)."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: any(e["event"] == "idle" and e["seconds"] >= idle  # type: ignore[operator]
                             for e in records.events), 60, "the worker to rely on events")
        yield
    finally:
        worker.stop()
        worker.stop()
        thread.join(30)


def test_a_retry_waits_in_sqs_until_it_is_due(s3_endpoint: S3Endpoint,
                                              records: Records) -> None:
    bucket, name = bucket_with_sqs(s3_endpoint)
    # the backoff is uniform in [12 s, 24 s]: the message's first check, 5 s (CHECK_AFTER)
    # after the retry's view was notified, finds the retry well before it is due and hides
    # the message (with 12 s, a backoff drawn under 7 s was due by then: offered, not hidden)
    queue = Queue(S3Store(bucket, "q", s3_endpoint.options()),
                  QueueConfig(retry_base_delay=24.0, retry_max_delay=24.0))
    sqs = sqs_queue(s3_endpoint, name)
    runs: list[tuple[int, float]] = []

    def handler(job: Job) -> None:
        runs.append((job.attempt, queue.store.now()))
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    worker = Worker(queue, handler, WorkerOptions("w1", events_list_interval=3600),
                    events=EventSource(queue, sqs, "w1"))
    with listening(worker, records, idle=1800):
        queue.submit("a_request.json", b"{}")
        wait_for(lambda: len(runs) == 1, 30, "the first attempt")
        lease = queue.lease("a_request.json")
        assert lease is not None and lease[0].attempts == 1
        due = lease[0].not_before
        wait_for(lambda: len(runs) == 2, 60, "the retry")
        wait_for(lambda: queue.counts()["finish"] == 1, 30, "the retry to finish")
    assert runs[1][1] >= due - 1.0  # (the store's clock has 1 s resolution)
    assert sqs.request_counts["ChangeMessageVisibilityBatch"] >= 1  # hidden until due
    notified = [e for e in records.events if e["event"] == "notified"]
    assert len(notified) >= 3  # the submission, the retry's view, its delivery when due
    assert set(sqs.request_counts) <= set(SQS_ACTIONS), sqs.request_counts
    policy = iam_policy(f"s3://{bucket}/q", ssm_parameters=[], region=s3_endpoint.region,
                        events_queue=name)
    arn = f"arn:aws:sqs:{s3_endpoint.region}:123456789012:{name}"  # moto's account
    for operation in sqs.request_counts:
        assert allowed(policy, SQS_ACTIONS[operation], arn), operation
    sqs.close()


class TwelveHours(SqsQueue):
    """moto's SQS with AWS's limit on ChangeMessageVisibility, which moto does not check: a
    visibility may not end more than MAX_HIDE seconds after the message was received (a
    hide of MAX_HIDE a few seconds after the receipt is refused)."""

    def __init__(self, queue: SqsQueue) -> None:
        vars(self).update(vars(queue))
        self.received: dict[str, float] = {}
        self.refused: list[int] = []

    def receive(self, most: int, *, wait: int, visibility: int) -> list[Message]:
        messages = super().receive(most, wait=wait, visibility=visibility)
        for m in messages:
            self.received[m.receipt] = time.monotonic()
        return messages

    def hide(self, receipts: list[tuple[str, int]]) -> None:
        now = time.monotonic()
        over = [s for r, s in receipts if now - self.received.get(r, now) + s > MAX_HIDE]
        if over:
            self.refused += over
            raise SqsError("SQS: could not change the visibility of 1 message(s): "
                           "InvalidParameterValue: Total VisibilityTimeout for the message "
                           "is beyond the limit [43200 seconds]")
        super().hide(receipts)


def test_a_retry_due_in_more_than_twelve_hours_hides_its_message_as_long_as_sqs_allows(
        s3_endpoint: S3Endpoint, records: Records) -> None:
    """A retry due in 13 to 26 hours: its notification is hidden until SQS's limit, 12 hours after
    the message was received (then delivered again and hidden again), not refused by SQS
    for asking 12 hours from now, which failed the event source (events_failed) and
    brought the message back every minute."""
    bucket, name = bucket_with_sqs(s3_endpoint)
    backoff = 26 * 3600.0  # (drawn in [backoff/2, backoff]: beyond 12 hours)
    queue = Queue(S3Store(bucket, "q", s3_endpoint.options()),
                  QueueConfig(retry_base_delay=backoff, retry_max_delay=backoff))
    sqs = TwelveHours(sqs_queue(s3_endpoint, name))

    def handler(job: Job) -> None:
        raise RuntimeError("fails: retried in 13 hours or more")

    worker = Worker(queue, handler, WorkerOptions("w1", events_list_interval=3600),
                    events=EventSource(queue, sqs, "w1"))
    with listening(worker, records, idle=1800):
        queue.submit("a_request.json", b"{}")
        wait_for(lambda: sqs.request_counts["ChangeMessageVisibilityBatch"] >= 1 or sqs.refused,
                 60, "the retry's notification to be hidden")
    sqs.close()
    assert sqs.refused == []
    assert not [e for e in records.events if e["event"] == "events_failed"]
    lease = queue.lease("a_request.json")
    assert lease is not None and lease[0].attempts == 1  # waits for its retry


class Backdated(DelegatingStore):
    """An S3 queue's store whose listings give the keys in ``old`` a Last-Modified two
    MISSED_AGE back: requests that have waited that long (without the test waiting)."""

    def __init__(self, inner: S3Store) -> None:
        super().__init__(inner)
        self.bucket, self.prefix = inner.bucket, inner.prefix  # (for the event source)
        self.old: set[str] = set()

    def list_page(self, prefix: str, *, start_after: str | None = None,
                  limit: int = 1000) -> Page:
        page = super().list_page(prefix, start_after=start_after, limit=limit)
        return dataclasses.replace(page, items=[
            dataclasses.replace(i, last_modified=i.last_modified - 2 * MISSED_AGE)
            if i.key in self.old else i for i in page.items])


def test_a_queue_no_notification_reaches_is_not_silent(s3_endpoint: S3Endpoint,
                                                      records: Records) -> None:
    """The SQS queue answers but the bucket never notifies it (``s3q events setup`` not run,
    its rule removed, a policy refusing s3.amazonaws.com): the worker counts as listening and
    lists wait/ only every events_list_interval, so every request waits minutes. The
    safety-net listing that claims a request no notification announced, one that waited
    MISSED_AGE or more, must say so; a fresh one is no sign (its notification may be on its
    way)."""
    bucket, name = bucket_with_sqs(s3_endpoint, notifying=False)
    sqs = sqs_queue(s3_endpoint, name)
    store = Backdated(S3Store(bucket, "q", s3_endpoint.options()))
    queue = Queue(store, QueueConfig())
    done: list[str] = []
    worker = Worker(queue, lambda job: done.append(job.name),
                    WorkerOptions("w1", events_list_interval=2),
                    events=EventSource(queue, sqs, "w1"))
    with listening(worker, records, idle=1):
        queue.submit("fresh_request.json", b"{}")
        wait_for(lambda: "fresh_request.json" in done, 30, "the fresh request")
        assert not [e for e in records.events if e["event"] == "events_missed"]
        store.old.add("wait/old_request.json")  # (waited two minutes when listed)
        queue.submit("old_request.json", b"{}")
        wait_for(lambda: "old_request.json" in done, 30, "the old request")
    sqs.close()
    missed = [e for e in records.events if e["event"] == "events_missed"]
    assert [(e["request"], e["levelno"], e["count"]) for e in missed] == [
        ("old_request.json", logging.WARNING, 1)]
