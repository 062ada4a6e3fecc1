"""The rows ``s3q doctor`` reports: for each guarantee of docs/PROTOCOL.md §1 (and each
permission a worker needs), its title, what it protects, whether a worker needs it, and what
to do when it is missing. :mod:`s3q.doctor` fills them with what it observed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from s3q.capabilities import REQUIRED

__all__ = ["DENIED_CODES", "MISSING", "OK", "PERMISSIONS", "ROWS", "UNKNOWN", "WARN_IF_MISSING",
           "Check", "Row", "Status", "row"]

#: OK: shown to hold. MISSING: shown not to hold. UNKNOWN: could not be shown either way.
Status = Literal["OK", "MISSING", "UNKNOWN"]
OK: Status = "OK"
MISSING: Status = "MISSING"
UNKNOWN: Status = "UNKNOWN"

#: S3 error codes of a refused permission.
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403"})


@dataclass(frozen=True, slots=True)
class Check:
    """One row of a report."""

    name: str
    title: str
    status: Status
    observed: str
    protects: str
    todo: str
    #: A worker refuses to start when this row is MISSING (``s3q doctor`` exits 1 unless OK).
    required: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    protects: str
    #: What to do when the guarantee is missing.
    todo: str
    required: bool = False


_RETRY = ("run 's3q doctor' again; if this stays UNKNOWN the store answers in a way s3q does "
          "not expect: ask its maintainers about the answer observed")

#: The operations a worker sends, and the IAM action each needs.
PERMISSIONS: dict[str, str] = {
    "list": "s3:ListBucket", "put": "s3:PutObject", "conditional_put": "s3:PutObject",
    "get": "s3:GetObject", "head": "s3:GetObject",
    "copy": "s3:GetObject on the source and s3:PutObject on the destination",
    "delete": "s3:DeleteObject",
}

ROWS: dict[str, Row] = {
    **{f"permission.{op}": Row(
        f"permission: {op.replace('_', ' ')}", "a worker sends this request",
        f"grant {action} on the queue's prefixes ('s3q iam-policy' prints the policy a "
        "worker needs)", required=True) for op, action in PERMISSIONS.items()},
    "create_if_absent": Row(
        "create-if-absent", REQUIRED["create_if_absent"] + ": exactly one worker gets each "
        "request; views never overwrite another request",
        "use a store whose PutObject If-None-Match: * is atomic (AWS S3); SeaweedFS let "
        "concurrent creates all win (seaweedfs issue 8800)", required=True),
    "compare_and_swap": Row(
        "compare-and-swap", REQUIRED["compare_and_swap"] + ": a stalled worker's late write "
        "cannot undo a takeover",
        "use a store that honours PutObject If-Match with the current ETag and refuses a "
        "stale one (AWS S3); radosgw 16 refuses the current one, Garage is reported to "
        "ignore it", required=True),
    "conditional_delete": Row(
        "conditional delete", REQUIRED["conditional_delete"],
        "use a store that honours DeleteObject If-Match (AWS S3) and answers 404 to it on a "
        "missing key; MinIO (minio issue 21677) and radosgw 16 ignore it and delete whatever "
        "is there, and radosgw 16 answers 204 for a missing key", required=True),
    "ordered_listing": Row(
        "listing order", REQUIRED["ordered_listing"] + " (and every scan)",
        "use a general purpose bucket: S3 Express directory buckets list in no order",
        required=True),
    "copy_source_if_match": Row(
        "copy source condition", "the private copy of a large request (c1b) is of the bytes "
        "claimed; without it a changed source may run once more (a duplicate, never a loss)",
        "nothing required"),
    "copy_if_none_match": Row(
        "copy create-if-absent", "a create-if-absent copy of a large request in one request",
        "nothing required: s3q copies through GET + PUT If-None-Match instead"),
    "multipart_if_none_match": Row(
        "multipart create-if-absent", "requests over 5 GiB only: their create-if-absent "
        "copies are in parts, CompleteMultipartUpload If-None-Match: *; without it a dead "
        "letter (x2) overwrites an earlier one in failed/, a view in wait/ (w1, v2, r2) a "
        "re-submission",
        "use AWS S3 (which honours it since November 2024), or keep requests under 5 GiB: "
        "a worker starts without it"),
    "batch_conditional_delete": Row(
        "batched conditional delete", "the commits of completions settled together, and "
        "the claims' deletes from wait/, share DeleteObjects requests, each key with its "
        "own ETag (fewer requests per job)",
        "nothing required: s3q sends one DeleteObject If-Match per delete instead"),
    "etags": Row(
        "ETags", "informational: s3q compares bytes, never the ETags of different objects",
        ""),
    "store_clock": Row(
        "store clock", "lease expiry: the store's Date and Last-Modified are one clock, and "
        "the only clock compared", "the store must stamp Last-Modified with the clock of "
        "its Date header", required=True),
    "key_headroom": Row(
        "key length", "every key derived from a request name fits the store's limit "
        "(submit refuses longer names)", "shorten the queue's prefix", required=True),
    "versioning": Row(
        "versioning", "informational: never relied on; a versioned bucket keeps every lease "
        "write as a noncurrent version", "grant s3:GetBucketVersioning to see it (workers do "
        "not need it)"),
    "conflict_409": Row(
        "409 conflicts", "informational: a request answered 409 ConditionalRequestConflict "
        "was not applied and is sent again (up to 5 tries; then decided like a 412)", ""),
}

#: Rows not required, but with no fallback either: a worker starts where one is MISSING, and
#: warns at its start (the others are worked around, or only informational).
WARN_IF_MISSING = frozenset({"multipart_if_none_match"})


def row(name: str, status: Status, observed: str, todo: str | None = None) -> Check:
    """The row ``name`` with what was observed; ``todo`` defaults to the row's advice when
    the guarantee is not shown to hold."""
    r = ROWS[name]
    if todo is None:
        todo = "" if status == OK else r.todo if status == MISSING else _RETRY
    return Check(name, r.title, status, observed, r.protects, todo, r.required)
