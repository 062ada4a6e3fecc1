"""The SQS queue the event source reads (``events_queue``) and its set-up writes: how it is
named (a URL, an ARN or a name), a boto3 client for it, and its failures as one exception.

``events_queue`` may be

* a queue URL, ``https://sqs.eu-west-1.amazonaws.com/123456789012/s3q-events``: its region
  and account come from it; a URL that is not AWS's (moto, LocalStack) also names the
  endpoint to talk to;
* an ARN, ``arn:aws:sqs:eu-west-1:123456789012:s3q-events``;
* a name, ``s3q-events``: in the configured region, of the credentials' account (resolved
  with GetQueueUrl once).

S3 event notifications cannot go to FIFO queues: ``*.fifo`` is refused.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["Message", "QueueMissing", "QueueRef", "SqsError", "SqsQueue", "parse_queue"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_AWS_HOST = re.compile(r"(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d+)(?:\.queue)?\.amazonaws\.com(?:\.cn)?")
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


class SqsError(Exception):
    """A request to SQS failed (after botocore's retries); the message says which and why."""


class QueueMissing(SqsError):
    """The queue does not exist (or is not visible to these credentials)."""


@dataclass(frozen=True, slots=True)
class QueueRef:
    """An SQS queue as ``events_queue`` names it."""

    name: str
    url: str | None = None
    region: str | None = None
    account: str | None = None
    #: The endpoint a non-AWS queue URL names (moto, LocalStack); None for AWS.
    endpoint_url: str | None = None

    def arn(self, partition: str = "aws", region: str | None = None,
            account: str | None = None) -> str:
        """Its ARN; ``*`` for what is not known."""
        return (f"arn:{partition}:sqs:{self.region or region or '*'}:"
                f"{self.account or account or '*'}:{self.name}")


def parse_queue(text: str) -> QueueRef:
    """The :class:`QueueRef` of an ``events_queue`` value. Raises ValueError."""
    text = text.strip()
    if text.startswith(("https://", "http://")):
        parts = urlsplit(text)
        path = [p for p in parts.path.split("/") if p]
        if len(path) != 2 or not parts.netloc:
            raise ValueError(f"events_queue: {text!r} is not a queue URL (expected "
                             "https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
        account, name = path
        host = _AWS_HOST.fullmatch(parts.hostname or "")
        ref = QueueRef(name, text, host.group(1) if host else None, account,
                       None if host else f"{parts.scheme}://{parts.netloc}")
    elif text.startswith("arn:"):
        fields = text.split(":")
        if len(fields) != 6 or fields[2] != "sqs":
            raise ValueError(f"events_queue: {text!r} is not an SQS queue ARN")
        ref = QueueRef(fields[5], None, fields[3] or None, fields[4] or None)
    else:
        ref = QueueRef(text)
    if not _NAME.fullmatch(ref.name.removesuffix(".fifo")):
        raise ValueError(f"events_queue: {ref.name!r} is not an SQS queue name (1 to 80 "
                         "letters, digits, '-' and '_')")
    if ref.name.endswith(".fifo"):
        raise ValueError(f"events_queue: {ref.name!r} is a FIFO queue; S3 sends event "
                         "notifications to standard queues only")
    return ref


@dataclass(frozen=True, slots=True)
class Message:
    """A message received: its receipt handle, body and how often it was received."""

    receipt: str
    body: str
    receives: int


class SqsQueue:
    """One SQS queue and a client for it. ``request_counts``: HTTP requests sent, by SQS
    operation (retries included: what SQS bills). Thread-safe."""

    def __init__(self, ref: QueueRef, *, region: str | None = None,
                 endpoint_url: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, session_token: str | None = None,
                 retry_mode: str = "standard") -> None:
        self.ref = ref
        self.request_counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._url = ref.url
        try:
            session = boto3.session.Session(
                aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                aws_session_token=session_token)
            self.client: SQSClient = session.client(
                "sqs", region_name=ref.region or region or os.environ.get("AWS_REGION"),
                endpoint_url=endpoint_url or ref.endpoint_url,
                config=Config(retries=cast(Any, {"mode": retry_mode, "total_max_attempts": 3}),
                              connect_timeout=5, read_timeout=40))
        except Exception as exc:  # no region, a bad endpoint URL
            raise SqsError(f"events_queue {ref.name}: cannot make an SQS client: {exc}") from exc
        self.client.meta.events.register("before-send.sqs", self._count)

    @property
    def url(self) -> str:
        """The queue URL (asks SQS once for a queue named by name or ARN)."""
        if self._url is None:
            kwargs: dict[str, str] = {"QueueName": self.ref.name}
            if self.ref.account:
                kwargs["QueueOwnerAWSAccountId"] = self.ref.account
            self._url = self.call("GetQueueUrl", self.client.get_queue_url, **kwargs)["QueueUrl"]
        return self._url

    def create(self) -> str:
        """CreateQueue (a standard queue, default attributes; idempotent in SQS): its URL."""
        self._url = self.call("CreateQueue", self.client.create_queue,
                              QueueName=self.ref.name)["QueueUrl"]
        return self._url

    def attributes(self, *names: str) -> dict[str, str]:
        """GetQueueAttributes (those present)."""
        answer = self.call("GetQueueAttributes", self.client.get_queue_attributes,
                           QueueUrl=self.url, AttributeNames=cast(Any, list(names)))
        return dict(answer.get("Attributes", {}))

    def receive(self, most: int, *, wait: int, visibility: int) -> list[Message]:
        """Up to ``most`` (1-10) messages, long-polling up to ``wait`` seconds (0-20)."""
        answer = self.call("ReceiveMessage", self.client.receive_message, QueueUrl=self.url,
                           MaxNumberOfMessages=max(1, min(10, most)),
                           WaitTimeSeconds=max(0, min(20, wait)),
                           VisibilityTimeout=visibility,
                           MessageSystemAttributeNames=["ApproximateReceiveCount"])
        return [Message(m["ReceiptHandle"], m.get("Body", ""),
                        int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")))
                for m in answer.get("Messages", [])]

    def delete(self, receipts: list[str]) -> None:
        """Delete messages (batches of 10). A receipt that expired (the message was received
        again elsewhere) is not an error: whoever holds it now deletes it."""
        for i in range(0, len(receipts), 10):
            batch = [{"Id": str(n), "ReceiptHandle": r}
                     for n, r in enumerate(receipts[i:i + 10])]
            answer = self.call("DeleteMessageBatch", self.client.delete_message_batch,
                               QueueUrl=self.url, Entries=batch)
            self._check_batch("delete", answer.get("Failed", []))

    def hide(self, receipts: list[tuple[str, int]]) -> None:
        """Make messages invisible for the given seconds from now (0: visible again)."""
        for i in range(0, len(receipts), 10):
            batch = [{"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": s}
                     for n, (r, s) in enumerate(receipts[i:i + 10])]
            answer = self.call("ChangeMessageVisibilityBatch",
                               self.client.change_message_visibility_batch,
                               QueueUrl=self.url, Entries=cast(Any, batch))
            self._check_batch("change the visibility of", answer.get("Failed", []))

    def call(self, operation: str, method: Any, **kwargs: Any) -> Any:
        """``method(**kwargs)`` with botocore's exceptions turned into :class:`SqsError`."""
        try:
            return method(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = exc.response.get("Error", {}).get("Message", "") or code
            cls = QueueMissing if code in _MISSING else SqsError
            raise cls(f"SQS {operation} on {self.ref.name}: {code}: {why}") from exc
        except BotoCoreError as exc:
            raise SqsError(f"SQS {operation} on {self.ref.name}: {exc}") from exc

    def _check_batch(self, what: str, failed: list[Any]) -> None:
        real = [f for f in failed if f.get("Code") != "ReceiptHandleIsInvalid"]
        if real:
            raise SqsError(f"SQS: could not {what} {len(real)} message(s) of "
                           f"{self.ref.name}: {real[0].get('Code')}: {real[0].get('Message')}")

    def _count(self, event_name: str, **_: Any) -> None:
        with self._counts_lock:
            self.request_counts[event_name.rsplit(".", 1)[-1]] += 1

    def close(self) -> None:
        self.client.close()
