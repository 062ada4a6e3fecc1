"""The worker loop and the handlers, on an in-memory store with the real clock."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import s3q.worker as worker_module
from s3q import ConfigError, LeaseLost, Queue, QueueConfig, State
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.handlers import (
    KILL_GRACE,
    ExecHandler,
    HandlerError,
    HandlerTimeout,
    process_handler,
)
from s3q.job import Job
from s3q.records import Intent
from s3q.store import Body, Guard, ObjectInfo, StoreError, StoreUnavailable
from s3q.worker import Worker, WorkerOptions
from tests.unit.harness import Denies

T = TypeVar("T")


def make_queue(**cfg: object) -> Queue:
    config = QueueConfig(**{"lease_ttl": 6.0, "retry_base_delay": 0.0,  # type: ignore[arg-type]
                            "retry_max_delay": 0.0, "max_attempts": 3, **cfg})
    return Queue(MemoryStore("worker-test"), config)


def fill(q: Queue, n: int) -> list[str]:
    names = [f"batch/{i:03d}_request.json" for i in range(n)]
    for name in names:
        q.submit(name, f'{{"n": "{name}"}}')
    return names


def test_burst_processes_everything_once() -> None:
    q = make_queue()
    names = fill(q, 25)
    seen: list[str] = []
    lock = threading.Lock()

    def handler(job: Job) -> bytes:
        with lock:
            seen.append(job.name)
        return job.read()[::-1]

    stats = Worker(q, handler, WorkerOptions("w", concurrency=4, burst=True)).run()
    assert sorted(seen) == names
    assert stats.completed == 25 and stats.failed == 0
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 25, "failed": 0}
    assert q.result(names[0]) == f'{{"n": "{names[0]}"}}'.encode()[::-1]


def test_failing_handler_ends_in_failed_with_error_record() -> None:
    q = make_queue(max_attempts=3)
    fill(q, 1)
    attempts: list[int] = []

    def handler(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("cannot parse request")

    worker = Worker(q, handler, WorkerOptions("w", concurrency=1, burst=True))
    for _ in range(3):  # each burst ends when the retry's backoff (0 s here) is pending
        worker.run()
    assert attempts == [1, 2, 3]
    assert q.counts()["failed"] == 1
    record = q.error_record("batch/000_request.json")
    assert record is not None and record.attempts == 3
    assert "cannot parse request" in record.error["message"]
    assert record.error["type"] == "RuntimeError" and record.worker == "w"


def test_max_jobs_stops_after_n() -> None:
    q = make_queue()
    fill(q, 10)
    stats = Worker(q, lambda job: None, WorkerOptions("w", concurrency=3, max_jobs=4)).run()
    assert stats.completed == 4
    assert q.counts()["wait"] == 6


def run_stuck(q: Queue, options: WorkerOptions, within: float = 5.0
              ) -> tuple[Worker, threading.Thread]:
    """A worker whose handler runs until it is interrupted, started on a thread of its own;
    returns once a handler has started (else stops it and fails)."""
    started = threading.Event()

    def slow(job: Job) -> None:
        started.set()
        while not job.interrupted:
            time.sleep(0.02)

    worker = Worker(q, slow, options)
    runner = threading.Thread(target=worker.run)
    runner.start()
    if not started.wait(within):
        worker.stop()
        runner.join(10)
        raise AssertionError(f"no handler started within {within:g} s")
    return worker, runner


def test_graceful_stop_gives_running_jobs_back() -> None:
    q = make_queue()
    fill(q, 2)
    worker, runner = run_stuck(q, WorkerOptions("w", concurrency=2, grace=0.3))
    time.sleep(0.2)
    t0 = time.monotonic()
    worker.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert time.monotonic() - t0 < 5  # grace 0.3 s, not the handler (which never ends)
    assert worker.stats.released == 2 and worker.stats.completed == 0
    assert q.counts() == {"wait": 2, "processing": 0, "finish": 0, "failed": 0}
    # each waits in its lease (holding its body), the given-back attempt not counted
    assert [(lease.intent, lease.attempts, lease.not_before) for lease, _ in q.leases()] == [
        (Intent.RETRY, 0, 0.0)] * 2


class GatedStore(MemoryStore):
    """Holds the claim's lease create (c1) until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.claiming, self.gate = threading.Event(), threading.Event()

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None, guard: Guard | None = None) -> ObjectInfo:
        if if_none_match and key.startswith(".s3q/lease/"):
            self.claiming.set()
            assert self.gate.wait(10)
        return super().put(key, body, if_none_match=if_none_match, if_match=if_match,
                           guard=guard)


