"""What the dashboard and the exporter show, gathered at a bounded cost.

One :class:`Snapshot` is built from, at most:

* wait/, processing/ and failed/ listed up to ``count_limit`` requests each (one LIST per
  1,000 keys on S3; beyond the limit the count reads "10,000+" and the oldest waiting age
  is a lower bound);
* finish/ listed up to ``finish_limit`` (default one page): it grows by one object per
  request forever and is never listed whole. How many requests finish is known instead from
  the worker registry: each worker's record carries its completions per heartbeat for the
  last hour (summed: the throughput chart), and its counters;
* ``.s3q/lease/`` listed up to ``lease_limit`` + 1 leases (one more: are there more?),
  each read (GET, 8 in parallel);
* the registry: one LIST, plus a GET of each record that changed since the last snapshot
  (records change once a minute);
* the pause flag: one GET;
* the circuit breaker records: one LIST, plus a GET of each (a worker's breaker tripped).

:class:`Snapshots` keeps the latest one for ``ttl`` seconds, so any number of browsers and
Prometheus scrapes cost one snapshot per ``ttl``.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from s3q import layout
from s3q.breaker import breaker_records, open_problems
from s3q.context import never_claimed
from s3q.layout import State
from s3q.leases import unreadable_problem
from s3q.pause import PauseState, pause_state
from s3q.queue import Queue
from s3q.records import Intent, Lease
from s3q.registry import Entry, Registry, longer_leases, longer_leases_problem
from s3q.scanrole import RoleSeen
from s3q.store import LeftOut, ObjectInfo, resume_after
from s3q.takeover import kept_corrupt, kept_problem

__all__ = ["InFlight", "Snapshot", "Snapshots", "StateCount", "take_snapshot"]

COUNT_LIMIT = 10_000
FINISH_LIMIT = 1_000
LEASE_LIMIT = 1_000
#: Throughput chart: this many one-minute bins.
CHART_MINUTES = 60


@dataclass(frozen=True, slots=True)
class StateCount:
    count: int
    complete: bool  # False: the listing stopped at the limit, there are more

    def __str__(self) -> str:
        return f"{self.count:,}" if self.complete else f"{self.count:,}+"


@dataclass(frozen=True, slots=True)
class InFlight:
    """One lease that is not a resting ``retry`` one: a request being worked on."""

    name: str
    worker: str
    attempt: int
    gen: int
    intent: str
    lease_age: float
    expires_in: float  # negative: expired that long ago
    expired: bool
    overdue: bool
    lease_ttl: float = 0.0  # as the lease tells it (0: written by an s3q before 2.2)


@dataclass
class Snapshot:
    queue_url: str
    taken_at: float  # store time
    counts: dict[str, StateCount]
    oldest_waiting_age: float | None
    oldest_exact: bool
    in_flight: list[InFlight]
    retrying: int
    leases_complete: bool
    workers: list[Entry]
    paused: PauseState | None
    problems: list[str]
    #: completions per minute, oldest first, CHART_MINUTES of them, ending now
    throughput: list[int] = field(default_factory=list)
    scanner: RoleSeen | None = None  # who scans for the fleet (None: nobody holds the role)
    unreadable_leases: list[tuple[str, str]] = field(default_factory=list)  # (name, error)
    kept_leases: list[tuple[str, str]] = field(default_factory=list)  # (name, why: corrupt)
    seconds: float = 0.0  # how long it took to gather

    @property
    def per_worker(self) -> dict[str, list[InFlight]]:
        groups: dict[str, list[InFlight]] = {}
        for r in self.in_flight:
            groups.setdefault(r.worker, []).append(r)
        return groups

    def busy(self, worker_id: str) -> int:
        """Requests ``worker_id`` holds now, from the leases (its record's ``busy`` is as of
        its last heartbeat, up to a minute old)."""
        return sum(1 for r in self.in_flight if r.worker == worker_id)

    @property
    def live_workers(self) -> list[Entry]:
        return [w for w in self.workers if not w.stale]

    @property
    def completed_last_hour(self) -> int:
        return sum(self.throughput)


def count_state(queue: Queue, state: State, limit: int, never: list[str] | None = None
                ) -> tuple[StateCount, float | None]:
    """(count up to ``limit``, the oldest Last-Modified among those counted), listing page by
    page and never past the limit (the store's "truncated" flag tells whether more follow).
    With ``never``, the problems of what that listing met and no claim will ever take (as
    ``s3q status`` says them: :func:`s3q.context.never_claimed`) are added to it."""
    n, oldest, start = 0, None, None
    too_long: list[str] = []
    unusable: list[str] = []
    left_out: list[LeftOut] = []
    ctx = queue.ctx
    while True:
        page = queue.store.list_page(state.prefix, start_after=start,
                                     limit=max(1, min(1000, limit - n)))
        for info in page.items:
            name = layout.name_of(state.prefix, info.key)
            if queue.is_request(name):
                n += 1
                if oldest is None or info.last_modified < oldest:
                    oldest = info.last_modified
                if never is not None and not ctx.fits(name):
                    too_long.append(name)
            elif never is not None and ctx.unusable(name, info.size) is not None:
                unusable.append(name)
        if never is not None:
            left_out += [e for e in page.left_out if e.key.endswith("/") or fnmatch.fnmatchcase(
                e.key[len(state.prefix):], queue.config.filter)]
            if not page.truncated or not page.items or n >= limit:
                never += never_claimed(queue.store.max_key_bytes, too_long, unusable, left_out)
        if not page.truncated or not page.items:
            return StateCount(n, True), oldest
        if n >= limit:
            return StateCount(n, False), oldest
        start = resume_after(page.items[-1].key)


def read_leases(queue: Queue, limit: int, unreadable: list[tuple[str, str]]
                ) -> tuple[list[tuple[Lease, ObjectInfo]], bool]:
    """Up to ``limit`` leases (read in parallel: :meth:`Queue.leases`); and whether that was
    all of them. Those whose GET is denied go to ``unreadable``."""
    found = list(queue.leases(limit + 1, unreadable))  # (one more: are there more?)
    return found[:limit], len(found) + len(unreadable) <= limit


def take_snapshot(queue: Queue, registry: Registry | None = None, *,
                  count_limit: int = COUNT_LIMIT, finish_limit: int = FINISH_LIMIT,
                  lease_limit: int = LEASE_LIMIT,
                  history: Counter[int] | None = None) -> Snapshot:
    """Gather a :class:`Snapshot` (see the module's docstring for its cost). ``history``:
    minute -> completions remembered from earlier snapshots (workers that stopped since)."""
    t0 = time.perf_counter()
    registry = registry or Registry(queue.store)
    counts: dict[str, StateCount] = {}
    oldest = None
    never: list[str] = []  # (what waits in wait/ and is never claimed)
    for state in State:
        limit = finish_limit if state is State.FINISH else count_limit
        counts[state.value], first = count_state(queue, state, limit,
                                                 never if state is State.WAIT else None)
        if state is State.WAIT:
            oldest = first
    now = queue.store.now()
    unreadable: list[tuple[str, str]] = []
    found, leases_complete = read_leases(queue, lease_limit, unreadable)
    scanner = queue.scanner()  # (a live scanner of a longer scan interval: not overdue sooner)
    every = scanner.scans_every if scanner is not None else 0.0
    in_flight, retrying, kept = [], 0, []
    for lease, info in found:
        if lease.intent is Intent.RETRY:
            retrying += 1
            continue
        age = max(0.0, now - info.last_modified)
        if (why := kept_corrupt(queue.ctx, lease)) is not None:  # (left: not overdue)
            kept.append((lease.name, why))
        in_flight.append(InFlight(lease.name, lease.worker, lease.attempt, lease.gen,
                                  lease.intent.value, age, queue.expires(info, lease.ttl) - now,
                                  queue.is_expired(info, now, lease.ttl),
                                  why is None and queue.is_overdue(info, now, lease.ttl, every),
                                  lease.ttl))
    in_flight.sort(key=lambda r: (r.worker, r.name))
    workers = registry.records()
    snap = Snapshot(
        queue_url=queue.store.url, taken_at=now, counts=counts,
        oldest_waiting_age=None if oldest is None else max(0.0, now - oldest),
        oldest_exact=counts["wait"].complete, in_flight=in_flight, retrying=retrying,
        leases_complete=leases_complete, workers=workers, paused=pause_state(queue.store),
        problems=[], throughput=throughput(workers, history, now), scanner=scanner,
        unreadable_leases=unreadable, kept_leases=kept)
    snap.problems = never + problems(queue, snap)
    # (as status --check: the fleet's open breakers, and live workers of a longer lease_ttl
    # holding leases that tell none, which this dashboard's would judge expired)
    longer = longer_leases(workers, queue.config.lease_ttl,
                           {r.worker for r in in_flight if not r.lease_ttl})
    if longer:
        snap.problems.append(longer_leases_problem(longer, queue.config.lease_ttl))
    snap.problems += open_problems(list(breaker_records(queue)), now)
    snap.seconds = time.perf_counter() - t0
    return snap


def throughput(workers: list[Entry], history: Counter[int] | None = None,
               now: float | None = None) -> list[int]:
    """Completions per minute over the last CHART_MINUTES minutes to ``now`` (the store's
    clock, which the records' minutes are: the registry's per-heartbeat counts; ``history``
    fills in workers that are gone)."""
    now = time.time() if now is None else now
    last = int(now // 60)
    per_minute: Counter[int] = Counter(history or {})
    for e in workers:
        if e.record is not None:
            for t, n in e.record.history:
                per_minute[int(t // 60)] += n
    return [per_minute.get(m, 0) for m in range(last - CHART_MINUTES + 1, last + 1)]


def problems(queue: Queue, snap: Snapshot) -> list[str]:
    """What ``s3q status --check`` reports (overdue leases: no worker takes anything over),
    plus stale workers and the pause, which it does not fail on."""
    found: list[str] = []
    every = snap.scanner.scans_every if snap.scanner is not None else 0.0
    overdue = [r for r in snap.in_flight if r.overdue]
    if overdue:
        listed = ", ".join(f"{r.name} ({r.worker or 'nobody'})" for r in overdue[:5])
        more = f" and {len(overdue) - 5} more" if len(overdue) > 5 else ""
        found.append(
            f"{len(overdue)} expired lease(s) not taken over in time: not renewed for more "
            f"than {queue.ctx.overdue_bounds([r.lease_ttl for r in overdue], every)} (dead "
            f"workers, and "
            f"no worker running?): {listed}{more}")
    if snap.unreadable_leases:
        found.append(unreadable_problem(snap.unreadable_leases))
    if snap.kept_leases:
        found.append(kept_problem(snap.kept_leases))
    stale = [w.id for w in snap.workers if w.stale]
    if stale:
        found.append(f"{len(stale)} stale worker record(s) (killed, or the server is gone): "
                     + ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""))
    if snap.paused is not None:
        found.append("the queue is paused: workers claim nothing (resume it to go on)")
    return found


class Snapshots:
    """The latest snapshot, rebuilt when older than ``ttl`` seconds (one at a time: a
    second caller waits for the first's result instead of listing again)."""

    def __init__(self, queue: Queue, ttl: float = 5.0, **limits: int) -> None:
        self.queue = queue
        self.ttl = ttl
        self.limits = limits
        self.registry = Registry(queue.store)
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._at = 0.0  # monotonic
        self._gone: Counter[int] = Counter()  # minute -> completions of departed workers
        self._seen: dict[str, Entry] = {}

    def get(self, *, fresh: bool = False) -> Snapshot:
        with self._lock:
            if fresh or self._latest is None or time.monotonic() - self._at >= self.ttl:
                self._latest = take_snapshot(self.queue, self.registry, history=self._gone,
                                             **self.limits)
                self._at = time.monotonic()
                self._remember(self._latest.workers, self._latest.taken_at)
            return self._latest

    def invalidate(self) -> None:
        with self._lock:
            self._latest = None

    def _remember(self, workers: list[Entry], now: float) -> None:
        """Keep the last hour's completions of workers whose records went away (a clean
        stop removes the record) so that the chart does not drop them."""
        ids = {w.id for w in workers}
        for gone in [w for i, w in self._seen.items() if i not in ids]:
            for minute, n in _minutes(gone):
                self._gone[minute] += n
        self._seen = {w.id: w for w in workers if w.record is not None}
        oldest = int(now // 60) - CHART_MINUTES  # (the store's clock, as the minutes)
        for minute in [m for m in self._gone if m < oldest]:
            del self._gone[minute]


def _minutes(entry: Entry) -> Iterator[tuple[int, int]]:
    if entry.record is not None:
        for t, n in entry.record.history:
            yield int(t // 60), n
