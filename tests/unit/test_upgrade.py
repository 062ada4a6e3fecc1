"""A queue left by s3q 0.1 (version-1 leases, which hold no body of record) is taken over by
this version without losing or re-running anything: each kind of lease 0.1 wrote."""

from __future__ import annotations

import json

import pytest

from s3q import Queue, QueueConfig, layout
from s3q.backends.memory import MemoryStore
from s3q.records import Intent
from tests.unit.harness import FakeClock
from tests.unit.world import World

NAME = "old/a_request.json"


def v1_lease(world: World, *, intent: str, where: str, attempt: int = 1, attempts: int = 0,
             worker: str = "old-worker", on_finish: str = "move") -> bytes:
    """Put the request (as 0.1 left it) at ``where`` and a version-1 lease beside it."""
    world.submit(NAME)
    body = world.mem.get(layout.key(layout.WAIT, NAME))
    if where != layout.WAIT:
        world.mem.copy(layout.key(layout.WAIT, NAME), layout.key(where, NAME))
        world.mem.delete(layout.key(layout.WAIT, NAME))
    world.mem.put(layout.key(layout.LEASES, NAME), json.dumps({
        "v": 1, "name": NAME, "worker": worker, "claim": "0" * 32, "gen": 1, "seq": 3,
        "attempt": attempt, "etag": body[1].etag, "intent": intent, "written_at": 0.0,
        "on_finish": on_finish, "result_b64": None, "attempts": attempts, "not_before": 0.0,
        "error": None}).encode())
    return body[0]


def test_a_held_version_1_lease_of_a_dead_worker_is_taken_over() -> None:
    world = World()
    v1_lease(world, intent="held", where=layout.PROCESSING)
    world.expire()
    world.drain()
    world.check_settled()
    assert world.runs(NAME) == 1 and world.handled[0][2] == 2  # its crashed attempt counted


def test_a_version_1_retry_keeps_its_attempt_count() -> None:
    world = World(max_attempts=5)
    v1_lease(world, intent="retry", where=layout.WAIT, attempt=2, attempts=2)
    q, _ = world.queue()
    assert q.claim("new") is None  # not claimed by a 0.2 claim: the scan migrates it first
    world.expire()
    q.scan("new")
    lease = world.lease(NAME)
    assert lease is not None and lease.version == 2 and lease.body is not None
    assert lease.intent is Intent.RETRY and lease.attempts == 2
    world.drain()
    world.check_settled()
    assert [h[2] for h in world.handled] == [3]


def test_a_version_1_done_lease_is_rolled_forward_not_run_again() -> None:
    world = World()
    v1_lease(world, intent="done", where=layout.PROCESSING)
    world.expire()
    world.drain()
    world.check_settled()
    assert world.runs(NAME) == 0


def test_a_done_lease_with_an_on_finish_this_version_does_not_know_keeps_the_request() -> None:
    """A later s3q may add a way to finish ("archive"): this one, rolling such a lease
    forward, keeps the request in finish/ (as "move") rather than delete what it does not
    know it may."""
    world = World()
    body = v1_lease(world, intent="done", where=layout.PROCESSING, on_finish="archive")
    world.expire()
    world.drain()
    assert world.runs(NAME) == 0
    assert world.mem.get(layout.key(layout.FINISH, NAME))[0] == body
    assert not world.keys(layout.LEASES) and not world.keys(layout.PROCESSING)


def test_a_version_1_lease_whose_request_is_gone_is_dropped() -> None:
    world = World()
    v1_lease(world, intent="held", where=layout.PROCESSING)
    world.mem.delete(layout.key(layout.PROCESSING, NAME))  # an operator moved it away
    world.submissions.clear()
    world.expire()
    world.drain()
    assert not world.keys(layout.LEASES) and world.runs(NAME) == 0


def test_a_lease_with_a_field_of_a_later_version_is_read_not_taken_for_corrupt() -> None:
    """A fleet being upgraded: a later s3q adds a field to its version-2 leases. This one
    reads such a lease as the lease it is (its holder, its body of record), where a record
    it could not decode would be taken for corrupt and held by nobody."""
    from s3q.records import Lease

    world = World()
    world.submit(NAME)
    q, _ = world.queue()
    job = q.claim("new-worker")
    assert job is not None
    key = layout.key(layout.LEASES, NAME)
    data = json.loads(world.mem.get(key)[0])
    data["priority"] = 5  # a field this version does not know
    world.mem.put(key, json.dumps(data).encode())
    lease = Lease.from_bytes(world.mem.get(key)[0])
    assert (lease.worker, lease.claim, lease.body) == ("new-worker", job.lease.claim,
                                                      job.read())
    found = q.lease(NAME)
    assert found is not None and found[0].worker == "new-worker"


