"""``s3q events setup``: wire the bucket's ``s3:ObjectCreated:*`` notifications for the
queue's ``wait/`` prefix to the SQS queue ``events_queue``, idempotently.

1. The SQS queue: created if missing (a standard queue: S3 cannot notify FIFO queues), and
   checked to be in the bucket's region (S3 notifies queues of its own region only).
2. Its access policy: a statement letting ``s3.amazonaws.com`` ``sqs:SendMessage`` to it on
   condition of the bucket's ARN (``aws:SourceArn``) and account (``aws:SourceAccount``,
   where known), added to the statements already there; nothing is added when an equivalent
   statement exists.
3. The bucket notification: a queue rule ``s3:ObjectCreated:*``, prefix ``<root>wait/``,
   *merged* into the bucket's notification configuration: every other rule (queue, topic,
   Lambda, EventBridge) is kept. A rule already sending those events for that prefix to this
   queue leaves everything unchanged; a rule for overlapping events and keys that points
   elsewhere (S3 allows one destination per event and key) is a :class:`SetupConflict`, and
   so is a rule sending objects created under other keys to this queue (another s3q
   queue's: its workers and ours would delete each other's notifications).

The merge functions are pure (:func:`merge_policy`, :func:`merge_notification`); S3 has no
conditional write for a notification configuration, so a change made by somebody else
between our read and our write would be lost: run it when nobody else edits that bucket's
notifications.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from s3q.sqs import QueueMissing, SqsQueue

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["SetupConflict", "SetupReport", "merge_notification", "merge_policy",
           "notification_rule", "policy_statement", "setup_events"]

CREATED = "s3:ObjectCreated:"
_KINDS = ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations")
_TARGET = {"QueueConfigurations": "QueueArn", "TopicConfigurations": "TopicArn",
           "LambdaFunctionConfigurations": "LambdaFunctionArn"}
_ALL_CREATED = {f"{CREATED}{e}" for e in ("Put", "Post", "Copy", "CompleteMultipartUpload")}


class SetupConflict(Exception):
    """The bucket's notification configuration cannot take the rule (says why)."""


@dataclass
class SetupReport:
    """What ``setup_events`` found and did: ``steps`` are (what, state, detail)."""

    queue_url: str = ""
    queue_arn: str = ""
    steps: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(state not in ("exists", "present") for _, state, _ in self.steps)


def rule_id(wait_prefix: str) -> str:
    """The notification rule's id: stable for a prefix, so a second run finds it."""
    return "s3q-" + hashlib.sha256(wait_prefix.encode()).hexdigest()[:12]


def notification_rule(queue_arn: str, wait_prefix: str) -> dict[str, Any]:
    """The queue rule: every object created under ``wait_prefix`` (the full key prefix)."""
    return {"Id": rule_id(wait_prefix), "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": wait_prefix}]}}}


def policy_statement(queue_arn: str, bucket_arn: str, account: str | None) -> dict[str, Any]:
    """The statement letting S3 send the bucket's notifications to the queue."""
    condition: dict[str, Any] = {"ArnLike": {"aws:SourceArn": bucket_arn}}
    if account:
        condition["StringEquals"] = {"aws:SourceAccount": account}
    sid = "S3qNotifications" + hashlib.sha256(bucket_arn.encode()).hexdigest()[:8]
    return {"Sid": sid, "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": queue_arn, "Condition": condition}


def merge_policy(policy: dict[str, Any] | None, statement: dict[str, Any]) -> dict[str, Any] | None:
    """``policy`` with ``statement`` added, or None when an equivalent statement is there
    (S3 may send to this queue for this bucket, whatever its Sid and extra conditions)."""
    current: dict[str, Any] = copy.deepcopy(policy) if policy else {"Version": "2012-10-17"}
    statements: list[Any] = _as_list(current.get("Statement"))
    bucket = statement["Condition"]["ArnLike"]["aws:SourceArn"]
    for s in statements:
        if _allows_s3(s, statement["Resource"], bucket):
            return None
    current["Statement"] = [*statements, statement]
    current.setdefault("Version", "2012-10-17")
    return current


def _allows_s3(s: Any, queue_arn: str, bucket_arn: str) -> bool:
    if not isinstance(s, dict) or s.get("Effect") != "Allow":
        return False
    principal = s.get("Principal")
    services = principal.get("Service") if isinstance(principal, dict) else None
    actions = _as_list(s.get("Action"))
    arns = [v for op in ("ArnLike", "ArnEquals")
            for v in _as_list(s.get("Condition", {}).get(op, {}).get("aws:SourceArn"))]
    return ("s3.amazonaws.com" in _as_list(services)
            and any(a in ("sqs:SendMessage", "sqs:*", "*") for a in actions)
            and queue_arn in _as_list(s.get("Resource")) and bucket_arn in arns)


