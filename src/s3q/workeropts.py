"""What a :class:`~s3q.worker.Worker` is told (:class:`WorkerOptions`, from the CLI's
settings or a library user's code) and what it counts (:class:`WorkerStats`, returned by
``Worker.run`` and shown at its end)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["WorkerOptions", "WorkerStats"]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    worker_id: str
    concurrency: int = 4
    #: Seconds running jobs get to finish after a stop request before they are given back.
    grace: float = 30.0
    #: Process what is there, then exit.
    burst: bool = False
    #: Stop after claiming this many jobs (None: no limit).
    max_jobs: int | None = None
    #: Longest idle sleep between polls (seconds); idle sleeps start at 0.2 s and double.
    poll_interval: float = 10.0
    #: Re-queue this worker id's leftovers at start.
    recover_on_start: bool = True
    #: Run the takeover scan from a thread of its own (else only claims run it).
    scanner: bool = True
    #: A job writes its processing/ view only once it has run this long (0: at the claim).
    view_after: float = 1.0
    #: Complete or fail jobs on threads of their own, off the slots' critical path.
    settle_in_background: bool = True
    #: With an event source: longest wait between listings of an empty wait/ (seconds).
    events_list_interval: float = 300.0
    #: A burst whose store answers nothing but errors for this long (seconds) ends early
    #: (WorkerStats.error says so): a batch job must not retry for ever.
    burst_patience: float = 120.0


@dataclass
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0
    started_at: float = field(default_factory=time.monotonic)
    #: Why a burst ended before its queue was drained (its store kept failing), or None.
    error: str | None = None
