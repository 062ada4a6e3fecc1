"""Review of ``s3q doctor``'s probe against faults a real network produces: one answer
lost after the store applied the request (botocore retries it), one request refused."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from uuid import uuid4

import pytest

from s3q.backends.s3 import S3Store
from s3q.doctor import probe
from s3q.guarantees import MISSING
from s3q.storecheck import check_store
from tests.chaos.faultproxy import FaultProxy
from tests.s3server import S3Endpoint


class OneLostAnswer(FaultProxy):
    """Forwards everything; the first request ``hit`` picks is applied by the store, and
    its answer lost (connection reset after forwarding): botocore sends it again."""

    def __init__(self, upstream: str, hit: Callable[[BaseHTTPRequestHandler], bool]) -> None:
        super().__init__(upstream, rate=0.0)
        self.hit, self.fired = hit, False
        self._local = threading.local()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        self._local.req = req
        super()._handle(req)

    def _pick(self) -> str | None:
        req = self._local.req
        with self.lock:
            if not self.fired and self.hit(req):
                self.fired = True
                return "reset_after"
        return None


@pytest.fixture
def moto(s3_endpoint: S3Endpoint) -> S3Endpoint:
    if not s3_endpoint.is_moto:
        pytest.skip("behind a proxy on loopback")
    return s3_endpoint


def _cas_write(req: BaseHTTPRequestHandler) -> bool:
    """The probe's PUT If-Match with the current ETag (the key ``.../cas``)."""
    return (req.command == "PUT" and req.path.split("?")[0].endswith("/cas")
            and req.headers.get("If-Match") is not None)


def test_a_lost_answer_to_a_conditional_write_is_not_a_missing_guarantee(
        moto: S3Endpoint) -> None:
    """The store applied PUT If-Match (current ETag), its answer was lost, botocore sent it
    again and the retry got 412 (the ETag is no longer current: the first try changed
    it). That is what AWS itself does; the probe must not call compare-and-swap MISSING,
    which makes a worker refuse a good store."""
    assert moto.endpoint_url
    proxy = OneLostAnswer(moto.endpoint_url, _cas_write)
    store = S3Store(moto.bucket, f"probe/{uuid4().hex}", moto.options(endpoint_url=proxy.url))
    try:
        report = probe(store, full=False)
        assert proxy.fired
        cas = next(c for c in report.checks if c.name == "compare_and_swap")
        assert cas.status != MISSING, cas.observed
        assert not check_store(store, max_age=0).missing
    finally:
        store.close()
        proxy.close()
