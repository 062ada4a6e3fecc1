"""A request another client uploaded in an archived storage class (GLACIER, DEEP_ARCHIVE:
S3 refuses its GET with InvalidObjectState, its COPY with ObjectNotInActiveTierError, both
403s of the object's own), on moto's S3 server: a `--burst` worker claimed again and again
("claim failed" each time, as if S3 were down) and never ended while it sat in wait/. Now
it processes the others, says once why it left that one (`request_unreadable`, ERROR),
leaves nothing of it behind, and ends (`burst_left`); once restored, it is processed. The
steps one by one, with a fake clock: tests/unit/test_unreadable_requests.py."""

from __future__ import annotations

import logging
from typing import Literal
from uuid import uuid4

import pytest

from s3q import Queue, QueueConfig, State
from s3q.records import INLINE_MAX
from s3q.store import list_all
from s3q.worker import Worker, WorkerOptions
from tests.s3server import MakeS3Store, S3Endpoint


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
@pytest.mark.parametrize("size", [2, INLINE_MAX + 1], ids=["inline", "large"])
def test_a_burst_leaves_an_archived_request_and_processes_the_rest(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store, caplog: pytest.LogCaptureFixture,
        storage_class: Literal["GLACIER", "DEEP_ARCHIVE"], size: int) -> None:
    prefix = f"t/{uuid4().hex}"
    client = s3_endpoint.client()
    body = b"x" * size
    client.put_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/wait/cold_request.json",
                      Body=body, StorageClass=storage_class)  # (another client's upload)
    q = Queue(make_s3_store(prefix=prefix), QueueConfig())
    for i in range(3):
        q.submit(f"r{i}_request.json", b"{}")
    done: list[str] = []

    with caplog.at_level(logging.INFO, logger="s3q"):
        stats = Worker(q, lambda job: done.append(job.name),
                       WorkerOptions("w-archived", concurrency=2, burst=True)).run()

    assert sorted(done) == [f"r{i}_request.json" for i in range(3)]
    assert stats.error is None
    assert [i.key for i in q.ls(State.WAIT)] == ["cold_request.json"]  # untouched
    assert not list(list_all(q.store, ".s3q/lease/"))
    assert not list(list_all(q.store, ".s3q/body/"))
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "claim_failed" not in events
    [report] = [r for r in caplog.records if getattr(r, "event", None) == "request_unreadable"]
    assert report.levelno == logging.ERROR
    assert ("InvalidObjectState" if size <= INLINE_MAX else "ObjectNotInActiveTier"
            ) in report.getMessage()
    [left] = [r for r in caplog.records if getattr(r, "event", None) == "burst_left"]
    assert left.request == "cold_request.json"  # type: ignore[attr-defined]

    if not s3_endpoint.is_moto:
        return  # (a real restore takes hours)
    client.restore_object(Bucket=s3_endpoint.bucket, Key=f"{prefix}/wait/cold_request.json",
                          RestoreRequest={"Days": 1})
    again: list[bytes] = []
    stats = Worker(Queue(make_s3_store(prefix=prefix), QueueConfig()),
                   lambda job: again.append(job.read()),
                   WorkerOptions("w-restored", concurrency=1, burst=True)).run()
    assert again == [body]
    assert [i.key for i in q.ls(State.WAIT)] == []


def test_a_bucket_that_does_not_exist_is_the_store_refusing_not_a_request(
        s3_endpoint: S3Endpoint) -> None:
    """S3's answers that hold for every key (NoSuchBucket here; a rejected credential the
    same) are StoreRefused: a claim never takes them for a request of its own."""
    from s3q.backends.s3 import S3Store
    from s3q.store import StoreRefused, of_its_own

    store = S3Store(f"s3q-gone-{uuid4().hex[:12]}", "q", s3_endpoint.options())
    try:
        with pytest.raises(StoreRefused, match="does not exist") as refused:
            store.get("wait/a_request.json")
        assert not of_its_own(refused.value)
    finally:
        store.close()


def test_credentials_gone_between_the_list_and_the_gets_are_no_request_of_its_own(
        s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """botocore finding no credentials to sign with (NoCredentialsError; its credential
    providers failing to refresh them, CredentialRetrievalError, the same) refuses every
    request whatever its key, as S3's ExpiredToken does: the claim that meets it at the
    GETs after its LIST fails (claim_failed), and says no request unreadable nor leaves
    one."""
    from typing import Any

    from s3q.backends.delegating import DelegatingStore
    from s3q.store import Store, StoreRefused

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # (no instance profile either)
    prefix = f"t/{uuid4().hex}"
    store = make_s3_store(prefix=prefix)
    without = make_s3_store(prefix=prefix, access_key_id=None, secret_access_key=None)

    class CredentialsGoneAfterTheList(DelegatingStore):
        def __init__(self, inner: Store, other: Store) -> None:
            super().__init__(inner)
            self.other = other

        def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
            if op in ("get", "open", "head"):  # (the claim's reads of wait/ and .s3q/)
                return getattr(self.other, op)(args["key"])
            return fn()

    Queue(store, QueueConfig()).submit("a_request.json", b"{}")
    q = Queue(CredentialsGoneAfterTheList(store, without), QueueConfig())
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(StoreRefused):
        q.claim("w")
    assert [r for r in caplog.records if getattr(r, "event", None) == "request_unreadable"] == []
    assert q.outlook().left == []
    assert [i.key for i in q.ls(State.WAIT)] == ["a_request.json"]
