"""``s3q``: the operator's command line.

    s3q worker --exec CMD | --handler module:func   run a worker (until stopped, or --burst)
    s3q submit FILES...                              put requests into wait/
    s3q status [--check]                             counts, oldest waiting, in flight, health
    s3q doctor [--json]                              probe the store for what s3q relies on
    s3q ls STATE / s3q show NAME / s3q result NAME   look at requests
    s3q requeue / recover / purge                    operator actions
    s3q config show                                  the effective settings and their sources
    s3q deploy init [DIR] / s3q iam-policy           EC2: CodeDeploy bundle, IAM policy
    s3q events setup                                 S3 → SQS notifications for wait/

Every non-secret setting of :data:`s3q.settings.SETTINGS` is a ``--flag`` of every command
(plus ``--config PATH``), before or after the command's name. Exit codes: 0 ok; 1 unhealthy
(``status --check``), not found, not done (``requeue NAME``, or ``purge``, that skipped
requests; ``recover`` whose takeover of one outlasted its lease), or aborted; 2 usage or
configuration error; 3 store error (unreachable, denied, no such queue; ``requeue``,
``recover`` and ``purge`` first say what they did and did not do). Errors are one line on
stderr, ``s3q: error: <message>``.

The modules: :mod:`~s3q.cli.errors` (exit codes, error → exit code), :mod:`~s3q.cli.options`
(settings as flags, the config, the queue), :mod:`~s3q.cli.output` (JSON, tables, prompts),
and one per command family: :mod:`~s3q.cli.worker`, :mod:`~s3q.cli.submit`,
:mod:`~s3q.cli.status`, :mod:`~s3q.cli.show` (ls, show, result) and :mod:`~s3q.cli.admin` (requeue,
recover, purge, config show), :mod:`~s3q.cli.ec2` (deploy init, iam-policy),
:mod:`~s3q.cli.doctor` (doctor, and the worker's start-up check of its store),
:mod:`~s3q.cli.events` (events setup).
"""

from __future__ import annotations

import click

from s3q.cli.admin import config_group, purge, recover, requeue
from s3q.cli.dashboard import dashboard
from s3q.cli.doctor import doctor
from s3q.cli.ec2 import deploy_group, iam_policy
from s3q.cli.errors import EXIT_STORE, EXIT_UNHEALTHY, EXIT_USAGE, Failure, S3qGroup
from s3q.cli.events import events_group
from s3q.cli.exporter import exporter
from s3q.cli.options import format_examples, format_option_groups, global_options
from s3q.cli.pause import pause, resume
from s3q.cli.show import ls_command, result_command, show
from s3q.cli.status import status
from s3q.cli.submit import submit
from s3q.cli.worker import worker
from s3q.cli.workers import workers

__all__ = ["EXIT_STORE", "EXIT_UNHEALTHY", "EXIT_USAGE", "Failure", "cli", "main"]


class _Cli(S3qGroup):
    """The group's help: global options, commands, examples."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_option_groups(self, ctx, formatter, "Global settings")
        self.format_commands(ctx, formatter)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_examples(EXAMPLES, formatter)


EXAMPLES = (
    "s3q --queue s3://bucket/prefix status",
    "s3q --config /etc/s3q/s3q.toml worker --exec 'python process.py {path}'",
    "s3q ls failed && s3q show NAME && s3q requeue --all",
)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"],
                                         "max_content_width": 100})
@click.version_option(package_name="s3q", prog_name="s3q")
@global_options
def cli() -> None:
    """s3q: a crash-safe request queue on S3 (or a local directory).

    Settings come from the config file, S3Q_* variables and flags, in that order; every
    setting is a flag of every command, before or after the command's name ('s3q COMMAND
    --help' for its own). Exit codes: 0 ok, 1 unhealthy / not found / not done (requeue
    NAME or purge skipped requests, a takeover of recover was interrupted) / aborted, 2
    usage or configuration error, 3 store error (unreachable, denied, no such queue;
    requeue, recover and purge first print what they did, what failed and what they did
    not attempt).
    """


for _command in (worker, submit, status, ls_command, show, result_command, requeue, recover,
                 purge, config_group, deploy_group, iam_policy, doctor, events_group):
    cli.add_command(_command)
cli.add_command(workers)
cli.add_command(pause)
cli.add_command(resume)
cli.add_command(dashboard)
cli.add_command(exporter)


def main() -> None:
    cli.main(prog_name="s3q")
