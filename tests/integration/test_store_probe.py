"""``s3q doctor``'s probe on a real S3 server: moto; moto without its request lock
(``S3Q_MOTO_ATOMIC=0``), whose conditional PUTs check and then write; and moto behind
tests/storeproxy.py breaking one guarantee at a time."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from uuid import uuid4

import pytest

from s3q.backends.s3 import S3Store
from s3q.cli.doctor import require_store
from s3q.context import QueueConfig
from s3q.doctor import PROBE, RESULT, Report, probe
from s3q.guarantees import MISSING, OK, ROWS
from s3q.queue import Queue
from s3q.store import PreconditionFailed, list_all
from s3q.storecheck import check_store
from tests.contract.large import open_uploads
from tests.s3server import S3Endpoint, running_moto
from tests.storeproxy import Behaviour, StoreProxy

REQUIRED = [name for name, r in ROWS.items() if r.required]


def rows(report: Report) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.observed) for c in report.checks}


def s3_store(endpoint: S3Endpoint, url: str | None = None) -> S3Store:
    options = endpoint.options(endpoint_url=url or endpoint.endpoint_url)
    return S3Store(endpoint.bucket, f"probe/{uuid4().hex}", options)


@pytest.fixture
def moto(s3_endpoint: S3Endpoint) -> S3Endpoint:
    if not s3_endpoint.is_moto:
        pytest.skip("these tests know what moto does")
    return s3_endpoint


@pytest.fixture(scope="module")
def racy_moto() -> Iterator[S3Endpoint]:
    """A second moto server without the lock tests/s3server.py gives moto's requests, and
    with time between the check of a conditional PUT and its write (a store that looks a
    key up, then writes it: SeaweedFS, seaweedfs issue 8800)."""
    with _moto({"S3Q_MOTO_ATOMIC": "0", "S3Q_MOTO_RACE_WINDOW": "0.2"}) as endpoint:
        yield endpoint


@contextlib.contextmanager
def _moto(env: dict[str, str]) -> Iterator[S3Endpoint]:
    """A moto server of its own, started with ``env``, outside any AWS configuration."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        with running_moto(env) as endpoint:
            yield endpoint


def probe_through(moto: S3Endpoint, behaviour: Behaviour) -> Report:
    assert moto.endpoint_url
    proxy = StoreProxy(moto.endpoint_url, behaviour)
    store = s3_store(moto, proxy.url)
    try:
        return probe(store)
    finally:
        store.close()
        proxy.close()


def test_moto_gives_every_required_guarantee(moto: S3Endpoint) -> None:
    store = s3_store(moto)
    report = probe(store)
    found = rows(report)
    assert report.ok, [c for c in report.checks if c.status != OK]
    assert {name: found[name][0] for name in REQUIRED} == dict.fromkeys(REQUIRED, OK)
    # moto ignores both CopyObject conditions: reported, not required
    assert found["copy_source_if_match"][0] == found["copy_if_none_match"][0] == MISSING
    # but honours CompleteMultipartUpload's If-None-Match, as AWS does
    assert found["multipart_if_none_match"] == (OK, "a copy in one part: refused (412) over "
                                                "an existing key, accepted over a missing one")
    assert found["etags"] == (OK, "md5: equal bytes get equal ETags (the MD5 of the bytes)")
    assert found["versioning"] == (OK, "never enabled")
    caps = report.capabilities
    assert (caps.create_if_absent, caps.compare_and_swap, caps.conditional_delete,
            caps.ordered_listing, caps.copy_if_none_match, caps.etags, caps.conflict_409,
            caps.versioning) == (True, True, True, True, False, "md5", False, False)
    assert list(list_all(store, PROBE)) == []  # cleaned up
    assert open_uploads(moto, store) == []  # the refused upload was aborted


def test_moto_without_atomic_conditional_writes_is_caught(racy_moto: S3Endpoint) -> None:
    for _ in range(2):  # not by luck
        report = probe(s3_store(racy_moto))
        found = rows(report)
        for name in ("create_if_absent", "compare_and_swap"):
            status, seen = found[name]
            assert status == MISSING and "concurrent writes won in round 1" in seen, seen
        assert not report.ok
        assert report.capabilities.create_if_absent is False


@pytest.mark.parametrize(("behaviour", "missing", "seen"), [
    (Behaviour(ignore_delete_if_match=True), "conditional_delete",
     "DELETE If-Match with a stale ETag deleted the object (If-Match ignored)"),
    (Behaviour(missing_delete_204=True), "conditional_delete",
     "DELETE If-Match of a missing key was accepted (204), not 404 NotFound"),
    (Behaviour(ignore_put_if_match=True), "compare_and_swap",
     "PUT If-Match with a stale ETag was accepted: the object was overwritten"),
    (Behaviour(deny=frozenset({"DeleteObject"})), "permission.delete", "AccessDenied"),
    (Behaviour(deny=frozenset({"CopyObject"})), "permission.copy", "AccessDenied"),
], ids=["ignored-delete-if-match", "missing-delete-204", "ignored-put-if-match",
        "denied-delete", "denied-copy"])
def test_a_broken_guarantee_is_missing(moto: S3Endpoint, behaviour: Behaviour, missing: str,
                                       seen: str) -> None:
    report = probe_through(moto, behaviour)
    status, observed = rows(report)[missing]
    assert status == MISSING and seen in observed, observed
    assert not report.ok and [c.name for c in report.missing] == [missing]


