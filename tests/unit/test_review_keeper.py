"""The lease keeper when a thread cannot be started (found in review)."""

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
