"""s3q.running.Runner: a job from its handler to its settlement, on an in-memory store.
The worker's own tests (test_worker.py) run it inside whole worker runs; these pin what
the runner itself promises: the outcome each job ends with, reported once, and the bound
on settlements under way."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.handlers import process_handler
from s3q.job import Job
from s3q.running import SETTLING, Runner
from s3q.store import StoreUnavailable
from s3q.worker import Worker, WorkerOptions, WorkerStats

T = TypeVar("T")


class FinishGate(DelegatingStore):
    """Holds every write to finish/ (d3) until the test opens the gate; counts them."""

    def __init__(self, inner: MemoryStore) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.held = threading.Semaphore(0)
        self.writes = 0
        self._lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "put" and str(args.get("key")).startswith("finish/"):
            with self._lock:
                self.writes += 1
            self.held.release()
            assert self.gate.wait(20)
        return fn()


class FinishFails(DelegatingStore):
    """Every write to finish/ fails as an unreachable store's would."""

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "put" and str(args.get("key")).startswith("finish/"):
            raise StoreUnavailable("finish/: injected")
        return fn()


def _claimed(q: Queue, n: int) -> list[Job]:
    for i in range(n):
        q.submit(f"r{i:02d}", b"x")
    jobs = [q.claim("w") for _ in range(n)]
    assert all(jobs)
    return [j for j in jobs if j is not None]


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, job: Job, outcome: str, elapsed: float) -> None:
        with self.lock:
            self.seen.append((job.name, outcome))


def test_a_slot_waits_once_its_settlements_under_way_reach_the_bound() -> None:
    """One slot may have SETTLING settlements under way; the next job's slot waits (after
    its handler) until one ends, and every job is completed once the store answers."""
    store = FinishGate(MemoryStore("running"))
    q = Queue(store, QueueConfig(lease_ttl=6.0))
    jobs = _claimed(q, SETTLING + 1)
    outcomes = Outcomes()
    runner = Runner(lambda job: None, 1, outcomes, background=True)
    runner.start()
    returned: list[str] = []
    for job in jobs[:SETTLING]:
        runner.run(job, lambda j: returned.append(j.name))  # returns: settled behind
    for _ in range(SETTLING):
        assert store.held.acquire(timeout=10)  # each settlement waits at its d3
    last = threading.Thread(target=runner.run,
                            args=(jobs[-1], lambda j: returned.append(j.name)))
    last.start()
    last.join(0.5)
    assert last.is_alive(), "the slot went on with SETTLING settlements under way"
    assert returned == [j.name for j in jobs] and store.writes == SETTLING
    store.gate.set()
    last.join(10)
    assert not last.is_alive()
    runner.shutdown()
    assert sorted(outcomes.seen) == sorted((j.name, "completed") for j in jobs)
    assert q.counts() == {"wait": 0, "processing": 0, "finish": SETTLING + 1, "failed": 0}


def test_a_settlement_the_store_refuses_ends_as_a_store_error_and_keeps_the_lease() -> None:
    """A completion whose writes fail is reported once, as ``store_error``; its lease
    stays, so the request runs again once the lease expires (nothing lost)."""
    q = Queue(FinishFails(MemoryStore("running")), QueueConfig(lease_ttl=6.0))
    (job,) = _claimed(q, 1)
    outcomes = Outcomes()
    runner = Runner(lambda job: None, 1, outcomes, background=False)
    runner.run(job, lambda j: None)
    assert outcomes.seen == [(job.name, "store_error")]
    assert [lease.name for lease, _ in q.leases()] == [job.name]
    assert q.counts()["finish"] == 0


