"""``s3q ls`` and ``s3q show``: look at requests."""

from __future__ import annotations

import dataclasses
from itertools import islice
from typing import Any

import click

from s3q import layout
from s3q.cli.options import STATES, App, json_option, setting_options
from s3q.cli.output import age, echo_json, iso, object_fields, one_line, table
from s3q.layout import State
from s3q.queue import Queue
from s3q.records import Intent, Lease, RecordError
from s3q.store import NotFound, validate_key


@click.command(name="ls")
@click.argument("state", type=STATES, metavar="STATE")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="List at most N.")
@json_option
@setting_options
def ls_command(state: str, limit: int | None, as_json: bool) -> None:
    """List the requests in one STATE (wait, processing, finish, failed)."""
    queue = App().open_queue()
    infos = list(islice(queue.ls(state), limit))
    if as_json:
        echo_json([{"name": i.key, **object_fields(i)} for i in infos])
    elif infos:
        click.echo(table(["NAME", "SIZE", "MODIFIED"],
                         [[i.key, i.size, iso(i.last_modified)] for i in infos]))


@click.command()
@click.argument("name")
@json_option
@setting_options
def show(name: str, as_json: bool) -> None:
    """Where a request is and what happened to it.

    Its state(s), lease, error record and result. Exits 1 if NAME is in no state and has no
    lease."""
    queue = App().open_queue()
    data = describe_request(queue, validate_key(name))
    if as_json:
        echo_json(data)
    else:
        click.echo(render_request(data))
    if not data["states"] and data["lease"] is None:
        if not as_json:
            click.echo(f"s3q: {name} is not in the queue", err=True)
        click.get_current_context().exit(1)


def describe_request(queue: Queue, name: str) -> dict[str, Any]:
    states = []
    for state in State:
        try:
            info = queue.store.head(layout.key(state.prefix, name))
        except NotFound:
            continue
        states.append({"state": state.value, **object_fields(info)})
    found = queue.lease(name)
    lease = None
    if found is not None:
        record, info = found
        lease = {**lease_fields(record), "age": queue.store.now() - info.last_modified}
    try:
        error_record = queue.error_record(name)
        error: dict[str, Any] | None = (None if error_record is None
                                        else dataclasses.asdict(error_record))
    except RecordError as e:
        error = {"unreadable": str(e)}
    result = queue.result(name)
    return {
        "name": name,
        "states": states,
        "lease": lease,
        "error": error,
        "result": None if result is None else {
            "size": len(result), "preview": result[:200].decode("utf-8", "replace"),
            "truncated": len(result) > 200},
    }


def lease_fields(lease: Lease) -> dict[str, Any]:
    fields = {"worker": lease.worker, "gen": lease.gen, "attempt": lease.attempt,
              "intent": lease.intent.value}
    if lease.intent is Intent.RETRY:
        fields.update(attempts=lease.attempts, not_before=lease.not_before)
    if lease.error:
        fields["error"] = lease.error.get("message")
    return fields


def render_request(data: dict[str, Any]) -> str:
    where = "; ".join(f"{s['state']} ({s['size']} bytes, {s['last_modified']})"
                      for s in data["states"]) or "nowhere"
    rows = [("name", data["name"]), ("state", where)]
    lease = data["lease"]
    if lease is not None:
        text = (f"{lease['intent']} by {lease['worker'] or '(nobody)'}, gen {lease['gen']}, "
                f"attempt {lease['attempt']}, written {age(lease['age'])} ago")
        if lease["intent"] == Intent.RETRY.value:
            text += (f"; {lease['attempts']} attempt(s) made, next not before "
                     f"{iso(lease['not_before'])}")
        rows.append(("lease", text))
        if lease.get("error"):
            rows.append(("last error", one_line(lease["error"], 400)))
    error = data["error"]
    if error is not None and "unreadable" in error:
        rows.append(("error", f"(unreadable record: {error['unreadable']})"))
    elif error is not None:
        err = error.get("error", {})
        rows += [("failed", f"after {error['attempts']} attempt(s), on {error['worker']}, at "
                            f"{iso(error['failed_at'])}"),
                 ("error", one_line(f"{err.get('type', 'Error')}: {err.get('message', '')}",
                                    400))]
    result = data["result"]
    if result is not None:
        rows.append(("result", f"{result['size']} bytes: "
                               f"{one_line(result['preview'], 200)}"
                               f"{' …' if result['truncated'] else ''}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
