"""Operations over many requests (requeue, purge, recover of a selection; the CLI's
``requeue``, ``recover`` and ``purge``, the dashboard's actions, :meth:`s3q.Queue.requeue_all`)
when store errors keep them from doing all of it.

One request's own store error (access denied on its key) is recorded and the operation goes
on with the others; an unavailable store (:class:`~s3q.store.StoreUnavailable`:
unreachable, or failing after the backend's retries) stops it, as every other request would
fail the same way, and so does the store refusing every request whatever its key
(:class:`~s3q.store.StoreRefused`: credentials rejected, no such bucket).
Either way what it did is kept, and :class:`Undone` tells what it did not: the requests
that failed (and of those, the ones whose outcome is unknown: the store went away under
them), and those it did not attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from s3q.store import StoreError, StoreRefused, StoreUnavailable, of_its_own

__all__ = ["BulkIncomplete", "BulkStopped", "Undone", "each", "incomplete"]

T = TypeVar("T")


@dataclass(slots=True)
class Undone:
    """What an operation over many requests did not do."""

    failed: dict[str, str] = field(default_factory=dict)  # name -> its store error
    not_attempted: list[str] = field(default_factory=list)
    stopped: StoreError | None = None  # the unavailable (or refusing) store that ended the run
    #: of ``failed``: those the store went away under (every one in flight then): each may
    #: or may not have taken effect
    unknown: set[str] = field(default_factory=set)
    unlisted: bool = False  # stopped in its listing: requests after it were not looked at

    def __bool__(self) -> bool:
        return bool(self.failed or self.stopped is not None)

    def summary(self, verb: str, done: int) -> str:
        """Why it is not all done, and the counts: "stopped, store unavailable (ERROR): 2
        requeued, 1 failed, 3 not attempted". ``verb``: "requeued"; ``done``: how many."""
        counts = (f"{done} {verb}, {len(self.failed)} failed, {len(self.not_attempted)} "
                  "not attempted")
        if self.unlisted:
            counts += ", the requests it had not listed yet not looked at"
        stopped = self.stopped
        why = ("store errors of some requests (it went on with the others)" if stopped is None
               else f"stopped, store unavailable ({stopped})"
               if isinstance(stopped, StoreUnavailable)
               else f"stopped, the store refused ({stopped})" if isinstance(stopped, StoreRefused)
               else f"stopped, store error ({stopped})")
        return f"{why}: {counts}"

    def lines(self, verb: str) -> list[str]:
        """One line per request not done (with its error; "outcome unknown" for those the
        store went away under) and per request not attempted."""
        unknown = " (outcome unknown: the store went away)"
        return [f"not {verb}{unknown if name in self.unknown else ''}: {name}: {error}"
                for name, error in self.failed.items()] + [
                    f"not attempted: {name}" for name in self.not_attempted]

    def json(self) -> dict[str, object]:
        """The ``--json`` fields (always there, empty when all was done)."""
        return {"failed": [{"name": n, "error": e, "outcome_unknown": n in self.unknown}
                           for n, e in self.failed.items()],
                "not_attempted": list(self.not_attempted)}


def each(items: Iterable[T], key: Callable[[T], str], action: Callable[[T], bool], *,
         threads: int, undone: Undone, advance: Callable[[int], None] | None = None,
         round_size: int | None = None) -> Iterator[tuple[T, bool]]:
    """``action(item)`` for every item, ``threads`` at a time (``round_size`` items listed
    ahead at most: memory stays bounded while ``items`` streams), yielding (item, its
    result) in order. A store error of an item's own goes into ``undone.failed`` and the
    run goes on; an unavailable store ends it, as does one refusing every request (that
    item failed; its outcome known: the refused request did nothing): what was not
    started yet is cancelled and goes into ``undone.not_attempted``, with the rest of
    ``items`` if it is a list (else ``undone.unlisted``), and every item the store went
    away under (those in flight then) into ``undone.unknown``. An error of the listing
    itself ends it too. ``advance(1)`` after each item done or failed (a progress bar)."""
    it = iter(items)
    advance = advance or (lambda _: None)
    stop = threading.Event()

    def attempt(item: T) -> bool:
        if stop.is_set():  # (another thread's store just went away)
            raise _NotAttempted
        try:
            return action(item)
        except StoreError as e:
            if not of_its_own(e):  # unavailable, or refusing every request
                stop.set()  # at once: no other request is started
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(threads, 32))) as pool:
        while undone.stopped is None:
            try:
                batch = _take(it, round_size)
            except StoreError as e:  # the listing failed: what it had not listed is unknown
                undone.stopped, undone.unlisted = e, True
                return
            if not batch:
                return
            futures: list[Future[bool]] = [pool.submit(attempt, i) for i in batch]
            for item, future in zip(batch, futures, strict=True):
                error = None if future.cancelled() else future.exception()
                if future.cancelled() or isinstance(error, _NotAttempted):
                    undone.not_attempted.append(key(item))
                    continue
                if error is None:
                    advance(1)
                    yield item, future.result()
                    continue
                if not isinstance(error, StoreError):
                    raise error  # a bug: let it show
                undone.failed[key(item)] = " ".join(str(error).split())
                advance(1)
                if of_its_own(error):
                    continue
                if isinstance(error, StoreUnavailable):  # (not a refusal: nothing done)
                    undone.unknown.add(key(item))  # (and each other one it went away under)
                if undone.stopped is None:
                    undone.stopped = error
                    for f in futures:
                        f.cancel()  # (those already running finish, and are reported)
        if isinstance(items, list):
            undone.not_attempted += [key(i) for i in it]
        else:
            undone.unlisted = True


class _NotAttempted(Exception):
    pass


def _take(it: Iterator[T], n: int | None) -> list[T]:
    batch: list[T] = []
    for item in it:
        batch.append(item)
        if n is not None and len(batch) >= n:
            break
    return batch


class BulkIncomplete(StoreError):
    """An operation over many requests that store errors kept from doing all of it:
    ``done`` names the requests it did, ``undone`` what it did not (:class:`Undone`)."""

    def __init__(self, what: str, verb: str, done: Sequence[str], undone: Undone) -> None:
        self.done, self.undone = list(done), undone
        super().__init__(f"{what}: {undone.summary(verb, len(self.done))}")


class BulkStopped(BulkIncomplete, StoreUnavailable):
    """A :class:`BulkIncomplete` that an unavailable store ended: caught as the
    :class:`~s3q.store.StoreUnavailable` it was too."""


def incomplete(what: str, verb: str, done: Sequence[str], undone: Undone) -> BulkIncomplete:
    """The error to raise for ``undone`` (:class:`BulkStopped` when the store went away)."""
    cls = BulkStopped if isinstance(undone.stopped, StoreUnavailable) else BulkIncomplete
    return cls(what, verb, done, undone)
