"""The adversaries of docs/PROTOCOL.md §2 beyond a crash, each against every operation.

First the regression tests of issue 8's cases 1-7 (each lost a request, or ran a finished
one again, on s3q 0.1), then the systematic matrices, each in both ETag modes:

* an operator or producer acting between any two store requests of any operation;
* any write of any operation held by a stale worker (stalled after its send-time check)
  while the fleet moves on, then applied, and the worker carrying on;
* any write lost in the network (the caller sees a timeout), applied after the fleet moved
  on;
* any write applied but reported as failed, then retried by the SDK or given up;
* the lease keeper's renewal racing every request of complete, fail and release.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from functools import partial

import pytest

from s3q import layout
from s3q.errors import JobStateError, LeaseLost
from s3q.job import Job
from s3q.queue import Queue
from s3q.records import Intent
from s3q.store import StoreUnavailable
from tests.unit.adversaries import (
    INTRUDERS,
    fleet_fails_it,
    fleet_moves_on,
    recover_all,
    seed_reset,
)
from tests.unit.harness import StepStore
from tests.unit.scenarios import NAME, SCENARIOS, Scenario, claimed_by_a, dry_run
from tests.unit.world import ETAG_MODES, EtagMode, World

WRITES = ("put", "put!", "put=", "copy", "copy!", "delete", "delete=")
#: Requests that create an object only if absent: held in the network and applied after
#: the request was settled, they can bring it back (a duplicate run, PROTOCOL §7).
CREATES = ("put!", "copy!")
#: What an operation may raise when an adversary got in its way (never a loss by itself).
INTERFERENCE = (LeaseLost, JobStateError, StoreUnavailable)


def _claim_ops(world: World) -> list[str]:
    probe = World(etags=world.etags, large=world.large)
    probe.submit(NAME)
    q, store = probe.queue()
    assert q.claim("A") is not None
    return store.ops


def _quiet(world: World) -> None:
    """After the surviving fleet drained: nothing lost, nothing stuck in flight."""
    world.drain()
    world.check_never_lost()
    state = world.state()
    for prefix in (layout.WAIT, layout.PROCESSING, layout.LEASES, layout.BODIES):
        assert not state[prefix], state


# ====================================================================== issue 8, cases 1-7
@pytest.mark.parametrize("etags", ETAG_MODES)
@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("operator", ["seed-reset", "recover-all"])
def test_case1_an_operator_reset_during_a_claim_loses_nothing(
        operator: str, large: bool, etags: EtagMode) -> None:
    """Case 1: the seed's reset (or recover --all) between any two requests of a claim."""
    reset = seed_reset if operator == "seed-reset" else recover_all
    for i in range(1, len(_claim_ops(World(etags=etags, large=large))) + 1):
        world = World(etags=etags, large=large)
        world.submit(NAME)
        q, store = world.queue()
        store.before[i] = partial(reset, world, NAME)
        job = q.claim("A")
        if job is not None:
            world.ran(job.name, "A", job.attempt, job.read())
            with contextlib.suppress(LeaseLost):  # recover --all fenced it: back to wait/
                job.complete()
        world.check_never_lost()
        _quiet(world)
        assert world.runs(NAME) >= 1


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_case1_a_late_c3_after_a_takeover_and_a_retry_loses_nothing(etags: EtagMode) -> None:
    """Case 1, without an operator: the claim's delete from wait/ is held in the network,
    another worker takes over, runs the request, fails it back into wait/ (the same bytes),
    and then the delete arrives."""
    world = World(etags=etags)
    world.submit(NAME)
    q, store = world.queue()
    c3 = next(i for i, op in enumerate(_claim_ops(world), 1) if op.startswith("delete= wait/"))
    store.lose.add(c3)
    with pytest.raises(StoreUnavailable):
        q.claim("A")
    fleet_fails_it(world, jobs=1)
    assert world.keys(layout.WAIT) == {NAME}  # back in wait/ for its retry
    store.deliver()  # the held DeleteObject If-Match arrives
    world.check_never_lost()
    _quiet(world)
    assert world.runs(NAME) == 2


