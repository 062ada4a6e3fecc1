"""The queue: what a program or the CLI calls. Each operation of docs/PROTOCOL.md §4 lives
in its own module, named in the doc; this class holds them together:

    submit, ls, counts, lease, …    here (reads, and submit: one PUT)
    claim                          :mod:`s3q.claim`     (c0-c3, c1')
    complete, fail, release        :mod:`s3q.settle`    (d, w, x steps), via :class:`Job`
    takeover, recover_*            :mod:`s3q.takeover`, :mod:`s3q.scan`, :mod:`s3q.recovery`
    requeue, purge                 :mod:`s3q.requeue`   (r steps)
"""

from __future__ import annotations

import fnmatch
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import BinaryIO

from s3q import clock, layout, leases
from s3q import requeue as requeue_op
from s3q.backends import S3Options, open_store
from s3q.bulk import Undone, each, incomplete
from s3q.claim import Claimer
from s3q.context import Context, Deadline, Listener, QueueConfig, error_info
from s3q.job import Job, LeaseKeeper
from s3q.layout import State
from s3q.records import CLOCK_MARGIN, ErrorRecord, Intent, Lease
from s3q.recovery import RecoveryCandidate, recover, recovery_candidates
from s3q.scan import Scanner
from s3q.scanrole import RoleSeen, ScannerRole, seen_role
from s3q.store import InvalidKey, LeftOut, NotFound, ObjectInfo, Store, list_all, validate_key
from s3q.takeover import Recovered, RecoveryMode, kept_corrupt
from s3q.workerids import RECOVER_ALL, check_worker_id

__all__ = ["Outlook", "Queue", "QueueConfig", "Recovered", "RecoveryCandidate",
           "RecoveryMode", "error_info"]

Data = bytes | str | PathLike[str] | BinaryIO

#: A burst waits this long at most for a file another program writes into wait/ to settle
#: (one still written to after that, a log file the filter matches, is left).
SETTLING_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class Outlook:
    """See :meth:`Queue.outlook`."""

    #: Seconds until the soonest of ``waiting`` may be claimable; None: nothing to wait for.
    next_due: float | None
    waiting: list[str]
    #: (name, why) of requests a burst does not wait for.
    left: list[tuple[str, str]]
    #: Every lease seen, with its ETag (for the next look: a lease that changed is renewed;
    #: one that did not is not read again).
    leases: dict[str, tuple[Lease, ObjectInfo]]
    #: Requests another program was still writing (:attr:`~s3q.store.Page.settling`):
    #: name -> store time of the first look that found it so.
    settling: dict[str, float] = field(default_factory=dict)


