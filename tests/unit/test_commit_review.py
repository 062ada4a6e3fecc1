"""Review of the inline completion's commit by the lease's deletion (d5): cases where d5's
answer is read wrongly."""

from __future__ import annotations

import pytest

from s3q import layout
from s3q.errors import LeaseLost
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


def _stalled_before_commit(world: World, hook: list) -> object:  # type: ignore[type-arg]
    """A claims and runs NAME; its completion's d5 is sent only after ``hook`` ran."""
    world.submit(NAME)
    q, store = world.queue()
    job = q.claim("A")
    assert job is not None
    world.ran(job.name, "A", job.attempt, job.read())

    original = store._call

    def _call(op, args, fn):  # noqa: ANN001, ANN202
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
        job.complete()  # type: ignore[attr-defined]


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
        job.complete()  # type: ignore[attr-defined]
    assert world.lease(NAME) is not None and world.lease(NAME).worker == "B"
