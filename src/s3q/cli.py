"""``s3q``: the operator's command line.

    s3q worker --exec CMD | --handler module:func   run a worker (until stopped, or --burst)
    s3q submit FILES...                              put requests into wait/
    s3q status [--check]                             counts, oldest waiting, in flight, health
    s3q ls STATE / s3q show NAME                     look at requests
    s3q requeue / recover / purge                    operator actions
    s3q config show                                  the effective settings and their sources

Every non-secret setting of :data:`s3q.config.SETTINGS` is a ``--flag`` of every command
(plus ``--config PATH``). Exit codes: 0 ok; 1 unhealthy (``status --check``), not found,
not done, or aborted; 2 usage or configuration error; 3 store error (unreachable, denied).
Errors are one line on stderr, ``s3q: error: <message>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import glob
import json
import logging
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from s3q import layout
from s3q.config import SETTINGS, Config, Setting, load_config, resolve_secrets, show_config
from s3q.errors import ConfigError
from s3q.handlers import ExecHandler, load_callable, process_handler
from s3q.job import Job
from s3q.layout import State
from s3q.logs import setup_logging, teardown_logging
from s3q.queue import Queue
from s3q.records import CLOCK_MARGIN, Intent, Lease, RecordError
from s3q.store import InvalidKey, NotFound, ObjectInfo, PreconditionFailed, StoreError, validate_key
from s3q.worker import Handler, Worker, WorkerOptions

if TYPE_CHECKING:
    from s3q.metrics import Metrics

__all__ = ["cli", "main"]

log = logging.getLogger("s3q.cli")

EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_STORE = 3
#: The window of ``status``'s recent throughput, seconds.
THROUGHPUT_WINDOW = 300.0

F = TypeVar("F", bound=Callable[..., Any])


class Failure(Exception):
    """Stop the command: ``s3q: error: <message>`` on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# ======================================================================== the group and errors

