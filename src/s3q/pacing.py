"""pacing: when a worker's slots claim (:class:`Pacer`).

While the queue is busy every slot claims freely. Once a claim finds nothing the worker is
idle: its slots poll one at a time, at a shared interval that grows (0.2 s, doubling, with
jitter) up to ``poll_interval``, never beyond the scan interval, so that an idle worker
costs one LIST per poll whatever its concurrency. A claim that found requests but lost each
to another worker is no sign of an idle queue: the slot claims again after a short pause
(:meth:`Pacer.raced`), up to :data:`RACE_RETRIES` times in a row before the worker counts as
idle. A wake (:meth:`Pacer.wake`: an S3 event
named a request, or a scan released some) lets that many slots claim at once. While an
event source works, the listing is only a safety net and comes every
``events_list_interval`` (jittered, without a ramp).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["RACE_PAUSE", "RACE_RETRIES", "Pacer", "Turn"]

#: Claims in a row that may lose every candidate to other workers before the worker counts as
#: idle; the n-th is retried after up to RACE_PAUSE·2^n seconds (jittered).
RACE_RETRIES = 4
RACE_PAUSE = 0.025

#: How a slot came to claim: the queue is busy (claim freely), the idle poll (one slot at a
#: time), or a wake (an event named a request, a scan released some).
Turn = Literal["busy", "poll", "woken"]


class Pacer:
    def __init__(self, *, poll_interval: float, scan_interval: float,
                 events_list_interval: float,
                 events_healthy: Callable[[], bool] | None = None,
                 rng: random.Random | None = None) -> None:
        self._longest = min(poll_interval, scan_interval)
        self._events_list_interval = events_list_interval
        self._events_healthy = events_healthy
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._idle = 0  # consecutive polls that found nothing (shared by the slots)
        self._next_poll = 0.0  # monotonic time of the next poll while idle
        self._polling = False  # one slot polls while idle
        self._wakes = 0  # claims a wake asked for, not yet begun
        self._races = 0  # claims in a row that lost every candidate (reset by a job found)

    def turn(self) -> Turn | None:
        """May this slot claim now, and why? None: it waited a little; ask again."""
        with self._cond:
            if self._wakes > 0:
                self._wakes -= 1
                return "woken"
            if self._idle == 0:
                return "busy"
            delay = self._next_poll - time.monotonic()
            if self._polling or delay > 0:
                self._cond.wait(timeout=min(max(delay, 0.05), 0.5))
                return None
            self._polling = True
            return "poll"

    def claimed(self, turn: Turn, *, found: bool, named: bool = False) -> float | None:
        """The claim of a ``turn`` found a job or not; ``named``: it was the request an
        event named (no sign of a backlog: the idle plan stays). Returns the idle sleep
        before the next poll when it found nothing (for the log), else None."""
        with self._cond:
            if turn == "poll":
                self._polling = False
            if found:
                self._races = 0
            sleep = None
            if not (turn == "woken" and found and named):
                self._idle = 0 if found else self._idle + 1
                sleep = self.idle_sleep(self._idle) if self._idle else 0.0
                self._next_poll = time.monotonic() + sleep
            self._cond.notify_all()
            return None if found else sleep

    def raced(self, turn: Turn) -> float | None:
        """The claim of ``turn`` found requests in wait/ but lost each to another worker: a
        busy queue. Returns the pause after which the slot claims again, without asking
        :meth:`turn` (a poll turn is given back), or None when RACE_RETRIES claims in a row
        lost their races: report the claim with :meth:`claimed` (found nothing)."""
        with self._cond:
            if self._races >= RACE_RETRIES:
                return None
            self._races += 1
            if turn == "poll":
                self._polling = False
                self._cond.notify_all()
            return self._rng.uniform(0, RACE_PAUSE * 2 ** self._races)

    def wake(self, claims: int = 1) -> None:
        """Let ``claims`` slots claim at once, idle or not. Thread-safe."""
        with self._cond:
            self._wakes += claims
            self._cond.notify_all()

    @property
    def wakes(self) -> int:
        """Claims asked for and not yet begun."""
        with self._cond:
            return self._wakes

    def idle_sleep(self, idle: int) -> float:
        """The sleep after ``idle`` empty polls in a row: exponential backoff with jitter,
        never longer than the scan interval (expired leases of dead workers are found in
        time); with a working event source, every ``events_list_interval``."""
        if self._events_healthy is not None and self._events_healthy():
            longest = self._events_list_interval
            return self._rng.uniform(longest / 2, longest)
        cap = min(self._longest, 0.2 * 2 ** min(idle, 10))
        return self._rng.uniform(cap / 2, cap)
