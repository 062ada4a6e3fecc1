"""``s3q events setup``: wire the bucket's notifications for wait/ to ``events_queue``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from s3q.backends import check_queue_url
from s3q.cli.errors import EXIT_STORE, EXIT_UNHEALTHY, Failure
from s3q.cli.options import App, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json, table
from s3q.config import Config, resolve_secrets
from s3q.layout import WAIT

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@click.group("events")
def events_group() -> None:
    """Waking workers on S3 event notifications (through SQS)."""


@events_group.command("setup", cls=S3qCommand, examples=[
    "s3q --events-queue s3q-events events setup --dry-run",
    "s3q --events-queue s3q-events events setup",
    "S3Q_PROFILE=prod s3q events setup --json   # events_queue from the profile"])
@click.option("--source-account", metavar="ID",
              help="The bucket owner's account for the policy's aws:SourceAccount condition "
              "(default: the queue's account).")
@click.option("--no-source-account", is_flag=True,
              help="No aws:SourceAccount condition (the bucket ARN's only).")
@click.option("--dry-run", is_flag=True, help="Change nothing; say what would change.")
@json_option
@setting_options("events_queue", "sqs_endpoint_url")
def events_setup(source_account: str | None, no_source_account: bool, dry_run: bool,
                 as_json: bool) -> None:
    """Create or check the SQS queue EVENTS_QUEUE, its access policy (S3 may send the
    bucket's notifications to it) and the bucket's s3:ObjectCreated:* notification for the
    queue's wait/ prefix, merged with the bucket's other notification rules. Safe to run
    again: what is there is left as it is. Exit 1 when an overlapping rule of the bucket
    points elsewhere."""
    from botocore.exceptions import BotoCoreError, ClientError

    from s3q.eventsetup import SetupConflict, setup_events
    from s3q.sqs import SqsError

    app = App()
    cfg = resolve_secrets(app.config)
    if cfg.events_queue is None:
        raise Failure("events_queue is not set: name the SQS queue (e.g. s3q-events, or its "
                      "URL or ARN) in s3q.toml, S3Q_EVENTS_QUEUE or --events-queue")
    try:
        check_queue_url(cfg.queue)
    except ValueError as e:
        raise Failure(f"queue: {e} ({app.queue_source})") from None
    parts = urlsplit(cfg.queue)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise Failure(f"queue {cfg.queue}: S3 event notifications need a queue on S3 "
                      "(s3://bucket/prefix)")
    prefix = parts.path.strip("/")
    wait_prefix = (f"{prefix}/" if prefix else "") + WAIT
    sqs = cfg.sqs_queue()
    assert sqs is not None
    account: str | bool | None = None if no_source_account else (source_account or True)
    try:
        report = setup_events(_s3_client(cfg), sqs, bucket=parts.netloc,
                              wait_prefix=wait_prefix, source_account=account,
                              dry_run=dry_run)
    except SetupConflict as e:
        raise Failure(str(e), EXIT_UNHEALTHY) from None
    except SqsError as e:
        raise Failure(str(e), EXIT_STORE) from None
    except (ClientError, BotoCoreError) as e:
        raise Failure(f"S3 bucket {parts.netloc}: {e}", EXIT_STORE) from None
    finally:
        sqs.close()
    if as_json:
        echo_json("events-setup", {"queue_url": report.queue_url, "queue_arn": report.queue_arn,
                   "changed": report.changed,
                   "steps": [{"what": w, "state": s, "detail": d} for w, s, d in report.steps]})
    else:
        click.echo(table(["WHAT", "STATE", "DETAIL"], report.steps))


def _s3_client(cfg: Config) -> S3Client:
    """A plain S3 client with the queue's endpoint, region and credentials (bucket-level
    calls, which the store seam does not have)."""
    import boto3
    from botocore.config import Config as BotoConfig

    options = cfg.s3_options()
    endpoint = options.endpoint_url or os.environ.get(
        "AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL"))
    session = boto3.session.Session(aws_access_key_id=options.access_key_id,
                                    aws_secret_access_key=options.secret_access_key,
                                    aws_session_token=options.session_token)
    return session.client("s3", region_name=options.region or os.environ.get("AWS_REGION"),
                          endpoint_url=endpoint,
                          config=BotoConfig(s3={"addressing_style": "path" if endpoint
                                                else "auto"}))
