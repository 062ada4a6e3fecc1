"""The S3 backend's edge to botocore: the client (:func:`make_client`, with its timestamp
parser, no wait for ``100 Continue`` before a small body, and botocore's model read once per
process), the translation of its errors into s3q's (:func:`translate`), and the
:class:`Meter` its event hooks feed (the requests sent and errors answered, the server's
clock, a guard checked before each send), and the resending of a conditional request
answered 409 (:func:`resend_conflicts`). Only :mod:`s3q.backends.s3`,
:mod:`s3q.backends.s3bodies` and :mod:`s3q.backends.s3multipart` use it."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoAuthTokenError,
    NoCredentialsError,
    PartialCredentialsError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.loaders import Loader

from s3q import clock
from s3q.backends import S3Options
from s3q.store import (
    Guard,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["CLOCK_STEP_BACK", "TRANSPORT", "Meter", "StoreClock", "core_error", "error_code",
           "make_client", "parse_timestamp", "quoted", "resend_conflicts", "translate"]

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
#: This host's clock is over 15 min off S3's: every request is refused (StoreRefused).
_SKEWED = "RequestTimeTooSkewed"
#: botocore's transport failures: the request may or may not have reached S3.
TRANSPORT = (HTTPClientError, BotoConnectionError, IncompleteReadError)
#: botocore finding no credentials to sign with (none, or its providers failing to get or
#: refresh them: expired ones not renewed): every request is refused, whatever its key.
_NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError,
                   TokenRetrievalError, NoAuthTokenError)


def make_client(options: S3Options, url: str) -> S3Client:
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
        core = _session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp)
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            aws_session_token=options.session_token,
            region_name=region,
        )
        client = session.client(
            "s3",
            region_name=region or session.region_name or "us-east-1",
            endpoint_url=options.endpoint_url,
            config=config,
        )
    except (BotoCoreError, ValueError) as e:
        raise StoreError(f"cannot set up the S3 client for {url}: {e}") from e
    # after botocore's own handler of the event (a handler of before-call.s3.PutObject
    # would run before it), which adds the header to every request with a body
    client.meta.events.register_last("before-call.s3", _no_continue_below_threshold)
    return client


#: botocore's data loaders, by data path (AWS_DATA_PATH), shared by every client made here.
_LOADERS: dict[str | None, Loader] = {}
_LOADERS_LOCK = threading.Lock()


def _session() -> botocore.session.Session:
    """A new botocore session (its own credentials and settings) that shares the process's
    data loader, which caches what it has read. Without it, each session reads and parses
    botocore's S3 model again, 0.1-0.2 s of CPU for each store a process makes (a bench run
    of 16 workers in one process spent 2.8 s of its 12 s of CPU on it). Clients of boto3's
    default session share one loader in the same way."""
    core = botocore.session.get_session()
    path = core.get_config_variable("data_path")
    with _LOADERS_LOCK:
        loader = _LOADERS.setdefault(path, core.get_component("data_loader"))
    core.register_component("data_loader", loader)
    return core


#: PutObject bodies below this size are sent without ``Expect: 100-continue`` (the
#: threshold of the AWS SDKs for Go, Kotlin and JavaScript v2: 2 MB, 2 MB, 1 MB).
CONTINUE_THRESHOLD = 2 * 1024 * 1024


def _no_continue_below_threshold(params: dict[str, Any], **_: Any) -> None:
    """botocore asks for ``100 Continue`` before sending any PutObject body, which costs a
    round trip more (the client waits for S3's interim answer before it sends the body): a
    lease write would take two round trips instead of one. Below the threshold the body is
    sent at once; a rejected write (412, 403) then wastes at most that much upload."""
    headers = params.get("headers", {})
    if headers.get("Expect") != "100-continue":
        return
    size = botocore.utils.determine_content_length(params.get("body"))
    if size is not None and size < CONTINUE_THRESHOLD:
        del headers["Expect"]


def parse_timestamp(value: Any) -> datetime:
    """The client's timestamp parser: ISO 8601 (listings) and RFC 1123 (Last-Modified
    headers) by the standard library in about 0.5 µs; anything else by botocore's own, which
    runs dateutil (about 100 µs a timestamp: 0.1 s of CPU for a LIST of 1,000 keys). A time
    without a zone is UTC, as all of S3's are."""
    if isinstance(value, str):
        parsed: datetime | None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            try:
                parsed = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return botocore.utils.parse_timestamp(value)


def core_error(e: BotoCoreError, what: str) -> StoreError:
    """botocore's own failure of ``what`` (an S3 request) as a store error: a transport one
    is :class:`StoreUnavailable`; no credentials to sign with, :class:`StoreRefused` (no
    request was sent)."""
    if isinstance(e, TRANSPORT):
        return StoreUnavailable(f"{what}: {e}")
    if isinstance(e, _NO_CREDENTIALS):
        return StoreRefused(f"{what}: {e} (no credentials to sign with)")
    return StoreError(f"{what}: {e}")


