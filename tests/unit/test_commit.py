"""complete without a separate commit write (docs/PROTOCOL.md §4, complete): an inline
request's completion commits by deleting its lease (d5, ``DEL=e``), so a short job costs
five requests (four with on_finish = delete); each answer that d5 can get is decided here,
with the fleet, a producer or the network acting between the steps (the later ones came
from an adversarial review: answers to d5 that were read wrongly, and a slow step)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from s3q import layout
from s3q.backends.delegating import DelegatingStore
from s3q.errors import LeaseLost
from s3q.records import Intent
from s3q.store import StoreError, StoreUnavailable
from tests.unit.adversaries import fleet_moves_on
from tests.unit.harness import Crash
from tests.unit.scenarios import NAME, claimed_by_a
from tests.unit.world import ETAG_MODES, EtagMode, World

T = TypeVar("T")
LEASE = layout.key(layout.LEASES, NAME)


@pytest.mark.parametrize(("on_finish", "first", "expected"), [
    ("move", False, ["get wait/", "put! .s3q/lease/", "delete= wait/", "put finish/",
                     "delete= .s3q/lease/"]),
    ("delete", False, ["get wait/", "put! .s3q/lease/", "delete= wait/",
                       "delete= .s3q/lease/"]),
    ("move", True, ["get wait/", "put! .s3q/lease/", "delete= wait/", "put= .s3q/lease/",
                    "put finish/", "delete= .s3q/lease/"]),
])
def test_a_short_job_costs_five_requests_four_with_delete(on_finish: str, first: bool,
                                                          expected: list[str]) -> None:
    """… and six with commit_before_finish (d1 first)."""
    world = World(on_finish=on_finish, commit_before_finish=first)  # type: ignore[arg-type]
    world.submit(NAME)
    q, store = world.queue()
    job = q.claim("A", view_after=1.0)  # as a worker claims: a job ending sooner has no view
    assert job is not None
    job.complete()
    # the request's own requests (the first claim also reads the scanner role, lists …)
    ops = [op.replace(NAME, "") for op in store.ops if op.endswith(NAME)]
    assert ops == expected
    assert world.lease(NAME) is None and world.done[world.submissions[0][1]] == 1
    assert world.keys(layout.FINISH) == ({NAME} if on_finish == "move" else set())


class AtCommit(DelegatingStore):
    """Runs ``before`` just before the commit (the lease's conditional delete) is sent, or
    ``between`` after it took effect and before the SDK's retry of it, whose answer the
    caller gets (an applied delete reported as failed, then retried)."""

    def __init__(self, inner: Any, *, before: Callable[[], None] | None = None,
                 between: Callable[[], None] | None = None) -> None:
        super().__init__(inner)
        self.before, self.between = before, between

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op != "delete" or args.get("key") != LEASE:
            return fn()
        if self.before is not None:
            hook, self.before = self.before, None
            hook()
        if self.between is not None:
            hook, self.between = self.between, None
            fn()
            hook()
            try:  # the SDK's retry: its answer says so (StoreError.retried)
                return fn()
            except StoreError as exc:
                exc.retried = True
                raise
        return fn()


def _a_at_commit(world: World, **hooks: Callable[[], None]) -> Any:
    job = claimed_by_a(world)
    job.ctx.store = AtCommit(job.ctx.store, **hooks)
    return job


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_takeover_before_the_commit_wins_and_the_request_runs_again(etags: EtagMode
                                                                      ) -> None:
    """The lease expired (A stalled) and the scan gave it back to wait/ (gen 2) before A's
    commit arrived: A's ``DEL=e`` finds a later generation; A's completion does not count,
    A's job is lost, and the fleet runs the request again. Nothing is lost."""
    world = World(etags=etags)

    def taken_over() -> None:
        world.expire()
        q, _ = world.queue(seed=5)
        q.recover_stale()

    job = _a_at_commit(world, before=taken_over)
    with pytest.raises(LeaseLost, match="before its completion committed"):
        job.complete()
    assert job.lost
    lease = world.lease(NAME)
    assert lease is not None and lease.gen == 2 and lease.intent is Intent.RETRY
    world.drain()
    world.check_settled()
    assert world.runs(NAME) == 2  # A's run did not commit: at-least-once


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_taker_that_finished_before_the_commit_arrived(etags: EtagMode) -> None:
    """The fleet took the request over and completed it before A's commit arrived: A's
    ``DEL=e`` finds no lease (404, to a first try): A's completion did not count (the
    fleet's did; had the taker dead-lettered it, "completed" would be false): LeaseLost."""
    world = World(etags=etags)
    job = _a_at_commit(world, before=lambda: fleet_moves_on(world))
    with pytest.raises(LeaseLost, match="before its completion committed"):
        job.complete()
    assert job.lost and world.lease(NAME) is None
    world.check_settled()
    assert world.runs(NAME) == 2


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_an_applied_commit_reported_failed_after_a_resubmission_was_claimed(
        etags: EtagMode) -> None:
    """A's commit took effect, but the answer was lost and the SDK retried it; meanwhile a
    re-submission of the name was claimed by B (a new lease, gen 1). The retry's 412 finds
    that lease: A's commit stands, and B's lease is left alone."""
    world = World(etags=etags)
    claims: list[Any] = []

    def resubmitted_and_claimed() -> None:
        world.submit(NAME)
        q, _ = world.queue(seed=6)
        claims.append(q.claim("B"))

    job = _a_at_commit(world, between=resubmitted_and_claimed)
    job.complete()
    assert not job.lost
    b = claims[0]
    assert b is not None and b.attempt == 1
    lease = world.lease(NAME)
    assert lease is not None and lease.worker == "B"
    world.ran(b.name, "B", b.attempt, b.read())
    b.complete()
    world.check_settled()
    first, second = (body for _, body in world.submissions)
    assert world.done[first] == 1 and world.done[second] == 1
    assert world.mem.get(layout.key(layout.FINISH, NAME))[0] == second


def test_a_commit_whose_answer_never_comes_leaves_the_request_to_recovery() -> None:
    """d5 fails outright (not applied): the lease stays held, expires, and the request runs
    again (at-least-once); finish/ already holds it, and is written again."""
    world = World()
    job = claimed_by_a(world)

    class Refuses(DelegatingStore):
        def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
            if op == "delete" and args.get("key") == LEASE:
                raise StoreUnavailable("connection reset")
            return fn()

    job.ctx.store = Refuses(job.ctx.store)
    with pytest.raises(StoreUnavailable):
        job.complete()
    assert world.lease(NAME) is not None and world.keys(layout.FINISH) == {NAME}
    world.drain()
    world.check_settled()
    assert world.runs(NAME) == 2


def test_a_completion_near_its_deadline_renews_before_writing_finish() -> None:
    """Past its deadline but before the lease expired (the settler was slow), the
    completion renews the lease first, so that d3 is sent instead of being refused by the
    guard and the request run again."""
    world = World()
    job = claimed_by_a(world)
    world.clock.advance(job.deadline.left() + 0.5)  # the deadline passed; not expired
    job.complete()
    assert not job.lost and world.lease(NAME) is None
    assert world.keys(layout.FINISH) == {NAME} and world.runs(NAME) == 1


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
    job = _a_at_commit(world, before=lambda: _dead_lettered_by_the_scan(world))
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

    job = _a_at_commit(world, before=dead_lettered_and_resubmitted)
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
