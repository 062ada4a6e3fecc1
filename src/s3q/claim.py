"""claim: taking a request from wait/ (docs/PROTOCOL.md §4, steps c0-c3 and c1').

A :class:`Claimer` serves the claiming threads of one process: it takes the candidates
its walk of wait/ (:mod:`s3q.waitwalk`) hands out, one by one. Requests waiting for a
retry whose view in wait/ is missing are handed to it by name (:meth:`Claimer.offer`). A
claim that found candidates and lost every one to other workers says so
(:meth:`Claimer.lost_race`): the queue is busy, not idle, and the slot claims again soon
instead of backing off as if wait/ were empty. A request it may not read (its GET or
COPY refused with an error of its own: an archived storage class, SSE-C, another account's
object; or its lease's GET) is not claimed, and the claim goes on with the next: the walk
skips it for a while and says so (:meth:`s3q.waitwalk.WaitWalk.unreadable`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from s3q import layout, leases
from s3q.body import is_ours, processing_view
from s3q.context import Context, Deadline
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.leases import LeaseTaken, LeaseUnreadable
from s3q.records import INLINE_MAX, Intent, Lease, new_claim_id
from s3q.renewing import Held, renewed_while
from s3q.store import NotFound, ObjectInfo, PreconditionFailed, StoreError, of_its_own
from s3q.waitwalk import WaitWalk

__all__ = ["Claimer", "finish_claim"]

log = logging.getLogger("s3q")



def finish_claim(ctx: Context, lease: Lease, guard: Deadline, *,
                 fresh: bool = False, view: bool = True,
                 sweep: bool = False) -> tuple[Lease, bool]:
    """c2 and c3, after the lock is ours (a claim, or t2 of a takeover). Returns the lease
    with the ETag of its processing/ view, and whether c2 removed the request from wait/
    (then the claim had not finished before: no handler had run on it). Raises
    :class:`ClaimStalled` if the deadline passed before c2 was sent, and, for a ``fresh``
    claim (c1 just now, not a retry's c1' nor a takeover), :class:`ClaimOvertaken` if
    wait/NAME was certainly no longer the request read at c0. Without ``view``, c3 is left
    to the job (:meth:`s3q.job.Job.write_view`, once it has run for a while). ``sweep``
    (a retry's claim, c1'): if the recorded view is not there, a view of this request's
    bytes that its lease does not record (the scan's restore of a view, interrupted
    between w1 and w2) is deleted too: it must not outlive the request."""
    name = lease.name
    target = lease.view or lease.src
    removed = False
    if target is not None:  # c2
        try:
            guard.check()
        except LeaseLost as exc:
            raise ClaimStalled(str(exc)) from exc
        try:
            # (urgent: it carries the commits of this worker's completions waiting then)
            ctx.deletes.delete(layout.key(layout.WAIT, name), target, guard=_c2_guard(guard),
                               urgent=True)
            removed = True
        except (NotFound, PreconditionFailed) as exc:
            # 404/412 to a retried delete may be our own earlier try's doing: never give up
            # then (the lease holds the only copy); to a first try it is certain: another
            # worker claimed (and finished) what c0 read, between our c0 and our c1.
            if fresh and not exc.retried:
                raise ClaimOvertaken(name) from exc
    if sweep and not removed:
        _sweep_view(ctx, lease, guard)
    proc = processing_view(ctx, lease, guard) if view else None  # c3
    if not view:
        guard.check()  # the claim took longer than its lease: leave it to a takeover
    return replace(lease, proc=proc, view=None), removed


def _c2_guard(deadline: Deadline) -> Callable[[], None]:
    """The deadline, checked before each try of c2: one that stops the first try stops a
    c2 never sent (:class:`ClaimStalled`: the lease can be given up); one that stops a
    retry stops a c2 that may have been applied (LeaseLost: the lease holds the request)."""
    tries = 0

    def check() -> None:
        nonlocal tries
        try:
            deadline.check()
        except LeaseLost as exc:
            if tries == 0:
                raise ClaimStalled(str(exc)) from exc
            raise
        tries += 1

    return check


def _sweep_view(ctx: Context, lease: Lease, guard: Deadline) -> None:
    """c2 of a retry's claim found no recorded view: delete an unrecorded one of this
    request's bytes (a same-bytes re-submission is the same request, as at c2)."""
    key = layout.key(layout.WAIT, lease.name)
    try:
        info = ctx.store.head(key)
        if is_ours(ctx, lease, key, info):
            ctx.store.delete(key, if_match=info.etag, guard=guard.check)
    except (NotFound, PreconditionFailed):
        pass


