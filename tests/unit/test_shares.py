"""Shares of wait/ (s3q.shares): each worker of a fleet tries its own share of a page first,
so independent workers rarely race; a page with none of its share hands out the others'
(a dead or busy worker's share is taken so), and a lost race for its own share makes the
worker look at the fleet again."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from uuid import uuid4

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.job import Job
from s3q.registry import PREFIX, WorkerRecord
from s3q.shares import Shares, owner
from s3q.worker import Worker, WorkerOptions
from tests.acceptance.conftest import wait_for

NAMES = [f"req-{i:04d}.json" for i in range(60)]


def submit_all(q: Queue, names: list[str]) -> None:
    for name in names:
        q.submit(name, b"{}")


def test_owner_spreads_names_evenly_over_the_fleet() -> None:
    counts = Counter(owner(f"2026-12-04T20:{i // 60:02d}:{i % 60:02d}-{i}.json", 16)
                     for i in range(3200))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.5 * 200 and min(counts.values()) > 0.5 * 200


def test_a_worker_claims_its_own_share_first_then_the_others() -> None:
    q = Queue(MemoryStore("shares"), QueueConfig(page_size=100))
    submit_all(q, NAMES)
    q.ctx.shares.update("b", ["a", "c"])  # (b counts whether or not it is listed)
    assert q.ctx.shares.ids == ("a", "b", "c")
    own = {n for n in NAMES if owner(n, 3) == 1}
    assert 5 < len(own) < 40
    claimed = []
    while (job := q.claim("b")) is not None:
        claimed.append(job.name)
        job.complete()
    assert set(claimed[:len(own)]) == own  # its whole share first, in one page...
    assert sorted(claimed) == NAMES  # ...then the others' (a page with none of its own)


def test_workers_that_see_the_same_fleet_never_race_for_a_request() -> None:
    store = MemoryStore("no-races")
    queues = {w: Queue(store, QueueConfig(page_size=100)) for w in ("a", "b", "c")}
    submit_all(queues["a"], NAMES)
    for w, q in queues.items():
        q.ctx.shares.update(w, ["a", "b", "c"])
    mine = {w: {n for n in NAMES if owner(n, 3) == i} for i, w in enumerate("abc")}
    done: dict[str, list[str]] = {w: [] for w in queues}
    while any(len(done[w]) < len(mine[w]) for w in queues):  # each, in turn, one claim
        for w, q in queues.items():
            if len(done[w]) < len(mine[w]):
                job = q.claim(w)
                assert job is not None and not q._claimer.lost_race()
                done[w].append(job.name)
                job.complete()
    assert {w: set(names) for w, names in done.items()} == mine


class Counting(DelegatingStore):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.lists: Counter[str] = Counter()

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if op == "list":
            self.lists[args["prefix"]] += 1
        return fn()


def test_a_lost_race_for_its_own_share_asks_for_a_look_at_the_fleet() -> None:
    shares = Shares()
    shares.update("b", ["a", "c"])
    own = next(n for n in NAMES if owner(n, 3) == 1)
    other = next(n for n in NAMES if owner(n, 3) != 1)
    shares.missed(other)  # another's: expected, where shares overlap at the edges
    assert not shares.wake.is_set()
    shares.missed(own)
    assert shares.wake.is_set()

    # the same through a claim: a rival claims the request between b's LIST and its c0
    store = RivalFirst(MemoryStore("race"), f"wait/{own}")
    q = Queue(store, QueueConfig(page_size=100))
    store.rival = Queue(store.inner, QueueConfig())
    submit_all(q, [own])
    q.ctx.shares.update("b", ["a", "c"])
    assert q.claim("b") is None and q._claimer.lost_race()
    assert store.rival_claimed == [own]
    assert q.ctx.shares.wake.is_set()


class RivalFirst(DelegatingStore):
    """Before this process's first GET of ``key`` (its c0), a rival claims that request."""

    def __init__(self, inner: Any, key: str) -> None:
        super().__init__(inner)
        self.key = key
        self.rival: Queue | None = None
        self.rival_claimed: list[str] = []

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if op == "get" and args.get("key") == self.key and self.rival is not None:
            rival, self.rival = self.rival, None
            job = rival.claim("a")
            assert job is not None
            self.rival_claimed.append(job.name)
        return fn()


def record(worker_id: str, at: float) -> bytes:
    return WorkerRecord(id=worker_id, host="h", pid=1, version="x", slots=1, busy=0,
                        paused=False, interval=60.0, started=at, heartbeat=at).to_bytes()


def test_the_registry_thread_reads_the_fleet_at_start_and_when_a_race_asks() -> None:
    """A running worker's view: the live records (a stale one, a dead worker's, is not in
    it: its share goes to the others), itself, and a new look when a race asks for one."""
    now = [1_764_000_000.0]
    store = Counting(MemoryStore("look", clock=lambda: now[0]))
    store.inner.put(PREFIX + "dead", record("dead", now[0]))
    now[0] += 200.0  # over 2.5 heartbeats of 60 s: stale
    store.inner.put(PREFIX + "alive", record("alive", now[0]))
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    me = f"me-{uuid4().hex[:8]}"
    release = threading.Event()

    def handler(job: Job) -> None:
        release.wait(10)

    worker = Worker(q, handler, WorkerOptions(me, concurrency=1, poll_interval=0.2))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: q.ctx.shares.ids == tuple(sorted(["alive", me])), 10,
                 "the worker's view of the fleet: itself and the live record")
        looks = store.lists[PREFIX]
        store.inner.put(PREFIX + "new", record("new", now[0]))
        q.ctx.shares.missed(next(n for n in NAMES if q.ctx.shares.mine(n)))
        wait_for(lambda: "new" in q.ctx.shares.ids, 10, "a look asked for by a lost race")
        assert store.lists[PREFIX] > looks
    finally:
        release.set()
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_lost_races_neither_delay_a_heartbeat_nor_list_the_registry_each_time() -> None:
    """Lost races ask for looks at any rate (every claim of a contended tail): the
    registry thread looks at most once a SOON for them, and beats on time meanwhile."""
    store = Counting(MemoryStore("beats"))
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    worker = Worker(q, lambda job: None, WorkerOptions(f"me-{uuid4().hex[:8]}",
                                                       concurrency=1, poll_interval=0.2))
    worker.presence.interval = 0.3
    own = next(n for n in NAMES if q.ctx.shares.mine(n))
    stop = threading.Event()

    def lose_races() -> None:
        while not stop.wait(0.005):
            q.ctx.shares.missed(own)

    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.presence.writes >= 2, 10, "the worker's first beats")
        looks, writes = store.lists[PREFIX], worker.presence.writes
        racer = threading.Thread(target=lose_races)
        racer.start()
        try:
            wait_for(lambda: worker.presence.writes >= writes + 6, 15,
                     "six more beats while lost races ask for looks")
            beats = worker.presence.writes - writes
            # a look with each beat, and at most one asked for by the races (SOON is 10 s)
            assert store.lists[PREFIX] - looks <= beats + 2
        finally:
            stop.set()
            racer.join(10)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
