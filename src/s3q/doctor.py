"""The store probe of ``s3q doctor``: does the configured store give the guarantees of
docs/PROTOCOL.md §1, and what else is worth knowing about it?

:func:`probe` writes throwaway objects under ``.s3q/probe/<random>/`` (removed afterwards)
through the :class:`~s3q.store.Store` seam and returns a :class:`Report`: one
:class:`~s3q.guarantees.Check` per row (OK, MISSING or UNKNOWN; what was observed, what it
protects, what to do) and the :class:`~s3q.capabilities.Capabilities` they prove. The
conditional requests are probed by :mod:`s3q.probes`; here are the permissions, the listing
order, ETags, the clock, the key length, versioning and 409s. Only what the seam does not
expose is asked of an :class:`~s3q.backends.s3.S3Store` itself: the bucket's versioning.

Stores that implement the guarantees themselves (memory, local directory: every capability
declared) need no probe of them and are reported from their declaration, unless
``trust_declared=False``; their permissions, clock and key length are still probed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from s3q import __version__, layout
from s3q.capabilities import Capabilities, EtagKind
from s3q.copyprobes import CopyProber
from s3q.guarantees import MISSING, OK, ROWS, UNKNOWN, Check, row
from s3q.probes import PROBE, is_denied
from s3q.store import Store, StoreError, StoreUnavailable, list_all

__all__ = ["PROBE", "RACERS", "RESULT", "ROUNDS", "SCHEMA", "Report", "probe"]

log = logging.getLogger(__name__)

#: The cached result of a worker's start-up probe (see :mod:`s3q.storecheck`).
RESULT = PROBE + "result"
#: The JSON schema of ``s3q doctor --json`` and of the worker's cached result.
SCHEMA = "s3q.doctor/1"
#: Concurrent conditional writes per round, and rounds, of the atomicity probes.
RACERS = 8
ROUNDS = 4
#: Leftovers of probes that were killed are removed once they are this old (seconds).
STALE_PROBE = 3600.0
#: Keys of the listing probe: in UTF-8 byte order (S3's), not UTF-16's nor a locale's.
_LISTED = ["B", "a", "a-b", "a/b", "a0", "b", "z", "~", "é", "\uff5e", "\U0001f600"]


@dataclass(frozen=True)
class Report:
    """The result of one probe of one store."""

    store: str
    started: float
    finished: float
    checks: tuple[Check, ...]
    capabilities: Capabilities
    s3q_version: str = __version__

    @property
    def ok(self) -> bool:
        """Every required row holds (``s3q doctor`` exits 0)."""
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.required and c.status != OK]

    @property
    def missing(self) -> list[Check]:
        """Required rows proven absent (UNKNOWN ones are not): a worker refuses these."""
        return [c for c in self.checks if c.required and c.status == MISSING]

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "store": self.store, "s3q_version": self.s3q_version,
                "started_at": iso(self.started), "finished_at": iso(self.finished),
                "started": self.started, "finished": self.finished, "ok": self.ok,
                "checks": [c.to_json() for c in self.checks],
                "capabilities": self.capabilities.to_dict()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """Raises KeyError, TypeError or ValueError on anything but :meth:`to_json`'s."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document")
        if not all(isinstance(c, dict) for c in data["checks"]) or not isinstance(
                data["capabilities"], dict):
            raise TypeError("checks and capabilities must be objects")
        names = {f.name for f in fields(Check)}
        checks = tuple(Check(**{k: v for k, v in c.items() if k in names})
                       for c in data["checks"])
        return cls(str(data["store"]), float(data["started"]), float(data["finished"]),
                   checks, Capabilities.from_dict(data["capabilities"]),
                   str(data["s3q_version"]))


def probe(store: Store, *, full: bool = True, trust_declared: bool = True,
          racers: int = RACERS, rounds: int = ROUNDS) -> Report:
    """Probe ``store``. ``full=False`` is the worker's start-up part: every row but bucket
    versioning (which needs s3:GetBucketVersioning, not in a worker's IAM policy). Raises
    :class:`~s3q.store.StoreUnavailable` when the store cannot be reached at all."""
    started = time.time()
    # one connection per racer: more would open (and log about) throwaway connections
    racers = max(2, min(racers, getattr(store, "connections", racers)))
    caps = store.capabilities
    declared = trust_declared and None not in (getattr(caps, f.name) for f in fields(caps))
    with _Probe(store, racers, rounds) as p:
        p.permissions()
        if declared:
            p.declared(caps)
        else:
            for check in (p.create_if_absent, p.compare_and_swap, p.conditional_delete,
                          p.ordered_listing, p.copy_source_if_match, p.copy_if_none_match,
                          p.multipart_if_none_match, p.batch_conditional_delete, p.etags):
                p.run(check)
        p.run(p.store_clock)
        p.run(p.key_headroom)
        if not declared:
            if full:
                p.run(p.versioning)
            p.conflicts_seen()
    found = p.capabilities(caps if declared else Capabilities())
    report = Report(store.url, started, time.time(), tuple(p.checks), found)
    if not report.ok:  # a worker's cached OK of this store (s3q.storecheck) no longer holds
        with contextlib.suppress(StoreError):
            store.delete(RESULT)
    return report


