"""Pacing of a worker's claims: a claim that lost every candidate to other workers is a busy
queue (claim again soon), not an idle one (back off), within a bound."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from s3q import Queue, layout
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.job import Job
from s3q.leases import READERS
from s3q.pacing import RACE_PAUSE, RACE_RETRIES, Pacer
from s3q.records import CLOCK_MARGIN
from s3q.worker import Worker, WorkerOptions


def pacer() -> Pacer:
    return Pacer(poll_interval=10.0, scan_interval=10.0, events_list_interval=300.0,
                 rng=random.Random(1))


def test_lost_races_are_retried_after_short_pauses_then_the_worker_backs_off() -> None:
    p = pacer()
    pauses = [p.raced("busy") for _ in range(RACE_RETRIES)]
    assert all(x is not None and 0 <= x <= RACE_PAUSE * 2 ** (i + 1)
               for i, x in enumerate(pauses)), pauses
    assert p.raced("busy") is None  # races persist: count the claim as an empty one
    assert p.claimed("busy", found=False) is not None  # the idle backoff starts
    assert p.raced("busy") is None
    assert p.claimed("busy", found=True) is None  # a job: the race budget is back
    assert p.raced("busy") is not None


def test_a_raced_poll_hands_the_poll_turn_back() -> None:
    p = pacer()
    p.claimed("busy", found=False)  # idle: slots take the poll turn one at a time
    p._next_poll = 0.0  # (due now)
    assert p.turn() == "poll"
    assert p.turn() is None  # another slot waits: the poll turn is taken
    assert p.raced("poll") is not None
    assert p.turn() == "poll"  # given back: the next slot may poll


@dataclass
class Racing(DelegatingStore):
    """Runs ``before_get`` once, right before the first GET of a wait/ object."""

    inner: MemoryStore
    before_get: Any = None

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if op == "get" and args["key"].startswith("wait/") and self.before_get is not None:
            hook, self.before_get = self.before_get, None
            hook()
        return fn()


def test_a_claim_that_loses_its_candidates_to_another_worker_says_so() -> None:
    mem = MemoryStore()
    racing = Racing(mem)
    mine, other = Queue(racing), Queue(mem)
    mine.submit("only.json", b"{}")
    taken: list[Job | None] = []
    racing.before_get = lambda: taken.append(other.claim("other"))
    assert mine.claim("me") is None
    assert taken and taken[0] is not None and taken[0].name == "only.json"
    assert mine.lost_race()  # a busy queue: the worker claims again soon
    assert mine.claim("me") is None  # held elsewhere: skipped by the next listing
    assert not mine.lost_race()  # nothing left to try: idle
    empty = Queue(MemoryStore())
    assert empty.claim("me") is None and not empty.lost_race()


@dataclass
class SlowSettle(DelegatingStore):
    """Deletes of leases (d5, carried out by the worker's settler) take ``delay`` seconds."""

    inner: MemoryStore
    delay: float = 3.0  # the slot looks far sooner, even on a loaded machine

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if op == "delete" and args["key"].startswith(".s3q/lease/"):
            time.sleep(self.delay)
        return fn()


def test_a_burst_does_not_wait_for_the_leases_of_its_own_jobs() -> None:
    """The last slot of a burst that finds nothing must not wait for a lease its own worker
    holds (a finished job whose settling is under way) as if its worker might be dead: it
    would wait for the lease's next renewal, seconds after the queue was drained. It looks
    again once its settlements are done (one that failed leaves a lease to wait for), and
    ends then."""
    q = Queue(SlowSettle(MemoryStore()))
    q.submit("r.json", b"{}")
    outlooks: list[Any] = []
    real = q.outlook

    def outlook(*args: Any, **kwargs: Any) -> Any:
        seen = real(*args, **kwargs)
        outlooks.append((seen, [lease.name for lease, _ in q.leases()]))
        return seen

    q.outlook = outlook  # type: ignore[method-assign]
    stats = Worker(q, lambda job: None, WorkerOptions("w", concurrency=1, burst=True)).run()
    assert stats.completed == 1
    assert outlooks and outlooks[0][1] == ["r.json"], outlooks  # looked while it settled
    assert all(seen.next_due is None for seen, _ in outlooks), outlooks  # not waited for
    assert outlooks[-1][1] == [], outlooks  # the last look: once it was settled


@dataclass
class Listing(DelegatingStore):
    """Counts the LISTs of wait/ and the reads of leases. ``during`` runs once, inside the
    first LIST of wait/, once the store has taken its snapshot (before it is answered);
    ``before_get`` (key: hook) runs once before the first GET of that key."""

    inner: MemoryStore
    during: Any = None
    before_get: dict[str, Any] = field(default_factory=dict)
    lists: int = 0
    lease_reads: int = 0
    _counting: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        DelegatingStore.__init__(self, self.inner)

    def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
        if op == "get":
            with self._counting:  # (a look reads leases from several threads)
                self.lease_reads += args["key"].startswith(layout.LEASES)
            hook = self.before_get.pop(args["key"], None)
            if hook is not None:
                hook()
        if op != "list" or args["prefix"] != "wait/":
            return fn()
        self.lists += 1
        answer = fn()
        if self.during is not None:
            hook, self.during = self.during, None
            hook()
        return answer


def test_claims_waiting_for_the_lock_share_a_list_sent_after_they_began() -> None:
    """Slot B's claim has begun (it looks up a name offered to it) when slot A's LIST is
    sent and finds wait/ empty: B ends without a LIST of its own. A claim begun after that
    LIST lists again, and finds what was submitted since."""
    store = Listing(MemoryStore())
    queue = Queue(store)
    queue.offer(["ghost.json"])  # no lease, not in wait/: B's claim looks it up first
    got: dict[str, Job | None] = {}

    def a_claims() -> None:
        a = threading.Thread(target=lambda: got.update(a=queue.claim("me")))
        a.start()
        a.join(10)

    store.before_get[layout.key(layout.LEASES, "ghost.json")] = a_claims
    assert queue.claim("me") is None  # B
    assert got == {"a": None}  # A listed while B's claim was under way
    assert store.lists == 1 and not queue.lost_race()
    queue.submit("late.json", b"{}")
    job = queue.claim("me")  # begun after that LIST: lists again
    assert job is not None and job.name == "late.json" and store.lists == 2


def test_a_claim_begun_after_a_list_was_sent_does_not_take_its_answer() -> None:
    """A's LIST has taken its snapshot of wait/ (empty) when a request is submitted and
    slot B's claim begins, while A still holds the claimer: B lists for itself, and claims
    the request (a LIST's answer may be older than its end)."""
    store = Listing(MemoryStore())
    queue = Queue(store)
    got: dict[str, Job | None] = {}
    b = threading.Thread(target=lambda: got.update(b=queue.claim("me")))

    def submitted_then_b_begins() -> None:
        queue.submit("x.json", b"{}")
        b.start()
        time.sleep(0.2)  # (B waits for the claimer A holds; whenever it begins, the same is due)

    store.during = submitted_then_b_begins
    assert queue.claim("me") is None  # A: its LIST saw wait/ empty
    b.join(10)
    assert not b.is_alive()
    job = got["b"]
    assert job is not None and job.name == "x.json" and store.lists == 2


def test_a_burst_looking_again_reads_only_the_leases_that_changed() -> None:
    """The last slot of a burst looks at the leases every fraction of a second while others'
    jobs run: a lease whose ETag is the one it read last time is not read again."""
    store = Listing(MemoryStore())
    q = Queue(store)
    for name in ("a.json", "b.json", "c.json"):
        q.submit(name, b"{}")
    jobs = [q.claim("other") for _ in range(3)]
    assert all(job is not None for job in jobs)
    reads = store.lease_reads
    first = q.outlook(mine="me")
    assert store.lease_reads == reads + 3
    assert first.waiting == ["a.json", "b.json", "c.json"] and first.left == []
    again = q.outlook(first, mine="me")
    assert store.lease_reads == reads + 3  # nothing changed: nothing read
    assert again.waiting == first.waiting and again.left == []
    assert first.next_due is not None and again.next_due is not None
    assert 0 < again.next_due <= first.next_due  # (the same leases, looked at later)
    renewed = jobs[0]
    assert renewed is not None
    renewed.renew()
    third = q.outlook(again, mine="me")
    assert store.lease_reads == reads + 4  # the renewed one, read again
    assert third.left == [(renewed.name, "in flight on other")]
    assert renewed.name not in third.waiting and len(third.waiting) == 2


def test_a_lease_renewed_since_an_old_look_but_not_lately_is_waited_for() -> None:
    """The burst's last look was long ago; the lease changed since (a renewal), but not
    within a renewal interval: its holder may have died after that renewal. The burst waits
    for the lease to expire (its request then comes back) instead of leaving it."""
    clock = [1000.0]
    q = Queue(MemoryStore(clock=lambda: clock[0]))
    q.submit("r.json", b"{}")
    job = q.claim("other")
    assert job is not None
    first = q.outlook(mine="me")
    assert first.waiting == ["r.json"] and first.left == []
    clock[0] += 5
    job.renew()  # its last renewal
    renewal = q.config.renew_interval + 2 * CLOCK_MARGIN
    clock[0] += renewal + 1
    later = q.outlook(first, mine="me")
    assert later.left == [] and later.waiting == ["r.json"]
    assert later.next_due == pytest.approx(q.config.lease_ttl + CLOCK_MARGIN - renewal - 1)
    job.renew()  # renewed lately: left to its holder
    assert q.outlook(later, mine="me").left == [("r.json", "in flight on other")]


def test_a_look_reads_the_leases_it_has_not_seen_at_once() -> None:
    """A burst's first look (or `s3q status`) with many jobs in flight reads their leases
    READERS at a time, not one round trip after another: here each read waits until all
    of them have begun (a look that read them one by one would fail after 10 s)."""
    store = Listing(MemoryStore())
    q = Queue(store)
    names = [f"r{i}.json" for i in range(READERS)]
    for name in names:
        q.submit(name, b"{}")
    assert all(q.claim("other") is not None for _ in names)
    together = threading.Barrier(READERS, timeout=10)
    store.before_get = {layout.key(layout.LEASES, name): together.wait for name in names}
    first = q.outlook(mine="me")
    assert first.waiting == names and store.before_get == {}
    assert sorted(first.leases) == names
