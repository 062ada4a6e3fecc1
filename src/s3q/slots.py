"""The slot threads of one run of a worker (:mod:`s3q.worker`): how many have not ended
(the last to end wakes the worker's main thread), and the bounded wait for them when the
worker stops."""

from __future__ import annotations

import threading
import time

__all__ = ["SLOTS_JOIN", "Slots", "join_slots"]

#: Seconds a stopping worker waits, in all, for its slots to return once their jobs were
#: given back (a handler in a thread cannot be stopped: its daemon thread is left).
SLOTS_JOIN = 10.0


class Slots:
    """The slot threads of one run that have not ended; the last to end wakes the main
    thread. (One per run: a slot left over from an earlier run counts down its own.)"""

    def __init__(self, count: int, woken: threading.Event) -> None:
        self.left = count
        self._woken = woken
        self._lock = threading.Lock()

    def ended(self) -> None:
        with self._lock:
            self.left -= 1
            if not self.left:
                self._woken.set()


def join_slots(threads: list[threading.Thread]) -> None:
    """Wait for ``threads`` at most SLOTS_JOIN seconds in all (not each)."""
    end = time.monotonic() + SLOTS_JOIN
    for t in threads:
        t.join(timeout=max(0.0, end - time.monotonic()))