@dataclass
class _Probe(CopyProber):
    """The probes of :mod:`s3q.probes`, and the rest of the rows."""

    etag_kind: EtagKind = "unknown"
    versioned: bool | None = None
    _answered_409: int = 0

    def __enter__(self) -> _Probe:
        self._answered_409 = self._store_409s()
        return self

    def _store_409s(self) -> int:
        """409s the store answered so far, by its own count (an S3 store sends a request
        answered 409 again by itself: the probe sees only the last answer)."""
        counts = getattr(self.store, "snapshot_counts", None)
        return int(counts()[1]["ConditionalRequestConflict"]) if callable(counts) else 0

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Delete this probe's objects, and those of probes killed over an hour ago."""
        try:
            now = self.store.now()
            for info in list(list_all(self.store, PROBE)):
                stale = now - info.last_modified > STALE_PROBE and info.key != RESULT
                if info.key.startswith(self.base) or stale:
                    self.store.delete(info.key)
        except StoreError as e:
            log.warning("could not remove the probe's objects under %s: %s", self.base, e)

    # -- permissions ----------------------------------------------------------------------

    def permissions(self) -> None:
        """Each operation a worker sends, once. A store that cannot be reached (or a
        missing bucket, rejected credentials) raises at once: nothing can be probed."""
        try:
            self.store.list_page(self.base, limit=1)
        except StoreError as e:
            if isinstance(e, StoreUnavailable) or not is_denied(e):
                raise
        k, c = self.key("perm"), self.key("perm-copy")
        calls: dict[str, Callable[[], Any]] = {
            "list": lambda: self.store.list_page(self.base, limit=1),
            "put": lambda: self.store.put(k, b"permission"),
            "conditional put": lambda: self.store.put(self.key("perm-new"), b"p",
                                                      if_none_match=True),
            "get": lambda: self.store.get(k),
            "head": lambda: self.store.head(k),
            "copy": lambda: self.store.copy(k, c),
            "delete": lambda: self.store.delete(c),
        }
        for what, call in calls.items():
            answer = self.ask(call, conditional=what == "conditional put")
            name = f"permission.{what.replace(' ', '_')}"
            if answer.kind == "ok":
                self.checks.append(row(name, OK, "allowed"))
            elif answer.kind == "denied":
                self.checks.append(row(name, MISSING, "AccessDenied"))
            else:
                self.checks.append(row(name, UNKNOWN, f"answered {answer}"))

    def declared(self, caps: Capabilities) -> None:
        how = f"declared by {type(self.store).__name__}: s3q implements it itself"
        for name in ("create_if_absent", "compare_and_swap", "conditional_delete",
                     "ordered_listing", "copy_source_if_match", "copy_if_none_match"):
            self.checks.append(row(name, OK if getattr(caps, name) else MISSING, how))
        self.checks.append(row("etags", OK, f"{caps.etags} ({how})"))

    # -- the other rows -------------------------------------------------------------------

    def ordered_listing(self) -> Check:
        prefix = self.key("list/")
        for name in random.sample(_LISTED, len(_LISTED)):
            self.write("list/" + name, b"")
        expected = sorted(prefix + name for name in _LISTED)  # code points = UTF-8 bytes
        whole = [i.key for i in self.store.list_page(prefix).items]
        if whole != expected:
            return row("ordered_listing", MISSING, f"listed {_names(whole, prefix)}, not "
                       f"{_names(expected, prefix)}")
        paged: list[str] = []
        start: str | None = None
        while len(paged) <= len(expected):
            page = self.store.list_page(prefix, start_after=start, limit=3)
            paged += [i.key for i in page.items]
            if not page.truncated or not page.items:
                break
            start = page.items[-1].key
        middle = [i.key for i in self.store.list_page(prefix, start_after=prefix + "a.").items]
        if paged != expected or middle != [k for k in expected if k > prefix + "a."]:
            return row("ordered_listing", MISSING, "StartAfter and MaxKeys do not page "
                       f"through the keys in order: {_names(paged, prefix)}")
        return row("ordered_listing", OK, f"{len(expected)} keys in UTF-8 byte order, "
                   "whole and in pages of 3 from StartAfter")

    def etags(self) -> Check:
        a, b = self.write("etag-a", b"same bytes"), self.write("etag-b", b"same bytes")
        again = self.write("etag-a", b"same bytes")
        md5 = '"' + hashlib.md5(b"same bytes", usedforsecurity=False).hexdigest() + '"'
        if a.etag == b.etag == again.etag:
            self.etag_kind = "md5"
            what = "the MD5 of the bytes" if a.etag == md5 else f"equal ({a.etag}), not MD5"
            return row("etags", OK, f"md5: equal bytes get equal ETags ({what})")
        self.etag_kind = "opaque"
        return row("etags", OK, "opaque: every write of the same bytes got its own ETag "
                   "(SSE-KMS, SSE-C, S3 Express); s3q compares bytes, never such ETags")

    def store_clock(self) -> Check:
        before = self.store.now()
        self.write("clock", b"")
        stamped = self.store.head(self.key("clock")).last_modified
        after = self.store.now()
        offset = round(after - time.time(), 1) + 0.0  # no "-0.0"
        skew = f"the store's clock is {offset:+.1f} s from this host's"
        if not before - 2 <= stamped <= after + 2:
            return row("store_clock", MISSING, f"Last-Modified {iso(stamped)} is outside the "
                       f"store's Date {iso(before)}..{iso(after)}: lease expiry would be wrong")
        note = " (request signing fails beyond 15 minutes: fix NTP)" if abs(offset) > 600 \
            else " (only the store's clock is used)"
        return row("store_clock", OK, f"Last-Modified follows the Date clock; {skew}{note}")

    def key_headroom(self) -> Check:
        limit = self.store.max_key_bytes
        room = layout.longest_name(limit)
        seen = f"names up to {room} bytes ({limit} below the prefix, less " \
               f"{len(layout.longest_key('').encode())} for the longest derived key)"
        return row("key_headroom", OK if room > 0 else MISSING, seen,
                   "" if room >= 255 else "shorten the queue prefix")

    def versioning(self) -> Check:
        from s3q.backends.s3 import S3Store

        if not isinstance(self.store, S3Store):
            self.versioned = False
            return row("versioning", OK, "no versions kept")
        status = self.ask(self.store.bucket_versioning, conditional=False)
        if status.kind != "ok":
            return row("versioning", UNKNOWN, f"GetBucketVersioning: {status}",
                       ROWS["versioning"].todo)
        self.versioned = status.value == "Enabled"
        if not status.value:
            return row("versioning", OK, "never enabled")
        return row("versioning", OK, f"{status.value}: every lease write and delete keeps "
                   "a noncurrent version", "expire noncurrent versions and delete markers "
                   "under the queue's prefix with a lifecycle rule" if self.versioned else "")

    def conflicts_seen(self) -> None:
        self.conflicts = max(self.conflicts, self._store_409s() - self._answered_409)
        self.checks.append(row("conflict_409", OK, (
            f"{self.conflicts} of {self.conditional_writes} conditional requests answered "
            "409 ConditionalRequestConflict: sent again")
            if self.conflicts else f"none in {self.conditional_writes} conditional requests "
            "(AWS sends them under contention: sent again)"))

    def capabilities(self, declared: Capabilities) -> Capabilities:
        by_name = {c.name: c.status for c in self.checks}
        found: dict[str, Any] = {}
        for f in fields(Capabilities):
            status = by_name.get(f.name)
            if status is not None and f.name not in {"etags", "conflict_409", "versioning"}:
                found[f.name] = {OK: True, MISSING: False}.get(status)
        if "conflict_409" in by_name:
            found["conflict_409"] = self.conflicts > 0
        if self.etag_kind != "unknown":
            found["etags"] = self.etag_kind
        if self.versioned is not None:
            found["versioning"] = self.versioned
        return replace(declared, **found)


def iso(ts: float) -> str:
    """ISO 8601, UTC, to the millisecond."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _names(keys: list[str], prefix: str) -> str:
    return "[" + ", ".join(k.removeprefix(prefix) for k in keys) + "]"
