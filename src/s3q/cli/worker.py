"""``s3q worker``: the handler, the metrics endpoint and the signals that stop it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import click

from s3q import layout
from s3q.breaker import Breaker
from s3q.cli.doctor import require_store
from s3q.cli.errors import EXIT_STORE, Failure
from s3q.cli.options import App, S3qCommand, setting_options
from s3q.config import show_config
from s3q.deploy import stop_timeout_problem
from s3q.handlers import ExecHandler, Handler, load_callable, process_handler
from s3q.imds import InterruptionWatcher
from s3q.job import Job
from s3q.logs import setup_logging
from s3q.queue import Queue
from s3q.sdnotify import Watchdog, notify, watchdog_interval
from s3q.startbackoff import StartBackoff
from s3q.store import StoreError
from s3q.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from s3q.events import EventSource
    from s3q.metrics import Metrics

log = logging.getLogger("s3q.cli")  # not __name__: the logger name is part of the logs


@click.command(cls=S3qCommand, examples=[
    "s3q worker --exec 'python process.py {path}' -c 8",
    "s3q worker --handler mypkg.jobs:handle --pool process",
    "s3q --config /etc/s3q/s3q.toml worker --exec ./process --burst"])
@click.option("--exec", "exec_cmd", metavar="CMD",
              help="Run this program per request; {path} and {name} are replaced, and "
              "S3Q_REQUEST_NAME, S3Q_REQUEST_PATH, S3Q_ATTEMPT, S3Q_WORKER_ID are set.")
@click.option("--handler", "handler_spec", metavar="MODULE:FUNC",
              help="Call this Python function with each request.")
@click.option("--pool", type=click.Choice(["thread", "process"]), default="thread",
              show_default=True, help="Where --handler runs: in a thread of the worker, or "
              "in a child process per request.")
@click.option("--burst", is_flag=True, help="Process what is there (and what will be: due "
              "retries, expired leases, files still being copied in), then exit (exit 3 if "
              "the store failed for 2 min or the breaker kept tripping: requests may wait).")
@click.option("--max-jobs", type=click.IntRange(min=1), metavar="N",
              help="Exit after claiming N requests.")
@click.option("--check-handler", is_flag=True, help="Only check that the handler can run "
              "(exit 2 if not).")
@click.option("--check-queue", is_flag=True, help="Only check the queue, as 'status --check' "
              "(exit 1).")
@setting_options("concurrency", "lease_ttl", "max_attempts", "grace", "worker_id",
                 "job_timeout", "breaker_threshold", "breaker_pause", "metrics_port",
                 "metrics_addr")
def worker(*, exec_cmd: str | None, handler_spec: str | None, pool: str, burst: bool,
           max_jobs: int | None, check_handler: bool, check_queue: bool) -> None:
    """Claim requests and run a handler on each, CONCURRENCY at a time.

    Refuses to start (exit 2) if the handler cannot run (a program not found, its script
    missing or not compiling, a module that does not import). After
    breaker_threshold different requests fail in a row it pauses claiming and gives
    failures back uncharged. SIGTERM: stop claiming, let jobs finish within grace, give
    the rest back, exit 0; a second signal gives them back at once. With
    S3Q_START_BACKOFF (the systemd unit sets it), a start after failed ones waits first."""
    if check_handler:
        cfg = App(quiet=True).config
        build_handler(exec_cmd, handler_spec, pool, cfg.job_timeout)
        what = (f"--exec {exec_cmd!r} (in {os.getcwd()})" if exec_cmd is not None
                else f"--handler {handler_spec} (--pool {pool})")
        click.echo(f"the handler can run: {what}")
        return
    if check_queue:  # (the queue this worker runs on: its flags count, as its environment)
        from s3q.cli.status import report
        report(App(), check=True)
        return
    requests: list[str] = []  # SIGTERM/SIGINT from now on are stop requests, never lost
    with stop_on_signals(requests):
        backoff = StartBackoff.from_env()  # under the unit: S3Q_START_BACKOFF
        if backoff is not None:
            setup_logging("info")  # until the config's settings apply
            if not backoff.wait(backoff.begin(), lambda: bool(requests)):
                backoff.reset("stopped while waiting")  # a stop, not a failed start
                return
        try:
            run_worker(requests, exec_cmd=exec_cmd, handler_spec=handler_spec, pool=pool,
                       burst=burst, max_jobs=max_jobs, backoff=backoff)
        except BaseException:
            if backoff is not None and requests:
                backoff.reset("stopped")
            raise
        if backoff is not None:
            backoff.reset("exited")


def run_worker(requests: list[str], *, exec_cmd: str | None, handler_spec: str | None,
               pool: str, burst: bool, max_jobs: int | None,
               backoff: StartBackoff | None = None) -> None:
    app = App(quiet=False)
    cfg = app.config
    handler = build_handler(exec_cmd, handler_spec, pool, cfg.job_timeout)
    queue = app.open_queue(create=True)
    check_reachable(queue)
    require_store(queue, cfg.probe_max_age)  # refuses a store lacking a guarantee (exit 2)
    worker_id = cfg.effective_worker_id()
    events = event_source(app, queue, worker_id) if not burst else None
    log.info("settings", extra={"event": "settings", "worker": worker_id, "settings": {
        name: value for name, value, _ in show_config(cfg, app.sources)}})
    if (problem := stop_timeout_problem(cfg.grace, os.environ)) is not None:
        log.warning(problem, extra={"event": "grace_exceeds_stop_timeout"})
    metrics = new_metrics() if cfg.metrics_port else None
    options = WorkerOptions(worker_id=worker_id, concurrency=cfg.concurrency, grace=cfg.grace,
                            burst=burst, max_jobs=max_jobs, poll_interval=cfg.poll_interval,
                            view_after=cfg.processing_view_after,
                            events_list_interval=cfg.events_list_interval)
    breaker = Breaker(queue, worker_id, threshold=cfg.breaker_threshold,
                      pause=cfg.breaker_pause)
    if cfg.breaker_threshold:
        breaker.clear_record()
        handler = breaker.wrap(handler)
    runner = Worker(queue, handler, options, stop_requests=requests,
                    on_job_done=metrics.on_job_done if metrics else None,
                    claim_gate=breaker.wait_until_closed if cfg.breaker_threshold else None,
                    gate_hopeless=breaker.hopeless,
                    events=events)
    if metrics is not None:
        metrics.watch_breaker(breaker)
        serve_metrics(app, metrics, runner, cfg.metrics_endpoint(0)[0])  # metrics_addr's host
    if cfg.drain_on_interruption:
        watcher = InterruptionWatcher(on_notice=lambda reason: drain(runner, reason)).start()
        app.ctx.call_on_close(watcher.stop)
    with systemd_service(worker_id, queue.store.url, backoff):
        try:
            stats = runner.run()
        finally:
            breaker.stopped()  # a stopped worker's breaker says nothing any more
    log.info("worker %s done: %d completed, %d failed, %d released, %d lost", worker_id,
             stats.completed, stats.failed, stats.released, stats.lost,
             extra={"event": "worker_done", "worker": worker_id, "completed": stats.completed,
                    "failed": stats.failed, "released": stats.released, "lost": stats.lost})
    if stats.error is not None:  # a burst that could not drain its queue
        raise Failure(f"the burst ended early: {stats.error}; requests may still wait",
                      EXIT_STORE)


@contextlib.contextmanager
def systemd_service(worker_id: str, url: str,
                    backoff: StartBackoff | None = None) -> Iterator[None]:
    """READY=1 (the queue is reachable, the handler can run) and a watchdog while the
    worker runs, STOPPING=1 after; nothing outside a Type=notify unit. A worker that stays
    up long enough forgets the failed starts before it (``backoff``)."""
    notify(f"READY=1\nSTATUS=worker {worker_id} on {url}")
    interval = watchdog_interval()
    watchdog = Watchdog(interval).start() if interval else None
    cancel = backoff.reset_when_healthy() if backoff is not None else None
    try:
        yield
    finally:
        notify("STOPPING=1")
        if cancel is not None:
            cancel()
        if watchdog is not None:
            watchdog.stop()


def event_source(app: App, queue: Queue, worker_id: str) -> EventSource | None:
    """The worker's event source when ``events_queue`` is set (its SQS client uses the
    same credentials as S3)."""
    if app.config.events_queue is None:
        return None
    from s3q.config import resolve_secrets
    from s3q.events import EventSource, s3_location

    s3_location(queue)  # a queue on S3, else a configuration error before anything starts
    sqs = resolve_secrets(app.config).sqs_queue()
    assert sqs is not None
    app.ctx.call_on_close(sqs.close)
    return EventSource(queue, sqs, worker_id)


def drain(runner: Worker, reason: str) -> None:
    """The instance is going away (Spot interruption, scale-in): stop as on SIGTERM."""
    log.warning("interruption notice (%s): draining", reason,
                extra={"event": "interruption", "reason": reason})
    runner.request_stop(f"interruption notice ({reason})")


def build_handler(exec_cmd: str | None, spec: str | None, pool: str,
                  timeout: float) -> Handler:
    if (exec_cmd is None) == (spec is None):
        raise click.UsageError("give exactly one of --exec CMD and --handler MODULE:FUNC")
    try:
        if exec_cmd is not None:
            if pool != "thread":
                raise click.UsageError("--pool applies to --handler only")
            handler = ExecHandler(exec_cmd, timeout=timeout or None)
            handler.check()  # a program that cannot run would fail every request
            return handler
        assert spec is not None
        # Like `python -m`: the handler's module may live in the current directory.
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        if pool == "process":
            paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if cwd not in paths:  # (the child, `python -m`, runs in this directory and has
                # it on its path already; PYTHONPATH says so explicitly)
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [cwd, *paths] if p)
            return process_handler(spec, timeout or None)
        if timeout:
            raise click.UsageError(
                f"job_timeout={timeout:g}s cannot stop a handler running in a thread; run it "
                "with --pool process (its process is killed at the timeout), or set "
                "job_timeout to 0")
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
def stop_on_signals(requests: list[str]) -> Iterator[None]:
    """SIGTERM/SIGINT, from the very start of the command: each is appended to ``requests``,
    which the worker acts on (the first stops gracefully, the next gives running jobs back
    now). The handler only appends: it may interrupt the main thread anywhere, even inside
    a lock or a write to the log, so it takes no lock and writes nothing itself."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        requests.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
