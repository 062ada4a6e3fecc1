"""The storage seam: the handful of object-store operations the queue is built on.

Nothing below this seam knows about requests, leases or states; nothing above it knows
boto3. Every backend (``local``, ``s3``, ``memory``) implements :class:`Store` and raises
only the errors defined here.

Correctness of the queue relies on exactly these guarantees, which every backend must give
(the contract tests in ``tests/contract`` check them on each one):

* strong read-after-write consistency for ``get``/``head``/``list``;
* ``put(..., if_none_match=True)`` creates the object only if the key is absent, else raises
  :class:`PreconditionFailed`;
* ``put(..., if_match=etag)`` replaces the object only if its current ETag is ``etag``, else
  raises :class:`PreconditionFailed` (or :class:`NotFound` when the key is absent);
* ``delete(..., if_match=etag)`` deletes only if the current ETag is ``etag``;
* ``copy(..., if_none_match=True)`` creates the destination only if it is absent (natively,
  or as a read and a ``put(if_none_match=True)`` where the server ignores the condition);
* ETags are quoted strings; equal ETags on one key mean equal bytes, but unequal ETags mean
  nothing (opaque ETags: every write of the same bytes gets a new one). So an ETag never
  says who wrote an object: records that fence carry something unique to the writer.

Every write takes an optional ``guard``: a function the backend calls immediately before
the request leaves the process (on S3: after signing, in botocore's ``before-send``), which
raises to refuse sending it. A lease holder passes a check of its lease deadline, so that a
process that stalled past its lease sends nothing more (docs/PROTOCOL.md §3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from s3q.capabilities import Capabilities

__all__ = [
    "Body",
    "Guard",
    "InvalidKey",
    "NotFound",
    "ObjectInfo",
    "Page",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "StoreRefused",
    "StoreUnavailable",
    "delete_each",
    "of_its_own",
    "validate_key",
]

#: What ``put`` accepts: bytes, or a binary file object read to its end (streamed, not
#: loaded whole, by backends that can stream).
Body = bytes | BinaryIO

#: Called immediately before a write is sent; raises to refuse sending it.
Guard = Callable[[], None]

#: S3's limit on a key, in UTF-8 bytes.
S3_MAX_KEY_BYTES = 1024


class StoreError(Exception):
    """Base of every error a store raises. Backends never leak their SDK's exceptions."""

    #: True when this answer came to a retry of the request (by the SDK): an earlier try
    #: may have taken effect, so a 404 or a 412 may be the request's own doing.
    retried: bool = False


class NotFound(StoreError):
    """The key does not exist (or an ``if_match`` write targeted a missing key)."""


class PreconditionFailed(StoreError):
    """A conditional write or delete lost: the object exists (``if_none_match``) or its
    ETag is not the expected one (``if_match``). Also raised for a concurrent conflicting
    conditional request (S3's 409 ConditionalRequestConflict): for the caller both mean
    "somebody else changed it; re-read before deciding"."""


class StoreUnavailable(StoreError):
    """The store could not be reached or kept failing after the backend's own retries
    (throttling, 5xx, connection errors; the local store's full device or quota). The
    outcome of a write that raised this is unknown: it may or may not have taken effect."""


class StoreRefused(StoreError):
    """The store refuses this process every request, whatever its key: its credentials
    were rejected (expired, revoked), its bucket does not exist. Nothing was done."""


def of_its_own(exc: StoreError) -> bool:
    """Is ``exc`` the store's answer about the key it was asked of (denied for that object,
    archived, ...), not the store failing (:class:`StoreUnavailable`) or refusing every
    request (:class:`StoreRefused`)?"""
    return not isinstance(exc, StoreUnavailable | StoreRefused)