class S3qGroup(click.Group):
    """Turns every expected error into one line on stderr and an exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            code = self._run(args, prog_name or "s3q", complete_var, **extra)
        finally:
            teardown_logging()
        if not standalone_mode:
            return code
        sys.exit(code)

    def _run(self, args: Sequence[str] | None, prog_name: str, complete_var: str | None,
             **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # bare `s3q`: the help text, as it is
            click.echo(e.format_message(), err=True)
            return EXIT_USAGE
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            return _error(e.format_message() + hint, EXIT_USAGE)
        except click.ClickException as e:
            return _error(e.format_message(), e.exit_code)
        except click.Abort:
            return _error("aborted", 1)
        except Failure as e:
            return _error(str(e), e.code)
        except (ConfigError, InvalidKey) as e:
            return _error(str(e), EXIT_USAGE)
        except StoreError as e:
            return _error(str(e), EXIT_STORE)
        return rv if isinstance(rv, int) else 0


class _NeverRaised(click.UsageError):
    pass


#: click >= 8.2 raises this for a group run without a command (older ones print the help).
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError",
                                                   _NeverRaised)


def _error(message: str, code: int) -> int:
    click.echo(f"s3q: error: {' '.join(message.split())}", err=True)
    return code


# ======================================================================== settings as flags

_FLAGS = "s3q.flags"
_CONFIG_PATH = "s3q.config_path"
_SHORT = {"concurrency": "-c"}
#: The settings that are flags (secrets never are: argv is visible to every user).
FLAG_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag is not None)


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value is not None and param.name is not None:
        if param.name == "config_path":
            ctx.meta[_CONFIG_PATH] = value
        else:
            ctx.meta.setdefault(_FLAGS, {})[param.name] = value


def _metavar(s: Setting) -> str:
    if s.choices:
        return "[" + "|".join(s.choices) + "]"
    return {float: "SECONDS", int: "N"}.get(s.type, s.name.upper())


def _setting_option(s: Setting) -> Callable[[F], F]:
    assert s.flag is not None
    help_ = f"{s.help} [env {s.env_var}]"
    common: dict[str, Any] = {"default": None, "expose_value": False, "callback": _remember,
                              "help": help_}
    if s.type is bool:
        return click.option(f"{s.flag}/--no-{s.flag[2:]}", s.name, **common)
    # Values stay text: load_config parses and checks them, naming the flag in its errors.
    decls = [s.flag, *([_SHORT[s.name]] if s.name in _SHORT else [])]
    return click.option(*decls, s.name, metavar=_metavar(s), **common)


def setting_options(func: F) -> F:
    """Add ``--config`` and a flag for every non-secret setting; read them with :class:`App`."""
    for s in reversed(FLAG_SETTINGS):
        func = _setting_option(s)(func)
    return click.option("--config", "config_path", metavar="PATH", expose_value=False,
                        callback=_remember, help="Config file (default: ./s3q.toml, "
                        "/etc/s3q/s3q.toml) [env S3Q_CONFIG]")(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


class App:
    """What a command needs: the config (from the flags given) and the queue."""

    def __init__(self, *, quiet: bool = True) -> None:
        self.ctx = click.get_current_context()
        flags: dict[str, object] = dict(self.ctx.meta.get(_FLAGS, {}))
        self.config, self.sources = load_config(flags=flags,
                                                config_path=self.ctx.meta.get(_CONFIG_PATH))
        level = self.config.log_level
        if quiet and self.sources.get("log_level") == "default":
            level = "warning"  # one-shot commands: no info line per request touched
        setup_logging(level, self.config.log_json)

    def open_queue(self) -> Queue:
        """The queue (secrets resolved), closed when the command ends."""
        cfg = resolve_secrets(self.config)
        try:
            queue = Queue(cfg.queue, cfg.queue_config(), s3=cfg.s3_options())
        except StoreError:
            raise
        except ValueError as e:  # a bad URL or endpoint
            raise Failure(f"queue: {e}") from None
        except Exception as e:  # e.g. botocore's ProfileNotFound: a configuration problem
            raise Failure(f"queue: cannot open {cfg.queue}: {type(e).__name__}: {e}") from None
        self.ctx.call_on_close(queue.close)
        return queue


# ======================================================================== output helpers

def echo_json(data: object, *, compact: bool = False) -> None:
    click.echo(json.dumps(data, indent=None if compact else 2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: object, limit: int = 80) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def is_interactive() -> bool:
    return sys.stdin.isatty()


# ======================================================================== commands

@click.group(cls=S3qGroup, context_settings={"help_option_names": ["-h", "--help"],
                                             "max_content_width": 100})
@click.version_option(package_name="s3q", prog_name="s3q")
def cli() -> None:
    """s3q: a crash-safe request queue on S3 (or a local directory).

    Every command takes every setting as a flag (see 's3q config show'); the config file,
    S3Q_* variables and flags are layered in that order. Exit codes: 0 ok, 1 unhealthy /
    not found / aborted, 2 usage or configuration error, 3 store error.
    """


def main() -> None:
    cli.main(prog_name="s3q")


# ------------------------------------------------------------------------ worker

@cli.command()
@click.option("--exec", "exec_cmd", metavar="CMD",
              help="Run this program per request; {path} and {name} are replaced, and "
              "S3Q_REQUEST_NAME, S3Q_REQUEST_PATH, S3Q_ATTEMPT, S3Q_WORKER_ID are set.")
@click.option("--handler", "handler_spec", metavar="MODULE:FUNC",
              help="Call this Python function with each request.")
@click.option("--pool", type=click.Choice(["thread", "process"]), default="thread",
              show_default=True, help="Where --handler runs: in a thread of the worker, or "
              "in a child process per request.")
@click.option("--burst", is_flag=True, help="Process what is there, then exit.")
@click.option("--max-jobs", type=click.IntRange(min=1), metavar="N",
              help="Exit after claiming N requests.")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address of the metrics endpoint (with --metrics-port).")
@setting_options
def worker(*, exec_cmd: str | None, handler_spec: str | None, pool: str, burst: bool,
           max_jobs: int | None, metrics_addr: str) -> None:
    """Claim requests and run a handler on each, CONCURRENCY at a time.

    The first SIGTERM/SIGINT stops claiming and lets running jobs finish (up to --grace
    seconds, then gives them back to wait/); a second one gives them back at once. Exits 0
    after a graceful stop or a finished burst.
    """
    app = App(quiet=False)
    cfg = app.config
    handler = build_handler(exec_cmd, handler_spec, pool, cfg.job_timeout)
    queue = app.open_queue()
    check_reachable(queue)
    worker_id = cfg.effective_worker_id()
    log.info("settings", extra={"event": "settings", "worker": worker_id, "settings": {
        name: value for name, value, _ in show_config(cfg, app.sources)}})
    metrics = new_metrics() if cfg.metrics_port else None
    options = WorkerOptions(worker_id=worker_id, concurrency=cfg.concurrency, grace=cfg.grace,
                            burst=burst, max_jobs=max_jobs, poll_interval=cfg.poll_interval)
    runner = Worker(queue, handler, options,
                    on_job_done=metrics.on_job_done if metrics else None)
    if metrics is not None:
        serve_metrics(app, metrics, runner, metrics_addr)
    with stop_on_signals(runner):
        stats = runner.run()
    log.info("worker %s done: %d completed, %d failed, %d released, %d lost", worker_id,
             stats.completed, stats.failed, stats.released, stats.lost,
             extra={"event": "worker_done", "worker": worker_id, "completed": stats.completed,
                    "failed": stats.failed, "released": stats.released, "lost": stats.lost})


def build_handler(exec_cmd: str | None, spec: str | None, pool: str,
                  timeout: float) -> Handler:
    if (exec_cmd is None) == (spec is None):
        raise click.UsageError("give exactly one of --exec CMD and --handler MODULE:FUNC")
    try:
        if exec_cmd is not None:
            if pool != "thread":
                raise click.UsageError("--pool applies to --handler only")
            return ExecHandler(exec_cmd, timeout=timeout or None)
        assert spec is not None
        # Like `python -m`: the handler's module may live in the current directory.
        cwd = os.getcwd()
        if pool == "process":
            paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if cwd not in paths:  # the child runs in a temporary directory
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [cwd, *paths] if p)
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
            return process_handler(spec, timeout or None)
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        func = load_callable(spec)
    except ValueError as e:
        raise Failure(str(e)) from None

    def call(job: Job) -> bytes | str | None:
        return func(job)

    return call


def new_metrics() -> Metrics:
    from s3q.metrics import Metrics  # prometheus_client only when metrics are wanted

    return Metrics()


def serve_metrics(app: App, metrics: Metrics, runner: Worker, addr: str) -> None:
    port = app.config.metrics_port
    metrics.watch_worker(runner)
    try:
        metrics.serve(port, addr)
    except OSError as e:
        raise Failure(f"metrics_port: cannot serve metrics on {addr}:{port}: "
                      f"{e.strerror or e}") from None
    app.ctx.call_on_close(metrics.close)
    log.info("metrics on http://%s:%d/metrics", addr, port,
             extra={"event": "metrics_serving", "port": port})


def check_reachable(queue: Queue) -> None:
    try:
        queue.store.list_page(layout.WAIT, limit=1)
    except StoreError as e:
        raise Failure(f"cannot use the queue at {queue.store.url}: {e}", EXIT_STORE) from None


@contextlib.contextmanager
def stop_on_signals(runner: Worker) -> Iterator[None]:
    """SIGTERM/SIGINT: the first stops gracefully, the next gives running jobs back now."""
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            log.warning("%s: stopping; running jobs get %gs to finish (signal again to give "
                        "them back now)", name, runner.options.grace,
                        extra={"event": "stopping", "signal": name})
        else:
            log.warning("%s: giving running jobs back now", name,
                        extra={"event": "aborting", "signal": name})
        runner.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------ submit

@dataclass(frozen=True, slots=True)
class Source:
    name: str
    path: Path | None  # None: standard input


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--name", metavar="NAME", help="The request's name (for one file, or - for "
              "stdin, which needs it).")
@json_option
@setting_options
def submit(files: tuple[str, ...], name: str | None, as_json: bool) -> None:
    """Put files into wait/ as requests.

    FILES are files (named by their base name), directories (recursively, named by their
    path inside the directory), glob patterns (named by their path below the pattern's
    fixed part) and - for standard input (needs --name). Every name must match the filter;
    otherwise nothing is submitted."""
    app = App()
    sources = collect_sources(files, name)
    check_names(sources, app.config.filter)
    queue = app.open_queue()
    infos = upload(queue, sources, app.config.concurrency)
    if as_json:
        echo_json([{"name": s.name, "size": i.size, "etag": i.etag}
                   for s, i in zip(sources, infos, strict=True)])
    else:
        click.echo(f"submitted {len(infos)} request(s) to {queue.store.url}/{layout.WAIT}")


def collect_sources(args: Sequence[str], name: str | None) -> list[Source]:
    if "-" in args:
        if name is None:
            raise click.UsageError("'-' (standard input) needs --name")
        if len(args) > 1:
            raise click.UsageError("'-' (standard input) cannot be combined with files")
        return [Source(validate_key(name), None)]
    if name is not None:
        if len(args) > 1 or not Path(args[0]).is_file():
            raise click.UsageError("--name names one file (or '-' for standard input)")
        return [Source(validate_key(name), Path(args[0]))]
    sources = [source for arg in args for source in _sources_of(arg)]
    seen: dict[str, Source] = {}
    for s in sources:
        validate_key(s.name)
        if s.name in seen:
            raise Failure(f"two files would be submitted as {s.name!r}: "
                          f"{seen[s.name].path} and {s.path}")
        seen[s.name] = s
    if not sources:
        raise Failure(f"nothing to submit in {' '.join(args)}")
    return sources


def _sources_of(arg: str) -> list[Source]:
    path = Path(arg)
    if path.is_dir():
        return [Source(p.relative_to(path).as_posix(), p) for p in _files_in(path)]
    if path.is_file():
        return [Source(path.name, path)]
    if has_magic(arg):
        return _glob_sources(arg)
    raise Failure(f"{arg}: no such file or directory")


def has_magic(pattern: str) -> bool:
    return re.search(r"[*?[]", pattern) is not None


def _files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _glob_sources(pattern: str) -> list[Source]:
    """Matches of a glob the shell did not expand, named relative to its fixed part
    (``in/**/*.json`` → ``2026/a.json`` for ``in/2026/a.json``)."""
    parts = Path(pattern).parts
    fixed = next(i for i, p in enumerate(parts) if has_magic(p))
    base = Path(*parts[:fixed]) if fixed else Path()
    sources: list[Source] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir():
            sources += [Source(p.relative_to(base).as_posix(), p) for p in _files_in(path)]
        elif path.is_file():
            sources.append(Source(path.relative_to(base).as_posix(), path))
    if not sources:
        raise Failure(f"{pattern}: no file matches")
    return sources


def check_names(sources: Sequence[Source], pattern: str) -> None:
    bad = [s.name for s in sources if not fnmatch.fnmatchcase(s.name, pattern)]
    if bad:
        raise Failure(f"{len(bad)} name(s) do not match the filter {pattern!r} (e.g. "
                      f"{bad[0]!r}), so no worker would pick them up; nothing was submitted "
                      "(submit only matching files, e.g. with a glob, or change --filter)")


def upload(queue: Queue, sources: Sequence[Source], threads: int) -> list[ObjectInfo]:
    """Submit all sources, ``threads`` at a time, with a progress bar on a terminal."""

    def put(source: Source) -> ObjectInfo:
        if source.path is None:
            return queue.submit(source.name, sys.stdin.buffer)
        return queue.submit(source.name, source.path)

    with contextlib.ExitStack() as stack:
        bar = None
        if len(sources) > 1 and sys.stderr.isatty():
            bar = stack.enter_context(click.progressbar(length=len(sources), file=sys.stderr,
                                                        label="submitting"))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=threads))
        futures: list[Future[ObjectInfo]] = [pool.submit(put, s) for s in sources]
        pending: set[Future[ObjectInfo]] = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            if bar is not None:
                bar.update(len(done))
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                pool.shutdown(cancel_futures=True)
                ok = sum(1 for f in futures if f.done() and not f.cancelled()
                         and f.exception() is None)
                name = sources[futures.index(failed)].name
                raise _upload_failure(name, failed.exception(), ok, len(sources))
        return [f.result() for f in futures]


def _upload_failure(name: str, error: BaseException | None, ok: int, total: int) -> Failure:
    if not isinstance(error, StoreError | OSError):
        raise error or AssertionError("no error")  # a bug: let it show
    code = EXIT_USAGE if isinstance(error, InvalidKey | OSError) else EXIT_STORE
    return Failure(f"{name}: {error} ({ok} of {total} submitted before the error)", code)


# ------------------------------------------------------------------------ status

@cli.command()
@json_option
@click.option("--watch", type=click.FloatRange(min=0.5), metavar="SECONDS",
              help="Redraw every SECONDS until Ctrl-C.")
@click.option("--check", is_flag=True, help="Exit 1 (saying why on stderr) when unhealthy: "
              "expired leases, or the limits below exceeded.")
@click.option("--max-age", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --check: the oldest waiting request may be this old.")
@click.option("--max-failed", type=click.IntRange(min=0), metavar="N",
              help="With --check: at most N requests in failed/.")
@setting_options
def status(as_json: bool, watch: float | None, check: bool, max_age: float | None,
           max_failed: int | None) -> None:
    """Queue health: counts, ages, work in flight, retries.

    Counts per state, the age of the oldest waiting request, requests in flight per worker
    (with their lease age; EXPIRED = its worker stopped renewing it), requests waiting for
    a retry, and the number finished in the last 5 minutes."""
    if (max_age is not None or max_failed is not None) and not check:
        raise click.UsageError("--max-age and --max-failed need --check")
    if watch is not None and check:
        raise click.UsageError("--watch and --check cannot be combined")
    app = App()
    queue = app.open_queue()
    if watch is not None:
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                data = queue_status(queue, app.config, max_age, max_failed)
                if as_json:
                    echo_json(data, compact=True)
                else:
                    click.clear()
                    click.echo(f"{iso(time.time())}  (every {watch:g}s; Ctrl-C to stop)\n")
                    click.echo(render_status(data))
                time.sleep(watch)
        return
    data = queue_status(queue, app.config, max_age, max_failed)
    if as_json:
        echo_json(data)
    else:
        click.echo(render_status(data))
    if check and data["problems"]:
        for problem in data["problems"]:
            click.echo(f"s3q: unhealthy: {problem}", err=True)
        app.ctx.exit(EXIT_UNHEALTHY)


def queue_status(queue: Queue, cfg: Config, max_age: float | None = None,
                 max_failed: int | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (its ``--json``)."""
    counts, oldest, recent = _scan_states(queue)
    now = queue.store.now()
    in_flight, retrying = _scan_leases(queue, cfg, now)
    oldest_age = None if oldest is None else max(0.0, now - oldest)
    expired = [r for r in in_flight if r["expired"]]
    problems = _problems(cfg, counts, oldest_age, expired, max_age=max_age,
                         max_failed=max_failed)
    return {
        "queue": queue.store.url,
        "time": now,
        "counts": counts,
        "oldest_waiting_age": oldest_age,
        "in_flight": in_flight,
        "in_flight_per_worker": dict(Counter(r["worker"] for r in in_flight)),
        "expired": [r["name"] for r in expired],
        "retrying": retrying,
        "throughput": {"window_seconds": THROUGHPUT_WINDOW, "finished": recent,
                       "per_second": recent / THROUGHPUT_WINDOW},
        "healthy": not problems,
        "problems": problems,
    }


