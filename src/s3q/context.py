"""What every protocol operation works with: the store, the settings, the clocks, and the
one place state transitions are logged (:meth:`Context.emit`).

The operation modules (:mod:`s3q.claim`, :mod:`s3q.settle`, :mod:`s3q.takeover`,
:mod:`s3q.requeue`) and :mod:`s3q.job` take a :class:`Context`; :class:`s3q.queue.Queue`
builds one. Nothing here imports them, so there is no import cycle.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from s3q import clock, layout
from s3q.batching import RIDE, DeleteBatcher
from s3q.errors import ConfigError, LeaseLost
from s3q.records import CLOCK_MARGIN, backoff_delay
from s3q.shares import Shares
from s3q.store import InvalidKey, LeftOut, ObjectInfo, Store, validate_key

__all__ = ["Context", "Deadline", "Listener", "QueueConfig", "error_info", "message_of", "one_line"]

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
    #: Commit a completion (d1) before the request is placed in finish/, so that finish/
    #: only ever holds completions that count; one more request per job (PROTOCOL §4).
    commit_before_finish: bool = False
    #: Backoff before retry n: uniform in [d/2, d], d = min(max, base * 2**(n-1)) seconds.
    retry_base_delay: float = 5.0
    retry_max_delay: float = 300.0
    #: Keys fetched per LIST of wait/ when looking for work.
    page_size: int = 100
    #: Seconds between scans for expired leases and orphans (default: lease_ttl / 2).
    scan_interval: float | None = None
    #: Let completions' commits share DeleteObjects requests where the store honours each
    #: object's ETag there (s3q.batching); False: one DeleteObject each.
    batch_deletes: bool = True

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
class Deadline:
    """Until when (local monotonic time) a lease holder may act on its lease: its last
    lease write's *send* time plus ``lease_ttl - 1 s`` (docs/PROTOCOL.md §3). Its
    :meth:`check` is the ``guard`` of every other write the holder makes."""

    at: float
    monotonic: Callable[[], float] = clock.monotonic
    name: str = ""

    def left(self) -> float:
        """Seconds until the deadline (negative: passed)."""
        return self.at - self.monotonic()

    def check(self) -> None:
        if self.monotonic() > self.at:
            raise LeaseLost(f"{self.name}: lease not renewed in time; leaving the request to "
                            "whoever takes it over")


@dataclass
class Context:
    store: Store
    config: QueueConfig
    rng: random.Random = field(default_factory=random.Random)
    #: The process's monotonic clock (tests: a fake one), for lease deadlines: one that
    #: counts the time the machine was suspended (:mod:`s3q.clock`).
    monotonic: Callable[[], float] = clock.monotonic
    listeners: list[Listener] = field(default_factory=list)
    #: Conditional deletes that may share a request (the completions' commits, d5, and the
    #: claims' c2).
    deletes: DeleteBatcher = field(init=False)
    #: This process's view of the fleet: which requests its walk of wait/ tries first.
    shares: Shares = field(default_factory=Shares)

    def __post_init__(self) -> None:
        # (a commit waiting for a claim delays its lease's renewals: a small part of a TTL)
        self.deletes = DeleteBatcher(lambda: self.store, enabled=self.config.batch_deletes,
                                     ride=min(RIDE, self.config.lease_ttl / 20))

    def emit(self, event: str, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
        """Tell the log (once per transition) and the listeners."""
        fields = {"event": event, "request": name, **fields}
        log.log(level, "%s %s", event, name, extra=fields)
        for listener in self.listeners:
            listener(event, fields)

    def deadline(self, sent: float, name: str = "") -> Deadline:
        """The deadline of a lease whose last write was sent at ``sent`` (monotonic)."""
        return Deadline(sent + self.config.lease_ttl - 1.0, self.monotonic, name)

    def expires(self, info: ObjectInfo, ttl: float = 0.0) -> float:
        """The store time after which a lease (or an object in processing/) last written at
        ``info.last_modified`` is expired: its worker stopped renewing it. ``ttl``: the
        lease_ttl its writer said (``Lease.ttl``); 0 (not known: no lease, a lease of an
        earlier s3q, or not read) judges by this process's own."""
        return info.last_modified + (ttl or self.config.lease_ttl) + CLOCK_MARGIN

    def is_expired(self, info: ObjectInfo, now: float, ttl: float = 0.0) -> bool:
        return now > self.expires(info, ttl)

    def is_overdue(self, info: ObjectInfo, now: float, ttl: float = 0.0,
                   every: float = 0.0) -> bool:
        """Is an expired lease still there longer than a takeover takes (the fleet's
        scanner runs every ``scan_interval``)? Then no worker is scanning this queue. A lease
        telling a longer lease_ttl than ours was written in a fleet that scans every half of
        it: that one counts (a shell without the fleet's settings raises no false alarm), as
        does ``every``, the live scanner's own interval (its role record says it)."""
        _, interval = self.overdue_bound(ttl, every)
        return self.is_expired(info, now - 2 * interval, ttl)

    def overdue_bound(self, ttl: float = 0.0, every: float = 0.0) -> tuple[float, float]:
        """(the lease_ttl, the scan interval) that :meth:`is_overdue` judges a lease telling
        ``ttl`` by: overdue once not renewed for lease_ttl + CLOCK_MARGIN + 2 intervals."""
        ttl = ttl or self.config.lease_ttl
        return ttl, max(self.config.effective_scan_interval, ttl / 2, every)

    def overdue_bounds(self, ttls: list[float | None], every: float = 0.0) -> str:
        """What overdue leases whose writers told ``ttls`` (None or 0: none) were judged by,
        for each lease_ttl among them: "their lease_ttl (T) + 2s + two scan intervals of I"."""
        bounds = sorted({self.overdue_bound(t or 0.0, every) for t in ttls})
        return " or ".join(f"their lease_ttl ({t:g}s) + {CLOCK_MARGIN:g}s + two scan "
                           f"intervals of {i:g}s" for t, i in bounds)

    def backoff(self, attempt: int) -> float:
        c = self.config
        return backoff_delay(attempt, c.retry_base_delay, c.retry_max_delay, self.rng)

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

    def unusable(self, name: str, size: int = 0) -> str | None:
        """Why ``name`` (an object of ``size`` bytes) matches the filter but can never be a
        request (a key such as ``a//b_request.json`` another S3 client wrote), or None: it
        is one, or it does not match, or it is an empty "folder" marker (``incoming/``; or
        ``""``: ``wait/`` itself, the marker a console's "Create folder" named ``wait``
        leaves). A key ending in ``/`` that holds bytes is no marker: a producer's bug (the
        file name lost: ``orders/``, or all of it: ``wait/`` itself, ``""``)."""
        if ((not name or name.endswith("/")) and not size) or not fnmatch.fnmatchcase(
                name, self.config.filter):
            return None
        try:
            validate_key(name)
        except InvalidKey as e:
            return str(e)
        return None

    def fits(self, name: str) -> bool:
        """Do all keys derived from ``name`` fit the store's key limit?"""
        return len(layout.longest_key(name).encode()) <= self.store.max_key_bytes


