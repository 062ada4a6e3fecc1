"""The S3 canary: proves the server under test really enforces the conditions the queue relies
on (so the suite cannot pass against a server that ignores them), plus the behaviour specific
to :class:`S3Store`: error translation, the store clock, streaming reads, request counts,
the timestamps its client parses.

Raw boto3 is used here, and only here, to check the server itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import boto3
import botocore.loaders
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp as botocores

import s3q.backends.s3 as s3_backend
from s3q.backends import s3multipart
from s3q.backends.s3wire import CONTINUE_THRESHOLD, parse_timestamp
from s3q.errors import LeaseLost
from s3q.store import (
    InvalidKey,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreRefused,
    StoreUnavailable,
    list_all,
)
from tests.s3server import MakeS3Store, S3Endpoint
from tests.storeproxy import Behaviour, StoreProxy

STALE = '"0123456789abcdef0123456789abcdef"'


def _status(error: ClientError) -> int:
    return error.response["ResponseMetadata"]["HTTPStatusCode"]


# -- the server enforces conditions (raw boto3) --------------------------------------------


@pytest.fixture
def raw_key(s3_endpoint: S3Endpoint) -> str:
    """A fresh key holding b"v1" in the test bucket."""
    key = f"t/{uuid4().hex}/canary"
    s3_endpoint.client().put_object(Bucket=s3_endpoint.bucket, Key=key, Body=b"v1")
    return key


def test_server_refuses_create_over_existing_key(s3_endpoint: S3Endpoint, raw_key: str) -> None:
    client = s3_endpoint.client()
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=s3_endpoint.bucket, Key=raw_key, Body=b"v2", IfNoneMatch="*")
    assert _status(caught.value) == 412
    assert client.get_object(Bucket=s3_endpoint.bucket, Key=raw_key)["Body"].read() == b"v1"


def test_server_refuses_put_with_stale_etag(s3_endpoint: S3Endpoint, raw_key: str) -> None:
    client = s3_endpoint.client()
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=s3_endpoint.bucket, Key=raw_key, Body=b"v2", IfMatch=STALE)
    assert _status(caught.value) == 412
    assert client.get_object(Bucket=s3_endpoint.bucket, Key=raw_key)["Body"].read() == b"v1"


def test_server_refuses_delete_with_stale_etag(s3_endpoint: S3Endpoint, raw_key: str) -> None:
    client = s3_endpoint.client()
    with pytest.raises(ClientError) as caught:
        client.delete_object(Bucket=s3_endpoint.bucket, Key=raw_key, IfMatch=STALE)
    assert _status(caught.value) == 412
    assert client.head_object(Bucket=s3_endpoint.bucket, Key=raw_key)["ContentLength"] == 2


def test_server_refuses_copy_of_changed_source(
    s3_endpoint: S3Endpoint, raw_key: str, request: pytest.FixtureRequest
) -> None:
    if s3_endpoint.is_moto:  # S3Store.copy compensates (HEAD first, racily) on moto
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="moto ignores x-amz-copy-source-if-match")
        )
    client = s3_endpoint.client()
    with pytest.raises(ClientError) as caught:
        client.copy_object(
            Bucket=s3_endpoint.bucket,
            Key=raw_key + ".copy",
            CopySource={"Bucket": s3_endpoint.bucket, "Key": raw_key},
            CopySourceIfMatch=STALE,
        )
    assert _status(caught.value) == 412


# -- ... and S3Store reports it -----------------------------------------------------------


def test_store_conditional_writes(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    first = store.put("k", b"v1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k", b"v2", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k", b"v2", if_match=STALE)
    with pytest.raises(PreconditionFailed):
        store.delete("k", if_match=STALE)
    assert store.get("k")[0] == b"v1"
    second = store.put("k", b"v2", if_match=first.etag)
    store.delete("k", if_match=second.etag)
    with pytest.raises(NotFound):
        store.head("k")


def test_store_missing_keys(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    store.delete("missing")  # unconditional: silently fine
    with pytest.raises(NotFound):
        store.delete("missing", if_match=STALE)
    with pytest.raises(NotFound):
        store.put("missing", b"x", if_match=STALE)
    with pytest.raises(NotFound):
        store.copy("missing", "dst")
    for read in (store.get, store.open, store.head):
        with pytest.raises(NotFound):
            read("missing")


def test_store_rejects_two_conditions_and_bad_keys(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    with pytest.raises(ValueError, match="at most one"):
        store.put("k", b"x", if_none_match=True, if_match=STALE)
    for bad in ("", "/abs", "a/../b", "a//b", "nul\x00"):
        with pytest.raises(InvalidKey):
            store.put(bad, b"x")
    for bad_prefix in ("../", "a/\n", "/x"):
        with pytest.raises(InvalidKey):
            store.list_page(bad_prefix)
    assert store.request_counts == {}  # refused before any request


def test_store_copy_and_listing(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    neighbour = make_s3_store()
    neighbour.put("wait/other", b"not mine")
    src = store.put("wait/a b%é", b"payload")
    copied = store.copy("wait/a b%é", "done/a b%é", if_source_match=src.etag)
    # CopyObject does not report the size: -1 (documented in Store.copy)
    assert (copied.key, copied.etag, copied.size) == ("done/a b%é", src.etag, -1)
    assert store.get("done/a b%é")[0] == b"payload"
    keys = [info.key for info in list_all(store, "", page_size=1)]
    assert keys == ["done/a b%é", "wait/a b%é"]
    page = store.list_page("wait/", start_after="wait/a", limit=1)
    assert [i.key for i in page.items] == ["wait/a b%é"]
    assert page.items[0].etag == src.etag


def test_store_put_streams(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    assert store.put("seekable", io.BytesIO(b"abc")).size == 3
    positioned = io.BytesIO(b"0123456789")
    positioned.seek(4)
    assert store.put("positioned", positioned).size == 6
    assert store.get("positioned")[0] == b"456789"
    unseekable = io.BufferedReader(_Chunks([b"ab", b"cd", b"e"]))
    info = store.put("unseekable", unseekable)
    assert (info.size, info.etag) == (5, f'"{hashlib.md5(b"abcde").hexdigest()}"')


def test_multipart_copy_of_large_source(
    make_s3_store: MakeS3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 rejects CopyObject above 5 GiB and copy() then falls back to this path; moto does
    # not enforce the limit, so the fallback is exercised directly, with 5 MiB parts (the
    # whole way, with S3's limits modelled: tests/contract/test_s3_large.py)
    monkeypatch.setattr(s3multipart, "PART_SIZE", 5 * 1024**2)
    store = make_s3_store()
    data = os.urandom(12 * 1024**2)
    src = store.put("big", data)
    copied = store._copy_multipart("big", "copy", src.etag, False, None)
    assert copied.size == len(data) and copied.etag.endswith('-3"')
    assert copied.etag == store.head("copy").etag
    assert store.request_counts["UploadPartCopy"] == 3
    assert store.get("copy")[0] == data
    with pytest.raises(PreconditionFailed):
        store._copy_multipart("big", "copy", STALE, False, None)
    assert s3multipart.part_size(5 * 1024**4) == -(-5 * 1024**4 // s3multipart.MAX_PARTS)


# -- S3Store specifics ----------------------------------------------------------------------


def test_now_follows_the_server_clock(make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    store = make_s3_store()
    first = store.now()  # no response seen yet: asks the server
    assert store.request_counts == {"HeadBucket": 1}
    # Bounds: Date has 1 s resolution, plus the round trip on a loaded machine.
    if s3_endpoint.is_moto:  # same machine, same clock
        assert abs(first - time.time()) < 5.0
    time.sleep(0.3)
    second = store.now()
    assert 0.25 < second - first < 5.0  # it advances between responses, no new request
    assert store.request_counts == {"HeadBucket": 1}
    written = store.put("k", b"x")
    assert abs(written.last_modified - store.now()) < 5.0
    assert abs(store.head("k").last_modified - written.last_modified) < 5.0


def test_missing_bucket_is_named(s3_endpoint: S3Endpoint) -> None:
    bucket = f"s3q-missing-{uuid4().hex[:12]}"
    store = s3_backend.S3Store(bucket, "p", s3_endpoint.options())
    try:
        calls: list[Callable[[], object]] = [
            lambda: store.get("k"),
            lambda: store.put("k", b"x", if_none_match=True),
            lambda: store.list_page(""),
        ]
        for call in calls:
            with pytest.raises(StoreError, match=bucket) as caught:
                call()
            # (refused whatever the key: never a missing key, nor an outage to wait out)
            assert type(caught.value) is StoreRefused
            assert isinstance(caught.value.__cause__, ClientError)
    finally:
        store.close()


def test_unreachable_endpoint_is_unavailable_quickly(s3_endpoint: S3Endpoint) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = s3_endpoint.options(
        endpoint_url=f"http://127.0.0.1:{port}",
        max_attempts=1,
        connect_timeout=1.0,
        read_timeout=1.0,
    )
    store = s3_backend.S3Store("bucket", "", options)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            store.put("k", b"x", if_none_match=True)
        with pytest.raises(StoreUnavailable):
            store.now()
    finally:
        store.close()
    assert time.monotonic() - started < 5.0
    assert store.error_counts["EndpointConnectionError"] == 2


def test_open_streams_large_object(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    data = os.urandom(20 * 1024**2)
    store.put("big", data)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        stream, info = store.open("big")
        with stream:
            while chunk := stream.read(256 * 1024):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == len(data)
    assert digest.digest() == hashlib.sha256(data).digest()
    assert peak < 8 * 1024**2, f"open() buffered {peak} bytes: not streaming"


def test_request_and_error_counts(make_s3_store: MakeS3Store) -> None:
    store = make_s3_store()
    info = store.put("k", b"x")
    store.get("k")
    store.head("k")
    store.list_page("")
    with pytest.raises(PreconditionFailed):
        store.put("k", b"y", if_none_match=True)
    store.delete("k", if_match=info.etag)
    assert store.request_counts == {
        "PutObject": 2,
        "GetObject": 1,
        "HeadObject": 1,
        "ListObjectsV2": 1,
        "DeleteObject": 1,
    }
    assert store.error_counts == {"PreconditionFailed": 1}


def test_delete_batch_answers_each_key_as_its_delete_would(make_s3_store: MakeS3Store,
                                                          s3_endpoint: S3Endpoint) -> None:
    """One DeleteObjects request, each key with its ETag (where the store honours them:
    the probe decides, tests/integration/test_store_probe.py)."""
    if not s3_endpoint.is_moto:
        pytest.skip("elsewhere the worker's start-up probe decides whether s3q batches")
    store = make_s3_store()
    store.capabilities = replace(store.capabilities, batch_conditional_delete=True)
    a = store.put("a", b"a").etag
    stale = store.put("b", b"b1").etag
    current = store.put("b", b"b2").etag
    results = store.delete_batch([("a", a), ("b", stale), ("gone", a)])
    assert results[0] is None
    assert isinstance(results[1], PreconditionFailed) and not results[1].retried
    assert isinstance(results[2], NotFound) and not results[2].retried
    assert store.request_counts == {"PutObject": 3, "DeleteObjects": 1}
    assert store.head("b").etag == current
    with pytest.raises(NotFound):
        store.head("a")


def test_a_key_answered_internal_error_in_a_batch_is_sent_again_alone(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    """botocore retries a request, not one key of a DeleteObjects answered 200: s3q sends
    that key again as its own DeleteObject If-Match. Its 404 may be the first try's doing
    (here it is: the proxy reports an applied delete as failed): ``retried``."""
    if not s3_endpoint.is_moto:
        pytest.skip("the proxy rewrites moto's answers")
    assert s3_endpoint.endpoint_url
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour(delete_errors=1))
    try:
        store = make_s3_store(endpoint_url=proxy.url)
        store.capabilities = replace(store.capabilities, batch_conditional_delete=True)
        etags = [store.put(k, k.encode()).etag for k in ("a", "b")]
        results = store.delete_batch([("a", etags[0]), ("b", etags[1])])
        assert proxy.counts["delete errors"] == 1
        assert isinstance(results[0], NotFound) and results[0].retried
        assert results[1] is None
        assert store.request_counts == {"PutObject": 2, "DeleteObjects": 1, "DeleteObject": 1}
        # with a guard (a claim's, which is one key's only), the key is left to the caller
        etags = [store.put(k, k.encode()).etag for k in ("a", "b")]
        results = store.delete_batch([("a", etags[0]), ("b", etags[1])], guard=lambda: None)
        assert isinstance(results[0], StoreUnavailable) and results[1] is None
        assert store.request_counts == {"PutObject": 4, "DeleteObjects": 2, "DeleteObject": 1}
    finally:
        proxy.close()


def test_a_key_answered_409_in_a_batch_is_sent_again_alone(
        make_s3_store: MakeS3Store, s3_endpoint: S3Endpoint) -> None:
    """A key of a DeleteObjects answered ``<Error>`` ConditionalRequestConflict (AWS: it
    overlapped another conditional request; not applied, "retry the request") is not a
    412: its condition was never checked. It is sent again alone, as a key answered
    InternalError is; with a guard it is left to the caller (StoreUnavailable), not
    reported as PreconditionFailed (a completion's d5 would read the lease back, a fresh
    claim's c2 give its lease up)."""
    if not s3_endpoint.is_moto:
        pytest.skip("the proxy rewrites moto's answers")
    assert s3_endpoint.endpoint_url
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour(delete_conflicts=1))
    try:
        store = make_s3_store(endpoint_url=proxy.url)
        store.capabilities = replace(store.capabilities, batch_conditional_delete=True)
        etags = [store.put(k, k.encode()).etag for k in ("a", "b")]
        results = store.delete_batch([("a", etags[0]), ("b", etags[1])])
        assert proxy.counts["delete conflicts"] == 1
        assert results == [None, None]
        assert store.request_counts == {"PutObject": 2, "DeleteObjects": 1, "DeleteObject": 1}
        for key in ("a", "b"):
            with pytest.raises(NotFound):
                store.head(key)
        # with a guard (a claim's), the key is left to the caller: not applied, not a 412
        etags = [store.put(k, k.encode()).etag for k in ("a", "b")]
        results = store.delete_batch([("a", etags[0]), ("b", etags[1])], guard=lambda: None)
        assert proxy.counts["delete conflicts"] == 2
        assert isinstance(results[0], StoreUnavailable) and results[1] is None
        assert store.head("a").etag == etags[0]
        with pytest.raises(NotFound):
            store.head("b")
    finally:
        proxy.close()


