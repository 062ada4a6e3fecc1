"""The scanner role: one worker of a fleet runs the takeover scan (docs/PROTOCOL.md §4,
"scanner role"), so that the fleet's idle LIST rate does not grow with its size.

The role is the object ``.s3q/scanner``, a small lease: created with ``PUT!``, renewed with
``PUT=e`` at every scan of its holder, taken over with ``PUT=e`` by any worker once it is
expired (not written for ``role TTL + 2 s``, store clock). Its TTL is
``max(lease_ttl - lease_ttl/3, scan_interval)``: a dead holder's last role write is at most
one lease renewal interval after the last renewal of any lease it held, so the role
expires no later than those leases do, and the takeover bound of invariant 3 still holds.
Every role write says its writer's role TTL (``ttl``), and whoever judges the role's expiry
uses the shorter of that and its own: in a fleet whose workers run with different
lease_ttl, a dead scanner of a short one is replaced within its own TTL (judged by a longer
one, its leases' takeovers waited for the longer), and a live scanner of a long one, which
scans less often than the workers of a short one need (invariant 3), gives way to one of
them, which keeps it (judged by its TTL, it is live). A record of an earlier s3q says none:
the reader's own TTL judges it.

The role is an economy, not a lock: two scanners at once (a holder that stalled past its
TTL, and its successor) are as safe as every worker scanning was, because every takeover
is a conditional write of the lease it takes over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, replace

from s3q.context import Context
from s3q.records import CLOCK_MARGIN, new_claim_id
from s3q.store import (
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    Store,
    StoreError,
    of_its_own,
)

__all__ = ["ROLE_KEY", "RoleRecord", "RoleSeen", "ScannerRole", "read_role", "seen_role"]

log = logging.getLogger("s3q")

#: The role object, under the queue's root.
ROLE_KEY = ".s3q/scanner"


@dataclass(frozen=True, slots=True)
class RoleRecord:
    """The body of ``.s3q/scanner``. The claim id (new at every acquisition) makes every
    write's bytes unique, so ``If-Match`` on it is a fence, as on a request's lease."""

    worker: str
    claim: str
    gen: int
    seq: int
    written_at: float
    #: The writer's role TTL (0: a record of an earlier s3q, judged by the reader's own).
    ttl: float = 0.0
    #: The writer's scan interval (0: not told): how often it scans, for ``s3q status``.
    every: float = 0.0

    def to_bytes(self) -> bytes:
        return json.dumps({"v": 1, "worker": self.worker, "claim": self.claim, "gen": self.gen,
                           "seq": self.seq, "written_at": self.written_at, "ttl": self.ttl,
                           "every": self.every},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> RoleRecord | None:
        """The record, or None when it is not one (corrupt: treated as held by nobody)."""
        try:
            data = json.loads(body)
            if data.get("v") != 1:
                return None
            return cls(str(data["worker"]), str(data["claim"]), int(data["gen"]),
                       int(data["seq"]), float(data["written_at"]),
                       _told(data.get("ttl")), _told(data.get("every")))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError,
                RecursionError):  # (RecursionError: JSON nested deeper than json.loads goes)
            return None  # (OverflowError: int() of Infinity, float() of a 400-digit integer)


def _told(value: object) -> float:
    """A duration a record tells; not a positive number a float holds (nothing any s3q
    writes; absent from an earlier s3q's records): 0, not told, as a lease's ``ttl``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        told = float(value)
    except OverflowError:  # (an integer of 309 digits or more)
        return 0.0
    return told if 0 < told < math.inf else 0.0


def read_role(store: Store) -> tuple[RoleRecord, ObjectInfo] | None:
    """The role's record as it is now (None: vacant, or not a record)."""
    try:
        body, info = store.get(ROLE_KEY)
    except NotFound:
        return None
    record = RoleRecord.from_bytes(body)
    return None if record is None else (record, info)


@dataclass(frozen=True, slots=True)
class RoleSeen:
    """The scanner role as an operator sees it (``s3q status``, the dashboard)."""

    worker: str
    since: float  # seconds since its holder last wrote it: since its last scan began
    every: float  # its holder's scan interval (0: not told, an earlier s3q)
    live: bool  # not expired by the TTL it tells: its holder is scanning
    #: Its GET failed with a store error of its own (denied): who scans is not known
    #: (``worker`` empty, not ``live``).
    error: str | None = None

    @property
    def scans_every(self) -> float:
        """The live scanner's interval (0: none live, or not told)."""
        return self.every if self.live else 0.0


def seen_role(ctx: Context) -> RoleSeen | None:
    """Who holds the scanner role, and since when (None: vacant). One GET. One that fails
    with a store error of its own (denied: another account's object, a KMS key not
    granted) says so (``error``), as an unreadable lease is named: status and the
    dashboard go on, judging OVERDUE by their own scan interval."""
    try:
        found = read_role(ctx.store)
    except StoreError as e:
        if not of_its_own(e):  # (unavailable, or refusing every key: not the role's own)
            raise
        return RoleSeen("", 0.0, 0.0, False, " ".join(str(e).split())[:300])
    if found is None:
        return None
    record, info = found
    since = ctx.store.now() - info.last_modified
    return RoleSeen(record.worker, max(0.0, since), record.every,
                    since <= (record.ttl or role_ttl(ctx)) + CLOCK_MARGIN)


def role_ttl(ctx: Context) -> float:
    """This process's role TTL (by its settings)."""
    config = ctx.config
    return max(config.lease_ttl - config.renew_interval, config.effective_scan_interval)


class ScannerRole:
    """This process's view of the scanner role of one queue. :meth:`held` is asked when a
    scan is due (:class:`s3q.scan.Scanner`); thread-safe."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._mine: tuple[RoleRecord, str] | None = None  # our last write and its ETag

    @property
    def ttl(self) -> float:
        return role_ttl(self.ctx)

    @property
    def holder(self) -> str | None:
        """This process's worker id if it holds the role (as far as it knows)."""
        mine = self._mine
        return None if mine is None else mine[0].worker

    def held(self, worker_id: str) -> bool:
        """Is (or becomes) ``worker_id`` the scanner? Renews the role when it is ours, takes
        it when it is vacant or expired. A role it may not read (denied): True, it scans
        without it. Other store errors propagate (the scan is skipped)."""
        with self._lock:
            mine = self._mine
            if mine is not None and mine[0].worker == worker_id:
                return self._renew(*mine)
            self._mine = None
            return self._acquire(worker_id)

    def resign(self) -> None:
        """Give the role up (a graceful stop): the next worker whose scan is due takes it
        at once instead of after the TTL. Best effort."""
        with self._lock:
            mine, self._mine = self._mine, None
        if mine is not None:
            with contextlib.suppress(StoreError):  # s3
                self.ctx.store.delete(ROLE_KEY, if_match=mine[1])
            log.info("scanner role given up by %s", mine[0].worker,
                     extra={"event": "scanner_role_resigned", "worker": mine[0].worker})

    # ------------------------------------------------------------------ s1, s2
    def _renew(self, record: RoleRecord, etag: str) -> bool:
        new = replace(record, seq=record.seq + 1, written_at=time.time(), ttl=self.ttl,
                      every=self.ctx.config.effective_scan_interval)
        try:  # s2
            self._mine = (new, self.ctx.store.put(ROLE_KEY, new.to_bytes(), if_match=etag).etag)
            return True
        except (PreconditionFailed, NotFound):
            return self._settle(new, "renew")

    def _acquire(self, worker_id: str) -> bool:
        store = self.ctx.store
        try:
            body, info = store.get(ROLE_KEY)
        except NotFound:
            body, info = b"", None
        except StoreError as exc:  # its own (denied): whose it is, and whether it expired,
            if not of_its_own(exc):  # (unavailable, or refusing every key: no scan either)
                raise
            log.warning("scanner role cannot be read (%s): %s scans without it", exc,
                        worker_id, extra={"event": "scanner_role_unreadable",
                                          "worker": worker_id})
            return True  # is not known: scan (an economy, not a lock: two scanners are safe)
        current = RoleRecord.from_bytes(body) if info is not None else None
        if info is not None and not self._expired(info, current):
            if current is None or current.worker != worker_id:
                return False
            # our own record (this worker id restarted, or a write of ours whose answer was
            # lost): carry on with it
            return self._renew(current, info.etag)
        new = RoleRecord(worker_id, new_claim_id(), (current.gen if current else 0) + 1, 0,
                         time.time(), self.ttl, self.ctx.config.effective_scan_interval)
        try:  # s1: PUT! when vacant, PUT=e when expired
            if info is None:
                got = store.put(ROLE_KEY, new.to_bytes(), if_none_match=True)
            else:
                got = store.put(ROLE_KEY, new.to_bytes(), if_match=info.etag)
        except (PreconditionFailed, NotFound) as exc:
            # its claim id is new: only a retry of this request could have put it there, so
            # a first try's 412 or 404 is certain (another write came first): no read-back
            return self._settle(new, "take") if exc.retried else False
        self._mine = (new, got.etag)
        log.info("scanner role taken by %s (gen %d)", worker_id, new.gen,
                 extra={"event": "scanner_role", "worker": worker_id, "gen": new.gen,
                        "previous": current.worker if current else None})
        return True

    def _settle(self, attempted: RoleRecord, what: str) -> bool:
        """A role write lost its condition: read the role back. Our claim id there means an
        earlier try of this write took effect (an ambiguous answer); else the role is
        another's now."""
        found = self._read()
        if found is not None and found[0].claim == attempted.claim:
            self._mine = (found[0], found[1].etag)
            return True
        self._mine = None
        if what == "renew":
            log.info("scanner role lost by %s to %s", attempted.worker,
                     found[0].worker if found else "nobody",
                     extra={"event": "scanner_role_lost", "worker": attempted.worker})
        return False

    def _read(self) -> tuple[RoleRecord, ObjectInfo] | None:
        return read_role(self.ctx.store)

    def _expired(self, info: ObjectInfo, record: RoleRecord | None) -> bool:
        """Judged by the shorter of the TTL the record says (its writer's) and this
        worker's own (a record that says none: by ours)."""
        ttl = min(record.ttl, self.ttl) if record is not None and record.ttl > 0 else self.ttl
        return self.ctx.store.now() > info.last_modified + ttl + CLOCK_MARGIN
