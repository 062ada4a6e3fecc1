"""The failed/ view: list, filter by name glob and error type, group by error type, and the
actions on a selection (requeue, purge).

Cost of one view: failed/ listed up to ``limit`` requests (one LIST per 1,000 on S3), and a
GET of the error record of each listed request not seen before — at most ``read_budget``
per view, 8 in parallel. An error record is cached with the ETag of the failed/ object it
explains (a request that fails again after a requeue is a new object: re-read), so a second
view of 10,000 failed requests costs the LISTs alone. Requests whose record is not read yet
are grouped as "(not read yet)" until later views read them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

from s3q import layout
from s3q.bulk import Undone, each
from s3q.layout import State
from s3q.queue import Queue
from s3q.records import RecordError
from s3q.store import NotFound, ObjectInfo

__all__ = ["FailedIndex", "FailedItem", "FailedView", "Outcome", "purge_failed"]

NOT_READ = "(not read yet)"
NO_RECORD = "(no error record)"


@dataclass(frozen=True, slots=True)
class FailedItem:
    name: str
    etag: str
    failed_at: float  # Last-Modified of failed/NAME (store clock)
    error_type: str
    message: str
    attempts: int | None


@dataclass(frozen=True, slots=True)
class FailedView:
    items: list[FailedItem]  # this page
    total: int  # matching the filters (among those listed)
    listed: int  # failed/ requests listed
    complete: bool  # False: failed/ holds more than the limit
    groups: list[tuple[str, int]]  # error type -> count, most common first (name filter only)
    unread: int  # matching requests whose error record is not read yet
    page: int
    pages: int


@dataclass(slots=True)
class Outcome:
    """What a requeue or purge of a selection did: ``done`` requests requeued / purged,
    ``changed`` left alone (failed again, or gone, since they were listed), and what store
    errors kept it from doing (``undone``: failed, of those the ones whose outcome is
    unknown, and not attempted; as ``s3q requeue`` and ``s3q purge`` report it)."""

    done: int = 0
    changed: int = 0
    undone: Undone = field(default_factory=Undone)


#: ``progress(handled, done)``: the requests handled (done, left alone or failed) and done
#: so far, after each.
Progress = Callable[[int, int], None]


def purge_failed(queue: Queue, name: str, etag: str) -> bool:
    """Delete failed/NAME — only the bytes listed (``If-Match``: a request that failed again
    meanwhile stays) — with its error record: the protocol's purge. False if it changed or
    is gone."""
    return queue.purge(State.FAILED, ObjectInfo(name, etag, -1, 0.0))


class FailedIndex:
    """failed/ as the dashboard shows it, with the error records cached by ETag."""

    def __init__(self, queue: Queue, *, limit: int = 10_000, read_budget: int = 1_000,
                 threads: int = 8) -> None:
        self.queue = queue
        self.limit = limit
        self.read_budget = read_budget
        self.threads = threads
        self._lock = threading.Lock()
        self._errors: dict[str, tuple[str, str, str, int | None]] = {}  # name -> etag, type,
        # message, attempts

    def listing(self) -> tuple[list[ObjectInfo], bool]:
        listed = self.queue.ls(State.FAILED)
        infos = list(islice(listed, self.limit))
        return infos, len(infos) < self.limit or next(listed, None) is None

    def view(self, pattern: str = "*", error_type: str = "", page: int = 1,
             per_page: int = 50) -> FailedView:
        infos, complete = self.listing()
        matching = [i for i in infos if fnmatch.fnmatchcase(i.key, pattern or "*")]
        self._read_errors(matching)
        items = [self._item(i) for i in matching]
        groups = Counter(i.error_type for i in items).most_common()
        if error_type:
            items = [i for i in items if i.error_type == error_type]
        items.sort(key=lambda i: (-i.failed_at, i.name))  # the latest failure first
        pages = max(1, -(-len(items) // per_page))
        page = min(max(1, page), pages)
        return FailedView(items[(page - 1) * per_page: page * per_page], len(items),
                          len(infos), complete, groups,
                          sum(1 for i in items if i.error_type == NOT_READ), page, pages)

    def select(self, pattern: str = "*", error_type: str = "") -> list[FailedItem]:
        """Every listed failed request matching the filters (for "all matching")."""
        return self.view(pattern, error_type, per_page=self.limit).items

    def current(self, names: Iterable[str]) -> list[FailedItem]:
        """The named requests as they are in failed/ now (HEAD each; absent ones left out)."""
        found = []
        for name in names:
            with contextlib.suppress(NotFound):
                info = self.queue.store.head(layout.key(layout.FAILED, name))
                found.append(self._item(ObjectInfo(name, info.etag, info.size,
                                                   info.last_modified)))
        return found

    def requeue(self, items: list[FailedItem], progress: Progress | None = None) -> Outcome:
        """failed/ -> wait/ (Queue.requeue, only the dead letter listed: its ETag), 8 at a
        time. A request's own store error is passed over, an unavailable (or refusing)
        store stops it (:func:`s3q.bulk.each`)."""
        return self._each(items, lambda i: self.queue.requeue(i.name, "s3q-dashboard",
                                                              etag=i.etag), progress)

    def purge(self, items: list[FailedItem], progress: Progress | None = None) -> Outcome:
        """Delete each listed dead letter (:func:`purge_failed`), as :meth:`requeue` does."""
        return self._each(items, lambda i: purge_failed(self.queue, i.name, i.etag), progress)

    def _each(self, items: list[FailedItem], action: Callable[[FailedItem], bool],
              progress: Progress | None) -> Outcome:
        outcome = Outcome()
        handled = 0

        def advance(n: int) -> None:
            nonlocal handled
            handled += n
            if progress is not None:
                progress(handled, outcome.done)

        try:
            for _, ok in each(items, lambda i: i.name, action, threads=self.threads,
                              undone=outcome.undone, advance=advance):
                outcome.done += ok
                outcome.changed += not ok
                if progress is not None:
                    progress(handled, outcome.done)
        finally:
            with self._lock:
                for i in items:
                    self._errors.pop(i.name, None)
        return outcome

    def _item(self, info: ObjectInfo) -> FailedItem:
        with self._lock:
            cached = self._errors.get(info.key)
        if cached is None or cached[0] != info.etag:
            return FailedItem(info.key, info.etag, info.last_modified, NOT_READ, "", None)
        _, kind, message, attempts = cached
        return FailedItem(info.key, info.etag, info.last_modified, kind, message, attempts)

    def _read_errors(self, infos: list[ObjectInfo]) -> None:
        with self._lock:
            todo = [i for i in infos if self._errors.get(i.key, ("",))[0] != i.etag]
        todo = todo[: self.read_budget]
        if not todo:
            return
        with ThreadPoolExecutor(min(self.threads, len(todo))) as pool:
            read = list(pool.map(self._read_one, todo))
        with self._lock:
            for info, entry in zip(todo, read, strict=True):
                self._errors[info.key] = (info.etag, *entry)

    def _read_one(self, info: ObjectInfo) -> tuple[str, str, int | None]:
        try:
            record = self.queue.error_record(info.key)
        except RecordError:
            return "(unreadable error record)", "", None
        if record is None:
            return NO_RECORD, "", None
        error = record.error or {}
        return str(error.get("type") or "Error"), str(error.get("message") or ""), \
            record.attempts
