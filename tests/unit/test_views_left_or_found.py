"""Views a holder finds or leaves behind (PROTOCOL §4 w1/w2, v2/v3 and purge, §7): a view
it adopted (a re-submission of the same bytes) is never its to delete; with MD5 ETags it
deletes no view it made in wait/ once its lease was taken, before its deadline or after;
and a purged retry takes the processing/ view its last holder left with it.
``World.missing`` knows a request by its bytes, so a lost re-submission of bytes that
already ran once would pass ``check_never_lost``: these tests count the handler's runs."""

from __future__ import annotations

import pytest

from s3q import layout
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.queue import Queue
from tests.unit.adversaries import fleet_moves_on
from tests.unit.harness import Hook, StepStore
from tests.unit.scenarios import NAME, _own, claimed_by_a
from tests.unit.world import ETAG_MODES, EtagMode, World


def _fleet_completes_then_producer_resubmits(world: World) -> None:
    fleet_moves_on(world, jobs=1)  # takeover, release, another worker runs and completes it
    assert world.lease(NAME) is None and NAME not in world.keys(layout.WAIT)
    world.submit(NAME, same=True)  # a new request of the same bytes (invariant 5)


def _completes(world: World, q: Queue, worker: str) -> None:
    """``worker`` claims NAME at once, runs it and completes it."""
    taken = q.claim(worker)
    assert taken is not None and taken.name == NAME, world.state()
    world.ran(NAME, worker, taken.attempt, taken.read())
    taken.complete()


def _a_fails_fenced(world: World, job: Job, *, stall: dict[int, Hook] | None = None,
                    before: dict[int, Hook] | None = None) -> StepStore:
    """A's fail() (w1, w2, …) on a store with these adversaries: its commit is refused,
    the lease having been taken from it. Returns that store (its ops)."""
    q, store = world.queue()
    store.stall.update(stall or {})
    store.before.update(before or {})
    with pytest.raises(LeaseLost):
        _own(job, q).fail("boom")
    return store


def _the_resubmission_runs(world: World) -> None:
    """Once the fleet drained: A's run, the fleet's, and the re-submission's."""
    world.drain()
    assert world.runs(NAME) == 3, (world.handled, world.state())
    world.check_never_lost()


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_late_w1_does_not_delete_a_later_resubmission_it_found(etags: EtagMode) -> None:
    """A's handler fails; its w1 (PUT! wait/NAME) is held in the network while the fleet
    takes the lease over and completes the request, and the producer submits the same
    bytes again. w1 lands on the re-submission (412); A finds its bytes there and takes it
    for its view; w2 finds the lease gone. The view was not A's making: it stays, and the
    re-submission runs."""
    world = World(etags=etags)
    job = claimed_by_a(world)
    _a_fails_fenced(world, job,  # w1 held in the network
                    stall={1: lambda: _fleet_completes_then_producer_resubmits(world)})
    _the_resubmission_runs(world)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_stalled_holder_does_not_delete_a_later_resubmission(etags: EtagMode) -> None:
    """No request held in the network, only a stall: a re-submission of the same bytes
    lands while A's handler runs; A's w1 finds it (412) and takes it for its view; A stalls
    before w2. The fleet takes over and completes the request (the re-submission with it),
    and the producer submits the same bytes once more. A wakes; w2 finds the lease gone;
    the newest submission stays and runs."""
    world = World(etags=etags)
    job = claimed_by_a(world)
    world.submit(NAME, same=True)  # while A's handler runs
    store = _a_fails_fenced(world, job,  # A stalls before w2
                            before={4: lambda: _fleet_completes_then_producer_resubmits(world)})
    assert store.ops[3].startswith(f"put= {layout.LEASES}"), store.ops  # w2, refused
    _the_resubmission_runs(world)


