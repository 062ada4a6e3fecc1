"""The queue protocol: the only place that changes a request's state.

Every operation here is written as the numbered steps of docs/PROTOCOL.md; the comments
``# c1`` … refer to those steps. The rules:

* ``.s3q/lease/NAME`` is the lock of request NAME: created with ``If-None-Match: *`` by the one
  claim that wins, and from then on only written with ``If-Match`` by its current owner.
* Every decision about an in-flight request (done, back to wait, dead) is first committed as
  an *intent* in the lease with ``If-Match`` — that write is the fence — and then carried out
  by idempotent steps that anybody who later holds the lease can repeat ("roll forward").
* The lease is deleted last, so while any step is unfinished the lease exists and blocks new
  claims of the same name.
* Expiry compares the lease's Last-Modified with the store's clock, never a worker's clock.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO, Literal

from s3q import layout
from s3q.backends import S3Options, open_store
from s3q.errors import ConfigError, LeaseLost
from s3q.job import Job, LeaseKeeper
from s3q.layout import State
from s3q.records import (
    CLOCK_MARGIN,
    ErrorRecord,
    Intent,
    Lease,
    RecordError,
    backoff_delay,
    new_claim_id,
)
from s3q.store import (
    InvalidKey,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    Store,
    list_all,
    validate_key,
)

__all__ = ["Queue", "QueueConfig", "Recovered", "RecoveryCandidate", "RecoveryMode",
           "error_info"]

log = logging.getLogger("s3q")

#: A callback told about every state transition: (event, fields).
Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Protocol settings. Every worker of one queue should use the same values."""

    #: Seconds a claim stays valid without renewal; the heartbeat renews every third of it.
    lease_ttl: float = 30.0
    #: Attempts (handler starts, crashed ones included) before a request goes to failed/.
    max_attempts: int = 5
    #: Glob on the request name deciding what is a request (others are left alone).
    filter: str = "*"
    #: What completion does with the request: "move" it to finish/ or "delete" it.
    on_finish: Literal["move", "delete"] = "move"
    #: Backoff before retry n: uniform in [d/2, d], d = min(max, base * 2**(n-1)) seconds.
    retry_base_delay: float = 5.0
    retry_max_delay: float = 300.0
    #: Keys fetched per LIST of wait/ when looking for work.
    page_size: int = 100
    #: Seconds between scans for expired leases and orphans (default: lease_ttl / 2).
    scan_interval: float | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}: {why} (got {getattr(self, name)!r})")

        if not self.lease_ttl >= 5 * CLOCK_MARGIN / 2:
            raise bad("lease_ttl", f"must be at least {5 * CLOCK_MARGIN / 2:g} seconds")
        if self.max_attempts < 1:
            raise bad("max_attempts", "must be at least 1")
        if self.on_finish not in ("move", "delete"):
            raise bad("on_finish", "must be 'move' or 'delete'")
        if not self.filter:
            raise bad("filter", "must be a non-empty glob such as '*request.json'")
        if self.retry_base_delay < 0 or self.retry_max_delay < self.retry_base_delay:
            raise bad("retry_max_delay", "must be >= retry_base_delay >= 0")
        if not 1 <= self.page_size <= 1000:
            raise bad("page_size", "must be between 1 and 1000")
        if self.scan_interval is not None and self.scan_interval <= 0:
            raise bad("scan_interval", "must be positive")

    @property
    def renew_interval(self) -> float:
        return self.lease_ttl / 3

    @property
    def effective_scan_interval(self) -> float:
        return self.scan_interval or self.lease_ttl / 2


@dataclass(slots=True)
class Recovered:
    """What a recovery did, request by request: {name: action}."""

    actions: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)


#: ``recover_own`` (what one worker id held), ``recover_stale``, ``recover_all``.
RecoveryMode = Literal["mine", "stale", "all"]


@dataclass(frozen=True, slots=True)
class RecoveryCandidate:
    """A request a recovery would touch (see :meth:`Queue.recovery_candidates`)."""

    name: str
    lease: Lease | None  # None: in processing/ with no lease (put there by something else)
    expired: bool

    @property
    def live(self) -> bool:
        """Held by a worker that still renews it: recovering it stops that job."""
        return (self.lease is not None and self.lease.intent is Intent.HELD
                and bool(self.lease.worker) and not self.expired)


