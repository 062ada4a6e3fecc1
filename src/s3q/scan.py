"""The scan (docs/PROTOCOL.md §4, takeover, step 0): it finds what to take over (expired
leases, orphans in processing/) and due retries left unclaimed whose view it restores;
:mod:`s3q.takeover` does each. A :class:`Scanner` runs it at most once per
``scan_interval`` per process, whichever thread asks first: a worker's scanner thread (so
that a busy worker still takes over dead workers' requests), or a claim (so that a library
user's claim loop does too); with a scanner role, only in the process holding it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from s3q import layout, leases
from s3q.claim import Claimer
from s3q.context import Context
from s3q.records import CLOCK_MARGIN, Intent, Lease
from s3q.registry import published_lease_ttl
from s3q.store import ObjectInfo, StoreError, StoreRefused, StoreUnavailable, list_all, of_its_own
from s3q.takeover import MakeJob, Recovered, adopt_orphan, restore_view, take_over, went_away

if TYPE_CHECKING:
    from s3q.scanrole import ScannerRole

__all__ = ["RECHECK", "Scanner"]

log = logging.getLogger(__name__)

#: A due retry lease left unclaimed has its view looked at again after this many scans.
RECHECK = 10


def _not_taken_over(done: Recovered, name: str, exc: StoreError,
                    what: str = "takeover") -> None:
    done.failed[name] = str(exc)
    log.warning("%s of %s failed: %s", what, name, exc,
                extra={"event": "scan_failed", "request": name})


class Scanner:
    """Finds expired leases, orphans and due retries left unclaimed (whose view it
    restores); at most one scan per ``scan_interval`` in this process, and with a
    ``role``, only while this process holds the fleet's scanner role (:mod:`s3q.scanrole`)."""

    def __init__(self, ctx: Context, claimer: Claimer, make_job: MakeJob,
                 role: ScannerRole | None = None) -> None:
        self.ctx, self.claimer, self.make_job = ctx, claimer, make_job
        self.role = role
        self._lock = threading.Lock()
        self._next = 0.0  # store time of the next scan
        self._retries: dict[str, tuple[str, float]] = {}  # name -> (lease etag, not_before)
        #: the lease_ttl leases said when read: name -> (lease etag, ttl); judged by it while
        #: unchanged (:meth:`_ttl`)
        self._told: dict[str, tuple[str, float]] = {}
        #: due retries whose view was looked at: name -> (lease etag, store time)
        self._checked: dict[str, tuple[str, float]] = {}

    def _ttl(self, told: tuple[str, float] | None, info: ObjectInfo) -> float:
        """The lease_ttl to judge a listed lease by before reading it: the one it said when
        last read, while unchanged (0: ours). Never read, or changed since (renewed; or
        claimed again, or taken over, by a worker whose lease_ttl may be shorter than what
        it said), the shortest of what it said (never read: ours), ours, and the renewal
        interval of the longer of those two + CLOCK_MARGIN: so a dead holder's lease is read
        soon after it stopped, whatever lease_ttl it says, and a live one (a short job's
        too) is not read while its holder rewrites it at least that often (a lease_ttl up
        to the longer of the two, unless that is over 3 x ours: read once per renewal)."""
        if told is not None and told[0] == info.etag:
            return told[1]
        ours = self.ctx.config.lease_ttl
        said = (told[1] if told is not None else 0.0) or ours
        return min(said, ours, max(said, ours) / 3 + CLOCK_MARGIN)

    def _read(self, name: str) -> tuple[Lease, ObjectInfo] | None:
        found = leases.read(self.ctx, name)
        if found is not None and not found[0].ttl and found[0].worker:
            # an earlier s3q's lease tells none: its holder's record may, while it lives
            # (recover refuses, status warns, for the same leases)
            ttl = published_lease_ttl(self.ctx.store, found[0].worker)
            if ttl > self.ctx.config.lease_ttl:
                found = (replace(found[0], ttl=ttl), found[1])
        return found

    def run_if_due(self, worker_id: str) -> Recovered | None:
        now = self.ctx.store.now()
        interval = self.ctx.config.effective_scan_interval
        with self._lock:
            # (due sooner than an interval from now: else the store's clock was set back
            # since the last scan, which would not be due again until it caught up)
            if now < self._next <= now + interval:
                return None
            self._next = now + interval
        if self.role is not None and not self.role.held(worker_id):
            return None  # another worker scans for the fleet
        return self.scan(worker_id)

    def scan(self, worker_id: str, *, exact: bool = False,
             done: Recovered | None = None) -> Recovered:
        """One scan: take over what expired (releasing it to wait/), adopt orphans, and give
        due retries left unclaimed their view in wait/ back if it is missing (and offer
        them to this process's claimer too). ``exact`` (``recover --stale``): read every
        lease, also those that look live by this process's lease_ttl (a lease telling a
        shorter one expired sooner), instead of only those that look expired by it.
        ``done``: what it did is recorded there as it goes (kept if the scan stops)."""
        ctx, done = self.ctx, Recovered() if done is None else done
        now = ctx.store.now()
        interval = ctx.config.effective_scan_interval
        leased: dict[str, ObjectInfo] = {}
        due: list[str] = []
        for info in list_all(ctx.store, layout.LEASES):
            name = layout.name_of(layout.LEASES, info.key)
            leased[name] = info
            seen = self._retries.get(name)
            if seen is not None and seen[0] == info.etag:  # a retry lease, unchanged
                if now > seen[1] + 2 * interval:  # due, and still not claimed: no view?
                    due.append(name)
                continue
            told = self._told.get(name)
            first = told is None  # never read: to learn the lease_ttl it says
            if not exact and not ctx.is_expired(info, now, self._ttl(told, info)):
                continue
            try:  # (t1's GET; a live lease's too, first read or changed)
                found = self._read(name)
            except StoreError as exc:  # this lease's own (denied): the others go on
                if not of_its_own(exc):  # (unavailable, or refusing every key: it ends)
                    raise
                _not_taken_over(done, name, exc)
                continue
            if found is not None:
                self._told[name] = (found[1].etag, found[0].ttl)
            if found is not None and found[0].intent is Intent.RETRY and found[0].version == 2:
                # nobody's job: no lease_ttl judges it, it waits to come due (first read too)
                self._retries[name] = (found[1].etag, found[0].not_before)
                continue
            if first and not exact and (found is None or (
                    not ctx.is_expired(found[1], now, found[0].ttl)
                    and not ctx.is_expired(info, now))):
                continue  # gone since listed, or live by what it says and by ours
            if (exact and found is not None and found[0].worker
                    and not ctx.is_expired(found[1], now, found[0].ttl)
                    and not ctx.is_expired(info, now)):
                continue  # live by its lease_ttl and by ours: as if not read
            try:
                done.actions[name] = take_over(ctx, name, worker_id, "stale",
                                               make_job=self.make_job, found=found)
            except StoreUnavailable as exc:
                went_away(done, name, exc)
                raise
            except StoreRefused as exc:  # so is every other key: it ends (outcome known)
                done.failed[name] = str(exc)
                raise
            except StoreError as exc:  # this request's own (permission denied): the others'
                _not_taken_over(done, name, exc)  # takeovers go on; the next scan: again
        self._retries = {n: v for n, v in self._retries.items() if n in leased}
        self._told = {n: v for n, v in self._told.items() if n in leased}
        for info in list_all(ctx.store, layout.PROCESSING):
            name = layout.name_of(layout.PROCESSING, info.key)
            if not (name not in leased and ctx.is_request(name) and ctx.fits(name)
                    and ctx.is_expired(info, now)):
                continue
            try:  # its adoption too: a store error of its own must not end the scan
                if adopt_orphan(ctx, info):
                    done.actions[name] = take_over(ctx, name, worker_id, "stale",
                                                   make_job=self.make_job)
            except StoreUnavailable as exc:
                went_away(done, name, exc)
                raise
            except StoreRefused as exc:
                done.failed[name] = str(exc)
                raise
            except StoreError as exc:
                _not_taken_over(done, name, exc)
        # the view of a due retry (restore_view: PROTOCOL §4 takeover, step 0). Each lease is
        # looked at again only every RECHECK scans, and at most page_size of them per scan
        # (the least recently looked at first): a paused queue, or a deep backlog that
        # claims reach late, must not cost a GET and a HEAD per waiting retry per scan.
        self._checked = {n: c for n, c in self._checked.items() if n in leased}
        todo = [n for n in due if (c := self._checked.get(n)) is None
                or c[0] != leased[n].etag or now >= c[1] + RECHECK * interval]
        todo.sort(key=lambda n: self._checked.get(n, ("", 0.0))[1])
        for name in todo[:ctx.config.page_size]:
            self._checked[name] = (leased[name].etag, now)
            try:  # a store error of this request's own (denied) must not end the scan
                found = leases.read(ctx, name)
                if found is not None and restore_view(
                        ctx, name, worker_id, make_job=self.make_job,
                        found=found) == "view restored":
                    done.actions[name] = "view restored"
            except StoreUnavailable as exc:
                went_away(done, name, exc)
                raise
            except StoreRefused as exc:
                done.failed[name] = str(exc)
                raise
            except StoreError as exc:
                _not_taken_over(done, name, exc, "restoring the view of the due retry")
        self.claimer.offer(due + [n for n, a in done.actions.items()
                                  if a in ("released", "view restored")])
        return done
