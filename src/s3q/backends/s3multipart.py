"""The S3 backend's multipart transfers: objects over S3's limit on one request (5 GiB, for
a PutObject's body and for a CopyObject's source), which S3 refuses (EntityTooLarge,
InvalidRequest "The specified copy source is larger than the maximum allowable size").

:func:`copy` copies server-side, in parts (UploadPartCopy, each conditional on the source's
ETag); :func:`put` uploads a body in parts (UploadPart). Either completes with
``If-None-Match: *`` for a create-if-absent write (S3 honours it on
CompleteMultipartUpload: 412 when the key exists, as PutObject and CopyObject answer;
a 409 ConditionalRequestConflict there is sent again, as every conditional request is).
Every request is sent under the caller's guard, checked before it leaves, parts too; an
upload that fails in any way (a 412 at its completion, a guard that refused) is aborted,
past the guard (an abort only undoes); not one whose completion was answered NoSuchUpload
or 200, which ended it, when its read-back fails it.

A completion may take effect and be answered as failed (a 500, a dropped connection);
botocore sends it again, and some stores (MinIO) answer that NoSuchUpload where AWS answers
as the first time. So every upload carries a token of its own (``x-amz-meta-s3q-upload``),
and a completion answered NoSuchUpload reads the key back (:func:`_reconcile`): the object
that carries the token is this upload's. So does one answered without an ETag (radosgw 16
answers ``<ETag></ETag>``): the ETag is what later conditions name (a view's delete).
Only :mod:`s3q.backends.s3` uses this module.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from botocore.exceptions import ClientError

from s3q.backends.s3wire import error_code, quoted, resend_conflicts
from s3q.store import Guard, ObjectInfo, PreconditionFailed, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef

    from s3q.backends.s3 import S3Store

__all__ = ["MAX_PARTS", "PART_SIZE", "SINGLE_MAX", "copy", "put"]

log = logging.getLogger(__name__)

#: S3's limit on one PutObject's body and on one CopyObject's source.
SINGLE_MAX = 5 * 1024**3
#: Part size of multipart transfers (raised for objects that would need more than
#: :data:`MAX_PARTS`; S3's least is 5 MiB). A put holds one part in memory at a time.
PART_SIZE = 256 * 1024**2
#: S3's limit on the parts of one upload.
MAX_PARTS = 10_000
#: The checksum of uploaded parts (boto3's managed upload's default).
CHECKSUM: Literal["CRC32"] = "CRC32"
#: The user metadata that names an upload (``x-amz-meta-s3q-upload``), on what it writes.
TOKEN = "s3q-upload"


def copy(store: S3Store, src: str, dst: str, source: ObjectInfo, *, if_none_match: bool,
         guard: Guard | None) -> ObjectInfo:
    """Copy ``src`` (whose HEAD or GET was ``source``) to ``dst`` in parts, several at once,
    each ``x-amz-copy-source-if-match`` the source's ETag (a source changed meanwhile:
    412, PreconditionFailed)."""
    step = part_size(source.size)
    copy_source: CopySourceTypeDef = {"Bucket": store.bucket, "Key": store._full(src)}
    with _upload(store, dst, guard, checksum=None) as (upload_id, complete):
        def send(number: int) -> CompletedPartTypeDef:
            first = (number - 1) * step
            last = min(first + step, source.size) - 1
            with store._meter.guarded(guard), store._edge("UploadPartCopy", src):
                resp = store._client.upload_part_copy(
                    Bucket=store.bucket, Key=store._full(dst), UploadId=upload_id,
                    PartNumber=number, CopySource=copy_source,
                    CopySourceIfMatch=source.etag, CopySourceRange=f"bytes={first}-{last}")
            return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}

        count = max(1, -(-source.size // step))
        workers = max(1, min(store.connections, count))
        with ThreadPoolExecutor(workers, thread_name_prefix="s3q-part-copy") as pool:
            futures = [pool.submit(send, number) for number in range(1, count + 1)]
            try:
                parts = [future.result() for future in futures]
            finally:  # the first failure: no more parts (the pool waits for those under way)
                for future in futures:
                    future.cancel()
        return complete(parts, source.size, if_none_match=if_none_match)


def put(store: S3Store, key: str, payload: bytes | BinaryIO, size: int, *,
        if_none_match: bool, if_match: str | None, guard: Guard | None) -> ObjectInfo:
    """Upload ``payload`` (bytes, or a seekable file at its start: what
    :func:`s3q.backends.s3bodies.rewindable` gives) in parts, one at a time. Each part
    carries a CRC32 checksum, declared when the upload is created and listed at its
    completion, as boto3's managed upload does (S3 refuses a part with a checksum of an
    upload created without one: "Checksum Type mismatch")."""
    step = part_size(size)
    with _upload(store, key, guard, checksum=CHECKSUM) as (upload_id, complete):
        parts: list[CompletedPartTypeDef] = []
        for number in range(1, max(1, -(-size // step)) + 1):
            first = (number - 1) * step
            if isinstance(payload, bytes):
                chunk = payload[first:first + step]
            else:
                payload.seek(first)
                chunk = payload.read(step)
            with store._meter.guarded(guard), store._edge("UploadPart", key):
                resp = store._client.upload_part(
                    Bucket=store.bucket, Key=store._full(key), UploadId=upload_id,
                    PartNumber=number, Body=chunk, ChecksumAlgorithm=CHECKSUM)
            part: CompletedPartTypeDef = {"PartNumber": number, "ETag": resp["ETag"]}
            if "ChecksumCRC32" in resp:
                part["ChecksumCRC32"] = resp["ChecksumCRC32"]
            parts.append(part)
        return complete(parts, size, if_none_match=if_none_match, if_match=if_match)


def part_size(size: int) -> int:
    """The part size for an object of ``size`` bytes: :data:`PART_SIZE`, or more when
    that would take more than :data:`MAX_PARTS` parts."""
    return max(PART_SIZE, -(-size // MAX_PARTS))


Complete = Callable[..., ObjectInfo]


@contextmanager
def _upload(store: S3Store, key: str, guard: Guard | None, *,
            checksum: Literal["CRC32"] | None) -> Iterator[tuple[str, Complete]]:
    """A multipart upload to ``key`` (its parts with a ``checksum``): its id, and the
    function that completes it (``complete(parts, size, if_none_match=..., if_match=...)``).
    Aborted on any failure but NoSuchUpload (nothing left to abort), and but one after its
    completion was answered NoSuchUpload or 200 (ended: the read-back failed it)."""
    token = uuid.uuid4().hex
    ended = False
    with store._meter.guarded(guard), store._edge("CreateMultipartUpload", key):
        if checksum is None:
            created = store._client.create_multipart_upload(
                Bucket=store.bucket, Key=store._full(key), Metadata={TOKEN: token})
        else:
            created = store._client.create_multipart_upload(
                Bucket=store.bucket, Key=store._full(key), Metadata={TOKEN: token},
                ChecksumAlgorithm=checksum)
        upload_id = created["UploadId"]

    def complete(parts: list[CompletedPartTypeDef], size: int, *, if_none_match: bool,
                 if_match: str | None = None) -> ObjectInfo:
        request: dict[str, Any] = {"Bucket": store.bucket, "Key": store._full(key),
                                   "UploadId": upload_id,
                                   "MultipartUpload": {"Parts": parts}}
        if if_none_match:
            request["IfNoneMatch"] = "*"
        elif if_match is not None:
            request["IfMatch"] = if_match

        def send() -> Any:
            with store._meter.guarded(guard), store._edge("CompleteMultipartUpload", key):
                return store._client.complete_multipart_upload(**request)
        nonlocal ended
        try:
            resp = resend_conflicts(send) if if_none_match or if_match else send()
        except StoreError as exc:
            if not _no_such_upload(exc):
                raise
            ended = True
            return _reconcile(store, key, token, size, exc, if_none_match=if_none_match)
        ended = True
        if not resp.get("ETag"):
            return _reconcile(store, key, token, size, None, if_none_match=if_none_match)
        return ObjectInfo(key, quoted(resp["ETag"]), size,
                          store._response_time(resp["ResponseMetadata"]))

    try:
        yield upload_id, complete
    except BaseException as exc:
        if not ended and not (isinstance(exc, StoreError) and _no_such_upload(exc)):
            _abort(store, key, upload_id)
        raise


def _reconcile(store: S3Store, key: str, token: str, size: int, answer: StoreError | None,
               *, if_none_match: bool) -> ObjectInfo:
    """A completion ``answer``-ed NoSuchUpload (the upload was completed by an earlier try
    of this request, whose answer was lost, or aborted), or (None) answered 200 without an
    ETag. The object at ``key`` that carries this upload's ``token`` is its write. Any other
    (a create-if-absent write's condition then failed, as a 412 to a retried write says:
    the caller compares what is there) or none (replaced or deleted since, or never
    written) is a store error: never success, and never NotFound, which a copy's caller
    reads as "the source is gone"."""
    what = "NoSuchUpload" if answer is not None else "no ETag in its answer"
    with store._edge("HeadObject", key):
        try:
            head = store._client.head_object(Bucket=store.bucket, Key=store._full(key))
        except ClientError as e:
            if error_code(e) not in ("404", "NoSuchKey", "NotFound"):
                raise
            head = None
    if head is not None and _token(head) == token and head["ContentLength"] == size:
        if answer is not None:
            log.info("%s: the multipart upload was completed by an earlier try (its answer "
                     "was lost)", store._where(key))
        return ObjectInfo(key, quoted(head["ETag"]), size, head["LastModified"].timestamp())
    if head is not None and if_none_match:
        failed = PreconditionFailed(f"S3 CompleteMultipartUpload {store._where(key)}: "
                                    f"{what}, and the key holds another object")
        failed.retried = True
        raise failed from answer
    raise StoreError(f"S3 CompleteMultipartUpload {store._where(key)}: {what}, and the key "
                     "holds no object of this upload: the write may have taken effect and "
                     "been replaced or deleted since, or the upload was aborted") from answer


def _token(head: Any) -> str | None:
    """The upload token an object carries. Looked up in any case: MinIO answers user
    metadata in Go's canonical case (``X-Amz-Meta-S3q-Upload``), where AWS answers it in
    lower case, and botocore keeps the case it was answered in (``S3q-Upload``)."""
    metadata: dict[str, str] = head.get("Metadata", {})
    return next((v for k, v in metadata.items() if k.lower() == TOKEN), None)


def _no_such_upload(exc: StoreError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ClientError) and error_code(cause) == "NoSuchUpload"


def _abort(store: S3Store, key: str, upload_id: str) -> None:
    """AbortMultipartUpload, not guarded: it only frees the parts of an upload that will
    never complete. One that fails is logged (a bucket lifecycle rule
    ``AbortIncompleteMultipartUpload`` removes what is left: docs/OPERATIONS.md)."""
    try:
        with store._edge("AbortMultipartUpload", key):
            store._client.abort_multipart_upload(Bucket=store.bucket, Key=store._full(key),
                                                 UploadId=upload_id)
    except StoreError as exc:
        log.warning("%s: the failed multipart upload %s was not aborted: %s",
                    store._where(key), upload_id, exc)
