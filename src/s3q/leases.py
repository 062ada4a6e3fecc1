"""Reading and writing ``.s3q/lease/NAME``: every lease write is conditional, and every
lost condition is settled by reading the lease back (docs/PROTOCOL.md §3, "The lease
record").

A write can lose its condition for two reasons: somebody else wrote the lease (a takeover,
a racing claim: the lease is not ours, :class:`LeaseTaken`), or an earlier write *of ours*
took effect although it was reported as failed and was retried (by botocore or by us). The
read-back tells them apart by the claim id, which only this claim's writes carry.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from s3q import layout
from s3q.context import Context
from s3q.records import Lease, RecordError
from s3q.store import (
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    StoreError,
    list_all,
    of_its_own,
)

__all__ = ["LeaseTaken", "LeaseUnreadable", "commit", "create", "delete", "read", "write"]

log = logging.getLogger("s3q")

#: How many times a write is rebased on our own applied writes before giving up.
_REBASES = 5


class LeaseTaken(PreconditionFailed):
    """A lease write lost to somebody else; ``current`` is the lease found instead (None:
    no lease now)."""

    def __init__(self, name: str, current: tuple[Lease, ObjectInfo] | None) -> None:
        super().__init__(f"{layout.LEASES}{name}: held by another claim")
        self.current = current


class LeaseUnreadable(StoreError):
    """The lease's GET was refused with a store error of its own (denied: another account's
    object, a KMS key not granted); ``error`` is that error."""

    def __init__(self, name: str, error: StoreError) -> None:
        super().__init__(str(error))
        self.name, self.error, self.retried = name, error, error.retried


def read(ctx: Context, name: str) -> tuple[Lease, ObjectInfo] | None:
    """The lease of NAME and its ObjectInfo, or None. Raises :class:`LeaseUnreadable` for
    a store error of the lease's own (:func:`~s3q.store.of_its_own`; others raise as
    they are)."""
    try:
        body, info = ctx.store.get(layout.key(layout.LEASES, name))
    except NotFound:
        return None
    except StoreError as exc:
        if not of_its_own(exc):
            raise
        raise LeaseUnreadable(name, exc) from exc
    return _decode(name, body), info


#: The claim id of the stand-in for a lease record that cannot be decoded (held by nobody).
CORRUPT = "corrupt"

#: Leases read at once by a look at every lease (:func:`read_all`).
READERS = 8

Found = tuple[Lease, ObjectInfo]


def read_all(ctx: Context, seen: dict[str, Found], limit: int | None = None,
             unreadable: list[tuple[str, str]] | None = None) -> Iterator[Found]:
    """Every lease (or the first ``limit`` listed): LIST, then a GET each, :data:`READERS`
    at once (no more are asked for until those are answered: a stop or an exit waits for
    those at most). Those whose ETag is the one in ``seen`` (an earlier look) are taken
    as read then: a burst that waits looks again every fraction of a second. A GET that
    fails with a store error of its own (denied) raises it, or with ``unreadable``, leaves
    the lease out and records it there: (name, error)."""
    with ThreadPoolExecutor(READERS, "s3q-read") as pool:
        listed: list[tuple[str, ObjectInfo]] = []
        todo: list[str] = []  # (of listed: not in seen as it is now)
        for i, info in enumerate(list_all(ctx.store, layout.LEASES)):
            if i == limit:
                break
            name = layout.name_of(layout.LEASES, info.key)
            listed.append((name, info))
            if name not in seen or seen[name][1].etag != info.etag:
                todo.append(name)
            if len(todo) == READERS:
                yield from _read_some(ctx, pool, listed, todo, seen, unreadable=unreadable)
                listed, todo = [], []
        yield from _read_some(ctx, pool, listed, todo, seen, unreadable=unreadable)


def _read_some(ctx: Context, pool: ThreadPoolExecutor, listed: list[tuple[str, ObjectInfo]],
               todo: list[str], seen: dict[str, Found], *,
               unreadable: list[tuple[str, str]] | None) -> Iterator[Found]:
    """The ``listed`` leases in order: those in ``todo`` read now (at once), the others
    as read in ``seen``."""
    def read_one(name: str) -> Found | StoreError | None:
        try:
            return read(ctx, name)
        except LeaseUnreadable as e:  # its own (denied)
            if unreadable is None:
                raise
            return e.error

    got = dict(zip(todo, pool.map(read_one, todo), strict=True))
    for name, _ in listed:
        found = got[name] if name in got else seen[name]
        if isinstance(found, StoreError):
            assert unreadable is not None
            unreadable.append((name, str(found)))
        elif found is not None:
            yield found


def unreadable_problem(unreadable: list[tuple[str, str]]) -> str:
    """What ``s3q status`` and the dashboard say of leases :func:`read_all` could not read."""
    return (f"{len(unreadable)} lease(s) in .s3q/lease/ cannot be read: their requests are "
            "not shown, and no worker can take them over if their worker dies (grant "
            "s3:GetObject on them, see 's3q iam-policy'; a KMS key not granted?): "
            + "; ".join(f"{n}: {' '.join(e.split())[:200]}" for n, e in unreadable[:3]))


def create(ctx: Context, lease: Lease) -> tuple[Lease, str]:
    """``PUT!`` a new lease (c1, orphans, requeue); returns what was written and its ETag.
    Raises :class:`LeaseTaken` with the lease found when one exists that is not this claim's."""
    lease = _told(ctx, lease)
    try:
        return lease, ctx.store.put(_key(lease), lease.to_bytes(), if_none_match=True).etag
    except PreconditionFailed:
        found = read(ctx, lease.name)
        if found is not None and found[0].claim == lease.claim:
            return lease, found[1].etag  # our own create took effect before a retry
        raise LeaseTaken(lease.name, found) from None


