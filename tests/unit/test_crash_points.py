"""A crash after every single store operation of every protocol operation.

For each operation, a dry run counts its store operations K; then for every i in 1..K a
fresh world runs the operation with the worker dying right after operation i took effect,
followed by recovery — the same worker restarting (own recovery) or, separately, the lease
expiring and another worker taking over — and a drain by the surviving fleet. The five
invariants of docs/PROTOCOL.md are checked after each.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from s3q import layout
from s3q.errors import LeaseLost
from s3q.job import Job
from tests.unit.harness import Crash
from tests.unit.scenarios import NAME, SCENARIOS, Scenario, claimed_by_a, dry_run
from tests.unit.world import ETAG_MODES, EtagMode, World


def count_ops(scenario: Scenario, etags: EtagMode = "md5") -> int:
    return len(dry_run(scenario, etags))


CASES = [(s, i, e) for e in ETAG_MODES for s in SCENARIOS
         for i in range(1, count_ops(s, e) + 1)]
IDS = [f"{s.id}-after-op{i}-{e}" for s, i, e in CASES]


def test_every_scenario_has_store_operations() -> None:
    counts = {s.id: count_ops(s) for s in SCENARIOS}
    assert all(n >= 1 for n in counts.values()), counts
    assert len(CASES) >= 200, len(CASES)  # the systematic matrix is real, not a sample


def _crash(scenario: Scenario, i: int, etags: EtagMode) -> tuple[World, bool]:
    world = scenario.world(etags)
    ctx = scenario.setup(world)
    q, store = world.queue(crash_after=i)
    with pytest.raises(Crash):
        scenario.op(world, q, ctx)
    assert len(store.ops) == i
    if world.pending() and scenario.id == "submit":  # the crashed submit took effect
        world.submissions.append((NAME, world.next_body(NAME)))
    world.check_never_lost()
    return world, any(world.done[body] for _, body in world.submissions)


def _settle(world: World, committed: bool, runs_before: int, may_fail: bool) -> None:
    world.drain()
    failed = {NAME} if may_fail and NAME in world.keys(layout.FAILED) else set()
    world.check_settled(failed=failed)
    if committed:  # invariant 2: a committed completion is never processed again
        assert world.runs(NAME) == runs_before, world.handled
    elif not failed and world.submitted:
        assert world.runs(NAME) >= 1


@pytest.mark.parametrize(("scenario", "i", "etags"), CASES, ids=IDS)
def test_crash_then_same_worker_restarts(scenario: Scenario, i: int, etags: EtagMode) -> None:
    world, committed = _crash(scenario, i, etags)
    runs_before = world.runs(NAME)
    q, _ = world.queue()
    q.recover_own("A")  # invariant 3: at once, no waiting for expiry
    held = world.lease(NAME)
    assert held is None or held.worker != "A" or held.intent.value != "held", held
    _settle(world, committed, runs_before, scenario.may_fail)


@pytest.mark.parametrize(("scenario", "i", "etags"), CASES, ids=IDS)
def test_crash_then_another_worker_takes_over(scenario: Scenario, i: int,
                                              etags: EtagMode) -> None:
    world, committed = _crash(scenario, i, etags)
    runs_before = world.runs(NAME)
    if world.keys(layout.LEASES):
        # invariant 3: one lease TTL (+ margin + scan interval) later, B gets it
        world.expire()
        q, _ = world.queue(seed=3)
        job = q.claim("B")
        if job is not None:
            world.ran(job.name, "B", job.attempt, job.read())
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


@pytest.mark.parametrize("etags", ETAG_MODES)
@pytest.mark.parametrize("op", list(FENCED_OPS))
def test_fenced_worker_cannot_change_state(op: str, etags: EtagMode) -> None:
    world = World(etags=etags)
    job_a = claimed_by_a(world)  # A freezes here (SIGSTOP) past its lease TTL
    world.expire()
    q, _ = world.queue(seed=1)
    job_b = q.claim("B")
    assert job_b is not None and job_b.generation > job_a.generation
    before = world.mem.snapshot()
    with pytest.raises(LeaseLost):
        FENCED_OPS[op](job_a)  # A wakes up and tries to act
    assert world.mem.snapshot() == before  # refused: by the fence, or by its deadline
    world.ran(job_b.name, "B", job_b.attempt, job_b.read())
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
    world.ran(job.name, "B", job.attempt, job.read())
    job.complete()
    world.check_settled()
    assert world.runs(NAME) == 1


def test_a_dead_letter_rolled_forward_by_another_worker_keeps_its_attempt_count() -> None:
    world = World(max_attempts=3)
    job = claimed_by_a(world)
    q, _ = world.queue(crash_after=1)  # dies right after committing x1
    job.ctx = q.ctx
    with pytest.raises(Crash):
        job.fail("poison", retry=False)
    world.expire()
    q2, _ = world.queue()
    assert q2.claim("B") is None  # rolls the dead letter forward; nothing to run
    record = q2.error_record(NAME)
    assert record is not None and record.attempts == 1 and record.worker == "A"
    assert world.places(NAME) == [layout.FAILED]