def test_a_failing_handler_is_retried_and_a_lost_job_is_not_settled() -> None:
    """The handler's exception fails the job (a retry); a job taken over while its handler
    ran ends ``lost``, with nothing written for it."""
    q = Queue(MemoryStore("running"), QueueConfig(lease_ttl=6.0, max_attempts=3))
    failing, lost = _claimed(q, 2)
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        if job is failing:
            raise ValueError("bad input")
        job.mark_lost()  # as a renewal that finds the lease taken over does

    runner = Runner(handler, 1, outcomes, background=False)
    runner.run(failing, lambda j: None)
    runner.run(lost, lambda j: None)
    assert outcomes.seen == [(failing.name, "failed"), (lost.name, "lost")]
    intents = {lease.name: lease.intent.value for lease, _ in q.leases()}
    assert intents == {failing.name: "retry", lost.name: "held"}


@pytest.mark.parametrize("exit_with", [SystemExit(2), KeyboardInterrupt()])
def test_a_handler_that_exits_fails_its_attempt_and_is_dead_lettered_in_the_end(
        exit_with: BaseException) -> None:
    """A handler raising SystemExit (``sys.exit``, argparse on a bad request) or
    KeyboardInterrupt in a slot thread fails its attempt as any exception does: no signal
    raises them there (the worker's handlers only record a stop). Given back uncharged,
    at once, the request ran again and again at attempt 1, never dead-lettered, for ever."""
    q = Queue(MemoryStore(f"running-{id(exit_with)}"),
              QueueConfig(lease_ttl=6.0, max_attempts=2, retry_base_delay=0.0,
                          retry_max_delay=0.0))
    q.submit("a", b"x")
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        raise exit_with

    runner = Runner(handler, 1, outcomes, background=False)
    for attempt in (1, 2):
        job = q.claim("w")
        assert job is not None and job.attempt == attempt
        runner.run(job, lambda j: None)
    assert outcomes.seen == [("a", "failed")] * 2
    assert q.claim("w") is None
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    record = q.error_record("a")
    assert record is not None and record.attempts == 2
    assert record.error["type"] == type(exit_with).__name__


@pytest.mark.parametrize("returned", [{"id": 1}, 5, [b"x"]])
def test_a_handler_returning_no_result_type_fails_its_attempt_with_a_type_error(
        returned: object) -> None:
    """A handler returns bytes, str or None. Another value (a dict of JSON, an int) fails
    the attempt with a TypeError saying so. It used to raise out of the completion
    (``unexpected error settling``), leaving the lease held and no longer renewed: the
    request ran again after each takeover and was dead-lettered in the end as 'worker w
    stopped renewing its lease', the handler's mistake nowhere in the record."""
    q = Queue(MemoryStore(f"running-{id(returned)}"), QueueConfig(lease_ttl=6.0))
    (job,) = _claimed(q, 1)
    outcomes = Outcomes()
    runner = Runner(lambda job: returned, 1, outcomes,  # type: ignore[arg-type,return-value]
                    background=False)
    runner.run(job, lambda j: None)
    assert outcomes.seen == [(job.name, "failed")]
    [(lease, _)] = q.leases()
    assert lease.intent.value == "retry" and lease.attempts == 1
    assert lease.error is not None and lease.error["type"] == "TypeError"
    assert type(returned).__name__ in lease.error["message"]


def test_bytes_like_and_str_results_are_kept() -> None:
    q = Queue(MemoryStore("running-results"), QueueConfig(lease_ttl=6.0))
    jobs = _claimed(q, 3)
    results = {jobs[0].name: bytearray(b"ab"), jobs[1].name: memoryview(b"cd"),
               jobs[2].name: "é"}
    runner = Runner(lambda job: results[job.name], 1, Outcomes(),  # type: ignore[arg-type,return-value]
                    background=False)
    for job in jobs:
        runner.run(job, lambda j: None)
    assert [q.result(j.name) for j in jobs] == [b"ab", b"cd", "é".encode()]