def write(ctx: Context, lease: Lease, etag: str) -> tuple[Lease, str]:
    """``PUT=etag`` the next version of a lease this claim holds; returns what was written
    and its ETag. If the condition fails because one of our own earlier writes took effect,
    the write is redone on top of it (sequence number above it). Raises
    :class:`LeaseTaken` when the lease now belongs to another claim, or is gone."""
    lease = _told(ctx, lease)
    for _ in range(_REBASES):
        try:
            return lease, ctx.store.put(_key(lease), lease.to_bytes(), if_match=etag).etag
        except (PreconditionFailed, NotFound):
            found = read(ctx, lease.name)
            if found is None or found[0].claim != lease.claim:
                raise LeaseTaken(lease.name, found) from None
            current, info = found
            if current == lease:
                return lease, info.etag
            lease, etag = replace(lease, seq=current.seq + 1), info.etag
    raise LeaseTaken(lease.name, read(ctx, lease.name))


def delete(ctx: Context, name: str, etag: str, *, claim: str | None = None) -> None:
    """``DEL=etag`` a lease (the last step of an operation). A lease that changed meanwhile
    belongs to somebody else now and stays; a missing one was deleted by our own earlier try.
    With ``claim`` (the holder's claim id), a lease changed by a write of that claim which
    took effect unseen (a renewal during a long copy answered as failed, §2.3) is still
    ours: it is deleted at its current ETag."""
    for _ in range(_REBASES):
        try:
            ctx.store.delete(layout.key(layout.LEASES, name), if_match=etag)
            return
        except NotFound:
            return
        except PreconditionFailed:
            found = read(ctx, name) if claim is not None else None
            if found is None or found[0].claim != claim:
                return
            etag = found[1].etag


def commit(ctx: Context, lease: Lease, etag: str) -> None:
    """``DEL=etag`` the lease as the commit of a completion (d5). Raises
    :class:`LeaseTaken` if the lease is not ours to delete (taken over: the request runs
    again, or was settled by its taker). A lease still of this claim (a renewal of ours took
    effect unseen, §2.3) is deleted at its current ETag. Gone, or a lease of another claim
    and no later generation, is a commit only when the answer came to a retry (an earlier
    try of ours may have taken effect): to a first try it means somebody else changed or
    deleted the lease, and our completion did not take effect."""
    for _ in range(_REBASES):
        try:  # (it may share a request with other completions' commits: s3q.batching)
            ctx.deletes.delete(_key(lease), etag)
            return
        except NotFound as exc:
            if exc.retried:
                return  # ours, applied by an earlier try
            raise LeaseTaken(lease.name, None) from None  # taken over and settled meanwhile
        except PreconditionFailed as exc:
            found = read(ctx, lease.name)
            if found is not None and found[0].claim == lease.claim:
                etag = found[1].etag  # our own renewal took effect unseen: still ours
                continue
            if exc.retried and (found is None or found[0].gen <= lease.gen):
                return  # an earlier try of ours took effect; a later request's lease since
            raise LeaseTaken(lease.name, found) from None
    raise LeaseTaken(lease.name, read(ctx, lease.name))


def _told(ctx: Context, lease: Lease) -> Lease:
    """The lease as written: it tells the writer's lease_ttl, by which others judge it."""
    return lease if lease.ttl == ctx.config.lease_ttl else replace(lease, ttl=ctx.config.lease_ttl)


def _key(lease: Lease) -> str:
    return layout.key(layout.LEASES, lease.name)


def _decode(name: str, body: bytes) -> Lease:
    try:
        return Lease.from_bytes(body)
    except RecordError:
        log.error("corrupt lease record for %s; treating it as held by nobody", name,
                  extra={"event": "corrupt_lease", "request": name})
        return Lease(name=name, worker="", claim=CORRUPT, gen=0, seq=0, attempt=1,
                     **_salvaged(body))


def _salvaged(body: bytes) -> dict[str, Any]:
    """The body of record a corrupt lease still holds, if it can be read (a field of the
    wrong type elsewhere, edited by hand): the stand-in keeps it, so a takeover releases
    the request instead of finding it gone (the lease held its only copy)."""
    try:
        data = json.loads(body)
        inline, key = data.get("body_b64"), data.get("body_key")
        if isinstance(inline, str):  # (with its size: is_ours compares sizes first)
            body = base64.b64decode(inline, validate=True)
            return {"body_b64": Lease.encode(body), "size": len(body)}
        if isinstance(key, str) and key.startswith(layout.BODIES):
            return {"body_key": key}  # (its size: from its HEAD, by the takeover)
    except (ValueError, AttributeError, RecursionError):  # (not JSON, not an object,
        # not base64, nested too deep)
        pass
    return {}
