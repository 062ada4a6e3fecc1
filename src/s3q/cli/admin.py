"""Operator actions: ``s3q requeue``, ``recover``, ``purge`` and ``config show``."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import click

from s3q.cli.errors import Failure
from s3q.cli.options import STATES, App, Duration, json_option, setting_options
from s3q.cli.output import confirm, echo_json, table
from s3q.config import show_config
from s3q.layout import State
from s3q.queue import Queue, RecoveryMode
from s3q.records import Intent
from s3q.store import ObjectInfo, validate_key

#: What Queue.recover_* report for requests they found nothing to do about.
UNTOUCHED = frozenset({"waiting for retry", "gone"})


def matching(queue: Queue, state: State | str, pattern: str,
             before: float | None = None) -> Iterator[ObjectInfo]:
    """The requests in ``state`` whose names match the glob ``pattern`` (and, with
    ``before``, that entered the state before that store time), as they are listed."""
    return (i for i in queue.ls(state) if fnmatch.fnmatchcase(i.key, pattern)
            and (before is None or i.last_modified < before))


# ------------------------------------------------------------------------ requeue

@click.command()
@click.argument("names", nargs=-1)
@click.option("--glob", "pattern", metavar="GLOB", help="Requeue the failed requests whose "
              "names match GLOB.")
@click.option("--all", "all_", is_flag=True, help="Requeue every failed request.")
@json_option
@setting_options
def requeue(names: tuple[str, ...], pattern: str | None, all_: bool, as_json: bool) -> None:
    """Move failed requests back to wait/.

    They start again with a fresh attempt count. Exits 1 when a NAME given could not be
    requeued (not in failed/, or busy)."""
    if sum([bool(names), pattern is not None, all_]) != 1:
        raise click.UsageError("give NAME..., --glob GLOB or --all")
    queue = App().open_queue()
    if not names:
        names = tuple(i.key for i in matching(queue, State.FAILED, pattern or "*"))
    done = {name: queue.requeue(validate_key(name)) for name in names}
    requeued = [n for n, ok in done.items() if ok]
    skipped = [n for n, ok in done.items() if not ok]
    if as_json:
        echo_json({"requeued": requeued, "skipped": skipped})
    else:
        click.echo(f"requeued {len(requeued)} request(s)")
        for n in skipped:
            click.echo(f"not requeued: {n} (not in failed/, or busy)", err=True)
    if skipped and pattern is None and not all_:
        click.get_current_context().exit(1)


# ------------------------------------------------------------------------ recover

@dataclass(frozen=True, slots=True)
class Planned:
    name: str
    worker: str
    intent: str
    live: bool  # held and not expired: a worker may be running it now
    action: str


@click.command()
@click.option("--mine", "mode", flag_value="mine", help="What this worker id (--worker-id) "
              "held: back to wait/ at once.")
@click.option("--stale", "mode", flag_value="stale", help="Requests whose lease expired.")
@click.option("--all", "mode", flag_value="all", help="Everything in processing/ matching "
              "--include, even what live workers hold (they are fenced and stop).")
@click.option("--include", metavar="GLOB", help="With --all: only names matching GLOB "
              "(default: all).")
@click.option("--dry-run", is_flag=True, help="Only list what would be touched.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before taking requests from live "
              "workers.")
@json_option
@setting_options
def recover(mode: RecoveryMode | None, include: str | None, dry_run: bool, yes: bool,
            as_json: bool) -> None:
    """Put requests from processing/ back into wait/.

    A request whose last attempt died goes to failed/ instead (except with --all). The
    seed's reset is: s3q recover --all --include '*request.json' --yes"""
    if mode is None:
        raise click.UsageError("give one of --mine, --stale and --all")
    if include is not None and mode != "all":
        raise click.UsageError("--include goes with --all")
    app = App()
    queue = app.open_queue()
    worker_id = app.config.effective_worker_id() if mode == "mine" else "s3q-recover"
    plan = plan_recovery(queue, mode, include or "*", worker_id)
    if dry_run:
        actions = {p.name: p.action for p in plan}
    else:
        live = [p for p in plan if p.live and mode == "all"]
        if live:
            confirm_takeover(live, yes)
        if mode == "mine":
            done = queue.recover_own(worker_id)
        elif mode == "stale":
            done = queue.recover_stale()
        else:
            done = queue.recover_all(include or "*")
        actions = {n: a for n, a in done.actions.items() if a not in UNTOUCHED}
    if as_json:
        echo_json({"dry_run": dry_run,
                   "requests": [{"name": n, "action": a} for n, a in actions.items()]})
        return
    if actions:
        click.echo(table(["REQUEST", "ACTION"], sorted(actions.items())))
    click.echo(f"{'would touch' if dry_run else 'recovered'} {len(actions)} request(s)")


