"""The least-privilege IAM policy of a worker (``s3q iam-policy``).

For a queue ``s3://BUCKET/PREFIX`` a worker (and every ``s3q`` command) needs exactly:

* ``s3:ListBucket`` on the bucket, limited by ``s3:prefix`` to the queue's state prefixes
  ``PREFIX/wait/``, ``processing/``, ``finish/``, ``failed/`` and ``.s3q/`` (it lists with
  those prefixes only; the HeadBucket it may send to learn the store's clock is allowed to
  fail: any answer, 403 included, carries the ``Date`` it wants);
* ``s3:GetObject``, ``s3:PutObject``, ``s3:DeleteObject`` on the objects under those
  prefixes. HeadObject is allowed by GetObject; CopyObject needs GetObject on the source and
  PutObject on the destination (both under the queue); conditional writes and deletes
  (``If-None-Match``, ``If-Match``) need no other permission. The multipart requests of a
  request over 5 GiB (copied or submitted in parts) need PutObject, and
  ``s3:AbortMultipartUpload`` lets one that failed clean up after itself;
* with ``ssm:`` secrets only: ``ssm:GetParameter`` on those parameters and ``kms:Decrypt``
  through SSM (condition ``kms:ViaService``) to decrypt the SecureStrings;
* with ``events_queue`` only: on that SQS queue, ``sqs:ReceiveMessage``,
  ``sqs:DeleteMessage`` (DeleteMessageBatch too), ``sqs:ChangeMessageVisibility`` (hiding
  a message until the retry it announces is due), and ``sqs:GetQueueUrl`` when the queue is
  named by name or ARN rather than URL. Not ``sqs:GetQueueAttributes``: only
  ``s3q events setup`` reads attributes, with the operator's credentials.

Nothing else: not the rest of the bucket, not other buckets, no ``s3:*``. A bucket encrypted
with a customer managed KMS key (SSE-KMS) additionally needs ``kms:GenerateDataKey`` and
``kms:Decrypt`` on that key (not included: the key is not known from the queue URL).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from s3q import layout

if TYPE_CHECKING:
    from s3q.config import Config

__all__ = ["QUEUE_PREFIXES", "config_ssm_parameters", "iam_policy", "iam_policy_for"]

#: Everything a worker reads, writes or lists, relative to the queue's root.
QUEUE_PREFIXES: tuple[str, ...] = (
    layout.WAIT, layout.PROCESSING, layout.FINISH, layout.FAILED,
    layout.LEASES.split("/", 1)[0] + "/",  # .s3q/: leases, error records, results
)


def iam_policy(queue_url: str, *, ssm_parameters: Iterable[str], region: str | None,
               account: str | None = None, events_queue: str | None = None) -> dict[str, Any]:
    """The IAM policy document (``Version`` 2012-10-17) a worker of the S3 queue
    ``queue_url`` needs; ``ssm_parameters`` are the names (``/app/prod/key``, with or without
    ``ssm:``, or full ARNs) of its ``ssm:`` secrets; ``region`` and ``account`` narrow the
    parameter ARNs and the KMS condition (``*`` when unknown); ``events_queue`` is the SQS
    queue of the event source, if any. Raises ValueError for a queue that is not on S3 (or
    an ``events_queue`` that names no SQS queue)."""
    from s3q.backends import check_queue_url

    check_queue_url(queue_url)
    parts = urlsplit(queue_url)
    if parts.scheme.lower() != "s3":
        raise ValueError(f"queue {queue_url!r} is not on S3: an IAM policy applies only to "
                         "s3://bucket/prefix queues")
    bucket = parts.netloc
    if not bucket or "*" in bucket or "?" in bucket:
        raise ValueError(f"queue {queue_url!r}: no bucket name (expected s3://bucket/prefix)")
    prefix = parts.path.strip("/")
    if "*" in prefix or "?" in prefix:
        raise ValueError(f"queue {queue_url!r}: '*' and '?' would be wildcards in the policy "
                         "(expected s3://bucket/prefix without them)")
    root = f"{prefix}/" if prefix else ""
    partition = _partition(region)
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ListQueuePrefixes",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:{partition}:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{root}{p}*" for p in QUEUE_PREFIXES]}},
        },
        {
            "Sid": "ReadWriteQueueObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                       "s3:AbortMultipartUpload"],
            "Resource": [f"arn:{partition}:s3:::{bucket}/{root}{p}*" for p in QUEUE_PREFIXES],
        },
    ]
    arns = _parameter_arns(ssm_parameters, partition, region, account)
    if arns:
        via = "ssm.*.amazonaws.com" if not region else f"ssm.{region}.amazonaws.com"
        statements += [
            {
                "Sid": "ReadSecretParameters",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": arns,
            },
            {
                "Sid": "DecryptSecretParametersThroughSSM",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {("StringLike" if not region else "StringEquals"):
                              {"kms:ViaService": via}},
            },
        ]
    if events_queue:
        from s3q.sqs import parse_queue

        ref = parse_queue(events_queue)
        actions = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
        statements.append({
            "Sid": "ReceiveBucketNotifications",
            "Effect": "Allow",
            "Action": actions + ([] if ref.url else ["sqs:GetQueueUrl"]),
            "Resource": ref.arn(partition, region, account),
        })
    return {"Version": "2012-10-17", "Statement": statements}


def config_ssm_parameters(cfg: Config) -> list[str]:
    """The SSM parameter names of ``cfg``'s not yet resolved ``ssm:`` secrets."""
    from s3q.settings import SETTINGS, Secret

    names: list[str] = []
    for s in SETTINGS:
        value = getattr(cfg, s.name)
        if s.secret and isinstance(value, Secret) and value.ssm_parameter is not None:
            names.append(value.ssm_parameter)
    return names


def iam_policy_for(cfg: Config, *, account: str | None = None,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`iam_policy` for a loaded (not secret-resolved) config: its queue, its ``ssm:``
    secrets, its region (else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``)."""
    env = dict(os.environ) if env is None else env
    region = cfg.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return iam_policy(cfg.queue, ssm_parameters=config_ssm_parameters(cfg), region=region,
                      account=account, events_queue=cfg.events_queue)


def _partition(region: str | None) -> str:
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _parameter_arns(names: Iterable[str], partition: str, region: str | None,
                    account: str | None) -> list[str]:
    arns: list[str] = []
    for raw in names:
        name = raw[4:] if raw.startswith("ssm:") else raw
        if not name.strip():
            raise ValueError(f"SSM parameter {raw!r}: empty name")
        if name.startswith("arn:"):
            arn = name
        else:
            arn = (f"arn:{partition}:ssm:{region or '*'}:{account or '*'}:parameter/"
                   f"{name.lstrip('/')}")
        if arn not in arns:
            arns.append(arn)
    return arns
