"""Faults of real S3 stores that moto never shows, injected by :mod:`tests.storeproxy`
between :class:`S3Store` and moto: throttling (503 SlowDown), and what s3q's send-time
guard must still hold under them."""

from __future__ import annotations

import time

import pytest

from s3q.context import QueueConfig
from s3q.errors import LeaseLost
from s3q.queue import Queue
from s3q.store import NotFound, StoreUnavailable
from tests.s3server import MakeS3Store, S3Endpoint
from tests.storeproxy import Behaviour, StoreProxy

NAME = "x_request.json"


def test_the_send_time_guard_runs_after_adaptive_throttling_waits(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    """retry_mode = adaptive: once S3 has throttled the client, botocore's rate limiter
    holds each request in ``before-send`` until its token bucket allows it (0.5 requests a
    second at the least). The guard (a lease's deadline) must be checked after that wait,
    immediately before the bytes leave: a request held there past its deadline must not be
    sent (docs/PROTOCOL.md §3, "the send-time fence")."""
    if not s3_endpoint.is_moto:
        pytest.skip("the proxy answers in moto's stead")
    assert s3_endpoint.endpoint_url
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour())
    try:
        store = make_s3_store(endpoint_url=proxy.url, retry_mode="adaptive", max_attempts=2)
        store.put("warm", b"x")  # (the clock's first Date, the connection)
        proxy.behaviour.slow_downs = 4
        for _ in range(2):
            with pytest.raises(StoreUnavailable, match="SlowDown"):
                store.put("throttled", b"x")
        window = 0.5  # each write's deadline, from its call (the bucket: 2 s a write)
        sent: list[tuple[float, float]] = []  # (deadline, arrival at the store)
        refused = 0
        for i in range(4):
            deadline = time.monotonic() + window

            def guard(deadline: float = deadline) -> None:
                if time.monotonic() > deadline:
                    raise LeaseLost("the lease's deadline passed")

            before = len(proxy.arrivals)
            try:
                store.put(f"k{i}", b"x", guard=guard)
            except LeaseLost:
                refused += 1
            sent += [(deadline, at) for at, method, _ in proxy.arrivals[before:]]
        # (a write sent in time reaches the proxy a moment after its guard passed)
        late = [round(at - deadline, 2) for deadline, at in sent if at > deadline + 0.4]
        assert not late, f"writes sent after their deadline (seconds late): {late}"
        assert refused, "the rate limiter held no write past its deadline: not throttled?"
    finally:
        proxy.close()


def test_a_409_to_the_delete_of_a_view_does_not_leave_it_to_run_again(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    """AWS answers 409 ConditionalRequestConflict to a conditional request that overlapped
    another ("retry the request"): nothing was applied. A completion's d4 (``DEL=proc
    processing/NAME``) answered so must not leave the view behind: once the lease is gone
    the scan would adopt it as an orphan and run the completed request again."""
    if not s3_endpoint.is_moto:
        pytest.skip("the proxy answers in moto's stead")
    assert s3_endpoint.endpoint_url
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour())
    try:
        store = make_s3_store(endpoint_url=proxy.url)
        q = Queue(store, QueueConfig(lease_ttl=30))
        q.submit(NAME, b"{}")
        job = q.claim("w")  # (its processing/ view at once)
        assert job is not None
        store.head(f"processing/{NAME}")
        proxy.behaviour.conflict_next.add(("DELETE", f"processing/{NAME}"))
        job.complete()
        assert proxy.counts["conflict"] == 1
        with pytest.raises(NotFound):
            store.head(f"processing/{NAME}")
        with pytest.raises(NotFound):
            store.head(f".s3q/lease/{NAME}")
    finally:
        proxy.close()



def test_a_404_after_a_409_to_a_retried_delete_is_a_retry_s_answer(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    """A conditional DeleteObject whose first try took effect unseen (answered 500:
    botocore sends it again), whose retry was answered 409 (it overlapped another
    conditional request) and whose resend after the 409 is answered 404: that 404 is the
    first try's doing and must say ``retried``. A fresh claim's c2 that took it for a
    first try's 404 gave its lease up, with wait/NAME deleted by its own first try: the
    request was gone (PROTOCOL §4 claim, c2; §2.3 and §2.6)."""
    if not s3_endpoint.is_moto:
        pytest.skip("the proxy answers in moto's stead")
    assert s3_endpoint.endpoint_url
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour())
    try:
        store = make_s3_store(endpoint_url=proxy.url)
        info = store.put("k", b"x")
        proxy.behaviour.applied_then_500.add(("DELETE", "/k"))
        proxy.behaviour.conflict_next.add(("DELETE", "/k"))
        with pytest.raises(NotFound) as caught:
            store.delete("k", if_match=info.etag)
        assert proxy.counts["applied then 500"] == 1 and proxy.counts["conflict"] == 1
        assert caught.value.retried

        q = Queue(store, QueueConfig(lease_ttl=30))
        q.submit(NAME, b"{}")
        proxy.behaviour.applied_then_500.add(("DELETE", f"wait/{NAME}"))
        proxy.behaviour.conflict_next.add(("DELETE", f"wait/{NAME}"))
        job = q.claim("w")
        assert proxy.counts["applied then 500"] == 2 and proxy.counts["conflict"] == 2
        assert job is not None, "the claim gave its lease up: the request is gone"
        assert job.read() == b"{}"
        job.complete()
        assert store.get(f"finish/{NAME}")[0] == b"{}"
    finally:
        proxy.close()