class ClaimOvertaken(Exception):
    """c2 of a fresh claim found wait/NAME gone or replaced: the bytes c0 read were claimed
    by another worker in the meantime (and finished: its lease is gone, or ours could not
    have been created). This claim gives its lease up instead of running them again."""


class Unreadable(Exception):
    """wait/NAME (listed as ``etag``; "" if not listed) cannot be claimed by this process
    now: ``why``. Raised before the claim's lock was ours, or once it was given up."""

    def __init__(self, name: str, etag: str, why: str) -> None:
        super().__init__(why)
        self.name, self.etag, self.why = name, etag, why


def _lease_unreadable(name: str, etag: str, exc: LeaseUnreadable) -> Unreadable:
    return Unreadable(name, etag, f"its lease cannot be read ({exc.error})")


class ClaimStalled(LeaseLost):
    """The claim's deadline passed before c2: wait/NAME is untouched, so the lease can be
    given up (the request, or whoever took it meanwhile, is not disturbed)."""


def _stalled(ctx: Context, lease: Lease, etag: str, exc: LeaseLost) -> None:
    """A claim that took longer than its lease (the process stalled). A fresh claim (c1)
    stalled before c2 gives its lease (and private copy) up: the request is still in wait/,
    or was claimed by whoever took this lease over meanwhile (then the delete, conditional
    on our ETag, does nothing). A retry claim (c1') keeps it: that lease holds the body.
    After c2 the lease holds the only copy: whoever takes it over finishes the claim."""
    give_up = isinstance(exc, ClaimStalled) and lease.src is not None and _give_up(
        ctx, lease, etag)
    ctx.emit("claim_stalled", lease.name, level=logging.WARNING,
             reason="lease deadline passed during the claim", given_up=give_up)


def _give_up(ctx: Context, lease: Lease, etag: str) -> bool:
    """Delete a fresh claim's lease (and its private copy) before c2 touched wait/NAME.
    False if the lease was taken over meanwhile (the taker holds the private copy too)."""
    try:
        ctx.store.delete(layout.key(layout.LEASES, lease.name), if_match=etag)
    except (NotFound, PreconditionFailed):
        return False
    if lease.body_key is not None:
        with contextlib.suppress(NotFound):
            ctx.store.delete(lease.body_key)  # no lease names it any more
    return True