def error_info(
    error: BaseException | str, *, worker: str, attempt: int, at: float
) -> dict[str, Any]:
    """The error part of retry and error records (long messages keep head and tail)."""
    info: dict[str, Any] = {"type": "Error", "message": _clip(str(error), 4000),
                            "worker": worker, "attempt": attempt, "at": at}
    if isinstance(error, BaseException):
        info["type"] = type(error).__name__
        info["traceback"] = _clip("".join(traceback.format_exception(error)), 8000)
    return info


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2 - 3
    return f"{text[:half]} … {text[-half:]}"


Data = bytes | str | PathLike[str] | BinaryIO


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
    ) -> None:
        self.store: Store = open_store(store, s3) if isinstance(store, str) else store
        self.config = config or QueueConfig()
        self.listeners: list[Listener] = []
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._candidates: deque[ObjectInfo] = deque()
        self._contended = False  # a candidate was found taken: the page is stale
        self._cursor: str | None = None
        self._skip: dict[str, tuple[str, float]] = {}  # name -> (etag, until store time)
        self._waiting: dict[str, tuple[str, float]] = {}  # RETRY leases: etag, not_before
        self._next_scan = 0.0  # store time
        self._expired_names: deque[str] = deque()
        self._keeper: LeaseKeeper | None = None

    # ------------------------------------------------------------------ basics
    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
        self.store.close()

    @property
    def keeper(self) -> LeaseKeeper:
        """The background thread renewing the leases of running jobs (started lazily)."""
        with self._lock:
            if self._keeper is None:
                self._keeper = LeaseKeeper(self.config.renew_interval)
            return self._keeper

    def is_request(self, name: str) -> bool:
        """Is the object named ``name`` (relative to its state prefix) a request? It must
        match the filter and be a valid name: "folder" markers that consoles create
        (``wait/incoming/``) and unusable keys (``a//b``) are left alone."""
        if not fnmatch.fnmatchcase(name, self.config.filter):
            return False
        try:
            validate_key(name)
        except InvalidKey:
            return False
        return True

    def _emit(self, event: str, name: str, *, level: int = logging.INFO,
              **fields: Any) -> None:
        """Tell the log (once per transition) and the listeners."""
        fields = {"event": event, "request": name, **fields}
        log.log(level, "%s %s", event, name, extra=fields)
        for listener in self.listeners:
            listener(event, fields)

    # ------------------------------------------------------------------ submit / inspect
    def submit(self, name: str, data: Data) -> ObjectInfo:
        """Put a request into wait/ (replacing a waiting request of the same name, as any S3
        client would). ``data``: bytes, str (UTF-8), a path, or a binary file (streamed)."""
        validate_key(name)
        if not self.is_request(name):
            raise InvalidKey(
                f"request name {name!r} does not match the queue's filter "
                f"{self.config.filter!r}: no worker would ever pick it up"
            )
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
        self._emit("submitted", name, size=info.size)
        return info

    def ls(self, state: State | str) -> Iterator[ObjectInfo]:
        """Requests in one state, as ObjectInfo with ``key`` = the request name."""
        prefix = State(state).prefix
        for info in list_all(self.store, prefix):
            name = layout.name_of(prefix, info.key)
            if self.is_request(name):
                yield ObjectInfo(name, info.etag, info.size, info.last_modified)

    def counts(self) -> dict[str, int]:
        """Number of requests per state: {"wait": n, "processing": n, "finish": n, "failed": n}."""
        return {s.value: sum(1 for _ in self.ls(s)) for s in State}

    def lease(self, name: str) -> tuple[Lease, ObjectInfo] | None:
        """The current lease of a request, if any (for status and inspection)."""
        return self._read_lease(name)

    def leases(self) -> Iterator[tuple[Lease, ObjectInfo]]:
        for info in list_all(self.store, layout.LEASES):
            found = self._read_lease(layout.name_of(layout.LEASES, info.key))
            if found is not None:
                yield found

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

    # ------------------------------------------------------------------ claim
    def claim(self, worker_id: str) -> Job | None:
        """Claim one request for ``worker_id``, or return None when there is nothing to do.

        Takes over expired leases of dead workers as part of claiming (scanning for them
        every ``scan_interval``), then looks in wait/. Safe to call from many threads."""
        _check_worker_id(worker_id)
        for name in self._due_takeovers():
            taken = self._take_over(name, worker_id, mine=False, run=True)
            if isinstance(taken, Job):
                return taken
        for info in self._next_candidates():
            job = self._claim_waiting(worker_id, info)
            if job is not None:
                return job
        return None

    def _due_takeovers(self) -> Iterator[str]:
        """Names whose lease expired (or orphans in processing/), found by a scan every
        ``scan_interval`` and handed out one at a time to the claiming threads."""
        now = self.store.now()
        with self._lock:
            scan = now >= self._next_scan
            if scan:
                self._next_scan = now + self.config.effective_scan_interval
        if scan:
            found = self._scan(now)
            with self._lock:
                self._expired_names.extend(n for n in found if n not in self._expired_names)
        while True:
            with self._lock:
                if not self._expired_names:
                    return
                name = self._expired_names.popleft()
            yield name

    def _scan(self, now: float, include: str | None = None, *, dry_run: bool = False
              ) -> list[str]:
        """Names whose lease expired — or, with ``include``, every leased name matching it.
        Requests in processing/ with no lease at all (put there by something else than
        s3q, e.g. an old seed-style worker) get a lease held by nobody (worker ""), once
        they are as old as a lease TTL (at once with ``include``), and are then taken over
        like the others. ``dry_run``: select the same names, write and delete nothing."""
        names, leased = [], set()
        for info in list_all(self.store, layout.LEASES):
            name = layout.name_of(layout.LEASES, info.key)
            leased.add(name)
            waiting = self._waiting.get(name)
            if include:
                if fnmatch.fnmatchcase(name, include):
                    names.append(name)
            elif waiting and waiting[0] == info.etag:  # a RETRY lease: not in flight
                if now > waiting[1] + 10 * self.config.lease_ttl and not dry_run:
                    self._collect_retry_lease(name, info.etag)
            elif self.is_expired(info, now):
                names.append(name)
        for info in list_all(self.store, layout.PROCESSING):
            name = layout.name_of(layout.PROCESSING, info.key)
            if name in leased or not self.is_request(name):
                continue
            if fnmatch.fnmatchcase(name, include) if include else self.is_expired(info, now):
                if dry_run:
                    names.append(name)
                    continue
                orphan = Lease(name=name, worker="", claim=new_claim_id(), gen=0, seq=0,
                               attempt=0, etag=info.etag, written_at=time.time())
                try:
                    self._write_lease(orphan, create=True)
                except PreconditionFailed:
                    continue
                self._emit("orphan_found", name)
                names.append(name)
        return names

    def _collect_retry_lease(self, name: str, etag: str) -> None:
        """A RETRY lease long past its backoff whose request left wait/ (purged by an
        operator) would block the name forever: drop it."""
        if self._head(layout.key(layout.WAIT, name)) is None:
            self._delete_lease(name, etag)
            self._waiting.pop(name, None)

    def _next_candidates(self) -> Iterator[ObjectInfo]:
        """Candidates from wait/, a page at a time, shuffled so that workers don't all fight
        for the first key; each page is shared by the threads of this process. A claim that
        finds its candidate taken (other workers work the same page) drops the rest of the
        page: the next candidates come from a fresh listing."""
        refills = 0
        while True:
            with self._lock:
                if self._contended:
                    self._contended = False
                    self._candidates.clear()
                if not self._candidates:
                    if refills == 2:
                        return
                    self._refill()
                    refills += 1
                    if not self._candidates:
                        return
                info = self._candidates.popleft()
            yield info

    def _refill(self) -> None:
        """(Under self._lock.) Fetch the next page of wait/ into the candidate buffer."""
        page = self.store.list_page(
            layout.WAIT, start_after=self._cursor, limit=self.config.page_size
        )
        if not page.items and self._cursor is not None:  # wrapped around
            page = self.store.list_page(layout.WAIT, limit=self.config.page_size)
        self._cursor = page.items[-1].key if page.truncated and page.items else None
        now = self.store.now()
        self._skip = {k: v for k, v in self._skip.items() if v[1] > now}
        fresh = []
        for info in page.items:
            name = layout.name_of(layout.WAIT, info.key)
            skip = self._skip.get(name)
            if self.is_request(name) and not (skip and skip[0] == info.etag):
                fresh.append(info)
        self._rng.shuffle(fresh)
        self._candidates.extend(fresh)

    def _claim_waiting(self, worker_id: str, info: ObjectInfo) -> Job | None:
        name = layout.name_of(layout.WAIT, info.key)
        now = self.store.now()
        lease = Lease(name=name, worker=worker_id, claim=new_claim_id(), gen=1, seq=0,
                      attempt=1, etag=info.etag, written_at=time.time())
        sent = time.monotonic()
        try:  # c1: the lock
            lease_etag = self._write_lease(lease, create=True)
        except LeaseTaken as lost:
            taken = self._claim_retry(worker_id, info, now, lost.current)
            if taken is None:
                return None
            lease, lease_etag = taken
        proc_key = layout.key(layout.PROCESSING, name)
        try:  # c2
            copied = self.store.copy(info.key, proc_key, if_source_match=info.etag)
        except (NotFound, PreconditionFailed):  # claimed and finished meanwhile, or replaced
            self._delete_lease(name, lease_etag)
            self._contended = True
            return None
        if _changed(info.etag, copied.etag):  # a server that ignored the source condition
            self.store.delete(proc_key)
            self._delete_lease(name, lease_etag)
            return None
        # c3 (412: a newer submission of the same name arrived: it stays waiting)
        with contextlib.suppress(NotFound, PreconditionFailed):
            self.store.delete(info.key, if_match=info.etag)
        job = Job(self, lease, lease_etag, info.size, sent + self._safe_ttl)
        self._emit("claimed", name, worker=worker_id, attempt=lease.attempt, gen=lease.gen)
        return self._check_attempts(job)

    def _claim_retry(self, worker_id: str, info: ObjectInfo, now: float,
                     found: tuple[Lease, ObjectInfo] | None) -> tuple[Lease, str] | None:
        """c1 lost: NAME has a lease (``found``, as read back). If it is a RETRY lease (the
        request waits for another attempt) whose backoff is over, take it (c1'); otherwise
        skip NAME for a while."""
        name = layout.name_of(layout.WAIT, info.key)
        if found is None or found[0].intent is not Intent.RETRY:  # in flight elsewhere
            self._skip[name] = (info.etag, now + self.config.renew_interval)
            self._contended = True
            return None
        old, linfo = found
        same_body = old.etag == info.etag  # else a new submission replaced it: start afresh
        if same_body and old.not_before > now + 1.0:  # 1 s: Date's resolution
            self._skip[name] = (info.etag, old.not_before)
            return None
        lease = old.taken_over(worker_id, intent=Intent.HELD, etag=info.etag,
                               attempt=(old.attempts if same_body else 0) + 1,
                               attempts=0, not_before=0.0, error=None,
                               written_at=time.time())
        try:  # c1': the RETRY lease becomes this claim's lease
            return lease, self._write_lease(lease, if_match=linfo.etag)
        except (PreconditionFailed, NotFound):
            return None

    def _check_attempts(self, job: Job) -> Job | None:
        if job.attempt <= self.config.max_attempts:
            return job
        job.fail(f"attempt {job.attempt} exceeds max_attempts={self.config.max_attempts}",
                 retry=False)
        return None

    @property
    def _safe_ttl(self) -> float:
        """How long after *sending* a lease write its owner may rely on it (local clock)."""
        return self.config.lease_ttl - 1.0

    def is_expired(self, info: ObjectInfo, now: float) -> bool:
        """Is a lease (or an object in processing/) last written at ``info.last_modified``
        expired at store time ``now``: its worker stopped renewing it?"""
        return now > info.last_modified + self.config.lease_ttl + CLOCK_MARGIN

    def is_overdue(self, info: ObjectInfo, now: float) -> bool:
        """Is an expired lease still there longer than a takeover takes (a live worker
        scans every ``scan_interval`` and its idle polls are at most that far apart)?
        Then no worker is scanning this queue: nobody will take it over."""
        return self.is_expired(info, now - 2 * self.config.effective_scan_interval)

    # ------------------------------------------------------------------ takeover
    def _take_over(self, name: str, worker_id: str, *, mine: bool, run: bool,
                   force: bool = False) -> Job | str:
        """Take over the lease of NAME — expired, or ``mine`` (left by this worker id before
        a restart), or any with ``force`` — and settle the request: a decided intent is
        carried out; a held request becomes a job for ``worker_id`` with ``run``, else goes
        back to wait/ (or to failed/ when its last attempt died). Returns the job, or a word
        on what was done."""
        found = self._read_lease(name)
        if found is None:
            return "gone"
        old, info = found
        if old.intent is Intent.RETRY:
            self._waiting[name] = (info.etag, old.not_before)
            return "waiting for retry"
        if mine and old.worker != worker_id:
            return "not mine"
        if not (mine or force or old.worker == "" or self.is_expired(info, self.store.now())):
            return "alive"  # held by a live worker (worker "": held by nobody)
        held = old.intent is Intent.HELD  # else a decided intent: its attempt is over
        lease = old.taken_over(worker_id, attempt=old.attempt + held, written_at=time.time())
        sent = time.monotonic()
        try:  # t1: the fence; the previous owner's lease writes fail from now on
            lease_etag = self._write_lease(lease, if_match=info.etag)
        except (PreconditionFailed, NotFound):
            return "raced"
        self._emit("took_over", name, worker=worker_id, previous=old.worker, gen=lease.gen,
                   intent=old.intent.value)
        if lease.intent is not Intent.HELD:  # t2: a decision was made: carry it out
            self._roll_forward(lease, lease_etag)
            return f"rolled forward {old.intent.value}"
        settled = self._settle_claim(lease)  # t2: finish the claim's own steps
        if settled is None:
            self._delete_lease(name, lease_etag)
            return "dropped stale lease"
        ran, proc = settled
        if not ran:  # the claim died before c3: that attempt never started
            lease = lease.next(attempt=old.attempt)
            lease_etag = self._write_lease(lease, if_match=lease_etag)
        now = self.store.now()
        if ran and old.attempt >= self.config.max_attempts and not force:
            err = error_info(
                f"worker {old.worker or '?'!s} stopped renewing its lease during attempt "
                f"{old.attempt} (crashed, killed or frozen); max_attempts reached",
                worker=worker_id, attempt=old.attempt, at=now)
            self._commit(lease.next(intent=Intent.DEAD, attempt=old.attempt, error=err),
                         lease_etag)
            return "dead-lettered"
        if run:
            return Job(self, lease, lease_etag, proc.size, sent + self._safe_ttl)
        attempts = old.attempt - 1 if force or not ran else old.attempt
        self._commit(lease.next(intent=Intent.WAIT, attempts=max(0, attempts),
                                not_before=0.0, error=None), lease_etag)
        return "released"

    def _settle_claim(self, lease: Lease) -> tuple[bool, ObjectInfo] | None:
        """Finish the steps of a claim that may have been interrupted (c2, c3).
        Returns (ran, info of processing/NAME): ``ran`` is True if the claim had completed
        (the handler may have run), False if it had stopped before c3 (it is complete now).
        None if the request is in neither wait/ nor processing/ (moved away by somebody)."""
        name = lease.name
        wait_key = layout.key(layout.WAIT, name)
        proc_key = layout.key(layout.PROCESSING, name)
        proc = self._head(proc_key)
        if proc is None:
            try:
                self.store.copy(wait_key, proc_key, if_source_match=lease.etag)
                proc = self.store.head(proc_key)
            except (NotFound, PreconditionFailed):
                return None
        try:
            self.store.delete(wait_key, if_match=lease.etag)
        except (NotFound, PreconditionFailed):
            return True, proc  # c3 had happened: the handler may have run
        return False, proc

    # ------------------------------------------------------------------ transitions
    def _commit(self, lease: Lease, etag: str, guard: Callable[[], None] | None = None) -> str:
        """Write an intent into the lease (the fence) and carry it out."""
        new_etag = self._write_lease(lease, if_match=etag)
        self._roll_forward(lease, new_etag, guard)
        return new_etag

    def _roll_forward(
        self, lease: Lease, etag: str, guard: Callable[[], None] | None = None
    ) -> None:
        """Carry out the intent of ``lease`` (whose current ETag is ``etag``). Every step is
        idempotent, so whoever holds the lease after a crash may repeat them all.
        ``guard`` raises LeaseLost when the caller's lease may have expired meanwhile."""
        check = guard or (lambda: None)
        name = lease.name
        proc = layout.key(layout.PROCESSING, name)
        fields: dict[str, Any]
        if lease.intent is Intent.DONE:  # d2..d5
            if lease.result_b64 is not None:
                check()
                self.store.put(layout.key(layout.RESULTS, name), lease.result or b"")
            if lease.on_finish == "move":
                self._copy_if_present(proc, layout.key(layout.FINISH, name), check)
            event, fields = "completed", {"on_finish": lease.on_finish}
        elif lease.intent is Intent.DEAD:  # x2..x5
            error = lease.error or {}
            record = ErrorRecord(name=name, attempts=lease.attempt,
                                 worker=error.get("worker", lease.worker), error=error,
                                 failed_at=self.store.now())
            check()
            self.store.put(layout.key(layout.ERRORS, name), record.to_bytes())
            self._copy_if_present(proc, layout.key(layout.FAILED, name), check)
            event, fields = "dead_lettered", {"attempts": lease.attempt,
                                              "error": (lease.error or {}).get("message")}
        elif lease.intent is Intent.WAIT:  # w2..w5
            if not self._back_to_wait(lease, etag, check):
                return
            event = "released" if lease.error is None else "retry_scheduled"
            fields = {"attempts": lease.attempts, "not_before": lease.not_before}
        elif lease.intent is Intent.REQUEUE:  # r2..r5
            self._requeue_steps(lease, etag)
            return
        else:
            raise AssertionError(f"no roll-forward for intent {lease.intent}")
        check()
        # Unconditional: only the lease holder writes processing/NAME, and a copy may carry
        # another ETag than its source (multipart objects).
        self.store.delete(proc)
        if lease.intent is Intent.WAIT and lease.attempts > 0:  # w5: rest as a RETRY lease
            self._write_lease(lease.next(intent=Intent.RETRY), if_match=etag)
        else:  # d5, x5, w5
            self._delete_lease(name, etag)
        self._emit(event, name, worker=lease.worker, attempt=lease.attempt, **fields)

    def _back_to_wait(self, lease: Lease, etag: str, check: Callable[[], None]) -> bool:
        """Steps of the WAIT intent up to (not including) deleting processing/NAME.
        Returns False when a *different* request of the same name is waiting: then this one
        is not moved (never overwrite a waiting request) but left in processing/ under a
        lease that nobody renews, so that a worker takes it over in place after expiry."""
        name = lease.name
        wait_key = layout.key(layout.WAIT, name)
        present = self._head(wait_key)
        if present is not None and present.etag != lease.etag:
            self._write_lease(lease.next(intent=Intent.HELD, worker=""), if_match=etag)
            self._emit("release_deferred", name, reason="another request of that name waits")
            return False
        if present is None:
            self._copy_if_present(layout.key(layout.PROCESSING, name), wait_key, check)
        return True

    def _requeue_steps(self, lease: Lease, etag: str) -> None:
        name = lease.name
        src, dst = layout.key(layout.FAILED, name), layout.key(layout.WAIT, name)
        present = self._head(dst)
        if present is not None and present.etag != lease.etag:
            self._delete_lease(name, etag)
            self._emit("requeue_refused", name, reason="another request of that name waits")
            return
        if present is None:
            self._copy_if_present(src, dst, lambda: None)
        self.store.delete(layout.key(layout.ERRORS, name))
        with contextlib.suppress(NotFound, PreconditionFailed):
            self.store.delete(src, if_match=lease.etag)
        self._delete_lease(name, etag)
        self._emit("requeued", name, worker=lease.worker)

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            return self.store.head(key)
        except NotFound:
            return None

    def _copy_if_present(self, src: str, dst: str, check: Callable[[], None]) -> None:
        check()
        # NotFound: an earlier run of this roll-forward (or an operator) moved it already
        with contextlib.suppress(NotFound):
            self.store.copy(src, dst)

    # ------------------------------------------------------------------ job callbacks
    def _finish_job(self, job: Job, lease: Lease) -> None:
        """Commit a job's final intent (called by Job.complete/fail/release)."""
        self._write_job_lease(job, lease)
        self._roll_forward(lease, job.lease_etag, job.check_deadline)

    def _renew(self, job: Job) -> None:
        sent = time.monotonic()
        lease = self._write_job_lease(job, job.lease.next(written_at=time.time()))
        job.deadline = sent + self._safe_ttl
        self._emit("renewed", job.name, level=logging.DEBUG, worker=job.worker_id,
                   gen=lease.gen)

    def _write_job_lease(self, job: Job, lease: Lease) -> Lease:
        """Write the next lease of a running job over the one it holds — the fence: if the
        lease was taken over, the job is marked lost (its handler interrupted) and
        LeaseLost raised."""
        try:
            job.lease_etag = self._write_lease(lease, if_match=job.lease_etag)
        except (PreconditionFailed, NotFound) as exc:
            self._emit("lease_lost", job.name, level=logging.ERROR, worker=job.worker_id,
                       gen=job.lease.gen)
            job.mark_lost()
            raise LeaseLost(f"{job.name}: lease of {job.worker_id} gen {job.lease.gen} was "
                            "taken over; this worker's result will not count") from exc
        job.lease = lease
        return lease

    def backoff(self, attempt: int) -> float:
        c = self.config
        return backoff_delay(attempt, c.retry_base_delay, c.retry_max_delay, self._rng)

    # ------------------------------------------------------------------ lease I/O
    def _write_lease(
        self, lease: Lease, *, if_match: str | None = None, create: bool = False
    ) -> str:
        """Conditionally write a lease; return its new ETag. A retried request whose first
        try committed gets 412 although it won: on 412 the lease is read back and compared."""
        body = lease.to_bytes()
        key = layout.key(layout.LEASES, lease.name)
        try:
            return self.store.put(key, body, if_none_match=create, if_match=if_match).etag
        except PreconditionFailed as exc:
            try:
                current, info = self.store.get(key)
            except NotFound:
                raise LeaseTaken(key, None) from None
            if current == body:
                return info.etag
            raise LeaseTaken(key, (_decode_lease(lease.name, current), info)) from exc

    def _read_lease(self, name: str) -> tuple[Lease, ObjectInfo] | None:
        try:
            body, info = self.store.get(layout.key(layout.LEASES, name))
        except NotFound:
            return None
        return _decode_lease(name, body), info

    def _delete_lease(self, name: str, etag: str) -> None:
        with contextlib.suppress(NotFound, PreconditionFailed):
            self.store.delete(layout.key(layout.LEASES, name), if_match=etag)

    # ------------------------------------------------------------------ recovery
    def recover_own(self, worker_id: str) -> Recovered:
        """What ``worker_id`` held before it died goes back to wait/ at once (or to failed/
        when that was its last attempt). A worker runs this when it starts."""
        _check_worker_id(worker_id)
        done = Recovered()
        for name in self._recovery_names("mine", "*", worker_id):
            done.actions[name] = str(self._take_over(name, worker_id, mine=True, run=False))
        return done

    def recover_stale(self, worker_id: str = "s3q-recover") -> Recovered:
        """Requests whose lease expired go back to wait/. Claiming does this by itself;
        this is for operators."""
        done = Recovered()
        for name in self._recovery_names("stale", "*", worker_id):
            done.actions[name] = str(self._take_over(name, worker_id, mine=False, run=False))
        return done

    def recover_all(self, include: str = "*", worker_id: str = "s3q-recover") -> Recovered:
        """The seed's reset: everything in processing/ whose name matches ``include`` back to
        wait/, including work live workers hold (they are fenced and stop)."""
        done = Recovered()
        for name in self._recovery_names("all", include, worker_id):
            done.actions[name] = str(self._take_over(name, worker_id, mine=False, run=False,
                                                     force=True))
        return done

    def recovery_candidates(self, mode: RecoveryMode, include: str = "*",
                            worker_id: str = "s3q-recover") -> list[RecoveryCandidate]:
        """What ``recover_<mode>`` would touch now, changing nothing (``recover --dry-run``,
        and the question before taking live workers' requests). Requests waiting for a retry
        are left out: recovery leaves them alone."""
        now = self.store.now()
        found: list[RecoveryCandidate] = []
        for name in self._recovery_names(mode, include, worker_id, dry_run=True):
            current = self._read_lease(name)
            if current is None:
                if self._head(layout.key(layout.PROCESSING, name)) is not None:
                    found.append(RecoveryCandidate(name, None, expired=True))
            elif current[0].intent is not Intent.RETRY:
                found.append(RecoveryCandidate(name, current[0],
                                               self.is_expired(current[1], now)))
        return found

    def _recovery_names(self, mode: RecoveryMode, include: str, worker_id: str, *,
                        dry_run: bool = False) -> list[str]:
        """The one selection of what each recovery mode looks at."""
        if mode == "mine":
            return [lease.name for lease, _ in list(self.leases())
                    if lease.worker == worker_id and lease.intent is not Intent.RETRY]
        return self._scan(self.store.now(), include if mode == "all" else None,
                          dry_run=dry_run)

    # ------------------------------------------------------------------ requeue
    def requeue(self, name: str, worker_id: str = "s3q-requeue") -> bool:
        """failed/NAME → wait/NAME with a fresh attempt count. False if it is not in failed/
        (or a request of that name is busy)."""
        try:
            info = self.store.head(layout.key(layout.FAILED, name))
        except NotFound:
            return False
        lease = Lease(name=name, worker=worker_id, claim=new_claim_id(), gen=1, seq=0,
                      attempt=0, etag=info.etag, intent=Intent.REQUEUE,
                      written_at=time.time())
        try:  # r1: the lease blocks claims of NAME until the move is complete
            etag = self._write_lease(lease, create=True)
        except PreconditionFailed:
            return False
        self._roll_forward(lease, etag)
        return True

    def requeue_all(self, include: str = "*") -> int:
        names = [i.key for i in self.ls(State.FAILED)]
        return sum(self.requeue(n) for n in names if fnmatch.fnmatchcase(n, include))


class LeaseTaken(PreconditionFailed):
    """A lease write lost; ``current`` is the lease found instead (None: no lease now)."""

    def __init__(self, key: str, current: tuple[Lease, ObjectInfo] | None) -> None:
        super().__init__(f"{key}: condition not met")
        self.current = current


def _decode_lease(name: str, body: bytes) -> Lease:
    try:
        return Lease.from_bytes(body)
    except RecordError:
        log.error("corrupt lease record for %s; treating it as held by nobody", name)
        return Lease(name=name, worker="", claim="corrupt", gen=0, seq=0, attempt=1, etag="")


def _changed(expected: str, copied: str) -> bool:
    """Did a copy carry other bytes than the source ETag ``expected`` names? Only decidable
    for single-part objects (ETag = MD5); multipart ETags depend on the part sizes."""
    return "-" not in expected and "-" not in copied and expected != copied


def _check_worker_id(worker_id: str) -> None:
    if not worker_id or any(c in worker_id for c in "\x00\n\r") or len(worker_id) > 200:
        raise ConfigError(f"worker_id: must be a non-empty single-line string (got "
                          f"{worker_id!r})")
