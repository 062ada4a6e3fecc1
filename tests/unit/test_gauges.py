"""The queue gauges from a snapshot of a real queue (in memory), and docs/METRICS.md lists
every metric the code exports."""

from __future__ import annotations

import re
import time
from pathlib import Path

from prometheus_client import generate_latest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.dashboard.snapshot import Snapshots, take_snapshot, throughput
from s3q.gauges import gauges, queue_registry
from s3q.metrics import Metrics
from s3q.pause import pause
from s3q.registry import PREFIX, Registry, WorkerRecord
from tests.unit.harness import FakeClock
from tests.unit.test_pacing import Listing
from tests.unit.test_unreadable_leases import held
from tests.unit.test_upgrade import corrupt_lease_left_for_an_operator

DOC = (Path(__file__).resolve().parents[2] / "docs" / "METRICS.md").read_text()


def busy_queue() -> Queue:
    q = Queue(MemoryStore("gauges"), QueueConfig(lease_ttl=30))
    for i in range(5):
        q.submit(f"{i}_request.json", b"{}")
    for _ in range(2):
        assert q.claim("w-a") is not None
    now = time.time()
    record = WorkerRecord(id="w-a", host="h", pid=1, version="0", slots=4, busy=2,
                          paused=False, interval=60, started=now - 300, heartbeat=now,
                          history=[(now - 120, 7), (now - 60, 5)])
    q.store.put(PREFIX + "w-a", record.to_bytes())
    pause(q.store, by="t")
    return q


def test_the_gauges_describe_the_queue() -> None:
    text = generate_latest(queue_registry(Snapshots(busy_queue()),
                                          MemoryStore("unused"))).decode()
    for line in ['s3q_queue_requests{state="wait"} 3.0',
                 's3q_queue_requests{state="processing"} 2.0',
                 's3q_queue_requests_complete{state="finish"} 1.0',
                 's3q_queue_in_flight{worker="w-a"} 2.0', "s3q_queue_paused 1.0",
                 's3q_workers{state="live"} 1.0', 's3q_worker_busy_slots{worker="w-a"} 2.0',
                 "s3q_queue_backlog_per_worker 3.0"]:
        assert line in text, line


def test_throughput_comes_from_the_registry_records_per_minute() -> None:
    q = busy_queue()
    snap = take_snapshot(q, Registry(q.store))
    assert len(snap.throughput) == 60 and snap.completed_last_hour == 12
    assert throughput(snap.workers, now=time.time() + 7200) == [0] * 60


def test_every_exported_metric_is_documented() -> None:
    families = [*gauges(take_snapshot(busy_queue())), *Metrics().registry.collect()]
    names = {m.name + ("_total" if m.type == "counter" else "") for m in families}
    names |= {"s3q_store_requests_total", "s3q_store_errors_total"}
    documented = set(re.findall(r"^\| `(s3q_[a-z_]+)` \|", DOC, re.M))
    assert names <= documented, names - documented


def test_a_snapshot_reads_leases_up_to_its_limit_and_says_when_there_are_more() -> None:
    q = busy_queue()  # two leases
    assert q.claim("w-b") is not None  # three
    capped = take_snapshot(q, lease_limit=2)
    assert len(capped.in_flight) == 2 and not capped.leases_complete
    whole = take_snapshot(q, lease_limit=3)
    assert len(whole.in_flight) == 3 and whole.leases_complete
    assert sorted(r.worker for r in whole.in_flight) == ["w-a", "w-a", "w-b"]
    assert len({r.name for r in whole.in_flight}) == 3


def test_a_snapshot_reads_no_more_leases_than_its_limit_and_one() -> None:
    store = Listing(MemoryStore("many"))  # (counts the GETs of leases)
    q = Queue(store)
    for i in range(30):
        q.submit(f"{i:02d}.json", b"{}")
        assert q.claim("w") is not None
    store.lease_reads = 0
    snap = take_snapshot(q, lease_limit=2)
    assert len(snap.in_flight) == 2 and not snap.leases_complete
    assert store.lease_reads == 3


def test_the_gauges_say_when_the_leases_past_the_limit_were_not_read() -> None:
    """The lease gauges (in flight, expired, overdue: the alert on no worker running) count
    the leases read: up to the limit, in key order. One past it, overdue, is not seen: the
    gauges must say so rather than let 0 read as none."""
    clock = FakeClock()
    store = MemoryStore("overdue-past-the-limit", clock=clock)
    q = Queue(store, QueueConfig(lease_ttl=30))
    for name in ("a_request.json", "b_request.json", "c_request.json"):
        q.submit(name, b"{}")
        assert q.claim("w-a") is not None
    clock.advance(600)  # (its worker died; no worker scans)
    overdue = 's3q_queue_overdue_leases 3.0'
    text = generate_latest(queue_registry(Snapshots(q, lease_limit=3), store)).decode()
    assert overdue in text and "s3q_queue_leases_complete 1.0" in text
    text = generate_latest(queue_registry(Snapshots(q, lease_limit=2), store)).decode()
    assert "s3q_queue_overdue_leases 2.0" in text and "s3q_queue_leases_complete 0.0" in text


def test_the_gauges_count_the_leases_no_takeover_will_clear() -> None:
    """Two kinds of lease hold a request that no worker's takeover will ever move on, and
    s3q status --check fails on both: a corrupt one left for an operator (counted as
    overdue until 21da248 made it no longer overdue, by design: since, in no gauge) and one
    whose GET is denied (never counted). The gauges must show them, or the alerts built on
    them never fire while the request stays stuck."""
    q = corrupt_lease_left_for_an_operator()
    text = generate_latest(queue_registry(Snapshots(q), q.store)).decode()
    assert "s3q_queue_overdue_leases 0.0" in text  # (the fleet scans: left by design)
    assert "s3q_queue_corrupt_leases 1.0" in text and "s3q_queue_unreadable_leases 0.0" in text
    denied = held()  # (b's lease: its GET denied)
    text = generate_latest(queue_registry(Snapshots(denied), denied.store)).decode()
    assert 's3q_queue_in_flight{worker="w"} 2.0' in text
    assert "s3q_queue_unreadable_leases 1.0" in text and "s3q_queue_corrupt_leases 0.0" in text
