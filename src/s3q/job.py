"""A lease this process holds (:class:`Job`), and the thread that keeps leases alive.

A Job is what a claim returns (the handler runs on it) and also what a takeover holds while
it settles a dead worker's request. All its lease writes go through :meth:`Job.write`, one at
a time (a renewal and the final write never race), fenced by the lease's ETag.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from s3q import clock, leases, settle
from s3q.body import open_body, processing_view
from s3q.context import Context, Deadline, error_info
from s3q.errors import JobStateError, LeaseLost
from s3q.leases import LeaseTaken
from s3q.records import Lease
from s3q.renewing import copying
from s3q.store import StoreError

__all__ = ["Job", "LeaseKeeper"]

log = logging.getLogger("s3q")


class Job:
    """One request held under a lease until it is completed, failed or released.

    Use it as a context manager to renew the lease in the background while the handler runs;
    leaving the block completes the job, or fails it (with retry) if an exception escapes.
    """

    def __init__(self, ctx: Context, lease: Lease, lease_etag: str, deadline: Deadline,
                 keeper: Callable[[], LeaseKeeper] | None = None) -> None:
        self.ctx = ctx
        self.lease = lease
        self.lease_etag = lease_etag
        #: Until when the lease is certainly ours; its check guards every other write.
        self.deadline = deadline
        self.finished = False
        #: How the job was settled, once it was: completed, failed or released.
        self.settled_as: str | None = None
        #: When (monotonic) the job writes its processing/ view if it still runs (c3
        #: deferred by the claim: most jobs end sooner and never need one); None: written.
        self.view_due: float | None = None
        #: Seconds the request had waited in wait/ when it was claimed from there (by the
        #: store's clock, from its Last-Modified); None for a retry's next attempt.
        self.waited: float | None = None
        #: A deferred view write whose outcome is unknown (it raised a store error): it
        #: may exist in processing/ unrecorded; settled before the job's final write.
        self._view_unsure = False
        self._keeper = keeper
        self._finish_lock = threading.Lock()
        self._write_lock = threading.RLock()  # one lease write at a time
        self._lost = threading.Event()
        self._interrupted = threading.Event()
        self._on_interrupt: list[Callable[[Job], None]] = []

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self.lease.name

    @property
    def attempt(self) -> int:
        return self.lease.attempt

    @property
    def worker_id(self) -> str:
        return self.lease.worker

    @property
    def generation(self) -> int:
        return self.lease.gen

    @property
    def size(self) -> int:
        return self.lease.size

    @property
    def lost(self) -> bool:
        """True once the lease was taken over: stop working, nothing you do will count."""
        return self._lost.is_set()

    def __repr__(self) -> str:
        return f"<Job {self.name!r} attempt={self.attempt} gen={self.generation}>"

    # ------------------------------------------------------------------ payload
    def open(self) -> BinaryIO:
        """Stream the request body (never loads a large one whole). The caller closes it."""
        return open_body(self.ctx, self.lease)

    def read(self) -> bytes:
        """The whole request body (for small requests)."""
        with self.open() as fh:
            return fh.read()

    def download(self, path: str | Path) -> Path:
        """Stream the request body into a local file."""
        target = Path(path)
        with self.open() as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        return target

    # ------------------------------------------------------------------ lease
    @property
    def interrupted(self) -> bool:
        """True once the work should stop: lease lost, or the worker gave the job back."""
        return self._interrupted.is_set()

    def on_interrupt(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` when the job is interrupted (its lease was taken over, or
        the worker is shutting down and gives it back): e.g. kill the handler's process."""
        self._on_interrupt.append(callback)
        if self.interrupted:
            callback(self)

    def interrupt(self) -> None:
        if self._interrupted.is_set():
            return
        self._interrupted.set()
        for callback in self._on_interrupt:
            try:
                callback(self)
            except Exception:
                log.exception("interrupt callback of %s failed", self.name)

    def mark_lost(self) -> None:
        """The lease was taken over (logged by :meth:`write`): stop the handler."""
        if not self._lost.is_set():
            self._lost.set()
            self.interrupt()

    def check_deadline(self) -> None:
        """Raise LeaseLost if the lease may have expired (a takeover may be under way)."""
        self.deadline.check()

    def write(self, lease: Lease) -> None:
        """Write the next version of this job's lease (renewal or a decision). If the lease
        was taken over, the job is marked lost (its handler interrupted) and LeaseLost
        raised; an earlier write of ours that took effect unseen is built upon."""
        with self._write_lock:
            if self.lost:
                raise LeaseLost(f"{self.name}: lease was taken over")
            sent = self.ctx.monotonic()
            try:
                self.lease, self.lease_etag = leases.write(self.ctx, lease, self.lease_etag)
            except LeaseTaken as exc:
                raise self._taken_over("this worker's result will not count") from exc
            self.deadline = self.ctx.deadline(sent, self.name)

    def commit(self) -> None:
        """d5 of a completion not committed by d1: delete the lease (``DEL=e``). If it was
        taken over first, the job is marked lost and LeaseLost raised: this run does not
        count."""
        with self._write_lock:
            try:
                leases.commit(self.ctx, self.lease, self.lease_etag)
            except LeaseTaken as exc:
                raise self._taken_over("this happened before its completion committed: this "
                                       "run does not count (the taker runs the request "
                                       "again, or has settled it)") from exc

    def taken_over(self, consequence: str) -> LeaseLost:
        """The lease was found taken over by a write other than the job's own (a renewal
        during a copy, :func:`s3q.renewing.copying`): :meth:`_taken_over`."""
        with self._write_lock:
            return self._taken_over(consequence)

    def _taken_over(self, consequence: str) -> LeaseLost:
        """(Under the write lock.) The lease is another claim's now: log it, stop the
        handler, and return the LeaseLost to raise."""
        self.ctx.emit("lease_lost", self.name, level=logging.ERROR, worker=self.worker_id,
                      gen=self.lease.gen)
        self.mark_lost()
        return LeaseLost(f"{self.name}: lease of {self.worker_id} gen {self.lease.gen} was "
                         f"taken over; {consequence}")

    def write_view(self) -> None:
        """c3, deferred: the processing/ view of a job still running (the lease keeper calls
        it at ``view_due``). Its ETag goes into the next lease write."""
        with self._write_lock:
            if self.view_due is None or self.finished or self.lost:
                return
            self.view_due = None
            self._write_view()

    def _write_view(self) -> None:
        """(Under the write lock.) c3. A store error may hide a view that was created (an
        ambiguous outcome, PROTOCOL §2.3): unless it is recorded, d4/w3/x4 would not delete
        it, and once the lease is gone the scan would adopt it as an orphan and run the
        request again. So it is tried again (its 412 adopts our own view) before the job's
        final write (:meth:`_finish`)."""
        self._view_unsure = True
        try:
            with copying(self):  # (the heartbeat waits for the write lock meanwhile)
                proc = processing_view(self.ctx, self.lease, self.deadline)
        except LeaseLost:  # not sent, or deleted again (the deadline passed): none left
            self._view_unsure = False
            raise
        self.lease = replace(self.lease, proc=proc)
        self._view_unsure = False

    def renew(self) -> None:
        """Extend the lease now. Raises LeaseLost if it was taken over."""
        with self._write_lock:
            if self.finished:
                return
            self._check_open()
            self.write(self.lease.next(written_at=time.time()))
        self.ctx.emit("renewed", self.name, level=logging.DEBUG, worker=self.worker_id,
                      gen=self.lease.gen)

    # ------------------------------------------------------------------ outcomes
    def complete(self, result: bytes | str | None = None) -> None:
        """Done: to finish/ (or deleted, per on_finish), with an optional small result
        (bytes, or what a handler may return: a str is kept as UTF-8; another value is a
        TypeError, raised before the job is settled)."""
        from s3q.handlers import result_bytes  # (handlers imports this module)

        data = result_bytes(result)  # (once settled, an error would leave the lease held)
        self._finish(lambda: settle.complete(self, data), "completed")

    def fail(self, error: BaseException | str, *, retry: bool = True) -> None:
        """Failed: back to wait/ after a backoff, or to failed/ after the last attempt (or at
        once with ``retry=False``)."""
        now = self.ctx.store.now()
        info = error_info(error, worker=self.worker_id, attempt=self.attempt, at=now)
        if retry and self.attempt < self.ctx.config.max_attempts:
            self._finish(lambda: settle.back_to_wait(
                self, attempts=self.attempt, not_before=now + self.ctx.backoff(self.attempt),
                error=info), "failed")
        else:
            self._finish(lambda: settle.dead_letter(self, info), "failed")

    def release(self, *, counted: bool = False, error: dict[str, object] | None = None
                ) -> None:
        """Give the request back to wait/ for any worker, at once. This attempt does not
        count unless ``counted`` (a takeover of a dead worker's attempt)."""
        attempts = self.attempt if counted else self.attempt - 1
        self._finish(lambda: settle.back_to_wait(self, attempts=max(0, attempts),
                                                 not_before=0.0, error=error), "released")

    def _check_open(self) -> None:
        if self.finished:
            raise JobStateError(f"{self.name}: already completed, failed or released")
        if self.lost:
            raise LeaseLost(f"{self.name}: lease was taken over")

    def _finish(self, outcome: Callable[[], None], settled_as: str) -> None:
        with self._finish_lock:  # complete() by the handler vs release() by a stopping worker
            self._check_open()
            self.finished = True
        if self._keeper is not None:
            self._keeper().unregister(self)
        with self._write_lock:  # a renewal under way finishes first; none starts after
            if self._view_unsure:  # else the view may outlive the lease (an orphan)
                self._write_view()
            outcome()
        self.settled_as = settled_as

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Job:
        if self._keeper is not None:
            self._keeper().register(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._keeper is not None:
            self._keeper().unregister(self)
        if self.finished or self.lost:
            return
        if exc is None:
            self.complete()
        elif isinstance(exc, Exception):
            self.fail(exc)
        else:  # KeyboardInterrupt, SystemExit: not the request's fault
            self.release()


class LeaseKeeper:
    """One background thread scheduling the renewal of the leases of all registered jobs
    every ``interval`` seconds, and the writing of the processing/ view of each job that
    runs past its ``view_due``. A renewal that finds the lease taken over marks the job
    lost. Each renewal and view write runs on a short-lived thread of its own (a job has
    at most one of each under way): one that hangs (a connection black-holed until its
    read timeout, times the SDK's attempts) must not hold back the renewals of the other
    jobs, whose leases would all expire and be taken over while they still run. (When no
    thread can be started, the keeper's own does the task, as a slow renewal.)"""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: list[tuple[float, int, str, Job]] = []  # (when, seq, what, job)
        self._seq = itertools.count()
        self._jobs: set[int] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="s3q-lease-keeper", daemon=True)
        self._thread.start()

    def register(self, job: Job) -> None:
        with self._cond:
            self._jobs.add(id(job))
            self._push(clock.monotonic() + self.interval, "renew", job)
            if job.view_due is not None:  # (job.ctx.monotonic is clock.monotonic here)
                self._push(job.view_due, "view", job)
            self._cond.notify()

    def unregister(self, job: Job) -> None:
        with self._cond:
            self._jobs.discard(id(job))

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _push(self, when: float, what: str, job: Job) -> None:
        heapq.heappush(self._due, (when, next(self._seq), what, job))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due
                                             or self._due[0][0] > clock.monotonic()):
                    timeout = self._due[0][0] - clock.monotonic() if self._due else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, what, job = heapq.heappop(self._due)
                if id(job) not in self._jobs:
                    continue
            task = self._view if what == "view" else self._renew
            try:
                threading.Thread(target=task, args=(job,), name=f"s3q-lease-{what}",
                                 daemon=True).start()
            except RuntimeError as exc:  # no thread to be had: do it here, as one hangs
                log.warning("lease keeper: no thread for the %s of %s (%s); done in line",
                            what, job.name, exc, extra={"event": "keeper_no_thread",
                                                       "request": job.name})
                task(job)

    def _view(self, job: Job) -> None:
        try:
            job.write_view()
        except (LeaseLost, JobStateError):
            pass  # lost (its renewal will say so) or over
        except StoreError as exc:  # a job without a view loses nothing: the lease has it
            log.warning("processing/ view of %s not written (%s)", job.name, exc,
                        extra={"event": "view_failed", "request": job.name})
        except Exception:  # never let the keeper thread die
            log.exception("unexpected error writing the view of %s", job.name)

    def _renew(self, job: Job) -> None:
        retry_in = self.interval
        try:
            job.renew()
        except (LeaseLost, JobStateError):
            return  # job.mark_lost() already ran the callbacks, or the job is over
        except StoreError as exc:
            retry_in = min(self.interval, 1.0)
            log.warning("lease renewal of %s failed (%s); retrying", job.name, exc,
                        extra={"event": "renew_failed", "request": job.name})
        except Exception:  # never let the keeper thread die
            log.exception("unexpected error renewing %s", job.name)
        with self._cond:
            if id(job) in self._jobs and not job.finished:
                self._push(clock.monotonic() + retry_in, "renew", job)
                self._cond.notify()  # (from a task's thread: the keeper may wait for ever)
