"""A store that answers 204 to a *conditional* DeleteObject of a missing key (as
docs/OPERATIONS.md measured radosgw 16 doing) must be refused by the probe: c2 of a fresh
claim reads "404 to a first try" as "someone else claimed and finished what c0 read", and on
such a store a claim whose c0 came before another worker's whole claim and completion would
run the completed request again (docs/PROTOCOL.md §1, §4 c2).

Real parts only: moto, a StoreProxy that turns the 404 of a DeleteObject with If-Match into
204 (``Behaviour(missing_delete_204=True)``; nothing else changes), S3Store, Queue,
check_store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from s3q.backends.delegating import DelegatingStore
from s3q.backends.s3 import S3Store
from s3q.context import QueueConfig
from s3q.queue import Queue
from s3q.store import NotFound
from s3q.storecheck import check_store
from tests.s3server import S3Endpoint
from tests.storeproxy import Behaviour, StoreProxy

NAME = "x_request.json"


@pytest.fixture
def proxy(s3_endpoint: S3Endpoint) -> Iterator[StoreProxy]:
    if not s3_endpoint.is_moto:
        pytest.skip("needs moto")
    assert s3_endpoint.endpoint_url
    p = StoreProxy(s3_endpoint.endpoint_url, Behaviour(missing_delete_204=True))
    yield p
    p.close()


def _store(endpoint: S3Endpoint, url: str, prefix: str) -> S3Store:
    return S3Store(endpoint.bucket, prefix, endpoint.options(endpoint_url=url))


def test_probe_refuses_a_store_answering_204_to_a_conditional_delete_of_a_missing_key(
        s3_endpoint: S3Endpoint, proxy: StoreProxy) -> None:
    store = _store(s3_endpoint, proxy.url, f"mk/{uuid4().hex}")
    try:
        # the behaviour modelled: no NotFound for DEL=e of a missing key
        store.delete("nothing-here", if_match='"00000000000000000000000000000000"')
        assert proxy.counts["404 as 204"] == 1
        check = check_store(store, max_age=0)
        rows = {c.name: (c.status, c.observed) for c in check.report.checks}  # type: ignore[union-attr]
        # c2 (and d5) rely on a 404 here: the worker must not start on such a store
        assert "conditional_delete" in [c.name for c in check.missing], rows["conditional_delete"]
    finally:
        store.close()


class _Hook(DelegatingStore):
    """Runs ``before_c1`` once, right before this store's first PUT! of a lease (c1)."""

    def __init__(self, inner: S3Store, before_c1: Any) -> None:
        super().__init__(inner)
        self.before_c1 = before_c1

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if (op == "put" and args["if_none_match"] and args["key"].startswith(".s3q/lease/")
                and self.before_c1 is not None):
            hook, self.before_c1 = self.before_c1, None
            hook()
        return fn()


def test_control_on_plain_moto_the_late_claim_gives_up(s3_endpoint: S3Endpoint) -> None:
    """The same interleaving where DEL=e of a missing key answers 404: the store passes the
    check, and the late claim gives its lease up (c2's 404) and runs nothing."""
    if not s3_endpoint.is_moto:
        pytest.skip("needs moto")
    assert s3_endpoint.endpoint_url
    plain = StoreProxy(s3_endpoint.endpoint_url, Behaviour())
    try:
        missing, runs = _late_claim(s3_endpoint, plain)
        assert missing == [[], []]
        assert runs == ["b:b'{\"n\": 1}'"], (
            f"the request ran {len(runs)} times, once after it was complete: {runs}")
    finally:
        plain.close()


def test_a_worker_refuses_such_a_store_where_a_late_claim_would_run_it_again(
        s3_endpoint: S3Endpoint, proxy: StoreProxy) -> None:
    """Each worker's start-up check finds conditional delete MISSING (the worker exits 2
    before claiming anything); the interleaving shows why: past the check, the late claim's
    c2 is answered 204 and a request already completed runs a second time."""
    missing, runs = _late_claim(s3_endpoint, proxy)
    assert missing == [["conditional_delete"], ["conditional_delete"]], missing
    assert runs == ["b:b'{\"n\": 1}'", "a:b'{\"n\": 1}'"], runs
    assert proxy.counts["404 as 204"] >= 1


def _late_claim(s3_endpoint: S3Endpoint, proxy: StoreProxy,
                ) -> tuple[list[list[str]], list[str]]:
    """Worker A lists and reads wait/NAME (c0); before its c1, worker B claims, runs and
    completes it; then A carries on. Returns the names of what each worker's start-up check
    found missing and
    the runs of the request, in order."""
    prefix = f"mk/{uuid4().hex}"
    config = QueueConfig(lease_ttl=30)
    raw_a, raw_b = _store(s3_endpoint, proxy.url, prefix), _store(s3_endpoint, proxy.url, prefix)
    missing = [[c.name for c in check_store(raw, max_age=0).missing]  # as a worker's start
               for raw in (raw_a, raw_b)]
    runs: list[str] = []

    def b_claims_and_completes() -> None:
        job = qb.claim("worker-b")
        assert job is not None
        runs.append(f"b:{job.read()!r}")
        job.complete()
        with pytest.raises(NotFound):
            raw_b.head(f".s3q/lease/{NAME}")  # B committed: the lease is gone

    qb = Queue(raw_b, config)
    qa = Queue(_Hook(raw_a, b_claims_and_completes), config)
    try:
        qa.submit(NAME, b'{"n": 1}')
        job = qa.claim("worker-a")
        if job is not None:
            runs.append(f"a:{job.read()!r}")
            job.complete()
        return missing, runs
    finally:
        qa.close()
        qb.close()
