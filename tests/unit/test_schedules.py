"""Randomized schedules (hypothesis): claims, completions, failures, releases, renewals,
crashes at any store operation, lease expiries and re-submissions, by three workers. After
every step nothing is lost; at the end, after the fleet drains, everything is settled and no
committed completion was ever processed again."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from s3q import layout
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.queue import Queue
from s3q.records import Intent
from tests.unit.harness import Crash, StepStore
from tests.unit.world import World

NAMES = ["a_request.json", "n/b_request.json", "c_request.json"]
WORKERS = ["w0", "w1", "w2"]
EXAMPLES = int(os.environ.get("S3Q_HYPOTHESIS_EXAMPLES", "1000"))


class Fleet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(max_attempts=3)
        self.queues: dict[str, tuple[Queue, StepStore]] = {}
        self.jobs: dict[str, list[Job]] = {w: [] for w in WORKERS}
        self.submissions: Counter[str] = Counter()
        self.committed_at: dict[str, int] = {}  # name -> submission count at commit
        for w in WORKERS:
            self._restart(w)

    def _restart(self, worker: str) -> None:
        self.queues[worker] = self.world.queue(seed=len(self.world.handled))
        self.jobs[worker] = []

    def _ran(self, job: Job, worker: str) -> None:
        # Invariant 2: no run of a name after its completion committed, unless re-submitted.
        assert self.submissions[job.name] > self.committed_at.get(job.name, 0), (
            f"{job.name} processed again after its completion was committed")
        self.world.handled.append((job.name, worker, job.attempt))

    # ------------------------------------------------------------------ rules
    @rule(name=st.sampled_from(NAMES))
    def submit(self, name: str) -> None:
        if name in self.world.keys(layout.WAIT) | self.world.keys(layout.PROCESSING):
            return  # replacing a waiting/in-flight request is S3's semantics, not ours
        self.world.submit(name)
        self.submissions[name] += 1

    @rule(worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> None:
        job = self.queues[worker][0].claim(worker)
        if job is not None:
            self._ran(job, worker)
            self.jobs[worker].append(job)

    @rule(worker=st.sampled_from(WORKERS), pick=st.integers(0, 3),
          outcome=st.sampled_from(["complete", "fail", "dead", "release", "renew"]),
          crash_after=st.none() | st.integers(1, 8))
    def act(self, worker: str, pick: int, outcome: str, crash_after: int | None) -> None:
        jobs = self.jobs[worker]
        if not jobs:
            return
        job = jobs[pick % len(jobs)]
        q, store = self.queues[worker]
        job.queue = q
        if crash_after is not None:
            store.crash_after = len(store.ops) + crash_after
        try:
            if outcome == "complete":
                job.complete()
            elif outcome == "fail":
                job.fail("handler error")
            elif outcome == "dead":
                job.fail("poison", retry=False)
            elif outcome == "release":
                job.release()
            else:
                job.renew()
        except LeaseLost:
            assert job.lost or self.world.lease(job.name) is None or (
                self.world.lease(job.name).claim != job.lease.claim)  # type: ignore[union-attr]
        except Crash:
            if outcome == "complete":
                lease = self.world.lease(job.name)
                if (lease is not None and lease.intent is Intent.DONE
                        and lease.claim == job.lease.claim) or lease is None:
                    self.committed_at[job.name] = self.submissions[job.name]
            self._restart(worker)
            return
        finally:
            store.crash_after = None
        if outcome == "complete" and job.finished and not job.lost:
            self.committed_at[job.name] = self.submissions[job.name]
        if outcome != "renew":
            jobs.remove(job)

    @rule(worker=st.sampled_from(WORKERS), recover=st.booleans())
    def crash_and_restart(self, worker: str, recover: bool) -> None:
        self._restart(worker)
        if recover:
            self.queues[worker][0].recover_own(worker)

    @rule(seconds=st.sampled_from([1.0, 4.0, 12.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    # ------------------------------------------------------------------ checks
    @invariant()
    def never_lost(self) -> None:
        for name, n in self.submissions.items():
            if n and not self.world.places(name):
                raise AssertionError(f"{name} lost: {self.world.state()}")

    def teardown(self) -> None:
        self.world.submitted = Counter(self.submissions)
        for w in WORKERS:  # everybody dies; the fleet that drains is new
            self._restart(w)
        q, _ = self.world.queue(seed=99)
        self.world.expire()
        for name in list(self.world.keys(layout.LEASES)):
            assert q.lease(name) is not None
        before = len(self.world.handled)
        self.world.drain()
        for name, worker, _ in self.world.handled[before:]:
            assert self.submissions[name] > self.committed_at.get(name, 0), (
                f"{name} processed again by {worker} after its completion was committed")
        state = self.world.state()
        assert not state[layout.WAIT] and not state[layout.PROCESSING], state
        assert not state[layout.LEASES], state
        for name, n in self.submissions.items():
            places = self.world.places(name)
            assert places, f"{name} lost: {state}"
            assert len(places) == 1 or n > 1, f"{name} in {places} after one submission"
            if layout.FAILED in places:
                assert name in self.world.keys(layout.ERRORS)


Fleet.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=30,
                                   deadline=None)
TestFleet = Fleet.TestCase