@pytest.mark.parametrize("etags", ETAG_MODES)
@pytest.mark.parametrize("large", [False, True])
def test_case2_a_stale_owners_delayed_delete_loses_nothing(large: bool, etags: EtagMode) -> None:
    """Case 2: A fails the request (retry) and stalls before its delete of processing/
    lands; B takes the retry and holds it; A's delete then removes B's view; B fails too."""
    world = World(etags=etags, large=large)
    job = claimed_by_a(world)
    q, store = world.queue()
    job.ctx = q.ctx
    held: list[Job] = []

    def b_claims() -> None:
        world.expire()
        qb, _ = world.queue(seed=5)
        job_b = qb.claim("B")
        assert job_b is not None
        world.ran(job_b.name, "B", job_b.attempt, job_b.read())
        held.append(job_b)

    ops = len(dry_run(next(s for s in SCENARIOS if s.id == "fail-retry"), etags))
    store.stall[ops] = b_claims  # w4, the last request of fail()
    job.fail("A's handler failed")
    assert store.ops[-1].startswith("delete= processing/")
    held[0].fail("B's handler failed")
    world.check_never_lost()
    _quiet(world)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_case3_a_resubmission_is_never_overwritten(etags: EtagMode) -> None:
    """Case 3: a new submission of NAME (other bytes) lands between any two requests of a
    failure going back to wait/: both requests run."""
    scenario = next(s for s in SCENARIOS if s.id == "fail-retry")
    for i in range(1, len(dry_run(scenario, etags)) + 1):
        world = World(etags=etags)
        job = claimed_by_a(world)
        q, store = world.queue()
        job.ctx = q.ctx
        store.before[i] = partial(world.submit, NAME)
        job.fail("boom")
        world.check_never_lost()
        _quiet(world)
        bodies = {h[3] for h in world.handled}
        assert bodies == {b for _, b in world.submissions}, (i, world.handled)


@pytest.mark.parametrize("etags", ETAG_MODES)
@pytest.mark.parametrize("outcome", ["complete", "fail", "release"])
def test_case4_a_renewal_racing_the_final_write_changes_nothing(outcome: str,
                                                                etags: EtagMode) -> None:
    """Case 4: the lease keeper renews while complete/fail/release is under way (at each of
    its requests): the outcome stands and the request is not run again."""
    scenario = next(s for s in SCENARIOS if s.id == {"complete": "complete-move",
                                                     "fail": "fail-retry",
                                                     "release": "release"}[outcome])
    for i in range(1, len(dry_run(scenario, etags)) + 1):
        world = World(etags=etags)
        job = claimed_by_a(world)
        q, store = world.queue()
        job.ctx = q.ctx
        renewals: list[BaseException | None] = []
        store.before[i] = partial(_renew_in_background, job, renewals)
        getattr(job, outcome)(*(["boom"] if outcome == "fail" else []))
        assert not job.lost
        _join_renewals(renewals)
        if outcome == "complete":
            assert world.lease(NAME) is None and world.places(NAME) == [layout.FINISH]
        else:
            lease = world.lease(NAME)
            assert lease is not None and lease.intent is Intent.RETRY, (i, world.state())
        _quiet(world)
        assert world.runs(NAME) == (1 if outcome == "complete" else 2)


_threads: list[threading.Thread] = []


def _renew_in_background(job: Job, outcomes: list[BaseException | None]) -> None:
    """The keeper's thread renews now; the caller's request waits a moment for it (it
    would have gone through by then, were nothing serializing the two)."""
    def renew() -> None:
        try:
            job.renew()
            outcomes.append(None)
        except BaseException as exc:  # recorded: a renewal may see the job over
            outcomes.append(exc)

    thread = threading.Thread(target=renew, daemon=True)
    _threads.append(thread)
    thread.start()
    thread.join(0.2)


def _join_renewals(outcomes: list[BaseException | None]) -> None:
    while _threads:
        _threads.pop().join(10)
    assert all(o is None or isinstance(o, JobStateError) for o in outcomes), outcomes


@pytest.mark.parametrize("etags", ETAG_MODES)
@pytest.mark.parametrize("mode", ["retry", "raise"])
def test_case5_an_ambiguous_renewal_does_not_lose_the_job(mode: str, etags: EtagMode) -> None:
    """Case 5: a renewal took effect but was reported failed (retried by the SDK, or given
    up): the job keeps its lease and completes; the request is not run again."""
    world = World(etags=etags)
    job = claimed_by_a(world)
    q, store = world.queue()
    job.ctx = q.ctx
    store.ambiguous[1] = mode  # type: ignore[assignment]
    if mode == "raise":
        with pytest.raises(StoreUnavailable):
            job.renew()
    job.renew()
    assert not job.lost
    job.complete()
    _quiet(world)
    assert world.runs(NAME) == 1


