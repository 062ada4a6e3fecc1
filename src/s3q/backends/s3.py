"""The S3 backend: :class:`S3Store`, the :class:`~s3q.store.Store` seam on boto3.

S3 guarantees relied upon (all documented for AWS S3 since Nov 2024, and checked for the
server under test by ``tests/contract/test_s3_canary.py``):

* strong read-after-write consistency for GET, HEAD and LIST (AWS, since Dec 2020);
* ``PutObject`` with ``If-None-Match: *`` / ``If-Match: <etag>`` is atomic: exactly one of
  several racing conditional writers wins, the others get 412 PreconditionFailed (or 409
  ConditionalRequestConflict when they overlap; both become :class:`PreconditionFailed`);
* ``DeleteObject`` with ``If-Match: <etag>`` likewise (412 on a stale ETag, 404 when the key
  is missing);
* ``CopyObject`` with ``x-amz-copy-source-if-match`` checks the *source* atomically;
* every response carries a ``Date`` header from the server's clock, and ``Last-Modified`` is
  stamped by the same clock (1 s resolution): :meth:`S3Store.now` is built on that.

Every botocore exception is translated here (chained with ``from``); none leaves this module.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3q.backends import S3Options
from s3q.capabilities import Capabilities
from s3q.store import (
    S3_MAX_KEY_BYTES,
    Body,
    Guard,
    InvalidKey,
    NotFound,
    ObjectInfo,
    Page,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    validate_key,
)

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        CopySourceTypeDef,
        DeleteObjectRequestTypeDef,
        ListObjectsV2RequestTypeDef,
        PutObjectRequestTypeDef,
    )

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

#: Part size of the managed (multipart, still server-side) copy of large objects.
MULTIPART_COPY_CHUNK = 256 * 1024**2
#: Non-seekable bodies are spooled to a temporary file, in memory up to this size.
SPOOL_IN_MEMORY = 8 * 1024**2
#: Read size of the buffered stream :meth:`S3Store.open` returns.
READ_BUFFER = 1024**2
#: A ``Date`` this far below the current clock estimate means the server clock was stepped
#: back (NTP), not that the response was slow: the estimate follows it down.
CLOCK_STEP_BACK = 5.0

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_UNAVAILABLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "InternalError",
}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
#: botocore's transport failures: the request may or may not have reached S3.
_TRANSPORT = (HTTPClientError, BotoConnectionError, IncompleteReadError)


class _StoreClock:
    """The server's clock, estimated from ``Date`` headers and the local monotonic clock.

    Each response gives a lower bound of ``server_time - monotonic()`` (``Date`` is stamped
    before the response is received and truncated to the second); the estimate is the largest
    bound seen, so it never runs ahead of the server and never goes backwards, except to follow
    the server clock when it is stepped back by more than :data:`CLOCK_STEP_BACK`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset: float | None = None

    def observe(self, date_header: str, received_monotonic: float) -> None:
        try:
            server_time = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError):
            return
        sample = server_time - received_monotonic
        with self._lock:
            if (
                self._offset is None
                or sample > self._offset
                or sample < self._offset - CLOCK_STEP_BACK
            ):
                self._offset = sample

    def read(self) -> float | None:
        with self._lock:
            offset = self._offset
        return None if offset is None else offset + time.monotonic()


