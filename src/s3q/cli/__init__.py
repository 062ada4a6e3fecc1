"""``s3q``: the operator's command line.

    s3q worker --exec CMD | --handler module:func   run a worker (until stopped, or --burst)
    s3q submit FILES...                              put requests into wait/
    s3q status [--check]                             counts, oldest waiting, in flight, health
    s3q ls STATE / s3q show NAME                     look at requests
    s3q requeue / recover / purge                    operator actions
    s3q config show                                  the effective settings and their sources
    s3q deploy init [DIR] / s3q iam-policy           EC2: CodeDeploy bundle, IAM policy
    s3q events setup                                 S3 → SQS notifications for wait/

Every non-secret setting of :data:`s3q.config.SETTINGS` is a ``--flag`` of every command
(plus ``--config PATH``). Exit codes: 0 ok; 1 unhealthy (``status --check``), not found,
not done, or aborted; 2 usage or configuration error; 3 store error (unreachable, denied).
Errors are one line on stderr, ``s3q: error: <message>``.

The modules: :mod:`~s3q.cli.errors` (exit codes, error → exit code), :mod:`~s3q.cli.options`
(settings as flags, the config, the queue), :mod:`~s3q.cli.output` (JSON, tables, prompts),
and one per command family: :mod:`~s3q.cli.worker`, :mod:`~s3q.cli.submit`,
:mod:`~s3q.cli.status`, :mod:`~s3q.cli.show` (ls, show) and :mod:`~s3q.cli.admin` (requeue,
recover, purge, config show), :mod:`~s3q.cli.ec2` (deploy init, iam-policy),
:mod:`~s3q.cli.events` (events setup).
"""

from __future__ import annotations

import click

from s3q.cli.admin import config_group, purge, recover, requeue
from s3q.cli.ec2 import deploy_group, iam_policy
from s3q.cli.errors import EXIT_STORE, EXIT_UNHEALTHY, EXIT_USAGE, Failure, S3qGroup
from s3q.cli.events import events_group
from s3q.cli.show import ls_command, show
from s3q.cli.status import status
from s3q.cli.submit import submit
from s3q.cli.worker import worker

__all__ = ["EXIT_STORE", "EXIT_UNHEALTHY", "EXIT_USAGE", "Failure", "cli", "main"]


@click.group(cls=S3qGroup, context_settings={"help_option_names": ["-h", "--help"],
                                             "max_content_width": 100})
@click.version_option(package_name="s3q", prog_name="s3q")
def cli() -> None:
    """s3q: a crash-safe request queue on S3 (or a local directory).

    Every command takes every setting as a flag (see 's3q config show'); the config file,
    S3Q_* variables and flags are layered in that order. Exit codes: 0 ok, 1 unhealthy /
    not found / aborted, 2 usage or configuration error, 3 store error.
    """


for _command in (worker, submit, status, ls_command, show, requeue, recover, purge,
                 config_group, deploy_group, iam_policy, events_group):
    cli.add_command(_command)


def main() -> None:
    cli.main(prog_name="s3q")
