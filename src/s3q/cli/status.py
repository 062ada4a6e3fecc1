"""``s3q status``: counts, ages, work in flight, retries, and ``--check``."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from s3q.breaker import breaker_records, open_problems
from s3q.cli.errors import EXIT_UNHEALTHY
from s3q.cli.options import App, Duration, S3qCommand, json_option, setting_options
from s3q.cli.output import echo_json, iso, table
from s3q.context import never_claimed, one_line
from s3q.durations import age
from s3q.layout import State
from s3q.leases import unreadable_problem
from s3q.queue import Queue
from s3q.records import Intent
from s3q.registry import Registry, fleet_status, longer_leases, longer_leases_problem
from s3q.store import LeftOut
from s3q.takeover import kept_corrupt, kept_problem

#: The window of ``status``'s recent throughput, seconds.
THROUGHPUT_WINDOW = 300.0


@click.command(cls=S3qCommand, examples=[
    "s3q status",
    "s3q status --watch            # redraw every 2s (--watch 10s: every 10s)",
    "s3q status --check --max-age 15m --max-failed 0   # for monitoring"])
@json_option
@click.option("--watch", type=Duration(), is_flag=False, flag_value=2.0, metavar="[EVERY]",
              help="Redraw every EVERY (default 2s) until Ctrl-C.")
@click.option("--check", is_flag=True, help="Exit 1 (saying why on stderr) when unhealthy: "
              "an expired lease nobody took over in time (no worker scanning), a worker's "
              "circuit breaker open, or the limits below exceeded.")
@click.option("--max-age", type=Duration(), metavar="AGE",
              help="With --check: the oldest waiting request may be this old (e.g. 15m).")
@click.option("--max-failed", type=click.IntRange(min=0), metavar="N",
              help="With --check: at most N requests in failed/.")
@setting_options("lease_ttl")
def status(as_json: bool, watch: float | None, check: bool, max_age: float | None,
           max_failed: int | None) -> None:
    """Queue health: where the queue is, counts, ages, work in flight, retries.

    Counts per state, the age of the oldest waiting request, requests in flight per worker
    (with their lease age; EXPIRED = its worker stopped renewing it, OVERDUE = and no
    worker took it over in time), requests waiting for a retry, workers whose circuit
    breaker is open, and the number finished in the last 5 minutes. A queue that does not
    exist is an error (exit 3), never created."""
    if (max_age is not None or max_failed is not None) and not check:
        raise click.UsageError("--max-age and --max-failed need --check")
    if watch is not None and check:
        raise click.UsageError("--watch and --check cannot be combined")
    if watch is not None and watch < 0.5:
        raise click.UsageError("--watch: redraw at most twice a second (0.5s or more)")
    report(App(), as_json=as_json, watch=watch, check=check, max_age=max_age,
           max_failed=max_failed)


def report(app: App, *, as_json: bool = False, watch: float | None = None,
           check: bool = False, max_age: float | None = None,
           max_failed: int | None = None) -> None:
    """What ``status`` prints (and, with ``check``, its exit 1 when unhealthy), with
    ``app``'s settings: the command's, or a worker command line's (``s3q worker ...
    --check-queue``, which the ValidateService hook runs)."""
    queue = app.open_queue()
    origin = {"queue_source": app.queue_source, "profile": app.config.profile}
    if watch is not None:
        watch_status(queue, origin, watch, as_json=as_json)
        return
    data = {**queue_status(queue, max_age, max_failed, history=not check), **origin}
    if as_json:
        echo_json("status", data)
    else:
        click.echo(render_status(data))
    if check and data["problems"]:
        for problem in data["problems"]:
            click.echo(f"s3q: unhealthy: {problem}", err=True)
        app.ctx.exit(EXIT_UNHEALTHY)


def watch_status(queue: Queue, origin: dict[str, Any], every: float, *, as_json: bool) -> None:
    """Redraw in place on a terminal (rich's Live); elsewhere print each status in turn
    (JSON: one line each)."""
    live = None if as_json or not sys.stdout.isatty() else Live(
        auto_refresh=False, console=Console(highlight=False), screen=False)
    registry = Registry(queue.store)  # (reads again only the worker records that changed)
    with contextlib.suppress(KeyboardInterrupt), live or contextlib.nullcontext():
        while True:
            data = {**queue_status(queue, registry=registry), **origin}
            if as_json:
                echo_json("status", data, compact=True)
            else:
                text = (f"{iso(time.time())}  (every {every:g}s; Ctrl-C to stop)\n\n"
                        f"{render_status(data)}")
                if live is not None:
                    live.update(Text(text), refresh=True)
                else:
                    click.echo(text + "\n")
            time.sleep(every)


def queue_status(queue: Queue, max_age: float | None = None, max_failed: int | None = None,
                 *, history: bool = True, registry: Registry | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (its ``--json``). Without ``history``
    finish/ is not listed (its count and the throughput are None): with on_finish=move it
    grows by one object per request forever, and a health check must not cost more each
    day."""
    counts, oldest, recent, too_long, unusable, left_out = _scan_states(queue, history=history)
    now = queue.store.now()
    role = queue.scanner()  # (a live scanner of a longer scan interval: not overdue sooner)
    every = role.scans_every if role is not None else 0.0
    unreadable: list[tuple[str, str]] = []  # (leases whose GET is denied)
    kept: list[tuple[str, str]] = []  # (corrupt leases the takeover leaves: not overdue)
    in_flight, retrying = _scan_leases(queue, now, every, unreadable, kept)
    oldest_age = None if oldest is None else max(0.0, now - oldest)
    overdue = [r for r in in_flight if r["overdue"]]
    breaker_seen = list(breaker_records(queue))
    breakers = _breakers(breaker_seen, now)
    # one reading of the registry: each worker judged stale by its own heartbeat interval
    workers = (registry or Registry(queue.store)).records()
    fleet = fleet_status(queue.store, workers)
    # paused, no worker takes anything over (deliberately): overdue leases are no problem
    problems = _problems(queue, counts, oldest_age, [] if fleet["paused"] else overdue,
                         max_age=max_age, max_failed=max_failed, every=every)
    problems += never_claimed(queue.store.max_key_bytes, too_long, unusable, left_out)
    if unreadable:
        problems.append(unreadable_problem(unreadable))
    if kept:
        problems.append(kept_problem(kept))
    longer = longer_leases(workers, queue.config.lease_ttl,
                           {r["worker"] for r in in_flight if r["lease_ttl"] is None})
    if longer:  # leases not telling their lease_ttl are judged by a shorter one than theirs
        problems.append(longer_leases_problem(longer, queue.config.lease_ttl))
    problems += open_problems(breaker_seen, now)
    return {
        "queue": queue.store.url,
        "time": iso(now),
        "counts": counts,
        "oldest_waiting_age": oldest_age,
        "in_flight": in_flight,
        "in_flight_per_worker": dict(Counter(r["worker"] for r in in_flight)),
        "expired": [r["name"] for r in in_flight if r["expired"]],
        "overdue": [r["name"] for r in overdue],
        "retrying": retrying,
        "breakers": [{k: v for k, v in b.items() if k != "since"} for b in breakers],
        "scanner": None if role is None else {
            "worker": role.worker or None,
            "since_last_scan": None if role.error else role.since,
            "every": role.every or None, "live": role.live, "error": role.error},
        "throughput": None if recent is None else {
            "window_seconds": THROUGHPUT_WINDOW, "finished": recent,
            "per_second": recent / THROUGHPUT_WINDOW},
        "healthy": not problems,
        "problems": problems,
        **fleet,  # "workers": live and stale ids, "paused"
    }


def _scan_states(queue: Queue, *, history: bool) -> tuple[
        dict[str, int | None], float | None, int | None, list[str], list[str], list[LeftOut]]:
    """Counts per state (as ``Queue.counts()``), in the same listing the Last-Modified of
    the oldest waiting request, the number finished within THROUGHPUT_WINDOW (None, and
    finish/ not listed, without ``history``), the waiting names too long to claim, those
    in wait/ that match the filter but are no usable keys, and what the store could not
    list in wait/ at all (a local store's unreadable files, names no key can hold)."""
    counts: dict[str, int | None] = {}
    oldest: float | None = None
    recent = 0
    too_long: list[str] = []
    unusable: list[str] = []
    left_out: list[LeftOut] = []
    for state in State:
        if state is State.FINISH and not history:
            counts[state.value] = None
            continue
        since = queue.store.now() - THROUGHPUT_WINDOW if state is State.FINISH else 0.0
        n = 0
        wait = state is State.WAIT
        for info in queue.ls(state, unusable if wait else None, left_out if wait else None):
            n += 1
            if state is State.WAIT and not queue.ctx.fits(info.key):
                too_long.append(info.key)
            if state is State.WAIT and (oldest is None or info.last_modified < oldest):
                oldest = info.last_modified
            elif state is State.FINISH and info.last_modified >= since:
                recent += 1
        counts[state.value] = n
    return counts, oldest, recent if history else None, too_long, unusable, left_out


def _scan_leases(queue: Queue, now: float, every: float, unreadable: list[tuple[str, str]],
                 kept: list[tuple[str, str]]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(in flight: every lease but ``retry`` ones, by worker; waiting for a retry)."""
    in_flight: list[dict[str, Any]] = []
    retrying: list[dict[str, Any]] = []
    for lease, info in queue.leases(unreadable=unreadable):
        if lease.intent is Intent.RETRY:
            retrying.append({"name": lease.name, "attempts": lease.attempts,
                             "not_before": iso(lease.not_before),
                             "due_in": max(0.0, lease.not_before - now),
                             "error": (lease.error or {}).get("message")})
        else:
            lease_age = now - info.last_modified
            if (why := kept_corrupt(queue.ctx, lease)) is not None:
                kept.append((lease.name, why))
            in_flight.append({"name": lease.name, "worker": lease.worker,
                              "intent": lease.intent.value, "attempt": lease.attempt,
                              "gen": lease.gen, "lease_age": lease_age,
                              "lease_ttl": lease.ttl or None,
                              "expired": queue.is_expired(info, now, lease.ttl),
                              "overdue": why is None and queue.is_overdue(
                                  info, now, lease.ttl, every)})
    in_flight.sort(key=lambda r: (r["worker"], r["name"]))
    return in_flight, retrying


def _breakers(records: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Workers whose circuit breaker tripped (s3q.breaker: their ``records``): open until
    ``until``; after it they claim again, and the record goes at their first success."""
    return [{"worker": str(r["worker"]), "open": now < float(r["until"]),
             "since": float(r["opened_at"]), "opened_at": iso(float(r["opened_at"])),
             "until": iso(float(r["until"])), "trips": r.get("trips", 1),
             "failed": list(r.get("failed", [])), "last_error": str(r.get("last_error", ""))}
            for r in records]


def _problems(queue: Queue, counts: dict[str, int | None], oldest_age: float | None,
              overdue: list[dict[str, Any]], *, max_age: float | None,
              max_failed: int | None, every: float = 0.0) -> list[str]:
    """Expired leases are normal for a moment (a server died; a live worker takes its work
    over within two scan intervals); overdue ones mean no worker is taking anything over."""
    problems: list[str] = []
    if overdue:
        listed = ", ".join(f"{r['name']} ({r['worker'] or 'nobody'}, {age(r['lease_age'])})"
                           for r in overdue[:5])
        more = f" and {len(overdue) - 5} more" if len(overdue) > 5 else ""
        problems.append(
            f"{len(overdue)} expired lease(s) not taken over in time: not renewed for more "
            f"than {queue.ctx.overdue_bounds([r['lease_ttl'] for r in overdue], every)}: no "
            f"worker is "
            f"scanning this queue "
            f"(each running worker scans every scan interval, however busy; is any running?): "
            f"{listed}{more}")
    if max_age is not None and oldest_age is not None and oldest_age > max_age:
        problems.append(f"the oldest waiting request is {age(oldest_age)} old "
                        f"(--max-age {age(max_age)})")
    failed = counts["failed"] or 0  # always listed
    if max_failed is not None and failed > max_failed:
        problems.append(f"{failed} request(s) in failed/ (--max-failed {max_failed})")
    return problems


def fleet_lines(data: dict[str, Any]) -> list[str]:
    """The workers line (live and stale, from the registry), the scanner line (who holds
    the role, its last scan) and PAUSED when paused."""
    live, stale = data["workers"]["live"], data["workers"]["stale"]
    lines = [f"workers   {len(live)} live   {len(stale)} stale"
             + (f" ({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''})" if stale else "")]
    role = data["scanner"]
    lines.append("scanner   none: no worker holds the role (none is running, or none "
                 "scanned yet)" if role is None else
                 f"scanner   cannot be read ({role['error']}): who scans is not known"
                 if role.get("error") else
                 f"scanner   {role['worker']}, last scan {age(role['since_last_scan'])} ago"
                 + (f" (every {age(role['every'])})" if role["every"] else "")
                 + ("" if role["live"] else ": EXPIRED, it stopped scanning"))
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
        *([f"          from {data['queue_source']}"] if data.get("queue_source") else []),
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
    if data.get("breakers"):
        lines += ["", f"circuit breakers tripped: {len(data['breakers'])}", table(
            ["WORKER", "STATE", "SINCE", "UNTIL", "FAILED IN A ROW", "LAST ERROR"],
            [[b["worker"], "OPEN" if b["open"] else "probing", b["opened_at"], b["until"],
              len(b["failed"]), one_line(b["last_error"], 80)] for b in data["breakers"]])]
    if data["problems"]:
        lines += ["", *(f"problem: {p}" for p in data["problems"])]
    return "\n".join(lines)