def test_a_process_pool_handler_returning_an_int_fails_in_its_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """In the child (``--pool process``) an int was kept as that many NUL bytes, exit 0."""
    from s3q.runner import main

    (tmp_path / "intresult.py").write_text("def handle(req):\n    return 5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    request = tmp_path / "req"
    request.write_bytes(b"{}")
    with pytest.raises(TypeError, match="int"):
        main(["intresult:handle", str(request), "req"])
    assert capsysbinary.readouterr().out == b""


def run_in_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
                   source: str, **config: Any) -> tuple[Queue, WorkerStats]:
    """A worker whose handler is ``module:handle`` (``source``, written to ``tmp_path``),
    run in a child process per request (``--pool process``), on one request "a", in a
    burst: the queue and the worker's counts."""
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(  # (this s3q in the child too)
        [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]))
    monkeypatch.delitem(sys.modules, module, raising=False)
    q = Queue(MemoryStore(f"running-{module}-{id(source)}"), QueueConfig(lease_ttl=6.0, **config))
    q.submit("a", b"{}")
    return q, Worker(q, process_handler(f"{module}:handle"), WorkerOptions("w", burst=True)).run()


def test_a_job_the_handler_settled_itself_is_reported_as_it_settled_it() -> None:
    """A handler given the Job may settle it itself (``job.fail(why, retry=False)`` to
    dead-letter a bad request at once, ``job.complete(result)``): the outcome reported
    (the worker's counts, the metrics) is what it did. Every one was reported
    ``released``, from the JobStateError of the runner's own second settlement."""
    q = Queue(MemoryStore("running-self-settled"), QueueConfig(lease_ttl=6.0))
    done, dead, back = _claimed(q, 3)
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        if job is done:
            job.complete(b"r")
        elif job is dead:
            job.fail("not a request", retry=False)
        else:
            job.release()

    runner = Runner(handler, 1, outcomes, background=False)
    for job in (done, dead, back):
        runner.run(job, lambda j: None)
    assert outcomes.seen == [(done.name, "completed"), (dead.name, "failed"),
                             (back.name, "released")]
    assert q.result(done.name) == b"r" and q.counts()["failed"] == 1


def test_what_a_process_pool_handler_prints_is_not_its_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pool process``: the child sends the handler's return value on its stdout, so
    what the handler itself printed there (a print() left in, a program it ran) went into
    the request's result, before the value; the same handler in a thread printed to the
    worker's log. It goes to the child's stderr now (the tail of a failure's error)."""
    q, stats = run_in_a_child(tmp_path, monkeypatch, "chatty", (
        "import subprocess\n"
        "def handle(req):\n"
        "    print('processing', req.name, flush=True)\n"
        "    subprocess.run(['echo', 'from a program'], check=True)\n"
        "    return b'the result'\n"))
    assert stats.completed == 1
    assert q.result("a") == b"the result"


class Unprintable(Exception):
    """An exception whose str() raises (a library's, whose __str__ needs an attribute it
    was not given)."""

    def __str__(self) -> str:
        raise AttributeError("'Unprintable' object has no attribute 'message'")


def test_a_handler_error_that_cannot_be_printed_fails_the_attempt_all_the_same() -> None:
    """Its message could not be made (the log line, the error record) and that error
    escaped the runner: the slot thread died, and the job, still registered with the lease
    keeper, was renewed for as long as the worker lived, never settled."""
    q = Queue(MemoryStore("running-unprintable"), QueueConfig(lease_ttl=6.0))
    (job,) = _claimed(q, 1)
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        raise Unprintable()

    runner = Runner(handler, 1, outcomes, background=False)
    runner.run(job, lambda j: None)
    assert outcomes.seen == [(job.name, "failed")]
    [(lease, _)] = q.leases()
    assert lease.intent.value == "retry" and lease.attempts == 1
    assert lease.error is not None and lease.error["type"] == "Unprintable"
    assert "Unprintable" in lease.error["traceback"]


def test_a_handler_error_naming_undecodable_bytes_fails_the_attempt() -> None:
    """An error message holding a lone surrogate (text decoded with surrogateescape, as
    ``os.fsdecode`` or a handler reading a body that is not UTF-8 does) could not be
    written into the lease as UTF-8: its retry (w2) raised out of the settlement, the
    lease was left held and unrenewed, and (MD5 ETags) the takeover's c2 deleted the view
    w1 had made, so the attempt was never counted: the request ran again after each
    lease_ttl, for ever, and was never dead-lettered."""
    q = Queue(MemoryStore("running-surrogates"), QueueConfig(lease_ttl=6.0, max_attempts=1))
    q.submit("a", b"\xff\xfe")
    job = q.claim("w")
    assert job is not None
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        text = job.read().decode("utf-8", "surrogateescape")
        raise ValueError(f"cannot parse {text}")

    Runner(handler, 1, outcomes, background=False).run(job, lambda j: None)
    assert outcomes.seen == [("a", "failed")]
    record = q.error_record("a")
    assert record is not None and "cannot parse" in record.error["message"]
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}


