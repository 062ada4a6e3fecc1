"""The operations of docs/PROTOCOL.md §4 as test scenarios, shared by the crash-point and
adversary suites: ``setup`` brings a :class:`World` to an operation's precondition, ``op``
runs the operation on worker A's (crashable, adversarial) queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from s3q.job import Job
from s3q.queue import Queue
from tests.unit.world import EtagMode, World

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
    #: Requests larger than INLINE_MAX (a private body copy instead of the lease's bytes).
    large: bool = False
    #: QueueConfig.commit_before_finish: completions commit with d1, as large ones do.
    commit_before_finish: bool = False

    def world(self, etags: EtagMode = "md5") -> World:
        return World(on_finish=self.on_finish, etags=etags, large=self.large,
                     commit_before_finish=self.commit_before_finish)


def claimed_by_a(world: World) -> Job:
    world.submit(NAME)
    q, _ = world.queue()
    job = q.claim("A")
    assert job is not None
    world.ran(job.name, "A", job.attempt, job.read())
    return job


def _own(job: Job | None, q: Queue) -> Job:
    """Rebind a job claimed during setup to worker A's crashable queue."""
    assert job is not None
    job.ctx = q.ctx
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
    if job is None:  # an adversary got there first (the crash-point suite drains after)
        return
    w.ran(job.name, "A", job.attempt, job.read())
    job.complete()


def claim_and_complete(w: World, q: Queue, _: Job | None) -> None:
    job = q.claim("A")
    if job is None:  # an adversary got there first
        return
    w.ran(job.name, "A", job.attempt, job.read())
    job.complete(b"result")


def claim_quickly_and_complete(w: World, q: Queue, _: Job | None) -> None:
    """A short job: its processing/ view is deferred (never written: it ends sooner)."""
    job = q.claim("A", view_after=5.0)
    if job is None:
        return
    w.ran(job.name, "A", job.attempt, job.read())
    job.complete()


def claim_slowly_and_complete(w: World, q: Queue, _: Job | None) -> None:
    """A long job: its deferred view is written while it runs (as the lease keeper does)."""
    job = q.claim("A", view_after=5.0)
    if job is None:
        return
    w.ran(job.name, "A", job.attempt, job.read())
    w.clock.advance(5.0)
    job.write_view()
    job.complete()


def submit_through(w: World, q: Queue, _: Job | None) -> None:
    body = w.next_body(NAME)
    q.submit(NAME, body)
    w.submissions.append((NAME, body))  # a crash in submit: see test_crash_points._crash


_BASE = [
    Scenario("submit", lambda w: None, submit_through),
    Scenario("claim", lambda w: w.submit(NAME), lambda w, q, _: q.claim("A")),
    Scenario("lifecycle", lambda w: w.submit(NAME), claim_and_complete),
    Scenario("lifecycle-quick", lambda w: w.submit(NAME), claim_quickly_and_complete),
    Scenario("lifecycle-slow", lambda w: w.submit(NAME), claim_slowly_and_complete),
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
SCENARIOS = [*_BASE, *(replace(s, id=s.id + "-large", large=True) for s in _BASE
                       if s.id in ("lifecycle", "fail-retry", "fail-dead", "takeover",
                                   "recover-all", "requeue")),
             *(replace(s, id=s.id + "-commit-first", commit_before_finish=True) for s in _BASE
               if s.id in ("lifecycle-quick", "complete-move", "complete-delete"))]


def dry_run(scenario: Scenario, etags: EtagMode = "md5") -> list[str]:
    """The store requests ``scenario.op`` makes when nothing goes wrong, in order."""
    world = scenario.world(etags)
    ctx = scenario.setup(world)
    q, store = world.queue()
    scenario.op(world, q, ctx)
    return list(store.ops)