def test_a_view_it_made_in_time_is_not_deleted_after_the_deadline_with_md5_etags() -> None:
    """MD5 ETags: A's w1 creates the view, then A stalls before w2. The fleet takes over
    (its c2 deletes the view: same bytes, same ETag) and completes the request; the
    producer submits the same bytes again, whose ETag is the view's. A wakes past its
    deadline: w2 finds the lease gone, and A sends no delete: the re-submission runs."""
    world = World(etags="md5")
    job = claimed_by_a(world)
    store = _a_fails_fenced(world, job,  # A stalls before w2
                            before={2: lambda: _fleet_completes_then_producer_resubmits(world)})
    assert store.ops[0].startswith(f"put! {layout.WAIT}"), store.ops  # w1 made the view
    assert NAME in world.keys(layout.WAIT), world.state()  # the re-submission is there
    _the_resubmission_runs(world)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_fenced_holder_in_time_does_not_delete_a_later_resubmission(
        etags: EtagMode) -> None:
    """Well before A's deadline, an operator's `recover --all` fences A; another worker
    claims, runs and completes the request, and the producer submits the same bytes again.
    A's w2 is refused: the view it made is not undone with MD5 ETags (the re-submission has
    its ETag); with opaque ETags its own ETag names it alone. The re-submission runs."""
    from tests.unit.adversaries import recover_all

    world = World(etags=etags)
    job = claimed_by_a(world)

    def operator_fleet_producer() -> None:
        recover_all(world, NAME)
        _completes(world, world.queue(seed=3)[0], "B")
        world.submit(NAME, same=True)

    _a_fails_fenced(world, job,  # A is about to send w2, in time
                    before={2: operator_fleet_producer})
    _the_resubmission_runs(world)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_scanner_restoring_a_view_does_not_delete_a_later_resubmission(
        etags: EtagMode) -> None:
    """A due retry lost its view in wait/ (an `aws s3 rm`); the scanner fences the lease
    (v1) and writes the view again (v2). Before its v3, well within its deadline, another
    worker claims the retry (c1' needs no expiry), completes it, and the producer submits
    the same bytes again. v3 is refused; the re-submission runs."""
    world = World(etags=etags)
    world.submit(NAME)
    scanner_q, scanner = world.queue(worker=0, seed=0)
    other, _ = world.queue(worker=1, seed=1)
    job = scanner_q.claim("A")
    assert job is not None
    world.ran(NAME, "A", job.attempt, job.read())
    job.fail("boom")  # a retry lease, its view in wait/
    world.mem.delete(layout.key(layout.WAIT, NAME))  # the view goes
    fired: list[bool] = []

    def after_each_op() -> None:
        world.observe()
        if scanner.ops[-1] == f"put! {layout.key(layout.WAIT, NAME)}" and not fired:
            fired.append(True)  # v2 just wrote the view: the scanner pauses here
            _completes(world, other, "B")
            world.submit(NAME, same=True)

    scanner.observe = after_each_op
    for _ in range(100):  # until the retry is due and unclaimed long enough for v0…v3
        world.clock.advance(1.0)
        scanner_q.scan("A")
        if fired:
            break
    assert fired, world.state()
    _the_resubmission_runs(world)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_purged_retry_does_not_run_again_from_its_leftover_processing_view(
        etags: EtagMode) -> None:
    """A's handler fails; fail() commits the retry (w2) and dies before w3, so
    processing/NAME is left, recorded by no lease. The operator cancels the waiting request
    with `s3q purge wait`: the leftover view goes with it, and once the fleet has drained
    (its scans adopt orphans a lease_ttl old) the request has not run again."""
    from s3q.layout import State
    from tests.unit.adversaries import purge
    from tests.unit.harness import Crash

    world = World(etags=etags)
    job = claimed_by_a(world)  # its processing/ view is written at the claim (c3)
    q, _ = world.queue(crash_after=2)  # w1, w2, then death before w3
    with pytest.raises(Crash):
        _own(job, q).fail("boom")
    lease = world.lease(NAME)
    assert lease is not None and lease.intent.value == "retry"
    assert NAME in world.keys(layout.PROCESSING)
    purge(State.WAIT)(world, NAME)  # the operator cancels it
    assert world.lease(NAME) is None and NAME not in world.keys(layout.WAIT)
    assert NAME not in world.keys(layout.PROCESSING), world.state()
    world.expire()
    world.drain()
    assert world.runs(NAME) == 1, world.handled
