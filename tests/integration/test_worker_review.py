"""Worker lifecycle defects found in review, each on moto's S3 server: a handler that
gives up on its lease deadline, a burst whose store blinks, a stop that must drain within
``grace``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.context import Deadline
from s3q.job import Job
from s3q.store import Store, StoreUnavailable
from s3q.worker import Worker, WorkerOptions
from tests.s3server import MakeS3Store

T = TypeVar("T")


def _queue(store: Store, **cfg: Any) -> Queue:
    config = QueueConfig(**{"lease_ttl": 6.0, "retry_base_delay": 0.0,
                            "retry_max_delay": 0.0, "max_attempts": 3, **cfg})
    return Queue(store, config)


def test_a_handler_giving_up_at_its_deadline_does_not_complete_the_request(
        make_s3_store: MakeS3Store) -> None:
    """A handler that checks its lease (``job.check_deadline()``) after its process stalled
    past the deadline gets LeaseLost and stops before doing its work. The worker must not
    then complete the request: its work was never done, and finish/ would say it was."""
    q = _queue(make_s3_store(), lease_ttl=5.0)
    q.submit("a_request.json", b"{}")
    done: list[str] = []
    stalled: list[int] = []

    def handler(job: Job) -> None:
        if not stalled:  # its first run: the process stalled past the deadline
            stalled.append(job.attempt)
            job.deadline = Deadline(job.deadline.at - 3600, job.deadline.monotonic, job.name)
            job.check_deadline()  # raises LeaseLost: the work below is not done
        done.append(job.name)

    stats = Worker(q, handler, WorkerOptions("w", concurrency=1, burst=True)).run()
    assert not (q.counts()["finish"] == 1 and done == []), \
        "the request is in finish/ although its handler never did its work"
    # its lease (not renewable in time: the failure's w1 is refused) is left to expire: the
    # burst waits for it, its scan takes it over, and the request runs again
    assert done == ["a_request.json"] and stats.completed == 1 and stats.released == 0
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


class ListsFail(DelegatingStore):
    """Every LIST fails while ``failing`` is set (a store that blinks); the test clears it
    once ``failures`` LISTs failed."""

    def __init__(self, inner: Store, failures: int) -> None:
        super().__init__(inner)
        self.left = failures
        self.lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "list":
            with self.lock:
                if self.left > 0:
                    self.left -= 1
                    raise StoreUnavailable("list: injected")
        return fn()


def test_a_burst_outlasts_a_store_that_blinks(make_s3_store: MakeS3Store) -> None:
    """A burst's claim and its look at what is left both fail once (a LIST refused): the
    burst must carry on and process what waits, not end with its last slot dead."""
    inner = make_s3_store()
    q0 = _queue(inner)
    q0.submit("a_request.json", b"{}")
    store = ListsFail(inner, failures=2)
    q = _queue(store)
    errors: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        stats = Worker(q, lambda job: None,
                       WorkerOptions("w", concurrency=1, burst=True, scanner=False,
                                     recover_on_start=False)).run()
    finally:
        threading.excepthook = previous
    assert errors == [], f"a slot died: {errors!r}"
    assert stats.completed == 1
    assert q0.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


def test_a_stop_waits_for_stuck_slots_once_not_once_per_slot(
        make_s3_store: MakeS3Store, monkeypatch: Any) -> None:
    """After ``grace`` the jobs are given back, and the worker waits a little (the join
    bound, SLOTS_JOIN) for their slots to return. Handlers in threads that ignore the
    interruption never return: the worker must exit after one such wait, not one per slot
    (16 slots, 10 s each, is well past the unit's TimeoutStopSec = grace + 60 s: a SIGKILL)."""
    import s3q.slots as slots_module

    monkeypatch.setattr(slots_module, "SLOTS_JOIN", 4.0)
    q = _queue(make_s3_store())
    for i in range(4):
        q.submit(f"r{i}_request.json", b"{}")
    started = threading.Semaphore(0)
    never = threading.Event()

    def stuck(job: Job) -> None:
        started.release()
        never.wait(60)  # a thread handler that does not look at job.interrupted

    worker = Worker(q, stuck, WorkerOptions("w", concurrency=4, grace=0.0, scanner=False))
    done = threading.Event()

    def run() -> None:
        worker.run()
        done.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        for _ in range(4):
            assert started.acquire(timeout=20)
        t0 = time.monotonic()
        worker.stop()
        assert done.wait(30)
        elapsed = time.monotonic() - t0
    finally:
        never.set()
    assert worker.stats.released == 4
    # one bound of 4 s for all slots, plus the 4 give-backs (a few seconds at most on a
    # loaded machine); per slot it would be 16 s and more
    assert 4.0 <= elapsed < 12.0, f"the stop took {elapsed:.1f}s"


class RenewalHangs(DelegatingStore):
    """The renewals (``PUT=e`` of a lease) of request ``name`` hang until ``release`` is
    set (a black-holed connection: botocore waits up to read_timeout, for each attempt); counts
    the lease writes that went through, by request."""

    def __init__(self, inner: Store, name: str) -> None:
        super().__init__(inner)
        self.key = ".s3q/lease/" + name
        self.hanging, self.release = threading.Event(), threading.Event()
        self.renewed: dict[str, int] = {}
        self.lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "put" and args.get("if_match") and args["key"].startswith(".s3q/lease/"):
            if args["key"] == self.key and not self.release.is_set():
                self.hanging.set()
                assert self.release.wait(60)
            result = fn()
            with self.lock:
                self.renewed[args["key"]] = self.renewed.get(args["key"], 0) + 1
            return result
        return fn()


def test_one_hanging_renewal_does_not_hold_back_the_other_jobs_renewals(
        make_s3_store: MakeS3Store) -> None:
    """One renewal that hangs (one bad connection) must not stop the renewals of the
    worker's other jobs: else all their leases expire together, are taken over, and every
    job the worker runs runs twice."""
    inner = make_s3_store()
    store = RenewalHangs(inner, "a_request.json")
    q = _queue(store, lease_ttl=6.0)  # renewed every 2 s
    for name in ("a_request.json", "b_request.json"):
        q.submit(name, b"{}")
    running = threading.Semaphore(0)
    finish = threading.Event()

    def handler(job: Job) -> None:
        running.release()
        assert finish.wait(60)

    worker = Worker(q, handler, WorkerOptions("w", concurrency=2, scanner=False, grace=30))
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    try:
        assert running.acquire(timeout=20) and running.acquire(timeout=20)
        assert store.hanging.wait(10)  # a's first renewal hangs
        before = store.renewed.get(".s3q/lease/b_request.json", 0)
        deadline = time.monotonic() + 6.0  # b's renewals are due every 2 s
        while (time.monotonic() < deadline
               and store.renewed.get(".s3q/lease/b_request.json", 0) == before):
            time.sleep(0.05)
        renewed_b = store.renewed.get(".s3q/lease/b_request.json", 0) - before
    finally:
        store.release.set()
        finish.set()
        worker.stop()
        runner.join(30)
    assert renewed_b >= 1, "b's lease was not renewed while a's renewal hung"
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 2, "failed": 0}


