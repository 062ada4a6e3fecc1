"""``s3q ls``, ``s3q show`` and ``s3q result``: look at requests."""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import click

from s3q import layout
from s3q.cli.errors import EXIT_UNHEALTHY, Failure
from s3q.cli.options import STATES, App, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json, iso, object_fields, table
from s3q.context import one_line
from s3q.durations import age
from s3q.layout import State
from s3q.queue import Queue
from s3q.records import Intent, Lease, RecordError
from s3q.store import NotFound, ObjectInfo, validate_key

#: Lines of a traceback ``show`` prints (the end, where the error is).
TRACEBACK_TAIL = 15
#: Bytes of a result ``show`` previews (``s3q result`` writes all of it).
PREVIEW = 200


@click.command(name="ls", cls=S3qCommand, examples=[
    "s3q ls failed                      # with each request's error",
    "s3q ls wait --limit 20",
    "s3q --queue s3://bucket/prefix ls processing --json"])
@click.argument("state", type=STATES, metavar="STATE")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="List at most N.")
@json_option
@setting_options("filter")
def ls_command(state: str, limit: int | None, as_json: bool) -> None:
    """List the requests in one STATE (wait, processing, finish, failed).

    For failed/, also each request's attempts and error (from its error record)."""
    app = App()
    queue = app.open_queue()
    infos = list(islice(queue.ls(state), limit))
    errors = (error_summaries(queue, infos, app.config.concurrency)
              if state == State.FAILED else None)
    if as_json:
        echo_json("ls", {"state": state, "requests": [
            {"name": i.key, **object_fields(i),
             **({"error": errors[n]} if errors is not None else {})}
            for n, i in enumerate(infos)]})
    elif errors is not None and infos:
        click.echo(table(["NAME", "SIZE", "FAILED", "ATTEMPTS", "ERROR"], [
            [i.key, i.size, (e or {}).get("failed_at") or iso(i.last_modified),
             (e or {}).get("attempts", "-"), one_line(_error_text(e), 100)]
            for i, e in zip(infos, errors, strict=True)]))
    elif infos:
        click.echo(table(["NAME", "SIZE", "MODIFIED"],
                         [[i.key, i.size, iso(i.last_modified)] for i in infos]))


def error_summaries(queue: Queue, infos: list[ObjectInfo],
                    threads: int) -> list[dict[str, Any] | None]:
    """The error record of each failed request, short (read ``threads`` at a time)."""
    def one(info: ObjectInfo) -> dict[str, Any] | None:
        try:
            record = queue.error_record(info.key)
        except RecordError as e:
            return {"unreadable": str(e)}
        if record is None:
            return None
        return {"type": record.error.get("type", "Error"),
                "message": record.error.get("message", ""), "attempts": record.attempts,
                "worker": record.worker, "failed_at": iso(record.failed_at)}

    with ThreadPoolExecutor(max_workers=max(1, min(threads, 16))) as pool:
        return list(pool.map(one, infos))


def _error_text(error: dict[str, Any] | None) -> str:
    if error is None:
        return "(no error record)"
    if "unreadable" in error:
        return f"(unreadable error record: {error['unreadable']})"
    return f"{error['type']}: {error['message']}"


# ------------------------------------------------------------------------ show

@click.command(cls=S3qCommand, examples=[
    "s3q show 2026/11/a_request.json",
    "s3q show a_request.json --json | jq .error.error.traceback"])
@click.argument("name")
@json_option
@setting_options()
def show(name: str, as_json: bool) -> None:
    """Where a request is and what happened to it.

    Its state(s), lease, error (with the end of its traceback) and a preview of its result
    ('s3q result NAME' writes all of it). Exits 1 if NAME is in no state and has no lease."""
    queue = App().open_queue()
    data = describe_request(queue, validate_key(name))
    if as_json:
        echo_json("show", data)
    else:
        click.echo(render_request(data))
    if not data["states"] and data["lease"] is None:
        if not as_json:
            click.echo(f"s3q: {name} is not in the queue", err=True)
        click.get_current_context().exit(EXIT_UNHEALTHY)


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
        error: dict[str, Any] | None = None
        if error_record is not None:
            error = dataclasses.asdict(error_record)
            error["failed_at"] = iso(error_record.failed_at)
            error["error"] = _error_fields(error_record.error)
    except RecordError as e:
        error = {"unreadable": str(e)}
    result = queue.result(name)
    return {
        "name": name,
        "states": states,
        "lease": lease,
        "error": error,
        "result": None if result is None else {
            "size": len(result), "preview": result[:PREVIEW].decode("utf-8", "replace"),
            "truncated": len(result) > PREVIEW},
    }