def test_a_job_claimed_while_stopping_is_given_back_unstarted() -> None:
    """Stop arrives while a slot's claim is in flight: the claim completes after the drain
    looked at the running jobs, so the slot itself must give the job back, not run it."""
    store = GatedStore()
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    fill(q, 1)
    ran: list[str] = []
    worker = Worker(q, lambda job: ran.append(job.name),
                    WorkerOptions("w", concurrency=1, grace=0, recover_on_start=False))
    runner = threading.Thread(target=worker.run)
    runner.start()
    assert store.claiming.wait(5)
    worker.stop()
    store.gate.set()
    runner.join(10)
    assert not runner.is_alive()
    assert ran == []
    assert worker.stats.released == 1 and worker.stats.completed == 0
    assert q.counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}
    [(lease, _)] = q.leases()
    assert lease.attempts == 0  # the attempt did not count


def test_lost_lease_interrupts_the_handler() -> None:
    q = make_queue()
    fill(q, 1)
    seen: list[bool] = []

    def handler(job: Job) -> None:
        if seen:
            return  # its second run (after the operator put it back) completes
        # An operator's `recover --all` takes it over (as after a long pause of this one).
        Queue(q.store, q.config).recover_all(worker_id="operator")
        with pytest.raises(LeaseLost):
            job.renew()
        seen.append(job.interrupted)

    stats = Worker(q, handler, WorkerOptions("w", concurrency=1, burst=True)).run()
    assert seen == [True]
    assert stats.lost == 1 and stats.completed == 1
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


# ---------------------------------------------------------------------- exec handlers
def run_exec(q: Queue, command: list[str], timeout: float | None = None) -> Worker:
    worker = Worker(q, ExecHandler(command, timeout), WorkerOptions("w", burst=True))
    worker.run()
    return worker


def test_exec_handler_gets_the_file_and_its_stdout_is_the_result(tmp_path: Path) -> None:
    q = make_queue()
    fill(q, 1)
    script = ("import os,sys; p=sys.argv[1]; "
              "print(open(p).read().upper(), os.environ['S3Q_REQUEST_NAME'], end='')")
    run_exec(q, [sys.executable, "-c", script, "{path}"])
    assert q.counts()["finish"] == 1
    assert q.result("batch/000_request.json") == (
        b'{"N": "BATCH/000_REQUEST.JSON"} batch/000_request.json')


def test_exec_handler_failure_keeps_the_stderr_tail() -> None:
    q = make_queue(max_attempts=1)
    fill(q, 1)
    script = ("import sys; print('x' * 10000, file=sys.stderr); "
              "print('bad input', file=sys.stderr); sys.exit(3)")
    run_exec(q, [sys.executable, "-c", script])
    record = q.error_record("batch/000_request.json")
    assert record is not None
    assert "exit code 3" in record.error["message"]
    assert record.error["message"].rstrip().endswith("bad input")
    assert len(record.error["message"]) < 4200


def test_exec_handler_timeout_kills_the_process_group() -> None:
    q = make_queue(max_attempts=1)
    fill(q, 1)
    script = ("import subprocess,sys,time; "
              "subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); "
              "time.sleep(60)")
    t0 = time.monotonic()
    run_exec(q, [sys.executable, "-c", script], timeout=1.0)
    assert time.monotonic() - t0 < 15
    record = q.error_record("batch/000_request.json")
    assert record is not None and "timed out after 1s" in record.error["message"]


def _running(pid: int) -> bool:
    """Is ``pid`` a live process (not gone, nor a zombie waiting to be reaped)?"""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sigterm", ["dies", "ignored"])
