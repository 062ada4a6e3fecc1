"""Operator commands racing the fleet (docs/PROTOCOL.md §4: requeue, purge, recover): each
test forces one interleaving through a store that runs an action right before a chosen
store request of the operator (or of a worker)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s3q import Queue, QueueConfig, State
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from tests.unit.harness import FakeClock

T = TypeVar("T")
CONFIG = QueueConfig(lease_ttl=30.0, retry_base_delay=1000.0, retry_max_delay=1000.0)
NAME = "a_request.json"


@dataclass
class Hooked(DelegatingStore):
    """``inner`` as one actor sees it: ``hooks[(op, key)]`` runs once, right before that
    actor's first such request (op: get, head, put, copy, delete)."""

    inner: MemoryStore
    hooks: dict[tuple[str, str], Callable[[], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def now(self) -> float:
        return self.inner.now()

    def close(self) -> None:
        pass

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        hook = self.hooks.pop((op, str(args.get("key", args.get("dst", "")))), None)
        if hook is not None:
            hook()
        return fn()


def world() -> tuple[MemoryStore, FakeClock]:
    clock = FakeClock()
    return MemoryStore("ops", clock=clock), clock


def completed(q: Queue, body: bytes, result: bytes) -> None:
    q.submit(NAME, body)
    job = q.claim("w1")
    assert job is not None
    job.complete(result)


def test_purge_finish_racing_a_completion_keeps_the_new_result() -> None:
    """`s3q purge finish --older-than 30d` lists an old finish/NAME; a request of that name
    completes meanwhile: its d2 (the result) lands before the purge deletes finish/NAME
    (the old one, by its ETag), its d3 after. The new result is not the purged request's
    and must stay."""
    store, clock = world()
    fleet = Queue(store, CONFIG)
    completed(fleet, b"old", b"old result")
    clock.advance(31 * 86400)
    operator = Hooked(store)
    op = Queue(operator, CONFIG)
    [listed] = list(op.ls(State.FINISH))
    worker = Hooked(store)
    fleet.submit(NAME, b"new")
    job = Queue(worker, CONFIG).claim("w2")
    assert job is not None
    # the worker's d3 waits until the purge has deleted the old finish/NAME and read the
    # result record: d2 (the new result) is in by then
    worker.hooks[("put", f"finish/{NAME}")] = lambda: op.purge(State.FINISH, listed)
    job.complete(b"new result")
    assert fleet.result(NAME) == b"new result"
    assert store.get(f"finish/{NAME}")[0] == b"new"


def test_purge_failed_racing_a_new_dead_letter_keeps_its_error_record() -> None:
    """`s3q purge failed` deletes the listed failed/NAME (its ETag); before it reads the
    error record, a request of the same name is dead-lettered (x2 failed/NAME, x3 its error
    record). That record explains the new dead letter and must stay."""
    store, clock = world()
    fleet = Queue(store, CONFIG)
    fleet.submit(NAME, b"old")
    job = fleet.claim("w1")
    assert job is not None
    job.fail(ValueError("old"), retry=False)
    clock.advance(60)
    operator = Hooked(store)
    op = Queue(operator, CONFIG)
    [listed] = list(op.ls(State.FAILED))
    fleet.submit(NAME, b"new")
    job = fleet.claim("w2")
    assert job is not None
    operator.hooks[("head", f".s3q/error/{NAME}")] = lambda: job.fail(KeyError("new"),
                                                                      retry=False)
    assert op.purge(State.FAILED, listed)
    assert store.get(f"failed/{NAME}")[0] == b"new"
    record = fleet.error_record(NAME)
    assert record is not None and record.error["type"] == "KeyError"


def test_a_requeue_whose_lease_ran_out_midway_is_reported_and_finished_by_the_fleet() -> None:
    """`s3q requeue` on a slow store (a large dead letter's server-side copy into wait/ that
    outlasts lease_ttl): its requeue lease (r1) is the decision, and a taker rolls it
    forward (PROTOCOL §4 requeue: "Crash after r1…r4"). The command must say so, not die
    with a LeaseLost traceback halfway through a batch."""
    store, clock = world()
    fleet = Queue(store, CONFIG, monotonic=clock)
    fleet.submit(NAME, b"x")
    job = fleet.claim("w1")
    assert job is not None
    job.fail(ValueError("boom"), retry=False)
    operator = Hooked(store)
    op = Queue(operator, CONFIG, monotonic=clock)
    operator.hooks[("put", f"wait/{NAME}")] = lambda: clock.advance(CONFIG.lease_ttl + 5)
    assert op.requeue(NAME)
    clock.advance(CONFIG.lease_ttl + 5)
    assert fleet.recover_stale().actions == {NAME: "rolled forward requeue"}
    assert list(store.snapshot()).count(f"failed/{NAME}") == 0
    again = fleet.claim("w2")
    assert again is not None and again.read() == b"x" and again.attempt == 1


def test_purge_wait_deletes_no_retry_lease_whose_view_it_did_not_list() -> None:
    """B failed and waits for its retry in its lease only: wait/NAME already held A, a
    re-submission of the name with other bytes, which B's w1 never overwrites. `s3q ls
    wait` shows NAME once (A's object); `s3q purge wait --include NAME` listed and
    confirmed A. B, which nobody was shown, must not be deleted with it."""
    store, _ = world()
    fleet = Queue(store, CONFIG)
    fleet.submit(NAME, b"B")
    job = fleet.claim("w1")
    assert job is not None
    fleet.submit(NAME, b"A")
    job.fail(ValueError("flaky"))  # retry; wait/NAME holds A: B rests in its lease
    op = Queue(store, CONFIG)
    [listed] = list(op.ls(State.WAIT))
    assert store.get(f"wait/{NAME}")[0] == b"A"
    assert op.purge(State.WAIT, listed)
    lease = fleet.lease(NAME)
    assert lease is not None and lease[0].body == b"B", "B was purged unlisted"
