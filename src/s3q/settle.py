"""complete, fail → retry or release, dead letter (docs/PROTOCOL.md §4: d1-d5, w1-w3,
x1-x5), and carrying out a decided intent a holder finds in a lease ("roll forward").

Every function takes the :class:`Holder` of the lease (a :class:`s3q.job.Job`): its lease
writes are fenced by the lease's ETag, and every other write is guarded by its deadline.
Each step after a commit is idempotent, so a taker may repeat them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from s3q import layout, leases
from s3q.body import BodyGone, create_view, delete_view, is_ours, write_copy
from s3q.context import Context, Deadline
from s3q.errors import LeaseLost
from s3q.records import ErrorRecord, Intent, Lease
from s3q.renewing import copying
from s3q.store import NotFound, ObjectInfo, PreconditionFailed, StoreError

__all__ = ["Holder", "back_to_wait", "complete", "dead_letter", "finish_dead", "finish_done",
           "undoing_view"]


class Holder(Protocol):
    """A lease held by this process (:class:`s3q.job.Job`)."""

    ctx: Context
    lease: Lease
    lease_etag: str
    deadline: Deadline

    def write(self, lease: Lease) -> None: ...

    def commit(self) -> None: ...

    def taken_over(self, consequence: str) -> LeaseLost: ...


# ---------------------------------------------------------------------- complete
def complete(h: Holder, result: bytes | None) -> None:
    """d2…d5; the lease's deletion (d5) is the commit. A large request's completion commits
    first (d1), because its private copy is deleted before its lease; so does every one
    with ``commit_before_finish``."""
    decided = h.lease.next(intent=Intent.DONE, on_finish=h.ctx.config.on_finish,
                           result_b64=Lease.encode(result), written_at=time.time())
    if h.lease.body_key is not None or h.ctx.config.commit_before_finish:
        h.write(decided)  # d1
        finish_done(h)
        return

    def in_time() -> None:
        """Before each of d2…d4: a deadline less than lease_ttl/3 away (a slow settler, a
        slow step) is renewed, so that the next step is not refused by the guard. The
        lease stays held: the decision is not written (d5 commits it)."""
        if h.deadline.left() < h.ctx.config.lease_ttl / 3:
            h.write(h.lease.next(written_at=time.time()))

    finish_done(h, decided, in_time=in_time)


def finish_done(h: Holder, decided: Lease | None = None, *,
                in_time: Callable[[], None] = lambda: None) -> None:
    """d2…d5 of a completion committed by d1 (a taker rolling it forward, a large request:
    the lease is ``done``), or, with ``decided`` (the decision, not written), committed by
    d5; ``in_time`` runs before each of d2…d4."""
    ctx, lease = h.ctx, decided or h.lease

    def guard() -> None:  # the deadline of the latest renewal (in_time renews)
        h.deadline.check()

    name = lease.name
    if lease.result_b64 is not None:  # d2
        in_time()
        ctx.store.put(layout.key(layout.RESULTS, name), lease.result or b"", guard=guard)
    # d3: finish/ keeps the latest request of a name (also for an on_finish this version does
    # not know, a later s3q's: bytes are deleted only when a lease says "delete")
    if lease.on_finish != "delete":
        in_time()
        with copying(h), _unless_body_gone():
            write_copy(ctx, lease, layout.key(layout.FINISH, name), guard)
    if lease.proc is not None:
        in_time()
    delete_view(ctx, layout.key(layout.PROCESSING, name), lease.proc, guard)  # d4
    _drop(h, commit=decided is not None)  # d5
    ctx.emit("completed", name, worker=lease.worker, attempt=lease.attempt,
             on_finish=lease.on_finish)


# ---------------------------------------------------------------------- retry / release
def back_to_wait(h: Holder, *, attempts: int, not_before: float,
                 error: dict[str, Any] | None) -> None:
    """w1 (the view in wait/, created first so that the commit records its ETag), w2 (the
    commit: the lease rests as ``retry`` with the body), w3."""
    ctx, name = h.ctx, h.lease.name
    with copying(h):
        view, created = create_view(ctx, h.lease, layout.key(layout.WAIT, name),
                                    h.deadline.check)  # w1
    proc = h.lease.proc
    with undoing_view(ctx, layout.key(layout.WAIT, name), view if created else None):
        h.write(h.lease.next(intent=Intent.RETRY, attempts=attempts, not_before=not_before,
                             error=error, view=view, proc=None, written_at=time.time()))  # w2
    delete_view(ctx, layout.key(layout.PROCESSING, name), proc, h.deadline.check)  # w3
    if view is None:
        ctx.emit("release_deferred", name, reason="another request of that name waits in "
                 "wait/; this one waits in its lease and runs first")
    ctx.emit("retry_scheduled" if error and not_before else "released", name,
             worker=h.lease.worker, attempts=attempts, not_before=not_before)


@contextlib.contextmanager
def undoing_view(ctx: Context, key: str, created: str | None) -> Iterator[None]:
    """A commit that records the view this holder just ``created`` in wait/ (its ETag;
    None: not created by this write). If the commit finds the lease taken from it (this
    holder stalled, an operator recovered it, a claim took a ``retry`` lease meanwhile),
    the view would outlive the request and run it once more: where every write has its
    own ETag, it is deleted again (``DEL=e`` names that object only). Where ETags are the
    MD5 of the bytes it is left: by the time the commit fails the request may have been
    completed and submitted again with the same bytes, whose ETag is the view's; whoever
    took the lease deals with the view (its c2 or sweep deletes it, its w1 adopts it), or
    the request runs once more (docs/PROTOCOL.md §7). A view this holder adopted (the
    request's bytes were there: a re-submission) is never deleted: it is not its own."""
    try:
        yield
    except LeaseLost:
        if ctx.store.capabilities.etags == "opaque":
            delete_view(ctx, key, created, lambda: None)
        raise


# ---------------------------------------------------------------------- dead letter
def dead_letter(h: Holder, error: dict[str, Any]) -> None:
    """x1, the commit, then x2…x5."""
    h.write(h.lease.next(intent=Intent.DEAD, error=error, written_at=time.time()))  # x1
    finish_dead(h)


def finish_dead(h: Holder) -> None:
    ctx, lease, guard = h.ctx, h.lease, h.deadline.check
    name, error = lease.name, lease.error or {}
    _place_dead_letter(h)  # x2
    record = ErrorRecord(name=name, attempts=lease.attempt,
                         worker=error.get("worker", lease.worker), error=error,
                         failed_at=ctx.store.now())
    ctx.store.put(layout.key(layout.ERRORS, name), record.to_bytes(), guard=guard)  # x3
    delete_view(ctx, layout.key(layout.PROCESSING, name), lease.proc, guard)  # x4
    _drop(h)  # x5
    ctx.emit("dead_lettered", name, worker=lease.worker, attempts=lease.attempt,
             error=error.get("message"))


def _place_dead_letter(h: Holder) -> None:
    """x2: ``failed/NAME`` from the body of record, create-if-absent. An earlier dead letter
    of the name found there is displaced to ``.s3q/earlier/`` with its error record, never
    overwritten (invariant 6)."""
    ctx, lease, guard = h.ctx, h.lease, h.deadline.check
    key = layout.key(layout.FAILED, lease.name)
    for _ in range(5):
        # (is_ours reads both copies of a large request whole: as long as a copy, renewed too)
        with copying(h):
            try:
                with _unless_body_gone():
                    write_copy(ctx, lease, key, guard, if_none_match=True)
                return
            except PreconditionFailed:
                pass
            try:
                found = ctx.store.head(key)
            except NotFound:
                continue
            if is_ours(ctx, lease, key, found):
                return  # an earlier try of ours took effect
        _displace(h, found)
    raise StoreError(f"{key}: could not place the dead letter (the key keeps changing)")


def _displace(h: Holder, found: ObjectInfo) -> None:
    """Move the earlier dead letter ``found`` at failed/NAME, and its error record, to
    ``.s3q/earlier/STAMP/`` (STAMP: when it failed, and a digest of its ETag, so that a
    repeated try lands at the same place)."""
    ctx, name, guard = h.ctx, h.lease.name, h.deadline.check
    stamp = layout.stamp(found.last_modified,
                         hashlib.sha256(found.etag.encode()).hexdigest())
    src, dst = layout.key(layout.FAILED, name), layout.earlier(stamp, name)
    try:
        with copying(h, size=found.size):  # (of an earlier request: it may be large)
            ctx.store.copy(src, dst, if_source_match=found.etag, if_none_match=True,
                           guard=guard)
    except NotFound:
        return  # gone meanwhile (purged): nothing to keep
    except PreconditionFailed:
        try:
            ctx.store.head(dst)  # kept by an earlier try of ours
        except NotFound:
            return  # the source changed: look again
    with contextlib.suppress(NotFound):
        record, info = ctx.store.get(layout.key(layout.ERRORS, name))
        with contextlib.suppress(PreconditionFailed):
            ctx.store.put(layout.earlier(stamp, name, error=True), record,
                          if_none_match=True, guard=guard)
        with contextlib.suppress(NotFound, PreconditionFailed):
            ctx.store.delete(layout.key(layout.ERRORS, name), if_match=info.etag, guard=guard)
    with contextlib.suppress(NotFound, PreconditionFailed):
        ctx.store.delete(src, if_match=found.etag, guard=guard)
    ctx.emit("dead_letter_displaced", name, kept=dst)


# ---------------------------------------------------------------------- the end
@contextlib.contextmanager
def _unless_body_gone() -> Iterator[None]:
    """A large request's private copy is deleted only by the last step (d5, x5), after d3
    or x2 placed the request: if it is gone, that step was done before a crash."""
    with contextlib.suppress(BodyGone):
        yield


def _drop(h: Holder, *, commit: bool = False) -> None:
    """The last step: the private body copy (a key no other lease names), then the lease;
    with ``commit``, the completion's commit (d5 not preceded by d1: LeaseLost if the lease
    was taken over first)."""
    lease = h.lease
    if lease.body_key is not None:
        with contextlib.suppress(NotFound):
            h.ctx.store.delete(lease.body_key, guard=h.deadline.check)
    if commit:
        h.commit()
    else:
        leases.delete(h.ctx, lease.name, h.lease_etag, claim=lease.claim)
