"""Operator actions: ``s3q requeue``, ``recover``, ``purge`` and ``config show``."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import click

from s3q.bulk import Undone, each
from s3q.cli.errors import EXIT_INCOMPLETE, Failure
from s3q.cli.options import (
    STATES,
    App,
    Duration,
    S3qCommand,
    dry_run_option,
    json_option,
    setting_options,
    yes_option,
)
from s3q.cli.output import confirm, echo_json, progress, table
from s3q.cli.partial import report
from s3q.config import show_config
from s3q.hostlock import HostLockHeld, one_per_host
from s3q.layout import State
from s3q.queue import Queue, Recovered, RecoveryMode
from s3q.records import Intent
from s3q.recovery import RecoveryIncomplete
from s3q.registry import Registry, longer_leases, longer_leases_problem
from s3q.store import ObjectInfo, validate_key
from s3q.takeover import CHANGED, INTERRUPTED, RACED, RECOVER_ALL, UNTOUCHED

#: Not shown: what Queue.recover_* found nothing to do about (but what changed since listed).
UNSHOWN = UNTOUCHED - {CHANGED, RACED, "not mine"}


def matching(queue: Queue, state: State | str, pattern: str,
             before: float | None = None) -> Iterator[ObjectInfo]:
    """The requests in ``state`` whose names match the glob ``pattern`` (and, with
    ``before``, that entered the state before that store time), as they are listed."""
    return (i for i in queue.ls(state) if fnmatch.fnmatchcase(i.key, pattern)
            and (before is None or i.last_modified < before))


# ------------------------------------------------------------------------ requeue

@click.command(cls=S3qCommand, examples=[
    "s3q requeue 2026/11/a_request.json b_request.json",
    "s3q requeue --glob '2026/11/*' --dry-run",
    "s3q requeue --all --yes           # in a script: no question"])
@click.argument("names", nargs=-1)
@click.option("--glob", "pattern", metavar="GLOB", help="Requeue the failed requests whose "
              "names match GLOB.")
@click.option("--all", "all_", is_flag=True, help="Requeue every failed request.")
@dry_run_option
@yes_option
@json_option
@setting_options("concurrency")
def requeue(*, names: tuple[str, ...], pattern: str | None, all_: bool, dry_run: bool,
            yes: bool, as_json: bool) -> None:
    """Move failed requests back to wait/.

    They start again with a fresh attempt count. --glob and --all say how many and ask
    first (on a terminal; elsewhere they need --yes). Exits 1 when a request given or
    listed was not requeued (not in failed/, busy, or failed again since it was listed:
    named on stderr). A store error of one request is reported and the others go on; an
    unreachable store stops it: either way it says what it requeued, what failed and what
    it did not attempt, and exits 3."""
    if sum([bool(names), pattern is not None, all_]) != 1:
        raise click.UsageError("give NAME..., --glob GLOB or --all")
    app = App()
    queue = app.open_queue()
    # --glob/--all: the dead letters listed (by ETag), not later ones of those names
    listed: dict[str, str | None] = {validate_key(n): None for n in names} or {
        i.key: i.etag for i in matching(queue, State.FAILED, pattern or "*")}
    targets = list(listed)
    if dry_run:
        _report_dry_run(as_json, "requeue", targets, "would requeue")
        return
    if not names and targets:
        what = f"requeue {len(targets)} failed request(s) (fresh attempt counts)"
        confirm(f"{what.capitalize()}?", yes=yes, refusal=f"refusing to {what} without "
                "--yes (--dry-run lists them)")
    undone = Undone()
    with progress("requeueing", len(targets)) as advance:
        done = dict(each(targets, str, lambda n: queue.requeue(n, etag=listed[n]),
                         threads=app.config.concurrency, advance=advance, undone=undone))
    requeued = [n for n in targets if done.get(n)]
    skipped = [n for n in targets if done.get(n) is False]
    if as_json:
        echo_json("requeue", {"dry_run": False, "requeued": requeued, "skipped": skipped,
                              "complete": not (skipped or undone), **undone.json()})
    else:
        click.echo(f"requeued {len(requeued)} request(s)")
    for n in skipped:
        click.echo(f"not requeued: {n} (not in failed/, busy, or failed again since it was "
                   "listed)", err=True)
    report(undone, command="requeue", verb="requeued", done=len(requeued), rerun=(
        "it requeues what is still in failed/; a request whose requeue was cut short "
        "is finished by the workers' takeover scan once its lease expires (lease_ttl; "
        "without workers: 's3q recover --stale' then)"))
    if skipped:  # named or listed, and not requeued: gone, busy or failed again since
        click.get_current_context().exit(EXIT_INCOMPLETE)


def _report_dry_run(as_json: bool, kind: str, names: Sequence[str], verb: str) -> None:
    if as_json:
        echo_json(kind, {"dry_run": True, "requests": list(names)})
        return
    for name in names:
        click.echo(name)
    click.echo(f"{verb} {len(names)} request(s) (dry run: nothing changed)", err=True)


# ------------------------------------------------------------------------ recover

@dataclass(frozen=True, slots=True)
class Planned:
    name: str
    worker: str
    intent: str
    live: bool  # held and not expired: a worker may be running it now
    action: str
    told: bool = True  # its lease tells its lease_ttl (or there is none): judged exactly
    claim: str | None = None  # its lease's claim id (None: no lease)
    error: str | None = None  # its lease could not be read: reported as failed, not touched


@click.command(cls=S3qCommand, examples=[
    "s3q recover --stale                 # what dead workers held",
    "s3q recover --all --dry-run",
    "s3q recover --all --include '*request.json' --yes   # the seed's reset, done safely"])
@click.option("--mine", "mode", flag_value="mine", help="What this worker id (--worker-id) "
              "held: back to wait/ at once. Refused while a worker with that id runs on "
              "this host.")
@click.option("--stale", "mode", flag_value="stale", help="Requests whose lease expired.")
@click.option("--all", "mode", flag_value="all", help="Everything in processing/ matching "
              "--include, even what live workers hold (they are fenced and stop).")
@click.option("--include", metavar="GLOB", help="With --all: only names matching GLOB "
              "(default: all).")
@dry_run_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask before taking requests from live "
              "workers.")
@json_option
@setting_options("worker_id", "lease_ttl")
def recover(mode: RecoveryMode | None, include: str | None, dry_run: bool, yes: bool,
            as_json: bool) -> None:
    """Put requests from processing/ back into wait/.

    A request whose last attempt died goes to failed/ instead (except with --all). The
    seed's reset is: s3q recover --all --include '*request.json' --yes. A store error of
    one request is reported and the others go on; an unreachable store stops it: either
    way it says what it recovered, what failed and what it did not attempt, and exits 3.
    Exits 1, naming the request, when a takeover outlasted its lease (interrupted: the next
    takeover carries on), and with --all when a request listed was left alone (claimed
    again, or its lease renewed, since it was listed)."""
    if mode is None:
        raise click.UsageError("give one of --mine, --stale and --all")
    if include is not None and mode != "all":
        raise click.UsageError("--include goes with --all")
    app = App()
    queue = app.open_queue()
    worker_id = (app.config.effective_worker_id() if mode == "mine"
                 else RECOVER_ALL if mode == "all" else "s3q-recover")
    # --mine: what a stopped worker of this id held. Its lock says whether one is running
    # on this host (its jobs are live, not to be taken); held until the recovery is done,
    # so that no worker of this id starts meanwhile.
    with idle_worker_id(queue, worker_id) if mode == "mine" else contextlib.nullcontext():
        plan = plan_recovery(queue, mode, include or "*", worker_id)
        if mode != "mine":  # leases of an earlier s3q are judged live or not by our lease_ttl
            longer = longer_leases(Registry(queue.store).records(), queue.config.lease_ttl,
                                   {p.worker for p in plan if not p.told})
            if longer:
                raise Failure(longer_leases_problem(longer, queue.config.lease_ttl))
        undone = Undone(failed={p.name: p.error for p in plan if p.error is not None})
        plan = [p for p in plan if p.error is None]
        if dry_run:
            actions = {p.name: p.action for p in plan}
        else:
            live = [p for p in plan if p.live and mode == "all"]
            if live:
                confirm_takeover(live, yes)
            try:
                done = run_recovery(queue, mode, include or "*", worker_id, plan)
            except RecoveryIncomplete as e:
                done, undone = e.done, undone_recovery(e, plan, undone.failed)
            actions = {n: a for n, a in done.actions.items() if a not in UNSHOWN}
    # --all: what it listed and did not take, its lease another claim's by then, or
    # renewed (or taken over) between its read and the fence
    left = sorted(n for n, a in actions.items() if a == CHANGED
                  or (mode == "all" and a == RACED))
    # taken over, but this process outlasted the lease: stopped there, not done
    interrupted = [] if dry_run else sorted(n for n, a in actions.items() if a == INTERRUPTED)
    recovered = len(actions) if dry_run else len(done)  # (not 'raced', 'not mine', ...)
    if as_json:
        echo_json("recover", {"dry_run": dry_run, "requests": [
            {"name": n, "action": a} for n, a in actions.items()], **({} if dry_run else {
                "complete": not (left or interrupted or undone)}), **undone.json()})
    else:
        if actions:
            click.echo(table(["REQUEST", "ACTION"], sorted(actions.items())))
        click.echo(f"{'would touch' if dry_run else 'recovered'} {recovered} request(s)"
                   + (f"; left {len(left)} alone: claimed again or renewed since they were "
                      "listed" if left else ""))
    for name in left:
        click.echo(f"not recovered: {name}: {actions[name]}: its lease changed since it was "
                   "listed (claimed again, renewed by its worker or taken over): 's3q "
                   "recover --all' lists it again", err=True)
    for name in interrupted:
        click.echo(f"not recovered: {name}: {INTERRUPTED}: its takeover took longer than "
                   "lease_ttl; the next takeover (the workers' scan, or 's3q recover "
                   "--stale' once its lease expired) carries on", err=True)
    report(undone, command="recover", verb="recovered", done=recovered, rerun=(
        "it takes over only what is still in processing/; one it took from its worker and "
        "had not released yet is held by s3q-recover-all: re-run (with --yes), or the "
        "workers' takeover scan releases it once its lease expires, its attempt not "
        "counted either way"))
    if left or interrupted:  # not done, as requeue or purge that skipped some
        click.get_current_context().exit(EXIT_INCOMPLETE)


def run_recovery(queue: Queue, mode: RecoveryMode, include: str, worker_id: str,
                 plan: Sequence[Planned]) -> Recovered:
    if mode == "mine":
        return queue.recover_own(worker_id)
    if mode == "stale":
        return queue.recover_stale()
    # what the plan (and the question) showed, and nothing claimed since
    return queue.recover_all(include, only={p.name: p.claim for p in plan})


def undone_recovery(e: RecoveryIncomplete, plan: Sequence[Planned],
                    unread: dict[str, str]) -> Undone:
    """What a recovery that store errors cut short did not do (not attempted: the rest of
    what it took over, or when it stopped in its listing, of what it planned; ``unread``:
    the failures of the plan's reads)."""
    failed = {n: " ".join(error.split()) for n, error in {**unread, **e.done.failed}.items()}
    rest = e.not_attempted if e.not_attempted is not None else [
        p.name for p in plan if p.name not in e.done.actions and p.name not in failed]
    return Undone(failed=failed, not_attempted=rest, stopped=e.stopped,
                  unknown=set(e.done.unknown))


@contextlib.contextmanager
def idle_worker_id(queue: Queue, worker_id: str) -> Iterator[None]:
    """Hold the host lock of ``worker_id`` on this queue, as ``s3q worker`` does; a worker
    with that id running on this host (it holds the lock) stops the command."""
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(one_per_host(worker_id, queue.store.url))
    except HostLockHeld as e:
        raise Failure(
            f"a worker with id {worker_id!r} is running on this host (lock {e.path}); its "
            "requests are live: stop it first (it gives its jobs back as it stops), or use "
            "--stale for what dead workers held") from None
    with lock:
        yield


def plan_recovery(queue: Queue, mode: RecoveryMode, include: str,
                  worker_id: str) -> list[Planned]:
    """What ``recover`` would touch (the queue's own selection; changes nothing)."""
    plan: list[Planned] = []
    for found in queue.recovery_candidates(mode, include, worker_id):
        lease = found.lease
        if lease is None:
            plan.append(Planned(found.name, "", "", False, "back to wait/ (no lease)",
                                error=found.error))
            continue
        if lease.intent is Intent.HELD:
            state = "live" if found.live else "expired"
            action = f"back to wait/ (held by {lease.worker or 'nobody'}, {state})"
        else:
            action = f"finish the interrupted '{lease.intent.value}' transition"
        plan.append(Planned(found.name, lease.worker, lease.intent.value, found.live, action,
                            told=bool(lease.ttl), claim=lease.claim))
    return plan


def confirm_takeover(live: Sequence[Planned], yes: bool) -> None:
    workers = ", ".join(sorted({p.worker for p in live}))
    what = (f"{len(live)} request(s) are held by live workers ({workers}); taking them "
            "stops those jobs")
    confirm(f"{what}. Continue?", yes=yes,
            refusal=f"{what}: re-run with --yes to take them anyway (or use --stale)")


# ------------------------------------------------------------------------ purge

@click.command(cls=S3qCommand, examples=[
    "s3q purge failed --dry-run",
    "s3q purge finish --older-than 30d --yes     # from a timer or cron",
    "s3q purge wait --include 'test-*'"])
@click.argument("state", type=STATES, metavar="STATE")
@click.option("--include", metavar="GLOB", help="Only names matching GLOB.")
@click.option("--older-than", type=Duration(), metavar="AGE",
              help="Only requests that entered STATE more than AGE ago (30d, 12h, 90m).")
@dry_run_option
@yes_option
@json_option
@setting_options("concurrency")
def purge(*, state: str, include: str | None, older_than: float | None, dry_run: bool,
          yes: bool, as_json: bool) -> None:
    """Delete requests in finish/, failed/ or wait/.

    finish/ goes with its results, failed/ with its error records. It says how many and
    asks first (on a terminal; elsewhere it needs --yes); with --yes it deletes as it lists,
    so a huge finish/ is never held in memory. Requests in processing/ are never purged:
    use recover. With on_finish=move, finish/ keeps one object per request forever: trim it
    with --older-than from a timer (on S3, a lifecycle rule is cheaper; docs/OPERATIONS.md).
    Exits 1 when it skipped requests (changed, claimed or gone since listed: named on
    stderr). A store error of one request is reported and the others go on; an unreachable
    store stops it: either way it says what it purged, what failed and what it did not
    attempt, and exits 3."""
    if state == State.PROCESSING:
        raise Failure("requests in processing/ are held by workers and cannot be purged; "
                      "use 's3q recover' to put them back into wait/ first")
    app = App()
    queue = app.open_queue()
    cutoff = None if older_than is None else queue.store.now() - older_than
    found = matching(queue, state, include or "*", cutoff)
    infos: Iterable[ObjectInfo] = found  # with --yes: deleted as they are listed
    total = None
    if dry_run or not yes:
        infos = listed = list(found)
        total = len(listed)
        if dry_run:
            _report_dry_run(as_json, "purge", [i.key for i in listed], "would purge")
            return
        if listed:
            records = {State.FINISH: " and their results",
                       State.FAILED: " and their error records"}.get(State(state), "")
            what = f"delete {len(listed)} request(s) from {state}/{records}"
            confirm(f"{what.capitalize()}?", yes=yes,
                    refusal=f"refusing to {what} without --yes (--dry-run lists them)")
    undone = Undone()
    with progress("purging", total) as advance:
        purged, skipped = delete_requests(queue, State(state), infos, undone,
                                          threads=app.config.concurrency, advance=advance)
    if as_json:
        echo_json("purge", {"dry_run": False, "state": state, "purged": purged,
                            "skipped": skipped, "complete": not (skipped or undone),
                            **undone.json()})
    else:
        click.echo(f"purged {len(purged)} request(s) from {state}/")
    for name in skipped:
        click.echo(f"skipped {name}: changed or gone meanwhile", err=True)
    report(undone, command="purge", verb="purged", done=len(purged), rerun=(
        "it lists again and deletes what is still there, each only as listed"))
    if skipped:  # not deleted: claimed, re-submitted, completed or failed again, or gone
        click.get_current_context().exit(EXIT_INCOMPLETE)


#: Requests deleted per round of ``delete_requests`` (the most listed and not yet deleted).
DELETE_ROUND = 1000


def delete_requests(queue: Queue, state: State, infos: Iterable[ObjectInfo], undone: Undone,
                    *, threads: int, advance: Callable[[int], None]
                    ) -> tuple[list[str], list[str]]:
    """The deletion loop of ``purge``: :meth:`Queue.purge` per request (the protocol's
    purge: conditional on the listed ETag, so a request re-submitted meanwhile stays; a
    waiting request's retry lease goes with it), ``threads`` at a time, in rounds of
    DELETE_ROUND (memory stays bounded while ``infos`` streams). Returns (purged, skipped)
    names; store errors go into ``undone`` (:func:`s3q.cli.partial.each`)."""
    purged: list[str] = []
    skipped: list[str] = []
    for info, ok in each(infos, lambda i: i.key, lambda i: queue.purge(state, i),
                         threads=threads, advance=advance, undone=undone,
                         round_size=DELETE_ROUND):
        (purged if ok else skipped).append(info.key)
    return purged, skipped


# ------------------------------------------------------------------------ config

@click.group(name="config")
def config_group() -> None:
    """The effective configuration."""


@config_group.command(name="show", cls=S3qCommand, examples=[
    "s3q config show",
    "S3Q_PROFILE=prod s3q config show --json"])
@json_option
@setting_options()
def config_show(as_json: bool) -> None:
    """Every setting: its value (secrets masked) and where it came from."""
    app = App()
    rows = show_config(app.config, app.sources)
    if as_json:
        echo_json("config", {"queue_source": app.queue_source, "settings": {
            name: {"value": value, "source": source} for name, value, source in rows}})
    else:
        click.echo(table(["SETTING", "VALUE", "SOURCE"], rows))
        click.echo(f"\nqueue from {app.queue_source}")
