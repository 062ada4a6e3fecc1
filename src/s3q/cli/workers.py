"""``s3q workers``: the worker registry (``.s3q/workers/``), live and stale."""

from __future__ import annotations

from typing import Any

import click

from s3q.cli.options import App, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json, iso, table
from s3q.durations import age
from s3q.registry import Entry, Registry


@click.command(cls=S3qCommand, examples=["s3q workers", "s3q workers --json",
                                         "s3q workers --prune   # forget dead workers"])
@click.option("--prune", is_flag=True, help="Delete the records of stale workers (dead "
              "ones: a worker that comes back writes its record again).")
@json_option
@setting_options()
def workers(prune: bool, as_json: bool) -> None:
    """The workers of this queue: host, id, version, slots busy/free, heartbeat.

    Every running worker rewrites its record once a minute and removes it when it stops
    cleanly; a record not rewritten for 2.5 heartbeat intervals is STALE (a killed worker,
    a lost server)."""
    queue = App().open_queue()
    registry = Registry(queue.store)
    entries = registry.records()
    pruned = []
    if prune:
        for e in entries:
            if e.stale:
                registry.remove(e.id, e.info.etag)
                pruned.append(e.id)
    if as_json:
        echo_json("workers", {"workers": [worker_fields(e) for e in entries],
                              "pruned": pruned})
        return
    if entries:
        click.echo(table(
            ["WORKER", "HOST", "VERSION", "BUSY", "STARTED", "HEARTBEAT", "DONE", "FAILED", ""],
            [[e.id, r.host if r else "?", r.version if r else "?",
              f"{r.busy}/{r.slots}" if r else "?", iso(r.started) if r else "?",
              f"{age(e.age)} ago", r.counters.get("completed", 0) if r else "?",
              r.counters.get("failed", 0) if r else "?",
              ("STALE" if e.stale else "") + (" paused" if r and r.paused else "")]
             for e in entries for r in [e.record]]))
    live = sum(not e.stale for e in entries)
    click.echo(f"{live} live, {len(entries) - live} stale")
    for worker_id in pruned:
        click.echo(f"pruned {worker_id}")


def worker_fields(e: Entry) -> dict[str, Any]:
    """One worker as ``--json`` (and the dashboard) show it."""
    r = e.record
    fields: dict[str, Any] = {"id": e.id, "stale": e.stale, "heartbeat_age": e.age,
                              "last_modified": iso(e.info.last_modified)}
    if r is not None:
        fields.update(host=r.host, pid=r.pid, version=r.version, slots=r.slots, busy=r.busy,
                      free=max(0, r.slots - r.busy), paused=r.paused, interval=r.interval,
                      started=iso(r.started), heartbeat=iso(r.heartbeat), counters=r.counters)
    return fields