def test_a_job_the_handler_settled_before_it_raised_is_reported_as_settled() -> None:
    """The handler completed its job, then raised (or settled it twice: JobStateError):
    the job was completed, and is reported so, not ``released``."""
    q = Queue(MemoryStore("running-settled-then-raised"), QueueConfig(lease_ttl=6.0))
    raised, twice = _claimed(q, 2)
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        job.complete(b"r")
        if job is raised:
            raise ValueError("after the completion")
        job.complete(b"again")

    runner = Runner(handler, 1, outcomes, background=False)
    for job in (raised, twice):
        runner.run(job, lambda j: None)
    assert outcomes.seen == [(raised.name, "completed"), (twice.name, "completed")]
    assert q.counts()["finish"] == 2


def test_a_self_settled_job_the_breaker_or_a_stop_then_gives_back_keeps_its_outcome(
        ) -> None:
    """A handler that settled its job itself and then raised (the failure that trips the
    breaker, or one while it is open), or returned after a stop's give-back found the job
    settled and interrupted it: the breaker's HeldBack, the stop's interruption, were
    taken for a give-back, and the job reported ``released`` (the worker's counts, the
    metrics), a request the handler dead-lettered or completed among them."""
    from s3q.breaker import Breaker
    from s3q.errors import JobStateError

    q = Queue(MemoryStore("running-settled-given-back"), QueueConfig(lease_ttl=6.0))
    dead, done = _claimed(q, 2)
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        if job is dead:  # trips the breaker (threshold 1) after dead-lettering it
            job.fail("not a request", retry=False)
            raise ValueError("not a request")
        job.complete(b"r")
        with pytest.raises(JobStateError):  # the stop's give-back (Worker._give_back)
            job.release()
        job.interrupt()

    breaker = Breaker(q, "w", threshold=1, pause=60.0)
    runner = Runner(breaker.wrap(handler), 1, outcomes, background=False)
    for job in (dead, done):
        runner.run(job, lambda j: None)
    assert outcomes.seen == [(dead.name, "failed"), (done.name, "completed")]
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 1}


@pytest.mark.parametrize("body", ["    sys.exit()\n", "    sys.exit(0)\n",
                                  "    raise SystemExit\n"],
                         ids=["sys.exit()", "sys.exit(0)", "raise SystemExit"])
def test_a_process_pool_handler_that_exits_fails_its_attempt_as_in_a_thread(
        body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pool process``: a handler raising SystemExit with no code or 0 (``sys.exit()``
    on some request, argparse's ``--help`` among a request's arguments) ended its child
    with exit 0, taken for done: the request was completed (to finish/, without a
    result), where the same handler in a thread fails its attempt."""
    q, stats = run_in_a_child(tmp_path, monkeypatch, "exits",
                              "import sys\ndef handle(req):\n" + body, max_attempts=1)
    assert (stats.completed, stats.failed) == (0, 1)
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    record = q.error_record("a")
    assert record is not None and "SystemExit" in record.error["message"]


@pytest.mark.parametrize("body", ["    os._exit(0)\n",
                                  "    sys.stdout.write('x')\n    os._exit(0)\n"],
                         ids=["os._exit(0)", "after printing"])
def test_a_process_pool_handler_that_ends_its_process_without_returning_fails(
        body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pool process``: a handler that ends its child without returning, with status 0
    (``os._exit(0)``, a C library's ``exit(0)``: no SystemExit to catch), was taken for
    done, as any program exiting 0 is: the request was completed (to finish/, without a
    result) although its handler never finished. The child now says that its handler
    returned, after its result; a child that exits 0 without saying so fails the attempt."""
    q, stats = run_in_a_child(tmp_path, monkeypatch, "osexits",
                              "import os, sys\ndef handle(req):\n" + body, max_attempts=1)
    assert (stats.completed, stats.failed) == (0, 1)
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 0, "failed": 1}
    record = q.error_record("a")
    assert record is not None and "without its handler returning" in record.error["message"]


