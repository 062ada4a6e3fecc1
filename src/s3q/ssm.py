"""Secrets from SSM Parameter Store: :func:`read_parameters` reads ``ssm:`` references
(decrypted) with the standard AWS credential chain, keeping the values out of every log
(botocore logs response bodies at DEBUG)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from s3q.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

__all__ = ["read_parameters"]

log = logging.getLogger(__name__)


def read_parameters(refs: Mapping[str, str], *, region: str | None, endpoint_url: str | None,
                    retry_mode: Literal["standard", "adaptive"]) -> dict[str, str]:
    """setting name -> the value of the SSM parameter ``refs`` names for it. Raises
    ConfigError naming the setting and parameter."""
    import boto3
    from botocore.config import Config as BotoConfig

    # the region of the S3 and SQS clients (s3wire, sqs): botocore does not read AWS_REGION
    region = region or os.environ.get("AWS_REGION") or None
    try:
        client: SSMClient = boto3.session.Session().client(
            "ssm", region_name=region, endpoint_url=endpoint_url,
            config=BotoConfig(retries={"mode": retry_mode, "total_max_attempts": 3},
                              connect_timeout=5, read_timeout=10))
    except Exception as e:  # e.g. no region, bad endpoint URL
        raise ConfigError(f"{', '.join(refs)}: cannot use SSM: {e}") from None
    return {name: _get_parameter(client, name, parameter) for name, parameter in refs.items()}


def _get_parameter(client: SSMClient, name: str, parameter: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    region = client.meta.region_name
    log.debug("%s: reading SSM parameter %s in %s", name, parameter, region)
    try:
        with _quiet_aws_logs():  # botocore logs response bodies, i.e. the secret, at DEBUG
            value = client.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    except ClientError as e:
        # The request holds only the name, so AWS's reason cannot hold the value: it says
        # which permission is missing (ssm:GetParameter, or kms:Decrypt for a SecureString)
        error = e.response.get("Error", {})
        code = error.get("Code", "error")
        if code == "ParameterNotFound":  # SSM is regional: the console may show it elsewhere
            why = (f"no such parameter in region {region} (the one asked: set region or "
                   "AWS_DEFAULT_REGION to the parameter's)")
        else:
            reason = " ".join(str(error.get("Message") or "").split())[:400]
            why = f"{code} in region {region}" + (f": {reason}" if reason else "")
        raise ConfigError(f"{name}: cannot read SSM parameter {parameter!r}: {why}") from None
    except BotoCoreError as e:
        raise ConfigError(f"{name}: cannot read SSM parameter {parameter!r}: {e}") from None
    except Exception as e:  # e.g. an unparsable answer: its text might hold the secret
        raise ConfigError(f"{name}: cannot read SSM parameter {parameter!r}: "
                          f"{type(e).__name__}") from None
    # as an S3Q_* variable's: 'put-parameter --value file://key' keeps the file's newline,
    # which failed every request signed with it ('Invalid header value', SignatureDoesNotMatch)
    value = value.strip()
    if not value:
        raise ConfigError(f"{name}: SSM parameter {parameter!r} is empty")
    if not value.isprintable():
        raise ConfigError(f"{name}: SSM parameter {parameter!r} must be a single line")
    return value


@contextmanager
def _quiet_aws_logs() -> Iterator[None]:
    """Drop this thread's records from the AWS SDK's and urllib3's loggers meanwhile."""
    me = threading.get_ident()

    def drop(record: logging.LogRecord) -> bool:
        return record.thread is not None and record.thread != me

    names = {"botocore", "boto3", "urllib3"}
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n.split(".")[0] in names] + [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)

