"""A worker's circuit breaker: a broken deploy must not dead-letter the queue.

When ``threshold`` *different* requests fail in a row (a missing program, a handler that
cannot import, expired credentials of a service every request needs), the fault is
probably the worker's, not the requests'. The breaker then *trips*:

* the worker stops claiming for ``pause`` (doubled at each trip in a row, up to 8 times);
* the request whose failure tripped it, and every request that fails while it is open or
  before the first success after a pause, is given back to wait/ with ``job.release()``:
  its attempt is not counted (``Job.fail`` would count it and, after max_attempts, move it
  to failed/);
* it logs at ERROR, and writes ``.s3q/breaker/<worker id>`` (JSON: since when, until when,
  which requests failed, the last error) so that ``s3q status`` shows it and ``--check``
  fails; the record is deleted at the first success (the breaker closes) and when a worker
  with the same id starts again.

A handler the worker cannot even start (:class:`~s3q.handlers.HandlerUnavailable`) is
always the worker's fault: such a request is given back uncharged, and counts towards the
threshold each time, the same request's again too (given back, it is claimed again at
once: one waiting request would go round for ever). The first ``threshold - 1`` failures
of other kinds are charged as usual: they may well be the requests' own (a poison request
fails alone, and is retried, then dead-lettered, while the others succeed and keep the
breaker closed).

Hooks into the worker: :meth:`Breaker.wrap` wraps the handler (seeing every outcome), and
:meth:`Breaker.wait_until_closed` is the worker's ``claim_gate``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from s3q.context import message_of, one_line
from s3q.durations import age
from s3q.errors import JobStateError, LeaseLost
from s3q.handlers import Handler, HandlerUnavailable, result_bytes
from s3q.job import Job
from s3q.queue import Queue
from s3q.store import InvalidKey, NotFound, StoreError, list_all, validate_key

__all__ = ["BREAKERS", "Breaker", "GiveBackFailed", "HeldBack", "breaker_records",
           "open_problems"]

log = logging.getLogger("s3q.breaker")

#: Where open breakers are recorded, one object per worker id.
BREAKERS = ".s3q/breaker/"
#: The pause grows at most to this multiple of ``pause``.
MAX_FACTOR = 8
#: A ``--burst`` worker gives up once its breaker tripped this many times in a row (the
#: probe after its longest pause failed too: 15 pauses waited, 15 min by default).
HOPELESS_TRIPS = 5


class HeldBack(LeaseLost):
    """The breaker gave the job back to wait/ without charging an attempt (the worker no
    longer holds it, as after any release)."""


class GiveBackFailed(StoreError):
    """The breaker's give-back of a job failed: nothing was written, the request returns
    once its lease expires (the job's outcome is ``store_error``)."""


class Breaker:
    """See the module docstring. ``threshold`` 0 disables it (nothing is held back)."""

    def __init__(self, queue: Queue, worker_id: str, *, threshold: int, pause: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue, self.worker_id = queue, worker_id
        self.threshold, self.pause = threshold, pause
        self.listeners: list[Callable[[str], None]] = []  # "opened", "closed", "held_back"
        self._clock = clock
        self._lock = threading.Lock()
        self._record_lock = threading.Lock()
        self._streak: dict[str, str] = {}  # request -> its error, in the current streak
        self._unstartable = 0  # failures to start the program in the streak (any request)
        self._open_until = 0.0  # clock time
        self._trips = 0  # in a row, without a success since
        self._probing = False  # tripped before, no success since: the next failure trips

    # ------------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    def wait_until_closed(self, stopping: threading.Event) -> bool:
        """The worker's claim gate: True when it may claim; else waits a little (at most
        0.5 s, less when ``stopping`` is set) and returns False."""
        remaining = self._open_until - self._clock()
        if remaining <= 0:
            return True
        stopping.wait(min(remaining, 0.5))
        return False

    def hopeless(self) -> bool:
        """Tripped :data:`HOPELESS_TRIPS` times in a row: a burst stops waiting for it."""
        return self._trips >= HOPELESS_TRIPS

    def clear_record(self) -> None:
        """Delete this worker id's record (a restarted worker starts closed)."""
        key = self._record_key()
        if key is None:
            return
        with self._record_lock:
            try:
                self.queue.store.delete(key)
            except NotFound:
                pass
            except StoreError as e:
                log.warning("could not delete the breaker record %s: %s", key, e)

    def stopped(self) -> None:
        """The worker stopped: its record (if it tripped) goes."""
        if self._trips:
            self.clear_record()

    # ------------------------------------------------------------------ outcomes
    def wrap(self, handler: Handler) -> Handler:
        """``handler``, telling the breaker how each run ended; a failure the breaker
        blames on the worker releases the job and raises :class:`HeldBack` (or
        :class:`GiveBackFailed` if the release failed)."""
        def run(job: Job) -> bytes | str | None:
            try:
                result = handler(job)
                if job.settled_as is None:  # (settled by the handler: it returns no result)
                    result = result_bytes(result)  # (a dict returned is a failure too)
            except BaseException as exc:  # (SystemExit too: the worker fails it)
                if job.interrupted or not self.blames_worker(job, exc):
                    raise
                failed = self._give_back(job, exc)
                if failed is not None:  # nothing given back: it returns once expired
                    raise GiveBackFailed(f"{job.name}: the circuit breaker could not give "
                                         f"it back ({failed})") from exc
                raise HeldBack(f"{job.name}: given back by the circuit breaker") from exc
            self.succeeded()
            return result
        return run

    def succeeded(self) -> None:
        with self._lock:
            was_tripped = self._trips > 0
            self._streak.clear()
            self._unstartable = 0
            self._trips, self._probing, self._open_until = 0, False, 0.0
        if was_tripped:
            log.warning("circuit breaker closed: a request succeeded; claiming as usual",
                        extra={"event": "breaker_closed", "worker": self.worker_id})
            self.clear_record()
            self._tell("closed")

    def blames_worker(self, job: Job, exc: BaseException) -> bool:
        """Record a failure of ``job``; True when it is the worker's fault (give the job
        back uncharged), False when the request should be charged an attempt."""
        if self.threshold <= 0:
            return False
        message = _one_line(exc)
        with self._lock:
            if self.is_open:
                return True
            self._streak[job.name] = message
            self._unstartable += isinstance(exc, HandlerUnavailable)  # (each time counts)
            # the first run after a pause failed too, or the streak is long enough
            tripped = self._trip(job.name, message) if (
                self._probing or self.threshold <= max(len(self._streak), self._unstartable)
            ) else None
        if tripped is not None:
            self._write_record(*tripped)
            self._tell("opened")
            return True
        return isinstance(exc, HandlerUnavailable)

    # ------------------------------------------------------------------ internals
    def _trip(self, name: str, message: str) -> tuple[int, float, list[str], str]:
        """Open the breaker (the lock is held); returns what its record says."""
        self._trips += 1
        pause = self.pause * min(MAX_FACTOR, 2 ** (self._trips - 1))
        self._open_until = self._clock() + pause
        self._probing = True
        failed = list(self._streak) or [name]
        unstartable, self._unstartable = self._unstartable, 0
        self._streak.clear()
        what = (f"still failing after a pause (trip {self._trips} in a row)" if self._trips > 1
                else f"{len(failed)} different requests failed in a row"
                if len(failed) >= self.threshold
                else f"its handler could not be started {unstartable} times in a row")
        log.error("circuit breaker open: %s; not claiming for %gs, and failing requests go "
                  "back to wait/ without being charged an attempt. Check the handler (its "
                  "program, imports, the services and credentials it needs). Last error, "
                  "on %s: %s", what, pause, name, message,
                  extra={"event": "breaker_open", "worker": self.worker_id,
                         "pause": pause, "trips": self._trips, "failed": failed})
        return self._trips, pause, failed, message

    def _give_back(self, job: Job, exc: BaseException) -> BaseException | None:
        """Release ``job``; the error that left it unreleased (None: released, or lost or
        settled meanwhile: nothing to give back)."""
        failure: BaseException | None = None
        try:
            job.release()
        except JobStateError:
            return None  # settled meanwhile
        except LeaseLost as e:
            if job.lost:
                return None
            failure = e  # refused by its deadline: nothing written
        except StoreError as e:
            failure = e
        if failure is not None:
            log.error("could not give back %s (%s): it returns after its lease expires",
                      job.name, failure, extra={"event": "release_failed",
                                                "request": job.name})
            return failure
        log.warning("handler failed on %s (attempt %d): %s; given back to wait/ without "
                    "charging the attempt (circuit breaker)", job.name, job.attempt,
                    _one_line(exc), extra={"event": "held_back", "request": job.name,
                                           "attempt": job.attempt})
        self._tell("held_back")
        return None

    def _record_key(self) -> str | None:
        try:
            return validate_key(BREAKERS + self.worker_id)
        except InvalidKey:
            return None

    def _write_record(self, trips: int, pause: float, failed: list[str],
                      message: str) -> None:
        key = self._record_key()
        now = self.queue.store.now()
        record = {"v": 1, "worker": self.worker_id, "opened_at": now, "until": now + pause,
                  "pause": pause, "trips": trips, "failed": failed[:20],
                  "last_error": message}
        with self._record_lock:  # never after the delete of a success that came first
            if key is None or self._trips != trips:
                return
            try:
                self.queue.store.put(key, json.dumps(record).encode())
            except StoreError as e:
                log.warning("could not write the breaker record %s: %s", key, e)

    def _tell(self, event: str) -> None:
        for listener in self.listeners:
            listener(event)


def breaker_records(queue: Queue) -> Iterator[dict[str, Any]]:
    """The breaker records of the queue's workers (``s3q status``): each with ``worker``,
    ``opened_at``, ``until`` (store times), ``pause``, ``trips``, ``failed`` (names) and
    ``last_error``. Unreadable ones are skipped."""
    for info in list_all(queue.store, BREAKERS):
        try:
            data = json.loads(queue.store.get(info.key)[0])
        except (NotFound, ValueError):
            continue
        if isinstance(data, dict) and {"worker", "opened_at", "until"} <= set(data):
            yield data


def open_problems(records: list[dict[str, Any]], now: float) -> list[str]:
    """What ``s3q status --check`` (and the dashboard's overview) say of the workers whose
    circuit breaker is open, from their :func:`breaker_records`, by the store's ``now``."""
    return [f"worker {r['worker']}: circuit breaker open since "
            f"{age(now - float(r['opened_at']))} ({len(r.get('failed', []))} request(s) "
            f"failed in a row, trip {r.get('trips', 1)}; last error: "
            f"{one_line(r.get('last_error', ''), 200)}); it claims again at "
            f"{datetime.fromtimestamp(float(r['until']), UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            for r in records if now < float(r["until"])]


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {message_of(exc)}"
    return " ".join(text.split())[:500]
