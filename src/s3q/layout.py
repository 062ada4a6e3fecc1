"""Where things live in the bucket (see docs/PROTOCOL.md, "Layout").

A request named ``NAME`` (a relative key, possibly nested: ``2026/11/a_request.json``) is one
object in exactly one of the four state prefixes, plus bookkeeping under ``.s3q/``::

    wait/NAME            waiting (anything that drops a file here submits a request)
    processing/NAME      claimed, held under .s3q/lease/NAME
    finish/NAME          done (or deleted, when on_finish = "delete")
    failed/NAME          gave up after max_attempts; error record in .s3q/error/NAME
    .s3q/lease/NAME      the lock, state and body of record of an in-flight request; also
                         kept for a request back in wait/ to be retried (attempts, not-before)
    .s3q/body/ID         the body of record of a large in-flight request (private copy)
    .s3q/error/NAME      why a request in failed/ failed
    .s3q/result/NAME     optional result of a finished request
    .s3q/earlier/STAMP/request/NAME, .s3q/earlier/STAMP/error/NAME
                         an earlier dead letter of NAME displaced by a later one
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

WAIT = "wait/"
PROCESSING = "processing/"
FINISH = "finish/"
FAILED = "failed/"
LEASES = ".s3q/lease/"
ERRORS = ".s3q/error/"
RESULTS = ".s3q/result/"
BODIES = ".s3q/body/"
EARLIER = ".s3q/earlier/"
#: The longest prefix a key derived from a request name gets (see :func:`longest_key`).
_LONGEST = EARLIER + "YYYYmmddTHHMMSSZ-0123456789/request/"


class State(StrEnum):
    """The four places a request can be."""

    WAIT = "wait"
    PROCESSING = "processing"
    FINISH = "finish"
    FAILED = "failed"

    @property
    def prefix(self) -> str:
        return self.value + "/"


def key(prefix: str, name: str) -> str:
    """The object key of request ``name`` under ``prefix``."""
    return prefix + name


def name_of(prefix: str, object_key: str) -> str:
    """The request name of an object key listed under ``prefix``."""
    if not object_key.startswith(prefix):
        raise ValueError(f"{object_key!r} is not under {prefix!r}")
    return object_key[len(prefix) :]


def new_body_key() -> str:
    """A fresh private key for the body of record of a large request."""
    return BODIES + uuid.uuid4().hex


def earlier(stamp: str, name: str, *, error: bool = False) -> str:
    """Where an earlier dead letter of ``name`` (or its error record) is kept."""
    return f"{EARLIER}{stamp}/{'error' if error else 'request'}/{name}"


def stamp(at: float, tag: str) -> str:
    """``YYYYmmddTHHMMSSZ-<tag>``: when an earlier dead letter failed, and which it was."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + tag[:10]


def longest_key(name: str) -> str:
    """The longest key the protocol may derive from request ``name`` (its key limit)."""
    return _LONGEST + name


def longest_name(max_key_bytes: int) -> int:
    """The longest request name, in UTF-8 bytes, whose keys fit ``max_key_bytes``."""
    return max_key_bytes - len(_LONGEST.encode())
