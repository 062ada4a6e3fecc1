"""Settings lowered while requests wait for a retry: the fleet restarted with a smaller
``max_attempts`` than the one their last failure was judged by."""

from __future__ import annotations

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from tests.unit.harness import FakeClock


def test_a_retry_past_a_lowered_max_attempts_is_dead_lettered_with_its_last_error() -> None:
    """Before, its error record said only "attempt 3 exceeds max_attempts=2": the handler's
    own failure, what an operator needs to decide on a requeue, was gone."""
    clock = FakeClock()
    mem = MemoryStore("lowered", clock=clock)
    q = Queue(mem, QueueConfig(max_attempts=5))
    q.submit("a_request.json", b"{}")
    for _ in range(2):
        job = q.claim("w")
        assert job is not None
        job.fail(ValueError("column 'price' is not a number"))
        clock.advance(3600)  # (its backoff over)
    lowered = Queue(mem, QueueConfig(max_attempts=2))

    assert lowered.claim("w") is None  # its third attempt: dead-lettered, not run

    assert [i.key for i in lowered.ls("failed")] == ["a_request.json"]
    record = lowered.error_record("a_request.json")
    assert record is not None
    assert record.error["message"] == (
        "attempt 3 exceeds max_attempts=2; its last attempt failed: "
        "ValueError: column 'price' is not a number")
