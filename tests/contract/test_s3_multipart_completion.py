"""A CompleteMultipartUpload that took effect but was answered as failed (a 500, a dropped
connection), on a store that answers botocore's retry of it NoSuchUpload: MinIO does (minio
issue 13318), where AWS and moto answer a repeated completion as the first
(:mod:`tests.storeproxy`: ``applied_then_500`` and ``forget_completed_uploads``).

Before, that 404 was a store error: the step that wrote the object (c3's processing/ view,
x2's failed/NAME, a submit over 5 GiB) failed although its object was there, and a claim's
request waited a whole lease_ttl for a takeover. Now every upload is created with a token of
its own in its metadata (``x-amz-meta-s3q-upload``), and a completion answered NoSuchUpload
reads the key back: the object that carries the token is this upload's, and the write
succeeded; any other object (or none) is not taken for it.

A completion answered 200 without an ETag (radosgw 16: ``<ETag></ETag>``) is read back in
the same way: the ETag kept of the object (a processing/ view's, which its delete names) was
``""``, and the view was never deleted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from s3q.backends.s3 import S3Store
from s3q.context import QueueConfig
from s3q.queue import Queue
from s3q.store import NotFound, ObjectInfo, PreconditionFailed, StoreError
from tests.contract.large import NAME, SIZE, open_uploads, seed
from tests.s3server import MakeS3Store, S3Endpoint
from tests.storeproxy import StoreProxy


@pytest.fixture
def proxy(limited: StoreProxy) -> StoreProxy:
    """The proxy of S3's limits, answering a repeated completion as MinIO does."""
    limited.behaviour.forget_completed_uploads = True
    return limited


@pytest.fixture
def store(proxy: StoreProxy, s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
          data: bytes) -> S3Store:
    """A store (behind ``proxy``) holding ``src``, a request over the limit."""
    made = make_s3_store(endpoint_url=proxy.url)
    seed(s3_endpoint, made, "src", data)
    return made


#: where each write goes: wait/, as a submit writes
DST = "wait/x.bin"

WRITES: dict[str, Callable[[S3Store, bytes, Path], ObjectInfo]] = {
    "copy if absent": lambda s, d, t: s.copy("src", DST, if_none_match=True),
    "copy": lambda s, d, t: s.copy("src", DST),
    "put if absent": lambda s, d, t: s.put(DST, d, if_none_match=True),
    "submit a file": lambda s, d, t: Queue(s).submit("x.bin", _file(t, d)),
}


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path


@pytest.fixture(params=list(WRITES))
def write(request: pytest.FixtureRequest, data: bytes,
          tmp_path: Path) -> Callable[[S3Store], ObjectInfo]:
    return lambda store: WRITES[request.param](store, data, tmp_path)


def test_a_completion_applied_then_answered_no_such_upload_succeeds(
        write: Callable[[S3Store], ObjectInfo], store: S3Store, proxy: StoreProxy,
        s3_endpoint: S3Endpoint, data: bytes) -> None:
    proxy.behaviour.applied_then_500.add(("POST", DST))
    written = write(store)
    assert proxy.counts["applied then 500"] == 1
    assert proxy.counts["forgotten upload"] == 1  # botocore's retry, answered 404
    found = store.head(DST)
    assert written.etag == found.etag and written.size == found.size == SIZE
    assert store.get(DST)[0] == data
    assert store.request_counts["AbortMultipartUpload"] == 0
    assert open_uploads(s3_endpoint, store) == []


def test_the_token_is_found_in_metadata_answered_in_any_case(
        write: Callable[[S3Store], ObjectInfo], store: S3Store, proxy: StoreProxy,
        s3_endpoint: S3Endpoint, data: bytes) -> None:
    """MinIO, which answers the repeated completion NoSuchUpload, answers user metadata in
    Go's canonical case (``X-Amz-Meta-S3q-Upload``), and botocore keeps that case in the
    keys of ``Metadata`` (``S3q-Upload``): the token is looked up in any case. Before, the
    upload's own object was taken for another one: a copy or a submit failed with a store
    error, and a create-if-absent write with a 412 (its view adopted, not its own)."""
    proxy.behaviour.canonical_metadata = True
    proxy.behaviour.applied_then_500.add(("POST", DST))
    written = write(store)
    assert proxy.counts["forgotten upload"] == 1
    found = store.head(DST)
    assert written.etag == found.etag and written.size == found.size == SIZE
    assert store.get(DST)[0] == data
    assert open_uploads(s3_endpoint, store) == []


