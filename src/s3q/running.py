"""running: one claimed job, from its handler to its settlement.

A :class:`Runner` runs the handler on the slot's thread, then settles the job (complete,
or fail with retry; docs/PROTOCOL.md §4) on settler threads of its own, so that the slot
claims its next request at once: the settling round trips (d2…d5, w1…w3) are off its
critical path. Nothing changes for safety: the job's lease is renewed until it is settled,
and a crash before leaves it to recovery as a crash during the handler would.

Each job ends with one outcome, reported once: ``completed``, ``failed`` (retried or
dead-lettered), ``released`` (given back), ``lost`` (taken over) or ``store_error`` (the
settlement could not be written: the request returns once its lease expires).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from s3q.context import message_of
from s3q.errors import JobStateError, LeaseLost
from s3q.handlers import Handler, result_bytes
from s3q.job import Job
from s3q.store import StoreError

__all__ = ["SETTLING", "Runner", "one_line"]

log = logging.getLogger("s3q.worker")

#: Settlements under way per slot: a slot whose job would be one more waits for one to
#: end, so that a slow store slows the slots down instead of piling settlements up (each
#: may wait s3q.batching.LINGER, or a claim's ride, for its commit).
SETTLING = 4

#: Called once per job with its outcome and the handler's seconds.
OnDone = Callable[[Job, str, float], None]


class Runner:
    def __init__(self, handler: Handler, slots: int, on_done: OnDone, *,
                 background: bool = True) -> None:
        self.handler = handler
        self._on_done = on_done
        self._slots, self._background = slots, background
        self._settler: ThreadPoolExecutor | None = None
        self._backlog = threading.BoundedSemaphore(SETTLING * slots)
        self._lock = threading.Lock()
        self._unsettled = 0  # settlements under way (their leases no longer renewed)

    def start(self) -> None:
        """(At a worker run's start.) Settle in the background from now on, if asked to."""
        if self._background:
            self._settler = ThreadPoolExecutor(SETTLING * self._slots, "s3q-settle")

    def shutdown(self) -> None:
        """(At a run's end.) Wait for every settlement under way: decided jobs are settled,
        never given back."""
        if self._settler is not None:
            self._settler.shutdown(wait=True)
            self._settler = None

    def run(self, job: Job, handler_returned: Callable[[Job], None]) -> None:
        """Run the handler on ``job`` (a claimed job not entered yet), call
        ``handler_returned`` once it returned, then settle the job."""
        start = time.monotonic()
        job.__enter__()  # the lease keeper renews it (and writes its view if it runs long)
        outcome = "completed"
        settle: Callable[[], None] | None = None
        try:
            result = self.handler(job)
            if job.settled_as is not None:  # by the handler itself (or given back): as it
                outcome = job.settled_as  # was, whatever interrupted it after that
            elif job.interrupted:
                raise LeaseLost(f"{job.name}: interrupted")
            else:
                settle = functools.partial(job.complete, result_bytes(result))
        except JobStateError:  # given back by a stop while the handler ran (or settled
            outcome = job.settled_as or "released"  # by the handler, then again)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: in a slot thread
            # only the handler raises them (a signal only records a stop), so they fail
            # the attempt as any exception does; given back uncharged, a handler that
            # exits on some request ran it again at once, for ever.
            # Given back or lost while the handler ran: not its fault. (A LeaseLost of the
            # handler's own, its deadline passed (job.check_deadline) while the job is still
            # held, fails the attempt as any exception does: its work was not done, and
            # the job must not be completed.)
            # Settled by the handler itself before it raised (or given back: the breaker's
            # HeldBack, a stop's give-back) is reported as it was settled, whatever came
            # after (the breaker's give-back or a stop's then found it settled).
            if job.lost:
                outcome = "lost"
            elif job.settled_as is not None:
                outcome = job.settled_as
            elif job.interrupted or (isinstance(exc, LeaseLost) and job.finished):
                outcome = "released"
            elif job.finished and isinstance(exc, StoreError):
                # settled by the handler's own side (the breaker's give-back), which failed:
                # nothing written, it returns once its lease expires
                outcome = "store_error"
            else:
                outcome, settle = "failed", functools.partial(job.fail, exc)
                log.warning("handler failed on %s (attempt %d): %s", job.name, job.attempt,
                            one_line(exc), extra={"event": "handler_failed",
                                                  "request": job.name, "attempt": job.attempt})
        elapsed = time.monotonic() - start
        handler_returned(job)
        settler = self._settler
        if settle is None:
            job.__exit__(None, None, None)  # lost or given back: nothing left to write
            self._on_done(job, outcome, elapsed)
        elif settler is None:
            self._begin()
            self._settle(job, settle, outcome, elapsed, None)
        else:
            self._backlog.acquire()
            self._begin()
            try:
                settler.submit(self._settle, job, settle, outcome, elapsed, self._backlog)
            except RuntimeError as exc:  # no thread to be had (at the process's limit)
                log.warning("no settler thread for %s (%s): settled by its slot", job.name,
                            exc, extra={"event": "settler_no_thread", "request": job.name})
                self._settle(job, settle, outcome, elapsed, self._backlog)

    def _settle(self, job: Job, settle: Callable[[], None], outcome: str, elapsed: float,
                backlog: threading.BoundedSemaphore | None) -> None:
        try:
            settle()
        except LeaseLost as exc:
            if job.lost:
                outcome = "lost"
            else:  # refused by its deadline: nothing written, it returns once expired
                outcome = "store_error"
                log.error("could not settle %s in time: %s", job.name, exc,
                          extra={"event": "settle_failed", "request": job.name})
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
            if backlog is not None:
                backlog.release()
            with self._lock:
                self._unsettled -= 1
        self._on_done(job, outcome, elapsed)

    def _begin(self) -> None:
        with self._lock:
            self._unsettled += 1

    @property
    def settling(self) -> bool:
        """Is a settlement under way?"""
        with self._lock:
            return self._unsettled > 0


def one_line(exc: BaseException) -> str:
    """``Type: message``, its first line, at most 300 characters (for a log line); of a
    message of several lines, the last one too (a program's stderr tail: a traceback's
    says what went wrong)."""
    lines = [ln.strip() for ln in f"{type(exc).__name__}: {message_of(exc)}".splitlines()]
    lines = [ln for ln in lines if ln]
    if len(lines) > 1:
        return f"{lines[0][:140]} … {lines[-1][:160]}"
    return lines[0][:300] if lines else type(exc).__name__
