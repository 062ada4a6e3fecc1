"""``s3q doctor``: probe the queue's store for what s3q relies on (docs/PROTOCOL.md §1), and
the worker's start-up check (:func:`require_store`)."""

from __future__ import annotations

import logging

import click

from s3q.cli.errors import EXIT_STORE, EXIT_UNHEALTHY, Failure
from s3q.cli.options import App, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json
from s3q.doctor import Report, iso, probe
from s3q.queue import Queue
from s3q.store import StoreError
from s3q.storecheck import check_store

log = logging.getLogger("s3q.cli")  # not __name__: the logger name is part of the logs


@click.command(cls=S3qCommand, examples=[
    "s3q doctor",
    "s3q doctor --json | jq '.checks[] | select(.status != \"OK\")'",
    "S3Q_QUEUE=s3://new-bucket/requests s3q doctor   # before moving a fleet to a new store"])
@json_option
@setting_options()
def doctor(as_json: bool) -> None:
    """Probe the queue's store: does it give every guarantee s3q relies on?

    Writes throwaway objects under .s3q/probe/ (removed afterwards) and prints one row per
    guarantee and per permission a worker needs: OK, MISSING or UNKNOWN, what was
    observed, what it protects and what to do. Exits 0 when every required row is OK, 1
    otherwise (a worker refuses to start on a store with a required guarantee MISSING), 3
    when the store cannot be reached."""
    app = App()
    queue = app.open_queue()
    report = probe(queue.store)
    if as_json:
        data = report.to_json()  # the cached form: times also as epoch seconds
        echo_json("doctor", {k: v for k, v in data.items()
                             if k not in ("schema", "started", "finished")})
    else:
        click.echo(render(report))
    if not report.ok:
        app.ctx.exit(EXIT_UNHEALTHY)


def render(report: Report) -> str:
    """The report as text: one block per row, the verdict last."""
    width = max(len(c.title) for c in report.checks)
    lines = [f"s3q doctor: {report.store} (s3q {report.s3q_version}, {iso(report.started)}, "
             f"{report.finished - report.started:.1f} s)", ""]
    for c in report.checks:
        lines.append(f"{c.status:<8} {c.title:<{width}}  {c.observed}")
        lines.append(f"{'':<8} {'':<{width}}  protects: {c.protects}")
        if c.todo:
            lines.append(f"{'':<8} {'':<{width}}  to do: {c.todo}")
    lines.append("")
    if report.ok:
        lines.append("verdict: OK: every guarantee a worker needs holds")
    else:
        lines.append(f"verdict: NOT SAFE: {len(report.failures)} required not shown to hold: "
                     + ", ".join(f"{c.title} ({c.status})" for c in report.failures))
    return "\n".join(lines)


def require_store(queue: Queue, max_age: float) -> None:
    """The worker's start-up check (:func:`s3q.storecheck.check_store`): refuse, exit 2, on
    a store that lacks a required guarantee; warn about the ones that could not be decided,
    and about a missing one that is not required but has no fallback; else tell the store
    what it guarantees."""
    try:
        found = check_store(queue.store, max_age=max_age)
    except StoreError as e:
        raise Failure(f"cannot check the store at {queue.store.url}: {e}", EXIT_STORE) from None
    if found.report is None:
        return
    if found.missing:
        raise Failure(found.refusal())
    for c in found.unknown:
        log.warning("store check: %s could not be decided: %s", c.title, c.observed,
                    extra={"event": "store_check_unknown", "check": c.name})
    for c in found.at_risk:
        log.warning("store check: %s is MISSING (%s): %s. To do: %s", c.title, c.observed,
                    c.protects, c.todo, extra={"event": "store_check_at_risk", "check": c.name})
    log.info("store checked", extra={"event": "store_checked", "cached": found.cached,
                                     "capabilities": found.report.capabilities.to_dict()})