def _raw_put(s3_endpoint: S3Endpoint, store: S3Store, body: bytes) -> Callable[[str], None]:
    """Between the completion and its retry: somebody puts ``body`` at the key (a
    producer's re-submission, an ``aws s3 cp``), straight on moto."""
    def put(key: str) -> None:
        s3_endpoint.client().put_object(Bucket=store.bucket, Key=key, Body=body)
    return put


def _raw_delete(s3_endpoint: S3Endpoint, store: S3Store) -> Callable[[str], None]:
    def delete(key: str) -> None:
        s3_endpoint.client().delete_object(Bucket=store.bucket, Key=key)
    return delete


def test_an_object_put_there_before_the_retry_is_not_taken_for_the_uploads(
        store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint) -> None:
    """The key holds another object when the retry is answered NoSuchUpload: a
    create-if-absent write reports its condition failed, as a 412 to a retried write
    (``retried``: the caller reads the key back and compares it with what it wrote, as
    after any such 412); an unconditional one cannot tell whether its write took effect
    and was replaced, or never did: a store error, never success."""
    proxy.behaviour.after_applied = _raw_put(s3_endpoint, store, b"somebody else's")
    proxy.behaviour.applied_then_500.add(("POST", DST))
    with pytest.raises(PreconditionFailed) as caught:
        store.copy("src", DST, if_none_match=True)
    assert caught.value.retried
    assert store.get(DST)[0] == b"somebody else's"
    proxy.behaviour.applied_then_500.add(("POST", "/dst2"))
    with pytest.raises(StoreError) as failed:
        store.copy("src", "dst2")
    assert type(failed.value) is StoreError
    assert "may have taken effect" in str(failed.value)
    assert store.get("dst2")[0] == b"somebody else's"
    assert proxy.counts["forgotten upload"] == 2
    assert open_uploads(s3_endpoint, store) == []


def test_a_key_deleted_before_the_retry_is_a_store_error_not_a_missing_source(
        store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint,
        data: bytes) -> None:
    """Nothing at the key (an operator's ``purge`` or ``aws s3 rm`` came between): the
    outcome is unknown. Not NotFound, which callers of a copy read as "the source is gone"
    (a settled request's body), nor PreconditionFailed, which would claim an object is
    there: a store error, which the step's next try resolves."""
    proxy.behaviour.after_applied = _raw_delete(s3_endpoint, store)
    for write in ("copy if absent", "put if absent"):
        proxy.behaviour.applied_then_500.add(("POST", DST))
        with pytest.raises(StoreError) as caught:
            WRITES[write](store, data, Path())
        assert type(caught.value) is StoreError
        with pytest.raises(NotFound):
            store.head(DST)
    assert proxy.counts["forgotten upload"] == 2
    assert store.head("src").size == SIZE
    assert open_uploads(s3_endpoint, store) == []


@pytest.mark.parametrize("answer", ["NoSuchUpload", "no ETag"])
def test_a_completed_upload_read_back_as_failed_is_not_aborted(
        answer: str, store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint,
        caplog: pytest.LogCaptureFixture) -> None:
    """A completion answered NoSuchUpload or 200 (without an ETag) ended the upload: when
    the read-back fails it (another object there, the HEAD answered 503), nothing is left to
    abort. Before, an AbortMultipartUpload was sent all the same, answered NoSuchUpload, and
    logged as a warning that the failed upload "was not aborted" (its parts left for a
    lifecycle rule), of an upload that was completed."""
    if answer == "NoSuchUpload":
        proxy.behaviour.after_applied = _raw_put(s3_endpoint, store, b"somebody else's")
        proxy.behaviour.applied_then_500.add(("POST", DST))
        with pytest.raises(PreconditionFailed):
            store.copy("src", DST, if_none_match=True)
    else:
        proxy.behaviour.blank_complete_etag = True
        proxy.behaviour.down_keys = frozenset({("HeadObject", DST)})
        with pytest.raises(StoreError):
            store.copy("src", DST, if_none_match=True)
        assert proxy.counts["down"] >= 1
    assert store.request_counts["AbortMultipartUpload"] == 0
    assert "was not aborted" not in caplog.text
    assert open_uploads(s3_endpoint, store) == []