def test_a_batch_guard_is_checked_before_each_try(make_s3_store: MakeS3Store,
                                                  s3_endpoint: S3Endpoint) -> None:
    """A claim's send-time fence travels with its c2 in a DeleteObjects (s3q.batching):
    the first try is answered 500 (faked before sending: nothing applied), and botocore's
    retry is stopped by the guard, whose error the call raises. Nothing was deleted."""
    if not s3_endpoint.is_moto:
        pytest.skip("elsewhere the worker's start-up probe decides whether s3q batches")
    store = make_s3_store(max_attempts=3)
    store.capabilities = replace(store.capabilities, batch_conditional_delete=True)
    etags = [store.put(k, k.encode()).etag for k in ("a", "b")]
    checks = [0]

    def guard() -> None:
        checks[0] += 1
        if checks[0] > 1:
            raise LeaseLost("the claim's deadline passed")

    def internal_error(**kwargs: Any) -> AWSResponse | None:
        return _fake_response(kwargs["request"].url, 500,
                              b"<Error><Code>InternalError</Code></Error>")

    store._client.meta.events.register("before-send.s3.DeleteObjects", internal_error)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost):
        store.delete_batch([("a", etags[0]), ("b", etags[1])], guard=guard)
    assert checks[0] == 2 and store.request_counts["DeleteObjects"] == 1
    assert [store.head(k).etag for k in ("a", "b")] == etags


