"""The worker registry: each running worker keeps one small JSON record,
``.s3q/workers/<worker id>``, so that idle workers are visible, dead ones show as stale, and
the dashboard can chart throughput without listing finish/.

A worker writes its record when it starts, then once per ``interval`` (default 60 s: at
most one PUT a minute per worker, whatever its load), and deletes it when it stops cleanly.
A record whose Last-Modified (the store's clock) is older than :data:`STALE_FACTOR` times
its interval belongs to a worker that died (SIGKILL, a lost server); it stays until the same
worker id starts again or an operator removes it (``s3q workers --prune``).

The record::

    {"v": 1, "id": "ip-10-0-1-17/i-0abc", "host": "ip-10-0-1-17", "pid": 4242,
     "version": "0.1.0", "slots": 4, "busy": 2, "paused": false, "interval": 60,
     "started": 1764390000.0, "heartbeat": 1764390600.0,          # the store's clock
     "counters": {"claimed": 9, "completed": 8, "failed": 1, "released": 0, "lost": 0},
     "history": [[1764390540.0, 3], [1764390600.0, 5]]}           # completions per minute

``history`` holds, for each minute of the last hour, the number of requests the worker
completed (as counted at its heartbeats): summed over the registry it is the fleet's
throughput. Its minutes, like ``started`` and ``heartbeat``, are the store's clock's
(``Store.now``), never the worker's own: the readers sum them by the store's clock, and a
worker whose clock is wrong (broken NTP) would count its completions in minutes the chart
never shows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from s3q.pause import PauseGate
from s3q.shares import AGAIN, SOON
from s3q.store import NotFound, ObjectInfo, Store, StoreError, list_all

if TYPE_CHECKING:
    from types import TracebackType

    from s3q.worker import Worker

__all__ = ["PREFIX", "STALE_FACTOR", "Entry", "Presence", "Registry", "WorkerRecord",
           "longer_leases", "longer_leases_problem", "published_lease_ttl"]

log = logging.getLogger("s3q.registry")

PREFIX = ".s3q/workers/"
#: Seconds between two writes of a worker's record (``S3Q_HEARTBEAT_INTERVAL`` overrides).
DEFAULT_INTERVAL = 60.0
#: A record not rewritten for this many intervals is stale: its worker is gone.
STALE_FACTOR = 2.5
#: How far back ``history`` goes, seconds.
HISTORY_SECONDS = 3600.0
COUNTERS = ("claimed", "completed", "failed", "released", "lost")


def s3q_version() -> str:
    try:
        return version("s3q")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """The body of ``.s3q/workers/ID``."""

    id: str
    host: str
    pid: int
    version: str
    slots: int
    busy: int
    paused: bool
    interval: float
    started: float
    heartbeat: float
    counters: dict[str, int] = field(default_factory=dict)
    history: list[tuple[float, int]] = field(default_factory=list)
    #: The worker's lease_ttl (0: not published, a worker of an earlier s3q): others judge
    #: its leases by it (:func:`longer_leases`).
    lease_ttl: float = 0.0

    def to_bytes(self) -> bytes:
        data = {"v": 1, "id": self.id, "host": self.host, "pid": self.pid,
                "version": self.version, "slots": self.slots, "busy": self.busy,
                "paused": self.paused, "interval": self.interval, "started": self.started,
                "heartbeat": self.heartbeat, "counters": self.counters,
                "history": [list(h) for h in self.history], "lease_ttl": self.lease_ttl}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> WorkerRecord:
        """Raises ValueError for anything that is not a record of this version."""
        try:
            data = json.loads(body)
        except RecursionError as e:  # (nested deeper than the decoder goes)
            raise ValueError(f"not a worker record: {e}") from None
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a worker record")
        try:
            return cls(
                id=str(data["id"]), host=str(data["host"]), pid=int(data["pid"]),
                version=str(data["version"]), slots=int(data["slots"]),
                busy=int(data["busy"]), paused=bool(data.get("paused", False)),
                interval=float(data["interval"]), started=float(data["started"]),
                heartbeat=float(data["heartbeat"]),
                counters={str(k): int(v) for k, v in dict(data.get("counters", {})).items()},
                history=[(float(t), int(n)) for t, n in data.get("history", [])],
                lease_ttl=float(data.get("lease_ttl", 0.0)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete worker record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed record: its id, the object's info, whether it is stale and (when read)
    the record itself (None: not read, or unreadable)."""

    id: str
    info: ObjectInfo
    stale: bool
    age: float  # seconds since it was written (store clock)
    record: WorkerRecord | None = None


