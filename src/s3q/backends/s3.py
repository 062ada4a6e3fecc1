"""The S3 backend: :class:`S3Store`, the :class:`~s3q.store.Store` seam on boto3.

S3 guarantees relied upon (all documented for AWS S3 since Nov 2024, and checked for the
server under test by ``tests/contract/test_s3_canary.py``):

* strong read-after-write consistency for GET, HEAD and LIST (AWS, since Dec 2020);
* ``PutObject`` with ``If-None-Match: *`` / ``If-Match: <etag>`` is atomic: exactly one of
  several racing conditional writers wins, the others get 412 PreconditionFailed (or 409
  ConditionalRequestConflict when they overlap: not applied, so sent again, up to
  :data:`CONFLICT_TRIES` tries, then :class:`PreconditionFailed` like a 412);
* ``DeleteObject`` with ``If-Match: <etag>`` likewise (412 on a stale ETag, 404 when the key
  is missing);
* ``CopyObject`` with ``x-amz-copy-source-if-match`` checks the *source* atomically;
* above 5 GiB (S3's limit on one PutObject body or CopyObject source), a
  ``CompleteMultipartUpload`` with ``If-None-Match: *`` is create-if-absent as PutObject's
  is (AWS since Nov 2024; :mod:`s3q.backends.s3multipart`; probed by ``s3q doctor`` with a
  copy in one part, not required);
* every response carries a ``Date`` header from the server's clock, and ``Last-Modified`` is
  stamped by the same clock (1 s resolution): :meth:`S3Store.now` is built on that.

Every botocore exception is translated at this edge (here and in :mod:`s3q.backends.s3wire`,
chained with ``from``; the multipart transfers of :mod:`s3q.backends.s3multipart` use this
one's); none leaves the backend.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from s3q.backends import S3Options, s3multipart
from s3q.backends.s3bodies import buffered, rewindable
from s3q.backends.s3wire import (
    Meter,
    core_error,
    make_client,
    quoted,
    resend_conflicts,
    translate,
)
from s3q.capabilities import Capabilities
from s3q.store import (
    S3_MAX_KEY_BYTES,
    Body,
    Guard,
    InvalidKey,
    ObjectInfo,
    Page,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    delete_each,
    validate_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import (
        CopySourceTypeDef,
        DeleteObjectRequestTypeDef,
        DeleteObjectsRequestTypeDef,
        ListObjectsV2RequestTypeDef,
        PutObjectRequestTypeDef,
    )

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

#: Keys in one DeleteObjects request (S3's limit).
MAX_BATCH = 1000


class S3Store:
    """A :class:`~s3q.store.Store` on one S3 bucket, under ``prefix`` (may be empty).

    One boto3 client per store, shared by all threads (boto3 clients are thread-safe).
    ``request_counts`` counts HTTP requests sent, by S3 operation (retries included, so it
    is what S3 bills); ``error_counts`` counts error answers by S3 error code (``"404"``
    for a bodiless HEAD) and transport failures by exception name.
    """

    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        if not bucket:
            raise ValueError("S3 bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.max_key_bytes = S3_MAX_KEY_BYTES - len(self._root.encode())
        #: Unknown until probed (``s3q doctor``, or a worker's start-up check sets it).
        self.capabilities = Capabilities()
        self._pool_size = options.max_pool_connections
        self._client = make_client(options, self.url)
        self._meter = Meter(self._client)
        self.request_counts = self._meter.request_counts
        self.error_counts = self._meter.error_counts

    @property
    def endpoint(self) -> str:
        """The server this store talks to (the URL names only the bucket): a cached probe
        result is trusted only by a store at the endpoint that was probed."""
        return str(self._client.meta.endpoint_url)

    # -- Store protocol -----------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        with self._edge("GetObject", key):
            resp = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
            with resp["Body"] as body:
                data = body.read()
        return data, _info(key, resp["ETag"], resp["ContentLength"], resp["LastModified"])

    def open(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        with self._edge("GetObject", key):
            resp = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        stream = buffered(resp["Body"], self._where(key))
        return stream, _info(key, resp["ETag"], resp["ContentLength"], resp["LastModified"])

    def head(self, key: str) -> ObjectInfo:
        with self._edge("HeadObject", key):
            resp = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        return _info(key, resp["ETag"], resp["ContentLength"], resp["LastModified"])

    def put(
        self,
        key: str,
        body: Body,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        guard: Guard | None = None,
    ) -> ObjectInfo:
        """PutObject, with ``If-None-Match: *`` or ``If-Match``. Bodies are streamed; a
        non-seekable one is spooled first (botocore must be able to rewind for retries).
        A body over S3's limit on one PutObject (5 GiB) is uploaded in parts, the condition
        sent with CompleteMultipartUpload (:func:`s3multipart.put`)."""
        if if_none_match and if_match is not None:
            raise ValueError("put: use at most one of if_none_match and if_match")
        request: PutObjectRequestTypeDef = {"Bucket": self.bucket, "Key": self._full(key)}
        if if_none_match:
            request["IfNoneMatch"] = "*"
        elif if_match is not None:
            request["IfMatch"] = if_match
        with rewindable(body) as (payload, size):
            if size > s3multipart.SINGLE_MAX:
                return s3multipart.put(self, key, payload, size, if_none_match=if_none_match,
                                       if_match=if_match, guard=guard)

            def send() -> Any:
                if not isinstance(payload, bytes):
                    payload.seek(0)  # (a try after a 409 sends the body again)
                with self._meter.guarded(guard), self._edge("PutObject", key):
                    request["Body"] = payload
                    return self._client.put_object(**request)
            resp = resend_conflicts(send) if if_none_match or if_match else send()
        return ObjectInfo(key, quoted(resp["ETag"]), size,
                          self._response_time(resp["ResponseMetadata"]))

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        """One server-side CopyObject (``x-amz-copy-source-if-match`` when given): the common
        case costs one request. The returned size is -1: CopyObject does not report it.
        ``if_none_match`` is sent as CopyObject's ``If-None-Match: *`` only where the store
        is known to honour it (:attr:`capabilities`); elsewhere (moto and radosgw ignore it)
        the source is streamed through this process into a ``PutObject If-None-Match: *``.
        Sources over S3's limit on one request (5 GiB: CopyObject refuses them, and a
        PutObject could not take them) are copied server-side in parts
        (:func:`s3multipart.copy`: UploadPartCopy, each part conditional on the source's
        ETag; ``if_none_match`` sent with CompleteMultipartUpload). Note: moto 5.2 ignores
        the source condition; the protocol never depends on it (the lease is the lock)."""
        validate_key(dst)
        if if_none_match and not self.capabilities.copy_if_none_match:
            return self._copy_through(src, dst, if_source_match, guard)
        copy_source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": self._full(src)}
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(dst),
                                   "CopySource": copy_source}
        if if_source_match is not None:
            request["CopySourceIfMatch"] = if_source_match
        if if_none_match:
            request["IfNoneMatch"] = "*"
        def send() -> Any:
            with self._meter.guarded(guard), self._edge("CopyObject", src):
                return self._client.copy_object(**request)
        try:
            resp = resend_conflicts(send)
        except StoreError as e:
            if "copy source is larger than the maximum" not in str(e.__cause__):
                raise
            return self._copy_multipart(src, dst, if_source_match, if_none_match, guard)
        result = resp["CopyObjectResult"]
        return _info(dst, result["ETag"], -1, result["LastModified"])

    def _copy_through(self, src: str, dst: str, if_source_match: str | None,
                      guard: Guard | None) -> ObjectInfo:
        """A create-if-absent copy on a store that ignores CopyObject's destination
        condition: stream the source into ``PutObject If-None-Match: *``; or, over S3's
        limit on one PutObject, copy it in parts (the stream is closed unread)."""
        stream, info = self.open(src)
        with stream:
            if if_source_match is not None and info.etag != if_source_match:
                raise PreconditionFailed(f"S3 copy: {self._where(src)} has changed")
            if info.size <= s3multipart.SINGLE_MAX:
                return self.put(dst, stream, if_none_match=True, guard=guard)
        return s3multipart.copy(self, src, dst, info, if_none_match=True, guard=guard)

    def _copy_multipart(self, src: str, dst: str, if_source_match: str | None,
                        if_none_match: bool, guard: Guard | None) -> ObjectInfo:
        """A copy of a source CopyObject refused as too large: in parts."""
        source = self.head(src)
        if if_source_match is not None and source.etag != if_source_match:
            raise PreconditionFailed(f"S3 CopyObject: {self._where(src)} has changed")
        return s3multipart.copy(self, src, dst, source, if_none_match=if_none_match,
                                guard=guard)

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        """DeleteObject, with ``If-Match`` when given (S3 answers 404 for a conditional delete
        of a missing key, 204 for an unconditional one)."""
        request: DeleteObjectRequestTypeDef = {"Bucket": self.bucket, "Key": self._full(key)}
        if if_match is not None:
            request["IfMatch"] = if_match

        def send() -> None:
            with self._meter.guarded(guard), self._edge("DeleteObject", key):
                self._client.delete_object(**request)
        resend_conflicts(send)

    def delete_batch(self, items: Sequence[tuple[str, str]], *,
                     guard: Guard | None = None) -> list[StoreError | None]:
        """DeleteObjects with each object's ETag, where the store was found to honour them
        (:attr:`capabilities`; else one DeleteObject If-Match each). Each key's answer is
        translated as its own DeleteObject's would be (an ``<Error>`` NoSuchKey is
        :class:`NotFound`, PreconditionFailed :class:`PreconditionFailed`), with
        ``retried`` set when botocore sent the request more than once. A key answered
        InternalError or SlowDown (or not at all) is sent again alone, as botocore would
        have retried it, and so is one answered ConditionalRequestConflict (409: not
        applied, its condition unchecked; never a 412); but with a ``guard`` (checked
        before each HTTP request, retries too), which may be one key's only, it is
        answered StoreUnavailable and left to the caller."""
        if len(items) < 2 or not self.capabilities.batch_conditional_delete:
            return delete_each(self, items, guard=guard)
        if len(items) > MAX_BATCH:
            raise ValueError(f"delete_batch: at most {MAX_BATCH} keys, not {len(items)}")
        request: DeleteObjectsRequestTypeDef = {"Bucket": self.bucket, "Delete": {
            "Objects": [{"Key": self._full(k), "ETag": etag} for k, etag in items],
            "Quiet": False}}
        with self._meter.guarded(guard), self._edge("DeleteObjects", items[0][0]):
            resp = self._client.delete_objects(**request)
        meta = resp.get("ResponseMetadata", {})
        cut = len(self._root)
        done = {d["Key"][cut:] for d in resp.get("Deleted", []) if "Key" in d}
        failed = {e["Key"][cut:]: e for e in resp.get("Errors", []) if "Key" in e}
        results: list[StoreError | None] = []
        for key, _ in items:
            error: StoreError
            if key in failed and failed[key].get("Code") == "ConditionalRequestConflict":
                error = StoreUnavailable(f"S3 DeleteObjects {self._where(key)}: "
                                         "ConditionalRequestConflict (not applied)")
            elif key in failed:
                answer = ClientError(cast(Any, {"Error": failed[key], "ResponseMetadata": meta}),
                                     "DeleteObjects")
                error = translate(answer, "DeleteObjects", self._where(key),
                                  bucket=self.bucket, endpoint=self.endpoint)
            elif key in done:
                results.append(None)
                continue
            else:
                error = StoreUnavailable(f"S3 DeleteObjects {self._where(key)}: no answer "
                                         "for it")
            error.retried = meta.get("RetryAttempts", 0) > 0
            results.append(error)
        if guard is not None:
            return results
        return [self._again(key, etag) if isinstance(r, StoreUnavailable) else r
                for (key, etag), r in zip(items, results, strict=True)]

    def _again(self, key: str, etag: str) -> StoreError | None:
        """A key answered InternalError, SlowDown or 409 (or not at all) inside a
        DeleteObjects that succeeded (botocore retries only whole requests): its own
        DeleteObject, whose 404 or 412 may be the first try's doing (``retried``)."""
        try:
            self.delete(key, if_match=etag)
        except StoreError as exc:
            exc.retried = True
            return exc
        return None

    def list_page(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> Page:
        """ListObjectsV2: S3 lists keys in ascending UTF-8 binary order."""
        if not 1 <= limit <= 1000:
            raise ValueError(f"list_page: limit must be in 1..1000, not {limit}")
        request: ListObjectsV2RequestTypeDef = {
            "Bucket": self.bucket,
            "Prefix": self._root + _loose(prefix),
            "MaxKeys": limit,
        }
        if start_after is not None:
            request["StartAfter"] = self._root + _loose(start_after)
        with self._edge("ListObjectsV2", prefix):
            resp = self._client.list_objects_v2(**request)
        cut = len(self._root)
        items = [
            _info(obj["Key"][cut:], obj["ETag"], obj["Size"], obj["LastModified"])
            for obj in resp.get("Contents", [])
        ]
        return Page(items, resp.get("IsTruncated", False))

    def now(self) -> float:
        """The latest ``Date`` seen, advanced by local monotonic time (see
        :class:`_StoreClock`). Makes a HeadBucket request if no response was seen yet."""
        estimate = self._meter.clock.read()
        if estimate is None:
            # any answer, even 403 or 404, carries the Date we want
            with self._edge("HeadBucket", ""), suppress(ClientError):
                self._client.head_bucket(Bucket=self.bucket)
            estimate = self._meter.clock.read()
        if estimate is None:
            log.warning("%s: the server sends no Date header; using the local clock", self.url)
            return time.time()
        return estimate

    def close(self) -> None:
        self._client.close()

    def bucket_versioning(self) -> str:
        """GetBucketVersioning's status: ``Enabled``, ``Suspended``, or ``""`` for a bucket
        that never had versioning (for ``s3q doctor``; the protocol never relies on it)."""
        with self._edge("GetBucketVersioning", ""):
            resp = self._client.get_bucket_versioning(Bucket=self.bucket)
        return str(resp.get("Status", ""))

    @property
    def connections(self) -> int:
        """The size of the HTTP connection pool: how many requests can be in flight at
        once without opening throwaway connections."""
        return self._pool_size

    def snapshot_counts(self) -> tuple[Counter[str], Counter[str]]:
        """Copies of ``(request_counts, error_counts)``, safe to take while other threads
        make requests (iterating the live counters then is not)."""
        return self._meter.snapshot()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- internals ----------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self._root + validate_key(key)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._root}{key}"

    def _response_time(self, metadata: Any) -> float:
        """The ``Date`` of one response (the store's clock when it answered)."""
        date = metadata.get("HTTPHeaders", {}).get("date")
        if date:
            try:
                return parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                pass
        return self.now()

    @contextmanager
    def _edge(self, operation: str, key: str) -> Iterator[None]:
        """Translate botocore's exceptions into s3q's."""
        try:
            yield
        except ClientError as e:
            error = translate(e, operation, self._where(key), bucket=self.bucket,
                              endpoint=self._client.meta.endpoint_url)
            error.retried = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            raise error from e
        except BotoCoreError as e:  # (a transport failure: StoreUnavailable)
            raise core_error(e, f"S3 {operation} {self._where(key)}") from e

def _info(key: str, etag: str, size: int, last_modified: datetime) -> ObjectInfo:
    return ObjectInfo(key, quoted(etag), size, last_modified.timestamp())


def _loose(prefix: str) -> str:
    """Validate a list prefix or start-after value: unlike keys they may be empty or end
    with ``/``; only control characters, ``..`` segments and absolute paths are refused."""
    if not isinstance(prefix, str) or any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
        raise InvalidKey(f"invalid prefix {prefix!r}: control characters not allowed")
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise InvalidKey(f"invalid prefix {prefix!r}: must be relative, without '..'")
    return prefix
