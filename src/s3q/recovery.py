"""recovery: own (at a worker's start), stale, and all (the seed's reset done safely), and
what each would touch (``s3q recover --dry-run``). docs/PROTOCOL.md §4, "recover own" and
"recover all"; each request is taken over as :func:`s3q.takeover.take_over` does."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from s3q import layout, leases
from s3q.context import Context
from s3q.records import Intent, Lease
from s3q.scan import Scanner
from s3q.store import ObjectInfo, StoreError, StoreRefused, StoreUnavailable, list_all, of_its_own
from s3q.takeover import (
    MakeJob,
    Recovered,
    RecoveryMode,
    adopt_orphan,
    take_over,
    went_away,
)

__all__ = ["RecoveryCandidate", "RecoveryIncomplete", "RecoveryRefused", "RecoveryStopped",
           "recover", "recovery_candidates"]

log = logging.getLogger(__name__)


class RecoveryIncomplete(StoreError):
    """A recovery that store errors kept from doing all it set out to: ``done`` holds what
    it did (``done.actions``) and the requests whose takeover failed with a store error of
    their own (``done.failed``: it went on with the others); ``stopped``, the error of an
    unavailable store (or of one refusing every request) that ended it (None: it went
    through), after which ``not_attempted``
    were not touched (None: not known, the scan stopped in its listing), and ``at`` the
    request it stopped at, if any (its outcome unknown: done or not; every request whose
    outcome is unknown is in ``done.unknown``)."""

    def __init__(self, done: Recovered, stopped: StoreError | None = None,
                 not_attempted: Sequence[str] | None = (), at: str | None = None) -> None:
        self.done, self.stopped, self.at = done, stopped, at
        self.not_attempted = None if not_attempted is None else list(not_attempted)
        what = (f"stopped, the store refused: {stopped}" if isinstance(stopped, StoreRefused)
                else f"stopped, the store unavailable: {stopped}" if stopped is not None
                else f"{len(done.failed)} request(s) not recovered: store errors")
        super().__init__(f"recovery {what}")


class RecoveryStopped(RecoveryIncomplete, StoreUnavailable):
    """A :class:`RecoveryIncomplete` that an unavailable store ended (``stopped``): caught
    as the :class:`~s3q.store.StoreUnavailable` it was too."""


class RecoveryRefused(RecoveryIncomplete, StoreRefused):
    """A :class:`RecoveryIncomplete` that a store refusing every request ended
    (``stopped``: credentials rejected, no such bucket): caught as the
    :class:`~s3q.store.StoreRefused` it was too. The request it was at, if any, failed with
    its outcome known (the refused request did nothing)."""


@dataclass(frozen=True, slots=True)
class RecoveryCandidate:
    """A request a recovery would touch (see :func:`recovery_candidates`)."""

    name: str
    lease: Lease | None  # None: in processing/ with no lease (put there by something else)
    expired: bool
    error: str | None = None  # its lease could not be read (a store error of its own)

    @property
    def live(self) -> bool:
        """Held by a worker that still renews it: recovering it stops that job."""
        return (self.lease is not None and self.lease.intent is Intent.HELD
                and bool(self.lease.worker) and not self.expired)


def recover(ctx: Context, mode: RecoveryMode, worker_id: str, *, make_job: MakeJob,
            scanner: Scanner, include: str = "*",
            only: Mapping[str, str | None] | None = None) -> Recovered:
    """``mine``: at a worker's start, what this worker id held goes back to wait/ at once
    (or to failed/ when that was its last attempt). ``stale``: one scan now. ``all``: every
    request in flight matching ``include``, live owners fenced too, back to wait/; with
    ``only`` ({name: the claim id of its lease, None: no lease}, as
    :func:`recovery_candidates` found them and an operator confirmed), those requests
    alone, and each only while its lease is still of that claim.

    A store error of one request's own (denied) is logged and the recovery goes on with
    the others, as the takeover scan does; an unavailable store stops it. Either way it
    then raises :class:`RecoveryIncomplete` (:class:`RecoveryStopped` when it stopped;
    :class:`RecoveryRefused` when the store refused every request, which stops it too),
    which tells what was done and what was not."""
    done = Recovered()
    if mode == "stale":  # (every lease read: judged by the lease_ttl it tells, not ours)
        try:
            scanner.scan(worker_id, exact=True, done=done)
        except StoreUnavailable as e:
            raise RecoveryStopped(done, e, not_attempted=None) from e
        except StoreRefused as e:
            raise RecoveryRefused(done, e, not_attempted=None) from e
    else:
        try:
            names = _selection(ctx, mode, include, worker_id, dry_run=False, only=only,
                               done=done)
        except StoreUnavailable as e:  # before any takeover (orphans may have a lease)
            raise RecoveryStopped(done, e, not_attempted=None) from e
        except StoreRefused as e:
            raise RecoveryRefused(done, e, not_attempted=None) from e
        for i, name in enumerate(names):
            claim = None if only is None else only[name]
            try:
                done.actions[name] = take_over(ctx, name, worker_id, mode, make_job=make_job,
                                               claim=claim)
            except StoreUnavailable as e:  # its outcome is unknown; the others would fail
                went_away(done, name, e)
                raise RecoveryStopped(done, e, names[i + 1:], at=name) from e
            except StoreRefused as e:  # so is every other request's: its outcome known
                done.failed[name] = str(e)
                raise RecoveryRefused(done, e, names[i + 1:], at=name) from e
            except StoreError as e:  # this request's own (denied): the others go on
                _failed(done, name, e)
    if done.failed:
        raise RecoveryIncomplete(done)
    return done


def _failed(done: Recovered, name: str, e: StoreError) -> None:
    done.failed[name] = str(e)
    log.warning("recovery of %s failed: %s", name, e,
                extra={"event": "recover_failed", "request": name})


def recovery_candidates(ctx: Context, mode: RecoveryMode, include: str = "*",
                        worker_id: str = "s3q-recover") -> list[RecoveryCandidate]:
    """What :func:`recover` would touch now, changing nothing (``recover --dry-run``, and
    the question before taking live workers' requests). Waiting retries are left out; a
    request whose lease could not be read (denied) is one with ``error`` set."""
    now = ctx.store.now()
    unreadable = Recovered()
    found: list[RecoveryCandidate] = []
    for name in _selection(ctx, mode, include, worker_id, dry_run=True, done=unreadable):
        current = leases.read(ctx, name)
        if current is None:
            found.append(RecoveryCandidate(name, None, expired=True))
        elif current[0].intent is not Intent.RETRY:
            found.append(RecoveryCandidate(name, current[0],
                                           ctx.is_expired(current[1], now, current[0].ttl)))
    return found + [RecoveryCandidate(name, None, expired=False, error=error)
                    for name, error in unreadable.failed.items()]


def _selection(ctx: Context, mode: RecoveryMode, include: str, worker_id: str, *,
               dry_run: bool, only: Mapping[str, str | None] | None = None,
               done: Recovered | None = None) -> list[str]:
    """The one selection of what each recovery mode looks at (``dry_run``: orphans are
    listed, not given a lease; ``only``: none but these names). A lease that a store error
    of its own keeps from being read, and an orphan that one keeps from getting its lease,
    are recorded in ``done.failed`` (raised without ``done``)."""
    now = ctx.store.now()
    names: list[str] = []
    leased: set[str] = set()
    for info in list_all(ctx.store, layout.LEASES):
        name = layout.name_of(layout.LEASES, info.key)
        leased.add(name)
        if mode == "all" and not fnmatch.fnmatchcase(name, include):
            continue
        if only is not None and only.get(name) is None:
            continue  # not listed, or listed without a lease: one was created since
        try:
            found = leases.read(ctx, name)
        except StoreError as e:  # its own (denied): whose it is is not known; the others go on
            if done is None or not of_its_own(e):  # (unavailable, refusing every key)
                raise
            _failed(done, name, e)
            continue
        if found is None or (found[0].intent is Intent.RETRY and found[0].version == 2):
            continue
        lease = found[0]
        if ((mode == "mine" and lease.worker == worker_id) or mode == "all"
                or (mode == "stale" and (not lease.worker
                                         or ctx.is_expired(found[1], now, lease.ttl)))):
            names.append(name)
    if mode == "mine":
        return names
    for info in list_all(ctx.store, layout.PROCESSING):
        name = layout.name_of(layout.PROCESSING, info.key)
        if (name in leased or not ctx.is_request(name) or not ctx.fits(name)
                or (only is not None and name not in only)):
            continue
        if not (fnmatch.fnmatchcase(name, include) if mode == "all"
                else ctx.is_expired(info, now)):
            continue
        if dry_run or _adopted(ctx, info, name, done):
            names.append(name)
    return names


def _adopted(ctx: Context, info: ObjectInfo, name: str, done: Recovered | None) -> bool:
    try:
        return adopt_orphan(ctx, info)
    except StoreUnavailable as e:
        if done is not None:  # its lease may have been created
            went_away(done, name, e)
        raise
    except StoreError as e:
        if done is None or not of_its_own(e):  # (refusing every key: it ends)
            raise
        _failed(done, name, e)
        return False
