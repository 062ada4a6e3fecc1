"""A fleet whose workers run with different lease_ttl (a rolling change of it, an operator's
shell without the fleet's settings): each lease tells its writer's lease_ttl, and whoever
judges its expiry (the takeover scan, recover, status, the dashboard) uses that one, not
their own. A lease of an earlier s3q tells none and is judged by the reader's own."""

from __future__ import annotations

import json

import pytest

from s3q import Queue, QueueConfig, layout, leases
from s3q.backends.memory import MemoryStore
from s3q.cli.status import queue_status, render_status
from s3q.job import Job
from s3q.records import CLOCK_MARGIN, Intent, Lease
from s3q.registry import PREFIX, Registry, WorkerRecord, longer_leases
from s3q.store import NotFound
from tests.unit.harness import Denies, FakeClock
from tests.unit.test_pacing import Listing

LONG = QueueConfig(lease_ttl=120.0)
SHORT = QueueConfig(lease_ttl=30.0, scan_interval=5.0)
NAME = "a_request.json"


def held_by_a_long_lease_worker() -> tuple[Listing, FakeClock, Job]:
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))  # (counts the GETs of leases)
    # the fleet's scanner is the worker of the shorter lease_ttl (it would take the role
    # from a long-ttl one anyway, 22 s after that one's last scan)
    assert Queue(store, SHORT).scan("short-ttl") is not None
    long = Queue(store, LONG)
    long.submit(NAME, b"{}")
    job = long.claim("long-ttl")
    assert job is not None
    assert job.lease.ttl == 120.0
    found = leases.read(long.ctx, NAME)
    assert found is not None and found[0].ttl == 120.0  # written into the lease itself
    return store, clock, job


def scan(q: Queue, clock: FakeClock) -> dict[str, str]:
    clock.advance(SHORT.effective_scan_interval)  # a scan is due
    done = q.scan("short-ttl")
    assert done is not None
    return done.actions


def test_a_live_job_of_a_longer_lease_ttl_is_not_taken_over_by_a_shorter_one() -> None:
    store, clock, job = held_by_a_long_lease_worker()
    short = Queue(store, SHORT)
    clock.advance(60.0)  # past 30 s + margin, not past 120 s: its holder renews every 40 s
    assert short.is_expired(store.head(layout.key(layout.LEASES, NAME)), clock())  # by ours
    assert scan(short, clock) == {NAME: "alive"}
    assert Queue(store, SHORT).recover_stale().actions == {NAME: "alive"}  # (as the CLI)
    assert short.recovery_candidates("stale") == []
    [candidate] = short.recovery_candidates("all")
    assert candidate.live and not candidate.expired
    job.renew()  # its holder still holds it: nothing was fenced
    assert job.lease.ttl == 120.0
    # once its own lease_ttl passed without a renewal, it is taken over
    clock.advance(LONG.lease_ttl + CLOCK_MARGIN + 1.0)
    assert scan(short, clock) == {NAME: "released"}
    assert store.head(layout.key(layout.WAIT, NAME)).size == 2


def test_an_unchanged_live_lease_is_read_once_not_at_every_scan() -> None:
    store, clock, _ = held_by_a_long_lease_worker()
    short = Queue(store, SHORT)
    clock.advance(60.0)
    assert scan(short, clock) == {NAME: "alive"}
    reads = store.lease_reads
    for _ in range(5):  # 25 s more, still within the holder's 120 s
        assert scan(short, clock) == {}
    assert store.lease_reads == reads
    clock.advance(LONG.lease_ttl)
    assert scan(short, clock) == {NAME: "released"}


@pytest.mark.parametrize("ttl", [None, "120", float("nan"), -5, 0, True, [120],
                                 pytest.param(10 ** 400, id="no-float-holds-it")])