def test_processes_an_exec_program_leaves_running_end_with_its_job(
        tmp_path: Path, sigterm: str) -> None:
    """A program that exits leaving a process of its own group running (``cmd &``): that
    process is stopped (SIGTERM, SIGKILL KILL_GRACE later if it ignores it) before the job
    is settled, as a unit's processes end with the unit; it neither outlives its job nor
    holds its stdout (whose reader the job would wait for)."""
    q = make_queue()
    fill(q, 1)
    pidfile = tmp_path / "leftover.pid"
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if sigterm == "ignored" else ""
    child = tmp_path / "child.py"  # writes its pid once it is set up, then stays
    child.write_text(f"import os, signal, time\n{ignore}\n"
                     f"open({str(pidfile) + '.tmp'!r}, 'w').write(str(os.getpid()))\n"
                     f"os.rename({str(pidfile) + '.tmp'!r}, {str(pidfile)!r})\n"
                     "time.sleep(60)\n")
    program = tmp_path / "program.py"  # starts it, and exits once it is set up
    program.write_text(f"import os, subprocess, sys, time\n"
                       f"subprocess.Popen([sys.executable, {str(child)!r}])\n"
                       f"while not os.path.exists({str(pidfile)!r}):\n"
                       "    time.sleep(0.01)\n"
                       "print('done', end='')\n")
    t0 = time.monotonic()
    run_exec(q, [sys.executable, str(program)])
    assert q.result("batch/000_request.json") == b"done"
    pid = int(pidfile.read_text())
    assert not _running(pid)  # stopped before the job was settled
    if sigterm == "ignored":  # (SIGKILLed after the grace)
        assert time.monotonic() - t0 >= KILL_GRACE


def test_exec_handler_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="empty command"):
        ExecHandler("")
    q = make_queue(max_attempts=1)
    fill(q, 1)
    run_exec(q, ["/nonexistent/program", "{path}"])
    record = q.error_record("batch/000_request.json")
    assert record is not None and "cannot start" in record.error["message"]
    assert issubclass(HandlerTimeout, HandlerError)


def test_process_pool_handler_runs_python_in_a_child(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myhandlers.py").write_text(
        "import os\n"
        "def handle(req):\n"
        "    return f'{req.name}:{req.attempt}:{len(req.read())}:{os.getpid()}'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(  # (this s3q in the child too)
        [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]))
    q = make_queue()
    fill(q, 1)
    Worker(q, process_handler("myhandlers:handle"), WorkerOptions("w", burst=True)).run()
    result = q.result("batch/000_request.json")
    assert result is not None
    name, attempt, size, pid = result.decode().split(":")
    assert (name, attempt, int(size)) == ("batch/000_request.json", "1", 31)
    assert int(pid) != __import__("os").getpid()
    with pytest.raises(ValueError, match="cannot import"):
        process_handler("no_such_module_x:handle")
    assert State.FINISH.prefix == "finish/"


def test_two_workers_with_one_id_cannot_run_on_one_host() -> None:
    q = make_queue()
    fill(q, 1)
    first, runner = run_stuck(q, WorkerOptions("twin", grace=0))
    with pytest.raises(ConfigError, match="another worker with id 'twin'"):
        Worker(q, lambda job: None, WorkerOptions("twin", burst=True)).run()
    first.stop()
    runner.join(10)
    assert not runner.is_alive()
    # once the first is gone, the id is free again (and its released job is processed)
    assert Worker(q, lambda job: None, WorkerOptions("twin", burst=True)).run().completed == 1


def test_exec_handler_runs_in_the_workers_directory(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "process.py").write_text("import sys; print(len(open(sys.argv[1]).read()))")
    monkeypatch.chdir(tmp_path)
    q = make_queue()
    fill(q, 1)
    run_exec(q, [sys.executable, "process.py", "{path}"])  # relative, as in the README
    assert q.result("batch/000_request.json") == b"31\n"


def test_the_lease_is_renewed_while_a_long_handler_runs() -> None:
    q = make_queue(lease_ttl=6.0)  # renewed every 2 s
    fill(q, 1)
    events: list[str] = []
    q.listeners.append(lambda event, fields: events.append(event))
    seqs: list[int] = []

    def slow(job: Job) -> None:
        time.sleep(4.5)
        seqs.append(job.lease.seq)

    assert Worker(q, slow, WorkerOptions("w", burst=True)).run().completed == 1
    assert events.count("renewed") == 2 and seqs == [2]


