"""s3q.breaker on an in-memory queue with a fake clock: what trips it, what it charges,
what it gives back, its pauses, its record, and a worker that waits at its gate."""

from __future__ import annotations

import json
import threading

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.memory import MemoryStore
from s3q.breaker import BREAKERS, MAX_FACTOR, Breaker, HeldBack, breaker_records
from s3q.handlers import HandlerUnavailable
from s3q.job import Job
from s3q.worker import Worker, WorkerOptions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue() -> Queue:
    q = Queue(MemoryStore(f"breaker-{id(object())}"),
              QueueConfig(retry_base_delay=0, retry_max_delay=0, max_attempts=3))
    for i in range(10):
        q.submit(f"r{i}", b"{}")
    return q


def fail(job: Job) -> None:
    raise RuntimeError("downstream credentials expired")


def succeed(job: Job) -> bytes:
    return b"ok"


def run(queue: Queue, breaker: Breaker, handler: object, name: str | None = None) -> str:
    """Claim (``name`` if given: others are released untouched) and run one job."""
    job = queue.claim("w")
    while job is not None and name is not None and job.name != name:
        job.release()
        job = queue.claim("w")
    assert job is not None
    try:
        with job:
            breaker.wrap(handler)(job)  # type: ignore[arg-type]
    except HeldBack:
        return "held_back"
    except Exception:
        return "charged"
    return "completed"


def attempts(queue: Queue, name: str) -> int:
    found = queue.lease(name)
    return 0 if found is None else found[0].attempts


def test_different_requests_failing_in_a_row_trip_it(queue: Queue) -> None:
    clock = Clock()
    breaker = Breaker(queue, "w", threshold=3, pause=60, clock=clock)
    outcomes = [run(queue, breaker, fail, f"r{i}") for i in range(3)]
    assert outcomes == ["charged", "charged", "held_back"]
    assert breaker.is_open
    assert [attempts(queue, f"r{i}") for i in range(3)] == [1, 1, 0]  # r2 not charged
    assert queue.counts()["wait"] == 10 and queue.counts()["failed"] == 0
    [record] = breaker_records(queue)
    assert record["worker"] == "w" and record["failed"] == ["r0", "r1", "r2"]
    assert record["until"] == pytest.approx(record["opened_at"] + 60)
    assert "credentials expired" in record["last_error"]
    # while open, every failure is given back uncharged
    assert run(queue, breaker, fail, "r5") == "held_back" and attempts(queue, "r5") == 0


def test_a_poison_request_alone_never_trips_it(queue: Queue) -> None:
    breaker = Breaker(queue, "w", threshold=2, pause=60, clock=Clock())

    def poison(job: Job) -> None:
        if job.name == "r0":
            raise ValueError("bad input")

    assert run(queue, breaker, poison, "r0") == "charged"
    assert run(queue, breaker, poison, "r1") == "completed"  # a success ends the streak
    assert run(queue, breaker, poison, "r0") == "charged"
    assert run(queue, breaker, poison, "r0") == "charged"  # the same request: no streak
    assert not breaker.is_open
    assert queue.counts()["failed"] == 1  # r0, dead-lettered after max_attempts


def test_pauses_double_after_a_failed_probe_and_a_success_closes_it(queue: Queue) -> None:
    clock = Clock()
    breaker = Breaker(queue, "w", threshold=2, pause=10, clock=clock)
    stop = threading.Event()
    stop.set()  # the gate then does not sleep
    for i in range(2):
        run(queue, breaker, fail, f"r{i}")
    assert not breaker.wait_until_closed(stop)
    pauses = []
    for _ in range(6):
        clock.now = breaker._open_until  # the pause is over: it claims again (a probe)
        assert breaker.wait_until_closed(stop)
        assert run(queue, breaker, fail, "r5") == "held_back"  # the probe failed: open again
        pauses.append(breaker._open_until - clock.now)
    assert pauses == [20, 40, 80, 80, 80, 80] and MAX_FACTOR * 10 == 80
    assert attempts(queue, "r5") == 0  # never charged
    clock.now = breaker._open_until
    assert run(queue, breaker, succeed, "r6") == "completed"
    assert not breaker.is_open and list(breaker_records(queue)) == []
    assert run(queue, breaker, fail, "r7") == "charged"  # a fresh streak


