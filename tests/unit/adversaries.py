"""The actors of docs/PROTOCOL.md §2 other than s3q's own workers, as functions of a
:class:`World`: operators (the seed's reset, ``s3q recover --all``, ``requeue``, ``purge``,
``aws s3 rm``) and producers (re-submissions). Each can be run between any two store
requests of a worker (``StepStore.before``), and the stale-worker hooks (``stall``) move the
rest of the fleet on while a request of a worker is held.

Operators that delete requests on purpose (purge, ``aws s3 rm``) report what they removed
as *withdrawn*, so that the world's "never lost" check does not count it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from s3q import layout
from s3q.layout import State
from s3q.store import list_all
from tests.unit.world import World

Intruder = Callable[[World, str], None]


def seed_reset(world: World, name: str) -> None:
    """``aws s3 mv s3://B/processing/ s3://B/wait/ --recursive``: list, then for each key a
    CopyObject and an unconditional DeleteObject (the AWS CLI's own steps). What it moves is
    submitted again, by the operator: it may run once more (at-least-once). What its copy
    overwrites in wait/ (a waiting re-submission) the operator destroyed."""
    mem = world.mem
    for info in list(list_all(mem, layout.PROCESSING)):
        rest = layout.name_of(layout.PROCESSING, info.key)
        try:
            body, _ = mem.get(info.key)
        except Exception:
            continue
        world.withdraw(partial(mem.copy, info.key, layout.key(layout.WAIT, rest)))
        world.submissions.append((rest, body))
        mem.delete(info.key)


def recover_all(world: World, name: str) -> None:
    """``s3q recover --all --yes`` from an operator's laptop."""
    q, _ = world.queue(seed=11)
    q.recover_all(worker_id="operator")


def requeue(world: World, name: str) -> None:
    q, _ = world.queue(seed=12)
    q.requeue(name, worker_id="operator")


def purge(state: State) -> Intruder:
    def run(world: World, name: str) -> None:
        q, _ = world.queue(seed=13)
        world.withdraw(lambda: [q.purge(state, i) for i in list(q.ls(state))])
    return run


def aws_rm_wait(world: World, name: str) -> None:
    """``aws s3 rm s3://B/wait/NAME``: an unconditional delete, by hand."""
    world.withdraw(lambda: world.mem.delete(layout.key(layout.WAIT, name)))


def resubmit(same: bool) -> Intruder:
    def run(world: World, name: str) -> None:
        world.submit(name, same=same)
    return run


INTRUDERS: dict[str, Intruder] = {
    "seed-reset": seed_reset,
    "recover-all": recover_all,
    "requeue": requeue,
    "purge-wait": purge(State.WAIT),
    "purge-failed": purge(State.FAILED),
    "purge-finish": purge(State.FINISH),
    "aws-rm-wait": aws_rm_wait,
    "resubmit-same": resubmit(same=True),
    "resubmit-other": resubmit(same=False),
}


def fleet_moves_on(world: World, jobs: int = 3) -> None:
    """While a request of a stalled worker is held: its lease expires, and another worker
    takes over and processes what it can (completing it)."""
    world.expire()
    q, _ = world.queue(seed=21)
    for _ in range(jobs):
        job = q.claim("B")
        if job is None:
            return
        world.ran(job.name, "B", job.attempt, job.read())
        job.complete()


def fleet_fails_it(world: World, jobs: int = 3) -> None:
    """As :func:`fleet_moves_on`, but the other worker's handler fails: the request goes
    back to wait/ for a retry."""
    world.expire()
    q, _ = world.queue(seed=22)
    for _ in range(jobs):
        job = q.claim("B")
        if job is None:
            return
        world.ran(job.name, "B", job.attempt, job.read())
        job.fail("B's handler failed")
