"""Completions that commit together (s3q.batching) on a real S3 server: the commits (d5)
of jobs settled at the same time travel in one DeleteObjects request, each with its own
ETag; one whose lease was taken over meanwhile is refused there, and its job is lost, while
the others count (docs/PROTOCOL.md §4, complete)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig, layout
from s3q.backends.delegating import DelegatingStore
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.records import Intent
from s3q.store import Store
from s3q.storecheck import check_store
from tests.s3server import MakeS3Store, S3Endpoint

T = TypeVar("T")


class Holding(DelegatingStore):
    """Holds the delete of ``key`` in flight until ``release`` (``in_flight`` is set)."""

    def __init__(self, inner: Store, key: str) -> None:
        super().__init__(inner)
        self.key = key
        self.in_flight, self.release = threading.Event(), threading.Event()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "delete" and args.get("key") == self.key:
            self.in_flight.set()
            assert self.release.wait(30)
        return fn()


def test_commits_share_a_request_and_a_taken_over_one_is_refused(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    store = make_s3_store()
    check_store(store, max_age=0)  # as a worker's start does
    if not store.capabilities.batch_conditional_delete:
        pytest.skip("this server does not honour DeleteObjects' ETags (the probe says so)")
    q = Queue(store, QueueConfig(lease_ttl=30))
    for name in ("a.json", "b.json", "c.json", "held.json"):
        q.submit(name, name.encode())
    jobs = {}
    for _ in range(4):
        job = q.claim("worker-1")
        assert job is not None
        jobs[job.name] = job
    fleet = Queue(make_s3_store(prefix=store.prefix), QueueConfig(lease_ttl=30))
    assert fleet.recover_all(include="c.json").actions == {"c.json": "released"}

    # the commits meet behind another one held in flight (held.json's), and go together
    held = jobs.pop("held.json")
    holding = Holding(store, layout.key(layout.LEASES, "held.json"))
    q.ctx.store = holding
    outcomes: dict[str, str] = {}

    def complete(job: Job) -> None:
        try:
            job.complete()
            outcomes[job.name] = "completed"
        except LeaseLost:
            outcomes[job.name] = "lost"

    first = threading.Thread(target=complete, args=(held,))
    first.start()
    assert holding.in_flight.wait(30)
    before = store.snapshot_counts()[0]
    threads = [threading.Thread(target=complete, args=(j,)) for j in jobs.values()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(q.ctx.deletes._pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    q.ctx.deletes.close()  # no linger: the next request goes as soon as held.json's returns
    holding.release.set()
    for t in [first, *threads]:
        t.join(30)
    sent = store.snapshot_counts()[0] - before

    assert outcomes == {"a.json": "completed", "b.json": "completed", "c.json": "lost",
                        "held.json": "completed"}
    # d3 (finish/), d4 (the views: c's was removed by the fleet), d5 (held.json's alone, one
    # request for the three), and c's lease read back after its refusal
    assert sent == {"PutObject": 3, "DeleteObject": 4, "DeleteObjects": 1, "GetObject": 1}
    assert [i.key for i in q.ls("finish")] == ["a.json", "b.json", "c.json", "held.json"]
    assert [i.key for i in q.ls("wait")] == ["c.json"]  # released by the fleet: runs again
    found = q.lease("c.json")
    assert found is not None and found[0].intent is Intent.RETRY and found[0].gen == 2
    assert store.head(layout.key(layout.LEASES, "c.json")).etag == found[1].etag
    for name in ("a.json", "b.json", "held.json"):
        assert q.lease(name) is None
    q.close()
    fleet.close()


class Recording(DelegatingStore):
    """Records each delete sent (("delete", key) or ("delete_batch", keys)); on the PUT of
    ``key``, runs ``meanwhile`` first."""

    def __init__(self, inner: Store, key: str, meanwhile: Callable[[], None]) -> None:
        super().__init__(inner)
        self.key, self.meanwhile = key, meanwhile
        self.sent: list[tuple[str, Any]] = []

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "put" and args.get("key") == self.key:
            self.meanwhile()
        if op == "delete":
            self.sent.append((op, args["key"]))
        elif op == "delete_batch":
            self.sent.append((op, sorted(k for k, _ in args["items"])))
        return fn()


def test_a_commit_travels_with_the_next_claims_c2(make_s3_store: MakeS3Store) -> None:
    """One slot: the first job's completion is settled (off the slot's path, as a worker's
    settler does) while the slot claims the second. The first's commit (d5) waits for that
    claim, whose c2 (the delete of the second's wait/NAME) carries it: one DeleteObjects
    for both, each with its own ETag."""
    store = make_s3_store()
    check_store(store, max_age=0)
    if not store.capabilities.batch_conditional_delete:
        pytest.skip("this server does not honour DeleteObjects' ETags (the probe says so)")
    q = Queue(store, QueueConfig(lease_ttl=30))
    q.ctx.deletes.ride = 60.0  # (however slow this machine: the claim's c2 comes first)
    for name in ("a.json", "b.json"):
        q.submit(name, name.encode())
    first = q.claim("worker-1")
    assert first is not None
    second = ({"a.json", "b.json"} - {first.name}).pop()
    settler = threading.Thread(target=first.complete)

    def settle_first() -> None:  # during the next claim, before its c1: the commit waits
        settler.start()
        deadline = time.monotonic() + 30
        while not q.ctx.deletes._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert q.ctx.deletes._pending

    recording = Recording(store, layout.key(layout.LEASES, second), settle_first)
    q.ctx.store = recording
    job = q.claim("worker-1")
    settler.join(30)
    assert job is not None and job.name == second
    assert recording.sent == [  # d4 of the first (its view), then its d5 with c2
        ("delete", layout.key(layout.PROCESSING, first.name)),
        ("delete_batch", sorted([layout.key(layout.LEASES, first.name),
                                 layout.key(layout.WAIT, second)]))]
    assert [i.key for i in q.ls("finish")] == [first.name] and q.lease(first.name) is None
    assert [i.key for i in q.ls("wait")] == [] and [i.key for i in q.ls("processing")] == [
        second]
    job.complete()
    q.close()