def test_a_program_that_cannot_start_is_never_the_requests_fault(queue: Queue) -> None:
    breaker = Breaker(queue, "w", threshold=5, pause=60, clock=Clock())

    def missing(job: Job) -> None:
        raise HandlerUnavailable("cannot start '/opt/app/process': No such file or directory")

    assert run(queue, breaker, missing, "r0") == "held_back"
    assert attempts(queue, "r0") == 0 and not breaker.is_open
    off = Breaker(queue, "w", threshold=0, pause=60, clock=Clock())
    assert run(queue, off, missing, "r1") == "charged"  # breaker off: as before


def test_a_restarted_worker_clears_its_record(queue: Queue) -> None:
    queue.store.put(BREAKERS + "w", json.dumps({"worker": "w", "opened_at": 1,
                                                "until": 2}).encode())
    Breaker(queue, "w", threshold=3, pause=60).clear_record()
    assert list(breaker_records(queue)) == []


def test_the_worker_does_not_claim_while_the_breaker_is_open(queue: Queue) -> None:
    breaker = Breaker(queue, "w", threshold=2, pause=3600)
    worker = Worker(queue, breaker.wrap(fail), WorkerOptions("w", concurrency=2, burst=True),
                    claim_gate=breaker.wait_until_closed)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert _eventually(lambda: breaker.is_open)
        claimed = worker.stats.claimed
        threading.Event().wait(1.5)
        assert worker.stats.claimed == claimed <= 3  # nothing claimed while open
    finally:
        worker.stop()
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert queue.counts()["failed"] == 0


def _eventually(predicate: object, timeout: float = 30) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():  # type: ignore[operator]
            return True
        done.wait(0.05)
    return False


def test_metrics_show_the_breaker(queue: Queue) -> None:
    from prometheus_client import generate_latest

    from s3q.metrics import Metrics

    metrics = Metrics()
    breaker = Breaker(queue, "w", threshold=1, pause=60, clock=Clock())
    metrics.watch_breaker(breaker)
    assert "s3q_breaker_open 0.0" in generate_latest(metrics.registry).decode()
    assert run(queue, breaker, fail, "r0") == "held_back"
    text = generate_latest(metrics.registry).decode()
    assert "s3q_breaker_open 1.0" in text
    assert 's3q_breaker_events_total{event="opened"} 1.0' in text
    assert 's3q_breaker_events_total{event="held_back"} 1.0' in text


def test_a_handler_that_exits_on_every_request_trips_it(queue: Queue) -> None:
    """SystemExit from the handler (a broken deploy whose code calls sys.exit) is a failure
    the breaker counts, as any exception: it went past it unseen (and, now that a worker
    charges it as a failure, would have dead-lettered the queue)."""
    breaker = Breaker(queue, "w", threshold=2, pause=60, clock=Clock())

    def exits(job: Job) -> None:
        raise SystemExit(1)

    def run_exiting(name: str) -> str:
        try:
            return run(queue, breaker, exits, name)
        except SystemExit:
            return "raised"

    assert [run_exiting("r0"), run_exiting("r1")] == ["raised", "held_back"]
    assert breaker.is_open


def test_a_program_that_cannot_start_trips_it_on_one_request_alone(queue: Queue) -> None:
    """Each start that fails counts, the same request's again too (it is never the
    request's fault): with fewer than ``threshold`` requests waiting, a worker whose
    program is gone (or that cannot fork) gave the same request back and claimed it
    again at once, in a hot loop of store requests, for ever, its breaker never open (no
    record: ``s3q status --check`` passed)."""
    breaker = Breaker(queue, "w", threshold=3, pause=60, clock=Clock())

    def missing(job: Job) -> None:
        raise HandlerUnavailable("cannot start '/opt/app/process': No such file or directory")

    assert [run(queue, breaker, missing, "r0") for _ in range(3)] == ["held_back"] * 3
    assert breaker.is_open and attempts(queue, "r0") == 0
    [record] = breaker_records(queue)
    assert record["failed"] == ["r0"] and "cannot start" in record["last_error"]


