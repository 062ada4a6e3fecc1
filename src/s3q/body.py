"""The body of record of a request in flight, and its views (docs/PROTOCOL.md §3).

The body of record lives in the lease (small requests: the bytes themselves) or in a private
copy under ``.s3q/body/`` named by the lease (large ones). A *view* is a copy of it at a key
others can see (``processing/NAME``; ``wait/NAME`` while a retry waits; ``failed/NAME`` and
``finish/NAME`` once settled): written with create-if-absent, and deleted only with the ETag
its own creation returned. Whether an existing object is this request's is decided by its
bytes, never by comparing ETags across copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from typing import BinaryIO

from s3q import layout
from s3q.context import Context, Deadline
from s3q.errors import LeaseLost
from s3q.records import Lease
from s3q.store import Guard, NotFound, ObjectInfo, PreconditionFailed

__all__ = ["BodyGone", "create_view", "delete_view", "is_ours", "open_body", "processing_view",
           "read_body", "write_copy", "write_view"]


class BodyGone(LeaseLost):
    """A large request's private body copy is gone: only the last step of its lease (d5,
    x5) deletes it, so the request was settled, by this holder before a crash or by
    another one that took the lease over."""


def read_body(ctx: Context, lease: Lease) -> bytes:
    """The whole body of record (small requests: from the lease, no request)."""
    inline = lease.body
    if inline is not None:
        return inline
    if lease.body_key is None:
        raise NotFound(f"{lease.name}: the lease holds no body of record")
    return ctx.store.get(lease.body_key)[0]


def open_body(ctx: Context, lease: Lease) -> BinaryIO:
    """A stream of the body of record (large requests are never loaded whole)."""
    inline = lease.body
    if inline is not None:
        return io.BytesIO(inline)
    if lease.body_key is None:
        raise NotFound(f"{lease.name}: the lease holds no body of record")
    return ctx.store.open(lease.body_key)[0]


def write_view(ctx: Context, lease: Lease, key: str, guard: Guard) -> str | None:
    """Create the view ``key`` of the request (create-if-absent). Returns its ETag, or None
    when the key holds another object, which is left alone."""
    return create_view(ctx, lease, key, guard)[0]


def create_view(ctx: Context, lease: Lease, key: str,
                guard: Guard) -> tuple[str | None, bool]:
    """:func:`write_view`, and whether this write created the view. An object of the
    request's bytes already at ``key`` (an earlier try of ours, or a producer's
    re-submission of the same bytes) is adopted, not created: it is not this holder's to
    undo (:func:`s3q.settle.undoing_view`)."""
    try:
        return write_copy(ctx, lease, key, guard, if_none_match=True).etag, True
    except PreconditionFailed:
        pass
    try:
        info = ctx.store.head(key)
    except NotFound:
        return None, False  # deleted right after our condition failed: try again next time
    return (info.etag if is_ours(ctx, lease, key, info) else None), False


def processing_view(ctx: Context, lease: Lease, guard: Deadline) -> str | None:
    """c3: the processing/ view (at the claim, or deferred by the job). If the deadline
    passed while it was under way, the lease may be another's by now: the view is deleted
    again (it must not outlive the request) and LeaseLost raised."""
    key = layout.key(layout.PROCESSING, lease.name)
    proc = write_view(ctx, lease, key, guard.check)
    try:
        guard.check()
    except LeaseLost:
        delete_view(ctx, key, proc, lambda: None)
        raise
    return proc


def write_copy(ctx: Context, lease: Lease, key: str, guard: Guard, *,
               if_none_match: bool = False) -> ObjectInfo:
    """Write the body of record at ``key``: a PUT of the bytes, or a copy of the private
    body (server-side where the store can)."""
    inline = lease.body
    if inline is not None:
        return ctx.store.put(key, inline, if_none_match=if_none_match, guard=guard)
    if lease.body_key is None:  # a lease of s3q 0.1 whose request left its views already
        raise BodyGone(f"{lease.name}: the lease holds no body of record")
    try:
        return ctx.store.copy(lease.body_key, key, if_none_match=if_none_match, guard=guard)
    except NotFound as exc:
        raise BodyGone(f"{lease.name}: {lease.body_key} is gone: the request was "
                       "settled") from exc


def is_ours(ctx: Context, lease: Lease, key: str, info: ObjectInfo) -> bool:
    """Does the object at ``key`` (whose HEAD is ``info``) hold this request's bytes? Small
    requests: compared byte for byte. Large ones: by size and a streamed digest of both."""
    if lease.size != info.size and info.size >= 0:
        return False
    try:
        if lease.body is not None:
            return ctx.store.get(key)[0] == lease.body
        if lease.body_key is None:
            return False
        return _digest(ctx, key) == _digest(ctx, lease.body_key)
    except NotFound:
        return False


def delete_view(ctx: Context, key: str, etag: str | None, guard: Guard) -> None:
    """``DEL=etag`` a view this request created (nothing when its ETag is unknown). A view
    changed or gone meanwhile is somebody else's business now and is left alone."""
    if etag is None:
        return
    with contextlib.suppress(NotFound, PreconditionFailed):
        ctx.store.delete(key, if_match=etag, guard=guard)


def _digest(ctx: Context, key: str) -> bytes:
    digest = hashlib.sha256()
    stream = ctx.store.open(key)[0]
    with stream:
        for chunk in iter(lambda: stream.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.digest()
