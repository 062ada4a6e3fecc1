"""What a store guarantees: the rows of docs/PROTOCOL.md §1, as probed by ``s3q doctor`` or
declared by a backend that implements them itself (memory, local directory).

The protocol needs the *required* guarantees and refuses to run without them; it uses the
optional ones when present (a server-side create-if-absent copy instead of GET + ``PUT!``)
and reports the informational ones (what an ETag identifies, versioning).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["REQUIRED", "Capabilities", "EtagKind"]

#: ``md5``: a single-part object's ETag is the MD5 of its bytes (AWS SSE-S3, MinIO, moto,
#: radosgw): equal bytes have equal ETags. ``opaque``: every write gets its own ETag (SSE-KMS,
#: SSE-C, S3 Express). ``unknown``: not probed.
EtagKind = Literal["md5", "opaque", "unknown"]

#: The guarantees a worker refuses to run without, with what each protects.
REQUIRED: dict[str, str] = {
    "create_if_absent": "PutObject If-None-Match: * is the claim's lock (c1)",
    "compare_and_swap": "PutObject If-Match is the fence of every lease write",
    "conditional_delete": "DeleteObject If-Match keeps deletes from removing another "
                          "request of the same name",
    "ordered_listing": "ListObjectsV2 in key order from StartAfter: the claim's cursor",
}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One store's guarantees. ``None``: not known (not probed yet)."""

    create_if_absent: bool | None = None
    compare_and_swap: bool | None = None
    conditional_delete: bool | None = None
    ordered_listing: bool | None = None
    #: CopyObject honours ``If-None-Match: *`` on the destination (else GET + PUT!).
    copy_if_none_match: bool | None = None
    #: CopyObject honours ``x-amz-copy-source-if-match`` (else a changed source can be
    #: copied: a duplicate run, never a loss).
    copy_source_if_match: bool | None = None
    #: DeleteObjects honours each object's ETag as DeleteObject's If-Match does (a stale one
    #: refused, a missing key an error): several deletes then travel in one request.
    batch_conditional_delete: bool | None = None
    #: Overlapping conditional writes may be answered 409 ConditionalRequestConflict.
    conflict_409: bool | None = None
    etags: EtagKind = "unknown"
    versioning: bool | None = None

    def missing(self) -> list[str]:
        """The required guarantees known to be absent (``None`` is not counted)."""
        return [name for name in REQUIRED if getattr(self, name) is False]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capabilities:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


#: What the in-process backends (memory, local directory) implement themselves.
NATIVE = Capabilities(create_if_absent=True, compare_and_swap=True, conditional_delete=True,
                      ordered_listing=True, copy_if_none_match=True,
                      copy_source_if_match=True, batch_conditional_delete=False,
                      conflict_409=False, etags="md5",
                      versioning=False)