class _S3Stream(io.RawIOBase):
    """A GetObject body as a raw binary stream, translating read errors."""

    def __init__(self, body: StreamingBody, where: str) -> None:
        super().__init__()
        self._body = body
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except _TRANSPORT as e:
            raise StoreUnavailable(f"S3 read of {self._where} failed: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"S3 read of {self._where} failed: {e}") from e
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


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
        self._guards = threading.local()  # the current call's guard, for _on_send
        self.request_counts: Counter[str] = Counter()
        self.error_counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._clock = _StoreClock()
        self._pool_size = options.max_pool_connections
        self._client = self._make_client(options)
        self._client.meta.events.register("before-send.s3", self._on_send)
        self._client.meta.events.register("response-received.s3", self._on_response)

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
        raw = _S3Stream(resp["Body"], self._where(key))
        stream = cast(BinaryIO, io.BufferedReader(raw, buffer_size=READ_BUFFER))
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
        Single-part only, so at most 5 GiB."""
        if if_none_match and if_match is not None:
            raise ValueError("put: use at most one of if_none_match and if_match")
        request: PutObjectRequestTypeDef = {"Bucket": self.bucket, "Key": self._full(key)}
        if if_none_match:
            request["IfNoneMatch"] = "*"
        elif if_match is not None:
            request["IfMatch"] = if_match
        with (_rewindable(body) as (payload, size), self._guarded(guard),
              self._edge("PutObject", key)):
            request["Body"] = payload
            resp = self._client.put_object(**request)
        return ObjectInfo(key, _quoted(resp["ETag"]), size,
                          self._response_time(resp["ResponseMetadata"]))

    def copy(self, src: str, dst: str, *, if_source_match: str | None = None,
             if_none_match: bool = False, guard: Guard | None = None) -> ObjectInfo:
        """One server-side CopyObject (``x-amz-copy-source-if-match`` when given): the common
        case costs one request. The returned size is -1: CopyObject does not report it.
        ``if_none_match`` is sent as CopyObject's ``If-None-Match: *`` only where the store
        is known to honour it (:attr:`capabilities`); elsewhere (moto and radosgw ignore it)
        the source is streamed through this process into a ``PutObject If-None-Match: *``.
        Sources over 5 GiB (rejected by CopyObject) go through a managed multipart copy
        (UploadPartCopy, each part conditional on the source's ETag). Note: moto 5.2 ignores
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
        try:
            with self._guarded(guard), self._edge("CopyObject", src):
                resp = self._client.copy_object(**request)
        except StoreError as e:
            if "copy source is larger than the maximum" not in str(e.__cause__):
                raise
            if if_none_match:
                return self._copy_through(src, dst, if_source_match, guard)
            return self._copy_multipart(src, dst, if_source_match, guard)
        result = resp["CopyObjectResult"]
        return _info(dst, result["ETag"], -1, result["LastModified"])

    def _copy_through(self, src: str, dst: str, if_source_match: str | None,
                      guard: Guard | None) -> ObjectInfo:
        """A create-if-absent copy on a store that ignores CopyObject's destination
        condition: stream the source into ``PutObject If-None-Match: *``."""
        stream, info = self.open(src)
        with stream:
            if if_source_match is not None and info.etag != if_source_match:
                raise PreconditionFailed(f"S3 copy: {self._where(src)} has changed")
            return self.put(dst, stream, if_none_match=True, guard=guard)

    def _copy_multipart(self, src: str, dst: str, if_source_match: str | None,
                        guard: Guard | None) -> ObjectInfo:
        if guard is not None:
            guard()  # the transfer's own threads send the parts: checked once, before
        source = self.head(src)
        if if_source_match is not None and source.etag != if_source_match:
            raise PreconditionFailed(f"S3 CopyObject: {self._where(src)} has changed")
        config = TransferConfig(
            multipart_threshold=MULTIPART_COPY_CHUNK,
            multipart_chunksize=MULTIPART_COPY_CHUNK,
            max_concurrency=self._pool_size,
        )
        copy_source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": self._full(src)}
        with self._edge("CopyObject(multipart)", src):
            self._client.copy(copy_source, self.bucket, self._full(dst),
                              ExtraArgs={"CopySourceIfMatch": source.etag}, Config=config)
        return self.head(dst)

    def delete(self, key: str, *, if_match: str | None = None,
               guard: Guard | None = None) -> None:
        """DeleteObject, with ``If-Match`` when given (S3 answers 404 for a conditional delete
        of a missing key, 204 for an unconditional one)."""
        request: DeleteObjectRequestTypeDef = {"Bucket": self.bucket, "Key": self._full(key)}
        if if_match is not None:
            request["IfMatch"] = if_match
        with self._guarded(guard), self._edge("DeleteObject", key):
            self._client.delete_object(**request)

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
        estimate = self._clock.read()
        if estimate is None:
            # any answer, even 403 or 404, carries the Date we want
            with self._edge("HeadBucket", ""), suppress(ClientError):
                self._client.head_bucket(Bucket=self.bucket)
            estimate = self._clock.read()
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
        with self._counts_lock:
            return Counter(self.request_counts), Counter(self.error_counts)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- internals ----------------------------------------------------------------------

    def _make_client(self, options: S3Options) -> S3Client:
        """One client per store. ``endpoint_url=None`` lets botocore apply
        ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; custom endpoints get path-style
        addressing (``bucket.localhost`` rarely resolves)."""
        custom_endpoint = options.endpoint_url or os.environ.get(
            "AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL")
        )
        retries = {"mode": options.retry_mode, "total_max_attempts": options.max_attempts}
        # botocore reads AWS_DEFAULT_REGION and the profile's region itself, not AWS_REGION
        region = options.region or os.environ.get("AWS_REGION")
        try:
            config = Config(
                retries=cast(Any, retries),  # the mode is checked by botocore
                max_pool_connections=options.max_pool_connections,
                connect_timeout=options.connect_timeout,
                read_timeout=options.read_timeout,
                signature_version="s3v4",
                s3={"addressing_style": "path" if custom_endpoint else "auto"},
            )
            session = boto3.session.Session(
                aws_access_key_id=options.access_key_id,
                aws_secret_access_key=options.secret_access_key,
                aws_session_token=options.session_token,
                region_name=region,
            )
            return session.client(
                "s3",
                region_name=region or session.region_name or "us-east-1",
                endpoint_url=options.endpoint_url,
                config=config,
            )
        except (BotoCoreError, ValueError) as e:
            raise StoreError(f"cannot set up the S3 client for {self.url}: {e}") from e

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
    def _guarded(self, guard: Guard | None) -> Iterator[None]:
        """Make ``guard`` the check :meth:`_on_send` runs before each HTTP request of the
        call in this thread (botocore sends from the calling thread; retries are re-checked)."""
        self._guards.current = guard
        try:
            yield
        finally:
            self._guards.current = None

    @contextmanager
    def _edge(self, operation: str, key: str) -> Iterator[None]:
        """Translate botocore's exceptions into s3q's."""
        try:
            yield
        except ClientError as e:
            error = self._translate(e, operation, key)
            error.retried = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            raise error from e
        except _TRANSPORT as e:
            raise StoreUnavailable(f"S3 {operation} {self._where(key)}: {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"S3 {operation} {self._where(key)}: {e}") from e

    def _translate(self, e: ClientError, operation: str, key: str) -> StoreError:
        code = _code(e)
        meta = e.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode", 0)
        where = self._where(key)
        message = e.response.get("Error", {}).get("Message", "")
        if code == "NoSuchBucket":
            endpoint = self._client.meta.endpoint_url
            return StoreError(f"S3 bucket {self.bucket!r} does not exist (at {endpoint})")
        if code in _NOT_FOUND:
            return NotFound(f"{where} not found")
        if code in _CONFLICT or status == 412:
            return PreconditionFailed(f"S3 {operation} {where}: {code} (condition not met)")
        if status >= 500 or code in _UNAVAILABLE:
            attempts = meta.get("RetryAttempts", 0) + 1
            return StoreUnavailable(
                f"S3 {operation} {where}: {code} (HTTP {status}) after {attempts} attempt(s)"
            )
        if code in _DENIED:
            return StoreError(
                f"S3 access denied: {operation} {where} (check the credentials and the bucket"
                " and IAM policies; S3 answers 403 instead of 404 for a missing key when"
                " s3:ListBucket is not granted)"
            )
        if code in _BAD_CREDENTIALS:
            return StoreError(f"S3 rejected the credentials ({code}) for {operation} {where}")
        return StoreError(f"S3 {operation} {where} failed: {code} (HTTP {status}): {message}")

    def _on_send(self, event_name: str, **_: Any) -> None:
        """botocore's ``before-send``: after signing, right before the bytes leave. A guard
        that raises here stops the request (botocore re-raises it from the call)."""
        guard: Guard | None = getattr(self._guards, "current", None)
        if guard is not None:
            guard()
        operation = event_name.rsplit(".", 1)[-1]
        with self._counts_lock:
            self.request_counts[operation] += 1

    def _on_response(
        self,
        response_dict: dict[str, Any] | None = None,
        parsed_response: dict[str, Any] | None = None,
        exception: Exception | None = None,
        **_: Any,
    ) -> None:
        received = time.monotonic()
        error: str | None = None
        if response_dict is not None:
            date = response_dict["headers"].get("Date")
            if date:
                self._clock.observe(date, received)
            status = response_dict["status_code"]
            if status >= 300:
                error = (parsed_response or {}).get("Error", {}).get("Code") or str(status)
        elif exception is not None:
            error = type(exception).__name__
        if error is not None:
            with self._counts_lock:
                self.error_counts[error] += 1


def _info(key: str, etag: str, size: int, last_modified: datetime) -> ObjectInfo:
    return ObjectInfo(key, _quoted(etag), size, last_modified.timestamp())


def _quoted(etag: str) -> str:
    """ETags as S3 sends them, in double quotes (radosgw 16 leaves them off in
    CopyObject's result, though its HEAD of the copy has them)."""
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _loose(prefix: str) -> str:
    """Validate a list prefix or start-after value: unlike keys they may be empty or end
    with ``/``; only control characters, ``..`` segments and absolute paths are refused."""
    if not isinstance(prefix, str) or any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
        raise InvalidKey(f"invalid prefix {prefix!r}: control characters not allowed")
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise InvalidKey(f"invalid prefix {prefix!r}: must be relative, without '..'")
    return prefix


@contextmanager
def _rewindable(body: Body) -> Iterator[tuple[bytes | BinaryIO, int]]:
    """``body`` as something botocore can send, rewind for a retry and measure: bytes, a
    seekable file at position 0, or else a spooled copy of the rest of the stream."""
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        yield data, len(data)
        return
    if body.seekable() and body.tell() == 0:
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        yield body, size
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        shutil.copyfileobj(body, spool, READ_BUFFER)
        size = spool.tell()
        spool.seek(0)
        yield cast(BinaryIO, spool), size
