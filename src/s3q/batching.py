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
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from s3q.store import Store, StoreError

__all__ = ["LINGER", "DeleteBatcher"]

#: How long (seconds) the first delete of a request waits for others to join it.
LINGER = 0.1
#: Keys in one request (S3's limit for DeleteObjects).
MAX_KEYS = 1000


@dataclass(eq=False)  # (each is itself: found in the queue by identity)
class _Delete:
    key: str
    etag: str
    at: float
    done: bool = False
    error: BaseException | None = None


class DeleteBatcher:
    """Conditional deletes of one store (``store()``: the context's, as it is now), gathered
    into DeleteObjects requests. No thread of its own: a caller that finds no request being
    gathered or sent leads the next one (it sends the deletes waiting then, its own among
    them, and hands each its answer); the others wait for theirs. A leader lingers for
    company only while deletes come together (the last request carried more than one, or
    others wait already): a lone caller, one thread completing jobs one after the other,
    never waits. Thread-safe."""

    def __init__(self, store: Callable[[], Store], linger: float = LINGER, *,
                 enabled: bool = True) -> None:
        self.store = store
        self.linger = linger
        self.enabled = enabled
        self._cond = threading.Condition()
        self._pending: deque[_Delete] = deque()
        self._leading = False
        self._together = False  # the last request carried more than one delete
        self._closed = False

    def delete(self, key: str, etag: str) -> None:
        """``DEL=etag key``: returns once it is done; raises what ``store.delete(key,
        if_match=etag)`` would (NotFound, PreconditionFailed, another StoreError)."""
        store = self.store()
        if not (self.enabled and store.capabilities.batch_conditional_delete):
            store.delete(key, if_match=etag)
            return
        item = _Delete(key, etag, time.monotonic())
        with self._cond:
            self._pending.append(item)
            try:
                while not item.done:
                    if self._leading:
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
            if self._together or len(self._pending) > 1:
                self._gather()
            batch = self._take()
            self._together = len(batch) > 1
            self._cond.release()
            try:
                self._send(store, batch)
            finally:
                self._cond.acquire()
        finally:
            self._leading = False
            self._cond.notify_all()

    def _gather(self) -> None:
        """(Under the lock, leading.) Wait until the oldest delete waited ``linger``, the
        request is full, or the batcher is closed."""
        while not self._closed and len(self._pending) < MAX_KEYS:
            left = self._pending[0].at + self.linger - time.monotonic()
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
        fails with it: none may be taken for done."""
        try:
            if len(batch) == 1:
                store.delete(batch[0].key, if_match=batch[0].etag)
                results: list[BaseException | None] = [None]
            else:
                results = list(store.delete_batch([(d.key, d.etag) for d in batch]))
            if len(results) != len(batch):
                raise StoreError(f"the store answered {len(results)} of {len(batch)} "
                                 "deletes")
        except Exception as exc:  # the request failed as a whole: so did each delete
            results = [exc] * len(batch)
        except BaseException as exc:  # the leader is interrupted: so is its request
            results = [exc] * len(batch)
            raise
        finally:
            for item, error in zip(batch, results, strict=True):
                item.error, item.done = error, True
