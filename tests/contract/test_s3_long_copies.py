"""A large request's copies outlast its lease (docs/PROTOCOL.md §4, "Long copies").

A server-side copy of tens of GiB takes minutes, in parts (16 at a time): longer than a lease
lives. Each copy is sent under its holder's deadline (checked before every part and before the
CompleteMultipartUpload), so a copy that outlasts an unrenewed lease is stopped, aborted, and
its step left to a takeover, whose copy is stopped in the same way: the request stays where it
is for good (never lost: its lease and body of record are kept, but never done either). Every
copy of a large request's bytes now renews the lease while it runs (:mod:`s3q.renewing`).

The proxy (S3's limits, lowered: a 13 MiB request is copied in 3 parts) holds each part's
copy (UploadPartCopy) for ``COPY_S`` seconds, longer than the whole lease (``TTL``; a holder's
deadline is the send of its last lease write + ``TTL`` - 1 s).
"""

from __future__ import annotations

import pytest

from s3q.backends.s3 import S3Store
from s3q.context import QueueConfig
from s3q.job import Job
from s3q.queue import Queue
from s3q.records import Intent
from tests.contract.large import NAME, open_uploads, seed
from tests.s3server import MakeS3Store, S3Endpoint
from tests.storeproxy import StoreProxy

TTL = 5.0
COPY_S = 5.5



@pytest.fixture
def store(limited: StoreProxy, make_s3_store: MakeS3Store) -> S3Store:
    return make_s3_store(endpoint_url=limited.url)


def _queue(store: S3Store, **config: object) -> Queue:
    settings: dict[str, object] = {"lease_ttl": TTL, "on_finish": "move",
                                   "retry_base_delay": 0, "retry_max_delay": 0, **config}
    return Queue(store, QueueConfig(**settings))  # type: ignore[arg-type]


def _claim(q: Queue, worker: str = "w", *, view_after: float = 0.0) -> Job:
    job = q.claim(worker, view_after=view_after)
    assert job is not None, "the claim failed"
    return job


def _completed_again(q: Queue, store: S3Store, s3_endpoint: S3Endpoint,
                     limited: StoreProxy, *, attempt: int) -> None:
    """With copies fast again, the request waiting in wait/ is claimed (its ``attempt``)
    and completed, and nothing is left behind."""
    limited.behaviour.copy_latency = 0.0
    again = _claim(q)
    assert again.attempt == attempt
    again.complete()
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    _settled(q, store, s3_endpoint)


def _settled(q: Queue, store: S3Store, s3_endpoint: S3Endpoint) -> None:
    """No lease, no private copy, no upload left open."""
    assert list(q.leases()) == []
    assert [i.key for i in store.list_page(".s3q/body/").items] == []
    assert open_uploads(s3_endpoint, store) == []


# -- a job's outcome: d3, w1, x2 ------------------------------------------------------------


def test_a_completion_whose_copy_to_finish_outlasts_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """d3 (``COPY`` of the private copy to finish/), after the commit (d1): it was stopped at
    its CompleteMultipartUpload (LeaseLost), and every taker's roll-forward the same way."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store)
    job = _claim(q)
    limited.behaviour.copy_latency = COPY_S
    job.complete()
    assert store.get(f"finish/{NAME}")[0] == data
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    _settled(q, store, s3_endpoint)


def test_a_retry_whose_copy_to_wait_outlasts_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """w1 (``COPY!`` of the private copy to wait/), before the commit (w2): it was stopped,
    the job's failure raised LeaseLost, and the request waited for a takeover, whose w1 was
    stopped in the same way."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store)
    job = _claim(q)
    limited.behaviour.copy_latency = COPY_S
    job.fail("the handler failed")
    found = q.lease(NAME)
    assert found is not None and found[0].intent is Intent.RETRY
    assert store.get(f"wait/{NAME}")[0] == data and found[0].view is not None
    assert q.counts()["processing"] == 0
    _completed_again(q, store, s3_endpoint, limited, attempt=2)