class Queue:
    """A request queue in an object store.

    >>> q = Queue("./s3q-data")                       # or "s3://bucket/prefix"
    >>> q.submit("a_request.json", b'{"x": 1}')
    >>> job = q.claim("worker-1")
    >>> if job:
    ...     with job:                                 # renews the lease in the background,
    ...         handle(job.read())                    # completes on success, fails on error
    """

    def __init__(
        self,
        store: Store | str = "./s3q-data",
        config: QueueConfig | None = None,
        *,
        s3: S3Options | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = clock.monotonic,
    ) -> None:
        self.store: Store = open_store(store, s3) if isinstance(store, str) else store
        self.config = config or QueueConfig()
        self.ctx = Context(self.store, self.config, rng or random.Random(), monotonic)
        self.listeners: list[Listener] = self.ctx.listeners
        self._lock = threading.Lock()
        self._keeper: LeaseKeeper | None = None
        self._claimer = Claimer(self.ctx, self._job)
        self._scanner = Scanner(self.ctx, self._claimer, self._job, ScannerRole(self.ctx))

    # ------------------------------------------------------------------ basics
    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
        if self._scanner.role is not None:
            self._scanner.role.resign()
        self.ctx.deletes.close()
        self.store.close()

    @property
    def keeper(self) -> LeaseKeeper:
        """The background thread renewing the leases of running jobs (started lazily)."""
        with self._lock:
            if self._keeper is None:
                self._keeper = LeaseKeeper(self.config.renew_interval)
            return self._keeper

    def _job(self, lease: Lease, etag: str, deadline: Deadline) -> Job:
        return Job(self.ctx, lease, etag, deadline, keeper=lambda: self.keeper)

    def is_request(self, name: str) -> bool:
        """Is the object named ``name`` a request (matches the filter, is a valid name)?"""
        return self.ctx.is_request(name)

    # ------------------------------------------------------------------ submit / inspect
    def submit(self, name: str, data: Data) -> ObjectInfo:
        """Put a request into wait/ (replacing a waiting request of the same name, as any S3
        client would). ``data``: bytes, str (UTF-8), a path, or a binary file (streamed)."""
        validate_key(name)
        if not self.is_request(name):
            raise InvalidKey(
                f"request name {name!r} does not match the queue's filter "
                f"{self.config.filter!r}: no worker would ever pick it up")
        if not self.ctx.fits(name):
            raise InvalidKey(
                f"request name {name[:40]!r}… is too long for this store: its longest "
                f"derived key ({layout.longest_key('')}NAME) would exceed "
                f"{self.store.max_key_bytes} bytes (names of at most "
                f"{layout.longest_name(self.store.max_key_bytes)} bytes, UTF-8, fit)")
        key = layout.key(layout.WAIT, name)
        if isinstance(data, str):
            info = self.store.put(key, data.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            info = self.store.put(key, bytes(data))
        elif isinstance(data, PathLike):
            with Path(data).open("rb") as fh:
                info = self.store.put(key, fh)
        else:
            info = self.store.put(key, data)
        self.ctx.emit("submitted", name, size=info.size)
        return info

    def ls(self, state: State | str, unusable: list[str] | None = None,
           left_out: list[LeftOut] | None = None,
           settling: dict[str, float] | None = None) -> Iterator[ObjectInfo]:
        """Requests in one state, as ObjectInfo with ``key`` = the request name. Names that
        match the filter but cannot be requests (:meth:`Context.unusable`) are appended to
        ``unusable`` when given, and to ``left_out`` what the store could not list at all
        (:attr:`~s3q.store.Page.left_out`) that may be a request: a folder, or a file whose
        name (as shown) matches the filter; and to ``settling`` the requests the store lists
        once their writer is done (:attr:`~s3q.store.Page.settling`): name -> from when."""
        prefix = State(state).prefix
        met: list[LeftOut] | None = [] if left_out is not None else None
        pending: list[tuple[str, float]] | None = [] if settling is not None else None
        for info in list_all(self.store, prefix, left_out=met, settling=pending):
            name = layout.name_of(prefix, info.key)
            if self.is_request(name):
                yield ObjectInfo(name, info.etag, info.size, info.last_modified)
            elif unusable is not None and self.ctx.unusable(name, info.size) is not None:
                unusable.append(name)
        if left_out is not None and met:
            left_out += [e for e in met if e.key.endswith("/") or fnmatch.fnmatchcase(
                e.key[len(prefix):], self.config.filter)]
        if settling is not None and pending:
            settling.update((name, at) for key, at in pending
                            if self.is_request(name := layout.name_of(prefix, key)))

    def counts(self) -> dict[str, int]:
        """Number of requests per state: {"wait": n, "processing": n, "finish": n, "failed": n}."""
        return {s.value: sum(1 for _ in self.ls(s)) for s in State}

    def lease(self, name: str) -> tuple[Lease, ObjectInfo] | None:
        """The current lease of a request, if any (for status and inspection)."""
        return leases.read(self.ctx, name)

    def leases(self, limit: int | None = None, unreadable: list[tuple[str, str]] | None = None
               ) -> Iterator[tuple[Lease, ObjectInfo]]:
        """Every lease (or the first ``limit`` listed), read 8 at a time. A
        lease whose GET fails with a store error of its own (denied) raises it, or with
        ``unreadable``, is left out and recorded there: (name, error)."""
        return leases.read_all(self.ctx, {}, limit, unreadable)

    def error_record(self, name: str) -> ErrorRecord | None:
        try:
            body, _ = self.store.get(layout.key(layout.ERRORS, name))
        except NotFound:
            return None
        return ErrorRecord.from_bytes(body)

    def result(self, name: str) -> bytes | None:
        try:
            return self.store.get(layout.key(layout.RESULTS, name))[0]
        except NotFound:
            return None

    def expires(self, info: ObjectInfo, ttl: float = 0.0) -> float:
        return self.ctx.expires(info, ttl)

    def is_expired(self, info: ObjectInfo, now: float, ttl: float = 0.0) -> bool:
        return self.ctx.is_expired(info, now, ttl)

    def is_overdue(self, info: ObjectInfo, now: float, ttl: float = 0.0,
                   every: float = 0.0) -> bool:
        return self.ctx.is_overdue(info, now, ttl, every)

    def scanner(self) -> RoleSeen | None:
        """Which worker scans for the fleet, since when, how often (None: nobody holds the
        role). Pass its :attr:`~RoleSeen.scans_every` to :meth:`is_overdue`."""
        return seen_role(self.ctx)

    def backoff(self, attempt: int) -> float:
        return self.ctx.backoff(attempt)

    def outlook(self, previous: Outlook | None = None, *, mine: str | None = None) -> Outlook:
        """What is not claimable now but will be (a retry's backoff, a lease nobody renews),
        and what is held by workers that renew their leases: a burst waits for the first
        and leaves the second to their owners. A lease is known to be renewed only once it
        changed between two looks (pass the ``previous`` outlook), and lately (the look may
        be old: a holder that renewed since may have died since); until then, a lease
        written recently may be a live worker's or one that just died: wait until its
        next renewal is due, and look again. A lease unchanged since ``previous`` is not
        read again. Leases of worker ``mine`` (the caller: its jobs still running or being
        settled) are neither waited for nor left, and requests in wait/ this process found
        it may not read (an archived storage class, another account's object) are left."""
        now = self.store.now()
        due: dict[str, float] = {}
        left: list[tuple[str, str]] = []
        looked: dict[str, tuple[Lease, ObjectInfo]] = {}
        seen = previous.leases if previous is not None else {}
        own: set[str] = set()
        unreadable: list[tuple[str, str]] = []
        for lease, info in leases.read_all(self.ctx, seen, unreadable=unreadable):
            looked[lease.name] = lease, info
            # (its holder renews every third of its own lease_ttl, which the lease tells)
            renewal = (lease.ttl or self.config.lease_ttl) / 3 + 2 * CLOCK_MARGIN
            if lease.intent is not Intent.RETRY and mine is not None and lease.worker == mine:
                own.add(lease.name)
            elif lease.intent is Intent.RETRY:
                due[lease.name] = max(0.0, lease.not_before + 1.0 - now)
            elif (lease.name in seen and seen[lease.name][1].etag != info.etag
                  and lease.worker and now - info.last_modified <= renewal):
                left.append((lease.name, f"in flight on {lease.worker}"))
            elif (kept := kept_corrupt(self.ctx, lease)) is not None:
                left.append((lease.name, kept))  # (for an operator: no takeover clears it)
            elif not lease.worker or now - info.last_modified > renewal:
                # nobody renews it: expired (the scan takes it over) or about to be
                due[lease.name] = max(0.0, self.ctx.expires(info, lease.ttl) - now)
            else:  # renewed by now if its worker lives: look again then
                due[lease.name] = info.last_modified + renewal - now
        left += [(name, f"its lease cannot be read ({error})") for name, error in unreadable]
        held = own | {name for name, _ in left}
        settling: dict[str, float] = {}  # (another program still writes them: a cp)
        unreadable_now = self._claimer.unreadable()  # (this process may not read them)
        for info in self.ls(State.WAIT, settling=settling):
            if not self.ctx.fits(info.key):
                left.append((info.key, "name too long for this store: never claimed"))
            elif (found := unreadable_now.get(info.key)) and found[0] in (info.etag, ""):
                left.append((info.key, f"cannot be claimed: {found[1]}"))
            elif info.key not in held:
                due.setdefault(info.key, 0.0)
        since = previous.settling if previous is not None else {}
        since = {name: since.get(name, now) for name in settling}
        for name, at in settling.items():
            if now - since[name] < SETTLING_WAIT:
                due.setdefault(name, max(0.0, at - now))
            else:
                left.append((name, f"still being written after {SETTLING_WAIT:g} s"))
        return Outlook(min(due.values()) if due else None, sorted(due), left, looked, since)

    # ------------------------------------------------------------------ claim / scan
    def claim(self, worker_id: str, *, view_after: float = 0.0) -> Job | None:
        """Claim one request for ``worker_id``, or return None when there is nothing to do.
        Runs the takeover scan when it is due (see :meth:`scan`). Safe from many threads.
        ``view_after``: write the request's processing/ view only if the job still runs after
        this many seconds (its lease keeper does it: use the job as a context manager); 0:
        at once."""
        check_worker_id(worker_id)
        self._scanner.run_if_due(worker_id)
        return self._claimer.claim(worker_id, view_after)

    def lost_race(self) -> bool:
        """Did this thread's last :meth:`claim` return None although wait/ listed requests it
        could try (all taken by other workers meanwhile, or held, or not due)? A busy queue,
        not an idle one: claim again soon."""
        return self._claimer.lost_race()

    def offer(self, names: list[str]) -> None:
        """Requests to try first at the next claims, without listing wait/ (for example
        from S3 event notifications: the name of a request just submitted)."""
        self._claimer.offer(names)

    def scan(self, worker_id: str) -> Recovered | None:
        """The takeover scan, if ``scan_interval`` passed since the last one in this
        process and ``worker_id`` holds the fleet's scanner role (or takes it: vacant or
        expired; docs/PROTOCOL.md §4): expired leases of dead workers are fenced and their
        requests released to wait/ (or dead-lettered after their last attempt). None when
        no scan ran. A worker runs it from its own thread, so that it happens however busy
        the worker's slots are."""
        check_worker_id(worker_id)
        return self._scanner.run_if_due(worker_id)

    # ------------------------------------------------------------------ recovery
    def recover_own(self, worker_id: str) -> Recovered:
        """What ``worker_id`` held before it died goes back to wait/ at once (or to failed/
        when that was its last attempt). A worker runs this when it starts."""
        check_worker_id(worker_id)
        return recover(self.ctx, "mine", worker_id, make_job=self._job,
                       scanner=self._scanner)

    def recover_stale(self, worker_id: str = "s3q-recover") -> Recovered:
        """Requests whose lease expired go back to wait/ (workers do this by themselves)."""
        return recover(self.ctx, "stale", worker_id, make_job=self._job,
                       scanner=self._scanner)

    def recover_all(self, include: str = "*", worker_id: str = RECOVER_ALL, *,
                    only: Mapping[str, str | None] | None = None) -> Recovered:
        """The seed's reset: everything in processing/ whose name matches ``include`` back to
        wait/, including work live workers hold (they are fenced and stop). ``only``: just
        these requests, each while its lease is of the claim given ({name: claim id, None
        for a request with no lease}: what :meth:`recovery_candidates` showed)."""
        return recover(self.ctx, "all", worker_id, make_job=self._job,
                       scanner=self._scanner, include=include, only=only)

    def recovery_candidates(self, mode: RecoveryMode, include: str = "*",
                            worker_id: str = "s3q-recover") -> list[RecoveryCandidate]:
        """What ``recover_<mode>`` would touch now, changing nothing."""
        return recovery_candidates(self.ctx, mode, include, worker_id)

    # ------------------------------------------------------------------ operators
    def requeue(self, name: str, worker_id: str = "s3q-requeue", *,
                etag: str | None = None) -> bool:
        """failed/NAME → wait/NAME with a fresh attempt count. False if it is not in failed/
        (or a request of that name is in flight), or, with ``etag`` (as listed), it is
        another dead letter by now."""
        return requeue_op.requeue(self.ctx, name, worker_id, self._job, etag=etag)

    def requeue_all(self, include: str = "*") -> int:
        """Every failed request matching ``include`` (as listed: by ETag) back to wait/;
        how many were requeued. A request's own store error (denied) is passed over, an
        unavailable store stops it: either way it then raises
        :class:`~s3q.bulk.BulkIncomplete` (``BulkStopped``, a StoreUnavailable too, when
        it stopped), with what it requeued (``done``) and what not (``undone``)."""
        listed = [i for i in self.ls(State.FAILED) if fnmatch.fnmatchcase(i.key, include)]
        undone = Undone()
        done = [i.key for i, ok in each(listed, lambda i: i.key, lambda i: self.requeue(
            i.key, etag=i.etag), threads=1, undone=undone) if ok]
        if undone:
            raise incomplete("requeue_all", "requeued", done, undone)
        return len(done)

    def purge(self, state: State | str, info: ObjectInfo) -> bool:
        """Delete one listed request (``info`` as :meth:`ls` gives it) from ``state`` (wait,
        finish or failed) with its records. False if it changed or is being claimed."""
        value = State(state).value
        if value == "processing":
            raise ValueError("purge: requests in processing/ are in flight; use recover")
        return requeue_op.purge(self.ctx, value, info)  # type: ignore[arg-type]
