"""Deterministic interleavings and crash injection for protocol tests.

Each simulated worker is a thread with its own :class:`Queue` over a :class:`StepStore`: a
wrapper of one shared :class:`MemoryStore` that asks a :class:`Scheduler` for its turn
before every store operation (so the schedule, not the OS, decides the interleaving) and
raises :class:`Crash` right after operation number ``crash_after`` took effect — a process
dying at that exact point. Time is a fake clock the test advances.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s3q.backends.memory import MemoryStore
from tests.delegating import DelegatingStore

T = TypeVar("T")


class Crash(BaseException):
    """The simulated death of a worker process (not an Exception: nothing catches it)."""


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Scheduler:
    """Grants store operations to workers in the order of ``schedule`` (worker indices,
    cycled); workers that have finished are skipped."""

    def __init__(self, schedule: Sequence[int], workers: int) -> None:
        self.schedule = list(schedule) or list(range(workers))
        self.pos = 0
        self.live = set(range(workers))
        self.cond = threading.Condition()

    def _current(self) -> int:
        for _ in range(len(self.schedule) * 2 + 1):
            w = self.schedule[self.pos % len(self.schedule)]
            if w in self.live:
                return w
            self.pos += 1
        return min(self.live)  # the schedule names no live worker: lowest goes

    def turn(self, worker: int) -> None:
        with self.cond:
            while self._current() != worker:
                if not self.cond.wait(timeout=10):
                    raise RuntimeError(f"scheduler deadlock: worker {worker} starved")

    def done_op(self) -> None:
        with self.cond:
            self.pos += 1
            self.cond.notify_all()

    def finished(self, worker: int) -> None:
        with self.cond:
            self.live.discard(worker)
            self.cond.notify_all()


@dataclass
class StepStore(DelegatingStore):
    """A MemoryStore seen by one worker: scheduled, counted, and crashable."""

    inner: MemoryStore
    worker: int = 0
    scheduler: Scheduler | None = None
    crash_after: int | None = None  # 1-based index of the op after which to crash
    ops: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        name = " ".join([op, *(args[k] for k in ("key", "src", "dst", "prefix") if k in args)])
        if self.scheduler is not None:
            self.scheduler.turn(self.worker)
        try:
            result = fn()
        except Exception as exc:  # a store error is an outcome too; the crash comes after
            self._after(name)
            raise exc
        self._after(name)
        return result

    def _after(self, name: str) -> None:
        self.ops.append(name)
        if self.scheduler is not None:
            self.scheduler.done_op()
        if self.crash_after is not None and len(self.ops) >= self.crash_after:
            raise Crash(f"worker {self.worker} crashed after op {len(self.ops)}: {name}")

    def close(self) -> None:
        pass  # the shared MemoryStore outlives each simulated worker


def run_workers(
    scripts: Sequence[Callable[[], None]], schedule: Sequence[int],
    scheduler: Scheduler,
) -> list[BaseException | None]:
    """Run one thread per script under ``scheduler``; return each script's exception."""
    outcomes: list[BaseException | None] = [None] * len(scripts)

    def body(i: int) -> None:
        try:
            scripts[i]()
        except BaseException as exc:  # Crash included: recorded, not propagated
            outcomes[i] = exc
        finally:
            scheduler.finished(i)

    threads = [threading.Thread(target=body, args=(i,), daemon=True)
               for i in range(len(scripts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        if t.is_alive():
            raise RuntimeError("a simulated worker hung")
    return outcomes
