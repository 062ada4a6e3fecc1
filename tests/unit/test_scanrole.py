"""The scanner role (docs/PROTOCOL.md §4, "scanner role"; s3q.scanrole): one worker of a
fleet scans, any other takes the role over once it expires, and the takeover bound of
invariant 3 holds when the scanner itself dies with a request in flight."""

from __future__ import annotations

import json

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.records import CLOCK_MARGIN
from s3q.scanrole import ROLE_KEY, RoleRecord, ScannerRole
from s3q.store import StoreUnavailable, list_all
from tests.unit.harness import FakeClock, StepStore
from tests.unit.world import TTL, World

STEP = 0.25  # seconds between two rounds of every live worker asking for its scan
SCAN_LISTING = "list .s3q/lease/"


def fleet(world: World, n: int) -> list[tuple[Queue, StepStore]]:
    return [world.queue(worker=i, seed=i) for i in range(n)]


def role(world: World) -> RoleRecord:
    record = RoleRecord.from_bytes(world.mem.get(ROLE_KEY)[0])
    assert record is not None
    return record


def scans(store: StepStore) -> int:
    return store.ops.count(SCAN_LISTING)


def rounds(world: World, workers: list[tuple[int, Queue]], seconds: float) -> None:
    for _ in range(int(seconds / STEP)):
        world.clock.advance(STEP)
        for i, q in workers:
            q.scan(f"w{i}")


def test_ten_workers_share_one_scanner() -> None:
    world = World()
    queues = fleet(world, 10)
    rounds(world, [(i, q) for i, (q, _) in enumerate(queues)], 60)
    counts = [scans(store) for _, store in queues]
    interval = queues[0][0].config.effective_scan_interval
    assert counts[0] >= 60 / interval - 1 and counts[1:] == [0] * 9, counts
    assert (role(world).worker, role(world).gen) == ("w0", 1)
    # the others only look at the role object, once per scan interval
    for _, store in queues[1:]:
        assert set(store.ops) == {f"get {ROLE_KEY}"}, set(store.ops)
        assert len(store.ops) <= 60 / interval + 1


def test_a_dead_scanner_is_replaced_within_the_role_ttl() -> None:
    world = World()
    queues = fleet(world, 10)
    live = [(i, q) for i, (q, _) in enumerate(queues)]
    rounds(world, live, 10)
    holder = role(world)
    assert holder.worker == "w0"
    died = world.clock()  # w0 renewed the role at its last scan, at most one interval ago
    ttl = ScannerRole(queues[0][0].ctx).ttl
    interval = queues[0][0].config.effective_scan_interval
    before = [scans(store) for _, store in queues]
    while role(world).worker == "w0":
        assert world.clock() - died <= ttl + CLOCK_MARGIN + interval + STEP, "not replaced"
        rounds(world, live[1:], STEP)
    successor = role(world)
    assert successor.gen == 2 and successor.claim != holder.claim
    rounds(world, live[1:], 20)
    after = [scans(store) - b for store, b in zip([s for _, s in queues], before, strict=True)]
    scanners = [i for i, n in enumerate(after) if n]
    assert scanners == [int(successor.worker[1:])], after


@pytest.mark.parametrize("death", [0.0, 1.0, 2.0, 3.0, 3.25])
def test_the_takeover_bound_holds_when_the_scanner_dies_holding_a_request(
        death: float) -> None:
    """The worst case for invariant 3: the dead worker held the scanner role too, and
    renewed it after the last renewal of its request's lease (up to one renewal interval
    later). Its request is still taken over within lease_ttl + 2 s + scan_interval after
    that lease renewal."""
    world = World()
    (q0, _), *others = fleet(world, 4)
    world.submit("a_request.json")
    job = q0.claim("w0")
    assert job is not None and (role(world).worker, job.generation) == ("w0", 1)
    renew_every = q0.config.renew_interval
    last_renewal = world.clock()
    for _ in range(int(3 * TTL / STEP)):  # w0 alive: renews its lease and scans
        world.clock.advance(STEP)
        if world.clock() - last_renewal >= renew_every:
            job.renew()
            last_renewal = world.clock()
        q0.scan("w0")
    lease_renewed = last_renewal
    while world.clock() - lease_renewed < death:  # still scanning, no more lease renewals
        world.clock.advance(STEP)
        q0.scan("w0")
    taken_at: list[float] = []
    for q, _ in others:
        q.listeners.append(lambda event, fields: taken_at.append(world.clock())
                           if event == "took_over" else None)
    live = [(i + 1, q) for i, (q, _) in enumerate(others)]
    interval = q0.config.effective_scan_interval
    while not taken_at:
        assert world.clock() - lease_renewed <= TTL + CLOCK_MARGIN + interval + STEP, (
            f"not taken over within the bound; role: {role(world)}")
        rounds(world, live, STEP)
    assert role(world).worker != "w0"


