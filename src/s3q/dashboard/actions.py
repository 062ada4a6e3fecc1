"""The dashboard's actions on failed requests: the selections its confirmation pages showed
(each confirmed once, within CONFIRM_TTL), and the record of each action under "Recent
actions", with the progress of those run in the background."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from s3q.dashboard.failed import FailedItem, Outcome, Progress

__all__ = ["CONFIRM_KEEP", "CONFIRM_TTL", "SYNC_LIMIT", "Action", "Confirmation",
           "Confirmations", "in_background", "problem"]

log = logging.getLogger("s3q.dashboard")

#: Larger selections are requeued / purged in the background, with their progress shown
#: under "Recent actions" (a request's requeue is ~7 store requests: 10,000 take minutes).
SYNC_LIMIT = 100


#: How long a confirmation page can be confirmed (then: look again), and how many unanswered
#: ones are kept (the oldest are forgotten first).
CONFIRM_TTL = 15 * 60.0
CONFIRM_KEEP = 64

#: Requests named in what an action that store errors cut short says it did not do.
NAMED = 10


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a confirmation page showed: the action acts on these items (name and the ETag
    listed then) and on nothing else, whatever failed/ holds when it is confirmed."""

    at: float  # time.monotonic() when shown
    verb: str
    scope: str
    pattern: str
    kind: str
    items: tuple[FailedItem, ...]


class Confirmations:
    """The selections shown on confirmation pages, by a random token the page's form
    carries; each can be confirmed once, within CONFIRM_TTL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Confirmation] = {}

    def add(self, shown: Confirmation) -> str:
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._waiting[token] = shown
            while len(self._waiting) > CONFIRM_KEEP:  # (dicts keep insertion order)
                del self._waiting[next(iter(self._waiting))]
        return token

    def take(self, token: str) -> Confirmation | None:
        """The selection of ``token`` (forgotten now), or None: unknown, used or too old."""
        with self._lock:
            shown = self._waiting.pop(token, None)
        if shown is None or time.monotonic() - shown.at > CONFIRM_TTL:
            return None
        return shown


@dataclass(slots=True)
class Action:
    at: float
    who: str
    what: str
    total: int = 0
    done: int = 0  # succeeded so far
    handled: int = 0  # attempted so far
    running: bool = False
    changed: int = 0  # left alone: changed or gone since listed
    problem: str = ""  # what store errors kept it from doing (:func:`problem`)

    def ended(self, outcome: Outcome, past: str) -> None:
        """Record how it ended (``past``: "requeued")."""
        self.done, self.changed = outcome.done, outcome.changed
        self.problem = problem(outcome, past)


def problem(outcome: Outcome, past: str) -> str:
    """What store errors kept an action from doing, as ``s3q requeue`` and ``s3q purge``
    say it: why and the counts, then the requests not done (outcome unknown where the store
    went away under them) and not attempted, the first NAMED of them. "" if nothing."""
    undone = outcome.undone
    if not undone:
        return ""
    lines = undone.lines(past)
    more = f"; and {len(lines) - NAMED} more" if len(lines) > NAMED else ""
    return (f"{undone.summary(past, outcome.done)}; " + "; ".join(lines[:NAMED]) + more
            + "; doing it again is safe: what is still in failed/ can be selected again (a "
            "requeue cut short is finished by the workers' takeover scan)")


def in_background(action: Action, past: str, work: Callable[[Progress], Outcome],
                  finished: Callable[[], None]) -> None:
    """Run ``work(progress)`` in a thread, its progress shown in ``action``; then
    ``finished()``, and log how it ended (``past``: "requeued")."""
    def progress(handled: int, done: int) -> None:
        action.handled, action.done = handled, done

    def run() -> None:
        try:
            action.ended(work(progress), past)
        except Exception:
            log.exception("dashboard action failed: %s", action.what)
            action.problem = action.problem or "failed (see the dashboard's log)"
        finally:
            action.running = False
            finished()
            log.warning("dashboard action by %s finished: %s: %d of %d done%s", action.who,
                        action.what, action.done, action.total,
                        f"; {action.problem}" if action.problem else "",
                        extra={"event": "dashboard_action_done", "who": action.who,
                               "action": action.what, "done": action.done,
                               "problem": action.problem})

    threading.Thread(target=run, name="s3q-dashboard-action", daemon=True).start()