# ---------------------------------------------------------------------- issue 9
def _dead_workers_lease(q: Queue, name: str) -> None:
    """A worker claims ``name`` and dies: its lease is never renewed again."""
    q.submit(name, b'{"dead": true}')
    dead = Queue(q.store, q.config).claim("dead-worker")
    assert dead is not None and dead.name == name


def test_a_busy_worker_still_takes_over_a_dead_workers_request() -> None:
    """Every slot busy with a long job: the scanner thread still fences the dead worker's
    lease and releases its request to wait/ within the takeover bound."""
    q = make_queue(lease_ttl=5.0)
    _dead_workers_lease(q, "dead/x_request.json")
    q.submit("long_request.json", b"{}")
    busy, taken = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        busy.set()
        assert taken.wait(120)  # busy far longer than the takeover may take

    worker = Worker(q, handler, WorkerOptions("busy", concurrency=1, grace=0))
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        assert busy.wait(10)
        # the bound is lease_ttl + 2 s + scan_interval (9.5 s here); the rest is slack for
        # a loaded machine, still far below the slot's 120 s of being busy
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = q.lease("dead/x_request.json")
            if found is not None and found[0].intent is Intent.RETRY:
                break
            time.sleep(0.1)
        assert found is not None and found[0].intent is Intent.RETRY, found
        assert found[0].worker == "busy" and found[0].attempts == 1  # its attempt counted
        assert "dead/x_request.json" in {i.key for i in q.ls(State.WAIT)}
    finally:
        taken.set()
        worker.stop()
        runner.join(10)


def test_burst_waits_for_the_leases_the_seeds_reset_left_behind() -> None:
    """The seed's reset moved a dead worker's requests back to wait/; their leases still
    exist. A burst worker with another id waits for them to expire and runs them, instead
    of exiting 0 with them waiting."""
    q = make_queue(lease_ttl=5.0)
    names = ["reset/a_request.json", "reset/b_request.json"]
    for name in names:
        _dead_workers_lease(q, name)
    for info in list(q.store.list_page("processing/").items):  # aws s3 mv processing/ wait/
        q.store.copy(info.key, "wait/" + info.key.removeprefix("processing/"))
        q.store.delete(info.key)
    ran: list[str] = []
    stats = Worker(q, lambda job: ran.append(job.name),
                   WorkerOptions("other", concurrency=2, burst=True)).run()
    assert sorted(ran) == names and stats.completed == 2
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 2, "failed": 0}
    assert list(q.leases()) == []


def test_a_burst_leaves_requests_held_by_live_workers_to_them() -> None:
    """A lease renewed while the burst looks is a live worker's: the burst ends after one
    renewal period instead of waiting for that job (which here never ends)."""
    q = make_queue(lease_ttl=6.0)
    q.submit("live_request.json", b"{}")
    held = Queue(q.store, q.config).claim("live")
    assert held is not None
    burst = Worker(q, lambda job: None, WorkerOptions("other", burst=True))
    with held:  # renewed (every 2 s) for as long as the burst runs: it never ends by itself
        runner = threading.Thread(target=burst.run)
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "the burst waited for a live worker's job"
        assert q.lease("live_request.json") is not None  # still the live worker's
    assert burst.stats.claimed == 0


