"""The worker's side of the event source (s3q.worker with an ``events`` feed), on an
in-memory store with the real clock: a notification wakes an idle slot at once, the claim
it asks for lists nothing, and the idle listing of wait/ (the safety net) is planned every
``events_list_interval``. The feed here is a stand-in with the event source's interface;
tests/acceptance/test_events.py runs the real one on moto's SQS."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.events import EventSource
from s3q.job import Job
from s3q.pause import PauseGate, pause, resume
from s3q.worker import Worker, WorkerOptions
from tests.acceptance.conftest import wait_for

T = TypeVar("T")


class Listings(DelegatingStore):
    """Counts the listings of each prefix."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.lists: Counter[str] = Counter()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "list":
            self.lists[args["prefix"]] += 1
        return fn()


class Feed:
    """What the worker asks of an event source; :meth:`announce` is a notification."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.healthy = True
        self.names: set[str] = set()
        self.wake: Callable[[int], None] = lambda n: None
        self.capacity: Callable[[], int] = lambda: 0
        self.started = False

    def start(self, *, capacity: Callable[[], int], wake: Callable[[int], None]) -> None:
        self.capacity, self.wake = capacity, wake
        self.started = True

    def stop(self) -> None:
        pass

    def offered(self, name: str) -> bool:
        return name in self.names

    def missed(self, name: str, waited: float) -> None:
        pass

    def announce(self, name: str) -> None:
        self.names.add(name)
        self.queue.offer([name])
        self.wake(1)


class Idle(logging.Handler):
    """The worker's plans for its next listing (its ``idle`` debug records), in seconds."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.plans: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "idle":
            self.plans.append(float(record.seconds))  # type: ignore[attr-defined]


@pytest.fixture
def idle() -> Iterator[Idle]:
    handler, logger = Idle(), logging.getLogger("s3q.worker")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_a_notification_wakes_an_idle_slot_and_its_claim_lists_nothing(idle: Idle) -> None:
    store = Listings(MemoryStore("events"))
    queue = Queue(store, QueueConfig(lease_ttl=30.0))
    feed = Feed(queue)
    done: list[str] = []
    handled = threading.Condition()

    def handler(job: Job) -> None:
        with handled:
            done.append(job.name)
            handled.notify_all()

    worker = Worker(queue, handler, WorkerOptions("w", concurrency=4,
                                                  events_list_interval=3600),
                    events=cast(EventSource, feed))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: idle.plans and idle.plans[-1] >= 1800, 10, "the idle plan")
        listed, plans = store.lists["wait/"], len(idle.plans)
        assert feed.capacity() == 4
        for i in range(5):
            name = f"r{i}_request.json"
            queue.submit(name, b"{}")
            feed.announce(name)
            with handled:
                assert handled.wait_for(lambda n=name: n in done, 10)  # type: ignore[misc]
        assert store.lists["wait/"] == listed  # claimed by name: no LIST
        assert len(idle.plans) == plans  # and the next listing is still an hour away
        wait_for(lambda: feed.capacity() == 4, 10, "every slot free again")
        # a notification whose request is gone: its claim falls back to one listing
        feed.announce("gone_request.json")
        wait_for(lambda: store.lists["wait/"] == listed + 1, 10, "the fallback listing")
        wait_for(lambda: len(idle.plans) == plans + 1, 10, "a new plan")
        assert idle.plans[-1] >= 1800
        # the source fails: the next listing is re-planned at the ordinary poll_interval
        feed.healthy = False
        feed.wake(1)
        wait_for(lambda: len(idle.plans) == plans + 2, 10, "a re-plan")
        assert idle.plans[-1] <= min(WorkerOptions("w").poll_interval, 15.0)
    finally:
        worker.stop()
        worker.stop()
        thread.join(10)
    assert sorted(done) == [f"r{i}_request.json" for i in range(5)]


def test_a_stopping_worker_takes_no_more_notifications() -> None:
    """While a stopping worker waits for its running jobs (up to ``grace``), its free slots
    will never claim again: it must not receive SQS messages for them. Each one it took
    would stay invisible to every other worker (offered to no slot, checked, given back
    ~35 s later, or at the end of the drain), and its receive count would grow towards a
    redrive policy's maxReceiveCount."""
    queue = Queue(MemoryStore("events"), QueueConfig(lease_ttl=30.0))
    feed = Feed(queue)
    release, running = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        running.set()
        release.wait(30)

    worker = Worker(queue, handler, WorkerOptions("w", concurrency=2, grace=60,
                                                  events_list_interval=3600),
                    events=cast(EventSource, feed))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        queue.submit("long_request.json", b"{}")
        feed.announce("long_request.json")
        assert running.wait(10)
        wait_for(lambda: feed.capacity() == 1, 10, "one slot free")
        worker.stop()  # graceful: the running job may finish
        assert thread.is_alive()  # still draining
        assert feed.capacity() == 0
    finally:
        release.set()
        worker.stop()
        thread.join(10)


def test_a_paused_worker_takes_no_notifications_until_it_is_resumed() -> None:
    """While the queue is paused (s3q pause) a worker claims nothing, so every message it
    received would be offered to no slot: checked three times (a HEAD and a GET each) over
    ~35 s, given back, received again at once by the same idle worker, and after
    MAX_RECEIVES such turns (~30 min) deleted and left to the listing, which after the
    resume came only every events_list_interval. A paused worker must leave them in SQS,
    and take them again once it sees the resume."""
    queue = Queue(MemoryStore("events"), QueueConfig(lease_ttl=30.0))
    feed = Feed(queue)
    done: list[str] = []
    worker = Worker(queue, lambda job: done.append(job.name),
                    WorkerOptions("w", concurrency=2, events_list_interval=3600),
                    events=cast(EventSource, feed))
    worker.presence.gate = PauseGate(queue.store, max_age=0.0)  # (no answer kept)
    pause(queue.store, by="op", reason="test")
    queue.submit("a_request.json", b"{}")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: feed.started and worker.presence.gate.last, 10,
                 "the worker to start and see the pause")
        feed.announce("a_request.json")  # (its slot finds the pause too)
        wait_for(lambda: feed.capacity() == 0, 10, "no notification taken while paused")
        assert done == [] and queue.counts()["wait"] == 1
        resume(queue.store)
        wait_for(lambda: feed.capacity() == 2, 15, "notifications taken again once resumed")
        feed.announce("a_request.json")
        wait_for(lambda: done == ["a_request.json"], 10, "the request to run")
    finally:
        worker.stop()
        worker.stop()
        thread.join(10)