class Registry:
    """Read the registry. ``entries()`` costs one LIST per 1,000 workers; ``records()`` also
    GETs each record whose ETag changed since this Registry last read it (records are
    rewritten once a minute, so a dashboard refreshing every few seconds reads few)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[str, WorkerRecord | None]] = {}  # key -> (etag, record)
        self._lock = threading.Lock()

    def entries(self, limit: int = 10_000) -> list[Entry]:
        """Every record's id, age and staleness, from the listing alone (no GET)."""
        now = self.store.now()
        entries = []
        for i, info in enumerate(list_all(self.store, PREFIX)):
            if i >= limit:
                break
            age = max(0.0, now - info.last_modified)
            entries.append(Entry(info.key[len(PREFIX):], info, self._stale(info, age), age))
        return entries

    def records(self, limit: int = 10_000, threads: int = 8) -> list[Entry]:
        """:meth:`entries` with each record read (changed ones only; in parallel)."""
        entries = self.entries(limit)
        with self._lock:
            todo = [e for e in entries if self._cache.get(e.info.key, ("",))[0] != e.info.etag]
        if todo:
            with ThreadPoolExecutor(min(threads, len(todo))) as pool:
                for entry, record in zip(todo, pool.map(self._read, todo), strict=True):
                    with self._lock:
                        self._cache[entry.info.key] = (entry.info.etag, record)
        with self._lock:
            keys = {e.info.key for e in entries}
            for key in [k for k in self._cache if k not in keys]:
                del self._cache[key]
            return [Entry(e.id, e.info, self._stale(e.info, e.age, rec), e.age, rec)
                    for e in entries for rec in [self._cache[e.info.key][1]]]

    def remove(self, worker_id: str, etag: str | None = None) -> None:
        """Delete a record (only the listed bytes with ``etag``: a worker that came back
        meanwhile keeps its new one)."""
        with contextlib.suppress(NotFound):
            self.store.delete(PREFIX + worker_id, if_match=etag)

    def _read(self, entry: Entry) -> WorkerRecord | None:
        try:
            body, _ = self.store.get(entry.info.key)
            return WorkerRecord.from_bytes(body)
        except NotFound:
            return None
        except (ValueError, UnicodeDecodeError):
            log.warning("unreadable worker record %s", entry.info.key)
            return None

    @staticmethod
    def _stale(info: ObjectInfo, age: float, record: WorkerRecord | None = None) -> bool:
        interval = record.interval if record is not None else DEFAULT_INTERVAL
        return age > STALE_FACTOR * interval


def _interval_from_env() -> float:
    raw = os.environ.get("S3Q_HEARTBEAT_INTERVAL", "").strip()
    try:
        return max(1.0, float(raw)) if raw else DEFAULT_INTERVAL
    except ValueError:
        log.warning("S3Q_HEARTBEAT_INTERVAL=%r is not a number: using %gs", raw,
                    DEFAULT_INTERVAL)
        return DEFAULT_INTERVAL


