"""The worker registry and the pause flag, with the real Worker on an in-memory store."""

from __future__ import annotations

import threading
import time
from uuid import uuid4

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.job import Job
from s3q.pause import PAUSE_KEY, PauseGate, pause, pause_state, resume
from s3q.registry import (
    PREFIX,
    Registry,
    WorkerRecord,
    fleet_status,
    longer_leases,
    longer_leases_problem,
)
from s3q.store import list_all
from s3q.worker import Worker, WorkerOptions
from tests.acceptance.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def wid(name: str) -> str:
    """A worker id no other test on this host uses (ids are locked host-wide)."""
    return f"{name}-{uuid4().hex[:8]}"


def make_queue(store: MemoryStore | None = None) -> Queue:
    return Queue(store or MemoryStore("fleet"), QueueConfig(lease_ttl=6.0))


def test_a_running_worker_is_in_the_registry_and_leaves_it_when_it_stops() -> None:
    q = make_queue()
    release = threading.Event()
    def handler(job: Job) -> None:
        release.wait(10)

    worker_id = wid("host-a/i-1")
    worker = Worker(q, handler, WorkerOptions(worker_id, concurrency=3, poll_interval=0.2))
    q.submit("one_request.json", b"{}")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: Registry(q.store).records(), 5, "the worker's record")
        [entry] = Registry(q.store).records()
        assert entry.id == worker_id and not entry.stale
        record = entry.record
        assert record is not None
        assert (record.slots, record.version) == (3, record.version)
        assert record.started <= record.heartbeat
        assert set(record.counters) >= {"claimed", "completed", "failed"}
    finally:
        release.set()
        worker.stop()
        thread.join(10)
    assert [i.key for i in list_all(q.store, PREFIX)] == []  # removed on a clean stop
    assert worker.presence.writes == 1  # one PUT at start; the next only after a minute


def test_heartbeats_carry_busy_slots_counters_and_completions() -> None:
    q = make_queue()
    for i in range(3):
        q.submit(f"{i}_request.json", b"{}")
    gate = threading.Event()

    def handler(job: Job) -> None:
        if job.name.startswith("2"):
            gate.wait(10)

    worker = Worker(q, handler, WorkerOptions(wid("w"), concurrency=2, poll_interval=0.2))
    worker.presence.interval = 0.2
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        def busy_and_done() -> WorkerRecord | None:
            [entry] = Registry(q.store).records() or [None]  # type: ignore[list-item]
            r = entry.record if entry else None
            return r if r and r.busy == 1 and r.counters["completed"] == 2 else None
        wait_for(busy_and_done, 10, "a heartbeat with 1 busy slot and 2 completed")
        record = busy_and_done()
        assert record is not None and sum(n for _, n in record.history) == 2
    finally:
        gate.set()
        worker.stop()
        thread.join(10)


def test_a_record_not_rewritten_for_two_and_a_half_intervals_is_stale() -> None:
    clock = Clock()
    store = MemoryStore("stale", clock=clock)
    record = WorkerRecord(id="dead", host="h", pid=1, version="0", slots=4, busy=4,
                          paused=False, interval=60.0, started=clock.now, heartbeat=clock.now)
    store.put(PREFIX + "dead", record.to_bytes())
    clock.now += 149
    assert [e.stale for e in Registry(store).records()] == [False]
    clock.now += 2
    [entry] = Registry(store).records()
    assert entry.stale and entry.record == record
    assert fleet_status(store)["workers"] == {"live": [], "stale": ["dead"]}
    Registry(store).remove("dead", entry.info.etag)
    assert Registry(store).entries() == []


def test_live_workers_with_longer_leases_are_found_by_their_records() -> None:
    """Each record says its worker's lease_ttl; a record of an earlier s3q (none) and a
    stale one are not counted."""
    import json

    clock = Clock()
    store = MemoryStore("fleet", clock=clock)

    def put(worker: str, ttl: float | None, at: float) -> None:
        record = json.loads(WorkerRecord(
            id=worker, host="h", pid=1, version="x", slots=1, busy=0, paused=False,
            interval=10.0, started=at, heartbeat=at, lease_ttl=ttl or 0.0).to_bytes())
        if ttl is None:
            del record["lease_ttl"]  # as an earlier s3q wrote it
        clock.now = at
        store.put(PREFIX + worker, json.dumps(record).encode())

    start = clock.now
    put("short", 30.0, start)
    put("long", 120.0, start)
    put("old", None, start)
    put("gone", 300.0, start - 100.0)  # not rewritten for 10 intervals: stale
    clock.now = start + 5.0
    everyone = {"short", "long", "old", "gone"}
    assert longer_leases(Registry(store).records(), 30.0, everyone) == {"long": 120.0}
    assert longer_leases(Registry(store).records(), 120.0, everyone) == {}
    assert "--lease-ttl 120s" in longer_leases_problem({"long": 120.0}, 30.0)