def merge_notification(config: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any] | None:
    """The bucket's notification configuration with ``rule`` added (every other rule kept),
    or None when a rule already sends every created object under the rule's prefix to the
    rule's queue. Raises :class:`SetupConflict` for an overlapping rule pointing
    elsewhere."""
    merged = {k: copy.deepcopy(v) for k, v in config.items() if k != "ResponseMetadata"}
    prefix = _filter(rule, "prefix")
    for existing in merged.get("QueueConfigurations", []):  # another s3q queue's rule?
        theirs = _filter(existing, "prefix")
        if (existing.get("QueueArn") == rule["QueueArn"] and _creates(existing)
                and not (theirs.startswith(prefix) or prefix.startswith(theirs))):
            raise SetupConflict(
                f"the bucket's notification rule {existing.get('Id', '(no id)')!r} already "
                f"sends objects created under {theirs!r} to {rule['QueueArn']}: one SQS "
                "queue per s3q queue (a worker deletes every notification that is not about "
                "its own queue's wait/, so each queue's workers would delete the other's). "
                "Give this queue an events_queue of its own, or remove that rule")
    for kind in _KINDS:
        for existing in merged.get(kind, []):
            events = set(existing.get("Events", []))
            if not _creates(existing):
                continue
            theirs, suffix = _filter(existing, "prefix"), _filter(existing, "suffix")
            if not (theirs.startswith(prefix) or prefix.startswith(theirs)):
                continue
            target = existing.get(_TARGET[kind], "?")
            covers = ((f"{CREATED}*" in events or "s3:*" in events or events >= _ALL_CREATED)
                      and prefix.startswith(theirs) and not suffix)
            ours = kind == "QueueConfigurations" and target == rule["QueueArn"]
            if ours and covers:
                return None
            todo = (f"That rule sends only part of it to this queue: widen it to "
                    f"s3:ObjectCreated:* for every key starting with {prefix!r}, or remove it "
                    "and run 's3q events setup' again" if ours else
                    "Point events_queue at that queue, fan out through SNS, or remove or "
                    "narrow that rule")
            raise SetupConflict(
                f"the bucket's notification rule {existing.get('Id', '(no id)')!r} already "
                f"sends {', '.join(sorted(events))} for keys starting with {theirs!r}"
                f"{f' and ending with {suffix!r}' if suffix else ''} to {target}, which "
                f"overlaps {prefix!r}: S3 allows one destination per event and key. {todo} "
                "(aws s3api get-bucket-notification-configuration shows them all)")
    merged.setdefault("QueueConfigurations", []).append(rule)
    return merged


def _creates(rule: dict[str, Any]) -> bool:
    """Does the rule send (some) object creations?"""
    return any(e.startswith(CREATED) or e == "s3:*" for e in rule.get("Events", []))


def _filter(rule: dict[str, Any], name: str) -> str:
    rules = rule.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return next((str(r.get("Value", "")) for r in rules
                 if str(r.get("Name", "")).lower() == name), "")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def setup_events(s3: S3Client, sqs: SqsQueue, *, bucket: str, wait_prefix: str,
                 source_account: str | bool | None = True, dry_run: bool = False
                 ) -> SetupReport:
    """Create or check the queue, its access policy and the bucket notification.
    ``source_account``: True = the queue's account, a string = that account, None/False =
    no ``aws:SourceAccount`` condition. ``dry_run``: change nothing, report what would
    change. Raises :class:`SetupConflict`, :class:`~s3q.sqs.SqsError`, botocore errors."""
    report = SetupReport()
    try:
        attrs = sqs.attributes("QueueArn", "Policy")
        report.steps.append(("queue", "exists", sqs.url))
    except QueueMissing:
        if dry_run:
            report.steps.append(("queue", "would create", sqs.ref.name))
            return report
        report.steps.append(("queue", "created", sqs.create()))
        attrs = sqs.attributes("QueueArn", "Policy")
    report.queue_url = sqs.url
    report.queue_arn = attrs["QueueArn"]
    _, partition, _, queue_region, queue_account, _ = report.queue_arn.split(":", 5)
    bucket_region = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    if bucket_region == "EU":
        bucket_region = "eu-west-1"
    if queue_region != bucket_region:
        raise SetupConflict(f"the queue {report.queue_arn} is in {queue_region} but bucket "
                            f"{bucket} is in {bucket_region}: S3 notifies queues of its own "
                            "region only")
    account = queue_account if source_account is True else (source_account or None)
    statement = policy_statement(report.queue_arn, f"arn:{partition}:s3:::{bucket}",
                                 str(account) if account else None)
    try:
        policy = json.loads(attrs["Policy"]) if attrs.get("Policy") else None
    except ValueError as exc:
        raise SetupConflict(f"the queue's access policy is not JSON: {exc}") from None
    new_policy = merge_policy(policy, statement)
    if new_policy is None:
        report.steps.append(("access policy", "present", "s3.amazonaws.com may send"))
    else:
        if not dry_run:
            sqs.call("SetQueueAttributes", sqs.client.set_queue_attributes,
                     QueueUrl=sqs.url, Attributes={"Policy": json.dumps(new_policy)})
        report.steps.append(("access policy", "would add" if dry_run else "added",
                             f"statement {statement['Sid']}"))
    rule = notification_rule(report.queue_arn, wait_prefix)
    current = dict(s3.get_bucket_notification_configuration(Bucket=bucket))
    merged = merge_notification(current, rule)
    where = f"s3:ObjectCreated:* on s3://{bucket}/{wait_prefix}"
    if merged is None:
        report.steps.append(("notification", "present", where))
    else:
        if not dry_run:
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=cast(Any, merged))
        report.steps.append(("notification", "would add" if dry_run else "added",
                             f"rule {rule['Id']}: {where}"))
    return report

