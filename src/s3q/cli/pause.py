"""``s3q pause`` / ``s3q resume``: stop and restart claiming across the fleet."""

from __future__ import annotations

import getpass
import logging
import socket

import click

from s3q.cli.options import App, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json, iso
from s3q.pause import pause as pause_queue
from s3q.pause import resume as resume_queue

log = logging.getLogger("s3q.cli")


def operator() -> str:
    """user@host, for the record of who paused."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


@click.command(cls=S3qCommand, examples=[
    's3q pause --reason "migrating the database"', "s3q status   # shows PAUSED, by whom, why"])
@click.option("--reason", default="", metavar="TEXT", help="Why (shown by status and the "
              "dashboard).")
@json_option
@setting_options()
def pause(reason: str, as_json: bool) -> None:
    """Pause the queue: workers claim nothing more.

    Every worker stops claiming within 5 s (at its next poll when idle); the jobs it
    runs finish normally. Submitting still works. 's3q resume' undoes it."""
    queue = App().open_queue()
    state = pause_queue(queue.store, by=operator(), reason=reason)
    log.warning("queue paused by %s", state.by, extra={"event": "queue_paused",
                                                        "by": state.by, "reason": reason})
    if as_json:
        echo_json("pause", {"paused": True, **state.as_dict(), "at": iso(state.at),
                            "since": iso(state.since)})
    else:
        click.echo(f"paused {queue.store.url} (workers stop claiming at their next poll)")


@click.command(cls=S3qCommand, examples=["s3q resume"])
@json_option
@setting_options()
def resume(as_json: bool) -> None:
    """Resume a paused queue: workers claim again at their next poll."""
    queue = App().open_queue()
    was = resume_queue(queue.store)
    log.warning("queue resumed by %s", operator(), extra={"event": "queue_resumed",
                                                          "was_paused": was})
    if as_json:
        echo_json("resume", {"paused": False, "was_paused": was})
    else:
        click.echo(f"resumed {queue.store.url}" if was else "the queue was not paused")