def test_the_worker_counts_the_jobs_its_breaker_gave_back(make_s3_store: MakeS3Store) -> None:
    """Jobs the circuit breaker gives back (uncharged) are released jobs: the worker's
    counters (its registry record, the 'worker done' line) must say so."""
    from s3q.breaker import Breaker

    q = _queue(make_s3_store(), max_attempts=5)
    for i in range(3):
        q.submit(f"r{i}_request.json", b"{}")
    breaker = Breaker(q, "w", threshold=2, pause=60.0)

    def broken(job: Job) -> None:
        raise RuntimeError("cannot reach the database")

    worker = Worker(q, breaker.wrap(broken), WorkerOptions("w", concurrency=1, max_jobs=2,
                                                           scanner=False))
    stats = worker.run()
    # the first failure is charged (a retry), the second trips the breaker: given back
    assert stats.failed == 1
    assert stats.released == 1, f"released={stats.released}"


class FinishFailsOnce(DelegatingStore):
    """The first write to finish/ (d3) fails as an unreachable store's would."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.failed = False

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op in ("put", "copy") and not self.failed and \
                str(args.get("key", args.get("dst"))).startswith("finish/"):
            self.failed = True
            raise StoreUnavailable("finish/: injected")
        return fn()


def test_a_burst_does_not_end_with_its_own_unsettled_lease(make_s3_store: MakeS3Store) -> None:
    """A completion whose d3 fails leaves the lease, which nobody renews: the request comes
    back once it expires. A burst "waits for leases nobody renews to expire": its own
    unsettled one included, else it exits with the request neither done nor waiting."""
    q = _queue(FinishFailsOnce(make_s3_store()), lease_ttl=5.0)
    q.submit("a_request.json", b"{}")
    ran: list[int] = []
    stats = Worker(q, lambda job: ran.append(job.attempt),
                   WorkerOptions("w", concurrency=1, burst=True)).run()
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}, \
        f"burst ended with {q.counts()} after runs {ran}, stats {stats}"
