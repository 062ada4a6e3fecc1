"""The small JSON records the protocol keeps under ``.s3q/`` (see docs/PROTOCOL.md).

Records are immutable values; writing one means a conditional PUT of its whole body. Every
lease body carries a claim id and a sequence number, so two different writes never produce the
same bytes (hence the same ETag) — which is what makes ``If-Match`` on a lease a fence.
"""

from __future__ import annotations

import base64
import json
import math
import random
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Self

__all__ = [
    "CLOCK_MARGIN",
    "INLINE_MAX",
    "ErrorRecord",
    "Intent",
    "Lease",
    "RecordError",
    "backoff_delay",
    "new_claim_id",
]

#: Seconds added to every lease expiry: S3's Date and Last-Modified have 1 s resolution, and
#: the estimate of the store's clock is advanced by local monotonic time between responses.
CLOCK_MARGIN = 2.0


class RecordError(ValueError):
    """A record object could not be decoded (corrupt or written by an unknown version)."""


class Intent(StrEnum):
    """What a lease says about its request (docs/PROTOCOL.md §3). ``held`` and ``retry``
    are states; the others are commit records: the decision is made, and whoever holds the
    lease (the owner, or any worker once it expired) carries out the remaining steps."""

    HELD = "held"  # claimed; the handler runs (or the claim's own steps are unfinished)
    RETRY = "retry"  # resting: back in wait/ after `attempts` attempts, not before `not_before`
    DONE = "done"  # completed: to finish/ (or deleted), then drop the lease
    DEAD = "dead"  # dead letter: to failed/ with an error record, then drop the lease
    REQUEUE = "requeue"  # operator's redrive: failed/ back to wait/, attempts reset


#: Request bodies up to this size are kept in the lease itself; larger ones in a private
#: copy under ``.s3q/body/`` (docs/PROTOCOL.md §3, "the body of record").
INLINE_MAX = 64 * 1024


def new_claim_id() -> str:
    return uuid.uuid4().hex


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(cls: type[Any], body: bytes, versions: tuple[int, ...] = (1,)) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # (too deep)
        raise RecordError(f"corrupt {cls.__name__} record: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") not in versions:
        raise RecordError(f"unknown {cls.__name__} record version: {str(data)[:80]}")
    return data