def test_a_graceful_stop_gives_the_role_up_at_once() -> None:
    world = World()
    (q0, _), (q1, s1) = fleet(world, 2)
    assert q0.scan("w0") is not None and q1.scan("w1") is None
    q0.close()
    assert f"get {ROLE_KEY}" in s1.ops
    world.clock.advance(q1.config.effective_scan_interval)  # w1's next scan, not the TTL
    assert q1.scan("w1") is not None and role(world).worker == "w1"


def test_an_ambiguous_role_write_that_took_effect_is_recognised() -> None:
    world = World()
    q, store = world.queue()
    store.ambiguous[1 + 1] = "retry"  # the PUT! after the GET: applied, then retried (412)
    assert q.scan("w0") is not None
    assert role(world).worker == "w0"
    world.clock.advance(q.config.effective_scan_interval)
    store.ambiguous[len(store.ops) + 1] = "raise"  # a renewal applied, reported failed
    with pytest.raises(StoreUnavailable):
        q.scan("w0")
    world.clock.advance(q.config.effective_scan_interval)
    assert q.scan("w0") is not None  # 412 on the stale ETag, our claim id read back
    assert role(world).gen == 1


def test_a_worker_that_loses_the_race_for_a_vacant_role_does_not_read_it_back() -> None:
    world = World()
    (q0, s0), (q1, _) = fleet(world, 2)

    def w1_takes_the_role() -> None:
        assert q1.scan("w1") is not None

    s0.before[2] = w1_takes_the_role  # between w0's GET and its PUT!
    assert q0.scan("w0") is None
    assert role(world).worker == "w1"
    # a 412 to a first try is certain: no GET of the role after it
    assert s0.ops == [f"get {ROLE_KEY}", f"put! {ROLE_KEY}"], s0.ops


def test_a_worker_whose_takeover_of_an_expired_role_finds_it_gone_does_not_read_it() -> None:
    world = World()
    (q0, s0), (q1, _) = fleet(world, 2)
    assert q1.scan("w1") is not None
    world.clock.advance(ScannerRole(q1.ctx).ttl + CLOCK_MARGIN + 1)  # w1 died: expired
    s0.before[2] = lambda: world.mem.delete(ROLE_KEY)  # between w0's GET and its PUT=e
    assert q0.scan("w0") is None  # a 404 to a first try: certain, nothing to read back
    assert s0.ops == [f"get {ROLE_KEY}", f"put= {ROLE_KEY}"], s0.ops
    world.clock.advance(q0.config.effective_scan_interval)
    assert q0.scan("w0") is not None and role(world).worker == "w0"  # vacant: taken


def test_a_restarted_worker_carries_on_with_its_own_role() -> None:
    world = World()
    q, _ = world.queue()
    assert q.scan("w0") is not None
    again, store = world.queue()  # the same worker id, a new process
    assert again.scan("w0") is not None
    assert store.ops == [f"get {ROLE_KEY}", f"put= {ROLE_KEY}", SCAN_LISTING,
                         "list processing/"]
    assert role(world).gen == 1


def test_a_corrupt_role_object_is_taken_over_once_expired() -> None:
    world = World()
    world.mem.put(ROLE_KEY, b"not json")
    q, _ = world.queue()
    assert q.scan("w0") is None  # not expired yet: somebody may be writing it
    world.clock.advance(ScannerRole(q.ctx).ttl + CLOCK_MARGIN + 1)
    assert q.scan("w0") is not None and role(world).gen == 1