def test_a_burst_looks_again_soon_at_another_workers_job(
        caplog: pytest.LogCaptureFixture) -> None:
    """The last slot of a burst that finds another worker's lease, written just now, looks
    again after 0.2 s, then 0.4 s, ... (that job most often ends within moments), not once
    the lease's next renewal is due (up to 5 s later: the burst outlived the queue by that
    much, in one run of two at 16 workers)."""
    caplog.set_level(logging.INFO, logger="s3q.worker")
    q = make_queue(lease_ttl=60.0)  # its next renewal is 20 s away
    q.submit("other_request.json", b"{}")
    held = Queue(q.store, q.config).claim("other")
    assert held is not None

    def waits() -> list[float | None]:
        return [getattr(r, "seconds", None) for r in list(caplog.records)
                if getattr(r, "event", None) == "burst_waiting"]

    burst = Worker(q, lambda job: None, WorkerOptions("burst", concurrency=1, burst=True))
    runner = threading.Thread(target=burst.run)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(waits()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        held.complete()  # the other worker's job ends: its lease goes
        runner.join(30)
        assert not runner.is_alive()
    finally:
        burst.stop()
        runner.join(10)
    assert waits()[:3] == [0.2, 0.4, 0.8], waits()
    assert burst.stats.claimed == 0
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


def test_one_worker_id_on_two_queues_runs_twice() -> None:
    """The per-host lock is on (queue, worker id): the same id on another queue runs."""
    qa, qb = Queue(MemoryStore("queue-a")), Queue(MemoryStore("queue-b"))
    fill(qa, 1)
    fill(qb, 1)
    first, runner = run_stuck(qa, WorkerOptions("twin", grace=0))
    try:
        assert Worker(qb, lambda job: None, WorkerOptions("twin", burst=True)).run().completed == 1
    finally:
        first.stop()
        runner.join(10)


# ---------------------------------------------------------------------- issue 12
class ViewCountingStore(DelegatingStore):
    """Counts the writes of processing/ views, by key."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.views: list[str] = []

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "put" and args["key"].startswith("processing/"):
            self.views.append(args["key"])
        return fn()


def test_short_jobs_never_write_a_processing_view_long_ones_do() -> None:
    """processing_view_after: a job shows in processing/ once it has run that long; one
    that ends sooner costs two requests less (the view's PUT and DELETE)."""
    store = ViewCountingStore(MemoryStore("views"))
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    q.submit("quick_request.json", b"{}")
    q.submit("slow_request.json", b"{}")
    seen: dict[str, bool] = {}

    def handler(job: Job) -> None:
        if job.name.startswith("slow"):
            deadline = time.monotonic() + 20
            while not store.views and time.monotonic() < deadline:
                time.sleep(0.05)  # runs until its view was written
            seen["slow"] = "processing/slow_request.json" in {
                i.key for i in store.inner.list_page("processing/").items}

    stats = Worker(q, handler, WorkerOptions("w", concurrency=2, burst=True,
                                             view_after=0.5)).run()
    assert stats.completed == 2 and seen == {"slow": True}
    assert store.views == ["processing/slow_request.json"]
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 2, "failed": 0}


class CommitGate(DelegatingStore):
    """Holds every completion's commit (d5: the lease's deletion) until the test opens the
    gate."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.committing, self.gate = threading.Event(), threading.Event()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "delete" and str(args.get("key")).startswith(".s3q/lease/"):
            self.committing.set()
            assert self.gate.wait(20)
        return fn()


def test_a_job_settling_when_the_worker_stops_is_completed_not_given_back() -> None:
    """The slot moved on while its finished job settles in the background; a stop then
    waits for the settlement: a completed request is never handed back to wait/."""
    store = CommitGate(MemoryStore("settling"))
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    fill(q, 1)
    worker = Worker(q, lambda job: None, WorkerOptions("w", concurrency=1, grace=0))
    runner = threading.Thread(target=worker.run)
    runner.start()
    assert store.committing.wait(10)
    worker.stop()  # the slot is free already; its job's commit is under way
    store.gate.set()
    runner.join(20)
    assert not runner.is_alive()
    assert worker.stats.completed == 1 and worker.stats.released == 0
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


def test_the_run_ends_when_its_slots_end_not_at_the_next_poll(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The main thread is woken by the last slot's end and by stop(): `s3q worker --burst`
    returns as soon as the queue is drained. (Signals are still polled: with a poll of a
    minute, a run that waited for it would take a minute.)"""
    monkeypatch.setattr(worker_module, "SIGNAL_POLL", 60.0)
    q = make_queue()
    fill(q, 3)
    t0 = time.monotonic()
    stats = Worker(q, lambda job: None, WorkerOptions("w", concurrency=2, burst=True)).run()
    assert stats.completed == 3
    assert time.monotonic() - t0 < 30

    q.submit("late.json", b"{}")
    worker, runner = run_stuck(q, WorkerOptions("w", concurrency=1, grace=0.1), within=10)
    t0 = time.monotonic()
    worker.stop()
    runner.join(30)
    assert not runner.is_alive() and time.monotonic() - t0 < 30
    assert worker.stats.released == 1


class RefusingViews(DelegatingStore):
    """Every write into wait/ fails (an outage), once ``refuse`` is set: a give-back (its
    first write, w1, is the view in wait/) fails."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.refuse = False

    def put(self, key: str, body: Body, *, if_none_match: bool = False,
            if_match: str | None = None, guard: Guard | None = None) -> ObjectInfo:
        if self.refuse and key.startswith("wait/"):
            raise StoreUnavailable(f"{key}: refused (outage)")
        return super().put(key, body, if_none_match=if_none_match, if_match=if_match,
                           guard=guard)


def test_a_job_whose_give_back_failed_is_not_completed() -> None:
    """A stop gives back a job whose handler still runs, and the give-back fails (a store
    error): the handler is interrupted all the same and gives up. That job must be left to
    its lease's expiry (as the log says), never completed: its handler did not finish."""
    store = RefusingViews(MemoryStore("give-back"))
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    q.submit("a_request.json", b"{}")
    started = threading.Event()

    def handler(job: Job) -> None:
        started.set()
        while not job.interrupted:
            time.sleep(0.01)
        raise RuntimeError("interrupted before its work was done")

    worker = Worker(q, handler, WorkerOptions("w", concurrency=1, grace=0.0))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert started.wait(10)
    store.refuse = True
    worker.stop()
    thread.join(20)
    assert not thread.is_alive()
    assert q.counts()["finish"] == 0, "completed although its handler gave up"
    found = q.lease("a_request.json")
    assert found is not None and found[0].intent is Intent.HELD  # returns once expired
    assert worker.stats.completed == 0


class DeniedDelete(DelegatingStore):
    """Deletes of one key are refused (permission denied), every time: a producer of
    another user made it, which the workers may read but not delete."""

    def __init__(self, inner: MemoryStore, key: str) -> None:
        super().__init__(inner)
        self.key = key

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op in ("delete", "delete_batch") and (
                args.get("key") == self.key
                or any(k == self.key for k, _ in args.get("items", ()))):
            raise StoreError(f"AccessDenied: DeleteObject {self.key}")
        return fn()


def test_a_request_its_own_recovery_cannot_release_does_not_keep_the_worker_from_starting(
        ) -> None:
    """Worker w claimed a_request.json, whose c2 is denied (every time): its lease stays
    w's. At w's next start (a restart, a reboot, a deployment), its own recovery took that
    lease over (t1, w's again) and failed at c2: the worker's run raised, systemd
    restarted it, and the next start failed the same way, for good: the requests waiting
    behind it were never run by it (by nobody, on a one-worker fleet: its own scan never
    ran to take the lease over). Now the failure is logged, the worker starts, and the
    takeover scan tries that request again later (as for any request's own store error)."""
    denied = "wait/batch/a_request.json"
    q = Queue(DeniedDelete(MemoryStore("denied"), denied),
              QueueConfig(lease_ttl=6.0, retry_base_delay=0.0, retry_max_delay=0.0))
    q.submit("batch/a_request.json", b"{}")
    with pytest.raises(StoreError, match="AccessDenied"):
        q.claim("w")  # c1, then c2 refused: the lease stays w's
    names = fill(q, 3)
    seen: list[str] = []
    stats = Worker(q, lambda job: seen.append(job.name),
                   WorkerOptions("w", concurrency=1, burst=True, max_jobs=3)).run()
    assert sorted(seen) == names
    assert stats.completed == 3
    found = q.lease("batch/a_request.json")
    assert found is not None  # the request is still held (its lease holds the body)


def test_a_lease_its_own_recovery_may_not_read_does_not_keep_the_worker_from_starting(
        ) -> None:
    """Own recovery at start reads every lease to find this worker's: one it may not read
    (another account's object, a KMS key not granted) raised out of it, and no worker of
    the fleet started, at every restart. Now it is logged and the worker starts."""
    mem = MemoryStore("denied-read")
    q = Queue(Denies(mem, [".s3q/lease/batch/a_request.json"]), QueueConfig(lease_ttl=6.0))
    Queue(mem, QueueConfig(lease_ttl=6.0)).submit("batch/a_request.json", b"{}")
    assert Queue(mem, QueueConfig(lease_ttl=6.0)).claim("other") is not None
    names = fill(q, 3)
    seen: list[str] = []
    stats = Worker(q, lambda job: seen.append(job.name),
                   WorkerOptions("w", concurrency=1, burst=True, max_jobs=3)).run()
    assert sorted(seen) == names
    assert stats.completed == 3