def test_a_lease_with_a_field_of_the_wrong_type_is_corrupt_and_stops_no_scan() -> None:
    """A lease edited by hand ("gen": "1") is a corrupt record, taken over as held by
    nobody, where the takeover scan raised on it at every scan, and so took over nothing
    else: every other dead worker's request stayed in flight."""
    from s3q.records import _LEASE_TYPES, Lease, RecordError

    assert set(_LEASE_TYPES) == {f for f in Lease.__dataclass_fields__} - {"intent", "version"}
    _, store, clock, config = _claimed_by_a_dead_worker("a_request.json", "b_request.json")
    key = layout.key(layout.LEASES, "a_request.json")  # listed first
    data = json.loads(store.get(key)[0])
    data["gen"] = "1"
    store.put(key, json.dumps(data).encode())
    with pytest.raises(RecordError, match="gen = '1'"):
        Lease.from_bytes(store.get(key)[0])
    clock.advance(config.lease_ttl + 10)
    done = Queue(store, config).scan("survivor")
    assert done is not None
    assert done.actions == {"a_request.json": "released", "b_request.json": "released"}
    assert {i.key for i in store.list_page("wait/").items} == {
        "wait/a_request.json", "wait/b_request.json"}



def _claimed_by_a_dead_worker(*names: str, body: bytes = b"{}", view_after: float = 0.0
                              ) -> tuple[Queue, MemoryStore, FakeClock, QueueConfig]:
    """Each of ``names`` submitted and claimed by worker "dead" (which then dies), on a
    store with a fake clock: the dead worker's queue, the store, its clock, the settings."""
    clock = FakeClock()
    store = MemoryStore("corrupt", clock=clock)
    config = QueueConfig(lease_ttl=30.0, scan_interval=5.0)
    q = Queue(store, config)
    for name in names:
        q.submit(name, body)
        assert q.claim("dead", view_after=view_after) is not None
    return q, store, clock, config


def _dead_short_job(body: bytes) -> tuple[MemoryStore, FakeClock, QueueConfig, str]:
    """A request claimed by a worker that died before its processing/ view was due (most
    jobs never get one): its lease holds the only copy of its bytes."""
    _, store, clock, config = _claimed_by_a_dead_worker("a_request.json", body=body,
                                                        view_after=10.0)
    keys = [i.key for i in store.list_page("").items]
    assert ".s3q/lease/a_request.json" in keys
    assert not [k for k in keys if k.startswith(("wait/", "processing/", ".s3q/body/"))]
    return store, clock, config, layout.key(layout.LEASES, "a_request.json")


def test_a_corrupt_lease_holding_the_only_copy_of_its_request_gives_it_back() -> None:
    """A field of the wrong type (edited by hand): the lease was taken over as held by
    nobody, with no body, and 'dropped (its request is gone)': the request, whose only
    copy the lease held, was lost. The stand-in now keeps the body it can still read."""
    store, clock, config, key = _dead_short_job(b'{"n": 1}')
    data = json.loads(store.get(key)[0])
    data["gen"] = "1"
    store.put(key, json.dumps(data).encode())
    clock.advance(config.lease_ttl + 10)
    done = Queue(store, config).scan("survivor")
    assert done is not None and done.actions == {"a_request.json": "released"}
    assert store.get("wait/a_request.json")[0] == b'{"n": 1}'


def test_a_lease_that_cannot_be_decoded_and_may_hold_the_only_copy_is_left_alone() -> None:
    """Not JSON at all: no body can be read from it, and the request is nowhere else. Its
    takeover overwrote it (t1) and dropped it: whatever bytes were in it, lost. It is now
    left as it is, reported (scan_failed) at every scan, for an operator."""
    store, clock, config, key = _dead_short_job(b'{"n": 1}')
    garbage = b'{"v":2,"body_b64":"eyJuIjogMX0=", truncated'
    store.put(key, garbage)
    clock.advance(config.lease_ttl + 10)
    done = Queue(store, config).scan("survivor")
    assert done is not None and done.actions == {}
    assert "lease record is corrupt" in done.failed["a_request.json"]
    assert store.get(key)[0] == garbage