def test_a_lease_of_an_earlier_s3q_is_judged_by_the_readers_own_lease_ttl(
        ttl: object) -> None:
    """(And one whose ttl is not a positive number: edited by hand, corrupt.)"""
    store, clock, job = held_by_a_long_lease_worker()
    key = layout.key(layout.LEASES, NAME)
    record = json.loads(store.get(key)[0])
    if ttl is None:
        del record["ttl"]  # as an s3q before protocol 2.2 wrote it
    else:
        record["ttl"] = ttl
    store.inner.put(key, json.dumps(record).encode(), if_match=job.lease_etag)
    assert Lease.from_bytes(store.get(key)[0]).ttl == 0.0
    short = Queue(store, SHORT)
    clock.advance(SHORT.lease_ttl + CLOCK_MARGIN + 1.0)
    [candidate] = short.recovery_candidates("stale")
    assert candidate.expired and not candidate.live
    assert scan(short, clock) == {NAME: "released"}


@pytest.mark.parametrize("value", [pytest.param(10 ** 400, id="no-float-holds-it"),
                                   float("inf"), float("nan")])
def test_a_retry_whose_due_time_is_no_finite_number_is_due_at_once(value: float) -> None:
    """A retry lease's not_before of 400 digits (edited by hand, written by another tool)
    passed as a number: the scan's sum with it (from its second look on) raised
    OverflowError, not a store error, so every scan ended there (the takeovers after it
    in the listing, the orphans and the due retries never seen to), and s3q status failed
    on it; Infinity made a retry that never came due (and status failed), NaN one status
    could not show. It is read as due at once, its body of record kept."""
    store, clock, job = held_by_a_long_lease_worker()
    job.fail("broken", retry=True)
    key = layout.key(layout.LEASES, NAME)
    body, info = store.get(key)
    record = json.loads(body)
    assert record["intent"] == "retry"
    record["not_before"] = value
    store.inner.put(key, json.dumps(record).encode(), if_match=info.etag)
    assert Lease.from_bytes(store.get(key)[0]).not_before == 0.0
    short = Queue(store, SHORT)
    assert queue_status(short, history=False)["retrying"][0]["due_in"] == 0.0
    clock.advance(SHORT.lease_ttl)
    for _ in range(3):  # (read at the first, looked at as a due retry from the second on)
        assert scan(short, clock) == {}
    again = short.claim("short-ttl")
    assert again is not None and again.name == NAME and again.read() == b"{}"


def test_operators_are_told_only_of_longer_lease_workers_holding_leases_that_tell_none(
        ) -> None:
    clock = FakeClock()
    store = MemoryStore("fleet", clock=clock)
    record = WorkerRecord(id="long", host="h", pid=1, version="x", slots=1, busy=1,
                          paused=False, interval=10.0, started=clock(), heartbeat=clock(),
                          lease_ttl=120.0)
    store.put(PREFIX + "long", record.to_bytes())
    records = Registry(store).records()
    assert longer_leases(records, 30.0, holders={"long"}) == {"long": 120.0}
    assert longer_leases(records, 30.0, holders=set()) == {}  # its leases tell 120 s
    assert longer_leases(records, 120.0, holders={"long"}) == {}



def test_recover_stale_takes_over_what_expired_by_a_shorter_lease_ttl_than_its_own() -> None:
    """An operator's shell with a longer lease_ttl than the fleet's: what its plan (and
    --dry-run) lists as expired, recover --stale recovers."""
    clock = FakeClock()
    store = MemoryStore("ttl", clock=clock)
    short = Queue(store, SHORT)
    short.submit(NAME, b"{}")
    assert short.claim("short-ttl") is not None  # and its worker dies
    clock.advance(SHORT.lease_ttl + CLOCK_MARGIN + 1.0)
    operator = Queue(store, LONG)
    [candidate] = operator.recovery_candidates("stale")
    assert candidate.expired
    assert operator.recover_stale().actions == {NAME: "released"}



def _as_an_earlier_s3q_wrote_it(store: Listing, job: Job) -> None:
    key = layout.key(layout.LEASES, NAME)
    record = json.loads(store.get(key)[0])
    del record["ttl"]
    job.lease_etag = store.inner.put(key, json.dumps(record).encode(),
                                     if_match=job.lease_etag).etag



