"""The runner's settler when it cannot start a thread."""

from __future__ import annotations

import threading

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.running import Runner


def test_a_job_is_settled_by_its_slot_when_no_settler_thread_can_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Settlements run on a pool of threads, started on demand. Starting one can fail
    (RuntimeError "can't start new thread": a process at its thread or memory limit): the
    job must still be settled (by the slot itself), and the runner must not count a
    settlement under way for ever (a burst waits while one is)."""
    q = Queue(MemoryStore("settler-test"), QueueConfig(lease_ttl=5.0))
    q.submit("a_request.json", b"{}")
    job = q.claim("w")
    assert job is not None
    done: list[str] = []
    runner = Runner(lambda job: b"ok", 1, lambda job, outcome, elapsed: done.append(outcome))
    runner.start()
    real = threading.Thread

    class Thread(real):  # type: ignore[misc, valid-type]
        def start(self) -> None:
            if self.name.startswith("s3q-settle"):
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(threading, "Thread", Thread)  # (the pool looks it up at each use)
    try:
        runner.run(job, lambda job: None)
    finally:
        monkeypatch.undo()
        runner.shutdown()
        q.close()
    assert done == ["completed"]
    assert not runner.settling
    assert q.counts()["finish"] == 1 and q.result("a_request.json") == b"ok"
