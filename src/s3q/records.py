"""The small JSON records the protocol keeps under ``.s3q/`` (see docs/PROTOCOL.md).

Records are immutable values; writing one means a conditional PUT of its whole body. Every
lease body carries a claim id and a sequence number, so two different writes never produce the
same bytes (hence the same ETag) — which is what makes ``If-Match`` on a lease a fence.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, Self

__all__ = [
    "CLOCK_MARGIN",
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
    """What a lease says about its request. ``held`` is the only non-terminal intent; the
    others are commit records: the decision is made, and whoever finds the lease (the
    owner, or any worker once it expired) carries out the remaining steps."""

    HELD = "held"  # claimed; the handler runs (or the claim's own steps are unfinished)
    DONE = "done"  # completed: move to finish/ (or delete), then drop the lease
    WAIT = "wait"  # back to wait/ (release, retry after failure, recovery)
    RETRY = "retry"  # resting: in wait/ again after `attempts` attempts, not before `not_before`
    DEAD = "dead"  # dead-letter: error record, move to failed/, drop the lease
    REQUEUE = "requeue"  # operator's redrive: failed/ back to wait/, attempts reset


def new_claim_id() -> str:
    return uuid.uuid4().hex


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(cls: type[Any], body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"corrupt {cls.__name__} record: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != 1:
        raise RecordError(f"unknown {cls.__name__} record version: {str(data)[:80]}")
    return data


@dataclass(frozen=True, slots=True)
class Lease:
    """The body of ``.s3q/lease/NAME``."""

    name: str
    worker: str
    claim: str  # unique per claim (and per takeover): the fencing identity
    gen: int  # generation: +1 on every takeover
    seq: int  # +1 on every write by the same claim (renewals, intents)
    attempt: int  # which attempt this is (1 = first); crashed attempts count
    etag: str  # ETag of the request body being processed
    intent: Intent = Intent.HELD
    # Informational, by the writer's clock (never used for expiry decisions):
    written_at: float = 0.0
    # Intent details:
    on_finish: str = "move"  # DONE: "move" to finish/ or "delete"
    result_b64: str | None = None  # DONE: small result, written to .s3q/result/NAME
    attempts: int = 0  # WAIT/RETRY: attempts made so far (0: no RETRY lease is kept)
    not_before: float = 0.0  # WAIT/RETRY: store time before which it must not be claimed
    error: dict[str, Any] | None = field(default=None)  # WAIT/RETRY/DEAD: the last error

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["v"] = 1
        data["intent"] = self.intent.value
        return _encode(data)

    @classmethod
    def from_bytes(cls, body: bytes) -> Self:
        data = _decode(cls, body)
        data.pop("v")
        try:
            data["intent"] = Intent(data["intent"])
            return cls(**data)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"corrupt lease record: {exc}") from exc

    def next(self, **changes: Any) -> Self:
        """The next write of the same claim (sequence + 1)."""
        return replace(self, seq=self.seq + 1, **changes)

    def taken_over(self, worker: str, **changes: Any) -> Self:
        """The lease as a new owner writes it when taking over (generation + 1)."""
        return replace(
            self, worker=worker, claim=new_claim_id(), gen=self.gen + 1, seq=0, **changes
        )

    @property
    def result(self) -> bytes | None:
        return None if self.result_b64 is None else base64.b64decode(self.result_b64)

    @staticmethod
    def encode_result(result: bytes | None) -> str | None:
        return None if result is None else base64.b64encode(result).decode("ascii")


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
