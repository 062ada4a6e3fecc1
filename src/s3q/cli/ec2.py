"""``s3q deploy init`` (a CodeDeploy revision skeleton) and ``s3q iam-policy``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from s3q.cli.errors import Failure
from s3q.cli.options import App, S3qCommand, setting_options
from s3q.deploy import (
    DEFAULT_APP_DIR,
    DEFAULT_GRACE,
    DEFAULT_HANDLER_CMD,
    DEFAULT_SERVICE_NAME,
    DEFAULT_SERVICE_USER,
    write_bundle,
)
from s3q.iam import iam_policy_for


@click.group("deploy")
def deploy_group() -> None:
    """Deployment files for EC2 (CodeDeploy + systemd)."""


@deploy_group.command("init", cls=S3qCommand, examples=[
    "s3q deploy init ./revision",
    "s3q deploy init ./revision --handler-cmd 'python /opt/s3q-app/process.py {path}'"])
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False))
@click.option("--app-dir", default=DEFAULT_APP_DIR, show_default=True,
              help="Where CodeDeploy installs the revision on the instance.")
@click.option("--service-user", default=DEFAULT_SERVICE_USER, show_default=True,
              help="The user the worker runs as (owner of the files).")
@click.option("--service-name", default=DEFAULT_SERVICE_NAME, show_default=True,
              help="The systemd unit's name.")
@click.option("--handler-cmd", default=DEFAULT_HANDLER_CMD, show_default=True,
              help="The program run per request ({path} = the request's local file).")
@click.option("--grace", type=float, default=DEFAULT_GRACE, show_default=True,
              help="Seconds running jobs get at shutdown (the unit's stop timeout follows).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def deploy_init(*, directory: str, app_dir: str, service_user: str, service_name: str,
                handler_cmd: str, grace: float, force: bool) -> None:
    """Write a CodeDeploy revision skeleton (appspec.yml, hook scripts, systemd unit,
    s3q.toml) into DIRECTORY, to commit next to your programs."""
    try:
        written = write_bundle(Path(directory), app_dir=app_dir, service_user=service_user,
                               service_name=service_name, handler_cmd=handler_cmd,
                               grace=grace, force=force)
    except FileExistsError as e:
        raise Failure(f"{e.filename} exists (use --force to overwrite)", code=1) from None
    except ValueError as e:
        raise Failure(str(e)) from None
    for path in written:
        click.echo(str(path))


@click.command("iam-policy", cls=S3qCommand, examples=[
    "s3q --profile prod iam-policy > policy.json",
    "s3q --queue s3://bucket/prefix iam-policy --account 123456789012",
    "s3q --events-queue s3q-events iam-policy --account 123456789012"])
@click.option("--account", metavar="ID", help="AWS account id for the SSM parameter and SQS "
              "queue ARNs (default: any; an events_queue URL names its own).")
@setting_options("events_queue")
def iam_policy(account: str | None) -> None:
    """Print the least-privilege IAM policy for the configured queue: S3 on its prefixes
    only; ssm:GetParameter and kms:Decrypt only for configured ssm: secrets; SQS receive,
    delete and change-visibility on events_queue only when it is set.

    The output is an IAM policy document as AWS reads it (so it has no "schema" key)."""
    app = App()
    try:
        click.echo(json.dumps(iam_policy_for(app.config, account=account), indent=2))
    except ValueError as e:
        raise Failure(str(e)) from None