def test_a_process_pool_handler_that_leaves_a_thread_running_still_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``--pool process``: a handler that returns but leaves a thread running that is not
    a daemon (a ``threading.Timer``, a client's flusher: in a slot thread they are daemons,
    as the slot is, and hold nothing back) kept its child from exiting, since Python waits
    for such threads: the job ran, its lease renewed, for as long as the thread lived
    (for ever: the request stuck in processing/, no word of why). Once its handler
    returned, a child that does not exit within KILL_GRACE is stopped, and the job
    completes with its result and a warning."""
    (tmp_path / "leaks.py").write_text(
        "import threading\n"
        "def handle(req):\n"
        "    threading.Thread(target=threading.Event().wait, name='flusher').start()\n"
        "    return b'done'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]))
    q = Queue(MemoryStore("running-leaks"), QueueConfig(lease_ttl=6.0))
    q.submit("a", b"{}")
    worker = Worker(q, process_handler("leaks:handle"), WorkerOptions("w", burst=True))
    with caplog.at_level(logging.WARNING, logger="s3q.handlers"):
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        thread.join(60)
    assert not thread.is_alive(), "the job waited for the thread its handler left"
    assert worker.stats.completed == 1 and q.result("a") == b"done"
    [warning] = [r for r in caplog.records if getattr(r, "event", "") == "handler_leftovers"]
    assert "returned" in warning.getMessage()


def test_a_process_pool_handler_that_replaced_sys_stdout_keeps_its_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pool process``: a handler that silences its prints by replacing ``sys.stdout``
    (``sys.stdout = open(os.devnull, "w")``, never put back) had its result written to
    that replacement, i.e. nowhere: the request completed without its result (and, once
    the child said that its handler returned the same way, failed as if it never had).
    The result goes to the child's stdout itself, whatever ``sys.stdout`` is."""
    q, stats = run_in_a_child(tmp_path, monkeypatch, "silenced", (
        "import os, sys\n"
        "def handle(req):\n"
        "    sys.stdout = open(os.devnull, 'w')\n"
        "    print('noise')\n"
        "    return b'the result'\n"))
    assert stats.completed == 1, q.error_record("a")
    assert q.result("a") == b"the result"


