"""Where things live in the bucket (see docs/PROTOCOL.md, "Layout").

A request named ``NAME`` (a relative key, possibly nested: ``2026/11/a_request.json``) is one
object in exactly one of the four state prefixes, plus bookkeeping under ``.s3q/``::

    wait/NAME            waiting (anything that drops a file here submits a request)
    processing/NAME      claimed, held under .s3q/lease/NAME
    finish/NAME          done (or deleted, when on_finish = "delete")
    failed/NAME          gave up after max_attempts; error record in .s3q/error/NAME
    .s3q/lease/NAME      the lock and state machine of an in-flight request; also kept
                         for a request back in wait/ to be retried (attempts, not-before)
    .s3q/error/NAME      why a request in failed/ failed
    .s3q/result/NAME     optional result of a finished request
"""

from __future__ import annotations

from enum import StrEnum

WAIT = "wait/"
PROCESSING = "processing/"
FINISH = "finish/"
FAILED = "failed/"
LEASES = ".s3q/lease/"
ERRORS = ".s3q/error/"
RESULTS = ".s3q/result/"


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
