"""``s3q status``: counts, ages, work in flight, retries, and ``--check``."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

import click

from s3q.cli.errors import EXIT_UNHEALTHY
from s3q.cli.options import App, json_option, setting_options
from s3q.cli.output import age, echo_json, iso, one_line, table
from s3q.layout import State
from s3q.queue import Queue
from s3q.records import CLOCK_MARGIN, Intent
from s3q.registry import fleet_status

#: The window of ``status``'s recent throughput, seconds.
THROUGHPUT_WINDOW = 300.0


@click.command()
@json_option
@click.option("--watch", type=click.FloatRange(min=0.5), metavar="SECONDS",
              help="Redraw every SECONDS until Ctrl-C.")
@click.option("--check", is_flag=True, help="Exit 1 (saying why on stderr) when unhealthy: "
              "an expired lease nobody took over in time (no worker running?), or the "
              "limits below exceeded.")
@click.option("--max-age", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --check: the oldest waiting request may be this old.")
@click.option("--max-failed", type=click.IntRange(min=0), metavar="N",
              help="With --check: at most N requests in failed/.")
@setting_options
def status(as_json: bool, watch: float | None, check: bool, max_age: float | None,
           max_failed: int | None) -> None:
    """Queue health: counts, ages, work in flight, retries.

    Counts per state, the age of the oldest waiting request, requests in flight per worker
    (with their lease age; EXPIRED = its worker stopped renewing it, OVERDUE = and no
    worker took it over in time), requests waiting for a retry, and the number finished in
    the last 5 minutes."""
    if (max_age is not None or max_failed is not None) and not check:
        raise click.UsageError("--max-age and --max-failed need --check")
    if watch is not None and check:
        raise click.UsageError("--watch and --check cannot be combined")
    app = App()
    queue = app.open_queue()
    if watch is not None:
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                data = queue_status(queue, max_age, max_failed)
                if as_json:
                    echo_json(data, compact=True)
                else:
                    click.clear()
                    click.echo(f"{iso(time.time())}  (every {watch:g}s; Ctrl-C to stop)\n")
                    click.echo(render_status(data))
                time.sleep(watch)
        return
    data = queue_status(queue, max_age, max_failed, history=not check)
    if as_json:
        echo_json(data)
    else:
        click.echo(render_status(data))
    if check and data["problems"]:
        for problem in data["problems"]:
            click.echo(f"s3q: unhealthy: {problem}", err=True)
        app.ctx.exit(EXIT_UNHEALTHY)


def queue_status(queue: Queue, max_age: float | None = None, max_failed: int | None = None,
                 *, history: bool = True) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (its ``--json``). Without ``history``
    finish/ is not listed (its count and the throughput are None): with on_finish=move it
    grows by one object per request forever, and a health check must not cost more each
    day."""
    counts, oldest, recent = _scan_states(queue, history=history)
    now = queue.store.now()
    in_flight, retrying = _scan_leases(queue, now)
    oldest_age = None if oldest is None else max(0.0, now - oldest)
    overdue = [r for r in in_flight if r["overdue"]]
    problems = _problems(queue, counts, oldest_age, overdue, max_age=max_age,
                         max_failed=max_failed)
    return {
        "queue": queue.store.url,
        "time": now,
        "counts": counts,
        "oldest_waiting_age": oldest_age,
        "in_flight": in_flight,
        "in_flight_per_worker": dict(Counter(r["worker"] for r in in_flight)),
        "expired": [r["name"] for r in in_flight if r["expired"]],
        "overdue": [r["name"] for r in overdue],
        "retrying": retrying,
        "throughput": None if recent is None else {
            "window_seconds": THROUGHPUT_WINDOW, "finished": recent,
            "per_second": recent / THROUGHPUT_WINDOW},
        "healthy": not problems,
        "problems": problems,
        **fleet_status(queue.store),  # "workers": live and stale ids, "paused"
    }


def _scan_states(queue: Queue, *, history: bool
                 ) -> tuple[dict[str, int | None], float | None, int | None]:
    """Counts per state (as ``Queue.counts()``), in the same listing the Last-Modified of
    the oldest waiting request and the number finished within THROUGHPUT_WINDOW (None, and
    finish/ not listed, without ``history``)."""
    counts: dict[str, int | None] = {}
    oldest: float | None = None
    recent = 0
    for state in State:
        if state is State.FINISH and not history:
            counts[state.value] = None
            continue
        since = queue.store.now() - THROUGHPUT_WINDOW if state is State.FINISH else 0.0
        n = 0
        for info in queue.ls(state):
            n += 1
            if state is State.WAIT and (oldest is None or info.last_modified < oldest):
                oldest = info.last_modified
            elif state is State.FINISH and info.last_modified >= since:
                recent += 1
        counts[state.value] = n
    return counts, oldest, recent if history else None


