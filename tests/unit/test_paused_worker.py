"""A paused queue (docs/OPERATIONS.md, "Pausing the queue"): a paused worker takes nothing
over, neither waiting requests nor the expired leases of dead workers, and makes no LIST;
its takeover scan (and the scanner role) waits for the resume, then runs at once."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from uuid import uuid4

import pytest

from s3q import Queue, QueueConfig, State
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.pause import pause, resume
from s3q.scanrole import ROLE_KEY
from s3q.store import NotFound
from s3q.worker import Worker, WorkerOptions
from tests.acceptance.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


class Counting(DelegatingStore):
    """Counts the store operations made while ``on``."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.ops: Counter[str] = Counter()
        self.on = False

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if self.on:
            self.ops[op] += 1
        return fn()


def role_etag(store: Counting) -> str | None:
    try:
        return store.inner.head(ROLE_KEY).etag
    except NotFound:
        return None


def test_a_paused_worker_lists_nothing_and_takes_no_dead_workers_lease_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    store = Counting(MemoryStore("pause", clock=clock))
    cfg = QueueConfig(lease_ttl=6.0)  # a scan every 3 s (store clock)
    dead = Queue(store, cfg)
    dead.submit("a_request.json", b"{}")
    assert dead.claim("dead-worker") is not None  # never renewed: this worker "died"
    pause(store, by="ops", reason="deploying a handler fix")

    q = Queue(store, cfg)
    worker = Worker(q, lambda job: None, WorkerOptions(f"w-{uuid4().hex[:6]}",
                                                       concurrency=2, poll_interval=0.5))
    looks: list[float] = []  # the scanner thread's looks at the pause flag (store clock)
    paused = worker.presence.paused

    def scanner_looks() -> bool:
        if threading.current_thread().name == "s3q-scanner":
            looks.append(clock.now)
        return paused()

    monkeypatch.setattr(worker.presence, "paused", scanner_looks)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        # its own recovery at start is done once it asks whether the queue is paused
        wait_for(lambda: worker.presence.gate.checks, 15, "the worker's first pause check")
        role = role_etag(store)
        store.on = True
        clock.now += 60  # the dead worker's lease expired long ago; many scans are due

        def held_by_the_dead_worker() -> bool:
            lease = q.lease("a_request.json")
            return lease is not None and lease[0].worker == "dead-worker"

        # three rounds of the scanner after the lease expired (or, sooner, the harm)
        wait_for(lambda: sum(t == clock.now for t in looks) >= 3 or store.ops["list"]
                 or not held_by_the_dead_worker(), 30, "three rounds of the scanner")
        assert store.ops["list"] == 0, dict(store.ops)
        assert held_by_the_dead_worker(), q.lease("a_request.json")
        assert role_etag(store) == role  # the scanner role: neither taken nor renewed
        assert [i.key for i in q.ls(State.FAILED)] == []

        resume(store)  # the scan runs again: the request is taken over and processed
        wait_for(lambda: [i.key for i in q.ls(State.FINISH)] == ["a_request.json"], 30,
                 "the request to be taken over and finished after the resume")
    finally:
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()