# -- a fleet whose workers run with different lease_ttl ------------------------------------

LONG = QueueConfig(lease_ttl=120.0, scan_interval=5.0)  # role TTL 80 s
SHORT = QueueConfig(lease_ttl=30.0, scan_interval=5.0)  # role TTL 20 s


def test_the_role_says_its_ttl_and_is_judged_by_the_shorter_of_it_and_the_readers() -> None:
    """A scanner of lease_ttl 120 s (role TTL 80 s) that stalls 40 s is live by the TTL it
    says, but a worker of lease_ttl 30 s (role TTL 20 s) needs a scan every 5 s for its own
    leases (invariant 3): it judges the role by its own TTL, takes it at 22 s, and the worker
    of 120 s, judging it by the 20 s it says now, leaves it to it while it is renewed."""
    clock = FakeClock()
    mem = MemoryStore("role", clock=clock)
    long, short = Queue(mem, LONG, monotonic=clock), Queue(mem, SHORT, monotonic=clock)
    assert long.scan("long") is not None
    written = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert written is not None and written.ttl == ScannerRole(long.ctx).ttl == 80.0
    clock.advance(20.0 + CLOCK_MARGIN - 1.0)
    assert short.scan("short") is None  # live by the shorter TTL (its own) too
    clock.advance(SHORT.effective_scan_interval)
    assert short.scan("short") is not None  # past its own TTL: taken
    taken = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert taken is not None and (taken.worker, taken.gen, taken.ttl) == ("short", 2, 20.0)
    for _ in range(20):  # both ask every scan interval: the short one keeps it
        clock.advance(SHORT.effective_scan_interval)
        assert short.scan("short") is not None
        assert long.scan("long") is None
    kept = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert kept is not None and (kept.worker, kept.gen) == ("short", 2)


def test_a_dead_scanner_of_a_shorter_lease_ttl_is_replaced_within_its_own_ttl() -> None:
    """The scanner of lease_ttl 30 s dies; the rest of the fleet runs 120 s. Judged by their
    own role TTL (80 s) the role was taken over only after 82 s, and so were the dead
    worker's leases (30 s each): invariant 3's bound missed by a minute. Judged by the role's
    own (20 s), it is taken within 22 s and a scan."""
    clock = FakeClock()
    mem = MemoryStore("role", clock=clock)
    short, long = Queue(mem, SHORT, monotonic=clock), Queue(mem, LONG, monotonic=clock)
    assert short.scan("short") is not None  # then it dies
    died = clock()
    while True:
        clock.advance(1.0)
        assert clock() - died <= 20.0 + CLOCK_MARGIN + 5.0 + 1.0, "not replaced in time"
        if long.scan("long") is not None:
            break
    taken = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert taken is not None and (taken.worker, taken.ttl) == ("long", 80.0)


def test_a_role_of_an_earlier_s3q_that_says_no_ttl_is_judged_by_the_readers_own() -> None:
    clock = FakeClock()
    mem = MemoryStore("role", clock=clock)
    mem.put(ROLE_KEY, json.dumps({"v": 1, "worker": "old", "claim": "c", "gen": 3, "seq": 0,
                                  "written_at": 0.0}).encode())
    record = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert record is not None and record.ttl == 0.0
    short = Queue(mem, SHORT, monotonic=clock)
    clock.advance(20.0 + CLOCK_MARGIN - 1.0)  # within the reader's own role TTL (20 s)
    assert short.scan("short") is None
    clock.advance(SHORT.effective_scan_interval)  # (the next scan due) past it
    assert short.scan("short") is not None
    assert RoleRecord.from_bytes(mem.get(ROLE_KEY)[0]).gen == 4  # type: ignore[union-attr]


# the defaults: a worker of lease_ttl 120 s scans every 60 s (role TTL 80 s), one of 30 s
# every 15 s (role TTL 20 s)
LONG_DEFAULT = QueueConfig(lease_ttl=120.0)
SHORT_DEFAULT = QueueConfig(lease_ttl=30.0)