class InvalidKey(StoreError, ValueError):
    """The key is not acceptable (empty, absolute, ``..``/``.`` segments, NUL, …)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object without reading its body."""

    key: str
    etag: str
    size: int
    #: Seconds since the epoch, by the *store's* clock (S3: Last-Modified, 1 s resolution).
    last_modified: float


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, keys in ascending UTF-8 byte order."""

    items: list[ObjectInfo]
    #: True when more keys follow the last item of this page.
    truncated: bool
    #: What the store met in this page's range and could not list: the local store's
    #: unreadable files and directories, and its files whose names no key can hold (S3
    #: lists every key it has).
    left_out: tuple[LeftOut, ...] = ()
    #: Keys in this page's range not listed yet because another program may still be writing
    #: them, with the store time from which they will be (the local store's fresh files in
    #: wait/: a ``cp`` under way): a burst waits for them.
    settling: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class LeftOut:
    """Something a listing met and could not list: its key (below the store's root, as
    near as it can be shown: escaped where no key can hold it; a folder's ends in "/"),
    and why."""

    key: str
    why: str

    def __str__(self) -> str:
        return f"{self.key}: {self.why}"


_BAD_SEGMENTS = {"", ".", ".."}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKey`.

    Accepted: any non-empty ``/``-separated path of non-empty segments other than ``.`` and
    ``..``, without control characters and without a leading ``/`` or backslash. Spaces,
    unicode, ``%`` and deep nesting are fine.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid key {key!r}: must be a non-empty string")
    if _CONTROL.search(key):
        raise InvalidKey(f"invalid key {key!r}: control characters (NUL, newline, …) not allowed")
    if key.startswith("/") or "\\" in key:
        raise InvalidKey(f"invalid key {key!r}: must be relative and use '/' separators")
    if any(seg in _BAD_SEGMENTS for seg in key.split("/")):
        raise InvalidKey(f"invalid key {key!r}: empty, '.' or '..' path segments not allowed")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"invalid key {key!r}: not valid unicode (lone surrogate)") from None
    if size > 1024:
        raise InvalidKey(f"invalid key {key[:40]!r}…: longer than 1024 bytes")
    if "\ufffe" in key or "\uffff" in key:
        raise InvalidKey(f"invalid key {key!r}: U+FFFE/U+FFFF cannot be carried by S3's XML")
    return key


@runtime_checkable
class Store(Protocol):
    """A flat namespace of objects addressed by relative keys (see :func:`validate_key`)."""

    #: Human-readable location, e.g. ``s3://bucket/prefix`` or ``file:///srv/q``.
    url: str
    @property
    def capabilities(self) -> Capabilities:
        """The guarantees this store gives (docs/PROTOCOL.md §1); ``None``: not probed."""
        ...

    @property
    def max_key_bytes(self) -> int:
        """The longest key (UTF-8 bytes) this store accepts below its root."""
        ...

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        """Read a whole (small) object. Raises :class:`NotFound`."""
        ...

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """Open an object for streaming reads; the caller closes the stream.
        Raises :class:`NotFound`."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Metadata of one object. Raises :class:`NotFound`."""
        ...

    def put(
        self,
        key: str,
        body: Body,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        guard: Guard | None = None,
    ) -> ObjectInfo:
        """Write an object, optionally conditionally (at most one condition).
        Returns the new object's info (its ``last_modified`` by the store's clock)."""
        ...

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        """Copy ``src`` → ``dst``, server-side where the store can.
        ``if_source_match`` makes the copy fail with :class:`PreconditionFailed` when the
        *source* changed (servers may ignore this: a consistency check, never a lock).
        ``if_none_match`` makes it fail with :class:`PreconditionFailed` when ``dst`` exists;
        this one is always honoured (by a read and a conditional put where the server
        ignores it). The returned ``size`` is -1 when the backend cannot tell without
        another request (S3). Raises :class:`NotFound` when ``src`` is missing."""
        ...

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        """Delete an object. Unconditional deletes of a missing key succeed silently;
        a conditional delete of a missing key raises :class:`NotFound`."""
        ...

    def delete_batch(self, items: Sequence[tuple[str, str]], *,
                     guard: Guard | None = None) -> list[StoreError | None]:
        """``delete(key, if_match=etag)`` of each ``(key, etag)`` (distinct keys): in one
        request where the store can (S3's DeleteObjects with each object's ETag, where
        :attr:`capabilities` says the store honours them), else one by one. Returns, per
        item, None (deleted) or the error its own delete would have raised. Raises when the
        request as a whole failed: then any of them may have been deleted. ``guard`` is
        checked before each request sent, as :meth:`delete`'s is; what it raises
        propagates. With a guard, a key the store gave no final answer for (S3: one
        answered InternalError or SlowDown inside the request's answer) is answered
        :class:`StoreUnavailable`, not sent again: the guard may be one key's only."""
        ...

    def list_page(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> Page:
        """One page of keys starting with ``prefix``, strictly after ``start_after``."""
        ...

    def now(self) -> float:
        """The store's current time (seconds since the epoch), as best known: for S3 the
        ``Date`` header of the latest response advanced by local monotonic time. Lease expiry
        compares this with ``ObjectInfo.last_modified``, so workers' clocks need not agree."""
        ...

    def close(self) -> None:
        """Release connections/resources."""
        ...


def delete_each(store: Store, items: Sequence[tuple[str, str]], *,
                guard: Guard | None = None) -> list[StoreError | None]:
    """:meth:`Store.delete_batch` one request per item (every store can)."""
    results: list[StoreError | None] = []
    for key, etag in items:
        try:
            store.delete(key, if_match=etag, guard=guard)
            results.append(None)
        except StoreError as exc:
            results.append(exc)
    return results


def list_all(store: Store, prefix: str, *, page_size: int = 1000,
             left_out: list[LeftOut] | None = None,
             settling: list[tuple[str, float]] | None = None) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, page by page (never holds more than one page); what
    the store could not list (:attr:`Page.left_out`) is added to ``left_out``, and what it
    will list once written (:attr:`Page.settling`) to ``settling``, when given."""
    start: str | None = None
    while True:
        page = store.list_page(prefix, start_after=start, limit=page_size)
        if left_out is not None:
            left_out.extend(e for e in page.left_out if e not in left_out)
        if settling is not None:
            settling.extend(page.settling)
        yield from page.items
        if not page.truncated or not page.items:
            return
        start = resume_after(page.items[-1].key)


#: What no store accepts in a list prefix or start_after (backends/_common.check_prefix).
_UNLISTABLE = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")
#: The next character after each of them at which a start_after is acceptable again.
_PAST = {"\\": "]", "\x7f": "\x80"}


def resume_after(key: str) -> str:
    """The ``start_after`` that resumes a listing right after ``key`` (the last key of a
    page): ``key`` itself, unless no store accepts it as a position (S3 lists keys no s3q
    name may be: a backslash from a Windows tool, a ``..`` segment, a control character),
    which would stop every later page there. Then the smallest acceptable position past
    every key that shares the faulty beginning of ``key``: those are no names either, so
    nothing that could be a request is passed over."""
    for _ in range(len(key) + 1):
        fault = _UNLISTABLE.search(key)
        i = fault.start() if fault else len(key)
        parent = 0
        for segment in key[:i].split("/"):  # a '..' segment (or a leading '/') first?
            end = parent + len(segment)
            if segment == ".." and ((end < len(key) and key[end] == "/") or end == len(key)):
                key = key[:end] + ("0" if end < len(key) else " ")
                break
            if segment == "" and parent == 0 and key.startswith("/"):
                key = "0"
                break
            parent = end + 1
        else:
            if fault is None:
                return key
            c = fault.group()
            key = key[:i] + _PAST.get(c, " " if ord(c) < 0x20 else "\ue000")
    return key
