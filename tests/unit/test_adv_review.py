"""Adversarial review of the round since b6af9aa: each test reproduces one finding."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from s3q import layout
from s3q.backends.local import LocalStore
from s3q.store import StoreError
from tests.unit.world import ETAG_MODES, EtagMode, World


# ---------------------------------------------------------------------- deferred view
@pytest.mark.parametrize("etags", ETAG_MODES)
def test_deferred_view_written_ambiguously_does_not_rerun_a_completed_request(
        etags: EtagMode) -> None:
    """The deferred c3 (Job.write_view, from the lease keeper) takes effect but is reported
    as failed (PROTOCOL §2.3). The keeper logs it and the job carries on without recording
    the view: complete's d4 has no ETag to delete, d5 deletes the lease, and the view is
    left in processing/ with no lease. The next scan adopts it as an orphan and releases it
    to wait/: the completed request runs again (invariant 2)."""
    w = World(etags=etags)
    w.submit("a")
    q, store = w.queue(worker=1)
    job = q.claim("A", view_after=1.0)
    assert job is not None and job.view_due is not None
    w.ran(job.name, "A", job.attempt, job.read())
    store.ambiguous[len(store.ops) + 1] = "raise"  # the view's PUT!: effect, then an error
    with pytest.raises(StoreError):
        job.write_view()  # what the lease keeper's _view does (it logs the error)
    job.complete()
    w.expire()
    w.drain()  # a healthy fleet: its scan finds processing/a and no lease
    assert w.runs("a") == 1, w.handled
    w.check_settled()


# ---------------------------------------------------------------------- local store
def _store(tmp_path: Path, n: int) -> LocalStore:
    store = LocalStore(tmp_path / "q", settle=0)
    for i in range(n):
        store.put(f"wait/r{i:02d}", b"x")
    return store


def test_local_listing_is_not_cut_short_by_a_symlink_through_a_file(tmp_path: Path) -> None:
    """A dangling symlink in wait/ whose target goes through a file (``ln -s r00/x bad``):
    stat gives ENOTDIR, which ``_entries`` takes for "the directory is gone" and stops
    reading wait/: every entry after it (in directory order) is never listed, silently,
    and those requests are never claimed."""
    store = _store(tmp_path, 50)
    os.symlink("r00/x", tmp_path / "q" / "wait" / "bad")
    keys = [i.key for i in store.list_page(layout.WAIT).items]
    assert len(keys) == 50, keys


def test_local_listing_survives_a_symlink_loop(tmp_path: Path) -> None:
    """A symlink loop in wait/ (``ln -s loop loop``): ELOOP makes every listing of wait/
    raise StoreError: no worker claims anything any more."""
    store = _store(tmp_path, 5)
    os.symlink("loop", tmp_path / "q" / "wait" / "loop")
    keys = [i.key for i in store.list_page(layout.WAIT).items]
    assert len(keys) == 5, keys


# ---------------------------------------------------------------------- store check cache
def test_a_doctor_finding_a_guarantee_missing_ends_the_cached_ok(
        ) -> None:
    """A worker's start-up check cached OK (.s3q/probe/result, trusted 24 h by default).
    The store then loses a guarantee (a server downgrade, a proxy put in front, the bucket
    moved to another server). The operator runs ``s3q doctor``: MISSING, "a worker refuses
    to start on a store with a required guarantee MISSING". But the cached OK is left in
    place, and every worker that starts within probe_max_age reads it and runs on the
    unsafe store."""
    from s3q.backends.memory import MemoryStore
    from s3q.doctor import probe
    from s3q.storecheck import check_store
    from tests.unit.test_doctor import IgnoresDeleteIfMatch, Unprobed

    mem = MemoryStore("server")
    assert check_store(Unprobed(mem), max_age=86400).report is not None
    broken = IgnoresDeleteIfMatch(mem)  # the same bucket, now without DELETE If-Match
    assert not probe(broken).ok  # s3q doctor: NOT SAFE
    found = check_store(broken, max_age=86400)
    assert [c.name for c in found.missing] == ["conditional_delete"], found


def test_a_cached_ok_of_another_endpoint_is_not_trusted() -> None:
    """The cache is matched by the store's URL, ``s3://bucket/prefix``, which names no
    endpoint: a bucket mirrored from AWS to a MinIO or radosgw (rclone, mc mirror: the
    .s3q/ objects come along) under the same name is taken for the store that was probed,
    for up to probe_max_age."""
    from s3q.backends.memory import MemoryStore
    from s3q.doctor import RESULT
    from s3q.storecheck import check_store
    from tests.unit.test_doctor import IgnoresDeleteIfMatch, Unprobed

    class At:
        endpoint: str

    class Aws(Unprobed, At):
        endpoint = "https://s3.eu-west-1.amazonaws.com"

    class Minio(IgnoresDeleteIfMatch, At):
        endpoint = "http://minio.internal:9000"

    aws = Aws(MemoryStore("bucket"))
    check_store(aws, max_age=86400)
    minio = Minio(MemoryStore("bucket"))
    minio.put(RESULT, aws.get(RESULT)[0])  # mirrored with the bucket
    found = check_store(minio, max_age=86400)
    assert [c.name for c in found.missing] == ["conditional_delete"], found


def _producer_mv(root: Path, key: str, data: bytes) -> None:
    """A producer's ``mv`` into the store: another program, which takes no s3q lock."""
    staged = root / "staged"
    staged.write_bytes(data)
    os.replace(staged, root / key)