def _scan_leases(queue: Queue, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(in flight: every lease but ``retry`` ones, by worker; waiting for a retry)."""
    in_flight: list[dict[str, Any]] = []
    retrying: list[dict[str, Any]] = []
    for lease, info in queue.leases():
        if lease.intent is Intent.RETRY:
            retrying.append({"name": lease.name, "attempts": lease.attempts,
                             "not_before": lease.not_before,
                             "due_in": max(0.0, lease.not_before - now),
                             "error": (lease.error or {}).get("message")})
        else:
            lease_age = now - info.last_modified
            in_flight.append({"name": lease.name, "worker": lease.worker,
                              "intent": lease.intent.value, "attempt": lease.attempt,
                              "gen": lease.gen, "lease_age": lease_age,
                              "expired": queue.is_expired(info, now),
                              "overdue": queue.is_overdue(info, now)})
    in_flight.sort(key=lambda r: (r["worker"], r["name"]))
    return in_flight, retrying


def _problems(queue: Queue, counts: dict[str, int | None], oldest_age: float | None,
              overdue: list[dict[str, Any]], *, max_age: float | None,
              max_failed: int | None) -> list[str]:
    """Expired leases are normal for a moment (a server died; a live worker takes its work
    over within two scan intervals); overdue ones mean no worker is taking anything over."""
    problems: list[str] = []
    if overdue:
        listed = ", ".join(f"{r['name']} ({r['worker'] or 'nobody'}, {age(r['lease_age'])})"
                           for r in overdue[:5])
        more = f" and {len(overdue) - 5} more" if len(overdue) > 5 else ""
        cfg = queue.config
        problems.append(
            f"{len(overdue)} expired lease(s) not taken over in time: not renewed for more "
            f"than lease_ttl={cfg.lease_ttl:g}s + {CLOCK_MARGIN:g}s + two scan intervals of "
            f"{cfg.effective_scan_interval:g}s (dead workers, and no worker running?): "
            f"{listed}{more}")
    if max_age is not None and oldest_age is not None and oldest_age > max_age:
        problems.append(f"the oldest waiting request is {age(oldest_age)} old "
                        f"(--max-age {max_age:g}s)")
    failed = counts["failed"] or 0  # always listed
    if max_failed is not None and failed > max_failed:
        problems.append(f"{failed} request(s) in failed/ (--max-failed {max_failed})")
    return problems


def fleet_lines(data: dict[str, Any]) -> list[str]:
    """The workers line (live and stale, from the registry) and PAUSED when paused."""
    live, stale = data["workers"]["live"], data["workers"]["stale"]
    lines = [f"workers   {len(live)} live   {len(stale)} stale"
             + (f" ({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''})" if stale else "")]
    if data["paused"] is not None:
        p = data["paused"]
        lines.append(f"PAUSED    since {iso(p['since'])} by {p['by'] or '?'}"
                     + (f": {one_line(p['reason'])}" if p["reason"] else "")
                     + " (workers claim nothing; s3q resume)")
    return lines


def render_status(data: dict[str, Any]) -> str:
    counts = data["counts"]
    if data["throughput"] is None:
        finished_line = "finished  - (finish/ is not listed by --check)"
    else:
        finished = data["throughput"]["finished"]
        finished_line = (f"finished  {finished} in the last {THROUGHPUT_WINDOW / 60:g} min "
                         f"({finished * 60 / THROUGHPUT_WINDOW:.1f}/min)")
    lines = [
        f"queue     {data['queue']}",
        "counts    " + "   ".join(f"{k} {'-' if v is None else v}" for k, v in counts.items()),
        f"oldest    {age(data['oldest_waiting_age'])} waiting"
        if data["oldest_waiting_age"] is not None else "oldest    - (nothing waiting)",
        finished_line,
        *fleet_lines(data),
    ]
    if data["in_flight"]:
        per_worker = ", ".join(f"{w or 'nobody'}: {n}"
                               for w, n in data["in_flight_per_worker"].items())
        lines += ["", f"in flight: {len(data['in_flight'])} ({per_worker})", table(
            ["WORKER", "REQUEST", "ATTEMPT", "GEN", "INTENT", "LEASE AGE", ""],
            [[r["worker"] or "(nobody)", r["name"], r["attempt"], r["gen"], r["intent"],
              age(r["lease_age"]),
              "OVERDUE" if r["overdue"] else "EXPIRED" if r["expired"] else ""]
             for r in data["in_flight"]])]
    if data["retrying"]:
        lines += ["", f"waiting for a retry: {len(data['retrying'])}", table(
            ["REQUEST", "ATTEMPTS", "DUE IN", "LAST ERROR"],
            [[r["name"], r["attempts"], age(r["due_in"]), one_line(r["error"] or "")]
             for r in data["retrying"]])]
    if data["problems"]:
        lines += ["", *(f"problem: {p}" for p in data["problems"])]
    return "\n".join(lines)