def test_a_store_ignoring_if_none_match_on_completing_an_upload_is_told_yet_ok(
        moto: S3Endpoint) -> None:
    """AWS before November 2024: a create-if-absent copy over 5 GiB (in parts) overwrites
    what is there. Shown by a copy in one part; not required (only requests over 5 GiB
    need it): ``s3q doctor`` exits 0 and a worker starts, the row MISSING in its report."""
    assert moto.endpoint_url
    proxy = StoreProxy(moto.endpoint_url, Behaviour(ignore_complete_if_none_match=True))
    store = s3_store(moto, proxy.url)
    try:
        report = probe(store)
        assert rows(report)["multipart_if_none_match"] == (
            MISSING, "CompleteMultipartUpload If-None-Match: * over an existing key was "
            "accepted: the object was replaced")
        assert proxy.counts["ignored if-none-match"] == 2  # both copies' completions
        assert report.ok and not report.missing
        assert list(list_all(store, PROBE)) == [] and open_uploads(moto, store) == []
        found = check_store(store, max_age=0)  # the worker's start-up check
        assert found.report is not None and not found.missing and not found.unknown
        assert rows(found.report)["multipart_if_none_match"][0] == MISSING
        assert [i.key for i in list_all(store, PROBE)] == [RESULT]  # cached: it may start
    finally:
        store.close()
        proxy.close()


def test_a_worker_starts_on_such_a_store_with_a_warning(
        moto: S3Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    """The row is not required, but unlike the other rows a worker does without, nothing
    stands in for it: the worker's start-up check says so, once, at every start (a result
    cached before the probe existed is probed again: ``storecheck.PROBES``). On a store
    that honours it, nothing is said."""
    assert moto.endpoint_url
    proxy = StoreProxy(moto.endpoint_url, Behaviour(ignore_complete_if_none_match=True))
    ignoring, honouring = s3_store(moto, proxy.url), s3_store(moto)
    try:
        for store in (ignoring, honouring):
            with caplog.at_level(logging.WARNING, logger="s3q"):
                require_store(Queue(store, QueueConfig()), max_age=0)
    finally:
        ignoring.close()
        honouring.close()
        proxy.close()
    warned = [r for r in caplog.records if getattr(r, "event", "") == "store_check_at_risk"]
    assert [getattr(r, "check", "") for r in warned] == ["multipart_if_none_match"]
    assert "multipart create-if-absent is MISSING" in warned[0].getMessage()
    assert "keep requests under 5 GiB" in warned[0].getMessage()


def test_opaque_etags_are_reported_and_ok(moto: S3Endpoint) -> None:
    report = probe_through(moto, Behaviour(opaque_etags=True))
    assert report.ok, [c for c in report.checks if c.status != OK]
    assert rows(report)["etags"][1].startswith("opaque: every write of the same bytes")
    assert report.capabilities.etags == "opaque"


def test_409_conflicts_are_reported_and_ok(moto: S3Endpoint) -> None:
    report = probe_through(moto, Behaviour(conflicts=0.3))
    assert report.ok, [c for c in report.checks if c.status != OK]
    status, seen = rows(report)["conflict_409"]
    assert status == OK and "answered 409 ConditionalRequestConflict" in seen
    assert report.capabilities.conflict_409 is True


def test_the_worker_check_sets_the_stores_capabilities_and_caches_them(
        moto: S3Endpoint) -> None:
    """The first start probes and caches; the next one reads the cache (no PUT) and gets
    the same capabilities."""
    store = s3_store(moto)
    found = check_store(store, max_age=3600)
    assert found.report is not None and not found.missing and not found.cached
    assert store.capabilities == found.report.capabilities
    assert store.capabilities.create_if_absent is True
    assert [i.key for i in list_all(store, PROBE)] == [RESULT]  # the cache, nothing else
    again = S3Store(moto.bucket, store.prefix, moto.options())  # the next start
    before = again.snapshot_counts()[0]["PutObject"]
    cached = check_store(again, max_age=3600)
    assert cached.cached and again.capabilities == found.report.capabilities
    assert again.snapshot_counts()[0]["PutObject"] == before


def test_moto_here_honours_each_etag_in_deleteobjects_as_aws_does(moto: S3Endpoint) -> None:
    """(tests/s3server.py: moto's own DeleteObjects ignores them.)"""
    report = probe(s3_store(moto), full=False)
    assert rows(report)["batch_conditional_delete"][0] == OK
    assert report.capabilities.batch_conditional_delete is True


@pytest.fixture(scope="module")
def moto_as_is() -> Iterator[S3Endpoint]:
    """A moto server whose DeleteObjects ignores each object's ETag (moto's own)."""
    with _moto({"S3Q_MOTO_BATCH_ETAGS": "0"}) as endpoint:
        yield endpoint


def test_a_store_ignoring_etags_in_deleteobjects_gets_one_delete_a_key(
        moto_as_is: S3Endpoint) -> None:
    """The worker's start-up check finds it; the store then never sends DeleteObjects, and
    a stale ETag is refused (by DeleteObject's If-Match) as it should be."""
    store = s3_store(moto_as_is)
    found = check_store(store, max_age=0)
    assert found.report is not None and not found.missing
    assert rows(found.report)["batch_conditional_delete"] == (
        MISSING, "DeleteObjects deleted an object whose ETag was stale (the ETag ignored)")
    assert store.capabilities.batch_conditional_delete is False
    a, b = store.put("a", b"1").etag, store.put("b", b"2").etag
    before = store.snapshot_counts()[0]
    results = store.delete_batch([("a", a), ("b", a)])
    sent = store.snapshot_counts()[0] - before
    assert sent == {"DeleteObject": 2}
    assert results[0] is None and isinstance(results[1], PreconditionFailed)
    assert store.head("b").etag == b
