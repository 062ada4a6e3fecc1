"""A claimed request (:class:`Job`) and the thread that keeps its lease alive."""

from __future__ import annotations

import heapq
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from s3q import layout
from s3q.errors import JobStateError, LeaseLost
from s3q.records import Intent, Lease
from s3q.store import StoreError

if TYPE_CHECKING:
    from s3q.queue import Queue

__all__ = ["Job", "LeaseKeeper"]

log = logging.getLogger("s3q")


class Job:
    """One claimed request, held under a lease until it is completed, failed or released.

    Use it as a context manager to renew the lease in the background while the handler runs;
    leaving the block completes the job, or fails it (with retry) if an exception escapes.
    """

    def __init__(self, queue: Queue, lease: Lease, lease_etag: str, size: int,
                 deadline: float) -> None:
        self.queue = queue
        self.lease = lease
        self.lease_etag = lease_etag
        self.size = size
        #: Local monotonic time until which the lease is certainly ours.
        self.deadline = deadline
        self.finished = False
        self._finish_lock = threading.Lock()
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
    def lost(self) -> bool:
        """True once the lease was taken over: stop working, nothing you do will count."""
        return self._lost.is_set()

    def __repr__(self) -> str:
        return f"<Job {self.name!r} attempt={self.attempt} gen={self.generation}>"

    # ------------------------------------------------------------------ payload
    def open(self) -> BinaryIO:
        """Stream the request body (never loads it whole). The caller closes it."""
        return self.queue.store.open(layout.key(layout.PROCESSING, self.name))[0]

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
        """The lease was taken over (the queue logs it): stop the handler."""
        if not self._lost.is_set():
            self._lost.set()
            self.interrupt()

    def renew(self) -> None:
        """Extend the lease now. Raises LeaseLost if it was taken over."""
        self._check_open()
        self.queue._renew(self)

    def check_deadline(self) -> None:
        """Raise LeaseLost if the lease may have expired (a takeover may be under way)."""
        if time.monotonic() > self.deadline:
            raise LeaseLost(f"{self.name}: lease not renewed in time; leaving the request "
                            "to whoever takes it over")

    # ------------------------------------------------------------------ outcomes
    def complete(self, result: bytes | None = None) -> None:
        """Done: to finish/ (or deleted, per on_finish), with an optional small result."""
        self._finish(self.lease.next(
            intent=Intent.DONE, on_finish=self.queue.config.on_finish,
            result_b64=Lease.encode_result(result), written_at=time.time()))

    def fail(self, error: BaseException | str, *, retry: bool = True) -> None:
        """Failed: back to wait/ after a backoff, or to failed/ after the last attempt (or at
        once with ``retry=False``)."""
        from s3q.queue import error_info

        now = self.queue.store.now()
        info = error_info(error, worker=self.worker_id, attempt=self.attempt, at=now)
        if retry and self.attempt < self.queue.config.max_attempts:
            lease = self.lease.next(intent=Intent.WAIT, attempts=self.attempt, error=info,
                                    not_before=now + self.queue.backoff(self.attempt),
                                    written_at=time.time())
        else:
            lease = self.lease.next(intent=Intent.DEAD, error=info, written_at=time.time())
        self._finish(lease)

    def release(self) -> None:
        """Give the request back to wait/ untouched (this attempt does not count)."""
        self._finish(self.lease.next(intent=Intent.WAIT, attempts=self.attempt - 1,
                                     not_before=0.0, error=None, written_at=time.time()))

    def _check_open(self) -> None:
        if self.finished:
            raise JobStateError(f"{self.name}: already completed, failed or released")
        if self.lost:
            raise LeaseLost(f"{self.name}: lease was taken over")

    def _finish(self, lease: Lease) -> None:
        with self._finish_lock:  # complete() by the handler vs release() by a stopping worker
            self._check_open()
            self.finished = True
        self.queue.keeper.unregister(self)
        self.queue._finish_job(self, lease)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Job:
        self.queue.keeper.register(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.queue.keeper.unregister(self)
        if self.finished or self.lost:
            return
        if exc is None:
            self.complete()
        elif isinstance(exc, Exception):
            self.fail(exc)
        else:  # KeyboardInterrupt, SystemExit: not the request's fault
            self.release()


class LeaseKeeper:
    """One background thread renewing the leases of all registered jobs every
    ``interval`` seconds. A renewal that finds the lease taken over marks the job lost."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: list[tuple[float, int, Job]] = []
        self._jobs: set[int] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="s3q-lease-keeper", daemon=True)
        self._thread.start()

    def register(self, job: Job) -> None:
        with self._cond:
            self._jobs.add(id(job))
            heapq.heappush(self._due, (time.monotonic() + self.interval, id(job), job))
            self._cond.notify()

    def unregister(self, job: Job) -> None:
        with self._cond:
            self._jobs.discard(id(job))

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due
                                             or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, ident, job = heapq.heappop(self._due)
                if ident not in self._jobs:
                    continue
            self._renew(job)

    def _renew(self, job: Job) -> None:
        retry_in = self.interval
        try:
            job.queue._renew(job)
        except LeaseLost:
            return  # job.mark_lost() already ran the callbacks
        except StoreError as exc:
            retry_in = min(self.interval, 1.0)
            log.warning("lease renewal of %s failed (%s); retrying", job.name, exc,
                        extra={"event": "renew_failed", "request": job.name})
        except Exception:  # never let the keeper thread die
            log.exception("unexpected error renewing %s", job.name)
        with self._cond:
            if id(job) in self._jobs and not job.finished:
                heapq.heappush(self._due, (time.monotonic() + retry_in, id(job), job))