def _registered(store: Listing, clock: FakeClock, worker: str, lease_ttl: float) -> None:
    record = WorkerRecord(id=worker, host="h", pid=1, version="x", slots=1, busy=1,
                          paused=False, interval=10.0, started=clock(), heartbeat=clock(),
                          lease_ttl=lease_ttl)
    store.inner.put(PREFIX + worker, record.to_bytes())



def test_the_scan_judges_a_lease_telling_no_ttl_by_its_live_holders_published_one() -> None:
    """An s3q before 2.2 publishes its lease_ttl in its registry record but not in its
    leases: recover refuses and status warns while such a worker with a longer lease_ttl
    holds one; the scan (which runs on its own) must not take its live job over either."""
    store, clock, job = held_by_a_long_lease_worker()
    _as_an_earlier_s3q_wrote_it(store, job)
    short = Queue(store, SHORT)
    clock.advance(60.0)  # past 30 s, not past its holder's 120 s
    _registered(store, clock, "long-ttl", 120.0)  # alive: its record was just rewritten
    assert scan(short, clock) == {NAME: "alive"}
    reads = store.lease_reads
    assert scan(short, clock) == {}  # not read again until it changes
    assert store.lease_reads == reads
    # its holder died: its record goes stale, and the lease is judged by ours again
    clock.advance(LONG.lease_ttl + CLOCK_MARGIN + 1.0)
    assert scan(short, clock) == {NAME: "released"}



def test_a_lease_is_overdue_only_after_its_writers_fleet_had_two_scans_to_take_it() -> None:
    """OVERDUE means no worker is scanning: a fleet of lease_ttl 120 scans every 60 s,
    so an operator's shell with 30 s (scan interval 15 s) must not call its expired
    leases overdue 30 s after they expired."""
    store, _, _ = held_by_a_long_lease_worker()
    info = store.head(layout.key(layout.LEASES, NAME))
    operator = Queue(store, QueueConfig())
    expiry = info.last_modified + LONG.lease_ttl + CLOCK_MARGIN
    assert not operator.is_overdue(info, expiry + 2 * 15.0 + 1.0, 120.0)
    assert not operator.is_overdue(info, expiry + 2 * 60.0 - 1.0, 120.0)
    assert operator.is_overdue(info, expiry + 2 * 60.0 + 1.0, 120.0)


def test_a_dead_workers_lease_of_a_shorter_lease_ttl_is_taken_over_within_its_own() -> None:
    """The scanner runs lease_ttl 120 s; a worker of 30 s dies holding a request. Its lease
    says 30 s, but the scan read only leases that looked expired by its own 120 s: the
    request waited 122 s, not 32 s and a scan (invariant 3's bound). Now the scan reads a
    lease it has not read before once it was not rewritten for a third of the scanner's
    lease_ttl + 4 s, and judges it by what it says from then on."""
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))
    scanner = Queue(store, LONG)
    assert scanner.scan("long-ttl") is not None  # the fleet's scanner
    short = Queue(store, SHORT)
    short.submit(NAME, b"{}")
    assert short.claim("short-ttl") is not None  # and its worker dies
    died = clock()
    released = None
    while released is None:
        clock.advance(1.0)
        assert clock() - died <= SHORT.lease_ttl + CLOCK_MARGIN + \
            LONG.effective_scan_interval + 1.0, "not taken over within its own lease_ttl"
        done = scanner.scan("long-ttl")
        if done is not None and done.actions.get(NAME) == "released":
            released = clock()
    assert store.head(layout.key(layout.WAIT, NAME)).size == 2