@dataclass(frozen=True, slots=True)
class Lease:
    """The body of ``.s3q/lease/NAME``: lock, state and body of record of one request."""

    name: str
    worker: str  # "" = held by nobody (an orphan adopted by the scan, a deferred release)
    claim: str  # unique per claim (and per takeover): the fencing identity
    gen: int  # generation: +1 on every takeover and every claim of a retry
    seq: int  # +1 on every write by the same claim (renewals, intents)
    attempt: int  # which attempt this is (1 = first); crashed attempts count
    intent: Intent = Intent.HELD
    # The body of record: inline (base64) or the key of a private copy; None only in a
    # lease written by s3q 0.1 (version 1), whose body is adopted from its views.
    body_b64: str | None = None
    body_key: str | None = None
    size: int = 0
    # ETags of objects this lease's holders touch (each from the response that created or
    # read that very object, never compared across copies):
    src: str | None = None  # wait/NAME as claimed (c2 deletes exactly it)
    proc: str | None = None  # the processing/ view (d4, w3, x4)
    view: str | None = None  # the wait/ view of a RETRY lease (the next claim's c2)
    failed: str | None = None  # REQUEUE: failed/NAME being redriven (r4)
    # Informational, by the writer's clock (never used for expiry decisions):
    written_at: float = 0.0
    # The writer's lease_ttl (every write sets it; 0: written before protocol 2.2): whoever
    # judges this lease's expiry uses it, not their own (docs/PROTOCOL.md §3, "Expiry")
    ttl: float = 0.0
    # Intent details:
    on_finish: str = "move"  # DONE: "move" to finish/ or "delete"
    result_b64: str | None = None  # DONE: small result, written to .s3q/result/NAME
    attempts: int = 0  # RETRY: attempts made so far
    not_before: float = 0.0  # RETRY: store time before which it must not be claimed
    error: dict[str, Any] | None = field(default=None)  # RETRY/DEAD: the last error
    version: int = 2

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data.pop("version")
        data["v"] = 2
        data["intent"] = self.intent.value
        return _encode({k: v for k, v in data.items() if v is not None})

    @classmethod
    def from_bytes(cls, body: bytes) -> Self:
        data = _decode(cls, body, versions=(1, 2))
        version = data.pop("v")
        if version == 1:
            data = _from_version_1(data)
        # fields a later s3q of the same record version added are left out, not taken for
        # corruption: a fleet that is being upgraded reads each other's leases
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        ttl = data.get("ttl", 0.0)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (
                ttl > 0 and _finite(ttl)):
            data["ttl"] = 0.0  # (nothing any s3q writes: judged as not told, by the reader's)
        try:
            data["intent"] = Intent(data["intent"])
            lease = cls(**data, version=version)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"corrupt lease record: {exc}") from exc
        # a field of the wrong type (edited by hand) is a corrupt record, not an error in
        # whoever reads it next: the takeover scan reads every lease in turn
        for name, kinds in _LEASE_TYPES.items():
            value = getattr(lease, name)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise RecordError(f"corrupt lease record: {name} = {value!r}")
        if not _finite(lease.not_before):  # (a retry never due, or one no sum takes): due
            lease = replace(lease, not_before=0.0)  # at once, its body of record kept
        return lease

    def next(self, **changes: Any) -> Self:
        """The next write of the same claim (sequence + 1)."""
        return replace(self, seq=self.seq + 1, **changes)

    def taken_over(self, worker: str, **changes: Any) -> Self:
        """The lease as a new owner writes it when taking over (generation + 1)."""
        return replace(
            self, worker=worker, claim=new_claim_id(), gen=self.gen + 1, seq=0, **changes
        )

    @property
    def body(self) -> bytes | None:
        """The inline body of record (None: large, or a version-1 lease)."""
        return None if self.body_b64 is None else base64.b64decode(self.body_b64)

    @property
    def result(self) -> bytes | None:
        return None if self.result_b64 is None else base64.b64decode(self.result_b64)

    @staticmethod
    def encode(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode("ascii")


_STR, _OPT_STR, _INT, _NUM = (str,), (str, type(None)), (int,), (int, float)


def _finite(value: float) -> bool:
    """Is ``value`` a finite number a float holds (not NaN, not ±Infinity, not a JSON
    integer of 309 digits or more, on which float arithmetic raises OverflowError)?"""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


#: The type of each field of a lease record as read (Lease.from_bytes checks them).
_LEASE_TYPES: dict[str, tuple[type, ...]] = {
    "name": _STR, "worker": _STR, "claim": _STR, "gen": _INT, "seq": _INT, "attempt": _INT,
    "body_b64": _OPT_STR, "body_key": _OPT_STR, "size": _INT, "src": _OPT_STR,
    "proc": _OPT_STR, "view": _OPT_STR, "failed": _OPT_STR, "written_at": _NUM, "ttl": _NUM,
    "on_finish": _STR, "result_b64": _OPT_STR, "attempts": _INT, "not_before": _NUM,
    "error": (dict, type(None))}


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A lease of s3q 0.1: no body of record (its body is in the views); ``etag`` named
    the request's bytes; intent ``wait`` (a move back to wait/ under way) is a retry."""
    etag = data.pop("etag", None)
    intent = data.get("intent")
    if intent == "wait":
        data["intent"] = "retry"
    if intent in ("retry", "wait"):
        data["view"] = etag
    elif intent == "requeue":
        data["failed"] = etag
    else:
        data["proc"] = etag
    return data


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """The body of ``.s3q/error/NAME``: why a request ended in failed/."""

    name: str
    attempts: int
    worker: str
    error: dict[str, Any]
    failed_at: float  # store time

    def to_bytes(self) -> bytes:
        return _encode({**asdict(self), "v": 1})

    @classmethod
    def from_bytes(cls, body: bytes) -> Self:
        data = _decode(cls, body)
        data.pop("v")
        try:
            return cls(**data)
        except TypeError as exc:
            raise RecordError(f"corrupt error record: {exc}") from exc


def backoff_delay(
    attempt: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter after failed attempt number ``attempt`` (1-based):
    uniformly in [d/2, d] where d = min(cap, base * 2**(attempt-1))."""
    d = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(d / 2, d)
