"""Completions that commit together (s3q.batching) on a real S3 server: the commits (d5)
of jobs settled at the same time travel in one DeleteObjects request, each with its own
ETag; one whose lease was taken over meanwhile is refused there, and its job is lost, while
the others count (docs/PROTOCOL.md §4, complete)."""

from __future__ import annotations

import threading
import time

import pytest

from s3q import Queue, QueueConfig, layout
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.records import Intent
from s3q.storecheck import check_store
from tests.s3server import MakeS3Store, S3Endpoint


def test_commits_share_a_request_and_a_taken_over_one_is_refused(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    store = make_s3_store()
    check_store(store, max_age=0)  # as a worker's start does
    if not store.capabilities.batch_conditional_delete:
        pytest.skip("this server does not honour DeleteObjects' ETags (the probe says so)")
    q = Queue(store, QueueConfig(lease_ttl=30))
    for name in ("a.json", "b.json", "c.json"):
        q.submit(name, name.encode())
    jobs = {}
    for _ in range(3):
        job = q.claim("worker-1")
        assert job is not None
        jobs[job.name] = job
    fleet = Queue(make_s3_store(prefix=store.prefix), QueueConfig(lease_ttl=30))
    assert fleet.recover_all(include="c.json").actions == {"c.json": "released"}

    q.ctx.deletes.linger = 60.0  # they wait for each other: all three in one request
    outcomes: dict[str, str] = {}

    def complete(job: Job) -> None:
        try:
            job.complete()
            outcomes[job.name] = "completed"
        except LeaseLost:
            outcomes[job.name] = "lost"

    before = store.snapshot_counts()[0]
    threads = [threading.Thread(target=complete, args=(j,)) for j in jobs.values()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(q.ctx.deletes._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    q.ctx.deletes.close()
    for t in threads:
        t.join(30)
    sent = store.snapshot_counts()[0] - before

    assert outcomes == {"a.json": "completed", "b.json": "completed", "c.json": "lost"}
    # d3 (finish/), d4 (the views: c's was removed by the fleet), d5 (one request for three),
    # and c's lease read back after its refusal
    assert sent == {"PutObject": 3, "DeleteObject": 3, "DeleteObjects": 1, "GetObject": 1}
    assert [i.key for i in q.ls("finish")] == ["a.json", "b.json", "c.json"]  # c: §4
    assert [i.key for i in q.ls("wait")] == ["c.json"]  # released by the fleet: runs again
    found = q.lease("c.json")
    assert found is not None and found[0].intent is Intent.RETRY and found[0].gen == 2
    assert store.head(layout.key(layout.LEASES, "c.json")).etag == found[1].etag
    for name in ("a.json", "b.json"):
        assert q.lease(name) is None
    q.close()
    fleet.close()
