"""When a burst worker (``s3q worker --burst``) ends: once nothing is left that could become
claimable. Every slot but one ends as soon as it finds nothing to claim; the last one waits
for what will become claimable — retries' backoffs, and leases nobody renews (a dead
worker's, or the worker's own that a failed settlement left) that will expire — looking
again after 0.2 s, doubling up to 5 s (or when the first is due, if sooner). A store that
fails is tried again, as the worker polls; one that has answered nothing but errors for
``patience`` seconds ends the burst early (:attr:`Burst.gave_up` says why; the command
exits non-zero: requests may still wait), and so does a circuit breaker that keeps tripping."""

from __future__ import annotations

import logging
import threading
import time

from s3q.queue import Outlook, Queue
from s3q.running import one_line

__all__ = ["Burst"]

log = logging.getLogger("s3q.worker")

#: The longest wait (seconds) of the last slot before it looks at the queue again.
LONGEST_LOOK = 5.0


class Burst:
    """The state of one burst run of a worker's ``slots``. Thread-safe."""

    def __init__(self, queue: Queue, worker_id: str, slots: int, patience: float) -> None:
        self._queue, self._worker_id, self._patience = queue, worker_id, patience
        self._lock = threading.Lock()
        self._slots = slots  # slots still running
        self._outlook: Outlook | None = None  # what the last slot saw last
        self._look = 0.1  # half the last slot's first wait before it looks again
        self._failing_since: float | None = None  # (monotonic) the store's first error
        #: Why the burst ended early (its store kept failing), or None.
        self.gave_up: str | None = None

    def store_answered(self) -> None:
        """A claim or look got its answers: the store works."""
        with self._lock:
            self._failing_since = None

    def store_failed(self, exc: BaseException) -> bool:
        """A claim or look failed: go on trying (True), or end the burst (False: its store
        has answered nothing but errors for ``patience`` seconds)?"""
        now = time.monotonic()
        with self._lock:
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since < self._patience:
                return True
            self.gave_up = (f"the store answered nothing but errors for "
                            f"{self._patience:g}s (the last: {one_line(exc)})")
        log.error("burst: %s; ending it (requests may still wait)", self.gave_up,
                  extra={"event": "burst_gave_up"})
        return False

    def held_back(self) -> None:
        """The worker's claims are held back for good (its circuit breaker tripped again
        and again: the handler keeps failing): the burst ends, as an error, rather than
        wait out pause after pause for ever."""
        with self._lock:
            if self.gave_up is not None:
                return
            self.gave_up = ("its claims are held back: the circuit breaker tripped "
                            "again and again (the handler keeps failing)")
        log.error("burst: %s; ending it (requests may still wait)", self.gave_up,
                  extra={"event": "burst_gave_up"})

    def job_started(self) -> None:
        """A slot found a job: the next wait starts short again."""
        with self._lock:
            self._look = 0.1

    def waits(self, *, busy: bool, stopping: threading.Event) -> bool:
        """Nothing to claim now: should this slot wait (True, having waited) or end? The
        worker's own leases are skipped while ``busy`` (one of its jobs runs or settles:
        they are its business, and it looks again once they are settled); otherwise one a
        failed settlement left is waited for, like any lease nobody renews."""
        with self._lock:
            if self._slots > 1:
                self._slots -= 1
                return False
        try:
            outlook = self._outlook = self._queue.outlook(
                self._outlook, mine=self._worker_id if busy else None)
        except Exception as exc:  # the last slot must not die: the burst would end early
            if not self.store_failed(exc):
                return False
            wait = self._longer(LONGEST_LOOK)
            log.warning("burst: cannot tell what is left (%s); looking again in %.1fs",
                        one_line(exc), wait, extra={"event": "burst_look_failed"})
            stopping.wait(wait)
            return True
        self.store_answered()
        if outlook.next_due is None and busy:
            # a settlement of its own is under way: one that fails leaves its lease, which
            # only a look made after it ended (not busy) waits for; it ends within moments
            wait = self._longer(1.0)
            log.debug("burst: waiting for this worker's settlements; looking again in %.1fs",
                      wait, extra={"event": "burst_waiting", "count": 0,
                                   "seconds": round(wait, 2)})
            stopping.wait(wait)
            return True
        if outlook.next_due is None:
            for name, why in outlook.left:
                log.info("burst done; left %s: %s", name, why,
                         extra={"event": "burst_left", "request": name, "reason": why})
            return False
        # look again when the first is due, or sooner: a lease just written is most often
        # a job that ends within moments (its lease then goes), not one to wait out
        wait = self._longer(max(outlook.next_due, 0.2))
        log.info("burst: %d request(s) due in %.1fs (%s); looking again in %.1fs",
                 len(outlook.waiting), outlook.next_due, ", ".join(outlook.waiting[:3]), wait,
                 extra={"event": "burst_waiting", "count": len(outlook.waiting),
                        "seconds": round(wait, 2)})
        stopping.wait(wait)
        return True

    def _longer(self, due: float) -> float:
        """The next wait: twice the last one, at most ``due`` and LONGEST_LOOK."""
        with self._lock:
            self._look = min(due, self._look * 2, LONGEST_LOOK)
            return self._look
