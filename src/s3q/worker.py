"""The worker: N threads that claim a request, run the handler, and settle it.

    start:   re-queue what this worker id held before it died (own recovery)
    loop:    claim from wait/ → handler → settle
    scan:    a thread of its own takes over dead workers' expired leases every scan
             interval, however busy the slots are, and releases them to wait/
    idle:    back off exponentially with jitter up to poll_interval; no writes while idle
    stop:    (SIGTERM/SIGINT) stop claiming; let running jobs finish within `grace`;
             give back what still runs (to wait/, for another worker at once); exit 0.
             A second signal gives everything back at once.
    burst:   exit once nothing is left that could become claimable: it waits for retries'
             backoffs and for leases nobody renews (a dead worker's) to expire.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from s3q.errors import ConfigError, JobStateError, LeaseLost
from s3q.handlers import Handler
from s3q.job import Job
from s3q.queue import Outlook, Queue
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
    #: Run the takeover scan from a thread of its own (else only claims run it).
    scanner: bool = True
    #: A job writes its processing/ view only once it has run this long (0: at the claim).
    view_after: float = 1.0
    #: Complete or fail jobs on threads of their own, off the slots' critical path.
    settle_in_background: bool = True


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
                 *, on_job_done: Callable[[Job, str, float], None] | None = None,
                 claim_gate: Callable[[threading.Event], bool] | None = None,
                 stop_requests: list[str] | None = None) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue, self.handler, self.options = queue, handler, options
        self.stats = WorkerStats()
        self._on_job_done = on_job_done
        #: Asked before each claim (e.g. s3q.breaker); False: wait (it blocks briefly).
        self._claim_gate = claim_gate
        self._stopping = threading.Event()  # no more claims
        self._abort = threading.Event()  # give running jobs back now
        #: appended to by signal handlers (even before run() starts), read by run()
        self._signals: list[str] = stop_requests if stop_requests is not None else []
        self._noticed = 0  # signals acted upon
        self._lock = threading.Lock()
        self._running: dict[int, Job] = {}
        #: Completes or fails jobs whose handler returned (see _process), per run; at most
        #: twice the concurrency waiting, so that a slow store slows the slots down instead
        #: of piling settlements up.
        self._settler: ThreadPoolExecutor | None = None
        self._settle_backlog = threading.BoundedSemaphore(2 * options.concurrency)
        self._ended = threading.Event()  # this run's slots are done (the scanner stops)
        self._rng = random.Random()
        self._idle_cond = threading.Condition()
        self._idle = 0  # consecutive polls that found nothing (shared by the slots)
        self._next_poll = 0.0  # monotonic time of the next poll while idle
        self._polling = False  # one slot polls while idle
        self._burst_slots = options.concurrency  # slots a burst still runs (per run)
        self._outlook: Outlook | None = None  # what the last slot of a burst saw last
        #: Its .s3q/workers/ record while it runs, and the queue's pause flag (s3q.registry)
        self.presence = Presence(self)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Graceful stop (first SIGTERM/SIGINT); a second call gives jobs back at once.
        Thread-safe; from a signal handler use :meth:`request_stop`."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()

    def request_stop(self, why: str) -> None:
        """Ask for a stop from a signal handler: no lock, no I/O (a handler can interrupt
        any of them in the main thread); :meth:`run` acts on it within 0.2 s. Requests
        made before :meth:`run` starts count too."""
        self._signals.append(why)

    def _notice_signals(self) -> None:
        """(Main thread.) Act on the stop requests that came since the last look."""
        while self._noticed < len(self._signals):
            why = self._signals[self._noticed]
            self._noticed += 1
            if self._noticed == 1:
                log.warning("%s: stopping; running jobs get %gs to finish (signal again to "
                            "give them back now)", why, self.options.grace,
                            extra={"event": "stopping", "signal": why})
            else:
                log.warning("%s: giving running jobs back now", why,
                            extra={"event": "aborting", "signal": why})
            self.stop()

    @property
    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def run(self) -> WorkerStats:
        """Run until stopped (or, with burst / max_jobs, until done). Returns the stats.
        Raises ConfigError if a worker with the same id already runs on this host."""
        with _one_per_host(self.options.worker_id, self.queue.store.url), self.presence:
            return self._run()

    def _run(self) -> WorkerStats:
        wid = self.options.worker_id
        self._notice_signals()
        self._burst_slots, self._outlook = self.options.concurrency, None
        self._ended.clear()
        if self.options.settle_in_background:
            self._settler = ThreadPoolExecutor(self.options.concurrency, "s3q-settle")
        if self.options.recover_on_start and not self._stopping.is_set():
            recovered = self.queue.recover_own(wid)
            if recovered:
                log.warning("recovered %d request(s) this worker held before it stopped",
                            len(recovered), extra={"event": "recovered_own",
                                                   "worker": wid, "count": len(recovered)})
        threads = [threading.Thread(target=self._slot, name=f"s3q-slot-{i}", daemon=True)
                   for i in range(self.options.concurrency)]
        scanner = threading.Thread(target=self._scan, name="s3q-scanner", daemon=True)
        log.info("worker %s started: %d slot(s) on %s", wid, len(threads), self.queue.store.url,
                 extra={"event": "worker_started", "worker": wid})
        for t in threads:
            t.start()
        if self.options.scanner:
            scanner.start()
        while any(t.is_alive() for t in threads) and not self._stopping.wait(0.2):
            self._notice_signals()
        self._notice_signals()
        if any(t.is_alive() for t in threads):
            self._drain(threads)
        self._ended.set()  # (a burst that ended by itself) the scanner stops too
        if self._settler is not None:
            self._settler.shutdown(wait=True)  # decided jobs are settled, never given back
        if scanner.is_alive():
            scanner.join(timeout=10)
        log.info("worker %s stopped", wid, extra={"event": "worker_stopped", "worker": wid,
                                                  "completed": self.stats.completed})
        return self.stats

    def _scan(self) -> None:
        """The takeover scan, on its own thread: dead workers' requests are fenced and
        released within the bound of docs/PROTOCOL.md (invariant 3) however busy the slots
        are. The queue runs it at most once per scan interval (claims may run it too)."""
        wid = self.options.worker_id
        pause = min(1.0, self.queue.config.effective_scan_interval / 4)
        while not self._stopping.is_set():
            try:
                self.queue.scan(wid)
            except StoreError as exc:
                log.warning("takeover scan failed: %s", exc, extra={"event": "scan_failed"})
            except Exception:  # never let the scanner die
                log.exception("unexpected error in the takeover scan")
            if self._ended.wait(pause):
                return

    def _drain(self, threads: list[threading.Thread]) -> None:
        """Stop requested: wait up to `grace` for running jobs, then give them back."""
        deadline = time.monotonic() + self.options.grace
        while any(t.is_alive() for t in threads):
            if self._abort.is_set() or time.monotonic() >= deadline:
                break
            self._abort.wait(0.1)
            self._notice_signals()
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
            if self._claim_gate is not None and not self._claim_gate(self._stopping):
                continue
            if not self._my_turn_to_poll():
                continue
            if not self._take_ticket():
                self._polled(found=False)
                return
            paused = False
            try:
                paused = self.presence.paused()  # paused: claim nothing, poll as if idle
                job = None if paused else self.queue.claim(
                    self.options.worker_id, view_after=self.options.view_after)
            except StoreError as exc:
                log.warning("claim failed: %s", exc, extra={"event": "claim_failed"})
                job = None
            self._polled(found=job is not None)
            if job is None:
                self._return_ticket()
                if self.options.burst and (paused or not self._burst_waits()):
                    return  # (paused: nothing it may claim: a burst ends, as documented)
                continue
            if not self._start(job):
                self._give_back(job)  # claimed while the worker was stopping: not started
                return
            self._process(job)

    def _burst_waits(self) -> bool:
        """Nothing to claim now: should a burst wait (something will become claimable: a
        retry's backoff, or a lease nobody renews that will expire), or end? Every slot
        but one ends at once; the last one waits until the queue is drained."""
        with self._lock:
            if self._burst_slots > 1:
                self._burst_slots -= 1
                return False
        outlook = self._outlook = self.queue.outlook(self._outlook)
        if outlook.next_due is None:
            for name, why in outlook.left:
                log.info("burst done; left %s: %s", name, why,
                         extra={"event": "burst_left", "request": name, "reason": why})
            return False
        log.info("burst: waiting %.1fs for %d request(s) (%s)", outlook.next_due,
                 len(outlook.waiting), ", ".join(outlook.waiting[:3]),
                 extra={"event": "burst_waiting", "count": len(outlook.waiting)})
        self._stopping.wait(min(max(outlook.next_due, 0.2), 5.0))
        return True

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
        """Run the handler, then settle the job (complete, or fail with retry) on the
        settler's threads, so that this slot claims its next request at once: the settling
        round trips (d1…d5, w1…w3) are off its critical path. Nothing changes for safety:
        the job's lease is renewed until it is settled, and a crash before leaves it to
        recovery as a crash during the handler would."""
        start = time.monotonic()
        job.__enter__()  # the lease keeper renews it (and writes its view if it runs long)
        outcome = "completed"
        settle: Callable[[], None] | None = None
        try:
            result = self.handler(job)
            if job.interrupted:
                raise LeaseLost(f"{job.name}: interrupted")
            data = result.encode() if isinstance(result, str) else result
            settle = functools.partial(job.complete, data)
        except LeaseLost:
            outcome = "lost" if job.lost else "released"
        except JobStateError:
            outcome = "released"  # given back by a stop while the handler ran
        except Exception as exc:
            if job.interrupted:  # given back or lost while the handler ran: not its fault
                outcome = "lost" if job.lost else "released"
            else:
                outcome, settle = "failed", functools.partial(job.fail, exc)
                log.warning("handler failed on %s (attempt %d): %s", job.name, job.attempt,
                            _one_line(exc), extra={"event": "handler_failed",
                                                   "request": job.name, "attempt": job.attempt})
        except BaseException:  # KeyboardInterrupt, SystemExit: not the request's fault
            outcome, settle = "released", job.release
        elapsed = time.monotonic() - start
        with self._lock:
            self._running.pop(id(job), None)
        if settle is None:
            job.__exit__(None, None, None)  # lost or given back: nothing left to write
            self._done(job, outcome, elapsed)
        elif self._settler is None:
            self._settle(job, settle, outcome, elapsed)
        else:
            self._settle_backlog.acquire()
            self._settler.submit(self._settle, job, settle, outcome, elapsed)

    def _settle(self, job: Job, settle: Callable[[], None], outcome: str,
                elapsed: float) -> None:
        try:
            settle()
        except LeaseLost:
            outcome = "lost" if job.lost else "released"
        except JobStateError:
            outcome = "released"
        except StoreError as exc:
            outcome = "store_error"
            log.error("store error settling %s: %s (it returns after its lease expires)",
                      job.name, exc, extra={"event": "settle_failed", "request": job.name})
        except Exception:  # never let a settler thread die
            outcome = "store_error"
            log.exception("unexpected error settling %s", job.name)
        finally:
            if self._settler is not None:
                self._settle_backlog.release()
        self._done(job, outcome, elapsed)

    def _done(self, job: Job, outcome: str, elapsed: float) -> None:
        with self._lock:
            if outcome == "completed":
                self.stats.completed += 1
            elif outcome == "failed":
                self.stats.failed += 1
            elif outcome == "lost":
                self.stats.lost += 1
        if self._on_job_done is not None:
            self._on_job_done(job, outcome, elapsed)


@contextlib.contextmanager
def _one_per_host(worker_id: str, queue_url: str) -> Iterator[None]:
    """Hold a host-wide lock on (queue, worker id): two live workers with one id on one
    queue would take each other's work back at start (own recovery); on two queues they do
    not meet. Lock files live in $S3Q_LOCK_DIR (default: the temporary directory)."""
    lock_dir = Path(os.environ.get("S3Q_LOCK_DIR") or tempfile.gettempdir())
    digest = hashlib.sha256(f"{queue_url}\n{worker_id}".encode()).hexdigest()[:16]
    path = lock_dir / f"s3q-worker-{digest}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"worker_id: another worker with id {worker_id!r} is running on this host "
                f"for {queue_url} (lock {path}); give each worker process its own "
                "--worker-id") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {worker_id} {queue_url}\n".encode())
        yield
    finally:
        os.close(fd)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0][:300] if text else type(exc).__name__