def test_a_dead_letter_whose_copy_to_failed_outlasts_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """x2 (``COPY!`` of the private copy to failed/), after the commit (x1)."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store, max_attempts=1)
    job = _claim(q)
    limited.behaviour.copy_latency = COPY_S
    job.fail("the handler failed")
    assert store.get(f"failed/{NAME}")[0] == data
    record = q.error_record(NAME)
    assert record is not None and record.attempts == 1
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    _settled(q, store, s3_endpoint)


def test_a_dead_letter_that_displaces_a_large_earlier_one_slowly(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """x2 finds failed/NAME taken by an earlier large dead letter, and copies it to
    ``.s3q/earlier/`` before placing its own: two copies, one of another request's bytes."""
    earlier = data[::-1]
    seed(s3_endpoint, store, f"failed/{NAME}", earlier)
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store, max_attempts=1)
    job = _claim(q)
    limited.behaviour.copy_latency = COPY_S
    job.fail("the handler failed", retry=False)
    assert store.get(f"failed/{NAME}")[0] == data
    kept = [i.key for i in store.list_page(".s3q/earlier/").items]
    assert len(kept) == 1 and store.get(kept[0])[0] == earlier
    _settled(q, store, s3_endpoint)


# -- a running job's view, a takeover, a requeue ---------------------------------------------


def test_a_deferred_view_whose_copy_outlasts_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """c3 written by the lease keeper once the job has run for a while (``view_after``):
    under the job's write lock, which its heartbeat waits for. It was stopped (LeaseLost),
    and the lease had gone unrenewed for as long as the copy ran."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store)
    job = _claim(q, view_after=60)
    assert store.list_page("processing/").items == []
    limited.behaviour.copy_latency = COPY_S
    job.write_view()
    assert job.lease.proc is not None
    assert store.head(f"processing/{NAME}").etag == job.lease.proc
    limited.behaviour.copy_latency = 0.0
    job.check_deadline()  # still held: renewed during the copy
    job.complete()
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    _settled(q, store, s3_endpoint)


def test_a_takeover_whose_copies_outlast_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """A worker died before its job's view was written: the takeover writes it (t2: c3),
    then releases the request (w1): two copies under the taker's lease. Each was stopped
    ("interrupted (lease expired)"), and so was every later takeover's."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store)
    _claim(q, "dead", view_after=60)  # never renewed, never settled
    limited.behaviour.copy_latency = COPY_S
    done = q.recover_own("dead")
    assert done.actions == {NAME: "released"} and done.failed == {}
    assert store.get(f"wait/{NAME}")[0] == data
    assert q.counts()["processing"] == 0
    _completed_again(q, store, s3_endpoint, limited, attempt=2)


def test_a_requeue_whose_copies_outlast_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """r1 (the private copy from failed/) and r2 (``COPY!`` to wait/): a requeue stopped by
    its deadline was left to the fleet's takeover, whose r2 was stopped in the same way."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store, max_attempts=1)
    _claim(q).fail("the handler failed")
    assert q.counts()["failed"] == 1
    limited.behaviour.copy_latency = COPY_S
    assert q.requeue(NAME)
    assert store.get(f"wait/{NAME}")[0] == data
    assert q.counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}
    _completed_again(q, store, s3_endpoint, limited, attempt=1)  # (attempts start again)


# -- a claim's copies: c1b, c3 ---------------------------------------------------------------


def test_a_claim_whose_private_copy_outlasts_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """c1b (the private copy of a large request) and c3 (its view in processing/) run under
    the claim's deadline: the send of c1 + lease_ttl - 1 s. A copy that took longer was
    stopped by the deadline at its next part, aborted, and the claim gave its lease up: the
    request stayed in wait/, and every later claim of it did the same, for ever (never run,
    never dead-lettered), each one copying it in vain."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store)
    limited.behaviour.copy_latency = COPY_S
    job = _claim(q)
    assert store.head(f"processing/{NAME}").etag == job.lease.proc
    limited.behaviour.copy_latency = 0.0
    with job.open() as body:
        assert body.read() == data
    job.complete()
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    _settled(q, store, s3_endpoint)


def test_a_retry_claim_whose_view_copy_outlasts_the_lease(
        limited: StoreProxy, store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """A retry's claim (c1') writes its processing/ view at once (c3: ``COPY!`` of the
    private copy), under the claim's deadline. A copy that outlasted it stopped the claim
    after c2 (LeaseLost): the lease kept, left to a takeover, whose c3 was stopped too."""
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    q = _queue(store)
    _claim(q).fail("the handler failed")  # w1…w3: a retry lease, its view in wait/
    limited.behaviour.copy_latency = COPY_S
    again = _claim(q)
    assert again.attempt == 2
    limited.behaviour.copy_latency = 0.0
    again.complete()
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    _settled(q, store, s3_endpoint)
