"""The walk of wait/ for one process's claims (:mod:`s3q.claim`): it lists wait/ a page at
a time from a cursor that advances through the keyspace, and hands the requests on it out
one by one, to every claiming thread of the process: the worker's share of them
(:mod:`s3q.shares`; the others' only from a page with none of its own), from a random one
(so racing workers rarely want the same key). Pages with no request on them do not count as a
turn: a claim walks past up to :data:`WALK_PAGES` of them. It has a lock of its own, which
it holds while it lists: the names offered to the claimer (by events, by the scan) do not
wait for a walk. It also keeps the requests this process found it may not read
(:meth:`WaitWalk.unreadable`): skipped for a while, and named to a burst's outlook.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator

from s3q import layout
from s3q.context import Context
from s3q.records import CLOCK_MARGIN
from s3q.store import ObjectInfo, Page, resume_after

__all__ = ["UNREADABLE_RETRY", "UNREADABLE_RETRY_MAX", "WALK_PAGES", "WaitWalk"]

log = logging.getLogger("s3q")

#: Pages of wait/ one claim walks past while they hold no request (objects the filter leaves
#: out: the seed's producers put other files next to their requests), before it gives up
#: for this poll: a request behind thousands of them is found in one poll, not one page
#: per poll. (Listing costs what it costs: an idle worker lists such pages at every poll.)
WALK_PAGES = 100

#: Seconds a request this process may not read (an archived storage class, SSE-C, another
#: account's object, a lease it may not read) is skipped before it is tried again; doubled
#: at each failure of the same bytes, up to UNREADABLE_RETRY_MAX (one GET an hour each).
UNREADABLE_RETRY = 60.0
UNREADABLE_RETRY_MAX = 3600.0


class WaitWalk:
    """The listing of wait/ shared by the claiming threads of one process."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._candidates: deque[ObjectInfo] = deque()
        self._contended = False  # a candidate was found taken: the page is stale
        self._cursor: str | None = None
        self._lists = 0  # LISTs of wait/ sent (each one's number)
        self._emptied = 0  # the number of the last that found wait/ empty
        #: name -> (etag, until, since): store times
        self._skip: dict[str, tuple[str, float, float]] = {}
        self._refused: set[str] = set()  # names never claimed (too long, unusable): reported once
        self._unreadable: dict[str, tuple[str, str, float]] = {}  # name -> (etag, why, wait)

    def began(self) -> int:
        """The number of LISTs sent so far: a claim reads it when it begins."""
        return self._lists

    def contended(self, name: str) -> None:
        """A candidate, NAME, was found taken (claimed, changed or gone): the rest of the
        page is stale; the next candidates come from a fresh LIST (and when NAME was in this
        worker's share, it looks at the fleet again: :meth:`s3q.shares.Shares.missed`)."""
        self._contended = True
        self.ctx.shares.missed(name)

    def skip(self, name: str, etag: str, until: float) -> None:
        """Leave wait/NAME as listed (``etag``) out of the listings until store time
        ``until`` (held by another worker, or a retry not due yet), or until the store's
        clock reads earlier than now (set back: the skip would last as much longer)."""
        self._skip[name] = (etag, until, self.ctx.store.now())

    def refuse(self, name: str, why: str, event: str) -> None:
        """A name in wait/ that matches the filter but is never claimed: reported once (the
        name shown quoted and escaped: it may hold any character)."""
        if name not in self._refused:
            self._refused.add(name)
            log.error("wait/%r: %s; it is never claimed: rename it", name, why,
                      extra={"event": event, "request": name})

    def unreadable(self, name: str, etag: str, why: str) -> None:
        """wait/NAME as listed (``etag``) could not be claimed: the store refused to read
        it, or its lease (``why``: that error), with an error of its own, not an outage. It
        stays where it is, skipped for :data:`UNREADABLE_RETRY` seconds, twice as long at
        each failure of the same bytes; said once (an ERROR) until its bytes or the error
        change, then at DEBUG. A burst leaves it (:meth:`unreadable_now`)."""
        last = self._unreadable.get(name)
        again = last is not None and last[0] == etag
        wait = min(2 * last[2], UNREADABLE_RETRY_MAX) if again and last else UNREADABLE_RETRY
        self._unreadable[name] = (etag, why, wait)
        self.skip(name, etag, self.ctx.store.now() + wait)
        level = logging.DEBUG if again and last and last[1] == why else logging.ERROR
        log.log(level, "wait/%r cannot be claimed: %s; it stays in wait/, tried again in "
                "%.0fs (an archived storage class: restore it; SSE-C or another account's "
                "object: upload it again readable by this worker)", name, why, wait,
                extra={"event": "request_unreadable", "request": name, "reason": why,
                       "seconds": wait})

    def claimed(self, name: str) -> None:
        """NAME was claimed (or is gone): it is readable after all."""
        self._unreadable.pop(name, None)

    def unreadable_now(self) -> dict[str, tuple[str, str]]:
        """Requests found unreadable: name -> (the ETag listed then, why)."""
        return {name: (etag, why) for name, (etag, why, _) in list(self._unreadable.items())}

    def candidates(self, began: int) -> Iterator[ObjectInfo]:
        """Candidates from wait/, a page at a time; each page is shared by the threads of
        this process. A page is walked in order from a random key, wrapping (a rotation, not
        a shuffle: two workers on one page meet only once one reaches where the other
        started, ~page/workers claims in, where shuffled pages collide after ~√(2·page/
        workers)). A claim that finds its candidate taken drops the rest of the page: the
        next ones come from a fresh LIST. Nor does a claim list wait/ when a LIST *sent*
        after it began (numbered above ``began``, the count it read first) found wait/
        empty: that LIST saw every request submitted before the claim began, as its own
        would have. The threads of a process that find nothing at once (the end of a burst,
        a queue emptied), waiting in turn for the lock, share it instead of each making
        one."""
        refills = 0
        while True:
            with self._lock:
                if self._contended:
                    self._contended = False
                    self._candidates.clear()
                if not self._candidates:
                    if refills == 2 or self._emptied > began:
                        return
                    start = self._cursor
                    self._refill()
                    refills += 1
                    walked, wrapped = 1, start is None
                    # a page with no request on it (objects the filter leaves out, names
                    # skipped for now) costs no turn: walk on, up to WALK_PAGES of them,
                    # wrapping at the end of wait/ once, up to where this walk began
                    while not self._candidates and walked < WALK_PAGES:
                        if self._emptied == self._lists:
                            break  # wait/ is empty
                        if self._cursor is None:
                            if wrapped:
                                break
                            wrapped = True
                        elif wrapped and start is not None and self._cursor >= start:
                            break
                        prev = self._cursor
                        self._refill()
                        walked += 1
                        if prev is not None and self._cursor is not None and self._cursor < prev:
                            wrapped = True  # (_refill wrapped: nothing was after prev)
                    if not self._candidates:
                        return
                info = self._candidates.popleft()
            yield info

    def _refill(self) -> None:
        """(Under self._lock.) Fetch the next page of wait/ into the candidate buffer."""
        ctx = self.ctx
        self._lists += 1
        number = self._lists
        page = ctx.store.list_page(layout.WAIT, start_after=self._cursor,
                                   limit=ctx.config.page_size)
        self._forget_gone(self._cursor, page)
        if not page.items and self._cursor is not None:  # wrapped around
            page = ctx.store.list_page(layout.WAIT, limit=ctx.config.page_size)
            self._forget_gone(None, page)
        if not page.items:
            self._emptied = number
        self._cursor = (resume_after(page.items[-1].key) if page.truncated and page.items
                        else None)
        now = ctx.store.now()
        for name, v in list(self._skip.items()):  # (a copy: claims skip outside this lock)
            if not v[1] > now >= v[2] - CLOCK_MARGIN and self._skip.get(name) is v:
                self._skip.pop(name, None)
        mine: list[ObjectInfo] = []
        others: list[ObjectInfo] = []
        for info in page.items:
            name = layout.name_of(layout.WAIT, info.key)
            if not ctx.is_request(name):
                if name not in self._refused and (
                        why := ctx.unusable(name, info.size)) is not None:
                    self.refuse(name, f"matches the filter but {why}", "name_unusable")
                continue
            skip = self._skip.get(name)
            if not (skip and skip[0] == info.etag) and name not in self._refused:
                (mine if ctx.shares.mine(name) else others).append(info)
        fresh = mine or others  # (the others' shares: a page with nothing of its own)
        start = ctx.rng.randrange(len(fresh)) if fresh else 0  # see candidates
        self._candidates.extend(fresh[start:] + fresh[:start])

    def _forget_gone(self, after: str | None, page: Page) -> None:
        """(Under self._lock.) Forget the names refused or found unreadable that ``page``,
        listed from ``after``, shows gone from wait/ (claimed by a worker that may read it,
        deleted, renamed): a page lists every key of its range, from ``after`` (exclusive)
        to its last key (to the end of wait/ when it is the last page). Else a process that
        runs for months keeps every such name it ever met, and a name refused once is not
        said again when a new object of that name comes."""
        last = page.items[-1].key if page.truncated and page.items else None
        if page.truncated and last is None:
            return
        there = ({i.key for i in page.items} | {k for k, _ in page.settling}
                 | {o.key for o in page.left_out})

        def gone(name: str) -> bool:
            key = layout.key(layout.WAIT, name)
            return ((after is None or key > after) and (last is None or key <= last)
                    and key not in there)

        # (copies first: a claim may add to them meanwhile, outside this lock)
        for name in [n for n in list(self._unreadable) if gone(n)]:
            self._unreadable.pop(name, None)
        self._refused.difference_update([n for n in list(self._refused) if gone(n)])
