"""takeover (t1-t3), the restore of a due retry's view (v0-v3) and the adoption of an
orphan. docs/PROTOCOL.md §4. The scan that finds what to take over is :mod:`s3q.scan`;
recovery (own, stale and all), :mod:`s3q.recovery`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from s3q import layout, leases, requeue, settle
from s3q.body import create_view, is_ours
from s3q.claim import finish_claim
from s3q.context import Context, Deadline, error_info
from s3q.errors import LeaseLost
from s3q.job import Job
from s3q.leases import LeaseTaken
from s3q.records import INLINE_MAX, Intent, Lease, new_claim_id
from s3q.renewing import copying
from s3q.store import (
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    of_its_own,
)
from s3q.workerids import RECOVER_ALL

__all__ = ["CHANGED", "INTERRUPTED", "RACED", "RECOVER_ALL", "UNTOUCHED", "MakeJob", "Recovered",
           "RecoveryMode", "adopt_orphan", "kept_corrupt", "kept_problem", "restore_view",
           "take_over", "went_away"]

log = logging.getLogger(__name__)

MakeJob = Callable[[Lease, str, Deadline], Job]
#: ``mine``: what one worker id held; ``stale``: expired leases; ``all``: everything.
RecoveryMode = Literal["mine", "stale", "all"]
#: What a recovery limited to what was shown reports for a request claimed since.
CHANGED = "left alone (changed since listed)"
#: What a takeover reports when this process outlasted the lease it took (a slow store, a
#: long copy): it stopped there, and the next taker carries on. Not done.
INTERRUPTED = "interrupted (lease expired)"
#: What a takeover reports when the lease changed between its read and the fence (t1): its
#: holder renewed it, or another taker took it. Not taken over.
RACED = "raced"
#: What a takeover reports for a request it found nothing to do about (not recovered).
UNTOUCHED = frozenset({"waiting for retry", "gone", "alive", "not mine", CHANGED, RACED})


@dataclass(slots=True)
class Recovered:
    """What a recovery did, request by request: {name: action}; the requests whose
    takeover failed with a store error: {name: the error}; and of those, the ones the store
    went away under (unavailable): their outcome is unknown (taken over or not)."""

    actions: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        """How many requests it recovered (not those it found nothing to do about, nor
        those it was interrupted at)."""
        return sum(1 for a in self.actions.values()
                   if a not in UNTOUCHED and a != INTERRUPTED)


# ---------------------------------------------------------------------- t1 … t3
def take_over(ctx: Context, name: str, worker_id: str, mode: RecoveryMode, *,
              make_job: MakeJob, found: tuple[Lease, ObjectInfo] | None = None,
              claim: str | None = None) -> str:
    """Take over the lease of NAME (expired; this worker id's with ``mine``; any with
    ``all``) and settle the request: a decided intent is carried out, a held request goes
    back to wait/ for any worker (or to failed/ when its last attempt died). With
    ``claim``, only the lease of that claim (as an operator was shown it). Returns what
    was done, in a word or three."""
    found = found or leases.read(ctx, name)
    if found is None:
        return "gone"
    old, info = found
    if claim is not None and old.claim != claim:
        return CHANGED
    if old.intent is Intent.RETRY and old.version == 2:
        return "waiting for retry"
    if mode == "mine" and old.worker != worker_id:
        return "not mine"
    if _bodiless_corrupt(old):
        _keep_corrupt(ctx, name)  # (its t1 would overwrite the only copy of the request)
    if mode == "stale" and old.worker and not ctx.is_expired(info, ctx.store.now(), old.ttl):
        return "alive"  # (judged by its writer's lease_ttl: a longer one than ours)
    sent = ctx.monotonic()
    try:  # t1: the fence; the previous owner's lease writes fail from now on
        lease, etag = leases.write(ctx, old.taken_over(worker_id, written_at=time.time()),
                                   info.etag)
    except LeaseTaken:
        return RACED
    job = make_job(lease, etag, ctx.deadline(sent, name))
    ctx.emit("took_over", name, worker=worker_id, previous=old.worker, gen=lease.gen,
             intent=old.intent.value)
    try:
        return _settle(job, old, mode)
    except LeaseLost:  # this process stalled past the lease: the next taker carries on
        return INTERRUPTED


def _bodiless_corrupt(lease: Lease) -> bool:
    return lease.claim == leases.CORRUPT and lease.body_b64 is None and lease.body_key is None


def kept_corrupt(ctx: Context, lease: Lease) -> str | None:
    """Why a takeover leaves ``lease`` as it is (corrupt, no body, the request nowhere
    else: :func:`_keep_corrupt`), or None: a burst does not wait for it (it stays)."""
    if not _bodiless_corrupt(lease):
        return None
    try:
        _keep_corrupt(ctx, lease.name)
    except StoreError as e:
        if not of_its_own(e):  # (unavailable, or refusing every key: not this lease's)
            raise
        return str(e)
    return None


def kept_problem(kept: list[tuple[str, str]]) -> str:
    """What ``s3q status`` and the dashboard say of the leases :func:`kept_corrupt` names
    (not overdue: the fleet scans, and leaves them by design)."""
    return (f"{len(kept)} corrupt lease(s) left for an operator (the takeover scan leaves "
            "them as they are): " + "; ".join(" ".join(w.split())[:400] for _, w in kept[:3]))


def _keep_corrupt(ctx: Context, name: str) -> None:
    """A lease that cannot be decoded, and from which no body could be read: unless the
    request is in processing/ or wait/ too, its bytes may be in it alone. Raise (a store
    error of this request's own: reported, the others go on) instead of taking it over."""
    for prefix in (layout.PROCESSING, layout.WAIT):
        try:
            ctx.store.head(layout.key(prefix, name))
            return
        except NotFound:
            continue
    raise StoreError(f"{name}: its lease record is corrupt, holds no body s3q can read, and "
                     "the request is neither in processing/ nor in wait/: left as it is "
                     f"(its bytes may be in it alone): copy {layout.key(layout.LEASES, name)} "
                     "aside, restore the request by hand, then delete it")


def _settle(job: Job, old: Lease, mode: RecoveryMode) -> str:
    """t2 and t3, once the lease is ours."""
    ctx, lease, name = job.ctx, job.lease, job.name
    has_body = _ensure_body(job)  # (a done/dead lease of 0.1 without one is past d3/x2)
    if lease.intent in (Intent.HELD, Intent.REQUEUE, Intent.RETRY) and not has_body:
        leases.delete(ctx, name, job.lease_etag, claim=job.lease.claim)
        return "dropped (its request is gone)"
    if lease.intent is Intent.RETRY:  # a version-1 retry lease, now holding its body
        return "migrated"
    if lease.intent is Intent.DONE:  # t2: a decision was made: carry it out
        settle.finish_done(job)
    elif lease.intent is Intent.DEAD:
        settle.finish_dead(job)
    elif lease.intent is Intent.REQUEUE:
        requeue.forward(job)
    if lease.intent is not Intent.HELD:
        return f"rolled forward {old.intent.value}"
    with copying(job):  # t2: the claim's steps (c3 copies a large request)
        claimed, removed = finish_claim(ctx, job.lease, job.deadline)
    job.lease = replace(job.lease, proc=claimed.proc, view=None)  # (as last renewed)
    counted = not removed and mode != "all" and old.worker != RECOVER_ALL
    stopped = (f"worker {old.worker or '?'} stopped renewing its lease during attempt "
               f"{old.attempt} (crashed, killed or frozen)")
    if counted and old.attempt >= ctx.config.max_attempts:  # t3
        settle.dead_letter(job, error_info(f"{stopped}; max_attempts reached",
                                           worker=old.worker, attempt=old.attempt,
                                           at=ctx.store.now()))
        return "dead-lettered"
    error = error_info(stopped, worker=old.worker, attempt=old.attempt,
                       at=ctx.store.now()) if counted else None
    job.release(counted=counted, error=error)
    return "released"


def restore_view(ctx: Context, name: str, worker_id: str, *, make_job: MakeJob,
                 found: tuple[Lease, ObjectInfo]) -> str:
    """A ``retry`` lease still unclaimed well after it came due: is its view in wait/,
    where every worker's listing finds it? If wait/NAME holds its recorded view, or
    another request (a re-submission: a claim of it reaches this lease at c1'), nothing is
    done. Else the view is written again (v2), or an unrecorded one of its bytes (left by
    a crash before v3) adopted, and recorded in the lease (v3), after a fence (v1)."""
    old, info = found
    if old.intent is not Intent.RETRY or old.version != 2:
        return "not waiting"
    key = layout.key(layout.WAIT, name)
    try:  # v0
        there: ObjectInfo | None = ctx.store.head(key)
    except NotFound:
        there = None
    if there is not None and (there.etag == old.view or not is_ours(ctx, old, key, there)):
        return "waiting"
    sent = ctx.monotonic()
    try:  # v1 (as t1): a claim (c1') racing this one wins or loses on this write
        lease, etag = leases.write(ctx, old.taken_over(worker_id, written_at=time.time()),
                                   info.etag)
    except LeaseTaken:
        return "raced"
    job = make_job(lease, etag, ctx.deadline(sent, name))
    try:
        view: str | None
        if there is not None:
            view, created = there.etag, False
        else:
            with copying(job):
                view, created = create_view(ctx, job.lease, key, job.deadline.check)  # v2
        with settle.undoing_view(ctx, key, view if created else None):
            job.write(job.lease.next(view=view, written_at=time.time()))  # v3 (as w2)
    except LeaseLost:
        return "raced"
    ctx.emit("view_restored", name, worker=worker_id, adopted=there is not None)
    return "view restored"


def _ensure_body(job: Job) -> bool:
    """The body of record of a taken-over lease whose holder may have died before writing
    it: a large request's private copy is made now if the claim (c1b), the requeue (r1) or
    the adoption of an orphan died before it. False when its source is gone too (purged)."""
    ctx, lease = job.ctx, job.lease
    if lease.body_b64 is not None:
        return True
    if lease.body_key is None:
        return _adopt_body(job)
    try:
        size = ctx.store.head(lease.body_key).size
        if size != lease.size and size >= 0:  # (the stand-in of a corrupt lease: unknown)
            job.lease = replace(lease, size=size)
        return True
    except NotFound:
        if lease.intent not in (Intent.HELD, Intent.REQUEUE):
            return False  # done/dead: deleted by the last step (d5, x5), after d3/x2
    prefix, etag = ((layout.FAILED, lease.failed) if lease.intent is Intent.REQUEUE
                    else (layout.WAIT, lease.src) if lease.src is not None
                    else (layout.PROCESSING, lease.proc))
    try:
        with copying(job):
            ctx.store.copy(layout.key(prefix, lease.name), lease.body_key,
                           if_source_match=etag, guard=job.check_deadline)
        return True
    except (NotFound, PreconditionFailed):
        return False


def _adopt_body(job: Job) -> bool:
    """A lease of s3q 0.1 holds no body of record: take it from where that version kept the
    request (its in-flight copy, its retry copy or its dead letter) and write it into the
    lease. False when the request is in none of them (an operator moved it away)."""
    ctx, lease = job.ctx, job.lease
    places = {Intent.RETRY: layout.WAIT, Intent.REQUEUE: layout.FAILED}
    for prefix in (places.get(lease.intent, layout.PROCESSING), layout.PROCESSING):
        key = layout.key(prefix, lease.name)
        try:
            info = ctx.store.head(key)
            if info.size <= INLINE_MAX:
                body = ctx.store.get(key)[0]
                job.write(lease.next(body_b64=Lease.encode(body), size=len(body)))
            else:
                body_key = layout.new_body_key()
                with copying(job, size=info.size):
                    ctx.store.copy(key, body_key, guard=job.check_deadline)
                job.write(job.lease.next(body_key=body_key, size=info.size))  # (as renewed)
            return True
        except NotFound:
            continue
    return False


def adopt_orphan(ctx: Context, info: ObjectInfo) -> bool:
    """A request in processing/ with no lease (an old seed-style worker's, or put there by
    hand) gets a lease held by nobody, with its bytes as the body of record (as c0-c1b)."""
    name = layout.name_of(layout.PROCESSING, info.key)
    body: bytes | None = None
    if info.size <= INLINE_MAX:
        try:
            body, info = ctx.store.get(info.key)
        except NotFound:
            return False
    lease = Lease(name=name, worker="", claim=new_claim_id(), gen=0, seq=0, attempt=0,
                  body_b64=Lease.encode(body),
                  body_key=None if body is not None else layout.new_body_key(),
                  size=info.size, proc=info.etag, written_at=time.time())
    sent = ctx.monotonic()
    try:
        lease, etag = leases.create(ctx, lease)
    except LeaseTaken:
        return False
    try:
        if lease.body_key is not None:  # (not renewed: a lease held by nobody is taken over
            # at once by the scan, whose t2 makes the private copy if this one did not)
            ctx.store.copy(info.key, lease.body_key, if_source_match=info.etag,
                           guard=ctx.deadline(sent, name).check)
        elif ctx.store.head(info.key).etag != info.etag:  # (as c2 for a claim)
            raise PreconditionFailed(f"{info.key} changed")
    except (NotFound, PreconditionFailed):
        # gone or replaced since it was read: another worker adopted it meanwhile (and may
        # have finished it) while this one stalled, or its lease, created late, would
        # bring a settled request back
        leases.delete(ctx, name, etag)
        return False
    except LeaseLost:  # the copy outlasted the lease (a large request): the lease stands,
        pass  # held by nobody, and the takeover that follows makes the copy, renewed (t2)
    ctx.emit("orphan_found", name)
    return True


def went_away(done: Recovered, name: str, exc: StoreUnavailable) -> None:
    """The store went away under the takeover (or adoption) of ``name``: it may or may not
    have taken effect."""
    done.failed[name] = str(exc)
    done.unknown.add(name)
