"""The worker: N threads that claim a request, run the handler, and settle it.

    start:   re-queue what this worker id held before it died (own recovery)
    loop:    claim from wait/ → handler → settle (on the settler's threads: the slot
             claims its next request meanwhile)
    scan:    a thread of its own takes over dead workers' expired leases every scan
             interval, however busy the slots are, and releases them to wait/
    idle:    back off exponentially with jitter up to poll_interval; no writes while idle.
             With an event source (s3q.events): a notification wakes a slot at once, and
             the idle listing of wait/ (the safety net) comes every events_list_interval
             (s3q.pacing)
    stop:    (SIGTERM/SIGINT) stop claiming; let running jobs finish within `grace`;
             give back what still runs (to wait/, for another worker at once); exit 0.
             A second signal gives everything back at once.
    burst:   exit once nothing is left that could become claimable: it waits for retries'
             backoffs, for leases nobody renews (a dead worker's, or its own that a
             failed settlement left) to expire, and for requests another program is still
             writing into a local queue's wait/ (a cp) to settle, and for its circuit
             breaker's pauses, until it tripped HOPELESS_TRIPS times in a row: that ends it,
             as an error.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from s3q.burst import Burst
from s3q.errors import JobStateError, LeaseLost
from s3q.handlers import Handler
from s3q.hostlock import one_per_host
from s3q.job import Job
from s3q.pacing import Pacer, Turn
from s3q.queue import Queue
from s3q.recovery import RecoveryIncomplete, RecoveryRefused, RecoveryStopped
from s3q.registry import Presence
from s3q.running import Runner, one_line
from s3q.slots import Slots, join_slots
from s3q.store import StoreError
from s3q.workeropts import WorkerOptions, WorkerStats

if TYPE_CHECKING:
    from s3q.events import EventSource

__all__ = ["Worker", "WorkerOptions", "WorkerStats"]

log = logging.getLogger("s3q.worker")

#: Seconds between the main thread's looks at stop requests made by signal handlers (which
#: may not take a lock, so cannot wake it); a stop() or the slots' end wakes it at once.
SIGNAL_POLL = 0.2
class Worker:
    def __init__(self, queue: Queue, handler: Handler, options: WorkerOptions,
                 *, on_job_done: Callable[[Job, str, float], None] | None = None,
                 claim_gate: Callable[[threading.Event], bool] | None = None,
                 gate_hopeless: Callable[[], bool] | None = None,
                 stop_requests: list[str] | None = None,
                 events: EventSource | None = None) -> None:
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue, self.handler, self.options = queue, handler, options
        self.stats = WorkerStats()
        self._on_job_done = on_job_done
        #: Asked before each claim (s3q.breaker): False: wait (briefly); hopeless: a burst ends
        self._claim_gate, self._gate_hopeless = claim_gate, gate_hopeless
        self._stopping = threading.Event()  # no more claims
        self._woken = threading.Event()  # the main thread's wake-up: a stop, the slots ended
        self._abort = threading.Event()  # give running jobs back now
        self._stop_asked = False  # stop() was called: a second call aborts
        #: appended to by signal handlers (even before run() starts), read by run()
        self._signals: list[str] = stop_requests if stop_requests is not None else []
        self._noticed = 0  # signals acted upon
        self._lock = threading.Lock()
        self._running: dict[int, Job] = {}
        #: Jobs the worker gave back itself (counted then, not again at their outcome)
        self._given_back: weakref.WeakSet[Job] = weakref.WeakSet()
        #: Runs each claimed job's handler, then settles the job (in the background)
        self._runner = Runner(handler, options.concurrency, self._done,
                              background=options.settle_in_background)
        self._ended = threading.Event()  # this run's slots are done (the scanner stops)
        self._events = source = None if options.burst else events
        self._pacer = Pacer(
            poll_interval=options.poll_interval,
            scan_interval=queue.config.effective_scan_interval,
            events_list_interval=options.events_list_interval,
            events_healthy=None if source is None else lambda: source.healthy)
        self._claiming = 0  # slots inside a claim
        self._burst = Burst(queue, options.worker_id, options.concurrency,
                            options.burst_patience)  # (one per run)
        #: Its .s3q/workers/ record while it runs, and the queue's pause flag (s3q.registry)
        self.presence = Presence(self)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Graceful stop (first SIGTERM/SIGINT); a second call gives jobs back at once.
        Thread-safe; from a signal handler use :meth:`request_stop`."""
        with self._lock:  # (a burst that ended itself stops too: that is no first stop)
            if self._stop_asked:
                self._abort.set()
            self._stop_asked = True
        self._stopping.set()
        self._woken.set()

    def request_stop(self, why: str) -> None:
        """Ask for a stop from a signal handler: no lock, no I/O (a handler can interrupt
        any of them in the main thread); :meth:`run` acts on it within SIGNAL_POLL. Requests
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
        with one_per_host(self.options.worker_id, self.queue.store.url), self.presence:
            return self._run()

    def _run(self) -> WorkerStats:
        wid = self.options.worker_id
        self._notice_signals()
        self._burst = Burst(self.queue, wid, self.options.concurrency,
                            self.options.burst_patience)
        self._ended.clear()
        self._woken.clear()
        slots = Slots(self.options.concurrency, self._woken)
        self._runner.start()
        if self.options.recover_on_start and not self._stopping.is_set():
            recovered = self._recover_own(wid)
            if recovered:
                log.warning("recovered %d request(s) this worker held before it stopped",
                            recovered, extra={"event": "recovered_own",
                                              "worker": wid, "count": recovered})
        threads = [threading.Thread(target=self._slot_thread, args=(slots,),
                                    name=f"s3q-slot-{i}", daemon=True)
                   for i in range(self.options.concurrency)]
        scanner = threading.Thread(target=self._scan, name="s3q-scanner", daemon=True)
        log.info("worker %s started: %d slot(s) on %s", wid, len(threads), self.queue.store.url,
                 extra={"event": "worker_started", "worker": wid})
        for t in threads:
            t.start()
        if self.options.scanner:
            scanner.start()
        if self._events is not None:
            self._events.start(capacity=self._free_slots, wake=self.wake)
        while slots.left and not self._stopping.is_set():
            self._woken.wait(SIGNAL_POLL)
            self._woken.clear()  # (both flags are set before the wake: checked again above)
            self._notice_signals()
        self._notice_signals()
        if slots.left:
            self._drain(threads)
        else:
            join_slots(threads)  # (ended: their last moments)
        self._ended.set()  # (a burst that ended by itself) the scanner stops too
        if self._events is not None:
            self._events.stop()
        self._runner.shutdown()  # decided jobs are settled, never given back
        self.stats.error = self._burst.gave_up
        if scanner.is_alive():
            scanner.join(timeout=10)
        log.info("worker %s stopped", wid, extra={"event": "worker_stopped", "worker": wid,
                                                  "completed": self.stats.completed})
        return self.stats

    def _recover_own(self, wid: str) -> int:
        """Own recovery at start: how many requests it took back. A request it could not
        take back for a store error of its own (denied) is logged and left held by this id,
        as the takeover scan leaves such a request: its lease expires and the scan tries it
        again. Raising would end the run, and each restart would take the same lease over
        again (renewing it, so that no other worker's scan ever takes it over) and fail
        again: the worker would never start. An unavailable (or refusing) store ends it."""
        try:
            return len(self.queue.recover_own(wid))
        except (RecoveryStopped, RecoveryRefused):
            raise
        except RecoveryIncomplete as e:
            for name, error in e.done.failed.items():
                log.error("own recovery: %s not taken back (%s; a lease it cannot read may "
                          "be another's); the takeover scan tries again", name, error,
                          extra={"event": "recover_failed", "request": name, "worker": wid})
            return len(e.done)

    def _scan(self) -> None:
        """The takeover scan, on its own thread: dead workers' requests are fenced and
        released within the bound of docs/PROTOCOL.md (invariant 3) however busy the slots
        are. The queue runs it at most once per scan interval (claims may run it too).
        While the queue is paused it runs no scan (no LIST, no takeover, no dead-lettering,
        and nothing of the scanner role: neither taken nor renewed); it runs again as soon
        as the pause flag (the slots' shared answer) is gone."""
        wid = self.options.worker_id
        pause = min(1.0, self.queue.config.effective_scan_interval / 4)
        while not self._stopping.is_set():
            try:
                recovered = None if self.presence.paused() else self.queue.scan(wid)
                if recovered is not None:
                    log.debug("takeover scan: %d request(s) recovered", len(recovered),
                              extra={"event": "scanned", "worker": wid,
                                     "count": len(recovered)})
                    released = sum(1 for a in recovered.actions.values()
                                   if a in ("released", "view restored"))
                    if released:  # claim them now, not at the next poll
                        self.wake(released)
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
        join_slots(threads)

    def _give_back(self, job: Job) -> None:
        """Release first, then stop the handler: its dying cannot count as a failure."""
        with self._lock:  # (before: the job's own outcome may come first)
            self._given_back.add(job)
        try:
            job.release()
        except (LeaseLost, JobStateError):
            return  # finished or lost meanwhile (its outcome says which)
        except StoreError as exc:
            log.error("could not give back %s (%s): it returns after its lease expires",
                      job.name, exc, extra={"event": "release_failed", "request": job.name})
            return
        finally:
            job.interrupt()  # stop the handler's process, if it has one
        with self._lock:
            self.stats.released += 1

    # ------------------------------------------------------------------ one slot
    def _slot_thread(self, slots: Slots) -> None:
        try:
            self._slot()
        finally:
            slots.ended()

    def _slot(self) -> None:
        again: Turn | None = None  # claim again at once: the last claim lost races
        while not self._stopping.is_set():
            if self._claim_gate is not None and not self._claim_gate(self._stopping):
                if self.options.burst and self._gate_hopeless is not None \
                        and self._gate_hopeless():  # a batch must not wait for ever
                    self._burst.held_back()
                    self._stopping.set()  # (graceful, as when its store keeps failing)
                    self._woken.set()
                    return
                continue
            turn, again = again or self._pacer.turn(), None
            if turn is None:
                continue
            if not self._take_ticket():
                self._pacer.claimed(turn, found=False)
                return
            with self._lock:
                self._claiming += 1
            paused, job, raced = False, None, False
            failed: Exception | None = None
            try:
                paused = self.presence.paused()  # paused: claim nothing, poll as if idle
                job = None if paused else self.queue.claim(
                    self.options.worker_id, view_after=self.options.view_after)
                raced = job is None and not paused and self.queue.lost_race()
            except StoreError as exc:
                failed = exc
                log.warning("claim failed: %s", exc, extra={"event": "claim_failed"})
            except Exception as exc:  # never let a slot die: an idle poll turn it held
                # would never be handed back, and the other slots would never claim again
                failed = exc
                log.exception("claim failed: %s", one_line(exc),
                              extra={"event": "claim_failed"})
            finally:
                if job is None:
                    with self._lock:
                        self._claiming -= 1
            pause = self._pacer.raced(turn) if raced else None
            if pause is not None:  # a busy queue: others took what this claim tried
                self._return_ticket()
                self._stopping.wait(pause)
                again = "busy"
                continue
            named = (job is not None and self._events is not None
                     and self._events.offered(job.name))
            if (job is not None and turn == "poll" and self._events is not None
                    and not named and job.waited is not None):
                self._events.missed(job.name, job.waited)  # the safety net found it
            sleep = self._pacer.claimed(turn, found=job is not None, named=named)
            if sleep is not None:
                log.debug("idle: next listing of wait/ in %.1fs", sleep,
                          extra={"event": "idle", "seconds": round(sleep, 1)})
            if self.options.burst and failed is not None:  # tried again, as the worker
                if not self._burst.store_failed(failed):  # polls, unless it kept failing
                    self._return_ticket()
                    self._stopping.set()  # (graceful: its running jobs may finish)
                    self._woken.set()
                    return
            elif self.options.burst and not paused:
                self._burst.store_answered()
            if job is None:
                self._return_ticket()
                # (paused: nothing it may claim: a burst ends, as documented)
                if self.options.burst and failed is None and (
                        paused or not self._burst_waits()):
                    return
                continue
            if not self._start(job):
                self._give_back(job)  # claimed while the worker was stopping: not started
                return
            self._runner.run(job, self._handler_returned)

    def _start(self, job: Job) -> bool:
        """Count the job as running, unless a stop came while it was being claimed: the
        drain gives back only the jobs it sees, under this same lock."""
        with self._lock:
            self._claiming -= 1
            if self._stopping.is_set():
                return False
            self._running[id(job)] = job
        self._burst.job_started()
        return True

    def _burst_waits(self) -> bool:
        """Nothing to claim now: should the burst wait for more (s3q.burst)?"""
        with self._lock:
            busy = bool(self._running) or self._runner.settling
        return self._burst.waits(busy=busy, stopping=self._stopping)

    def wake(self, claims: int = 1) -> None:
        """Let ``claims`` slots claim at once, idle or not (an event named requests, or a
        scan released some). Thread-safe."""
        self._pacer.wake(claims)

    def _free_slots(self) -> int:
        """Slots neither running a job, nor claiming, nor about to claim for a wake; none
        once stopping (a message taken then would wait, hidden, until the drain ends), nor
        while the queue is paused (its messages stay in SQS; once a slot saw the pause, the
        flag is asked again here, at most every 5 s: the resume is seen without a poll)."""
        if self._stopping.is_set() or (self.presence.gate.last and self.presence.paused()):
            return 0
        wakes = self._pacer.wakes
        with self._lock:
            busy = len(self._running) + self._claiming
        return max(0, self.options.concurrency - busy - wakes)

    def _take_ticket(self) -> bool:
        with self._lock:
            if self.options.max_jobs is not None and self.stats.claimed >= self.options.max_jobs:
                return False
            self.stats.claimed += 1
            return True

    def _return_ticket(self) -> None:
        with self._lock:
            self.stats.claimed -= 1

    def _handler_returned(self, job: Job) -> None:
        with self._lock:
            self._running.pop(id(job), None)

    def _done(self, job: Job, outcome: str, elapsed: float) -> None:
        with self._lock:
            if outcome == "completed":
                self.stats.completed += 1
            elif outcome == "failed":
                self.stats.failed += 1
            elif outcome == "lost":
                self.stats.lost += 1
            elif outcome == "released" and job not in self._given_back:
                self.stats.released += 1  # (given back by the breaker, or by a handler)
        if self._on_job_done is not None:
            self._on_job_done(job, outcome, elapsed)
