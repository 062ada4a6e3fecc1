"""Deletes that travel together: the commits of the completions a process settles within a
moment of each other (d5, ``DEL=e`` of each lease; docs/PROTOCOL.md §4) go to the store in
one DeleteObjects request, each with its own ETag, where the store honours those (the
``batch_conditional_delete`` capability, probed at a worker's start; elsewhere, or with the
``batch_deletes`` setting off, each is its own DeleteObject, sent at once).

Nothing about a delete changes but the request it travels in: its condition is its own, its
answer is its own (a stale ETag is refused with PreconditionFailed, a missing key is
NotFound, ``retried`` says whether the request was sent more than once), and its caller
waits for that answer, as it waits for a DeleteObject's. A request that failed as a whole
fails each of its deletes, as a DeleteObject that failed would (any of them may have been
applied). What it saves is requests: on AWS a DELETE is free but counts against the
prefix's write rate; a server that is a process of its own (moto, in the tests and the
bench) spends most of a delete's cost on the request around it: 8 deletes in one request
cost moto's server about a sixth of what 8 DeleteObject requests cost.

While one request is in flight the next gathers everything that arrives meanwhile (group
commit), and while deletes come together it waits up to :data:`LINGER` for more: one
worker's completions share a request in proportion to its rate. A delete that finds nobody
to share with is a DeleteObject of its own, sent at once from its caller's thread.

A claim's delete of wait/NAME (c2) is on its slot's critical path: it is *urgent*. It never
waits for company, nor behind a request in flight; it takes along the commits waiting then.
While a claim of this process is under way (:meth:`DeleteBatcher.claiming`, around each
:meth:`s3q.claim.Claimer.claim`), a commit waits for that claim's c2 to carry it (up to
:data:`RIDE`). Once the claims under way when it came have ended without a c2, it no longer
waits for a ride: claims begun after it do not hold it (a slot that finds nothing to claim
claims again and again, at the end of a burst or while its queue is idle). A worker's commits are
sent by its settler threads, off the slots' path, while its slots claim their next
requests: a worker with one slot sends one DeleteObjects per job where it sent two
DeleteObject, and a worker of many slots sends its commits with its claims. An urgent
delete keeps its guard (the claim's send-time fence): it is checked before every HTTP
request that carries it, and a request it stops leaves the other deletes to be sent again,
each on its own.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from s3q.store import Guard, Store, StoreError, StoreUnavailable

__all__ = ["LINGER", "RIDE", "DeleteBatcher"]

#: How long (seconds) the first delete of a request waits for others to join it.
LINGER = 0.1
#: How long (seconds) at most a delete waits for a claim under way to carry it.
RIDE = 1.0
#: Keys in one request (S3's limit for DeleteObjects).
MAX_KEYS = 1000


@dataclass(eq=False)  # (each is itself: found in the queue by identity)
class _Delete:
    key: str
    etag: str
    at: float
    guard: Guard | None = None
    urgent: bool = False
    claims: int = 0  # claims begun when it came: those numbered up to this may carry it
    done: bool = False
    error: BaseException | None = None


class DeleteBatcher:
    """Conditional deletes of one store (``store()``: the context's, as it is now), gathered
    into DeleteObjects requests. No thread of its own: a caller that finds no request being
    gathered or sent leads the next one (it sends the deletes waiting then, its own among
    them, and hands each its answer); the others wait for theirs. A leader lingers for
    company only while deletes come together (the last request carried more than one, or
    others wait already): a lone caller, one thread completing jobs one after the other,
    never waits, unless a claim was under way when it came and still is (then it waits for
    that claim's urgent delete to carry it). An urgent delete is sent at once.
    Thread-safe."""

    def __init__(self, store: Callable[[], Store], linger: float = LINGER, *,
                 ride: float = RIDE, enabled: bool = True) -> None:
        self.store = store
        self.linger = linger
        self.ride = ride
        self.enabled = enabled
        self._cond = threading.Condition()
        self._pending: deque[_Delete] = deque()
        self._leading = False
        self._together = False  # the last request carried more than one delete
        self._closed = False
        self._begun = 0  # claims begun (the number of the last one)
        self._under_way: set[int] = set()  # the numbers of the claims under way

    def delete(self, key: str, etag: str, *, guard: Guard | None = None,
               urgent: bool = False) -> None:
        """``DEL=etag key``: returns once it is done; raises what ``store.delete(key,
        if_match=etag, guard=guard)`` would (NotFound, PreconditionFailed, another
        StoreError, what ``guard`` raises). An ``urgent`` delete does not wait for others:
        its caller sends it at once, with the deletes waiting then, even while another
        request is in flight."""
        store = self.store()
        if not (self.enabled and store.capabilities.batch_conditional_delete):
            store.delete(key, if_match=etag, guard=guard)
            return
        item = _Delete(key, etag, time.monotonic(), guard, urgent)
        with self._cond:
            item.claims = self._begun
            self._pending.append(item)
            try:
                if urgent:
                    self._fly(store, self._take())
                while not item.done:  # (urgent too: its key was in that request)
                    if self._leading or item not in self._pending:
                        self._cond.wait()
                    else:
                        self._lead(store)
            except BaseException:
                if item in self._pending:  # never sent: nobody may send it after we left
                    self._pending.remove(item)
                raise
        if item.error is not None:
            error = copy.copy(item.error)  # each caller raises its own (a request that
            raise error from item.error    # failed as a whole failed every delete in it)

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        """A claim is under way: a delete that comes meanwhile may wait for its urgent
        delete to carry it (one that came before it began does not wait for it)."""
        with self._cond:
            self._begun += 1
            number = self._begun
            self._under_way.add(number)
        try:
            yield
        finally:
            with self._cond:
                self._under_way.discard(number)
                self._cond.notify_all()  # (a leader waiting for a ride may go now)

    def _may_ride(self, item: _Delete) -> bool:
        """(Under the lock.) Is a claim that was under way when ``item`` came still under
        way (its c2 may carry it)?"""
        return any(number <= item.claims for number in self._under_way)

    def close(self) -> None:
        """Send what is being gathered at once; later deletes do not wait for others."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _lead(self, store: Store) -> None:
        """(Under the lock.) Gather the next request, send it (not under the lock), hand
        out the answers."""
        self._leading = True
        try:
            if self._together or len(self._pending) > 1 or self._may_ride(self._pending[0]):
                self._gather()
            batch = self._take()
            if batch:  # (else an urgent delete took them all meanwhile)
                self._together = len(batch) > 1
                self._fly(store, batch)
        finally:
            self._leading = False
            self._cond.notify_all()

    def _fly(self, store: Store, batch: list[_Delete]) -> None:
        """(Under the lock.) Send ``batch`` (not under the lock); wake its callers."""
        self._cond.release()
        try:
            self._send(store, batch)
        finally:
            self._cond.acquire()
            self._cond.notify_all()

    def _gather(self) -> None:
        """(Under the lock, leading.) Wait until the oldest delete waited ``linger``
        (:data:`RIDE` while a claim under way when it came still is: that claim's urgent
        delete takes the waiting ones along), the request is full, nothing is left waiting,
        an urgent delete waits (its key was in the last request), or the batcher is
        closed."""
        while (self._pending and not self._closed and len(self._pending) < MAX_KEYS
               and not any(d.urgent for d in self._pending)):
            wait = self.ride if self._may_ride(self._pending[0]) else self.linger
            left = self._pending[0].at + wait - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take(self) -> list[_Delete]:
        """(Under the lock.) The next request's deletes: the oldest, one per key (a key
        deleted twice waits for the next request, so that each gets its own answer)."""
        batch: list[_Delete] = []
        keys: set[str] = set()
        later: deque[_Delete] = deque()
        for item in self._pending:
            if item.key in keys or len(batch) == MAX_KEYS:
                later.append(item)
            else:
                keys.add(item.key)
                batch.append(item)
        self._pending = later
        return batch

    @staticmethod
    def _send(store: Store, batch: list[_Delete]) -> None:
        """(Not under the lock.) One request; each delete gets its own answer. If the
        leader is interrupted (KeyboardInterrupt, SystemExit), every delete of the request
        not answered yet fails with it: none may be taken for done, nor left waiting."""
        try:
            for d, error in _answers(store, [d for d in batch if _in_time(d)]):
                d.error, d.done = error, True
        except BaseException as exc:
            for d in batch:
                if not d.done:
                    d.error, d.done = exc, True
            raise


def _in_time(d: _Delete) -> bool:
    """A delete whose guard fails before its request is not sent: it gets what its guard
    raised."""
    try:
        if d.guard is not None:
            d.guard()
    except Exception as exc:
        d.error, d.done = exc, True
        return False
    return True


def _answers(store: Store, batch: list[_Delete]) -> list[tuple[_Delete, BaseException | None]]:
    """Each delete's answer to one request. The guards of the deletes in it are checked
    before each try of the request. One that stops a try gets what it raised (an earlier
    try may have applied it); the others are sent again, each alone, with its own guard
    (``retried`` if a try was sent). So is a delete the store left unanswered (a key
    answered InternalError or SlowDown: with a guard, :meth:`Store.delete_batch` leaves
    those to the caller, who knows whose guard is whose)."""
    if len(batch) <= 1:
        return [(d, _again(store, d, retried=False)) for d in batch]
    guarded = [(d, d.guard) for d in batch if d.guard is not None]
    tries = [0]
    stopped: list[_Delete] = []

    def guard() -> None:
        for d, check in guarded:
            try:
                check()
            except Exception:
                stopped.append(d)
                raise
        tries[0] += 1

    try:
        results: list[BaseException | None] = list(store.delete_batch(
            [(d.key, d.etag) for d in batch], guard=guard if guarded else None))
        if len(results) != len(batch):
            raise StoreError(f"the store answered {len(results)} of {len(batch)} deletes")
    except Exception as exc:
        if not stopped:  # the request failed as a whole: so did each delete
            return [(d, exc) for d in batch]
        return [(d, exc if d is stopped[0] else _again(store, d, retried=tries[0] > 0))
                for d in batch]
    return [(d, _again(store, d, retried=True)
             if guarded and isinstance(r, StoreUnavailable) else r)
            for d, r in zip(batch, results, strict=True)]


def _again(store: Store, d: _Delete, *, retried: bool) -> BaseException | None:
    """``d`` sent alone, with its own guard. With ``retried``, a request that carried it
    may have applied it: its 404 or 412 may be that request's doing."""
    try:
        store.delete(d.key, if_match=d.etag, guard=d.guard)
    except StoreError as exc:
        exc.retried = exc.retried or retried
        return exc
    except Exception as exc:  # (its own guard)
        return exc
    return None