def test_a_live_lease_is_read_once_at_first_sight_and_then_judged_by_what_it_said() -> None:
    """The cost of that: one GET per lease not rewritten for a third of the scanner's
    lease_ttl + 4 s (not a short job's), and one per renewal only while its holder renews
    less often than the scanner's lease_ttl + 2 s."""
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))
    scanner = Queue(store, LONG)
    assert scanner.scan("long-ttl") is not None
    worker = Queue(store, LONG)
    worker.submit(NAME, b"{}")
    job = worker.claim("other")
    assert job is not None
    reads = store.lease_reads
    clock.advance(LONG.effective_scan_interval)
    done = scanner.scan("long-ttl")
    assert done is not None and done.actions == {}  # live: nothing to report
    assert store.lease_reads == reads + 1  # first sight
    for _ in range(3):
        clock.advance(LONG.effective_scan_interval / 2)
        job.renew()
        clock.advance(LONG.effective_scan_interval / 2)
        done = scanner.scan("long-ttl")
        assert done is not None and done.actions == {}
    assert store.lease_reads == reads + 1  # renewed, never looked expired: not read again


def test_a_lease_gone_between_the_listing_and_its_first_read_is_not_reported() -> None:
    """A job that ends between the scan's LIST and its first read of the lease (most jobs
    seen by a scan are short): nothing to take over, and nothing in the scan's report."""
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))
    scanner = Queue(store, LONG)
    assert scanner.scan("long-ttl") is not None
    worker = Queue(store, LONG)
    worker.submit(NAME, b"{}")
    job = worker.claim("other")
    assert job is not None
    store.before_get[layout.key(layout.LEASES, NAME)] = job.complete
    clock.advance(LONG.effective_scan_interval)
    done = scanner.scan("long-ttl")
    assert done is not None and done.actions == {}
    assert store.head(layout.key(layout.FINISH, NAME)).size == 2


def test_a_due_retry_of_a_longer_lease_ttl_gets_its_view_back_in_time() -> None:
    """A worker of lease_ttl 120 s fails a request (a retry lease telling 120 s) and its
    view in wait/ is deleted (aws s3 rm, a stale c2). The scan gives a due retry its view
    back 2 scan intervals after it came due (PROTOCOL §4 takeover, step 0): a retry lease is
    nobody's job, its lease_ttl judges nothing. The first-sight read skipped it as 'live' and
    it was registered only once it looked expired by its 120 s: its view came back 2 min
    late (before the first-sight read, by the scanner's own 30 s)."""
    store, clock, job = held_by_a_long_lease_worker()
    short = Queue(store, SHORT)
    job.fail("boom")
    found = leases.read(short.ctx, NAME)
    assert found is not None and found[0].intent is Intent.RETRY and found[0].ttl == 120.0
    store.inner.delete(layout.key(layout.WAIT, NAME))  # its view: gone
    interval = SHORT.effective_scan_interval
    while True:
        actions = scan(short, clock)
        if actions.get(NAME) == "view restored":
            break
        assert clock() <= found[0].not_before + 2 * interval + 2 * interval, \
            "a due retry's view not restored in time"
    assert store.head(layout.key(layout.WAIT, NAME)).size == 2


def test_a_lease_claimed_again_by_a_worker_of_a_shorter_lease_ttl_is_judged_by_its_own() -> None:
    """The scanner runs lease_ttl 120 s and read a retry lease a worker of 120 s wrote (it
    said 120 s). A worker of 30 s claims that retry (c1': the same lease, changed) and dies.
    Judged by the shorter of what it said before (120 s) and the scanner's own (120 s), it
    was not read again until 122 s after the claim, and taken over at the scan after that
    (180 s), not within its own 30 s, the scanner's renewal interval and a scan."""
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))
    scanner = Queue(store, LONG)
    assert scanner.scan("long-ttl") is not None  # the fleet's scanner
    long = Queue(store, LONG)
    long.submit(NAME, b"{}")
    job = long.claim("long-w")
    assert job is not None
    job.fail("boom")  # a retry lease telling 120 s
    clock.advance(LONG.effective_scan_interval)
    assert scanner.scan("long-ttl") is not None  # it reads the retry lease
    claimed = Queue(store, SHORT).claim("short-ttl")  # c1', and its worker dies
    assert claimed is not None and claimed.lease.ttl == SHORT.lease_ttl
    died = clock()
    bound = max(SHORT.lease_ttl + CLOCK_MARGIN, LONG.renew_interval + 2 * CLOCK_MARGIN) \
        + LONG.effective_scan_interval
    while True:
        clock.advance(1.0)
        assert clock() - died <= bound + 1.0, "not taken over in time"
        done = scanner.scan("long-ttl")
        if done is not None and done.actions.get(NAME) == "released":
            break
    assert store.head(layout.key(layout.WAIT, NAME)).size == 2