class Presence:
    """A worker's presence in the fleet: its registry record, kept by a background thread
    while the worker runs (a context manager around ``Worker.run``), and the queue's pause
    flag, asked before every claim (:meth:`paused`)."""

    def __init__(self, worker: Worker, *, interval: float | None = None,
                 enabled: bool = True) -> None:
        self.worker = worker
        self.store = worker.queue.store
        self.interval = interval or _interval_from_env()
        self.enabled = enabled
        self.gate = PauseGate(self.store)
        self.shares = worker.queue.ctx.shares
        self.key = PREFIX + worker.options.worker_id
        self.writes = 0  # records written (for tests and the bench)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: float | None = None  # (the store's clock at the first record)
        self._minutes: dict[int, int] = {}  # minute (epoch // 60) -> completions
        self._last_completed = 0

    def paused(self) -> bool:
        """Must the worker claim nothing now? (see :class:`~s3q.pause.PauseGate`)"""
        return self.enabled and self.gate.paused()

    def record(self) -> WorkerRecord:
        w = self.worker
        now = self.store.now()  # (the store's clock: the one every reader sums by)
        if self._started is None:
            self._started = now
        completed = w.stats.completed
        minute = int(now // 60)  # per minute, whatever the interval: at most 60 entries
        self._minutes[minute] = self._minutes.get(minute, 0) + completed - self._last_completed
        self._last_completed = completed
        self._minutes = {m: n for m, n in self._minutes.items()
                         if m * 60 >= now - HISTORY_SECONDS}
        return WorkerRecord(
            id=w.options.worker_id, host=socket.gethostname(), pid=os.getpid(),
            version=s3q_version(), slots=w.options.concurrency, busy=len(w.running),
            paused=self.gate.last, interval=self.interval, started=self._started,
            heartbeat=now, counters={name: int(getattr(w.stats, name)) for name in COUNTERS},
            history=[(m * 60.0, n) for m, n in sorted(self._minutes.items())],
            lease_ttl=w.queue.config.lease_ttl)

    def beat(self) -> None:
        """Write the record now (errors are logged: the registry never stops a worker)."""
        try:
            self.store.put(self.key, self.record().to_bytes())
            self.writes += 1
        except StoreError as exc:
            log.warning("cannot write the worker record %s: %s", self.key, exc,
                        extra={"event": "registry_write_failed"})

    def __enter__(self) -> Presence:
        if self.enabled:
            self._started = None
            self.beat()
            self._thread = threading.Thread(target=self._run, name="s3q-registry",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self.shares.wake.set()
        self._thread.join(timeout=10)
        self._thread = None
        try:
            self.store.delete(self.key)
        except StoreError as e:
            log.warning("cannot remove the worker record %s: %s (it shows as stale)",
                        self.key, e, extra={"event": "registry_remove_failed"})

    def look(self) -> None:
        """Read the fleet (one LIST of the registry) into the queue's shares of wait/
        (:mod:`s3q.shares`). On an error the last view stays: shares are an order of
        preference, and the claims' LISTs say what is wrong with the store. Not while the
        queue is paused (as last seen): a paused worker claims nothing, and lists nothing."""
        if self.gate.last:
            return
        try:
            live = [e.id for e in Registry(self.store).entries() if not e.stale]
        except StoreError as exc:
            log.debug("cannot read the registry for the shares of wait/: %s", exc)
            return
        self.shares.update(self.worker.options.worker_id, live)

    def _run(self) -> None:
        """Beat every ``interval``; look at the fleet then, at the start and AGAIN later (a
        fleet started together), and when a lost race asks for it
        (:meth:`s3q.shares.Shares.missed`: a look at most once a SOON, never delaying a
        beat)."""
        now = time.monotonic()
        beat_at, look_at, again, asked_from = now + self.interval, now, now + AGAIN, now
        while True:
            if time.monotonic() >= look_at:
                self.shares.wake.clear()  # (this look answers the races lost so far)
                self.look()
                look_at, again = again, math.inf
            if self._stop.is_set():  # (after any clear of wake: __exit__ sets _stop first)
                return
            # (a look due: the wakes of lost races wait for it; none: they bring one)
            (self._stop if look_at < math.inf else self.shares.wake).wait(
                max(0.0, min(beat_at, look_at) - time.monotonic()))
            if self._stop.is_set():
                return
            now = time.monotonic()
            if look_at == math.inf and self.shares.wake.is_set():
                self.shares.wake.clear()
                look_at = max(now, asked_from)
                asked_from = look_at + SOON
            if now >= beat_at:
                self.beat()
                beat_at, look_at = now + self.interval, min(look_at, now)


def published_lease_ttl(store: Store, worker_id: str) -> float:
    """The lease_ttl live worker ``worker_id`` publishes in its record (0: none, stale,
    unreadable): the one its leases are judged by when they tell none (an s3q before
    protocol 2.2 that publishes its record). One GET."""
    try:
        body, info = store.get(PREFIX + worker_id)
        record = WorkerRecord.from_bytes(body)
    except NotFound:
        return 0.0
    except (ValueError, UnicodeDecodeError):
        return 0.0
    age = max(0.0, store.now() - info.last_modified)
    return 0.0 if Registry._stale(info, age, record) else max(0.0, record.lease_ttl)


def longer_leases(records: list[Entry], lease_ttl: float,
                  holders: set[str]) -> dict[str, float]:
    """The live workers whose lease_ttl is longer than ``lease_ttl`` (id -> theirs), among
    ``records`` (:meth:`Registry.records`), that hold a lease of ``holders``: leases that do
    not tell their lease_ttl (written by an s3q before protocol 2.2), which are judged by
    ``lease_ttl``: those live jobs would look expired (an operator's command run without
    the fleet's settings). (Workers of an earlier s3q publish none.)"""
    return {e.id: e.record.lease_ttl for e in records
            if e.record is not None and not e.stale and e.record.lease_ttl > lease_ttl
            and e.id in holders}


def longer_leases_problem(longer: dict[str, float], lease_ttl: float) -> str:
    """What an operator's command says of :func:`longer_leases`."""
    ttl = max(longer.values())
    ids = ", ".join(sorted(longer)[:3]) + (" ..." if len(longer) > 3 else "")
    return (f"{len(longer)} live worker(s) ({ids}) run with lease_ttl {ttl:g}s, longer than "
            f"this command's {lease_ttl:g}s: their live jobs would look expired here; use "
            f"the fleet's settings (--lease-ttl {ttl:g}s, or S3Q_LEASE_TTL, or its config)")


def fleet_status(store: Store, entries: list[Entry] | None = None) -> dict[str, Any]:
    """What ``s3q status`` shows of the fleet, from ``entries`` (else one LIST of the
    registry: staleness judged by the default interval) and one GET of the pause flag:
    {"workers": {"live": [ids], "stale": [ids]}, "paused": {...} | None}."""
    from s3q.pause import pause_state

    entries = Registry(store).entries() if entries is None else entries
    state = pause_state(store)
    return {"workers": {"live": [e.id for e in entries if not e.stale],
                        "stale": [e.id for e in entries if e.stale]},
            "paused": None if state is None else state.as_dict()}