def _scan_states(queue: Queue) -> tuple[dict[str, int], float | None, int]:
    """Counts per state (as ``Queue.counts()``), in the same listing the Last-Modified of
    the oldest waiting request and the number finished within THROUGHPUT_WINDOW."""
    counts: dict[str, int] = {}
    oldest: float | None = None
    recent = 0
    for state in State:
        since = queue.store.now() - THROUGHPUT_WINDOW if state is State.FINISH else 0.0
        n = 0
        for info in queue.ls(state):
            n += 1
            if state is State.WAIT and (oldest is None or info.last_modified < oldest):
                oldest = info.last_modified
            elif state is State.FINISH and info.last_modified >= since:
                recent += 1
        counts[state.value] = n
    return counts, oldest, recent


def _scan_leases(queue: Queue, cfg: Config,
                 now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
                              "expired": lease_age > cfg.lease_ttl + CLOCK_MARGIN})
    in_flight.sort(key=lambda r: (r["worker"], r["name"]))
    return in_flight, retrying


def _problems(cfg: Config, counts: dict[str, int], oldest_age: float | None,
              expired: list[dict[str, Any]], *, max_age: float | None,
              max_failed: int | None) -> list[str]:
    problems: list[str] = []
    if expired:
        listed = ", ".join(f"{r['name']} ({r['worker'] or 'nobody'}, {age(r['lease_age'])})"
                           for r in expired[:5])
        more = f" and {len(expired) - 5} more" if len(expired) > 5 else ""
        problems.append(f"{len(expired)} expired lease(s), not renewed for more than "
                        f"lease_ttl={cfg.lease_ttl:g}s + {CLOCK_MARGIN:g}s (dead workers?): "
                        f"{listed}{more}")
    if max_age is not None and oldest_age is not None and oldest_age > max_age:
        problems.append(f"the oldest waiting request is {age(oldest_age)} old "
                        f"(--max-age {max_age:g}s)")
    if max_failed is not None and counts["failed"] > max_failed:
        problems.append(f"{counts['failed']} request(s) in failed/ (--max-failed {max_failed})")
    return problems