# -- end to end: the claim's c3 and the dead letter's x2 ---------------------------------


def test_a_claim_whose_processing_view_completion_was_lost_runs_at_once(
        store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint,
        data: bytes) -> None:
    """c3 (``COPY!`` to processing/, in parts) applied and answered 500, its retry
    NoSuchUpload: the claim goes on with its view, not after a takeover a lease_ttl
    later."""
    q = Queue(store, QueueConfig(lease_ttl=30, on_finish="move"))
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    proxy.behaviour.applied_then_500.add(("POST", f"processing/{NAME}"))
    job = q.claim("w")
    assert job is not None, "the claim failed"
    assert proxy.counts["forgotten upload"] == 1
    assert store.get(f"processing/{NAME}")[0] == data
    job.complete()
    assert store.get(f"finish/{NAME}")[0] == data
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    assert list(q.leases()) == []
    assert open_uploads(s3_endpoint, store) == []


def test_a_dead_letter_whose_completion_was_lost_is_placed_once(
        store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint,
        data: bytes) -> None:
    """x2 (``COPY!`` to failed/NAME, in parts) applied and answered 500, its retry
    NoSuchUpload: the request is dead-lettered at once, its one dead letter in place."""
    q = Queue(store, QueueConfig(lease_ttl=30, max_attempts=1))
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    job = q.claim("w")
    assert job is not None
    proxy.behaviour.applied_then_500.add(("POST", f"failed/{NAME}"))
    job.fail("the handler failed", retry=False)
    assert proxy.counts["forgotten upload"] == 1
    assert store.get(f"failed/{NAME}")[0] == data
    assert [i.key for i in store.list_page(".s3q/earlier/").items] == []
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    assert list(q.leases()) == []
    assert open_uploads(s3_endpoint, store) == []


# -- a completion answered without its ETag (radosgw 16) -----------------------------------


@pytest.mark.parametrize("write", ["copy if absent", "copy", "put if absent"])
def test_a_completion_answered_without_an_etag_is_read_back(
        write: str, store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint,
        data: bytes) -> None:
    """radosgw 16 answers CompleteMultipartUpload ``<ETag></ETag>``: the ETag s3q keeps of
    what it wrote (a view's, which its delete names) is read back, from the object that
    carries the upload's token; it was ``""`` before, and a view's ``DEL=""`` would never
    have deleted it."""
    proxy.behaviour.blank_complete_etag = True
    written = WRITES[write](store, data, Path())
    assert proxy.counts["blank etag"] == 1
    found = store.head(DST)
    assert written.etag == found.etag != '""' and written.size == SIZE
    assert store.get(DST)[0] == data
    assert open_uploads(s3_endpoint, store) == []


def test_a_claim_on_a_store_answering_completions_without_an_etag_leaves_no_view(
        store: S3Store, proxy: StoreProxy, s3_endpoint: S3Endpoint,
        data: bytes) -> None:
    """c3's view, written in parts, is deleted at d4 by its ETag: the ETag read back."""
    proxy.behaviour.blank_complete_etag = True
    q = Queue(store, QueueConfig(lease_ttl=30, on_finish="move"))
    seed(s3_endpoint, store, f"wait/{NAME}", data)
    job = q.claim("w")
    assert job is not None, "the claim failed"
    job.complete()
    assert store.get(f"finish/{NAME}")[0] == data
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    assert list(q.leases()) == []
    assert open_uploads(s3_endpoint, store) == []