def test_a_process_pool_handler_whose_process_crashes_after_it_returned_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``--pool process``: a child that crashes at its exit, after its handler returned
    and its result was written whole (a C extension's teardown: SIGSEGV, abort(), an
    atexit hook's os._exit(3)), failed the attempt, so a request whose work was done ran
    again and, on its last attempt, went to failed/. The child says when its handler
    returned: its job completes, with its result and a warning."""
    with caplog.at_level(logging.WARNING, logger="s3q.handlers"):
        q, stats = run_in_a_child(tmp_path, monkeypatch, "crashes", (
            "import atexit, os, signal\n"
            "def handle(req):\n"
            "    atexit.register(os.kill, os.getpid(), signal.SIGSEGV)\n"
            "    return b'done'\n"), max_attempts=1)
    assert stats.completed == 1, q.error_record("a")
    assert q.result("a") == b"done"
    [warning] = [r for r in caplog.records if getattr(r, "event", "") == "handler_leftovers"]
    assert "then ended" in warning.getMessage()


def test_the_log_line_of_a_failed_attempt_ends_with_the_last_line_of_its_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """A program's error holds the tail of its stderr, many lines (a Python traceback, whose
    last line says what went wrong): the worker's line for each failed attempt
    (``handler_failed``, the one a journal shows) kept the first line only, 'stderr:
    Traceback (most recent call last):', and never the error. It keeps the first line and
    the last."""
    from s3q.handlers import ExecHandler

    program = ("import json, sys\n"
               "def load(path):\n"
               "    return json.loads(open(path).read())['no_such_field']\n"
               "load(sys.argv[1])\n")
    q = Queue(MemoryStore("running-failed-line"), QueueConfig(lease_ttl=6.0, max_attempts=1))
    q.submit("a", b"{}")
    with caplog.at_level(logging.WARNING, logger="s3q.worker"):
        Worker(q, ExecHandler([sys.executable, "-c", program, "{path}"]),
               WorkerOptions("w", burst=True)).run()
    [line] = [r.getMessage() for r in caplog.records
              if getattr(r, "event", "") == "handler_failed"]
    assert "failed (exit code 1)" in line and "\n" not in line
    assert line.endswith("KeyError: 'no_such_field'"), line


def test_a_process_pool_handler_s_forked_daemon_does_not_hold_the_result_pipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pool process``: while the handler runs, the child keeps its stdout (the pipe
    its result goes to) on a file descriptor of its own. A process the handler forks
    inherited it, and one made a daemon the usual way (a session of its own, stdin, stdout
    and stderr to /dev/null, as docs/OPERATIONS.md advises) still held the result pipe
    open, out of its reach: the job waited 5 s for the pipe's end and the worker kept a
    reader thread and the pipe for as long as the daemon lived, each such job one more."""
    report = tmp_path / "pipes.txt"
    q, stats = run_in_a_child(tmp_path, monkeypatch, "forks", (
        "import os\n"
        "def handle(req):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            os.setsid()\n"
        "            null = os.open(os.devnull, os.O_RDWR)\n"
        "            for fd in (0, 1, 2):\n"
        "                os.dup2(null, fd)\n"
        "            held = [os.readlink(f'/proc/self/fd/{fd}')\n"
        "                    for fd in map(int, os.listdir('/proc/self/fd'))\n"
        "                    if os.path.exists(f'/proc/self/fd/{fd}')]\n"
        f"            with open({str(report)!r}, 'w') as f:\n"
        "                f.write(' '.join(t for t in held if t.startswith('pipe:')))\n"
        "        finally:\n"
        "            os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    return b'done'\n"))
    assert stats.completed == 1 and q.result("a") == b"done"
    assert report.read_text() == ""  # no pipe of the worker's: the daemon holds none


def test_a_handler_completing_its_job_with_a_str_or_another_value() -> None:
    """``job.complete(result)`` by the handler itself, with a str (which a handler may
    return as its result) or another value (a dict): the completion raised a TypeError
    (base64) after the job was marked settled and its lease no longer renewed, so the
    lease stayed held, unrenewed: the job was reported ``released``, the request taken
    over once the lease expired and run again, each time, until it was dead-lettered as
    'stopped renewing its lease'. A str is kept as UTF-8, as when it is returned; another
    value fails the attempt with a TypeError saying so, the job unsettled."""
    q = Queue(MemoryStore("running-complete-types"), QueueConfig(lease_ttl=6.0))
    text, other = _claimed(q, 2)
    outcomes = Outcomes()

    def handler(job: Job) -> None:
        job.complete("é" if job is text else {"ok": True})  # type: ignore[arg-type]

    runner = Runner(handler, 1, outcomes, background=False)
    for job in (text, other):
        runner.run(job, lambda j: None)
    assert outcomes.seen == [(text.name, "completed"), (other.name, "failed")]
    assert q.result(text.name) == "é".encode()
    [(lease, _)] = q.leases()
    assert lease.name == other.name and lease.intent.value == "retry"
    assert lease.error is not None and lease.error["type"] == "TypeError"