@pytest.mark.parametrize(("ours", "theirs", "read"), [
    (QueueConfig(), QueueConfig(), False), (SHORT, SHORT, False),
    (QueueConfig(), QueueConfig(lease_ttl=60.0), True),
    (QueueConfig(), QueueConfig(lease_ttl=80.0), True), (LONG, QueueConfig(), False)],
    ids=["30-30", "30-30-scan-5s", "30-60", "30-80", "120-30"])
def test_live_leases_are_read_at_most_once_while_renewed(
        ours: QueueConfig, theirs: QueueConfig, read: bool) -> None:
    """What reading leases costs: nothing while a holder of a lease_ttl up to the
    scanner's renews it (every lease_ttl/3), even where scans are more frequent than
    renewals; one GET for a holder of a longer one, up to 3 times it (the first, to learn
    its lease_ttl), however often it renews."""
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))
    scanner = Queue(store, ours)
    assert scanner.scan("scanner") is not None
    worker = Queue(store, theirs)
    jobs = []
    for i in range(20):
        worker.submit(f"{i}_{NAME}", b"{}")
        job = worker.claim("other")
        assert job is not None
        jobs.append(job)
    reads, renewed = store.lease_reads, clock()
    for _ in range(int(10 * max(ours.lease_ttl, theirs.lease_ttl))):
        clock.advance(1.0)
        if clock() - renewed >= theirs.renew_interval:
            for job in jobs:
                job.renew()
            renewed = clock()
        done = scanner.scan("scanner")
        assert done is None or done.actions == {}
    assert store.lease_reads == reads + (len(jobs) if read else 0)


def test_a_lease_the_scan_may_not_read_does_not_stop_it() -> None:
    """A GET of a lease that fails with an error of its own (denied) ended every scan
    there, and a dead worker's lease listed after it was never taken over (nor orphans
    adopted, nor due retries' views restored); since the scan reads every lease at first
    sight, a live one did too. It is reported (scan_failed), as a takeover that fails so
    is, and the scan goes on."""
    clock = FakeClock()
    mem = MemoryStore("ttl", clock=clock)
    unreadable = layout.key(layout.LEASES, "a_" + NAME)
    scanner = Queue(Denies(mem, [unreadable]), SHORT)
    assert scanner.scan("scanner") is not None
    workers = Queue(mem, SHORT)
    for name in ("a_" + NAME, "b_" + NAME):
        workers.submit(name, b"{}")
        assert workers.claim(f"dead-{name[0]}") is not None  # and both workers die
    died = clock()
    failed: set[str] = set()
    while True:
        clock.advance(1.0)
        assert clock() - died <= SHORT.lease_ttl + CLOCK_MARGIN + \
            SHORT.effective_scan_interval + 1.0, "not taken over in time"
        done = scanner.scan("scanner")
        if done is not None:
            failed |= set(done.failed)
            if done.actions.get("b_" + NAME) == "released":
                break
    assert failed == {"a_" + NAME}
    found = leases.read(workers.ctx, "a_" + NAME)
    assert found is not None and found[0].worker == "dead-a"  # left: it could not be read



