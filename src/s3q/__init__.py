"""s3q — a crash-safe request queue on S3 (or a local directory).

Requests are objects under ``wait/``; a worker claims one atomically (a lease created with
``If-None-Match: *``), holds it under ``processing/`` while renewing its lease, and moves it
to ``finish/`` (or deletes it) when done, or to ``failed/`` after ``max_attempts``. See
docs/PROTOCOL.md.
"""

from s3q.backends import S3Options, open_store
from s3q.bulk import BulkIncomplete, BulkStopped
from s3q.errors import ConfigError, JobStateError, LeaseLost, S3QError
from s3q.job import Job
from s3q.layout import State
from s3q.queue import Queue, QueueConfig, Recovered
from s3q.store import (
    InvalidKey,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    Store,
    StoreError,
    StoreUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "BulkIncomplete",
    "BulkStopped",
    "ConfigError",
    "InvalidKey",
    "Job",
    "JobStateError",
    "LeaseLost",
    "NotFound",
    "ObjectInfo",
    "PreconditionFailed",
    "Queue",
    "QueueConfig",
    "Recovered",
    "S3Options",
    "S3QError",
    "State",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