@pytest.mark.parametrize("large", [False, True])
def test_case6_opaque_etags_claim_finish_and_count_attempts(large: bool) -> None:
    """Case 6: with a new ETag for every write (SSE-KMS), requests are claimed and finished,
    and a poison request reaches failed/ after exactly max_attempts attempts."""
    world = World(etags="opaque", max_attempts=3, large=large)
    world.submit("ok_request.json", "poison_request.json")
    world.drain(fail={"poison_request.json"})
    world.check_settled(failed={"poison_request.json"})
    assert world.runs("ok_request.json") == 1
    assert [h[2] for h in world.handled if h[0] == "poison_request.json"] == [1, 2, 3]
    q, _ = world.queue()
    record = q.error_record("poison_request.json")
    assert record is not None and record.attempts == 3


def test_case6_a_multipart_upload_keeps_its_count_and_its_backoff() -> None:
    """Case 6: a request uploaded in parts (ETag ``…-2``, which its copies do not share)
    waits out its backoff and counts its attempts like any other."""
    world = World(max_attempts=3, backoff=10.0)
    body = world.next_body(NAME)
    world.mem.put_multipart(layout.key(layout.WAIT, NAME), body, parts=2)
    world.submissions.append((NAME, body))
    q, _ = world.queue()
    job = q.claim("A")
    assert job is not None and job.attempt == 1 and job.read() == body
    world.ran(NAME, "A", 1, body)
    job.fail("boom")
    lease = world.lease(NAME)
    assert lease is not None and lease.not_before > world.clock()
    assert q.claim("A") is None  # the backoff holds
    world.clock.advance(lease.not_before - world.clock() + 1.5)
    job = q.claim("A")
    assert job is not None and job.attempt == 2
    world.ran(NAME, "A", 2, body)
    job.complete()
    world.check_settled()


@pytest.mark.parametrize("etags", ETAG_MODES)
@pytest.mark.parametrize("large", [False, True])
def test_case7_a_second_dead_letter_keeps_the_first(large: bool, etags: EtagMode) -> None:
    """Case 7: a later dead letter of NAME displaces the earlier one, with its error
    record, to .s3q/earlier/ instead of replacing it."""
    world = World(etags=etags, large=large)
    for attempt in (1, 2):
        world.submit(NAME)
        q, _ = world.queue(seed=attempt)
        job = q.claim("A")
        assert job is not None
        world.ran(NAME, "A", job.attempt, job.read())
        job.fail(f"poison {attempt}", retry=False)
    first, second = (b for _, b in world.submissions)
    snapshot = world.mem.snapshot()
    assert snapshot[layout.key(layout.FAILED, NAME)] == second
    kept = [k for k in snapshot if k.startswith(layout.EARLIER)]
    assert len(kept) == 2, kept
    request = next(k for k in kept if "/request/" in k)
    error = next(k for k in kept if "/error/" in k)
    assert snapshot[request] == first
    assert b"poison 1" in snapshot[error]
    assert b"poison 2" in snapshot[layout.key(layout.ERRORS, NAME)]
    world.check_never_lost()


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_the_residual_window_is_exactly_what_protocol_7_says(etags: EtagMode) -> None:
    """PROTOCOL §7: a DeleteObject If-Match held in the network past the lease's expiry
    deletes a later object with the same bytes. A view loses nothing (above); a producer's
    re-submission of exactly the same bytes is deleted with MD5 ETags, and survives with
    opaque ones."""
    world = World(etags=etags)
    world.submit(NAME)
    q, store = world.queue()
    c3 = next(i for i, op in enumerate(_claim_ops(world), 1) if op.startswith("delete= wait/"))
    store.lose.add(c3)
    with pytest.raises(StoreUnavailable):
        q.claim("A")
    fleet_moves_on(world, jobs=1)  # B takes over, runs and finishes it
    world.submit(NAME, same=True)  # the producer sends the very same bytes again
    store.deliver()
    _quiet(world)
    assert world.runs(NAME) == (1 if etags == "md5" else 2)


# ====================================================================== the matrices
def _cases(kinds: tuple[str, ...] | None) -> list[tuple[Scenario, int, EtagMode]]:
    cases = []
    for etags in ETAG_MODES:
        for scenario in SCENARIOS:
            for i, op in enumerate(dry_run(scenario, etags), 1):
                if kinds is None or op.split()[0] in kinds:
                    cases.append((scenario, i, etags))
    return cases


