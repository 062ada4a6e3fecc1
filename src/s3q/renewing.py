"""Renewing a lease while a large request is copied (docs/PROTOCOL.md §4): every copy of a
large request's bytes is a server-side copy that may take longer than the lease lives (in parts
over 5 GiB: tens of GiB take minutes), and is sent under the holder's deadline, checked before
each part. Nothing else renews the lease meanwhile: a claim's job and its heartbeat exist only
once the claim is done (c1b, c3: :mod:`s3q.claim`), and a job's outcome (d3, w1, x2), its
deferred view (c3) and a takeover's steps (t2) run under the job's write lock, which its
heartbeat waits for. :func:`renewed_while` renews it meanwhile; :func:`copying` is that for a
holder of the lease (a :class:`s3q.job.Job`)."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from s3q import leases
from s3q.context import Context, Deadline
from s3q.errors import LeaseLost
from s3q.leases import LeaseTaken
from s3q.records import INLINE_MAX, Lease
from s3q.store import StoreError

__all__ = ["Held", "Holding", "copying", "renewed_while"]

log = logging.getLogger("s3q")


class Held:
    """The lease of a claim under way and its ETag, as its renewals (:func:`renewed_while`)
    leave them; ``taken``: the answer of the renewal that found it taken over (or gone)."""

    __slots__ = ("etag", "lease", "taken")

    def __init__(self, lease: Lease, etag: str) -> None:
        self.lease, self.etag = lease, etag
        self.taken: LeaseTaken | None = None


@contextlib.contextmanager
def renewed_while(ctx: Context, held: Held, deadline: Deadline) -> Iterator[None]:
    """While a copy of a large request runs (c1b, c3, …), the lease is renewed every
    ``renew_interval`` (``PUT=e``, ``seq`` + 1, as a job's heartbeat) and
    ``deadline`` moved with each renewal, so that the copy's parts, and c2 after it, are
    still sent in time. A renewal that finds the lease taken over (or gone) ends the
    deadline at once, which stops the copy before its next part (the taker makes its own
    copy; this one's writes would be fenced anyway), and says so (``copy_lease_lost``);
    one that fails otherwise is tried again at the next interval. When no thread can be started
    (RuntimeError: the process is at its limit) the copy runs unrenewed, as a slow one
    would, rather than failing the step outright."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ctx.config.renew_interval):
            sent = ctx.monotonic()
            try:
                held.lease, held.etag = leases.write(
                    ctx, held.lease.next(written_at=time.time()), held.etag)
            except LeaseTaken as exc:
                held.taken = exc
                deadline.at = -math.inf  # (the guard of the copy's next request refuses)
                log.warning("%s: the lease was taken over during a copy (%s): the copy "
                            "stops, its step left to the taker", held.lease.name, exc,
                            extra={"event": "copy_lease_lost", "request": held.lease.name,
                                   "gen": held.lease.gen})
                return
            except StoreError as exc:
                log.warning("%s: the lease could not be renewed during a copy: %s",
                            held.lease.name, exc,
                            extra={"event": "renew_failed", "request": held.lease.name})
                continue
            deadline.at = ctx.deadline(sent).at

    thread = threading.Thread(target=renew, name="s3q-copy-renew", daemon=True)
    try:
        thread.start()
    except RuntimeError as exc:  # no thread to be had (the process's limit): unrenewed
        log.warning("%s: no thread to renew the lease during a copy (%s): a copy that "
                    "outlasts the lease is left to a takeover", held.lease.name, exc,
                    extra={"event": "renew_no_thread", "request": held.lease.name})
        started = False
    else:
        started = True
    if not started:  # (the copy runs outside the except: its errors chain to nothing)
        yield
        return
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Holding(Protocol):
    """A holder of a lease (:class:`s3q.job.Job`), as :func:`copying` renews it."""

    ctx: Context
    lease: Lease
    lease_etag: str
    deadline: Deadline

    def taken_over(self, consequence: str) -> LeaseLost: ...


@contextlib.contextmanager
def copying(h: Holding, *, size: int | None = None) -> Iterator[None]:
    """A copy of a large request's bytes by the holder ``h`` of its lease (d3, w1, x2, r2,
    c3 deferred or of a takeover, t2's private copy), under ``h.deadline``: the lease is
    renewed meanwhile (:func:`renewed_while`), and ``h.lease`` and ``h.lease_etag`` are
    the last renewal's when it ends. ``h`` must not write its lease inside. Only for a
    large request (one with a private copy, or ``size`` over ``INLINE_MAX``: another
    object's copy): a small one is copied in one request, and pays for no thread. A
    renewal that found the lease taken over makes ``h`` lost (``h.taken_over``: its
    handler stopped, ``lease_lost`` said), and LeaseLost is raised, whether or not the copy
    was stopped: not a deadline that passed by itself, which would leave the holder to
    think the lease still its own until it expires."""
    if (h.lease.body_key is None) if size is None else size <= INLINE_MAX:
        yield
        return
    held = Held(h.lease, h.lease_etag)
    try:
        with renewed_while(h.ctx, held, h.deadline):
            yield
    finally:
        h.lease, h.lease_etag = held.lease, held.etag
        if held.taken is not None:  # (replaces the LeaseLost of the guard that stopped it)
            raise h.taken_over("its copy was stopped; the taker settles the request") \
                from held.taken