def test_records_are_read_again_only_when_they_change() -> None:
    store = MemoryStore("cache")
    reads: list[str] = []
    original_get = store.get

    def counting_get(key: str) -> tuple[bytes, object]:
        reads.append(key)
        return original_get(key)

    store.get = counting_get  # type: ignore[method-assign,assignment]
    for i in range(3):
        rec = WorkerRecord(id=f"w{i}", host="h", pid=i, version="0", slots=1, busy=0,
                           paused=False, interval=60, started=0, heartbeat=0)
        store.put(PREFIX + f"w{i}", rec.to_bytes())
    registry = Registry(store)
    assert len(registry.records()) == 3 and len(reads) == 3
    registry.records()
    assert len(reads) == 3  # unchanged ETags: nothing read
    store.put(PREFIX + "w1", WorkerRecord(id="w1", host="h", pid=9, version="0", slots=1,
                                          busy=1, paused=False, interval=60, started=0,
                                          heartbeat=1).to_bytes())
    assert [e.record.busy for e in registry.records() if e.record] == [0, 1, 0]
    assert reads[3:] == [PREFIX + "w1"]


def test_pause_stops_claims_within_a_poll_and_running_jobs_finish() -> None:
    q = make_queue()
    started, finish = threading.Event(), threading.Event()
    done: list[str] = []

    def handler(job: Job) -> None:
        started.set()
        finish.wait(10)
        done.append(job.name)

    q.submit("a_request.json", b"{}")
    worker = Worker(q, handler, WorkerOptions(wid("w"), concurrency=2, poll_interval=0.3))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(10)
        pause(q.store, by="tester", reason="deploy")
        # the gate's shared answer is at most 5 s old: wait until the worker has seen it
        wait_for(lambda: worker.presence.gate.last, 15, "the worker to see the pause")
        q.submit("b_request.json", b"{}")
        finish.set()
        wait_for(lambda: done == ["a_request.json"], 10, "the running job to finish")
        time.sleep(1.5)  # several polls
        assert [i.key for i in q.ls("wait")] == ["b_request.json"]  # not claimed
        assert worker.stats.claimed == 1
        assert resume(q.store)
        wait_for(lambda: q.counts()["finish"] == 2, 10, "the claim after resume")
    finally:
        finish.set()
        worker.stop()
        thread.join(10)
    assert done == ["a_request.json", "b_request.json"]


def test_the_pause_flag_costs_one_head_per_five_seconds_whatever_the_slots() -> None:
    q = make_queue()
    worker = Worker(q, lambda job: None, WorkerOptions(wid("idle"), concurrency=8,
                                                       poll_interval=0.5))
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(3)
    worker.stop()
    thread.join(10)
    checks = worker.presence.gate.checks
    # 8 slots polling every 0.5 s for 3 s would be ~48 HEADs unshared; the gate answers
    # them all from one HEAD per 5 s (a second one only if this machine stalls 2 s)
    assert 1 <= checks <= 2, checks


def test_pause_records_who_and_why_and_resume_reports_whether_it_was_paused() -> None:
    store = MemoryStore("p")
    assert pause_state(store) is None and not resume(store)
    pause(store, by="alice@ops", reason="S3 maintenance")
    state = pause_state(store)
    assert state is not None and (state.by, state.reason) == ("alice@ops", "S3 maintenance")
    assert fleet_status(store)["paused"]["by"] == "alice@ops"
    gate = PauseGate(store, max_age=0)
    assert gate.paused()
    store.put(PAUSE_KEY, b"not json")  # a pause object written by hand still pauses
    assert gate.paused() and pause_state(store) is not None
    assert resume(store) and not gate.paused()