def plan_recovery(queue: Queue, mode: RecoveryMode, include: str,
                  worker_id: str) -> list[Planned]:
    """What ``recover`` would touch (the queue's own selection; changes nothing)."""
    plan: list[Planned] = []
    for found in queue.recovery_candidates(mode, include, worker_id):
        lease = found.lease
        if lease is None:
            plan.append(Planned(found.name, "", "", False, "back to wait/ (no lease)"))
            continue
        if lease.intent is Intent.HELD:
            state = "live" if found.live else "expired"
            action = f"back to wait/ (held by {lease.worker or 'nobody'}, {state})"
        else:
            action = f"finish the interrupted '{lease.intent.value}' transition"
        plan.append(Planned(found.name, lease.worker, lease.intent.value, found.live, action))
    return plan


def confirm_takeover(live: Sequence[Planned], yes: bool) -> None:
    workers = ", ".join(sorted({p.worker for p in live}))
    what = (f"{len(live)} request(s) are held by live workers ({workers}); taking them "
            "stops those jobs")
    confirm(f"{what}. Continue?", yes=yes,
            refusal=f"{what}: re-run with --yes to take them anyway (or use --stale)")


# ------------------------------------------------------------------------ purge

@click.command()
@click.argument("state", type=STATES, metavar="STATE")
@click.option("--include", metavar="GLOB", help="Only names matching GLOB.")
@click.option("--older-than", type=Duration(), metavar="AGE",
              help="Only requests that entered STATE more than AGE ago: seconds, or a number "
              "with s, m, h or d (7d).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed for wait/ when not "
              "interactive).")
@json_option
@setting_options
def purge(state: str, include: str | None, older_than: float | None, yes: bool,
          as_json: bool) -> None:
    """Delete requests in finish/, failed/ or wait/.

    finish/ goes with its results, failed/ with its error records; wait/ only after a
    confirmation (or --yes). Requests in processing/ are never purged: use recover.

    With on_finish=move, finish/ keeps one object per request forever: trim it with
    --older-than from a timer (or, on S3, with a lifecycle rule; see docs/OPERATIONS.md)."""
    if state == State.PROCESSING:
        raise Failure("requests in processing/ are held by workers and cannot be purged; "
                      "use 's3q recover' to put them back into wait/ first")
    queue = App().open_queue()
    cutoff = None if older_than is None else queue.store.now() - older_than
    found = matching(queue, state, include or "*", cutoff)
    infos: Iterable[ObjectInfo] = found  # deleted as they are listed: finish/ may be huge
    if state == State.WAIT:  # counted first, to ask
        infos = waiting = list(found)
        if waiting:
            what = f"delete {len(waiting)} waiting request(s)"
            confirm(f"{what.capitalize()}?", yes=yes,
                    refusal=f"refusing to {what} without --yes")
    purged: list[str] = []
    skipped: list[str] = []
    for info in infos:  # only the bytes listed: a request re-submitted meanwhile stays
        (purged if queue.purge(state, info) else skipped).append(info.key)
    if as_json:
        echo_json({"state": state, "purged": purged, "skipped": skipped})
    else:
        click.echo(f"purged {len(purged)} request(s) from {state}/")
        for name in skipped:
            click.echo(f"skipped {name}: changed or gone meanwhile", err=True)


# ------------------------------------------------------------------------ config

@click.group(name="config")
def config_group() -> None:
    """The effective configuration."""


@config_group.command(name="show")
@json_option
@setting_options
def config_show(as_json: bool) -> None:
    """Every setting: its value (secrets masked) and where it came from."""
    app = App()
    rows = show_config(app.config, app.sources)
    if as_json:
        echo_json({name: {"value": value, "source": source} for name, value, source in rows})
    else:
        click.echo(table(["SETTING", "VALUE", "SOURCE"], rows))
