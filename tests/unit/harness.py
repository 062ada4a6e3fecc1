"""Deterministic adversaries for protocol tests (docs/PROTOCOL.md §2).

Each simulated worker has its own :class:`Queue` over a :class:`StepStore`: a wrapper of one
shared :class:`MemoryStore` that counts the worker's store requests and, at any request
number ``i``, can

* ask a :class:`Scheduler` for its turn first (forced interleavings of workers);
* run another actor before the request is sent (``before[i]``: an operator, a producer);
* let the world move on *after* the request passed its send-time guard and *before* it is
  applied (``stall[i]``: a stale actor, or a request held in the network);
* apply it and report a failure (``ambiguous[i]``: ``"retry"`` re-sends it as the SDK does
  and returns what the retry gets; ``"raise"`` raises :class:`StoreUnavailable`);
* not apply it now (``lose[i]``): the caller sees :class:`StoreUnavailable`, and
  :meth:`StepStore.deliver` applies it later, whenever the test says;
* die right after it took effect (``crash_after``: a process crash at that exact point).

Time is a :class:`FakeClock` the test advances; it is both the store's clock and every
worker's monotonic clock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.store import Store, StoreError, StoreUnavailable

T = TypeVar("T")


#: The name whose completion is committing (d5: ``s3q.leases.commit`` running in this
#: thread, or its request held in the network being delivered): the world's observer counts
#: a held lease's deletion as a completion only then.
COMMITTING = threading.local()


def committing() -> str | None:
    return getattr(COMMITTING, "name", None)


#: The S3 request of each store operation, in the messages of :class:`Denies`.
_S3_NAMES = {"get": "GetObject", "open": "GetObject", "head": "HeadObject",
             "delete": "DeleteObject", "put": "PutObject", "copy": "CopyObject"}


class Denies(DelegatingStore):
    """Every request of ``ops`` on one of ``keys`` (a copy: from one) is refused, every
    time, with a store error of its own (``AccessDenied: GetObject KEY``): an object this
    process may not read (another account's, a KMS key not granted). ``keys`` may change
    as a test goes."""

    def __init__(self, inner: Store, keys: Iterable[str], ops: Iterable[str] = ("get",)
                 ) -> None:
        super().__init__(inner)
        self.keys, self.ops = set(keys), set(ops)

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        key = args.get("key", args.get("src"))  # (a copy: its source)
        if op in self.ops and key in self.keys:
            raise StoreError(f"AccessDenied: {_S3_NAMES.get(op, op)} {key}")
        return fn()


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


Hook = Callable[[], None]


@dataclass
class StepStore(DelegatingStore):
    """A MemoryStore seen by one worker: scheduled, counted, and adversarial."""

    inner: MemoryStore
    worker: int = 0
    scheduler: Scheduler | None = None
    crash_after: int | None = None  # 1-based index of the op after which to crash
    ops: list[str] = field(default_factory=list)
    before: dict[int, Hook] = field(default_factory=dict)
    stall: dict[int, Hook] = field(default_factory=dict)
    ambiguous: dict[int, Literal["retry", "raise"]] = field(default_factory=dict)
    lose: set[int] = field(default_factory=set)
    #: Called after every op of every worker (the world's observer).
    observe: Hook | None = None
    _lost: list[Callable[[], Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        cond = "!" if args.get("if_none_match") else "=" if args.get("if_match") else ""
        name = " ".join([op + cond, *(args[k] for k in ("key", "src", "dst", "prefix")
                                      if k in args)])
        index = len(self.ops) + 1
        if self.scheduler is not None:
            self.scheduler.turn(self.worker)
        if index in self.before:
            self.before.pop(index)()
        apply = self._unguarded(op, args) if (op in ("put", "copy", "delete")) else fn
        guard = args.get("guard")
        try:
            if index in self.stall or index in self.lose:
                if guard is not None:
                    guard()  # sent in time; what follows happens in the network
                if index in self.lose:
                    self.lose.discard(index)
                    self._lost.append(_as_committing(apply, committing()))
                    raise StoreUnavailable(f"{name}: timed out (held in the network)")
                self.stall.pop(index)()
                result = apply()
            elif index in self.ambiguous:
                mode = self.ambiguous.pop(index)
                fn()  # it takes effect ...
                if mode == "raise":  # ... and the caller is told it failed
                    raise StoreUnavailable(f"{name}: connection reset after it took effect")
                try:  # ... or the SDK retries it and returns the retry's answer
                    result = fn()
                except StoreError as exc:
                    exc.retried = True
                    raise
            else:
                result = fn()
        except Exception as exc:  # a store error is an outcome too; the crash comes after
            self._after(name)
            raise exc
        self._after(name)
        return result

    def deliver(self) -> None:
        """Apply the requests held in the network (``lose``), now."""
        while self._lost:
            apply = self._lost.pop(0)
            COMMITTING.name = getattr(apply, "committing", None)
            try:
                with contextlib.suppress(Exception):  # its condition may fail now: the point
                    apply()
                if self.observe is not None:
                    self.observe()
            finally:
                COMMITTING.name = None

    def _unguarded(self, op: str, args: dict[str, Any]) -> Callable[[], Any]:
        """The same request without its guard: applied later than it was checked."""
        inner = self.inner
        if op == "put":
            return lambda: inner.put(args["key"], args["body"],
                                     if_none_match=args["if_none_match"],
                                     if_match=args["if_match"])
        if op == "copy":
            return lambda: inner.copy(args["src"], args["dst"],
                                      if_source_match=args["if_source_match"],
                                      if_none_match=args["if_none_match"])
        return lambda: inner.delete(args["key"], if_match=args["if_match"])

    def _after(self, name: str) -> None:
        self.ops.append(name)
        if self.observe is not None:
            self.observe()
        if self.scheduler is not None:
            self.scheduler.done_op()
        if self.crash_after is not None and len(self.ops) >= self.crash_after:
            raise Crash(f"worker {self.worker} crashed after op {len(self.ops)}: {name}")

    def close(self) -> None:
        pass  # the shared MemoryStore outlives each simulated worker


def _as_committing(apply: Callable[[], Any], name: str | None) -> Callable[[], Any]:
    def later() -> Any:
        return apply()
    later.committing = name  # type: ignore[attr-defined]
    return later


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
