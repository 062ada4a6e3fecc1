"""The lease keeper, and the renewal of a lease during a long copy, when a thread cannot be
started (found in review)."""

from __future__ import annotations

import threading
import time

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore


def test_the_lease_keeper_outlives_a_thread_it_cannot_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each renewal runs on a thread of its own. Starting one can fail (RuntimeError "can't
    start new thread": a process at its thread or memory limit). The keeper's own thread
    must not die of it: it would renew no lease of the process again, and every job's
    lease would expire and be taken over while its handler still ran."""
    q = Queue(MemoryStore("keeper-test"), QueueConfig(lease_ttl=5.0))
    q.submit("a_request.json", b"{}")
    job = q.claim("w")
    assert job is not None
    keeper = q.keeper  # (its own thread started as usual)
    refused = threading.Event()
    real = threading.Thread

    class Thread(real):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            if self.name == "s3q-lease-renew" and not refused.is_set():
                refused.set()
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(threading, "Thread", Thread)  # (s3q.job looks it up at each use)
    try:
        with job:
            seq = job.lease.seq
            assert refused.wait(10)  # the first renewal's thread was refused
            deadline = time.monotonic() + 10
            while job.lease.seq == seq and time.monotonic() < deadline:
                time.sleep(0.05)
            renewed = job.lease.seq > seq
            alive = keeper._thread.is_alive()
    finally:
        monkeypatch.undo()
        q.close()
    assert alive, "the lease keeper's thread died"
    assert renewed, "the lease was never renewed again"


def test_a_long_copy_without_a_thread_to_renew_its_lease_still_runs(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The copies of a large request renew its lease from a thread of their own
    (:func:`s3q.renewing.renewed_while`). When none can be started, the RuntimeError
    escaped the job's outcome (not a StoreError: the worker took it for a bug of its own);
    the copy now runs unrenewed, as a slow one would, and says so."""
    q = Queue(MemoryStore("renew-test"), QueueConfig(lease_ttl=5.0))
    q.submit("a_large_request.bin", b"x" * 100_000)  # over INLINE_MAX: a private copy
    job = q.claim("w")
    assert job is not None and job.lease.body_key is not None
    real = threading.Thread
    refused: list[str] = []

    class Thread(real):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            if self.name == "s3q-copy-renew":
                refused.append(self.name)
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(threading, "Thread", Thread)  # (s3q.renewing looks it up at each use)
    try:
        job.complete()  # d3: a copy of the private copy to finish/
    finally:
        monkeypatch.undo()
        q.close()
    assert refused, "the copy asked for no renewal thread"
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
    assert list(q.leases()) == []
    assert [r for r in caplog.records if getattr(r, "event", "") == "renew_no_thread"]