def _held_by_a_short_worker_under_a_long_scanner(
        ) -> tuple[FakeClock, MemoryStore, Queue, Queue, float]:
    """A worker of lease_ttl 120 s took the role; a worker of 30 s claims a request and
    dies. Returns the clock, the store, the long worker, another worker of 30 s, and when
    the request was claimed."""
    clock = FakeClock()
    mem = MemoryStore("role", clock=clock)
    long = Queue(mem, LONG_DEFAULT, monotonic=clock)
    assert long.scan("long") is not None
    short = Queue(mem, SHORT_DEFAULT, monotonic=clock)
    short.submit("x_request.json", b"{}")
    assert short.claim("short-1") is not None  # and its worker dies
    return clock, mem, long, Queue(mem, SHORT_DEFAULT, monotonic=clock), clock()


def _released_within(clock: FakeClock, mem: MemoryStore, claimed: float,
                     workers: list[tuple[str, Queue]]) -> None:
    # invariant 3: lease_ttl + 2 s + the scan interval of the fleet of that lease_ttl
    bound = SHORT_DEFAULT.lease_ttl + CLOCK_MARGIN + SHORT_DEFAULT.effective_scan_interval
    while not any(i.key == "wait/x_request.json" for i in list_all(mem, "wait/")):
        clock.advance(1.0)
        assert clock() - claimed <= bound + 1.0, "not taken over within invariant 3's bound"
        for wid, q in workers:
            q.scan(wid)


@pytest.mark.parametrize("ttl", [True, "20", -5, 0, None, [20], float("inf")])
def test_a_role_whose_ttl_is_not_a_positive_number_says_none(ttl: object) -> None:
    """As a lease's: nothing any s3q writes; read as not told (judged by the reader's own
    TTL), not as ``true`` = 1 s (every reader would take a live scanner's role at once) nor
    ``"20"`` = 20 s."""
    body = {"v": 1, "worker": "w", "claim": "c", "gen": 3, "seq": 0, "written_at": 0.0,
            "ttl": ttl}
    record = RoleRecord.from_bytes(json.dumps(body).encode())
    assert record is not None and record.ttl == 0.0


#: A JSON integer no float holds (JSON's have no bound): float() of it raises OverflowError.
HUGE = 10 ** 400


@pytest.mark.parametrize("field", ["ttl", "every"])
def test_a_role_telling_a_number_too_large_for_a_float_says_none(field: str) -> None:
    """``"every": 1000…0`` (400 digits; written by hand or by another tool): it passed
    the positive-number check and float() raised OverflowError out of the record's read,
    which no caller expects (from_bytes says None for what is not a record)."""
    body = {"v": 1, "worker": "w", "claim": "c", "gen": 3, "seq": 0, "written_at": 0.0,
            field: HUGE}
    record = RoleRecord.from_bytes(json.dumps(body).encode())
    assert record is not None and getattr(record, field) == 0.0


@pytest.mark.parametrize("field,value", [("written_at", HUGE), ("gen", float("inf")),
                                         ("seq", float("inf"))],
                         ids=["written_at-huge", "gen-inf", "seq-inf"])
def test_a_role_record_whose_numbers_overflow_is_no_record_and_is_taken_over(
        field: str, value: object) -> None:
    """Such a record raised OverflowError (not a StoreError) from every reader: each
    worker's turn at the role failed before it judged the record's expiry, so no worker of
    the fleet ever scanned again (dead workers' requests never taken over), and `s3q
    status` and every dashboard page failed. Now it is a corrupt record, held by nobody
    once it is not rewritten for a role TTL, as any other."""
    from s3q.cli.status import queue_status

    clock = FakeClock()
    mem = MemoryStore("overflow", clock=clock)
    body = {"v": 1, "worker": "w", "claim": "c", "gen": 3, "seq": 0, "written_at": 0.0,
            field: value}
    mem.put(ROLE_KEY, json.dumps(body).encode())
    assert RoleRecord.from_bytes(mem.get(ROLE_KEY)[0]) is None
    q = Queue(mem, QueueConfig(lease_ttl=30.0))
    assert queue_status(q, history=False)["scanner"] is None
    assert q.scan("w1") is None  # (not expired yet: held by nobody known)
    clock.advance(30.0)
    assert q.scan("w1") is not None  # expired: taken over, and the scan runs
    assert role_of(mem).worker == "w1"