def render_status(data: dict[str, Any]) -> str:
    counts = data["counts"]
    finished = data["throughput"]["finished"]
    lines = [
        f"queue     {data['queue']}",
        "counts    " + "   ".join(f"{k} {v}" for k, v in counts.items()),
        f"oldest    {age(data['oldest_waiting_age'])} waiting"
        if data["oldest_waiting_age"] is not None else "oldest    - (nothing waiting)",
        f"finished  {finished} in the last {THROUGHPUT_WINDOW / 60:g} min "
        f"({finished * 60 / THROUGHPUT_WINDOW:.1f}/min)",
    ]
    if data["in_flight"]:
        per_worker = ", ".join(f"{w or 'nobody'}: {n}"
                               for w, n in data["in_flight_per_worker"].items())
        lines += ["", f"in flight: {len(data['in_flight'])} ({per_worker})", table(
            ["WORKER", "REQUEST", "ATTEMPT", "GEN", "INTENT", "LEASE AGE", ""],
            [[r["worker"] or "(nobody)", r["name"], r["attempt"], r["gen"], r["intent"],
              age(r["lease_age"]), "EXPIRED" if r["expired"] else ""]
             for r in data["in_flight"]])]
    if data["retrying"]:
        lines += ["", f"waiting for a retry: {len(data['retrying'])}", table(
            ["REQUEST", "ATTEMPTS", "DUE IN", "LAST ERROR"],
            [[r["name"], r["attempts"], age(r["due_in"]), one_line(r["error"] or "")]
             for r in data["retrying"]])]
    if data["problems"]:
        lines += ["", *(f"problem: {p}" for p in data["problems"])]
    return "\n".join(lines)