def test_local_conditional_delete_never_deletes_a_resubmission(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """c2 (``DEL=E wait/NAME``) on the local store checks the ETag, then unlinks: two steps
    that exclude s3q's processes (the stripe lock) but not a producer's ``mv`` (PROTOCOL
    §2.5: re-submissions at any moment). A re-submission landing between them is deleted
    by a condition naming the object it replaced: lost (S3 checks and deletes in one
    step and answers 412)."""
    store = LocalStore(tmp_path / "q", settle=0)
    first = store.put("wait/a", b"first").etag
    target = str(tmp_path / "q" / "wait" / "a")
    real_unlink, real_rename = os.unlink, os.rename
    raced: list[str] = []

    def resubmit_first(path: object) -> None:  # once the ETag was checked, as it goes
        if str(path) == target and not raced:
            raced.append(target)
            _producer_mv(tmp_path / "q", "wait/a", b"second")

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        resubmit_first(path)
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    def rename(src: str, dst: str, *args: object, **kwargs: object) -> None:
        resubmit_first(src)
        real_rename(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(StoreError):  # PreconditionFailed: wait/a is not `first` any more
        store.delete("wait/a", if_match=first)
    monkeypatch.undo()
    assert raced
    assert store.get("wait/a")[0] == b"second"


def test_local_create_if_absent_never_replaces_a_resubmission(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """w1 / r2 (``PUT! wait/NAME``, a view) on the local store checks that the key is
    absent, then renames its temp file over it: a producer's ``mv`` of a new request
    landing between the two is overwritten by the view (S3 answers 412 and keeps it), and
    the re-submission is lost: the view is deleted with its own ETag once its lease's
    request is claimed."""
    store = LocalStore(tmp_path / "q", settle=0)
    real = store._exists

    def absent_then_resubmitted(path: str) -> bool:
        found = real(path)
        _producer_mv(tmp_path / "q", "wait/a", b"resubmitted")
        return found

    monkeypatch.setattr(store, "_exists", absent_then_resubmitted)
    (tmp_path / "q" / "wait").mkdir(parents=True, exist_ok=True)
    with pytest.raises(StoreError):  # PreconditionFailed: wait/a exists now
        store.put("wait/a", b"view", if_none_match=True)
    monkeypatch.undo()
    assert store.get("wait/a")[0] == b"resubmitted"


# ---------------------------------------------------------------------- scanner role
@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_due_retry_without_its_view_reaches_idle_workers_while_the_scanner_is_busy(
        etags: EtagMode) -> None:
    """A request waits for its retry in its lease; its view in wait/ was removed (an
    operator's ``aws s3 rm``, a stale c2, the seed's reset). Only the scan can find it, and
    it hands it by name to the scanner's own claimer: while the scanner's worker has no
    free slot (long jobs), no other worker ever sees it, idle as they are. It must reach
    every worker (a view restored in wait/)."""
    w = World(etags=etags)
    w.submit("a")
    q0, _ = w.queue(worker=0, seed=0)
    q1, _ = w.queue(worker=1, seed=1)
    assert q0.scan("w0") is not None  # w0 is the fleet's scanner
    job = q0.claim("w0")
    assert job is not None
    job.fail("boom")  # attempt 1 failed: a retry lease, its view in wait/
    w.mem.delete(layout.key(layout.WAIT, "a"))  # the view goes (the lease holds the body)
    claimed = None
    for _ in range(int(20 * q0.config.effective_scan_interval)):  # 100 s
        w.clock.advance(1.0)
        q0.scan("w0")  # w0 scans; its slots are all busy: it claims nothing
        claimed = q1.claim("w1")  # w1 is idle and polls
        if claimed is not None:
            break
    assert claimed is not None and claimed.name == "a", w.state()
    w.ran("a", "w1", claimed.attempt, claimed.read())
    claimed.complete()
    w.check_never_lost()


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_restored_view_the_scanner_died_before_recording_does_not_run_twice(
        etags: EtagMode) -> None:
    """The scanner restores the view of a due retry (t1, w1) and dies before recording it
    (w2): the view is in wait/, unrecorded. The retry's claim (c1') must remove it with
    the recorded one, or it outlives the request and runs it again once it completed."""
    from tests.unit.harness import Crash

    w = World(etags=etags)
    w.submit("a")
    q0, s0 = w.queue(worker=0, seed=0)
    q1, _ = w.queue(worker=1, seed=1)
    assert q0.scan("w0") is not None
    job = q0.claim("w0")
    assert job is not None
    job.fail("boom")
    w.mem.delete(layout.key(layout.WAIT, "a"))

    def crash_after_the_view() -> None:
        w.observe()
        if s0.ops[-1] == "put! wait/a":
            raise Crash("w0 died after w1 of the restore")

    s0.observe = crash_after_the_view
    with pytest.raises(Crash):
        for _ in range(100):
            w.clock.advance(1.0)
            q0.scan("w0")
    claimed = None
    for _ in range(100):  # w0 is dead; w1 takes the role once it expires, and claims
        w.clock.advance(1.0)
        claimed = q1.claim("w1")
        if claimed is not None:
            break
    assert claimed is not None and claimed.name == "a", w.state()
    w.ran("a", "w1", claimed.attempt, claimed.read())
    claimed.complete()
    w.drain()  # must not run a again
    assert w.runs("a") == 1, w.handled
    w.check_settled()


# ---------------------------------------------------------------------- orphans
@pytest.mark.parametrize("etags", ETAG_MODES)
def test_an_orphan_adopted_by_a_stalled_scanner_does_not_run_again(etags: EtagMode) -> None:
    """A request in processing/ with no lease (an orphan: a seed-style worker's, a stale
    c3) is adopted by the scan: GET it, then ``PUT!`` a lease with its bytes. That create
    carries no deadline (there is no lease yet) and nothing after it checks that the orphan
    is still there (a claim has c2 for that). A scanner that stalls between the two while
    another worker adopts the orphan, runs and completes it, resurrects the completed
    request with its late lease: it runs again (found by test_schedules, OpaqueFleet)."""
    import random

    from s3q.backends.delegating import DelegatingStore
    from s3q.queue import Queue
    from tests.unit.world import config

    w = World(etags=etags)
    body = w.next_body("a")
    w.mem.put(layout.key(layout.PROCESSING, "a"), body)  # an orphan, by hand
    w.submissions.append(("a", body))
    w.expire()

    class Stalls(DelegatingStore):
        def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
            if (op == "put" and args.get("if_none_match")
                    and args["key"] == layout.key(layout.LEASES, "a") and not stalled):
                stalled.append(True)  # w0 stops here; the fleet moves on
                w.expire()
                qb, _ = w.queue(seed=5)
                for _ in range(5):
                    job = qb.claim("B")
                    if job is not None:
                        w.ran(job.name, "B", job.attempt, job.read())
                        job.complete()
                        break
                    w.expire()
            return fn()

    stalled: list[bool] = []
    q0 = Queue(Stalls(w.mem), config(), rng=random.Random(0), monotonic=w.clock)
    q0.scan("w0")  # adopts the orphan (its late lease lands after B completed it)
    assert stalled and w.runs("a") == 1
    w.drain()
    assert w.runs("a") == 1, w.handled


# ---------------------------------------------------------------------- the worker's slots
def test_a_claim_raising_something_else_than_a_store_error_does_not_hang_the_worker(
        ) -> None:
    """A slot catches only StoreError around its claim. Anything else (a LeaseLost from the
    dead letter a claim writes for an attempt beyond max_attempts once the claim outlived
    its lease, or any bug) ends the slot's thread silently; when that slot had the idle
    poll turn, the pacer's ``_polling`` flag is never cleared and the worker's other slots
    never claim again: the worker looks alive (registry, scanner role) and claims nothing."""
    import threading
    import time

    from s3q import LeaseLost, Queue, QueueConfig
    from s3q.backends.memory import MemoryStore
    from s3q.worker import Worker, WorkerOptions

    q = Queue(MemoryStore("adv-slots"), QueueConfig(lease_ttl=6.0))
    real_claim = q.claim
    calls: list[int] = []

    def claim(worker_id: str, *, view_after: float = 0.0) -> object:
        calls.append(1)
        if len(calls) == 3:  # the first idle poll
            raise LeaseLost("x: lease was taken over")
        return real_claim(worker_id, view_after=view_after)

    q.claim = claim  # type: ignore[assignment,method-assign]
    done = threading.Event()
    worker = Worker(q, lambda job: done.set(),
                    WorkerOptions("adv-slots-w", concurrency=2, poll_interval=0.3))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        q.submit("a_request.json", b"{}")
        assert done.wait(5), "the worker never claimed the request"
    finally:
        worker.stop()
        worker.stop()
        thread.join(15)


def test_due_retries_left_waiting_cost_the_scan_a_bounded_number_of_requests() -> None:
    """(The fix above.) Due retries whose view is in wait/ but which nobody claims (a
    paused queue, a deep backlog) are looked at once per RECHECK scans, at most page_size
    per scan: not a GET and a HEAD per retry per scan."""
    from s3q.scan import RECHECK

    w = World()
    names = [f"r{i:02d}" for i in range(25)]
    w.submit(*names)
    q0, s0 = w.queue(worker=0)
    q0.scan("w0")
    for _ in names:
        job = q0.claim("w0")
        assert job is not None
        job.fail("boom")
    interval = q0.config.effective_scan_interval
    heads = []
    for _ in range(RECHECK):
        w.clock.advance(interval)
        before = len(s0.ops)
        q0.scan("w0")
        heads.append(sum(1 for op in s0.ops[before:] if op.startswith("head wait/")))
    assert max(heads) <= q0.config.page_size and sum(heads) <= len(names), heads
    assert all(w.keys(layout.WAIT) >= {n} for n in names)  # every view is still there


# ---------------------------------------------------------------------- listing on S3
def test_a_listed_key_that_is_no_valid_name_does_not_wedge_the_claim_cursor(
        make_s3_store: Any, s3_endpoint: Any) -> None:
    """S3 keys may hold what s3q names may not (a backslash from a Windows tool, a ``..``
    segment, a control character). Such a key in wait/ is listed (and never claimed). When
    it is the last key of a truncated page, the claimer's cursor becomes that key, and the
    next LIST sends it as StartAfter, which the S3 backend refuses (InvalidKey) before
    sending: every later claim of the worker fails the same way, and the requests after it
    are never claimed. (list_all, used by the scan, status and the dashboard, the same.)"""
    from s3q import Queue, QueueConfig
    from s3q.store import list_all

    store = make_s3_store()
    q = Queue(store, QueueConfig(page_size=3))
    for name in ("a", "b", "z"):
        q.submit(name, b"x")
    s3_endpoint.client().put_object(Bucket=s3_endpoint.bucket,
                                    Key=f"{store.prefix}/wait/m\\x", Body=b"x")
    claimed: set[str] = set()
    for _ in range(10):
        try:
            job = q.claim("w")
        except StoreError:
            continue  # (a worker logs "claim failed" and polls again)
        if job is not None:
            claimed.add(job.name)
            job.complete()
    assert claimed == {"a", "b", "z"}
    assert len(list(list_all(store, layout.WAIT, page_size=1))) == 1  # the odd key


# ---------------------------------------------------------------------- events
def test_a_deeply_nested_message_is_malformed_not_a_failure_of_the_event_source() -> None:
    """An SQS message whose body is deeply nested JSON (256 KiB of '[') makes json.loads
    raise RecursionError, which parse_message does not catch: the event source's round
    fails, the message is never deleted (it comes back every VISIBILITY seconds for the
    queue's whole retention, each time making the source unhealthy and dropping the rest
    of its batch), instead of being logged and deleted as malformed."""
    from s3q import Queue
    from s3q.backends.delegating import DelegatingStore
    from s3q.backends.memory import MemoryStore
    from s3q.events import EventSource
    from s3q.sqs import Message, QueueRef

    class OnS3(DelegatingStore):
        bucket = "b"
        prefix = ""

    class Sqs:
        ref = QueueRef("q")

        def __init__(self) -> None:
            self.batches = [[Message("poison", "[" * 200_000, 1),
                             Message("ok", '{"Records": [{"eventName": "ObjectCreated:Put",'
                                           ' "s3": {"bucket": {"name": "b"}, "object": '
                                           '{"key": "wait/a"}}}]}', 1)]]
            self.deleted: list[str] = []

        def receive(self, most: int, *, wait: int, visibility: int) -> list[Message]:
            return self.batches.pop(0) if self.batches else []

        def delete(self, receipts: list[str]) -> None:
            self.deleted += receipts

        def hide(self, receipts: list[tuple[str, int]]) -> None:
            pass

    q = Queue(OnS3(MemoryStore("events")))
    sqs = Sqs()
    source = EventSource(q, sqs, "w")  # type: ignore[arg-type]
    source._capacity = lambda: 2
    source._round()
    assert "poison" in sqs.deleted
    assert source.offered("a")


def test_a_request_s3q_may_not_delete_does_not_stop_the_takeover_of_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer of another user made wait/ (or a subdirectory) that the workers may read
    but not write: a claim's c2 on a_request.json fails (permission denied), every time,
    and its lease stays. When it expired, the takeover scan's release of it failed the same
    way, and the scan stopped there: b_request.json, whose worker died, sorts after it and
    was never taken over while a_request.json stayed (a request stuck in flight)."""
    import time

    from s3q.context import QueueConfig
    from s3q.queue import Queue

    root = tmp_path / "q"
    for name in ("a_request.json", "b_request.json"):
        path = root / "wait" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
        old = time.time() - 600
        os.utime(path, (old, old))
    stuck = str(root / "wait" / "a_request.json")
    real = os.rename

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(src) == stuck:  # (root ignores permissions: as a non-root worker sees)
            raise PermissionError(13, "Permission denied", stuck)
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    config = QueueConfig(filter="*request.json")
    dead = Queue(LocalStore(root), config)
    claimed, refused = [], 0
    for _ in range(4):  # (a claim picks among the waiting at random)
        try:
            job = dead.claim("dead")
        except StoreError as e:  # a_request.json: c1, then c2 refused
            assert "permission denied" in str(e)
            refused += 1
            continue
        if job is not None:
            claimed.append(job.name)  # ... and the worker dies
    assert (claimed, refused) == (["b_request.json"], 1)
    for held in (root / ".s3q").rglob("*"):
        old = time.time() - 3600
        os.utime(held, (old, old))  # both leases (and the scanner role) expired long ago
    q = Queue(LocalStore(root), config)
    assert q.scan("w") is not None
    assert (root / "wait" / "b_request.json").exists()  # released to wait/ ...
    found = q.lease("b_request.json")
    assert found is None or found[0].worker != "dead"  # ... and no longer held by the dead
