"""Review of the inline completion's commit by the lease's deletion (d5): cases where d5's
answer is read wrongly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from s3q import layout
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.store import StoreUnavailable
from tests.unit.scenarios import NAME
from tests.unit.world import ETAG_MODES, EtagMode, World

LEASE = layout.key(layout.LEASES, NAME)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_renewal_applied_unseen_does_not_pass_for_the_commit(etags: EtagMode) -> None:
    """The lease keeper's renewal took effect but was reported as failed (§2.3): the job
    still names the previous ETag. d5's ``DEL=e`` then gets 412, and the lease read back is
    A's own (same claim, same generation): the completion did not take effect, and must not
    be reported as committed. Version 2.0's d1 rebased on it (leases.write); d5 must too,
    else the lease stays ``held``, expires, and the request runs again although
    ``complete()`` returned (and with its last attempt, it is dead-lettered besides being
    in finish/)."""
    world = World(etags=etags)
    world.submit(NAME)
    q, store = world.queue()
    job = q.claim("A")
    assert job is not None
    world.ran(job.name, "A", job.attempt, job.read())
    store.ambiguous[len(store.ops) + 1] = "raise"  # the renewal's PUT=e: applied, then reset
    with pytest.raises(StoreUnavailable):
        job.renew()
    job.complete()  # returns: reported committed
    assert world.lease(NAME) is None, "complete() returned but A's held lease is still there"
    world.drain()
    world.check_settled()
    assert world.runs(NAME) == 1


def _stalled_before_commit(world: World, hook: list[Callable[[], None] | None]) -> Job:
    """A claims and runs NAME; its completion's d5 is sent only after ``hook`` ran."""
    world.submit(NAME)
    q, store = world.queue()
    job = q.claim("A")
    assert job is not None
    world.ran(job.name, "A", job.attempt, job.read())

    original = store._call

    def _call(op: str, args: dict[str, Any], fn: Callable[[], Any]) -> Any:
        if op == "delete" and args.get("key") == LEASE and hook[0] is not None:
            h, hook[0] = hook[0], None
            h()
        return original(op, args, fn)

    store._call = _call  # type: ignore[method-assign]
    return job


def _dead_lettered_by_the_scan(world: World) -> None:
    """A stalled past its lease; the scan took the request over on its last attempt and
    dead-lettered it ("worker A stopped renewing its lease ... max_attempts reached")."""
    world.expire()
    q, _ = world.queue(seed=5)
    q.recover_stale()
    assert layout.key(layout.FAILED, NAME) in world.mem.snapshot()


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_commit_that_finds_the_request_dead_lettered_is_not_reported_committed(
        etags: EtagMode) -> None:
    """First try of d5 gets 404: A's delete did not take effect (nobody retried it);
    the lease was taken over and the request dead-lettered. complete() must not return
    as if A's completion committed (the worker counts it completed, emits ``completed``)."""
    world = World(etags=etags, max_attempts=1)
    job = _stalled_before_commit(world, [lambda: _dead_lettered_by_the_scan(world)])
    with pytest.raises(LeaseLost):
        job.complete()


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_first_try_412_with_a_later_requests_lease_of_a_lower_gen_is_not_a_commit(
        etags: EtagMode) -> None:
    """As above, and then a re-submission of the name was claimed (a fresh lease, gen 1,
    not above A's gen 1): d5's first try gets 412 and the gen comparison reads it as
    "an earlier try of ours took effect", which no earlier try did."""
    world = World(etags=etags, max_attempts=1)

    def dead_lettered_and_resubmitted() -> None:
        _dead_lettered_by_the_scan(world)
        world.submit(NAME)
        q, _ = world.queue(seed=6)
        assert q.claim("B") is not None

    job = _stalled_before_commit(world, [dead_lettered_and_resubmitted])
    with pytest.raises(LeaseLost):
        job.complete()
    lease = world.lease(NAME)
    assert lease is not None and lease.worker == "B"


def test_the_observer_counts_only_a_commit_as_a_completion() -> None:
    """tests/unit/world.py (a6c2a05) counted *any* deletion of a held lease as a committed
    completion when, with on_finish = delete, the request was in no place: exactly what a
    loss looks like. Every suite's "never lost" check was blind to a held lease deleted by
    anything but d5 in that mode (and ``done`` then excuses the request for good)."""
    world = World(on_finish="delete")
    world.submit(NAME)
    q, store = world.queue()
    assert q.claim("A", view_after=5.0) is not None  # no view: the lease holds the only copy
    store.delete(LEASE, if_match=store.head(LEASE).etag)  # e.g. a wrong give-up of a claim
    with pytest.raises(AssertionError, match="lost"):
        world.check_never_lost()
    assert not world.done


def test_a_slow_step_of_the_completion_does_not_turn_a_success_into_a_dead_letter() -> None:
    """d2 (the result) takes long (SDK retries, a slow store): the deadline passes before
    d3 is sent, and the guard refuses it. Nothing renews between d2 and d5 (the renewal is
    looked at once, before d2), so the completion is abandoned with the lease ``held``: it
    expires, the scan counts the attempt as a dead worker's, and on the last attempt
    dead-letters a request whose handler succeeded (version 2.0 had committed at d1 and
    rolled it forward). The lease is still A's: renewing before each step keeps it."""
    world = World(max_attempts=1)
    world.submit(NAME)
    q, store = world.queue()
    job = q.claim("A", view_after=5.0)
    assert job is not None
    world.ran(job.name, "A", job.attempt, job.read())
    store.stall[len(store.ops) + 1] = lambda: world.clock.advance(job.deadline.left() + 0.5)
    job.complete(b"result")  # d2 slow; the lease has not expired (deadline + 0.5 s)
    assert world.lease(NAME) is None and world.keys(layout.FINISH) == {NAME}
    world.drain()
    world.check_settled()
    assert world.runs(NAME) == 1


@pytest.mark.parametrize("first", [False, True])
def test_a_crash_after_finish_was_written_on_the_last_attempt(first: bool) -> None:
    """A crash after d3 (finish/NAME written) and before d5, on the request's last attempt:
    the held lease expires, the scan counts the attempt as a dead worker's and dead-letters
    it. The request is then in finish/ (its handler succeeded) *and* in failed/ ("worker A
    stopped renewing its lease"): PROTOCOL §4 complete, its crash table. With
    commit_before_finish, d1 committed before d3 and the takeover rolls forward: finish/
    only."""
    from tests.unit.harness import Crash

    world = World(max_attempts=1, commit_before_finish=first)
    world.submit(NAME)
    q, store = world.queue()
    job = q.claim("A", view_after=5.0)
    assert job is not None
    world.ran(job.name, "A", job.attempt, job.read())
    d3 = 2 if first else 1  # PUT finish/NAME (after d1's PUT=e lease)
    store.crash_after = len(store.ops) + d3
    with pytest.raises(Crash):
        job.complete()
    assert store.ops[-1] == f"put {layout.key(layout.FINISH, NAME)}"
    assert world.keys(layout.FINISH) == {NAME}
    world.drain()
    assert world.keys(layout.FINISH) == {NAME}
    assert world.keys(layout.FAILED) == (set() if first else {NAME})
    assert world.runs(NAME) == 1