def role_of(mem: MemoryStore) -> RoleRecord:
    record = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert record is not None
    return record


def test_a_live_scanner_of_a_longer_role_ttl_gives_way_to_a_worker_of_a_shorter_one() -> None:
    """The role held by a worker of lease_ttl 120 s, which scans every 60 s: a dead worker's
    lease of 30 s waited for its scan (60 s after the claim, where the fleet of 30 s scans
    every 15 s: 47 s; s3q status called it OVERDUE meanwhile) for ever, as a worker of 30 s
    judged the role by the 80 s it says. It judges it by the shorter of that and its own
    (20 s), takes it, and keeps it: the long worker judges the role by the 20 s it says."""
    clock, mem, long, short, claimed = _held_by_a_short_worker_under_a_long_scanner()
    workers = [("long", long), ("short-2", short)]
    _released_within(clock, mem, claimed, workers)
    taken = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert taken is not None and (taken.worker, taken.gen) == ("short-2", 2)
    for _ in range(600):  # and it does not flap back
        clock.advance(1.0)
        for wid, q in workers:
            q.scan(wid)
    kept = RoleRecord.from_bytes(mem.get(ROLE_KEY)[0])
    assert kept is not None and (kept.worker, kept.gen) == ("short-2", 2)


def test_a_dead_scanner_of_a_longer_role_ttl_is_replaced_within_a_shorter_workers_own() -> None:
    """The scanner of lease_ttl 120 s dies with a worker of 30 s holding a request: the
    worker of 30 s left waited for the role's 80 s (+ 2 s and a scan: 91 s) before it
    scanned, and the request with it, not its lease_ttl + 2 s + its scan interval (47 s)."""
    clock, mem, _, short, claimed = _held_by_a_short_worker_under_a_long_scanner()
    _released_within(clock, mem, claimed, [("short-2", short)])  # (the long one is dead)


def test_a_worker_that_may_not_read_the_role_scans_all_the_same() -> None:
    """The role was written by a worker whose objects this one may not read (another
    account's, a KMS key not granted): its GET raised out of every turn at the role, so
    this worker never scanned, and once that holder died no worker of the fleet could
    judge the role expired: nothing was taken over again, ever (a claim failed with it at
    every scan interval too). The role is an economy, not a lock: it scans without it."""
    from typing import Any

    from s3q.backends.delegating import DelegatingStore
    from s3q.store import StoreError

    class RoleDenied(DelegatingStore):
        def _call(self, op: str, args: dict[str, Any], fn: Any) -> Any:
            if op == "get" and args.get("key") == ROLE_KEY:
                raise StoreError(f"AccessDenied: GetObject {ROLE_KEY}")
            return fn()

    clock = FakeClock()
    mem = MemoryStore("denied", clock=clock)
    q0 = Queue(mem, QueueConfig(lease_ttl=30.0))
    q0.submit("a_request.json", b"{}")
    assert q0.claim("w0") is not None  # w0 scans for the fleet, holds a_ ... and dies
    assert role_of(mem).worker == "w0"
    q1 = Queue(RoleDenied(mem), QueueConfig(lease_ttl=30.0))
    q1.submit("b_request.json", b"{}")
    assert q1.claim("w1") is not None  # (its claims ran the scan, which raised)
    clock.advance(30.0 + CLOCK_MARGIN + 1.0)
    done = q1.scan("w1")
    assert done is not None and done.actions["a_request.json"] == "released"


def test_a_role_record_nested_deeper_than_the_json_decoder_goes_is_no_record() -> None:
    """'[' * 100000 in .s3q/scanner: json.loads raised RecursionError, which no reader
    caught: every worker's turn at the role raised, and no worker ever scanned again."""
    assert RoleRecord.from_bytes(b"[" * 100000) is None
