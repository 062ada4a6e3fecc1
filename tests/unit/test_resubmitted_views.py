"""A holder's view in wait/ and a producer's re-submission of the same bytes (PROTOCOL §4
w1/w2, §7): a view the holder adopted is never its to delete, and with MD5 ETags it deletes
nothing after its deadline. ``World.missing`` knows a request by its bytes, so a lost
re-submission of bytes that already ran once would pass ``check_never_lost``: these tests
count the handler's runs instead."""

from __future__ import annotations

import pytest

from s3q import layout
from s3q.errors import LeaseLost
from tests.unit.adversaries import fleet_moves_on
from tests.unit.scenarios import NAME, claimed_by_a
from tests.unit.world import ETAG_MODES, EtagMode, World


def _fleet_completes_then_producer_resubmits(world: World) -> None:
    fleet_moves_on(world, jobs=1)  # takeover, release, another worker runs and completes it
    assert world.lease(NAME) is None and NAME not in world.keys(layout.WAIT)
    world.submit(NAME, same=True)  # a new request of the same bytes (invariant 5)


@pytest.mark.parametrize("etags", ETAG_MODES)
def test_a_late_w1_does_not_delete_a_later_resubmission_it_found(etags: EtagMode) -> None:
    """A's handler fails; its w1 (PUT! wait/NAME) is held in the network while the fleet
    takes the lease over and completes the request, and the producer submits the same
    bytes again. w1 lands on the re-submission (412); A finds its bytes there and takes it
    for its view; w2 finds the lease gone. The view was not A's making: it stays, and the
    re-submission runs."""
    world = World(etags=etags)
    job = claimed_by_a(world)
    q, store = world.queue()
    job.ctx = q.ctx
    store.stall[1] = lambda: _fleet_completes_then_producer_resubmits(world)
    with pytest.raises(LeaseLost):
        job.fail("boom")
    world.drain()
    # A's run, the fleet's run after the takeover, and the re-submission's
    assert world.runs(NAME) == 3, (world.handled, world.state())
    world.check_never_lost()


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
    q, store = world.queue()
    job.ctx = q.ctx
    store.before[4] = lambda: _fleet_completes_then_producer_resubmits(world)  # before w2
    with pytest.raises(LeaseLost):
        job.fail("boom")
    assert store.ops[3].startswith(f"put= {layout.LEASES}"), store.ops  # w2, refused
    world.drain()
    assert world.runs(NAME) == 3, (world.handled, world.state())
    world.check_never_lost()


def test_a_view_it_made_in_time_is_not_deleted_after_the_deadline_with_md5_etags() -> None:
    """MD5 ETags: A's w1 creates the view, then A stalls before w2. The fleet takes over
    (its c2 deletes the view: same bytes, same ETag) and completes the request; the
    producer submits the same bytes again, whose ETag is the view's. A wakes past its
    deadline: w2 finds the lease gone, and A sends no delete: the re-submission runs."""
    world = World(etags="md5")
    job = claimed_by_a(world)
    q, store = world.queue()
    job.ctx = q.ctx
    store.before[2] = lambda: _fleet_completes_then_producer_resubmits(world)  # before w2
    with pytest.raises(LeaseLost):
        job.fail("boom")
    assert store.ops[0].startswith(f"put! {layout.WAIT}"), store.ops  # w1 made the view
    assert NAME in world.keys(layout.WAIT), world.state()  # the re-submission is there
    world.drain()
    assert world.runs(NAME) == 3, (world.handled, world.state())
    world.check_never_lost()
