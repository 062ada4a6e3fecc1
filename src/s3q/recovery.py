"""recovery: own (at a worker's start), stale, and all (the seed's reset done safely), and
what each would touch (``s3q recover --dry-run``). docs/PROTOCOL.md §4, "recover own" and
"recover all"; each request is taken over as :func:`s3q.takeover.take_over` does."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from s3q import layout, leases
from s3q.context import Context
from s3q.records import Intent, Lease
from s3q.store import list_all
from s3q.takeover import MakeJob, Recovered, RecoveryMode, Scanner, adopt_orphan, take_over

__all__ = ["RecoveryCandidate", "recover", "recovery_candidates"]


@dataclass(frozen=True, slots=True)
class RecoveryCandidate:
    """A request a recovery would touch (see :func:`recovery_candidates`)."""

    name: str
    lease: Lease | None  # None: in processing/ with no lease (put there by something else)
    expired: bool

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
    alone, and each only while its lease is still of that claim."""
    if mode == "stale":  # (every lease read: judged by the lease_ttl it tells, not ours)
        return scanner.scan(worker_id, exact=True)
    done = Recovered()
    for name in _selection(ctx, mode, include, worker_id, dry_run=False, only=only):
        claim = None if only is None else only[name]
        done.actions[name] = take_over(ctx, name, worker_id, mode, make_job=make_job,
                                       claim=claim)
    return done


def recovery_candidates(ctx: Context, mode: RecoveryMode, include: str = "*",
                        worker_id: str = "s3q-recover") -> list[RecoveryCandidate]:
    """What :func:`recover` would touch now, changing nothing (``recover --dry-run``, and
    the question before taking live workers' requests). Waiting retries are left out."""
    now = ctx.store.now()
    found: list[RecoveryCandidate] = []
    for name in _selection(ctx, mode, include, worker_id, dry_run=True):
        current = leases.read(ctx, name)
        if current is None:
            found.append(RecoveryCandidate(name, None, expired=True))
        elif current[0].intent is not Intent.RETRY:
            found.append(RecoveryCandidate(name, current[0],
                                           ctx.is_expired(current[1], now, current[0].ttl)))
    return found


def _selection(ctx: Context, mode: RecoveryMode, include: str, worker_id: str, *,
               dry_run: bool, only: Mapping[str, str | None] | None = None) -> list[str]:
    """The one selection of what each recovery mode looks at (``dry_run``: orphans are
    listed, not given a lease; ``only``: none but these names)."""
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
        found = leases.read(ctx, name)
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
        if dry_run or adopt_orphan(ctx, info):
            names.append(name)
    return names