def test_the_scan_does_not_read_the_leases_of_short_jobs() -> None:
    """Most leases a scan lists are of jobs shorter than a scan interval, seen by no other
    scan: read at first sight, each scan sent one GET per lease in flight (50 here, one
    after the other on the scanner's thread: 1,000 slots busy with short jobs took ~20 s of
    GETs a scan at 20 ms each, longer than the scan interval and the role's TTL). A lease
    rewritten within a third of the scanner's lease_ttl + 4 s is not read: its holder lives
    (or did a moment ago)."""
    clock = FakeClock()
    store = Listing(MemoryStore("ttl", clock=clock))
    config = QueueConfig()
    scanner = Queue(store, config)
    assert scanner.scan("scanner") is not None
    workers = Queue(store.inner, config)
    running: list[tuple[float, Job]] = []
    reads = store.lease_reads
    for second in range(300):
        clock.advance(1.0)
        for started, job in [r for r in running if clock() - r[0] >= 2.0]:  # 2 s jobs
            job.complete()
            running.remove((started, job))
        while len(running) < 50:
            workers.submit(f"{second}-{len(running)}_{NAME}", b"{}")
            claimed = workers.claim("w")
            assert claimed is not None
            running.append((clock(), claimed))
        done = scanner.scan("scanner")
        assert done is None or (done.actions == {} and not done.failed)
    assert store.lease_reads == reads


def test_a_due_retry_whose_view_the_scan_may_not_look_at_does_not_stop_it() -> None:
    """Restoring the view of a due retry (PROTOCOL §4 takeover, step 0) was outside the
    scan's per-request error handling: one denied HEAD of wait/NAME ended every scan there,
    and the due retries after it never got their views back (nor were the names the scan
    released offered to the claimer). It is reported (scan_failed) and the scan goes on."""
    clock = FakeClock()
    mem = MemoryStore("ttl", clock=clock)
    store = Denies(mem, [], ops=("get", "head"))
    scanner = Queue(store, SHORT)
    assert scanner.scan("scanner") is not None  # the fleet's scanner
    workers = Queue(mem, SHORT)
    names = ("a_" + NAME, "b_" + NAME)
    for name in names:
        workers.submit(name, b"{}")
        job = workers.claim("worker")
        assert job is not None and job.name == name
        job.fail("boom")
    for name in names:
        mem.delete(layout.key(layout.WAIT, name))  # their views: gone (aws s3 rm)
    store.keys.add(layout.key(layout.WAIT, names[0]))
    found = leases.read(workers.ctx, names[1])
    assert found is not None and found[0].intent is Intent.RETRY
    interval = SHORT.effective_scan_interval
    failed: set[str] = set()
    while True:
        clock.advance(1.0)
        assert clock() <= found[0].not_before + 4 * interval + 1.0, \
            "a due retry's view not restored in time"
        done = scanner.scan("scanner")
        if done is not None:
            failed |= set(done.failed)
            if done.actions.get(names[1]) == "view restored":
                break
    assert failed == {names[0]}
    assert mem.head(layout.key(layout.WAIT, names[1])).size == 2
    with pytest.raises(NotFound):
        mem.head(layout.key(layout.WAIT, names[0]))  # left: it could not be looked at


