"""Requests over S3's limits on one request (5 GiB: a PutObject's body, a CopyObject's
source), lowered to 12 MiB by :mod:`tests.storeproxy` (``size_limit``) between
:class:`S3Store` and moto, which enforces neither; the proxy also enforces
``x-amz-copy-source-if-match`` (``copy_source_if_match``), which moto ignores. The store's
own knowledge of the limit and its part size are lowered to match (5 MiB parts, S3's
least: a 13 MiB request is copied in 3).

A create-if-absent copy (c3's processing/ view, w1's wait/ view, x2's failed/NAME, r2's
wait/NAME, the displacement of an earlier dead letter) of such a source used to fail at
every attempt: CopyObject ``If-None-Match: *`` is refused above the limit, and the GET +
``PUT!`` it fell back to as well; the request was claimed again and again, never processed,
never dead-lettered. It is now a server-side multipart copy whose CompleteMultipartUpload
carries ``If-None-Match: *``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from s3q.backends.s3 import S3Store
from s3q.backends.s3wire import CONFLICT_TRIES
from s3q.context import QueueConfig
from s3q.errors import LeaseLost
from s3q.queue import Queue
from s3q.store import NotFound, PreconditionFailed
from tests.contract.large import LIMIT, NAME, SIZE, open_uploads, seed
from tests.s3server import MakeS3Store, S3Endpoint
from tests.storeproxy import StoreProxy

WRITES = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
          "CompleteMultipartUpload", "DeleteObject", "DeleteObjects"}



# -- the proxy answers as S3 does ---------------------------------------------------------


def test_the_proxy_refuses_what_s3_refuses_above_its_limits(
        limited: StoreProxy, s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        data: bytes) -> None:
    store = make_s3_store(endpoint_url=limited.url)
    seed(s3_endpoint, store, "big", data)
    raw = s3_endpoint.client()
    proxied = S3Endpoint(limited.url, s3_endpoint.bucket, s3_endpoint.region,
                         s3_endpoint.access_key_id, s3_endpoint.secret_access_key,
                         is_moto=True).client()
    full = f"{store.prefix}/big"
    with pytest.raises(ClientError) as caught:
        proxied.copy_object(Bucket=store.bucket, Key=f"{full}.copy",
                            CopySource={"Bucket": store.bucket, "Key": full})
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "InvalidRequest"
    assert error["Error"]["Message"] == ("The specified copy source is larger than the "
                                         f"maximum allowable size for a copy source: {LIMIT}")
    with pytest.raises(ClientError) as caught:
        proxied.put_object(Bucket=store.bucket, Key=f"{full}.put", Body=data)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "EntityTooLarge"
    assert error["Error"]["Message"] == "Your proposed upload exceeds the maximum allowed size"
    # at the limit, and in parts, it passes; a stale source condition does not
    proxied.put_object(Bucket=store.bucket, Key=f"{full}.small", Body=data[:LIMIT])
    proxied.copy_object(Bucket=store.bucket, Key=f"{full}.small2",
                        CopySource={"Bucket": store.bucket, "Key": f"{full}.small"})
    upload = proxied.create_multipart_upload(Bucket=store.bucket, Key=f"{full}.parts")
    proxied.upload_part_copy(Bucket=store.bucket, Key=f"{full}.parts", PartNumber=1,
                             UploadId=upload["UploadId"], CopySourceRange="bytes=0-99",
                             CopySource={"Bucket": store.bucket, "Key": full})
    with pytest.raises(ClientError) as caught:
        proxied.upload_part_copy(Bucket=store.bucket, Key=f"{full}.parts", PartNumber=2,
                                 UploadId=upload["UploadId"], CopySourceRange="bytes=0-99",
                                 CopySource={"Bucket": store.bucket, "Key": full},
                                 CopySourceIfMatch='"0123456789abcdef0123456789abcdef"')
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    raw.abort_multipart_upload(Bucket=store.bucket, Key=f"{full}.parts",
                               UploadId=upload["UploadId"])
    assert limited.counts["copy source too large"] == 1
    assert limited.counts["entity too large"] == 1
    assert limited.counts["copy source changed"] == 1


# -- a request over the limit, end to end --------------------------------------------------


def test_a_request_over_the_limit_is_claimed_processed_and_moved_to_finish(
        limited: StoreProxy, s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        data: bytes) -> None:
    """c1b (copy to the private body), c3 (``COPY!`` to processing/), d3 (copy to
    finish/): each over the copy limit."""
    store = make_s3_store(endpoint_url=limited.url)
    q = Queue(store, QueueConfig(lease_ttl=30, on_finish="move"))
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    job = q.claim("w")  # (its processing/ view at once)
    assert job is not None, "the claim failed"
    assert store.head(f"processing/{NAME}").size == SIZE
    with job.open() as body:
        assert body.read() == data
    job.complete()
    assert store.get(f"finish/{NAME}")[0] == data
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    assert list(q.leases()) == []
    assert [i.key for i in store.list_page(".s3q/body/").items] == []
    assert limited.counts["copy source too large"] >= 2  # (c1b, d3: CopyObject first)
    assert limited.counts["entity too large"] == 0
    assert open_uploads(s3_endpoint, store) == []


def test_a_request_over_the_limit_is_retried_dead_lettered_and_requeued(
        limited: StoreProxy, s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        data: bytes) -> None:
    """w1 (``COPY!`` to wait/), x2 (``COPY!`` to failed/), r2 (``PUT!`` wait/ from the
    body of record): each over the limit."""
    store = make_s3_store(endpoint_url=limited.url)
    config = QueueConfig(lease_ttl=30, max_attempts=2, retry_base_delay=0, retry_max_delay=0)
    q = Queue(store, config)
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    job = q.claim("w")
    assert job is not None, "the claim failed"
    job.fail("the handler failed")  # w1…w3
    assert store.head(f"wait/{NAME}").size == SIZE
    again = q.claim("w")
    assert again is not None and again.attempt == 2
    again.fail("the handler failed again")  # x1…x5
    assert store.get(f"failed/{NAME}")[0] == data
    record = q.error_record(NAME)
    assert record is not None and record.attempts == 2
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    assert list(q.leases()) == []

    assert q.requeue(NAME)  # r1…r5
    assert store.get(f"wait/{NAME}")[0] == data
    third = q.claim("w")
    assert third is not None
    with third.open() as body:
        assert body.read() == data
    third.complete()
    assert store.get(f"finish/{NAME}")[0] == data
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    assert limited.counts["entity too large"] == 0
    assert open_uploads(s3_endpoint, store) == []


def test_a_second_dead_letter_over_the_limit_displaces_the_first(
        limited: StoreProxy, s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        data: bytes) -> None:
    """x2 finds failed/NAME taken by an earlier dead letter: ``COPY!`` of it to
    ``.s3q/earlier/`` (source-conditioned), then x2 again."""
    store = make_s3_store(endpoint_url=limited.url)
    q = Queue(store, QueueConfig(lease_ttl=30, max_attempts=1))
    earlier = data[::-1]
    seed(s3_endpoint, store, f"failed/{NAME}", earlier)
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    job = q.claim("w")
    assert job is not None
    job.fail("the handler failed", retry=False)
    assert store.get(f"failed/{NAME}")[0] == data
    kept = [i.key for i in store.list_page(".s3q/earlier/").items]
    assert len(kept) == 1 and store.get(kept[0])[0] == earlier
    assert open_uploads(s3_endpoint, store) == []


def test_a_file_over_the_limit_is_submitted_in_parts(
        limited: StoreProxy, s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        data: bytes, tmp_path: Path) -> None:
    store = make_s3_store(endpoint_url=limited.url)
    q = Queue(store)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    info = q.submit(NAME, source)
    assert info.size == SIZE and info.etag.endswith('-3"')
    assert store.get(f"wait/{NAME}")[0] == data
    assert store.request_counts["UploadPart"] == 3
    with pytest.raises(PreconditionFailed):  # create-if-absent: If-None-Match at complete
        store.put(f"wait/{NAME}", data[::-1], if_none_match=True)
    assert store.get(f"wait/{NAME}")[0] == data
    assert open_uploads(s3_endpoint, store) == []
    created = store.put("fresh", data, if_none_match=True)
    assert created.etag == store.head("fresh").etag
    assert limited.counts["entity too large"] == 0


# -- the create-if-absent multipart copy ---------------------------------------------------


@pytest.fixture(params=["native", "through"])
def large_store(request: pytest.FixtureRequest, limited: StoreProxy, s3_endpoint: S3Endpoint,
                make_s3_store: MakeS3Store, data: bytes) -> S3Store:
    """A store holding ``src`` (over the limit), whose create-if-absent copy starts with a
    CopyObject ``If-None-Match: *`` (``native``: where the store honours it) or a GET
    (``through``: elsewhere, moto among them)."""
    store = make_s3_store(endpoint_url=limited.url)
    store.capabilities = replace(store.capabilities,
                                 copy_if_none_match=request.param == "native")
    seed(s3_endpoint, store, "src", data)
    return store


def test_create_if_absent_copy_over_the_limit(large_store: S3Store, data: bytes,
                                              s3_endpoint: S3Endpoint) -> None:
    store = large_store
    source = store.head("src")
    copied = store.copy("src", "dst", if_source_match=source.etag, if_none_match=True)
    assert copied.size == SIZE and copied.etag == store.head("dst").etag
    assert store.get("dst")[0] == data
    assert store.request_counts["UploadPartCopy"] == 3
    assert store.request_counts["PutObject"] == 0
    assert open_uploads(s3_endpoint, store) == []


def test_create_if_absent_copy_over_the_limit_onto_an_existing_key(
        large_store: S3Store, s3_endpoint: S3Endpoint) -> None:
    """The destination exists: PreconditionFailed (412 at CompleteMultipartUpload), as the
    single-request copy answers, the destination untouched and no upload left open."""
    store = large_store
    there = store.put("dst", b"somebody else's")
    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst", if_none_match=True)
    assert store.get("dst")[0] == b"somebody else's"
    assert store.head("dst").etag == there.etag
    assert store.request_counts["CompleteMultipartUpload"] == 1
    assert store.request_counts["AbortMultipartUpload"] == 1
    assert open_uploads(s3_endpoint, store) == []


def test_create_if_absent_copy_over_the_limit_of_a_changed_source(
        large_store: S3Store, s3_endpoint: S3Endpoint, data: bytes) -> None:
    """A source that is not the one named (``if_source_match``): no upload is started (the
    native CopyObject carries the condition, and is refused). One that changes during the
    copy: its parts' ``x-amz-copy-source-if-match`` fails (412), the upload is aborted,
    nothing is created."""
    store = large_store
    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst", if_source_match='"0123456789abcdef0123456789abcdef"',
                   if_none_match=True)
    assert not {"PutObject", "CreateMultipartUpload"} & set(store.request_counts)
    # the guard runs before each request is sent: the source changes after
    # CreateMultipartUpload (natively, after the CopyObject refused too), before a part
    change_at = 3 if store.capabilities.copy_if_none_match else 2
    calls = [0]

    def changing() -> None:
        calls[0] += 1
        if calls[0] == change_at:
            seed(s3_endpoint, store, "src", data[::-1])

    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst", if_none_match=True, guard=changing)
    assert store.request_counts["UploadPartCopy"] >= 1
    assert store.request_counts["CompleteMultipartUpload"] == 0
    assert store.request_counts["AbortMultipartUpload"] == 1
    with pytest.raises(NotFound):
        store.head("dst")
    assert open_uploads(s3_endpoint, store) == []


def test_create_if_absent_copy_over_the_limit_respects_the_guard(
        large_store: S3Store, s3_endpoint: S3Endpoint, limited: StoreProxy) -> None:
    """A guard that refuses: no write is sent. One that refuses part of the way: the upload
    is aborted (the abort itself is sent past the guard: it only undoes)."""
    store = large_store

    def expired() -> None:
        raise LeaseLost("the lease's deadline passed")

    writes_before = limited.counts["requests"]
    with pytest.raises(LeaseLost):
        store.copy("src", "dst", if_none_match=True, guard=expired)
    assert not WRITES & set(store.request_counts)
    reads = store.request_counts["GetObject"] + store.request_counts["HeadObject"]
    assert limited.counts["requests"] - writes_before == reads
    calls = [0]

    def expiring() -> None:
        calls[0] += 1
        if calls[0] > 2:
            raise LeaseLost("the lease's deadline passed")

    with pytest.raises(LeaseLost):
        store.copy("src", "dst", if_none_match=True, guard=expiring)
    assert store.request_counts["CompleteMultipartUpload"] == 0
    assert store.request_counts["AbortMultipartUpload"] == 1
    with pytest.raises(NotFound):
        store.head("dst")
    assert open_uploads(s3_endpoint, store) == []


def test_create_if_absent_copy_over_the_limit_resends_a_409_complete(
        large_store: S3Store, s3_endpoint: S3Endpoint, limited: StoreProxy,
        data: bytes) -> None:
    """CompleteMultipartUpload ``If-None-Match`` answered 409 ConditionalRequestConflict
    (not applied) is sent again, as every conditional request is; after CONFLICT_TRIES such
    answers it is PreconditionFailed, the upload aborted."""
    store = large_store
    limited.behaviour.conflict_next.add(("POST", "/dst"))
    store.copy("src", "dst", if_none_match=True)
    assert limited.counts["conflict"] == 1
    assert store.request_counts["CompleteMultipartUpload"] == 2
    assert store.get("dst")[0] == data
    if store.capabilities.copy_if_none_match:
        return  # (here the CopyObject If-None-Match would be answered 409 first)
    limited.behaviour.conflicts = 1.0  # every conditional write
    with pytest.raises(PreconditionFailed):
        store.copy("src", "dst2", if_none_match=True)
    assert store.request_counts["CompleteMultipartUpload"] == 2 + CONFLICT_TRIES
    with pytest.raises(NotFound):
        store.head("dst2")
    assert open_uploads(s3_endpoint, store) == []
