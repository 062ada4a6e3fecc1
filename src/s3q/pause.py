"""Pausing the queue: one object, ``.s3q/paused``, that every worker looks at before it
claims (``s3q pause`` / ``s3q resume`` / the dashboard's buttons).

While the object exists, workers claim nothing — neither waiting requests nor the expired
leases of dead workers: their takeover scan does not run — and the jobs already running
finish normally. Submitting still
works. The object is JSON: ``{"v": 1, "by": WHO, "at": EPOCH, "reason": TEXT}``.

Cost: :class:`PauseGate` asks the store with one HEAD (a class-B request, a tenth of a
LIST's price) at most once per poll of the worker and at most once per ``max_age`` second,
whatever the number of slots: an idle worker adds one HEAD to each poll (its poll already
costs a LIST of wait/), a busy worker at most one HEAD a second.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from s3q.store import NotFound, Store, StoreError

__all__ = ["PAUSE_KEY", "PauseGate", "PauseState", "pause", "pause_state", "resume"]

log = logging.getLogger("s3q.pause")

#: The object whose presence pauses the queue.
PAUSE_KEY = ".s3q/paused"


@dataclass(frozen=True, slots=True)
class PauseState:
    """Who paused the queue, when (their clock; ``since`` by the store's) and why."""

    by: str
    at: float
    reason: str
    since: float  # the object's Last-Modified (store clock)

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at, "reason": self.reason, "since": self.since}


def pause(store: Store, *, by: str | None = None, reason: str = "") -> PauseState:
    """Pause the queue (again: the new ``by``/``reason`` replace the old ones)."""
    who = by or f"{socket.gethostname()}"
    body = json.dumps({"v": 1, "by": who, "at": time.time(), "reason": reason[:500]},
                      ensure_ascii=False).encode()
    info = store.put(PAUSE_KEY, body)
    return PauseState(who, time.time(), reason[:500], info.last_modified)


def resume(store: Store) -> bool:
    """Resume the queue. False if it was not paused."""
    try:
        store.head(PAUSE_KEY)
    except NotFound:
        return False
    store.delete(PAUSE_KEY)
    return True


def pause_state(store: Store) -> PauseState | None:
    """The pause in force, or None (one GET)."""
    try:
        body, info = store.get(PAUSE_KEY)
    except NotFound:
        return None
    try:
        data = json.loads(body)
        return PauseState(str(data.get("by", "")), float(data.get("at", 0.0)),
                          str(data.get("reason", "")), info.last_modified)
    except (ValueError, AttributeError, TypeError, RecursionError):  # by hand: a pause
        return PauseState("", 0.0, "(unreadable pause record)", info.last_modified)


class PauseGate:
    """Is the queue paused? Asked by every slot before each claim; answers from one HEAD
    at most every ``max_age`` seconds, shared by the slots. A store error keeps the last
    answer (a worker that cannot reach the store cannot claim anyway)."""

    def __init__(self, store: Store, max_age: float = 5.0) -> None:
        self._store = store
        self._max_age = max_age
        self._lock = threading.Lock()
        self._paused = False
        self._checked = float("-inf")  # monotonic time of the last answer
        self.checks = 0  # HEADs sent (for tests and the bench)

    @property
    def last(self) -> bool:
        """The last answer, without asking."""
        return self._paused

    def paused(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked < self._max_age:
                return self._paused
            self.checks += 1
            try:
                self._store.head(PAUSE_KEY)
                now = True
            except NotFound:
                now = False
            except StoreError as exc:
                log.warning("cannot read the pause flag: %s", exc,
                            extra={"event": "pause_check_failed"})
                now = self._paused
            if now != self._paused:
                log.warning("queue %s: %s", "paused" if now else "resumed",
                            "claiming nothing until it is resumed" if now else "claiming again",
                            extra={"event": "paused" if now else "resumed"})
            self._paused = now
            self._checked = time.monotonic()
            return now
