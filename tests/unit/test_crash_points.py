"""A crash after every single store operation of every protocol operation.

For each operation, a dry run counts its store operations K; then for every i in 1..K a
fresh world runs the operation with the worker dying right after operation i took effect,
followed by recovery — the same worker restarting (own recovery) or, separately, the lease
expiring and another worker taking over — and a drain by the surviving fleet. The five
invariants of docs/PROTOCOL.md are checked after each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pytest

from s3q import layout
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.queue import Queue
from tests.unit.harness import Crash
from tests.unit.world import World

NAME = "req/a_request.json"


@dataclass(frozen=True)
class Scenario:
    """``setup`` brings the world to the operation's precondition (no crash) and returns
    what ``op`` needs; ``op`` runs the operation on worker A's (crashable) queue."""

    id: str
    setup: Callable[[World], Job | None]
    op: Callable[[World, Queue, Job | None], object]
    on_finish: Literal["move", "delete"] = "move"
    #: Names that legitimately end in failed/ if the op got past its commit.
    may_fail: bool = False


def claimed_by_a(world: World) -> Job:
    world.submit(NAME)
    q, _ = world.queue()
    job = q.claim("A")
    assert job is not None
    world.handled.append((job.name, "A", job.attempt))
    return job


def _own(job: Job | None, q: Queue) -> Job:
    """Rebind a job claimed during setup to worker A's crashable queue."""
    assert job is not None
    job.queue = q
    return job


def in_failed(world: World) -> None:
    job = claimed_by_a(world)
    job.fail("poison", retry=False)


def held_by_dead_z(world: World) -> None:
    world.submit(NAME)
    q, _ = world.queue()
    assert q.claim("Z") is not None
    world.expire()


def take_over_and_complete(w: World, q: Queue, _: Job | None) -> None:
    job = q.claim("A")
    assert job is not None and job.name == NAME
    w.handled.append((job.name, "A", job.attempt))
    job.complete()


def claim_and_complete(w: World, q: Queue, _: Job | None) -> None:
    job = q.claim("A")
    assert job is not None
    w.handled.append((job.name, "A", job.attempt))
    job.complete(b"result")


SCENARIOS = [
    Scenario("submit", lambda w: None, lambda w, q, _: q.submit(NAME, b"body of " + NAME.encode())),
    Scenario("claim", lambda w: w.submit(NAME), lambda w, q, _: q.claim("A")),
    Scenario("lifecycle", lambda w: w.submit(NAME), claim_and_complete),
    Scenario("complete-move", claimed_by_a, lambda w, q, j: _own(j, q).complete()),
    Scenario("complete-delete", claimed_by_a, lambda w, q, j: _own(j, q).complete(),
             on_finish="delete"),
    Scenario("complete-result", claimed_by_a, lambda w, q, j: _own(j, q).complete(b"42")),
    Scenario("fail-retry", claimed_by_a, lambda w, q, j: _own(j, q).fail("boom")),
    Scenario("fail-dead", claimed_by_a,
             lambda w, q, j: _own(j, q).fail("boom", retry=False), may_fail=True),
    Scenario("release", claimed_by_a, lambda w, q, j: _own(j, q).release()),
    Scenario("renew", claimed_by_a, lambda w, q, j: _own(j, q).renew()),
    Scenario("takeover", held_by_dead_z, take_over_and_complete),
    Scenario("recover-own", claimed_by_a, lambda w, q, _: q.recover_own("A")),
    Scenario("recover-stale", held_by_dead_z, lambda w, q, _: q.recover_stale()),
    Scenario("recover-all", claimed_by_a, lambda w, q, _: q.recover_all()),
    Scenario("requeue", in_failed, lambda w, q, _: q.requeue(NAME),
             may_fail=True),
]


def count_ops(scenario: Scenario) -> int:
    world = World(on_finish=scenario.on_finish)
    ctx = scenario.setup(world)
    q, store = world.queue()
    scenario.op(world, q, ctx)
    return len(store.ops)


CASES = [(s, i) for s in SCENARIOS for i in range(1, count_ops(s) + 1)]


def test_every_scenario_has_store_operations() -> None:
    counts = {s.id: count_ops(s) for s in SCENARIOS}
    assert all(n >= 1 for n in counts.values()), counts
    assert len(CASES) >= 80, len(CASES)  # the systematic matrix is real, not a sample


def _crash(scenario: Scenario, i: int) -> tuple[World, bool]:
    world = World(on_finish=scenario.on_finish)
    ctx = scenario.setup(world)
    q, store = world.queue(crash_after=i)
    with pytest.raises(Crash):
        scenario.op(world, q, ctx)
    assert len(store.ops) == i
    world.check_never_lost()
    return world, world.committed(NAME)