def test_an_expired_lease_is_not_overdue_while_the_live_scanner_has_not_had_two_scans() -> None:
    """Every worker of lease_ttl 30 s died, one of 120 s (scanning every 60 s) holds the
    scanner role. A 30 s lease of a dead worker is taken over at the scanner's next scan
    after it looks expired to it, up to ~60 s after its expiry; an operator's `s3q status`
    with 30 s settings (scan interval 15 s) called it OVERDUE ('no worker is scanning this
    queue') 30 s after its expiry, while the scanner scanned all along. The role record
    now says its holder's scan interval, and status shows who scans and when it last did."""
    clock = FakeClock()
    store = MemoryStore("ttl", clock=clock)
    scanner = Queue(store, LONG)
    assert scanner.scan("long-ttl") is not None  # the fleet's scanner, scanning every 60 s
    clock.advance(10.0)
    short = Queue(store, SHORT)
    short.submit(NAME, b"{}")
    job = short.claim("short-ttl")  # (the role is live by its 20 s: it stays the scanner's)
    assert job is not None
    for _ in range(2):
        clock.advance(20.0)
        job.renew()  # the last renewal 50 s after the scan: the scanner reads it at 120 s
    # and its worker dies
    operator = Queue(store, QueueConfig(lease_ttl=30.0))
    seen_overdue = []
    while True:
        clock.advance(1.0)
        done = scanner.scan("long-ttl")
        if done is not None and done.actions.get(NAME) == "released":
            break
        status = queue_status(operator, history=False)
        if NAME in status["expired"]:
            assert status["scanner"]["worker"] == "long-ttl"
            assert status["scanner"]["every"] == LONG.effective_scan_interval
            assert status["scanner"]["live"] is True
        seen_overdue += status["overdue"]
    assert seen_overdue == [], "called OVERDUE while the scanner scanned"
    line = next(t for t in render_status(status).splitlines() if t.startswith("scanner"))
    assert line.startswith("scanner   long-ttl, last scan ") and "(every 1m00s)" in line
    # the scanner dies too: its role expires, and then the lease of the next worker to die
    # is judged by the operator's own scan interval again
    # (NAME, released, waits too: a claim's page starts at a random key, so which of the
    # two it takes is not known)
    short.submit("b_" + NAME, b"{}")
    again = short.claim("short-ttl")
    assert again is not None
    clock.advance(SHORT.lease_ttl + CLOCK_MARGIN + 2 * 15.0 + 1.0)  # (overdue by our own)
    status = queue_status(operator, history=False)
    assert status["scanner"]["live"] is True and status["overdue"] == []
    clock.advance(LONG.lease_ttl * 2 / 3 + CLOCK_MARGIN - 2 * 15.0)  # its role expired
    status = queue_status(operator, history=False)
    assert status["scanner"]["live"] is False
    assert status["overdue"] == [again.name]
    assert "EXPIRED" in render_status(status)


def test_the_dashboard_lists_the_problems_status_check_reports_of_a_mixed_fleet() -> None:
    """The overview shows "the problems `status --check` reports" (README), but it left out
    two that a rolling deploy meets: a worker whose circuit breaker is open (a new revision
    whose handler fails: status --check fails, ValidateService with it) and live workers
    of a longer lease_ttl holding leases of an earlier s3q, which tell none and which the
    dashboard, run with a shorter one, marks EXPIRED while they are renewed. It said
    "None: every expired lease is being taken over"."""
    from s3q.breaker import BREAKERS
    from s3q.dashboard.snapshot import take_snapshot

    store, clock, job = held_by_a_long_lease_worker()
    key = layout.key(layout.LEASES, NAME)
    record = json.loads(store.get(key)[0])
    del record["ttl"]  # as an s3q before protocol 2.2 wrote it
    store.inner.put(key, json.dumps(record).encode(), if_match=job.lease_etag)
    worker = WorkerRecord(id="long-ttl", host="h", pid=1, version="x", slots=1, busy=1,
                          paused=False, interval=60.0, started=clock(), heartbeat=clock(),
                          lease_ttl=120.0)
    store.put(PREFIX + "long-ttl", worker.to_bytes())
    now = store.now()
    store.put(BREAKERS + "new-rev", json.dumps(
        {"v": 1, "worker": "new-rev", "opened_at": now, "until": now + 60.0, "pause": 60.0,
         "trips": 1, "failed": ["x_request.json"] * 5,
         "last_error": "HandlerError: python failed (exit code 1)"}).encode())
    short = Queue(store, SHORT)
    clock.advance(SHORT.lease_ttl + CLOCK_MARGIN + 1.0)  # (its holder renews it: 120 s)
    status = queue_status(short, history=False)["problems"]
    assert any("circuit breaker open" in p and "new-rev" in p for p in status)
    assert any("run with lease_ttl 120s, longer than this command's 30s" in p for p in status)
    problems = take_snapshot(short).problems
    assert [p for p in problems if "circuit breaker" in p or "lease_ttl 120s" in p] == [
        p for p in status if "circuit breaker" in p or "lease_ttl 120s" in p]