def test_a_burst_ends_when_its_breaker_opens(queue: Queue) -> None:
    """A ``--burst`` run (a batch job, cron) whose handler fails every request: once the
    breaker tripped HOPELESS_TRIPS times in a row (its longest pause waited out, and the
    probe after it failed) it ends, saying why (WorkerStats.error: the command exits 3,
    requests may still wait), as when its store keeps failing. It waited out each pause and
    tried again, for ever (the pause grows to 8 times breaker_pause, no more)."""
    breaker = Breaker(queue, "w", threshold=3, pause=0.05)
    worker = Worker(queue, breaker.wrap(fail), WorkerOptions("w", concurrency=2, burst=True),
                    claim_gate=breaker.wait_until_closed, gate_hopeless=breaker.hopeless)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        thread.join(20)
        assert not thread.is_alive(), "the burst did not end"
    finally:
        worker.stop()
        worker.stop()
        thread.join(30)
    assert worker.stats.error is not None and "circuit breaker" in worker.stats.error
    assert breaker.hopeless()  # (not at its first trip: a fix deployed meanwhile drains it)
    assert queue.counts()["failed"] == 0 and queue.counts()["wait"] == 10


def test_a_handler_that_settled_its_job_and_returned_something_else_is_no_failure(
        queue: Queue) -> None:
    """A handler may settle its job itself (``job.complete(result)``): what it returns
    then is no result, and the runner ignores it (the job is reported completed). The
    breaker wrap took a value other than bytes, str or None for a failure all the same
    (TypeError), so a healthy handler completing its jobs and returning, say, a dict
    tripped the breaker after ``threshold`` of them: claims paused, pause after pause
    (one job each), the record made ``s3q status --check`` fail, a burst ended."""
    breaker = Breaker(queue, "w", threshold=2, pause=60, clock=Clock())

    def settles(job: Job) -> dict[str, bool]:
        job.complete(b"done")
        return {"ok": True}

    assert [run(queue, breaker, settles, f"r{i}") for i in range(3)] == ["completed"] * 3
    assert not breaker.is_open and list(breaker_records(queue)) == []
    assert queue.result("r0") == b"done" and queue.counts()["finish"] == 3


def test_a_first_stop_after_a_burst_ended_itself_still_lets_running_jobs_finish(
        queue: Queue) -> None:
    """A ``--burst`` run ends by itself when its breaker keeps tripping (or its store keeps
    failing): no more claims, running jobs get ``grace`` to finish. A first SIGTERM then
    (cron's ``timeout``, an operator) was taken for a second one, because the worker was
    already stopping: every running job was given back at once, its work thrown away,
    although the log said it got ``grace`` seconds to finish."""
    breaker = Breaker(queue, "w", threshold=1, pause=0.01)  # (hopeless at its 5th trip)
    running, interrupted = threading.Event(), threading.Event()

    def handler(job: Job) -> bytes:
        if job.name != "r0":
            assert running.wait(20)  # (r0 runs first)
            raise RuntimeError("downstream credentials expired")
        job.on_interrupt(lambda _job: interrupted.set())
        running.set()
        interrupted.wait(5)  # (given back: at once; else it finishes after 5 s)
        return b"ok"

    worker = Worker(queue, breaker.wrap(handler),
                    WorkerOptions("w", concurrency=2, burst=True, grace=30),
                    claim_gate=breaker.wait_until_closed, gate_hopeless=breaker.hopeless)
    queue.offer(["r0"])  # (claimed first; the other slot's jobs trip the breaker)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert running.wait(20)
        assert worker._stopping.wait(20)  # the breaker kept tripping: the burst ends itself
        worker.request_stop("SIGTERM")  # a first signal
        thread.join(30)
        assert not thread.is_alive()
    finally:
        worker.stop()
        worker.stop()
        thread.join(30)
    assert not interrupted.is_set()
    assert worker.stats.completed == 1 and queue.result("r0") == b"ok"