@pytest.mark.parametrize("large", [False, True], ids=["inline", "private-copy"])
def test_a_corrupt_lease_s_takeover_knows_its_request_s_views_and_runs_it_once(
        large: bool) -> None:
    """The stand-in kept the body it could read but not its size (0): every view of the
    request was taken for another request's (is_ours compares sizes first). The dead
    worker's processing/ view was neither adopted nor deleted by the takeover (w3), so it
    outlived the request as an orphan and ran it once more; and the claim's job said its
    size was 0."""
    body = b'{"n": 1}' + (b" " * (64 * 1024) if large else b"")
    q, store, clock, config = _claimed_by_a_dead_worker(
        "a_request.json", body=body)  # (its processing/ view written at once)
    key = layout.key(layout.LEASES, "a_request.json")
    data = json.loads(store.get(key)[0])
    data["gen"] = "1"
    store.put(key, json.dumps(data).encode())
    clock.advance(config.lease_ttl + 10)
    done = Queue(store, config).scan("survivor")
    assert done is not None and done.actions == {"a_request.json": "released"}
    assert not store.list_page("processing/").items
    runs = 0
    for _ in range(3):
        job = q.claim("w")
        if job is not None:
            runs += 1
            assert job.size == len(body)
            job.complete(b"")
        clock.advance(config.lease_ttl + 10)
        q.scan("w")
    assert runs == 1
    assert not [i.key for i in store.list_page("").items
                if i.key.startswith(("wait/", "processing/", ".s3q/lease/"))]


def test_a_lease_of_json_nested_too_deep_for_the_decoder_is_corrupt_and_stops_no_scan(
        ) -> None:
    """A lease overwritten with JSON nested deeper than the decoder goes ('[' * 100000, by
    another tool, garbage): json.loads raised RecursionError, no ValueError, out of
    Lease.from_bytes and out of the whole scan, at every scan: every other dead worker's
    request stayed in flight for ever. It is a record that cannot be decoded, as any other."""
    _, store, clock, config = _claimed_by_a_dead_worker("a_request.json", "b_request.json")
    garbage = b"[" * 100_000
    store.put(layout.key(layout.LEASES, "a_request.json"), garbage)
    clock.advance(config.lease_ttl + 10)
    done = Queue(store, config).scan("survivor")
    assert done is not None and not done.failed
    assert done.actions == {"a_request.json": "released", "b_request.json": "released"}
    for name in ("a_request.json", "b_request.json"):  # (a's from its processing/ view)
        assert store.get(f"wait/{name}")[0] == b"{}"


def test_a_burst_leaves_a_corrupt_lease_the_takeover_leaves_for_an_operator() -> None:
    """The takeover leaves a corrupt lease that may hold its request's only copy as it is
    (49d950e), but a burst's outlook took it for a lease nobody renews, due at once: the
    last slot looked again and again, the scan failed on it each time, and the burst never
    ended. It is left now, with why, as a lease that cannot be read is."""
    store, clock, config, key = _dead_short_job(b'{"n": 1}')
    store.put(key, b'{"v":2,"body_b64":"eyJuIjogMX0=", truncated')
    clock.advance(config.lease_ttl + 10)
    q = Queue(store, config)
    done = q.scan("survivor")
    assert done is not None and "lease record is corrupt" in done.failed["a_request.json"]
    outlook = q.outlook()
    assert outlook.next_due is None
    [(name, why)] = outlook.left
    assert name == "a_request.json" and "lease record is corrupt" in why


def corrupt_lease_left_for_an_operator() -> Queue:
    """a_request.json's worker died; its lease, corrupt, holds the only copy of the request
    (no body s3q can read): the fleet's scans leave it for an operator."""
    store, clock, config, key = _dead_short_job(b'{"n": 1}')
    store.put(key, b'{"v":2,"body_b64":"eyJuIjogMX0=", truncated')
    q = Queue(store, config)
    for _ in range(5):
        clock.advance(20)
        q.scan("survivor")
    return q


def test_status_and_the_dashboard_name_a_corrupt_lease_left_for_an_operator() -> None:
    """A corrupt lease the takeover leaves as it is (49d950e) became OVERDUE, and s3q
    status (and the dashboard) said 'no worker is scanning this queue (... is any
    running?)': the fleet was scanning, and failing on it by design; the operator was sent
    to look for dead workers instead of at the lease."""
    from s3q.cli.status import queue_status
    from s3q.dashboard.snapshot import take_snapshot

    q = corrupt_lease_left_for_an_operator()
    status, snap = queue_status(q), take_snapshot(q)
    for problems in (status["problems"], snap.problems):
        assert not [p for p in problems if "not taken over in time" in p]
        [problem] = problems
        assert problem.startswith("1 corrupt lease(s) left for an operator")
        assert "a_request.json: its lease record is corrupt" in problem
    assert status["healthy"] is False and status["overdue"] == []
