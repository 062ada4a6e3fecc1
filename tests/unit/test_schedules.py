"""Randomized schedules (hypothesis) of everything at once: three workers claiming,
completing, failing, releasing and renewing; crashes after any store request; requests
applied but reported failed; workers stalling with a request in flight while the fleet moves
on; requests held in the network and applied late; the seed's reset, ``recover --all``,
requeue, purge and ``aws s3 rm`` between any two requests; re-submissions of the same and of
other bytes; lease expiries. In each ETag mode, after every store request nothing is lost;
at the end, after the fleet drains, nothing is in flight and no completed request ran again
(except through a late create-if-absent, PROTOCOL §7)."""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from s3q import layout
from s3q.errors import JobStateError, LeaseLost
from s3q.job import Job
from s3q.layout import State
from s3q.queue import Queue
from s3q.store import StoreUnavailable
from tests.unit import adversaries
from tests.unit.harness import Crash, StepStore
from tests.unit.world import EtagMode, World

NAMES = ["a_request.json", "n/b_request.json", "c_request.json"]
WORKERS = ["w0", "w1", "w2"]
EXAMPLES = int(os.environ.get("S3Q_HYPOTHESIS_EXAMPLES", "1000"))
OPERATORS = {
    "seed-reset": adversaries.seed_reset,
    "recover-all": adversaries.recover_all,
    "requeue": adversaries.requeue,
    "purge-wait": adversaries.purge(State.WAIT),
    "purge-failed": adversaries.purge(State.FAILED),
    "aws-rm-wait": adversaries.aws_rm_wait,
}
#: What an operation may raise when an adversary got in its way.
INTERFERENCE = (LeaseLost, JobStateError, StoreUnavailable)


class Fleet(RuleBasedStateMachine):
    etags: EtagMode = "md5"

    def __init__(self) -> None:
        super().__init__()
        self.world = World(max_attempts=3, etags=self.etags)
        self.queues: dict[str, tuple[Queue, StepStore]] = {}
        self.jobs: dict[str, list[Job]] = {w: [] for w in WORKERS}
        for w in WORKERS:
            self._restart(w)

    def _restart(self, worker: str) -> None:
        if worker in self.queues:  # the process died, and its threads with it
            _threads_die(self.queues[worker][0])
        self.queues[worker] = self.world.queue(seed=len(self.world.handled),
                                               worker=WORKERS.index(worker))
        self.jobs[worker] = []

    def _arm(self, store: StepStore, adversary: str, at: int) -> None:
        index = len(store.ops) + at
        if adversary == "crash":
            store.crash_after = index
        elif adversary in ("retry", "raise"):
            store.ambiguous[index] = adversary  # type: ignore[assignment]
        elif adversary == "stall":
            store.stall[index] = lambda: adversaries.fleet_moves_on(self.world, jobs=1)
        elif adversary == "lose":
            store.lose.add(index)
        elif adversary in OPERATORS:
            store.before[index] = lambda: OPERATORS[adversary](self.world, NAMES[at % 3])

    def _disarm(self, store: StepStore) -> None:
        store.crash_after = None
        store.ambiguous.clear()
        store.stall.clear()
        store.before.clear()
        store.lose.clear()

    # ------------------------------------------------------------------ rules
    @rule(name=st.sampled_from(NAMES), same=st.booleans())
    def submit(self, name: str, same: bool) -> None:
        self.world.submit(name, same=same)

    @rule(worker=st.sampled_from(WORKERS),
          adversary=st.sampled_from(["none", "crash", "retry", "raise", "stall", "lose",
                                     *OPERATORS]),
          at=st.integers(1, 6))
    def claim(self, worker: str, adversary: str, at: int) -> None:
        q, store = self.queues[worker]
        self._arm(store, adversary, at)
        try:
            job = q.claim(worker)
        except Crash:
            self._restart(worker)
            return
        except INTERFERENCE:
            return
        finally:
            self._disarm(store)
        if job is not None:
            self.world.ran(job.name, worker, job.attempt, job.read())
            self.jobs[worker].append(job)

    @rule(worker=st.sampled_from(WORKERS), pick=st.integers(0, 3),
          outcome=st.sampled_from(["complete", "fail", "dead", "release", "renew"]),
          adversary=st.sampled_from(["none", "crash", "retry", "raise", "stall", "lose",
                                     *OPERATORS]),
          at=st.integers(1, 6))
    def act(self, worker: str, pick: int, outcome: str, adversary: str, at: int) -> None:
        jobs = self.jobs[worker]
        if not jobs:
            return
        job = jobs[pick % len(jobs)]
        q, store = self.queues[worker]
        job.ctx = q.ctx
        self._arm(store, adversary, at)
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
        except Crash:
            self._restart(worker)
            return
        except INTERFERENCE:
            pass
        finally:
            self._disarm(store)
        if outcome != "renew" or job.lost:
            jobs.remove(job)

    @rule(worker=st.sampled_from(WORKERS))
    def deliver(self, worker: str) -> None:
        """Requests of this worker held in the network arrive now. A late create-if-absent
        may bring a settled request back for one more run (PROTOCOL §7)."""
        store = self.queues[worker][1]
        if store._lost:
            self.world.rerun_ok = True
        store.deliver()

    @rule(worker=st.sampled_from(WORKERS), recover=st.booleans())
    def crash_and_restart(self, worker: str, recover: bool) -> None:
        self._restart(worker)
        if recover:
            self.queues[worker][0].recover_own(worker)

    @rule(operator=st.sampled_from(list(OPERATORS)), name=st.sampled_from(NAMES))
    def operator(self, operator: str, name: str) -> None:
        OPERATORS[operator](self.world, name)

    @rule(seconds=st.sampled_from([1.0, 4.0, 12.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.world.clock.advance(seconds)

    # ------------------------------------------------------------------ checks
    @invariant()
    def never_lost(self) -> None:
        self.world.check_never_lost()

    def teardown(self) -> None:
        try:
            for w in WORKERS:  # everybody dies; the fleet that drains is new
                self.deliver(w)
                self._restart(w)
            self.world.drain()
            self.world.check_never_lost()
            state = self.world.state()
            for prefix in (layout.WAIT, layout.PROCESSING, layout.LEASES, layout.BODIES):
                assert not state[prefix], state
            for name in self.world.submitted:
                if layout.FAILED in self.world.places(name):
                    assert name in self.world.keys(layout.ERRORS), state
        finally:
            self.world.stop_threads()


def _threads_die(queue: Queue) -> None:
    """A crashed worker's lease keeper renews nothing more, and its thread ends (no close:
    a crash writes nothing)."""
    if queue._keeper is not None:
        queue._keeper.stop()


class OpaqueFleet(Fleet):
    etags = "opaque"


_SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=30, deadline=None)
Fleet.TestCase.settings = _SETTINGS
OpaqueFleet.TestCase.settings = _SETTINGS
TestFleetMD5 = Fleet.TestCase
TestFleetOpaque = OpaqueFleet.TestCase