def translate(e: ClientError, operation: str, where: str, *, bucket: str,
              endpoint: str) -> StoreError:
    """s3q's error for botocore's answer to ``operation`` on ``where`` (an s3:// URL)."""
    code = error_code(e)
    meta = e.response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode", 0)
    message = e.response.get("Error", {}).get("Message", "")
    if code == "NoSuchBucket":
        return StoreRefused(f"S3 bucket {bucket!r} does not exist (at {endpoint})")
    if code in _NOT_FOUND:
        return NotFound(f"{where} not found")
    if code in _CONFLICT or status == 412:
        return PreconditionFailed(f"S3 {operation} {where}: {code} (condition not met)")
    if status >= 500 or code in _UNAVAILABLE:
        attempts = meta.get("RetryAttempts", 0) + 1
        return StoreUnavailable(
            f"S3 {operation} {where}: {code} (HTTP {status}) after {attempts} attempt(s)"
        )
    if code == _SKEWED:
        return StoreRefused(f"S3 {operation} {where}: RequestTimeTooSkewed: this host's clock "
                            "is too far from S3's (over 15 minutes): fix its time (NTP)")
    if code in _DENIED:
        return StoreError(
            f"S3 access denied: {operation} {where} (check the credentials and the bucket"
            " and IAM policies; S3 answers 403 instead of 404 for a missing key when"
            " s3:ListBucket is not granted)"
        )
    if code in _BAD_CREDENTIALS:
        return StoreRefused(f"S3 rejected the credentials ({code}) for {operation} {where}")
    return StoreError(f"S3 {operation} {where} failed: {code} (HTTP {status}): {message}")


def quoted(etag: str) -> str:
    """ETags as S3 sends them, in double quotes (radosgw 16 leaves them off in
    CopyObject's result, though its HEAD of the copy has them)."""
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class StoreClock:
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
        return None if offset is None else offset + clock.monotonic()


class Meter:
    """What a client's event hooks see: ``request_counts`` (HTTP requests sent, by S3
    operation, retries included: what S3 bills), ``error_counts`` (error answers by S3 error
    code, ``"404"`` for a bodiless HEAD; transport failures by exception name), the server's
    :class:`StoreClock`, and the guard of the current call in each thread."""

    def __init__(self, client: S3Client) -> None:
        self.request_counts: Counter[str] = Counter()
        self.error_counts: Counter[str] = Counter()
        self.clock = StoreClock()
        self._lock = threading.Lock()
        self._guards = threading.local()
        # last of every before-send handler: botocore's adaptive retry mode registers its
        # rate limiter on "before-send" (called after the handlers of "before-send.s3"),
        # which may hold a request for seconds once S3 throttled the client; the guard must
        # be checked after that wait, immediately before the bytes leave
        client.meta.events.register_last("before-send", self._on_send)
        client.meta.events.register("response-received.s3", self._on_response)

    @contextmanager
    def guarded(self, guard: Guard | None) -> Iterator[None]:
        """Make ``guard`` the check run before each HTTP request of the call in this thread
        (botocore sends from the calling thread; retries are re-checked)."""
        self._guards.current = guard
        try:
            yield
        finally:
            self._guards.current = None

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        """Copies of ``(request_counts, error_counts)``, safe to take while other threads
        make requests (iterating the live counters then is not)."""
        with self._lock:
            return Counter(self.request_counts), Counter(self.error_counts)

    def _on_send(self, event_name: str, **_: Any) -> None:
        """botocore's ``before-send``: after signing, right before the bytes leave. A guard
        that raises here stops the request (botocore re-raises it from the call)."""
        guard: Guard | None = getattr(self._guards, "current", None)
        if guard is not None:
            guard()
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.request_counts[operation] += 1

    def _on_response(
        self,
        response_dict: dict[str, Any] | None = None,
        parsed_response: dict[str, Any] | None = None,
        exception: Exception | None = None,
        **_: Any,
    ) -> None:
        received = clock.monotonic()
        error: str | None = None
        if response_dict is not None:
            date = response_dict["headers"].get("Date")
            if date:
                self.clock.observe(date, received)
            status = response_dict["status_code"]
            if status >= 300:
                error = (parsed_response or {}).get("Error", {}).get("Code") or str(status)
        elif exception is not None:
            error = type(exception).__name__
        if error is not None:
            with self._lock:
                self.error_counts[error] += 1


#: Tries of a conditional request answered 409 ConditionalRequestConflict (AWS: "a
#: conflicting operation occurred ... retry the request"; botocore does not retry it),
#: and the pause before the first retry (doubling, jittered).
CONFLICT_TRIES = 5
CONFLICT_PAUSE = 0.05

T = TypeVar("T")



def resend_conflicts(send: Callable[[], T]) -> T:
    """``send()`` (one request, translated), sent again while it is answered 409
    ConditionalRequestConflict: another conditional request on the key overlapped it
    and it was not applied; that says nothing about its condition, which callers would
    take for lost (a view's delete then leaves the view to outlive its request). After
    :data:`CONFLICT_TRIES` such answers it is :class:`PreconditionFailed`, as before.
    An answer to a try that follows a retried one is ``retried`` too, a 404 as well as
    a 412 (an earlier try of the first may have been applied: a fresh claim's c2 that
    took such a 404 for certain gave its lease up after its own first try had deleted
    wait/NAME); the guard is checked before each send."""
    retried = False
    for attempt in range(1, CONFLICT_TRIES + 1):
        try:
            return send()
        except StoreError as exc:  # (a 404 too: a delete's first try may have applied)
            exc.retried = exc.retried or retried
            if (attempt == CONFLICT_TRIES or not isinstance(exc, PreconditionFailed)
                    or not isinstance(exc.__cause__, ClientError)
                    or error_code(exc.__cause__) != "ConditionalRequestConflict"):
                raise
            retried = exc.retried
        time.sleep(CONFLICT_PAUSE * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")