def never_claimed(max_key_bytes: int, too_long: Sequence[str], unusable: Sequence[str],
                  left_out: Sequence[LeftOut]) -> list[str]:
    """The problems of what waits in wait/ and is never claimed, as ``s3q status`` and the
    dashboard name them: names too long for the store (``max_key_bytes``), names matching
    the filter that are no usable keys, what the store could not list there at all."""
    problems: list[str] = []
    if unusable:
        problems.append(
            f"{len(unusable)} name(s) in wait/ match the filter but are not usable keys (an "
            f"empty, '.' or '..' segment, a control character, …): never claimed; rename "
            f"them: {', '.join(repr(n[:60]) for n in unusable[:3])}")
    if left_out:
        shown = "; ".join(one_line(e, 300) for e in left_out[:3])
        problems.append(
            f"{len(left_out)} file(s) or folder(s) in wait/ the store cannot list (unreadable, "
            f"or a name no key can hold): never claimed; fix or rename them: {shown}")
    if too_long:
        problems.append(
            f"{len(too_long)} request name(s) in wait/ too long for this store (a key derived "
            f"from each would exceed {max_key_bytes} bytes): never claimed; rename them (to "
            f"at most {layout.longest_name(max_key_bytes)} bytes): "
            f"{', '.join(n[:60] + '…' for n in too_long[:3])}")
    return problems


def one_line(text: object, limit: int = 80) -> str:
    """``text`` on one line (its whitespace runs one space), at most ``limit`` long."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_info(
    error: BaseException | str, *, worker: str, attempt: int, at: float
) -> dict[str, Any]:
    """The error part of retry and error records (long messages keep head and tail)."""
    info: dict[str, Any] = {"type": "Error", "message": _clip(message_of(error), 4000),
                            "worker": worker, "attempt": attempt, "at": at}
    if isinstance(error, BaseException):
        info["type"] = type(error).__name__
        info["traceback"] = _clip("".join(traceback.format_exception(error)), 8000)
    return info


def message_of(error: BaseException | str) -> str:
    """``str(error)``, or a stand-in when it raises (an exception class whose ``__str__``
    needs an attribute it was not given): describing a handler's error must not keep its
    attempt from being failed."""
    try:
        return str(error)
    except Exception as exc:
        return f"<str() of the {type(error).__name__} failed: {type(exc).__name__}>"


def _clip(text: str, limit: int) -> str:
    """``text`` at most ``limit`` long, and writable as UTF-8 (the records are): a lone
    surrogate (text decoded with surrogateescape: ``os.fsdecode``, a body that is not
    UTF-8) is written as its escape, ``\\udcff``; else the record's write would raise."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    half = limit // 2 - 3
    return f"{text[:half]} … {text[-half:]}"