ALL = _cases(None)
WRITE_CASES = _cases(WRITES)


def _ids(cases: list[tuple[Scenario, int, EtagMode]]) -> list[str]:
    return [f"{s.id}-op{i}-{e}" for s, i, e in cases]


@dataclass
class Run:
    """A scenario brought to its operation's precondition, ready to be armed and run."""

    scenario: Scenario
    world: World
    queue: Queue
    store: StepStore
    ctx: Job | None

    @classmethod
    def of(cls, scenario: Scenario, etags: EtagMode) -> Run:
        world = scenario.world(etags)
        ctx = scenario.setup(world)
        q, store = world.queue()
        return cls(scenario, world, q, store, ctx)

    def go(self) -> World:
        try:
            self.scenario.op(self.world, self.queue, self.ctx)
        except INTERFERENCE:
            _took_effect(self.scenario, self.world)
        return self.world


def _took_effect(scenario: Scenario, world: World) -> None:
    """A submit that failed for its caller may have taken effect (or take effect later)."""
    if scenario.id == "submit" and world.pending() and not world.submissions:
        world.submissions.append((NAME, world.next_body(NAME)))


@pytest.mark.parametrize("intruder", list(INTRUDERS))
@pytest.mark.parametrize(("scenario", "i", "etags"), ALL, ids=_ids(ALL))
def test_an_operator_or_producer_between_any_two_requests(
        scenario: Scenario, i: int, etags: EtagMode, intruder: str) -> None:
    run = Run.of(scenario, etags)
    run.store.before[i] = partial(INTRUDERS[intruder], run.world, NAME)
    world = run.go()
    world.check_never_lost()
    _quiet(world)


@pytest.mark.parametrize("fleet", ["completes", "fails"])
@pytest.mark.parametrize(("scenario", "i", "etags"), WRITE_CASES, ids=_ids(WRITE_CASES))
def test_a_stale_worker_at_any_write(scenario: Scenario, i: int, etags: EtagMode,
                                     fleet: str) -> None:
    """The worker stalls with write ``i`` sent; the fleet takes over and moves on; the write
    lands; the worker carries on (its later writes meet the fence or its deadline). A view
    in wait/ it created that way is deleted again where ETags are opaque; with MD5 ETags
    it is left (past the deadline a re-submission of the same bytes has its ETag): the
    request may run once more, and only then (PROTOCOL §7)."""
    run = Run.of(scenario, etags)
    run.store.stall[i] = partial(fleet_moves_on if fleet == "completes" else fleet_fails_it,
                                 run.world)
    op, key = dry_run(scenario, etags)[i - 1].split()[:2]
    run.world.rerun_ok = (etags == "md5" and op in CREATES
                          and key.startswith(layout.WAIT))
    world = run.go()
    world.check_never_lost()
    _quiet(world)


@pytest.mark.parametrize("fleet", ["completes", "fails"])
@pytest.mark.parametrize(("scenario", "i", "etags"), WRITE_CASES, ids=_ids(WRITE_CASES))
def test_a_write_held_in_the_network(scenario: Scenario, i: int, etags: EtagMode,
                                     fleet: str) -> None:
    """Write ``i`` times out for the caller, the fleet moves on, then it is applied. Nothing
    is lost; only a late create-if-absent (a lease or a view) may make the request run once
    more after it was completed (PROTOCOL §7), and nothing else may."""
    run = Run.of(scenario, etags)
    run.store.lose.add(i)
    world = run.go()
    (fleet_moves_on if fleet == "completes" else fleet_fails_it)(world)
    world.rerun_ok = dry_run(scenario, etags)[i - 1].split()[0] in CREATES
    run.store.deliver()
    _took_effect(scenario, world)
    world.check_never_lost()
    _quiet(world)


@pytest.mark.parametrize("mode", ["retry", "raise"])
@pytest.mark.parametrize(("scenario", "i", "etags"), WRITE_CASES, ids=_ids(WRITE_CASES))
def test_a_write_applied_but_reported_failed(scenario: Scenario, i: int, etags: EtagMode,
                                             mode: str) -> None:
    """Write ``i`` takes effect and the caller is told it failed: the SDK retries it, or the
    error reaches the caller (a worker then leaves the lease to expire). Nothing is lost,
    and a committed completion is never run again (the world checks every run)."""
    run = Run.of(scenario, etags)
    run.store.ambiguous[i] = mode  # type: ignore[assignment]
    world = run.go()
    world.check_never_lost()
    _quiet(world)
