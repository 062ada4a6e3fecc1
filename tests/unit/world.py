"""A small simulated deployment for protocol tests: one MemoryStore on a fake clock (MD5 or
opaque ETags), any number of workers (each its own Queue), a drain that plays "the
surviving fleet", and the invariants of docs/PROTOCOL.md §6 as checks.

Every submission gets its own bytes (``body of NAME #k``), so a request is followed by its
bytes: the world's observer looks after every store request for where each submission is
(a view, a lease's body of record, a final place) and remembers which were committed done.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from s3q import layout, leases
from s3q.backends.memory import MemoryStore
from s3q.queue import Queue, QueueConfig
from s3q.records import CLOCK_MARGIN, INLINE_MAX, Intent, Lease
from tests.unit.harness import COMMITTING, FakeClock, Scheduler, StepStore, committing


def _marking(commit: Callable[..., None]) -> Callable[..., None]:
    """``s3q.leases.commit`` (d5 of an inline completion), marking its thread as committing
    that name for the observer."""
    if getattr(commit, "marks", False):
        return commit

    def marked(ctx: object, lease: Lease, etag: str) -> None:
        COMMITTING.name = lease.name
        try:
            commit(ctx, lease, etag)
        finally:
            COMMITTING.name = None
    marked.marks = True  # type: ignore[attr-defined]
    return marked


leases.commit = _marking(leases.commit)

TTL = 10.0
#: Every queue a world made, until :func:`stop_all_threads` (tests/unit/conftest.py, after
#: each test) stops their lease keepers: the tests that make thousands of worlds left a
#: keeper thread each, 15,000 threads by the end of the unit tests.
_MADE: list[Queue] = []
EtagMode = Literal["md5", "opaque"]
ETAG_MODES: tuple[EtagMode, ...] = ("md5", "opaque")
PLACES = (layout.WAIT, layout.PROCESSING, layout.FINISH, layout.FAILED)


def config(on_finish: Literal["move", "delete"] = "move", max_attempts: int = 3,
           backoff: float = 1.0, commit_before_finish: bool = False) -> QueueConfig:
    return QueueConfig(lease_ttl=TTL, max_attempts=max_attempts, retry_base_delay=backoff,
                       retry_max_delay=4.0 * backoff, page_size=10, on_finish=on_finish,
                       commit_before_finish=commit_before_finish)


@dataclass
class World:
    on_finish: Literal["move", "delete"] = "move"
    max_attempts: int = 3
    etags: EtagMode = "md5"
    #: Bodies larger than INLINE_MAX: kept in a private copy, not in the lease.
    large: bool = False
    #: retry_base_delay (seconds)
    backoff: float = 1.0
    #: QueueConfig.commit_before_finish
    commit_before_finish: bool = False
    clock: FakeClock = field(default_factory=FakeClock)
    mem: MemoryStore = field(init=False)
    #: every handler run: (name, worker, attempt, body)
    handled: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    #: every submission, in order: (name, body)
    submissions: list[tuple[str, bytes]] = field(default_factory=list)
    #: bodies whose completion was committed (a lease seen turning ``done``, or a held one
    #: deleted by d5, ``leases.commit``, with the request in finish/ or, on_finish = delete,
    #: nowhere): how often
    done: Counter[bytes] = field(default_factory=Counter)
    #: the leases seen by the last observation: name → (intent, body of record)
    _held: dict[str, tuple[Intent, bytes | None]] = field(default_factory=dict)
    #: a loss the observer saw, if any (checked by check_never_lost)
    lost: list[str] = field(default_factory=list)
    #: submissions an operator or producer removed on purpose (purge, an overwrite)
    withdrawn: set[str] = field(default_factory=set)
    strict: bool = True  # check "never lost" after every store request
    #: a completed request may run again (a late create-if-absent: PROTOCOL §7)
    rerun_ok: bool = False
    _observing: threading.Lock = field(default_factory=threading.Lock)
    _queues: list[Queue] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mem = MemoryStore("world", clock=self.clock, etags=self.etags)

    @property
    def submitted(self) -> Counter[str]:
        return Counter(name for name, _ in self.submissions)

    def queue(self, *, worker: int = 0, scheduler: Scheduler | None = None,
              crash_after: int | None = None, seed: int = 0) -> tuple[Queue, StepStore]:
        store = StepStore(self.mem, worker=worker, scheduler=scheduler,
                          crash_after=crash_after, observe=self.observe)
        q = Queue(store, config(self.on_finish, self.max_attempts, self.backoff,
                                self.commit_before_finish),
                  rng=random.Random(seed), monotonic=self.clock)
        self._queues.append(q)
        _MADE.append(q)
        return q, store

    def stop_threads(self) -> None:
        """Stop the lease keeper (a thread) of every queue made here, as the processes of a
        world that ends would (no close: nothing is written)."""
        _stop(self._queues)


    def next_body(self, name: str, *, same: bool = False) -> bytes:
        """The bytes of the next submission of ``name``: new ones, or (``same``) those of
        its last submission."""
        earlier = [b for n, b in self.submissions if n == name]
        if same and earlier:
            return earlier[-1]
        body = f"body of {name} #{len(earlier) + 1}".encode()
        return body + b"." * (INLINE_MAX + 100) if self.large else body

    def submit(self, *names: str, same: bool = False) -> None:
        """Submit each name (as a producer does: an unconditional PUT into wait/). A waiting
        submission it replaces is withdrawn by the producer, not lost by s3q: one nothing
        else holds, or one a claim has read (c0) and locked (c1) but not yet taken out of
        wait/ (c2, where a claim takes effect: finding its object replaced, it gives up)."""
        for name in names:
            body = self.next_body(name, same=same)
            before = set(self.missing())
            snapshot = self.mem.snapshot()
            waiting = snapshot.get(layout.key(layout.WAIT, name))
            if waiting is not None and waiting != body:
                etag = self.mem.head(layout.key(layout.WAIT, name)).etag
                if any(lease.src == etag and lease.view is None
                       for lease in self._leases(snapshot) if lease.name == name):
                    self.withdrawn |= {f"{n} ({b[:40]!r})" for n, b in self.submissions
                                       if n == name and b == waiting}
            self.mem.put(layout.key(layout.WAIT, name), body)
            self.submissions.append((name, body))
            self.withdrawn |= {m for m in self.missing() if m not in before}

    def withdraw(self, action: Callable[[], object]) -> None:
        """Run an operator's deliberate removal (a purge, an ``aws s3 rm``, an overwriting
        ``aws s3 mv``): the requests whose bytes (or lease) it deleted are withdrawn, not
        lost, wherever else a copy of them lingers for a while; and so are those it made
        disappear outright (no s3q code runs in ``action`` but an operator's own)."""
        missing = set(self.missing())
        before = self.mem.snapshot()
        self.strict = False
        try:
            action()
        finally:
            self.strict = True
        after = self.mem.snapshot()
        removed = set()
        for key, body in before.items():
            if key in after:
                continue
            lease = Lease.from_bytes(body) if key.startswith(layout.LEASES) else None
            removed.add(body if lease is None else self._body_of(lease, before) or b"")
        self.withdrawn |= {f"{n} ({b[:40]!r})" for n, b in self.submissions if b in removed}
        self.withdrawn |= set(self.missing()) - missing

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
                self.ran(job.name, worker, job.attempt, job.read())
                if fail and job.name in fail:
                    job.fail("handler error")
                else:
                    job.complete()
                continue
            if not self.pending():
                return
            self.expire()
        raise AssertionError(f"queue did not drain: {self.state()}")

    def ran(self, name: str, worker: str, attempt: int, body: bytes) -> None:
        """A handler starts on ``body``: not when every submission of those bytes has been
        completed already (invariant 2: only a crash could make it run again)."""
        assert self.rerun_ok or self.done[body] < self._submitted(body), (
            f"{name} ({body[:40]!r}) processed again after its completion was committed")
        self.handled.append((name, worker, attempt, body))

    # ------------------------------------------------------------------ observation
    def observe(self) -> None:
        """After every store request: remember committed completions; with ``strict``,
        check that every submission is somewhere (invariant 1)."""
        with self._observing:
            snapshot = self.mem.snapshot()
            held: dict[str, tuple[Intent, bytes | None]] = {}
            for lease in self._leases(snapshot):
                body = self._body_of(lease, snapshot)
                held[lease.name] = (lease.intent, body)
                if (lease.intent is Intent.DONE and body is not None
                        and self._held.get(lease.name, (None, None))[0] is not Intent.DONE):
                    self.done[body] += 1  # committed by d1 (a large request's completion)
            for name, (intent, body) in self._held.items():
                if (name not in held and intent is Intent.HELD and body is not None
                        and committing() == name and self._completed(name, body, snapshot)):
                    self.done[body] += 1  # committed by d5: its held lease deleted
            self._held = held
            if self.strict:
                missing = self.missing(snapshot)
                if missing and not self.lost:
                    self.lost.append(f"{missing} lost: {self.state()}")

    def _completed(self, name: str, body: bytes, snapshot: dict[str, bytes]) -> bool:
        """A held lease of ``body`` was deleted by a completion's commit (d5, leases.commit):
        did it complete? With on_finish = move, finish/NAME holds the body; with delete, it
        is nowhere. (Any other deletion of a held lease is no completion: a request it
        leaves nowhere is lost.)"""
        if self.on_finish == "move":
            return snapshot.get(layout.key(layout.FINISH, name)) == body
        return not any(b == body for k, b in snapshot.items() if k.startswith(PLACES))

    def missing(self, snapshot: dict[str, bytes] | None = None) -> list[str]:
        """Submissions that are nowhere: in no place, no lease, and not committed done."""
        snapshot = snapshot if snapshot is not None else self.mem.snapshot()
        present = {body for key, body in snapshot.items()
                   if key.startswith(PLACES) or (key.startswith(layout.EARLIER)
                                                 and "/request/" in key)}
        present |= {b for lease in self._leases(snapshot)
                    if (b := self._body_of(lease, snapshot)) is not None}
        return [m for name, body in self.submissions
                if body not in present and body not in self.done
                and (m := f"{name} ({body[:40]!r})") not in self.withdrawn]

    def _leases(self, snapshot: dict[str, bytes]) -> list[Lease]:
        return [Lease.from_bytes(body) for key, body in snapshot.items()
                if key.startswith(layout.LEASES)]

    @staticmethod
    def _body_of(lease: Lease, snapshot: dict[str, bytes]) -> bytes | None:
        if lease.body is not None:
            return lease.body
        return snapshot.get(lease.body_key) if lease.body_key else None

    def _submitted(self, body: bytes) -> int:
        return sum(1 for _, b in self.submissions if b == body)

    # ------------------------------------------------------------------ inspection
    def keys(self, prefix: str) -> set[str]:
        return {k[len(prefix):] for k in self.mem.snapshot() if k.startswith(prefix)}

    def pending(self) -> bool:
        return bool(self.keys(layout.WAIT) or self.keys(layout.PROCESSING)
                    or self.keys(layout.LEASES))

    def state(self) -> dict[str, set[str]]:
        return {p: self.keys(p) for p in (*PLACES, layout.LEASES, layout.BODIES,
                                          layout.EARLIER)}

    def lease(self, name: str) -> Lease | None:
        body = self.mem.snapshot().get(layout.key(layout.LEASES, name))
        return None if body is None else Lease.from_bytes(body)

    def places(self, name: str) -> list[str]:
        return [p for p in PLACES if name in self.keys(p)]

    # ------------------------------------------------------------------ invariants
    def check_never_lost(self) -> None:
        """Invariant 1, at every request observed so far and now."""
        assert not self.lost, self.lost[0]
        missing = self.missing()
        assert not missing, f"{missing} lost: {self.state()}"

    def check_settled(self, *, failed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """After recovery and a drain: nothing in flight, no bookkeeping left behind, each
        submission ended where it should (invariant 1), nothing lost on the way."""
        self.check_never_lost()
        state = self.state()
        for prefix in (layout.WAIT, layout.PROCESSING, layout.LEASES, layout.BODIES):
            assert not state[prefix], state
        snapshot = self.mem.snapshot()
        for name in self.submitted:
            last = [b for n, b in self.submissions if n == name][-1]
            if name in failed:
                assert snapshot.get(layout.key(layout.FAILED, name)) is not None, (name, state)
                assert name in self.keys(layout.ERRORS), (name, state)
            elif self.on_finish == "move":
                assert snapshot.get(layout.key(layout.FINISH, name)) == last, (name, state)
                assert name not in self.keys(layout.FAILED), (name, state)
            else:
                assert self.places(name) == [], (name, state)

    def runs(self, name: str) -> int:
        return sum(1 for h in self.handled if h[0] == name)


def stop_all_threads() -> None:
    """:meth:`World.stop_threads` of every world made since the last call."""
    _stop(_MADE)
    _MADE.clear()


def _stop(queues: list[Queue]) -> None:
    for q in queues:
        if q._keeper is not None:
            q._keeper.stop()
