"""A request in wait/ this worker may not read: its GET (or a large one's COPY) refused with
an error of its own, not an outage (on S3: an archived storage class, InvalidObjectState;
SSE-C; another account's object), or its lease's GET. The claim raised on it, every time:
each claim that met it failed as if the store were down ("claim failed"), and a `--burst`
worker never ended while it sat in wait/. It is now skipped (60 s, doubling up to an hour),
said once as an ERROR (`request_unreadable`), the claim goes on with the next request, and
a burst leaves it (`burst_left`). The same on moto's S3 with a GLACIER object:
tests/integration/test_bad_input.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.records import INLINE_MAX, Lease
from s3q.store import StoreError, StoreRefused, list_all, of_its_own
from s3q.waitwalk import UNREADABLE_RETRY, UNREADABLE_RETRY_MAX
from s3q.worker import Worker, WorkerOptions
from tests.unit.harness import Denies, FakeClock

COLD = "wait/a_request.json"
T = TypeVar("T")


def queue(ops: tuple[str, ...] = ("get",), body: bytes = b"{}"
          ) -> tuple[Queue, Denies, FakeClock]:
    """a (unreadable) and b waiting; page size 1: a is always met first."""
    clock = FakeClock()
    mem = MemoryStore("unreadable", clock=clock)
    q = Queue(mem, QueueConfig())
    q.submit("a_request.json", body)
    q.submit("b_request.json", b"{}")
    denied = Denies(mem, [COLD], ops)
    return Queue(denied, QueueConfig(page_size=1)), denied, clock


def reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "request_unreadable"]


def test_a_claim_goes_past_a_request_it_may_not_read_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    q, _, _ = queue()
    with caplog.at_level(logging.DEBUG, logger="s3q"):
        job = q.claim("w")
        assert job is not None and job.name == "b_request.json"
        job.complete()
        assert q.claim("w") is None  # a is skipped, not tried again at once
    [report] = reports(caplog)
    assert report.levelno == logging.ERROR
    assert report.request == "a_request.json"  # type: ignore[attr-defined]
    assert "AccessDenied: GetObject wait/a_request.json" in report.getMessage()
    assert "stays in wait/" in report.getMessage()
    assert [i.key for i in q.ls("wait")] == ["a_request.json"]
    assert not list(list_all(q.store, ".s3q/lease/"))


def test_it_is_tried_again_later_and_less_often_and_claimed_once_readable(
        caplog: pytest.LogCaptureFixture) -> None:
    q, denied, clock = queue()
    with caplog.at_level(logging.DEBUG, logger="s3q"):
        job = q.claim("w")
        assert job is not None
        job.complete()
        waits = []
        for _ in range(8):
            clock.advance(UNREADABLE_RETRY_MAX + 1)  # (every skip has run out)
            assert q.claim("w") is None
            waits.append(reports(caplog)[-1].seconds)  # type: ignore[attr-defined]
        assert waits == [min(UNREADABLE_RETRY * 2 ** i, UNREADABLE_RETRY_MAX)
                         for i in range(1, 9)]
        assert [r.levelno for r in reports(caplog)] == [logging.ERROR] + [logging.DEBUG] * 8
        clock.advance(UNREADABLE_RETRY_MAX + 1)
        denied.keys.clear()  # restored (or access granted)
        job = q.claim("w")
        assert job is not None and job.name == "a_request.json"
        job.complete()
    assert q.outlook().left == []


def test_new_bytes_under_the_name_are_tried_at_once(caplog: pytest.LogCaptureFixture) -> None:
    q, denied, _ = queue()
    with caplog.at_level(logging.ERROR, logger="s3q"):
        job = q.claim("w")
        assert job is not None
        job.complete()
        q.submit("a_request.json", b'{"again": 1}')  # uploaded again, readable
        denied.keys.clear()
        job = q.claim("w")
    assert job is not None and job.read() == b'{"again": 1}'


def test_a_large_request_whose_copy_is_refused_gives_its_lease_up(
        caplog: pytest.LogCaptureFixture) -> None:
    q, _, _ = queue(ops=("copy",), body=b"x" * (INLINE_MAX + 1))
    with caplog.at_level(logging.ERROR, logger="s3q"):
        job = q.claim("w")
        assert job is not None and job.name == "b_request.json"
        job.complete()
    [report] = reports(caplog)
    assert "AccessDenied: CopyObject wait/a_request.json" in report.getMessage()
    assert [i.key for i in q.ls("wait")] == ["a_request.json"]
    assert not list(list_all(q.store, ".s3q/lease/"))  # its lease given up
    assert not list(list_all(q.store, ".s3q/body/"))  # and its private copy


def test_a_request_whose_lease_it_may_not_read_is_passed_over(
        caplog: pytest.LogCaptureFixture) -> None:
    """Another worker holds a's lease, which this process may not read (written with a KMS
    key it is not granted): c1 is refused (412), and the read of the lease found is too."""
    clock = FakeClock()
    mem = MemoryStore("unreadable", clock=clock)
    q = Queue(mem, QueueConfig())
    q.submit("a_request.json", b"{}")
    q.submit("b_request.json", b"{}")
    leases_of_a = ".s3q/lease/a_request.json"
    # the lease exists, wait/a too: another worker between its c1 and its c2
    mem.put(leases_of_a, Lease(name="a_request.json", worker="other", claim="c", gen=1,
                               seq=0, attempt=1, src=None, body_b64=Lease.encode(b"{}"),
                               body_key=None, size=2, written_at=clock()).to_bytes())
    mine = Queue(Denies(mem, [leases_of_a]), QueueConfig(page_size=1))
    with caplog.at_level(logging.ERROR, logger="s3q"):
        job = mine.claim("w")
    assert job is not None and job.name == "b_request.json"
    [report] = reports(caplog)
    assert "its lease cannot be read (AccessDenied: GetObject .s3q/lease/a_request.json)" \
        in report.getMessage()


def test_a_burst_leaves_a_request_it_may_not_read(caplog: pytest.LogCaptureFixture) -> None:
    q, _, _ = queue()
    with caplog.at_level(logging.INFO, logger="s3q"):
        stats = Worker(q, lambda job: None,
                       WorkerOptions("w-burst", concurrency=2, burst=True)).run()
    assert stats.completed == 1
    assert [i.key for i in q.ls("wait")] == ["a_request.json"]
    [left] = [r for r in caplog.records if getattr(r, "event", None) == "burst_left"]
    assert left.request == "a_request.json"  # type: ignore[attr-defined]
    assert left.reason.startswith(  # type: ignore[attr-defined]
        "cannot be claimed: AccessDenied: GetObject wait/a_request.json")


def test_a_named_request_it_may_not_even_look_at_is_passed_over(
        caplog: pytest.LogCaptureFixture) -> None:
    """An S3 event names a request whose HEAD is refused too (SSE-C: S3 answers a HEAD
    without the customer's key 400): the claim goes on with what wait/ lists."""
    q, _, _ = queue(ops=("get", "head"))
    q.offer(["a_request.json"])
    with caplog.at_level(logging.ERROR, logger="s3q"):
        job = q.claim("w")
    assert job is not None and job.name == "b_request.json"
    # (said for the HEAD the name led to, then for the GET of the listing that found it)
    assert ["AccessDenied: HeadObject wait/a_request.json" in r.getMessage()
            for r in reports(caplog)] == [True, False]
def test_a_full_local_disk_is_no_request_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The local store's disk has room for a lease (c1) but not for a large request's
    private copy (c1b): ENOSPC is the store's, not the request's. It was taken for a request
    this worker may not read: an ERROR telling to restore an archived object, the request
    skipped for 60 s doubling up to an hour, and a burst left it and ended (exit 0)."""
    import errno
    import os

    from s3q.backends.local import LocalStore

    q = Queue(LocalStore(str(tmp_path)), QueueConfig())
    q.submit("a_request.json", b"x" * (INLINE_MAX + 1))
    free, write = [4096], os.write

    def nearly_full(fd: int, data: bytes) -> int:  # (4 KiB free: a lease fits, a copy not)
        if len(data) > free[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        free[0] -= len(data)
        return write(fd, data)

    monkeypatch.setattr(os, "write", nearly_full)
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(StoreError,
                                                                      match="no space left"):
        q.claim("w")  # (a claim that failed, as the store failing: claim_failed)
    monkeypatch.undo()
    assert reports(caplog) == []
    assert q.outlook().left == []  # (its lease is waited for: its takeover claims it)


class RefusesEverything(DelegatingStore):
    """From now on the store refuses every GET and HEAD whatever the key (the worker's
    credentials expired, or were revoked: S3's ExpiredToken, InvalidAccessKeyId)."""

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op in ("get", "head"):
            raise StoreRefused(f"S3 rejected the credentials (ExpiredToken) for {op}")
        return fn()


def test_a_store_refusing_every_request_is_no_request_of_its_own(
        caplog: pytest.LogCaptureFixture) -> None:
    """Credentials rejected between the LIST and the GETs are the store's refusal, not each
    request's: the claim fails as it did before 8730c82 (claim_failed), and no request is
    said unreadable nor skipped (an ERROR for each of up to two pages of them, each skipped
    60 s doubling, and a burst leaving them all with exit 0)."""
    mem = MemoryStore("refused")
    Queue(mem, QueueConfig()).submit("a_request.json", b"{}")
    q = Queue(RefusesEverything(mem), QueueConfig())
    q.offer(["a_request.json"])  # (the HEAD of a named request too)
    with caplog.at_level(logging.DEBUG, logger="s3q"), pytest.raises(
            StoreRefused, match="rejected the credentials"):
        q.claim("w")
    assert reports(caplog) == []
    assert q.outlook().left == []


@pytest.mark.parametrize(("code", "status", "refused"), [
    ("ExpiredToken", 400, True), ("InvalidAccessKeyId", 403, True),
    ("RequestTimeTooSkewed", 403, True), ("NoSuchBucket", 404, True),
    ("AccessDenied", 403, False), ("InvalidObjectState", 403, False),
    ("ObjectNotInActiveTierError", 403, False), ("InvalidRequest", 400, False),
])
def test_s3_answers_that_hold_for_every_key_are_the_store_refusing(
        code: str, status: int, refused: bool) -> None:
    """S3's error answers as the S3 store translates them: those about every key (rejected
    credentials, this host's clock too far off S3's, no such bucket) are StoreRefused, never
    taken by a claim for a request of its own; those about one object (denied, archived,
    SSE-C's InvalidRequest) are."""
    from botocore.exceptions import ClientError

    from s3q.backends.s3wire import translate

    answer = ClientError({"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {
        "HTTPStatusCode": status, "HTTPHeaders": {}, "HostId": "", "RequestId": "",
        "RetryAttempts": 0}}, "GetObject")
    error = translate(answer, "GetObject", "s3://b/q/wait/a", bucket="b", endpoint="e")
    assert isinstance(error, StoreRefused) is refused
    assert of_its_own(error) is not refused
