"""requeue (failed/ → wait/, r1-r5) and purge: the operator's operations
(docs/PROTOCOL.md §4)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

from s3q import layout, leases
from s3q.body import create_view, is_ours
from s3q.context import Context, Deadline
from s3q.errors import LeaseLost
from s3q.leases import LeaseTaken
from s3q.records import INLINE_MAX, Intent, Lease, new_claim_id
from s3q.renewing import copying
from s3q.settle import Holder, undoing_view
from s3q.store import NotFound, ObjectInfo, PreconditionFailed

__all__ = ["forward", "purge", "requeue"]

MakeHolder = Callable[[Lease, str, Deadline], Holder]
log = logging.getLogger("s3q")


def requeue(ctx: Context, name: str, worker_id: str, make_holder: MakeHolder, *,
            etag: str | None = None) -> bool:
    """failed/NAME → wait/NAME with a fresh attempt count. False if it is not in failed/, or
    NAME has a lease (a request of that name is in flight or waiting for a retry), or (with
    ``etag``, as a listing gave it) failed/NAME is another dead letter by now."""
    key = layout.key(layout.FAILED, name)
    try:
        info = ctx.store.head(key)
        body = ctx.store.get(key) if info.size <= INLINE_MAX else None
    except NotFound:
        return False
    if body is not None:
        data, info = body
    if etag is not None and info.etag != etag:
        return False  # failed again meanwhile: not the dead letter that was listed
    lease = Lease(name=name, worker=worker_id, claim=new_claim_id(), gen=1, seq=0, attempt=0,
                  intent=Intent.REQUEUE, body_b64=Lease.encode(data) if body else None,
                  body_key=None if body else layout.new_body_key(), size=info.size,
                  failed=info.etag, written_at=time.time())
    sent = ctx.monotonic()
    try:  # r1: the lease blocks claims of NAME until the move is complete
        lease, etag = leases.create(ctx, lease)
    except LeaseTaken:
        return False
    h = make_holder(lease, etag, ctx.deadline(sent, name))
    try:
        if lease.body_key is not None:
            try:
                with copying(h):
                    ctx.store.copy(key, lease.body_key, if_source_match=info.etag,
                                   guard=h.deadline.check)
            except (NotFound, PreconditionFailed):  # purged or replaced meanwhile
                leases.delete(ctx, name, h.lease_etag, claim=lease.claim)
                return False
        forward(h)
    except LeaseLost:
        # a slow store outlasted the lease: the requeue lease (r1) is the decision, and
        # whoever takes it over rolls it forward (the fleet's scan, once it expired)
        log.warning("requeue of %s took longer than lease_ttl: the fleet's takeover scan "
                    "finishes it", name, extra={"event": "requeue_interrupted",
                                                "request": name})
    return True


def forward(h: Holder) -> None:
    """r2…r5: the view in wait/, drop the dead letter and its error record, then rest as a
    ``retry`` lease with no attempts made (a claim takes it at once)."""
    ctx, lease, guard = h.ctx, h.lease, h.deadline.check
    name = lease.name
    with copying(h):
        view, created = create_view(ctx, lease, layout.key(layout.WAIT, name), guard)  # r2
    with undoing_view(ctx, layout.key(layout.WAIT, name), view if created else None):
        with contextlib.suppress(NotFound, PreconditionFailed):  # r3
            record = ctx.store.head(layout.key(layout.ERRORS, name))
            ctx.store.delete(record.key, if_match=record.etag, guard=guard)
        if lease.failed is not None:  # r4
            with contextlib.suppress(NotFound, PreconditionFailed):
                ctx.store.delete(layout.key(layout.FAILED, name), if_match=lease.failed,
                                 guard=guard)
        h.write(h.lease.next(intent=Intent.RETRY, attempts=0, not_before=0.0, error=None,
                             view=view, failed=None, written_at=time.time()))  # r5
    ctx.emit("requeued", name, worker=lease.worker)


PurgeState = Literal["wait", "finish", "failed"]


def purge(ctx: Context, state: PurgeState, info: ObjectInfo) -> bool:
    """Delete one request (``info``: as listed, key = its name) from ``state``, with what
    belongs to it. A waiting request that is being claimed (or in flight under another
    request of its name) is not purged: returns False."""
    name = info.key
    purged = False
    if state == "wait":
        found = leases.read(ctx, name)
        if found is not None:
            lease, linfo = found
            if lease.intent is not Intent.RETRY:
                return False  # claimed meanwhile, or in flight
            if not _is_view(ctx, lease, info):
                found = None  # another request waits in wait/NAME: only it was listed
        if found is not None:
            lease, linfo = found
            _drop_leftover_view(ctx, lease)
            try:  # the retry lineage first: fails if a claim takes it now
                ctx.store.delete(layout.key(layout.LEASES, name), if_match=linfo.etag)
            except PreconditionFailed:
                return False
            except NotFound:
                pass
            purged = True
            if lease.body_key is not None:
                ctx.store.delete(lease.body_key)
    key = layout.key(layout.State(state).prefix, name)
    listed_at = info.last_modified
    try:
        if state == "finish" and listed_at <= 0:  # not listed: when was it written?
            head = ctx.store.head(key)
            listed_at = head.last_modified if head.etag == info.etag else listed_at
        ctx.store.delete(key, if_match=info.etag)
        purged = True
    except (NotFound, PreconditionFailed):
        pass
    if not purged:
        return False
    if state == "finish":
        _drop_record(ctx, layout.RESULTS, name, lambda r: r.last_modified <= listed_at)
    elif state == "failed":
        _drop_record(ctx, layout.ERRORS, name, lambda r: not _exists(ctx, key))
    ctx.emit("purged", name, state=state)
    return True


def _drop_record(ctx: Context, prefix: str, name: str,
                 belongs: Callable[[ObjectInfo], bool]) -> None:
    """Delete the result or error record of a purged request, if it is that request's: a
    request of the same name may complete or fail while the purge runs, and write its own.
    A result (d2) is written before its finish/NAME (d3): one written after the purged
    finish/NAME is another completion's. An error record (x3) is written after its
    failed/NAME (x2): while failed/ holds no NAME after the purge, the record read before
    that was the purged request's (its ETag fences a later x3)."""
    with contextlib.suppress(NotFound, PreconditionFailed):
        record = ctx.store.head(layout.key(prefix, name))
        if belongs(record):
            ctx.store.delete(record.key, if_match=record.etag)


def _exists(ctx: Context, key: str) -> bool:
    try:
        ctx.store.head(key)
        return True
    except NotFound:
        return False


def _is_view(ctx: Context, lease: Lease, info: ObjectInfo) -> bool:
    """Is wait/NAME as listed (``info``) the view of this retry lease? Not when it is a
    re-submission of other bytes, which a retry never overwrites (w1): the retry then
    rests in its lease alone, which the listing did not show."""
    if lease.version != 2 or info.etag == lease.view:
        return True  # (a lease of s3q 0.1 holds no body: wait/NAME is its request)
    return is_ours(ctx, lease, layout.key(layout.WAIT, lease.name), info)


def _drop_leftover_view(ctx: Context, lease: Lease) -> None:
    """The processing/ view a retry's holder left when its w3 never ran (a crash, a store
    error): no lease records it, so once the retry lease is purged the scan would adopt it
    as an orphan and run the purged request again. Deleted if it holds this request's
    bytes (before the lease goes: the body of a large request is compared with it)."""
    key = layout.key(layout.PROCESSING, lease.name)
    with contextlib.suppress(NotFound, PreconditionFailed):
        info = ctx.store.head(key)
        if is_ours(ctx, lease, key, info):
            ctx.store.delete(key, if_match=info.etag)