def _error_fields(error: dict[str, Any]) -> dict[str, Any]:
    """An error of a record, its time in ISO 8601."""
    at = error.get("at")
    return {**error, "at": iso(at) if isinstance(at, int | float) else at}


def lease_fields(lease: Lease) -> dict[str, Any]:
    fields: dict[str, Any] = {"worker": lease.worker, "gen": lease.gen,
                              "attempt": lease.attempt, "intent": lease.intent.value}
    if lease.intent is Intent.RETRY:
        fields.update(attempts=lease.attempts, not_before=iso(lease.not_before))
    if lease.error:
        fields["error"] = lease.error.get("message")
        fields["traceback"] = lease.error.get("traceback")
    return fields


def traceback_tail(text: str | None, lines: int = TRACEBACK_TAIL) -> list[str]:
    if not text:
        return []
    all_lines = text.rstrip().splitlines()
    tail = all_lines[-lines:]
    return (["…"] if len(all_lines) > lines else []) + tail


def render_request(data: dict[str, Any]) -> str:
    where = "; ".join(f"{s['state']} ({s['size']} bytes, {s['last_modified']})"
                      for s in data["states"]) or "nowhere"
    rows = [("name", data["name"]), ("state", where)]
    trace: list[str] = []
    lease = data["lease"]
    if lease is not None:
        text = (f"{lease['intent']} by {lease['worker'] or '(nobody)'}, gen {lease['gen']}, "
                f"attempt {lease['attempt']}, written {age(lease['age'])} ago")
        if lease["intent"] == Intent.RETRY.value:
            text += (f"; {lease['attempts']} attempt(s) made, next not before "
                     f"{lease['not_before']}")
        rows.append(("lease", text))
        if lease.get("error"):
            rows.append(("last error", one_line(lease["error"], 400)))
            trace = traceback_tail(lease.get("traceback"))
    error = data["error"]
    if error is not None and "unreadable" in error:
        rows.append(("error", f"(unreadable record: {error['unreadable']})"))
    elif error is not None:
        err = error.get("error", {})
        rows += [("failed", f"after {error['attempts']} attempt(s), on {error['worker']}, at "
                            f"{error['failed_at']}"),
                 ("error", one_line(f"{err.get('type', 'Error')}: {err.get('message', '')}",
                                    400))]
        trace = traceback_tail(err.get("traceback"))
    result = data["result"]
    if result is not None:
        more = " … ('s3q result NAME' for all of it)" if result["truncated"] else ""
        rows.append(("result", f"{result['size']} bytes: "
                               f"{one_line(result['preview'], PREVIEW)}{more}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if trace:
        lines += ["", "traceback (the end):", *(f"  {line}" for line in trace)]
    return "\n".join(lines)


# ------------------------------------------------------------------------ result

@click.command(name="result", cls=S3qCommand, examples=[
    "s3q result 2026/11/a_request.json > a.out",
    "s3q result 2026/11/a_request.json -o a.out"])
@click.argument("name")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Write the result to FILE (- is standard output).")
@setting_options()
def result_command(name: str, output: str) -> None:
    """Write the whole result a request's handler returned, byte for byte.

    Exits 1 when NAME has no result (not finished, nothing returned, or purged)."""
    queue = App().open_queue()
    data = queue.result(validate_key(name))
    if data is None:
        raise Failure(f"{name} has no result (not finished yet, its handler returned nothing, "
                      "or it was purged)", EXIT_UNHEALTHY)
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as e:
        raise Failure(f"{output}: cannot write: {e.strerror or e}") from None
    click.echo(f"wrote {len(data)} bytes to {output}", err=True)
