"""The in-memory backend: :class:`MemoryStore`, for tests, demos and crash simulations.

It gives exactly the guarantees of S3 that the queue relies on (see :mod:`s3q.store`):
every operation is atomic under one lock, keys list in UTF-8 byte order. Time comes from an
injectable clock, so tests can move it by hand. It lives in one process only.

ETags model the two kinds real stores give (``etags``): ``"md5"``, the quoted MD5 of the body
as S3 gives single-part objects under SSE-S3 (a copy gets the MD5 of its bytes, so the copy
of a multipart object, :meth:`MemoryStore.put_multipart`, gets another ETag than its source);
or ``"opaque"``, a new random ETag for every write, copies included, as under SSE-KMS.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import BinaryIO, Literal, NamedTuple

from s3q.backends._common import (
    check_conditions,
    check_key,
    check_limit,
    check_prefix,
    etag_of,
)
from s3q.capabilities import NATIVE, Capabilities
from s3q.store import (
    S3_MAX_KEY_BYTES,
    Body,
    Guard,
    NotFound,
    ObjectInfo,
    Page,
    PreconditionFailed,
    Store,
    StoreError,
    delete_each,
)

__all__ = ["MemoryStore"]


class _Object(NamedTuple):
    body: bytes
    etag: str
    last_modified: float


class MemoryStore(Store):
    """A :class:`~s3q.store.Store` held in a dict, guarded by one lock.

    Keys are also kept in a sorted list. For valid keys (always encodable as UTF-8), Python's
    code-point order of ``str`` is the UTF-8 byte order S3 lists in, so ``bisect`` on plain
    strings gives the S3 order.
    """

    max_key_bytes = S3_MAX_KEY_BYTES
    capabilities: Capabilities = NATIVE

    def __init__(self, name: str = "", clock: Callable[[], float] = time.time,
                 etags: Literal["md5", "opaque"] = "md5") -> None:
        self.name = name
        self.url = f"memory://{name}"
        self.etags = etags
        self.capabilities: Capabilities = Capabilities(**{**NATIVE.to_dict(), "etags": etags})
        self._clock = clock
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}
        self._keys: list[str] = []  # sorted

    # -- reads --------------------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        check_key(key)
        with self._lock:
            obj = self._find(key)
        return obj.body, _info(key, obj)

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        body, info = self.get(key)
        return io.BytesIO(body), info

    def head(self, key: str) -> ObjectInfo:
        return self.get(key)[1]

    def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> Page:
        """Keys starting with ``prefix`` strictly after ``start_after``, at most ``limit``."""
        check_prefix(prefix)
        check_limit(limit)
        if start_after is not None:
            check_prefix(start_after)
        with self._lock:
            keys = self._keys
            lo = bisect.bisect_left(keys, prefix)
            if start_after is not None:
                lo = max(lo, bisect.bisect_right(keys, start_after))
            items: list[ObjectInfo] = []
            i = lo
            while i < len(keys) and len(items) < limit and keys[i].startswith(prefix):
                items.append(_info(keys[i], self._objects[keys[i]]))
                i += 1
            truncated = i < len(keys) and keys[i].startswith(prefix)
        return Page(items, truncated)

    def now(self) -> float:
        return self._clock()

    # -- writes -------------------------------------------------------------------------

    def put(
        self,
        key: str,
        body: Body,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        guard: Guard | None = None,
    ) -> ObjectInfo:
        check_key(key)
        check_conditions(if_none_match, if_match)
        data = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else body.read()
        return self._put(key, data, self._etag(data), if_none_match=if_none_match,
                         if_match=if_match, guard=guard)

    def put_multipart(self, key: str, body: bytes, parts: int = 2) -> ObjectInfo:
        """Write ``body`` as a multipart upload of ``parts`` parts would: its ETag is the
        MD5 of the parts' MD5s with a ``-N`` suffix (``md5`` mode), so a copy of it gets
        another ETag. For tests of what a producer's multipart upload does."""
        check_key(key)
        size = max(1, -(-len(body) // parts))
        digests = b"".join(hashlib.md5(body[i:i + size], usedforsecurity=False).digest()
                           for i in range(0, max(len(body), 1), size))
        etag = (f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{parts}"'
                if self.etags == "md5" else self._etag(body))
        return self._put(key, body, etag, if_none_match=False, if_match=None, guard=None)

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        check_key(src)
        check_key(dst)
        with self._lock:
            if guard is not None:
                guard()
            source = self._find(src)
            if if_source_match is not None and source.etag != if_source_match:
                raise PreconditionFailed(f"{self.url}/{src}: ETag is not {if_source_match}")
            if if_none_match and dst in self._objects:
                raise PreconditionFailed(f"{self.url}/{dst}: exists (if_none_match)")
            new = _Object(source.body, self._etag(source.body), self._clock())
            obj = self._store(dst, new, dst not in self._objects)
        return _info(dst, obj)

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        check_key(key)
        with self._lock:
            if guard is not None:
                guard()
            current = self._objects.get(key)
            if current is None:
                if if_match is not None:
                    raise NotFound(f"{self.url}/{key}: not found (if_match)")
                return
            if if_match is not None and current.etag != if_match:
                raise PreconditionFailed(f"{self.url}/{key}: ETag is not {if_match}")
            del self._objects[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def delete_batch(self, items: Sequence[tuple[str, str]], *,
                     guard: Guard | None = None) -> list[StoreError | None]:
        return delete_each(self, items, guard=guard)

    def close(self) -> None:
        """Nothing to release (the objects stay, so a store can be reopened in tests)."""

    # -- test helpers -------------------------------------------------------------------

    def snapshot(self) -> dict[str, bytes]:
        """A copy of every object's body, by key (keys in listing order)."""
        with self._lock:
            return {k: self._objects[k].body for k in self._keys}

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r}, {len(self._objects)} objects)"

    # -- internals ----------------------------------------------------------------------

    def _etag(self, data: bytes) -> str:
        return etag_of(data) if self.etags == "md5" else f'"{uuid.uuid4().hex}"'

    def _put(self, key: str, data: bytes, etag: str, *, if_none_match: bool,
             if_match: str | None, guard: Guard | None) -> ObjectInfo:
        with self._lock:
            if guard is not None:
                guard()
            current = self._objects.get(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{self.url}/{key}: exists (if_none_match)")
            if if_match is not None:
                if current is None:
                    raise NotFound(f"{self.url}/{key}: not found (if_match)")
                if current.etag != if_match:
                    raise PreconditionFailed(f"{self.url}/{key}: ETag is not {if_match}")
            obj = self._store(key, _Object(data, etag, self._clock()), current is None)
        return _info(key, obj)

    # (call with the lock held)

    def _find(self, key: str) -> _Object:
        obj = self._objects.get(key)
        if obj is None:
            raise NotFound(f"{self.url}/{key} not found")
        return obj

    def _store(self, key: str, obj: _Object, is_new: bool) -> _Object:
        self._objects[key] = obj
        if is_new:
            bisect.insort(self._keys, key)
        return obj


def _info(key: str, obj: _Object) -> ObjectInfo:
    return ObjectInfo(key, obj.etag, len(obj.body), obj.last_modified)
