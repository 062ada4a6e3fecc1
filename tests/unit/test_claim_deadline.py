"""A claim whose deadline passes at c2 (PROTOCOL §4 claim, c2): a c2 the deadline stopped
before its first try was never sent, so a fresh claim gives its lease up and the request,
still in wait/, is claimable at once; one stopped before a retry may have been applied, so
the lease (which holds the request) is kept for a takeover."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from s3q import layout
from s3q.backends.delegating import DelegatingStore
from s3q.queue import Queue
from tests.unit.scenarios import NAME, SCENARIOS, dry_run
from tests.unit.world import TTL, World, config

#: The index of c2 among the store requests of a claim (the "claim" scenario's dry run).
C2 = next(i for i, op in enumerate(dry_run(next(s for s in SCENARIOS if s.id == "claim")), 1)
          if op.startswith(f"delete= {layout.WAIT}"))


def test_a_c2_stopped_before_its_first_try_gives_the_lease_up() -> None:
    world = World()
    world.submit(NAME)
    q, store = world.queue()
    store.before[C2] = lambda: world.clock.advance(TTL)  # a stall
    job = q.claim("A")
    # the stalled claim gave its lease up, so the same call's next LIST found the request
    # still in wait/ and claimed it afresh (kept, the lease would have refused it: c1')
    assert store.ops.count(f"put! {layout.key(layout.LEASES, NAME)}") == 2, store.ops
    assert job is not None and job.name == NAME and job.attempt == 1
    lease = world.lease(NAME)
    assert lease is not None and lease.gen == 1 and lease.claim == job.lease.claim


def test_a_c2_stopped_before_a_retry_keeps_the_lease() -> None:
    """The first try of c2 takes effect but its answer is lost; the deadline passes before
    the SDK's retry, whose guard stops it: the request is now only in the lease, which
    stays; a takeover after it expired releases it, and it runs once."""

    class AppliedThenLate(DelegatingStore):
        def _call(self, op: str, args: dict[str, Any], fn: Callable[[], Any]) -> Any:
            if op == "delete" and args["key"].startswith(layout.WAIT):
                fn()  # the first try takes effect; its answer never comes
                world.clock.advance(TTL)  # the process stalls
                args["guard"]()  # the SDK checks the guard before its retry
            return fn()

    world = World()
    world.submit(NAME)
    q = Queue(AppliedThenLate(world.mem), config(), rng=random.Random(0),
              monotonic=world.clock)
    assert q.claim("A") is None
    assert NAME not in world.keys(layout.WAIT)  # the first try deleted it
    lease = world.lease(NAME)
    assert lease is not None and lease.worker == "A"  # kept: it holds the only copy
    world.check_never_lost()
    world.expire()
    world.drain()
    assert world.runs(NAME) == 1, world.handled
    world.check_never_lost()