def test_throttling_is_retried_then_unavailable(make_s3_store: MakeS3Store) -> None:
    """Fault injection: the server answers 503 SlowDown (faked before sending)."""
    store = make_s3_store(max_attempts=3)
    slow_downs = [2]  # answers to fake, then let requests through

    def slow_down(**kwargs: Any) -> AWSResponse | None:
        if slow_downs[0] == 0:
            return None
        slow_downs[0] -= 1
        return _fake_response(kwargs["request"].url, 503, b"<Error><Code>SlowDown</Code></Error>")

    # (the stubs say handlers return None; before-send ones may return the response to use)
    store._client.meta.events.register("before-send.s3.PutObject", slow_down)  # type: ignore[arg-type]
    store.put("k", b"x")  # two 503s, then success on the 3rd attempt
    assert store.request_counts["PutObject"] == 3
    assert store.error_counts == {"SlowDown": 2}
    slow_downs[0] = 3
    with pytest.raises(StoreUnavailable, match="SlowDown"):
        store.put("k", b"y")
    assert store.get("k")[0] == b"x"


# -- helpers ------------------------------------------------------------------------------


class _Chunks(io.RawIOBase):
    """A non-seekable stream yielding the given chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self._chunks = list(chunks)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._chunks:
            return 0
        chunk = self._chunks.pop(0)
        memoryview(buffer)[: len(chunk)] = chunk
        return len(chunk)


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def _fake_response(url: str, status: int, body: bytes) -> AWSResponse:
    headers = HTTPHeaders()
    headers["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    return AWSResponse(url, status, headers, _RawBody(body))


@pytest.mark.parametrize("text", [
    "2026-12-02T06:02:27.000Z",  # ListObjectsV2, CopyObjectResult
    "2026-12-02T06:02:27Z",
    "2026-12-02T06:02:27.123456+00:00",
    "2026-12-02T15:02:27+09:00",
    "Wed, 02 Dec 2026 06:02:27 GMT",  # Last-Modified headers
    "1764655347",  # epoch seconds: botocore's own parser
])
def test_the_clients_timestamp_parser_reads_what_botocores_reads(text: str) -> None:
    ours = parse_timestamp(text)
    assert ours == botocores(text)
    assert ours.utcoffset() is not None


def test_a_timestamp_without_a_zone_is_utc() -> None:
    """(botocore's parser leaves it naive, which .timestamp() reads as local time.)"""
    assert parse_timestamp("2026-12-02T06:02:27").timestamp() == 1796191347.0
    with pytest.raises(ValueError):
        parse_timestamp("not a time")


def test_listings_and_heads_agree_on_last_modified(make_s3_store: MakeS3Store) -> None:
    """The listing's time (ISO 8601, milliseconds) and the header's (RFC 1123, seconds)."""
    store = make_s3_store()
    store.put("a", b"x")
    [listed] = store.list_page("", limit=10).items
    assert abs(listed.last_modified - store.head("a").last_modified) < 1.0


@pytest.fixture
def counting_proxy(s3_endpoint: S3Endpoint) -> Iterator[StoreProxy]:
    """A proxy that changes nothing, in front of the test endpoint: it counts what it sees."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("needs a local S3 endpoint to put the proxy in front of")
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour())
    yield proxy
    proxy.close()


def test_small_puts_do_not_wait_for_100_continue(make_s3_store: MakeS3Store,
                                                 counting_proxy: StoreProxy) -> None:
    """botocore asks for ``100 Continue`` before every PutObject body: a round trip more on
    each lease write. Below CONTINUE_THRESHOLD the store sends the body at once; at and
    above it, it still asks (a rejected large upload is not sent in vain)."""
    store = make_s3_store(endpoint_url=counting_proxy.url)
    info = store.put("lease", b"x" * 4096, if_none_match=True)
    store.put("lease", io.BytesIO(b"y" * 4096), if_match=info.etag)
    with pytest.raises(PreconditionFailed):
        store.put("lease", b"z", if_none_match=True)
    assert counting_proxy.counts["requests"] == 3
    assert counting_proxy.counts["100-continue"] == 0
    big = b"b" * CONTINUE_THRESHOLD
    store.put("big", big)
    assert counting_proxy.counts["100-continue"] == 1
    assert store.get("big")[0] == big


def test_the_latency_proxy_charges_the_interim_answer_a_round_trip(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store) -> None:
    """The benchmarks' network model: botocore's own PutObject, which waits for ``100
    Continue``, takes two round trips; s3q's store's takes one (lower bounds: the proxy
    sleeps them)."""
    if not s3_endpoint.is_moto or not s3_endpoint.endpoint_url:
        pytest.skip("needs a local S3 endpoint to put the proxy in front of")
    latency = 0.3
    proxy = StoreProxy(s3_endpoint.endpoint_url, Behaviour(latency=latency))
    try:
        raw = boto3.client("s3", endpoint_url=proxy.url, region_name=s3_endpoint.region,
                           aws_access_key_id=s3_endpoint.access_key_id,
                           aws_secret_access_key=s3_endpoint.secret_access_key)
        raw.head_bucket(Bucket=s3_endpoint.bucket)  # connected
        started = time.monotonic()
        raw.put_object(Bucket=s3_endpoint.bucket, Key=f"t/{uuid4().hex}", Body=b"hi")
        assert time.monotonic() - started >= 2 * latency
        assert proxy.counts["100-continue"] == 1
        store = make_s3_store(endpoint_url=proxy.url)
        started = time.monotonic()
        store.put("lease", b"hi", if_none_match=True)
        assert time.monotonic() - started >= latency
        assert proxy.counts["100-continue"] == 1
        assert proxy.counts["requests"] == 3
    finally:
        proxy.close()


def test_the_proxy_answers_in_one_write_without_nagle(
        make_s3_store: MakeS3Store, counting_proxy: StoreProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks' latency model adds exactly its latency: the proxy writes each answer
    (headers and body) at once, on a socket without Nagle's algorithm. Headers and body
    written apart on a Nagle socket made every answer with a body (GET, LIST, COPY) wait
    for the client's delayed ACK: 40 ms more than the model's 25 ms on Linux."""
    port = urlsplit(counting_proxy.url).port
    writes: list[tuple[int, int]] = []
    real = socket.socket.sendall

    def recording(self: socket.socket, data: Any, *args: Any) -> None:
        if self.getsockname()[1] == port:  # the proxy's side of a client's connection
            writes.append((len(data), self.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        real(self, data, *args)

    store = make_s3_store(endpoint_url=counting_proxy.url)
    store.put("k", b"x" * 100)
    monkeypatch.setattr(socket.socket, "sendall", recording)
    assert store.get("k")[0] == b"x" * 100
    assert [key.key for key in store.list_page("").items] == ["k"]
    assert len(writes) == 2  # one write for each answer
    assert all(nodelay for _, nodelay in writes)


def test_a_new_store_does_not_read_botocores_model_again(
        make_s3_store: MakeS3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each store's client has a botocore session of its own (its own credentials), but
    they share the process's data loader: the S3 model (0.1-0.2 s of CPU to read) is read
    once per process, not once per store."""
    make_s3_store()  # what an S3 client needs has been read now, if not before
    reads: list[str] = []
    real = botocore.loaders.JSONFileLoader.load_file

    def counting(self: botocore.loaders.JSONFileLoader, file_path: str) -> Any:
        reads.append(file_path)
        return real(self, file_path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counting)
    store = make_s3_store()
    store.put("k", b"x", if_none_match=True)
    assert store.get("k")[0] == b"x"
    assert reads == []
    # a client of a session of its own reads the model again (what every store did)
    boto3.session.Session().client("s3", region_name="us-east-1")
    assert any("/s3/" in path for path in reads)
