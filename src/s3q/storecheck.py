"""A worker's start-up check of its store: the worker's part of the probe of ``s3q doctor``
(:func:`s3q.doctor.probe` with ``full=False``), cached in the store itself so that a fleet
does not probe at every start.

:func:`check_store` reads ``.s3q/probe/result`` when it is fresh: written by this version
of s3q for this store (its URL and, on S3, its endpoint: a bucket mirrored to another
server with its .s3q/ objects is another store) less than ``max_age`` seconds ago, by the
store's clock. Otherwise it probes, and caches the result when every required guarantee
holds. A result with a missing guarantee is never cached: the worker refuses to start, and
its next start probes again, so a store fixed meanwhile is found without anybody clearing a
cache; and any probe that does not find every guarantee (``s3q doctor`` too) deletes the
cached result, so that a store that lost one is not trusted until the cache expires.
Either way the store's :attr:`~s3q.store.Store.capabilities` are set from the result (an
S3 store then sends CopyObject's own If-None-Match where it was proven, instead of GET +
PUT).

The cache is the store's, not the worker's: a result cached by a worker with other
credentials does not prove this worker's permissions (its first request that is refused
fails as it would without the check). Stores that implement the guarantees themselves
(local directory, memory: every capability declared) are not probed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields

from s3q import __version__
from s3q.capabilities import Capabilities
from s3q.doctor import RESULT, Report, probe
from s3q.guarantees import MISSING, UNKNOWN, WARN_IF_MISSING, Check
from s3q.store import NotFound, Store, StoreError

__all__ = ["StoreCheck", "check_store", "set_capabilities"]

log = logging.getLogger(__name__)

#: A cached result stamped this far in the store's future is not trusted (seconds).
_FUTURE = 60.0


@dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` found. ``report`` None: the store declares everything."""

    report: Report | None
    cached: bool = False

    @property
    def missing(self) -> list[Check]:
        """The required guarantees shown to be absent: the worker must not start."""
        return self.report.missing if self.report else []

    @property
    def unknown(self) -> list[Check]:
        """Required rows the probe could not decide (a worker starts, with a warning)."""
        return [c for c in self.report.checks if c.required and c.status == UNKNOWN] \
            if self.report else []

    @property
    def at_risk(self) -> list[Check]:
        """Rows not required but without a fallback, MISSING (a worker starts, with a
        warning: :data:`~s3q.guarantees.WARN_IF_MISSING`)."""
        return [c for c in self.report.checks
                if c.name in WARN_IF_MISSING and c.status == MISSING] if self.report else []

    def refusal(self) -> str:
        """One line naming each missing guarantee, what was seen and what to do."""
        store = self.report.store if self.report else "the store"
        return (f"the store at {store} lacks what s3q needs to never lose or double-run a "
                "request, so no worker may run on it: " + "; ".join(
                    f"{c.title}: {c.observed} (to do: {c.todo})" for c in self.missing)
                + ". Details: 's3q doctor'.")


def check_store(store: Store, *, max_age: float) -> StoreCheck:
    """The cached result if fresh (``max_age`` 0: never), else a new probe. Raises
    :class:`~s3q.store.StoreError` when the store cannot be used at all (unreachable,
    missing bucket, rejected credentials)."""
    if _declared(store.capabilities):
        return StoreCheck(None)
    report = _cached(store, max_age) if max_age > 0 else None
    cached = report is not None
    if report is None:
        report = probe(store, full=False)
        if report.ok:
            _save(store, report)
    set_capabilities(store, report.capabilities)
    return StoreCheck(report, cached)


def set_capabilities(store: Store, capabilities: Capabilities) -> None:
    """Tell ``store`` what it was found to guarantee (only an S3 store is told: the others
    implement every guarantee themselves)."""
    from s3q.backends.s3 import S3Store

    if isinstance(store, S3Store):
        store.capabilities = capabilities


def _declared(capabilities: Capabilities) -> bool:
    return None not in (getattr(capabilities, f.name) for f in fields(capabilities))


#: The revision of the probes (raised when one asks more of a store, e.g. 2: a conditional
#: delete of a missing key must answer 404; 3: CompleteMultipartUpload If-None-Match is
#: probed): a result cached by earlier probes is not used.
PROBES = 3


def _cached(store: Store, max_age: float) -> Report | None:
    try:
        data, _ = store.get(RESULT)
    except NotFound:
        return None
    try:
        doc = json.loads(data)
        report = Report.from_json(doc)
        age = store.now() - float(doc["probed_at"])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("%s/%s is unreadable (%s): probing the store again", store.url, RESULT, e)
        return None
    if (report.s3q_version != __version__ or report.store != store.url or not report.ok
            or doc.get("endpoint") != _endpoint(store) or doc.get("probes") != PROBES):
        return None  # (the same bucket name on another server is another store)
    return report if -_FUTURE <= age <= max_age else None


def _endpoint(store: Store) -> str | None:
    """The server of an S3 store (its URL names the bucket only); None for the others."""
    endpoint = getattr(store, "endpoint", None)
    return endpoint if isinstance(endpoint, str) else None


def _save(store: Store, report: Report) -> None:
    doc = {**report.to_json(), "probed_at": store.now(), "endpoint": _endpoint(store),
           "probes": PROBES}
    try:
        store.put(RESULT, json.dumps(doc, ensure_ascii=False, indent=1).encode())
    except StoreError as e:  # the next start probes again: no harm
        log.warning("could not cache the store probe at %s/%s: %s", store.url, RESULT, e)