# ------------------------------------------------------------------------ ls, show

STATES = click.Choice([s.value for s in State])  # use with metavar="STATE"


@cli.command(name="ls")
@click.argument("state", type=STATES, metavar="STATE")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="List at most N.")
@json_option
@setting_options
def ls_command(state: str, limit: int | None, as_json: bool) -> None:
    """List the requests in one STATE (wait, processing, finish, failed)."""
    queue = App().open_queue()
    infos = list(islice(queue.ls(state), limit))
    if as_json:
        echo_json([{"name": i.key, "size": i.size, "last_modified": iso(i.last_modified),
                    "etag": i.etag} for i in infos])
    elif infos:
        click.echo(table(["NAME", "SIZE", "MODIFIED"],
                         [[i.key, i.size, iso(i.last_modified)] for i in infos]))


@cli.command()
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
        states.append({"state": state.value, "size": info.size,
                       "last_modified": iso(info.last_modified), "etag": info.etag})
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
    if lease.intent in (Intent.RETRY, Intent.WAIT):
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


# ------------------------------------------------------------------------ requeue

@cli.command()
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
        include = pattern or "*"
        names = tuple(i.key for i in queue.ls(State.FAILED)
                      if fnmatch.fnmatchcase(i.key, include))
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

#: What Queue.recover_* report for requests they found nothing to do about.
UNTOUCHED = frozenset({"waiting for retry", "gone"})