def _settle(world: World, committed: bool, runs_before: int, may_fail: bool) -> None:
    if not world.submitted:  # a crashed submit may or may not have happened
        assert not world.pending() or world.keys(layout.WAIT) == {NAME}
        if world.keys(layout.WAIT):
            world.submitted[NAME] += 1
    world.drain()
    failed = {NAME} if may_fail and NAME in world.keys(layout.FAILED) else set()
    world.check_settled(failed=failed)
    if committed:  # invariant 2: a committed completion is never processed again
        assert world.runs(NAME) == runs_before, world.handled
    elif not failed and world.submitted:
        assert world.runs(NAME) >= 1


@pytest.mark.parametrize(("scenario", "i"), CASES,
                         ids=[f"{s.id}-after-op{i}" for s, i in CASES])
def test_crash_then_same_worker_restarts(scenario: Scenario, i: int) -> None:
    world, committed = _crash(scenario, i)
    runs_before = world.runs(NAME)
    q, _ = world.queue()
    q.recover_own("A")  # invariant 3: at once, no waiting for expiry
    held = world.lease(NAME)
    assert held is None or held.worker != "A" or held.intent.value != "held", held
    _settle(world, committed, runs_before, scenario.may_fail)


@pytest.mark.parametrize(("scenario", "i"), CASES,
                         ids=[f"{s.id}-after-op{i}" for s, i in CASES])
def test_crash_then_another_worker_takes_over(scenario: Scenario, i: int) -> None:
    world, committed = _crash(scenario, i)
    runs_before = world.runs(NAME)
    if world.keys(layout.LEASES):
        # invariant 3: one lease TTL (+ margin + scan interval) later, B gets it
        world.expire()
        q, _ = world.queue(seed=3)
        job = q.claim("B")
        if job is not None:
            world.handled.append((job.name, "B", job.attempt))
            job.complete()
    _settle(world, committed, runs_before, scenario.may_fail)


# ---------------------------------------------------------------------- fencing (invariant 4)
FENCED_OPS: dict[str, Callable[[Job], object]] = {
    "renew": lambda j: j.renew(),
    "complete": lambda j: j.complete(b"late"),
    "fail": lambda j: j.fail("late"),
    "dead": lambda j: j.fail("late", retry=False),
    "release": lambda j: j.release(),
}


@pytest.mark.parametrize("op", list(FENCED_OPS))
def test_fenced_worker_cannot_change_state(op: str) -> None:
    world = World()
    job_a = claimed_by_a(world)  # A freezes here (SIGSTOP) past its lease TTL
    world.expire()
    q, _ = world.queue(seed=1)
    job_b = q.claim("B")
    assert job_b is not None and job_b.generation == job_a.generation + 1
    before = world.mem.snapshot()
    with pytest.raises(LeaseLost):
        FENCED_OPS[op](job_a)  # A wakes up and tries to act
    assert world.mem.snapshot() == before
    assert job_a.lost
    job_b.complete()
    world.check_settled()


def test_an_orphan_in_processing_is_adopted_after_one_ttl() -> None:
    """A request in processing/ with no lease (the seed's copy-then-delete died between its
    two steps, or somebody copied it there by hand) is processed, once."""
    world = World()
    world.submit(NAME)
    world.mem.copy(layout.key(layout.WAIT, NAME), layout.key(layout.PROCESSING, NAME))
    world.mem.delete(layout.key(layout.WAIT, NAME))
    q, _ = world.queue()
    assert q.claim("B") is None  # too young to be an orphan: maybe a claim in progress
    world.expire()
    job = q.claim("B")
    assert job is not None and job.name == NAME and job.attempt == 1
    world.handled.append((job.name, "B", job.attempt))
    job.complete()
    world.check_settled()
    assert world.runs(NAME) == 1


def test_a_dead_letter_rolled_forward_by_another_worker_keeps_its_attempt_count() -> None:
    world = World(max_attempts=3)
    job = claimed_by_a(world)
    q, _ = world.queue(crash_after=1)  # dies right after committing x1
    job.queue = q
    with pytest.raises(Crash):
        job.fail("poison", retry=False)
    world.expire()
    q2, _ = world.queue()
    assert q2.claim("B") is None  # rolls the dead letter forward; nothing to run
    record = q2.error_record(NAME)
    assert record is not None and record.attempts == 1 and record.worker == "A"
    assert world.places(NAME) == [layout.FAILED]
