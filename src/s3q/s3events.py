"""S3 event notifications, as an SQS message carries them: decoding and filtering.

One SQS message holds one S3 notification: either ``{"Records": [...]}`` with one record
per object created, or the ``s3:TestEvent`` S3 sends when a notification configuration is
set. A message that went through SNS first (S3 → SNS → SQS fan-out without raw delivery) is
the SNS envelope ``{"Type": "Notification", "Message": "<the S3 notification>"}``.

Object keys in records are form-URL-encoded: ``+`` is a space, ``%2B`` a plus, ``%XX`` the
UTF-8 bytes of anything else. AWS keeps ``/``; moto encodes it too (``%2F``).
:func:`decode_key` reads both.

Nothing here talks to SQS or S3: :func:`parse_message` turns a message body into a
:class:`Notice` that says which requests of one queue it announces.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

from s3q.layout import WAIT

__all__ = ["Notice", "decode_key", "parse_message"]

#: ``test``: S3's s3:TestEvent; ``records``: object notifications; ``malformed``: neither.
Kind = Literal["test", "records", "malformed"]


@dataclass(frozen=True, slots=True)
class Notice:
    """What one SQS message says, for one queue (bucket + ``wait/`` prefix)."""

    kind: Kind
    #: Names (relative to wait/) of objects created under the queue's wait/ prefix.
    names: list[str] = field(default_factory=list)
    #: Records about something else: another bucket, another prefix, another event.
    foreign: int = 0
    #: Of those, requests of another queue (``s3://bucket/key``: created in a ``wait/``
    #: outside this queue's root, or in another bucket): notifications its workers miss.
    outside: list[str] = field(default_factory=list)
    #: Why the message (or one of its records) could not be read.
    problems: list[str] = field(default_factory=list)


def decode_key(raw: str) -> str:
    """The object key of an S3 event record's ``s3.object.key`` (form-URL-encoded, ``/``
    encoded or not). Raises ValueError for percent-escapes that are not UTF-8."""
    return unquote_plus(raw, encoding="utf-8", errors="strict")


def parse_message(body: str, *, bucket: str, wait_prefix: str) -> Notice:
    """The :class:`Notice` of an SQS message body, for the queue whose requests are the
    objects ``wait_prefix + NAME`` of ``bucket`` (``wait_prefix`` is the full key prefix,
    e.g. ``"requests/wait/"``)."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError, RecursionError) as exc:  # (nested too deep for json)
        return Notice("malformed", problems=[f"not JSON: {type(exc).__name__}: {exc}"])
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(
            data.get("Message"), str):
        return parse_message(data["Message"], bucket=bucket, wait_prefix=wait_prefix)
    if not isinstance(data, dict):
        return Notice("malformed", problems=["not a JSON object"])
    if data.get("Type") == "SubscriptionConfirmation":  # (S3 → SNS → SQS fan-out)
        return Notice("malformed", problems=[
            "an SNS subscription confirmation, not an S3 notification: to receive the "
            f"topic's messages, confirm it (visit {data.get('SubscribeURL')!s:.1000}, or "
            "'aws sns confirm-subscription' with its Token)"])
    if data.get("Event") == "s3:TestEvent":
        return Notice("test")
    records = data.get("Records")
    if not isinstance(records, list) or not records:
        return Notice("malformed", problems=["no Records and not an s3:TestEvent"])
    root = wait_prefix.removesuffix(WAIT)  # (the queue's own objects: finish/, .s3q/, ...)
    names: list[str] = []
    foreign = 0
    outside: list[str] = []
    problems: list[str] = []
    for i, record in enumerate(records):
        try:
            created = _created(record)
        except ValueError as exc:
            problems.append(f"record {i}: {exc}")
            continue
        where, key = created or (bucket, None)
        if where != bucket or key is None or not key.startswith(wait_prefix) or (
                key == wait_prefix):
            foreign += 1
            if key is not None and (where != bucket or not key.startswith(root)) and (
                    _A_WAIT.search(key)):  # (not the queue's own objects, nor other files)
                outside.append(f"s3://{where}/{key}")
        elif (name := key[len(wait_prefix):]) not in names:
            names.append(name)
    if problems and not names and not foreign:
        return Notice("malformed", problems=problems)
    return Notice("records", names, foreign, outside, problems)


#: A key in the wait/ of some queue (``x/wait/NAME``, ``wait/NAME``).
_A_WAIT = re.compile(f"(?:^|/){WAIT}.")


def _created(record: Any) -> tuple[str, str] | None:
    """The bucket and decoded key of an ObjectCreated record; None for other events.
    Raises ValueError when the record is not an S3 event record."""
    if not isinstance(record, dict):
        raise ValueError("not an object")
    s3 = record.get("s3")
    event = record.get("eventName")
    if not isinstance(s3, dict) or not isinstance(event, str):
        raise ValueError("no s3 or eventName")
    source = s3.get("bucket")
    obj = s3.get("object")
    if not (isinstance(source, dict) and isinstance(obj, dict)
            and isinstance(source.get("name"), str) and isinstance(obj.get("key"), str)):
        raise ValueError("no s3.bucket.name or s3.object.key")
    if not event.startswith(("ObjectCreated:", "s3:ObjectCreated:")):
        return None
    try:
        return source["name"], decode_key(obj["key"])
    except UnicodeDecodeError as exc:
        raise ValueError(f"key {obj['key'][:100]!r} is not UTF-8 once decoded") from exc