@dataclass(frozen=True, slots=True)
class Planned:
    name: str
    worker: str
    intent: str
    live: bool  # held and not expired: a worker may be running it now
    action: str


@cli.command()
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
def recover(mode: str | None, include: str | None, dry_run: bool, yes: bool,
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
    plan = plan_recovery(queue, app.config, mode, include or "*", worker_id)
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


def plan_recovery(queue: Queue, cfg: Config, mode: str, include: str,
                  worker_id: str) -> list[Planned]:
    """What ``recover`` would touch, from the leases and processing/ (changes nothing)."""
    now = queue.store.now()
    limit = cfg.lease_ttl + CLOCK_MARGIN
    plan: list[Planned] = []
    leased: set[str] = set()
    for lease, info in queue.leases():
        leased.add(lease.name)
        expired = now - info.last_modified > limit
        if mode == "mine":
            chosen = lease.worker == worker_id
        elif mode == "stale":
            chosen = lease.intent is not Intent.RETRY and expired
        else:
            chosen = fnmatch.fnmatchcase(lease.name, include)
        if not chosen:
            continue
        live = lease.intent is Intent.HELD and not expired and bool(lease.worker)
        if lease.intent is Intent.RETRY:
            continue  # in wait/ already, waiting for its retry: recovery leaves it alone
        if lease.intent is Intent.HELD:
            state = "live" if live else "expired"
            action = f"back to wait/ (held by {lease.worker or 'nobody'}, {state})"
        else:
            action = f"finish the interrupted '{lease.intent.value}' transition"
        plan.append(Planned(lease.name, lease.worker, lease.intent.value, live, action))
    if mode != "mine":
        for info in queue.ls(State.PROCESSING):
            if info.key in leased:
                continue
            if (fnmatch.fnmatchcase(info.key, include) if mode == "all"
                    else now - info.last_modified > limit):
                plan.append(Planned(info.key, "", "", False, "back to wait/ (no lease)"))
    return plan


def confirm_takeover(live: Sequence[Planned], yes: bool) -> None:
    workers = ", ".join(sorted({p.worker for p in live}))
    what = (f"{len(live)} request(s) are held by live workers ({workers}); taking them "
            "stops those jobs")
    if yes:
        return
    if not is_interactive():
        raise Failure(f"{what}: re-run with --yes to take them anyway (or use --stale)")
    click.confirm(f"{what}. Continue?", abort=True, err=True)


# ------------------------------------------------------------------------ purge

@cli.command()
@click.argument("state", type=STATES, metavar="STATE")
@click.option("--include", metavar="GLOB", help="Only names matching GLOB.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed for wait/ when not "
              "interactive).")
@json_option
@setting_options
def purge(state: str, include: str | None, yes: bool, as_json: bool) -> None:
    """Delete requests in finish/, failed/ or wait/.

    finish/ and failed/ go with their error records and results; wait/ only after a
    confirmation (or --yes). Requests in processing/ are never purged: use recover."""
    if state == State.PROCESSING:
        raise Failure("requests in processing/ are held by workers and cannot be purged; "
                      "use 's3q recover' to put them back into wait/ first")
    queue = App().open_queue()
    pattern = include or "*"
    infos = [i for i in queue.ls(state) if fnmatch.fnmatchcase(i.key, pattern)]
    if state == State.WAIT and infos and not yes:
        what = f"delete {len(infos)} waiting request(s)"
        if not is_interactive():
            raise Failure(f"refusing to {what} without --yes")
        click.confirm(f"{what.capitalize()}?", abort=True, err=True)
    purged, skipped = [], []
    for info in infos:
        try:  # only the bytes listed: a request re-submitted meanwhile stays
            queue.store.delete(layout.key(State(state).prefix, info.key), if_match=info.etag)
        except (NotFound, PreconditionFailed):
            skipped.append(info.key)
            continue
        if state != State.WAIT:
            queue.store.delete(layout.key(layout.ERRORS, info.key))
            queue.store.delete(layout.key(layout.RESULTS, info.key))
        purged.append(info.key)
    if as_json:
        echo_json({"state": state, "purged": purged, "skipped": skipped})
    else:
        click.echo(f"purged {len(purged)} request(s) from {state}/")
        for name in skipped:
            click.echo(f"skipped {name}: changed or gone meanwhile", err=True)


# ------------------------------------------------------------------------ config

@cli.group(name="config")
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


if __name__ == "__main__":
    main()
