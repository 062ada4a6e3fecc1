"""Two and three workers racing over one queue, interleaved operation by operation in a
forced order, with worker 0 crashing after each of its store operations in turn."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from s3q.records import Intent
from tests.unit.harness import Crash, Scheduler, run_workers
from tests.unit.world import ETAG_MODES, EtagMode, World

NAMES = ["a_request.json", "b/b_request.json", "c d%20é_request.json"]


def _schedules(workers: int) -> dict[str, list[int]]:
    fixed = {
        "alternate": list(range(workers)),
        "pairs": [w for w in range(workers) for _ in range(2)],
        "bursts": [w for w in range(workers) for _ in range(5)],
        "reversed": list(reversed(range(workers))),
    }
    for seed in range(6):
        rng = random.Random(seed)
        fixed[f"random{seed}"] = [rng.randrange(workers) for _ in range(200)]
    return fixed


#: (workers, schedule id, schedule, contended): "contended" workers shuffle their pages the
#: same way, so that they race for the same key at every claim.
CASES = [(n, sid, s, c, e) for n in (2, 3) for sid, s in _schedules(n).items()
         for c in (False, True) for e in ETAG_MODES]


def _script(world: World, q_and_store: tuple[object, object], worker: str,
            ) -> Callable[[], None]:
    from s3q.queue import Queue

    q = q_and_store[0]
    assert isinstance(q, Queue)

    def run() -> None:
        for _ in range(len(NAMES) + 2):
            job = q.claim(worker)
            if job is None:
                return
            world.ran(job.name, worker, job.attempt, job.read())
            job.complete()

    return run


def _run(workers: int, schedule: list[int], crash_after: int | None, contended: bool,
         etags: EtagMode) -> tuple[World, int, list[BaseException | None]]:
    world = World(etags=etags)
    world.submit(*NAMES)
    scheduler = Scheduler(schedule, workers)
    queues = [world.queue(worker=w, scheduler=scheduler, seed=0 if contended else w,
                          crash_after=crash_after if w == 0 else None)
              for w in range(workers)]
    scripts = [_script(world, queues[w], f"w{w}") for w in range(workers)]
    outcomes = run_workers(scripts, schedule, scheduler)
    return world, len(queues[0][1].ops), outcomes


@pytest.mark.parametrize(("workers", "sid", "schedule", "contended", "etags"), CASES,
                         ids=[f"{n}workers-{sid}{'-contended' * c}-{e}"
                              for n, sid, _, c, e in CASES])
def test_race_with_crash_at_every_point(workers: int, sid: str, schedule: list[int],
                                        contended: bool, etags: EtagMode) -> None:
    # No crash: every request processed exactly once.
    world, ops0, outcomes = _run(workers, schedule, None, contended, etags)
    assert outcomes == [None] * workers
    world.check_settled()
    assert sorted(h[0] for h in world.handled) == sorted(NAMES), world.handled

    for i in range(1, ops0 + 1):
        world, _, outcomes = _run(workers, schedule, i, contended, etags)
        assert isinstance(outcomes[0], Crash), (i, outcomes)
        assert outcomes[1:] == [None] * (workers - 1), (i, outcomes)
        world.check_never_lost()
        # What w0 held uncommitted may run again (at-least-once); nothing else may.
        may_repeat = {name for name in NAMES
                      if (lease := world.lease(name)) is not None
                      and lease.worker == "w0" and lease.intent is Intent.HELD}
        if i % 2:
            q, _ = world.queue()
            q.recover_own("w0")
        world.drain()
        world.check_settled()
        for name in NAMES:
            limit = 2 if name in may_repeat else 1
            assert 1 <= world.runs(name) <= limit, (i, name, world.handled)
