"""A small simulated deployment for protocol tests: one MemoryStore on a fake clock, any
number of workers (each its own Queue), a drain that plays "the surviving fleet", and the
five invariants of docs/PROTOCOL.md as checks."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from s3q import layout
from s3q.backends.memory import MemoryStore
from s3q.queue import Queue, QueueConfig
from s3q.records import CLOCK_MARGIN, Intent, Lease
from tests.unit.harness import FakeClock, Scheduler, StepStore

TTL = 10.0


def config(on_finish: Literal["move", "delete"] = "move", max_attempts: int = 3) -> QueueConfig:
    return QueueConfig(lease_ttl=TTL, max_attempts=max_attempts, retry_base_delay=1.0,
                       retry_max_delay=4.0, page_size=10, on_finish=on_finish)


@dataclass
class World:
    on_finish: Literal["move", "delete"] = "move"
    max_attempts: int = 3
    clock: FakeClock = field(default_factory=FakeClock)
    mem: MemoryStore = field(init=False)
    #: every handler run: (name, worker, attempt)
    handled: list[tuple[str, str, int]] = field(default_factory=list)
    #: names submitted (each submission counted)
    submitted: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.mem = MemoryStore("world", clock=self.clock)

    def queue(self, *, worker: int = 0, scheduler: Scheduler | None = None,
              crash_after: int | None = None, seed: int = 0) -> tuple[Queue, StepStore]:
        store = StepStore(self.mem, worker=worker, scheduler=scheduler,
                          crash_after=crash_after)
        q = Queue(store, config(self.on_finish, self.max_attempts),
                  rng=random.Random(seed))
        return q, store

    def submit(self, *names: str) -> None:
        q, _ = self.queue()
        for name in names:
            q.submit(name, f"body of {name}".encode())
            self.submitted[name] += 1

    def expire(self) -> None:
        """Let every lease expire and a scan come due."""
        self.clock.advance(TTL + CLOCK_MARGIN + TTL / 2 + 1)

    # ------------------------------------------------------------------ the fleet
    def drain(self, worker: str = "drainer", fail: set[str] | None = None,
              rounds: int = 200) -> None:
        """Process everything that can be processed, advancing time over backoffs and
        lease expiries, like a healthy fleet would."""
        q, _ = self.queue(seed=7)
        for _ in range(rounds):
            job = q.claim(worker)
            if job is not None:
                self.handled.append((job.name, worker, job.attempt))
                assert job.read() == f"body of {job.name}".encode()
                if fail and job.name in fail:
                    job.fail("handler error")
                else:
                    job.complete()
                continue
            if not self.pending():
                return
            self.expire()
        raise AssertionError(f"queue did not drain: {self.state()}")

    # ------------------------------------------------------------------ inspection
    def keys(self, prefix: str) -> set[str]:
        return {k[len(prefix):] for k in self.mem.snapshot() if k.startswith(prefix)}

    def pending(self) -> bool:
        return bool(self.keys(layout.WAIT) or self.keys(layout.PROCESSING)
                    or self.keys(layout.LEASES))

    def state(self) -> dict[str, set[str]]:
        return {p: self.keys(p) for p in (layout.WAIT, layout.PROCESSING, layout.FINISH,
                                          layout.FAILED, layout.LEASES)}

    def lease(self, name: str) -> Lease | None:
        body = self.mem.snapshot().get(layout.key(layout.LEASES, name))
        return None if body is None else Lease.from_bytes(body)

    def committed(self, name: str) -> bool:
        """Has a completion of ``name`` been committed (d1 took effect)?"""
        lease = self.lease(name)
        if lease is not None:
            return lease.intent is Intent.DONE
        if self.on_finish == "delete":
            return not self.places(name) and any(h[0] == name for h in self.handled)
        return name in self.keys(layout.FINISH)

    def places(self, name: str) -> list[str]:
        return [p for p in (layout.WAIT, layout.PROCESSING, layout.FINISH, layout.FAILED)
                if name in self.keys(p)]

    # ------------------------------------------------------------------ invariants
    def check_never_lost(self) -> None:
        """Invariant 1 (at any moment): every submitted request is somewhere, unless a
        completion deleted it."""
        for name in self.submitted:
            if not self.places(name):
                assert (self.on_finish == "delete" and any(
                    h[0] == name for h in self.handled)) or self.committed(name), (
                    f"{name} lost: {self.state()}")

    def check_settled(self, *, failed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """After recovery and a drain: each request in exactly one place (invariant 1),
        nothing in flight, no bookkeeping left behind."""
        state = self.state()
        assert not state[layout.WAIT], state
        assert not state[layout.PROCESSING], state
        assert not state[layout.LEASES], state
        for name in self.submitted:
            places = self.places(name)
            if name in failed:
                assert places == [layout.FAILED], (name, state)
                assert name in self.keys(layout.ERRORS), (name, state)
            elif self.on_finish == "move":
                assert places == [layout.FINISH], (name, state)
            else:
                assert places == [], (name, state)

    def runs(self, name: str) -> int:
        return sum(1 for h in self.handled if h[0] == name)