class Claimer:
    def __init__(self, ctx: Context, make_job: Callable[[Lease, str, Deadline], Job]) -> None:
        self.ctx = ctx
        self._make_job = make_job
        self._lock = threading.Lock()  # (of _named: the walk of wait/ has its own)
        self._named: deque[str] = deque()  # due retry leases without a view (the scan)
        self._offered: set[str] = set()  # the names in _named (the scan offers thousands)
        self._walk = WaitWalk(ctx)
        self._raced = threading.local()  # per claiming thread: its last claim lost races

    def offer(self, names: list[str]) -> None:
        """Names to try first, without a listing: due ``retry`` leases whose view is missing
        (the scan), or requests an event said were submitted."""
        with self._lock:
            for name in names:
                if name not in self._offered:
                    self._offered.add(name)
                    self._named.append(name)

    def claim(self, worker_id: str, view_after: float = 0.0) -> Job | None:
        """One request for ``worker_id``, or None when there is nothing to do now. Its
        processing/ view is written at once (``view_after`` = 0), or by the job itself once
        it has run ``view_after`` seconds (a job that ends sooner never needs one). Commits
        of this process waiting meanwhile travel with its c2 (:mod:`s3q.batching`)."""
        with self.ctx.deletes.claiming():
            return self._claim(worker_id, view_after)

    def _claim(self, worker_id: str, view_after: float) -> Job | None:
        began = self._walk.began()  # (read before waiting for it: see WaitWalk.candidates)
        while True:
            with self._lock:
                name = self._named.popleft() if self._named else None
                if name is not None:
                    self._offered.discard(name)
            if name is None:
                break
            try:
                job = self._claim_named(worker_id, name, view_after)
            except Unreadable as exc:
                self._walk.unreadable(exc.name, exc.etag, exc.why)
                continue
            if job is not None:
                return job
        self._raced.lost = False
        for info in self._walk.candidates(began):
            try:
                job = self._claim_waiting(worker_id, info, view_after)
            except Unreadable as exc:
                self._walk.unreadable(exc.name, exc.etag, exc.why)
                job = None
            if job is not None:
                return job
            self._raced.lost = True
        return None

    def unreadable(self) -> dict[str, tuple[str, str]]:
        """Requests in wait/ this process found it may not read: name -> (ETag, why)."""
        return self._walk.unreadable_now()

    def lost_race(self) -> bool:
        """Did this thread's last :meth:`claim` find candidates in wait/ and claim none
        (taken by other workers, changed or gone meanwhile, held, not due yet)? The names held
        or not due are skipped by the next listings, so a worker that claims again at once
        meets only what it has not tried yet."""
        return bool(getattr(self._raced, "lost", False))

    def _claim_named(self, worker_id: str, name: str, view_after: float) -> Job | None:
        """A named request: its retry lease if it has one, else wait/NAME as if listed."""
        try:
            found = leases.read(self.ctx, name)
        except LeaseUnreadable as exc:
            raise _lease_unreadable(name, "", exc) from exc
        if found is not None:
            return self._claim_retry(worker_id, name, found, None, view_after)
        if not self.ctx.is_request(name):
            return None
        try:
            info = self.ctx.store.head(layout.key(layout.WAIT, name))
        except NotFound:
            return None  # claimed or gone meanwhile
        except StoreError as exc:  # its own (SSE-C: a HEAD without the key is refused too)
            if not of_its_own(exc):
                raise
            raise Unreadable(name, "", str(exc)) from exc
        return self._claim_waiting(worker_id, info, view_after)

    # ------------------------------------------------------------------ c0 … c3
    def _claim_waiting(self, worker_id: str, info: ObjectInfo,
                       view_after: float) -> Job | None:
        ctx, name = self.ctx, layout.name_of(layout.WAIT, info.key)
        if not ctx.fits(name):
            self._walk.refuse(name, "name too long for this store (its keys under .s3q/ would "
                              f"exceed {ctx.store.max_key_bytes} bytes; names of at most "
                              f"{layout.longest_name(ctx.store.max_key_bytes)} bytes fit)",
                              "name_too_long")
            return None
        body: bytes | None = None
        src, size = info.etag, info.size  # (as listed, unless c0 reads other bytes)
        if info.size <= INLINE_MAX:
            try:  # c0
                body, got = ctx.store.get(info.key)
            except NotFound:  # claimed (or purged) since the listing
                self._walk.contended(name)
                return None
            except StoreError as exc:  # its own: archived, SSE-C, another account's
                if not of_its_own(exc):
                    raise
                raise Unreadable(name, info.etag, str(exc)) from exc
            src, size = got.etag, got.size
            if len(body) > INLINE_MAX:  # replaced by a larger one since the listing
                body = None
        lease = Lease(name=name, worker=worker_id, claim=new_claim_id(), gen=1, seq=0,
                      attempt=1, src=src, body_b64=Lease.encode(body),
                      body_key=None if body is not None else layout.new_body_key(),
                      size=len(body) if body is not None else size,
                      written_at=time.time())
        sent = ctx.monotonic()
        try:  # c1: the lock
            lease, etag = leases.create(ctx, lease)
        except LeaseTaken as taken:
            if taken.current is None:
                return None
            return self._claim_retry(worker_id, name, taken.current, info, view_after)
        except LeaseUnreadable as exc:  # (another's lease: the PUT was refused, 412)
            raise _lease_unreadable(name, info.etag, exc) from exc
        guard = ctx.deadline(sent, name)
        held = Held(lease, etag)
        gone, refused = False, ""
        try:
            # a large request's copies (c1b, then c3) may outlast the lease: renewed meanwhile
            with (renewed_while(ctx, held, guard) if lease.body_key is not None
                  else contextlib.nullcontext()):
                if lease.body_key is not None:
                    try:  # c1b: the private copy of a large request
                        ctx.store.copy(info.key, lease.body_key, if_source_match=src,
                                       guard=guard.check)
                    except (NotFound, PreconditionFailed):  # gone or replaced since listed
                        gone = True
                    except LeaseLost as exc:  # c2 not sent: wait/NAME untouched
                        raise ClaimStalled(str(exc)) from exc
                    except StoreError as exc:  # its own: given up as if gone, and said
                        if not of_its_own(exc):
                            raise
                        gone, refused = True, str(exc)
                if not gone:
                    claimed, _ = finish_claim(ctx, lease, guard, fresh=True,
                                              view=not view_after)
        except LeaseLost as exc:
            _stalled(ctx, held.lease, held.etag, exc)
            return None
        except ClaimOvertaken:
            _give_up(ctx, held.lease, held.etag)
            self._walk.contended(name)
            ctx.emit("claim_overtaken", name, level=logging.DEBUG,
                     reason="claimed and finished by another worker between c0 and c1")
            return None
        if gone:
            leases.delete(ctx, name, held.etag, claim=held.lease.claim)
            if refused:
                raise Unreadable(name, info.etag, refused)
            self._walk.contended(name)
            return None
        # (the lease as last written, by c1 or a renewal, with what c2/c3 found)
        lease, etag = replace(held.lease, proc=claimed.proc, view=claimed.view), held.etag
        job = self._started(lease, etag, guard, view_after)
        if job is not None:
            job.waited = max(0.0, ctx.store.now() - info.last_modified)
        return job

    def _claim_retry(self, worker_id: str, name: str, found: tuple[Lease, ObjectInfo],
                     listed: ObjectInfo | None, view_after: float) -> Job | None:
        """c1': NAME has a lease. A due ``retry`` lease is taken; any other lease means NAME
        is in flight elsewhere (skip it for a while)."""
        ctx = self.ctx
        old, linfo = found
        now = ctx.store.now()
        if old.intent is not Intent.RETRY or old.version == 1:  # (0.1's: the scan migrates it)
            if listed is not None:
                self._walk.skip(name, listed.etag, now + ctx.config.renew_interval)
            self._walk.contended(name)
            return None
        if old.not_before > now + 1.0:  # 1 s: the resolution of Date
            if listed is not None:
                self._walk.skip(name, listed.etag, old.not_before)
            return None
        lease = old.taken_over(worker_id, intent=Intent.HELD, attempt=old.attempts + 1,
                               attempts=0, not_before=0.0, error=None, src=None,
                               written_at=time.time())
        sent = ctx.monotonic()
        try:  # c1': the retry lease becomes this claim's lock
            lease, etag = leases.write(ctx, lease, linfo.etag)
        except LeaseTaken:
            return None
        except LeaseUnreadable as exc:  # (its read after a refused write)
            raise _lease_unreadable(name, listed.etag if listed else "", exc) from exc
        guard = ctx.deadline(sent, name)
        held = Held(lease, etag)
        try:
            # c3 at once: a view the previous holder left (crashed before w3) is adopted
            # here, so that it cannot outlive this lease as an orphan (a large request's
            # copy may outlast the lease: renewed meanwhile, as for a fresh claim)
            with (renewed_while(ctx, held, guard) if lease.body_key is not None
                  else contextlib.nullcontext()):
                claimed, _ = finish_claim(ctx, lease, guard, sweep=True)
        except LeaseLost as exc:
            _stalled(ctx, held.lease, held.etag, exc)
            return None
        lease, etag = replace(held.lease, proc=claimed.proc, view=claimed.view), held.etag
        return self._started(lease, etag, guard, 0.0, last_error=old.error)

    def _started(self, lease: Lease, etag: str, guard: Deadline, view_after: float, *,
                 last_error: dict[str, Any] | None = None) -> Job | None:
        job = self._make_job(lease, etag, guard)
        self._walk.claimed(lease.name)
        if view_after:
            job.view_due = self.ctx.monotonic() + view_after
        self.ctx.emit("claimed", lease.name, worker=lease.worker, attempt=lease.attempt,
                      gen=lease.gen)
        if job.attempt <= self.ctx.config.max_attempts:
            return job
        # (max_attempts lowered since its last attempt failed: that failure is the news)
        last = (f"; its last attempt failed: {last_error.get('type')}: "
                f"{last_error.get('message')}" if isinstance(last_error, dict) else "")
        job.fail(f"attempt {job.attempt} exceeds max_attempts="
                 f"{self.ctx.config.max_attempts}{last}", retry=False)
        return None
