"""The worker: N threads that claim a request, run the handler, and settle it.

    start:   re-queue what this worker id held before it died (own recovery)
    loop:    claim (expired leases of dead workers first, then wait/) → handler → settle
    idle:    back off exponentially with jitter up to poll_interval; no writes while idle
    stop:    (SIGTERM/SIGINT) stop claiming; let running jobs finish within `grace`;
             give back what still runs (to wait/, for another worker at once); exit 0.
             A second signal gives everything back at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from s3q.errors import ConfigError, JobStateError, LeaseLost
from s3q.handlers import Handler
from s3q.job import Job
from s3q.queue import Queue
from s3q.registry import Presence
from s3q.store import StoreError

__all__ = ["Worker", "WorkerOptions", "WorkerStats"]

log = logging.getLogger("s3q.worker")

@dataclass(frozen=True, slots=True)
class WorkerOptions:
    worker_id: str
    concurrency: int = 4
    #: Seconds running jobs get to finish after a stop request before they are given back.
    grace: float = 30.0
    #: Process what is there, then exit.
    burst: bool = False
    #: Stop after claiming this many jobs (None: no limit).
    max_jobs: int | None = None
    #: Longest idle sleep between polls (seconds); idle sleeps start at 0.2 s and double.
    poll_interval: float = 10.0
    #: Re-queue this worker id's leftovers at start.
    recover_on_start: bool = True


@dataclass
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Worker:
    def __init__(self, queue: Queue, handler: Handler, options: WorkerOptions,
                 *, on_job_done: Callable[[Job, str, float], None] | None = None) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue, self.handler, self.options = queue, handler, options
        self.stats = WorkerStats()
        self._on_job_done = on_job_done
        self._stopping = threading.Event()  # no more claims
        self._abort = threading.Event()  # give running jobs back now
        self._lock = threading.Lock()
        self._running: dict[int, Job] = {}
        self._rng = random.Random()
        self._idle_cond = threading.Condition()
        self._idle = 0  # consecutive polls that found nothing (shared by the slots)
        self._next_poll = 0.0  # monotonic time of the next poll while idle
        self._polling = False  # one slot polls while idle
        #: Its .s3q/workers/ record while it runs, and the queue's pause flag (s3q.registry)
        self.presence = Presence(self)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Graceful stop (first SIGTERM/SIGINT); a second call gives jobs back at once."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()

    @property
    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def run(self) -> WorkerStats:
        """Run until stopped (or, with burst / max_jobs, until done). Returns the stats.
        Raises ConfigError if a worker with the same id already runs on this host."""
        with _one_per_host(self.options.worker_id), self.presence:
            return self._run()

    def _run(self) -> WorkerStats:
        wid = self.options.worker_id
        if self.options.recover_on_start:
            recovered = self.queue.recover_own(wid)
            if recovered:
                log.warning("recovered %d request(s) this worker held before it stopped",
                            len(recovered), extra={"event": "recovered_own",
                                                   "worker": wid, "count": len(recovered)})
        threads = [threading.Thread(target=self._slot, name=f"s3q-slot-{i}", daemon=True)
                   for i in range(self.options.concurrency)]
        log.info("worker %s started: %d slot(s) on %s", wid, len(threads), self.queue.store.url,
                 extra={"event": "worker_started", "worker": wid})
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and not self._stopping.wait(0.2):
            pass
        if any(t.is_alive() for t in threads):
            self._drain(threads)
        log.info("worker %s stopped", wid, extra={"event": "worker_stopped", "worker": wid,
                                                  "completed": self.stats.completed})
        return self.stats

    def _drain(self, threads: list[threading.Thread]) -> None:
        """Stop requested: wait up to `grace` for running jobs, then give them back."""
        deadline = time.monotonic() + self.options.grace
        while any(t.is_alive() for t in threads):
            if self._abort.is_set() or time.monotonic() >= deadline:
                break
            self._abort.wait(0.1)
        for job in self.running:
            self._give_back(job)
        for t in threads:
            t.join(timeout=10)

    def _give_back(self, job: Job) -> None:
        """Release first, then stop the handler: its dying cannot count as a failure."""
        try:
            job.release()
        except (LeaseLost, JobStateError):
            return  # finished or lost meanwhile
        except StoreError as exc:
            log.error("could not give back %s (%s): it returns after its lease expires",
                      job.name, exc, extra={"event": "release_failed", "request": job.name})
            return
        finally:
            job.interrupt()  # stop the handler's process, if it has one
        with self._lock:
            self.stats.released += 1

    # ------------------------------------------------------------------ one slot
    def _slot(self) -> None:
        while not self._stopping.is_set():
            if not self._my_turn_to_poll():
                continue
            if not self._take_ticket():
                self._polled(found=False)
                return
            try:
                paused = self.presence.paused()  # paused: claim nothing, poll as if idle
                job = None if paused else self.queue.claim(self.options.worker_id)
            except StoreError as exc:
                log.warning("claim failed: %s", exc, extra={"event": "claim_failed"})
                job = None
            self._polled(found=job is not None)
            if job is None:
                self._return_ticket()
                if self.options.burst:
                    return
                continue
            if not self._start(job):
                self._give_back(job)  # claimed while the worker was stopping: not started
                return
            self._process(job)

    def _start(self, job: Job) -> bool:
        """Count the job as running, unless a stop came while it was being claimed: the
        drain gives back only the jobs it sees, under this same lock."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self._running[id(job)] = job
            return True

    def _my_turn_to_poll(self) -> bool:
        """While the queue is busy every slot claims freely. Once a claim finds nothing,
        the slots poll one at a time at a shared, growing interval (so an idle worker costs
        one LIST per poll, whatever its concurrency). False: wait, then ask again."""
        with self._idle_cond:
            if self._idle == 0:
                return True
            delay = self._next_poll - time.monotonic()
            if self._polling or delay > 0:
                self._idle_cond.wait(timeout=min(max(delay, 0.05), 0.5))
                return False
            self._polling = True
            return True

    def _polled(self, *, found: bool) -> None:
        with self._idle_cond:
            self._polling = False
            self._idle = 0 if found else self._idle + 1
            self._next_poll = time.monotonic() + (self._idle_sleep(self._idle) if self._idle
                                                  else 0.0)
            self._idle_cond.notify_all()

    def _take_ticket(self) -> bool:
        with self._lock:
            if self.options.max_jobs is not None and self.stats.claimed >= self.options.max_jobs:
                return False
            self.stats.claimed += 1
            return True

    def _return_ticket(self) -> None:
        with self._lock:
            self.stats.claimed -= 1

    def _idle_sleep(self, idle: int) -> float:
        """Exponential backoff with jitter while idle, never longer than the scan interval
        (so that expired leases of dead workers are found in time)."""
        longest = min(self.options.poll_interval, self.queue.config.effective_scan_interval)
        cap = min(longest, 0.2 * 2 ** min(idle, 10))
        return self._rng.uniform(cap / 2, cap)

    def _process(self, job: Job) -> None:
        start = time.monotonic()
        outcome = "completed"
        try:
            with job:
                result = self.handler(job)
                if job.interrupted:
                    raise LeaseLost(f"{job.name}: interrupted")
                job.complete(result.encode() if isinstance(result, str) else result)
        except LeaseLost:
            outcome = "lost" if job.lost else "released"
        except JobStateError:
            outcome = "released"  # given back by a stop while the handler ran
        except StoreError as exc:
            outcome = "store_error"
            log.error("store error settling %s: %s (it returns after its lease expires)",
                      job.name, exc, extra={"event": "settle_failed", "request": job.name})
        except Exception as exc:
            if job.interrupted:  # given back or lost while the handler ran: not its fault
                outcome = "lost" if job.lost else "released"
                return
            outcome = "failed"
            log.warning("handler failed on %s (attempt %d): %s", job.name, job.attempt,
                        _one_line(exc), extra={"event": "handler_failed",
                                               "request": job.name, "attempt": job.attempt})
        finally:
            with self._lock:
                self._running.pop(id(job), None)
                if outcome == "completed":
                    self.stats.completed += 1
                elif outcome == "failed":
                    self.stats.failed += 1
                elif outcome == "lost":
                    self.stats.lost += 1
            if self._on_job_done is not None:
                self._on_job_done(job, outcome, time.monotonic() - start)


@contextlib.contextmanager
def _one_per_host(worker_id: str) -> Iterator[None]:
    """Hold a host-wide lock on the worker id: two live workers with one id would take each
    other's work back at start (own recovery). Lock files live in $S3Q_LOCK_DIR (default:
    the temporary directory)."""
    lock_dir = Path(os.environ.get("S3Q_LOCK_DIR") or tempfile.gettempdir())
    digest = hashlib.sha256(worker_id.encode()).hexdigest()[:16]
    path = lock_dir / f"s3q-worker-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"worker_id: another worker with id {worker_id!r} is running on this host "
                f"(lock {path}); give each worker process its own --worker-id") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {worker_id}\n".encode())
        yield
    finally:
        os.close(fd)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300] if text else type(exc).__name__
