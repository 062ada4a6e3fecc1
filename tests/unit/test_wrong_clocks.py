"""Workers whose own clock is wrong: the fleet's figures are judged by the store's clock.

A worker's wall clock is modelled by replacing ``time`` in the module that reads it (the
fault: a host whose NTP is broken, a VM restored from a snapshot); the store's clock is
the in-memory store's :class:`FakeClock`, and the reader's (the dashboard's, the
exporter's) is right: the store's.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

import s3q.dashboard.snapshot
import s3q.registry
from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.dashboard.snapshot import Snapshots, take_snapshot
from s3q.gauges import queue_registry
from s3q.job import Job
from s3q.worker import Worker, WorkerOptions
from tests.unit.harness import Denies, FakeClock


def ok(job: Job) -> None:
    pass


@pytest.mark.parametrize("off", [-3600.0, +3600.0, -600.0, 0.0])
def test_a_worker_whose_clock_is_wrong_is_counted_in_the_throughput(
        monkeypatch: pytest.MonkeyPatch, off: float) -> None:
    """Its completions per minute (its registry record's history) are counted by the
    minute of the store's clock at its heartbeat, as the dashboard's chart and the
    completed-per-minute gauge read them: by its own clock, an hour slow, they were an
    hour old (out of the chart) or, fast, an hour ahead (never shown); ten minutes slow,
    the last ten minutes of its work were missing from the gauge."""
    clock = FakeClock()
    q = Queue(MemoryStore("wrong-clock", clock=clock), QueueConfig(lease_ttl=30))
    monkeypatch.setattr(s3q.dashboard.snapshot, "time", SimpleNamespace(
        time=clock, perf_counter=time.perf_counter, monotonic=time.monotonic))
    monkeypatch.setattr(s3q.registry, "time", SimpleNamespace(time=lambda: clock() + off),
                        raising=False)
    worker = Worker(q, ok, WorkerOptions("w-off", concurrency=1))
    worker.stats.completed = 4  # (four requests done since its start)
    worker.presence.beat()
    snap = take_snapshot(q)
    assert snap.completed_last_hour == 4
    clock.advance(120)  # (two minutes on: that minute is a whole one of the last five)
    text = generate_latest(queue_registry(Snapshots(q), q.store)).decode()
    assert "s3q_queue_completed_per_minute 0.8" in text


def test_a_store_clock_set_back_does_not_stop_the_takeover_scan() -> None:
    """The store's clock is stepped back an hour (a local store's host whose NTP corrects
    a clock an hour fast; an S3-compatible server's, whose Date the store clock follows
    down): a worker that scanned just before must scan again a scan interval later, not
    an hour and a scan interval later, or the leases of workers that die meanwhile wait
    an hour to be taken over (OVERDUE, with a worker running)."""
    clock = FakeClock()
    store = MemoryStore("set-back", clock=clock)
    config = QueueConfig(lease_ttl=30)
    scanner, dying = Queue(store, config), Queue(store, config)
    assert scanner.scan("w-scan") is not None  # (its first scan: the next one is due in 15 s)
    clock.advance(-3600)
    dying.submit("a_request.json", b"{}")
    assert dying.claim("w-dead") is not None  # (and its worker dies)
    clock.advance(30 + 2 + 1)  # (expired by the store's clock)
    done = scanner.scan("w-scan")
    assert done is not None and "a_request.json" in done.actions
    assert [i.key for i in store.list_page("wait/").items] == ["wait/a_request.json"]


def test_a_store_clock_set_back_does_not_stretch_a_claims_skip() -> None:
    """A request the store refused to read is skipped for a minute (by the store's clock);
    the clock is then set back an hour: once readable again, it is claimed a minute
    later, not an hour and a minute later (a worker alone on its queue, a local store)."""
    clock = FakeClock()
    denies = Denies(MemoryStore("skip-set-back", clock=clock), ["wait/a_request.json"])
    q = Queue(denies, QueueConfig(lease_ttl=30))
    q.submit("a_request.json", b"{}")
    assert q.claim("w") is None  # (refused: skipped for UNREADABLE_RETRY, 60 s)
    denies.keys.clear()  # (restored, readable now)
    clock.advance(-3600)
    clock.advance(61)
    job = q.claim("w")
    assert job is not None and job.name == "a_request.json"
