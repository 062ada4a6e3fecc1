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
from s3q.cli.errors import EXIT_STORE, Failure
from s3q.cli.options import App, setting_options
from s3q.config import show_config
from s3q.handlers import ExecHandler, Handler, load_callable, process_handler
from s3q.imds import InterruptionWatcher
from s3q.job import Job
from s3q.queue import Queue
from s3q.store import StoreError
from s3q.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from s3q.events import EventSource
    from s3q.metrics import Metrics

log = logging.getLogger("s3q.cli")  # not __name__: the logger name is part of the logs


@click.command()
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
    requests: list[str] = []  # SIGTERM/SIGINT from now on are stop requests, never lost
    with stop_on_signals(requests):
        run_worker(requests, exec_cmd=exec_cmd, handler_spec=handler_spec, pool=pool,
                   burst=burst, max_jobs=max_jobs, metrics_addr=metrics_addr)


def run_worker(requests: list[str], *, exec_cmd: str | None, handler_spec: str | None,
               pool: str, burst: bool, max_jobs: int | None, metrics_addr: str) -> None:
    app = App(quiet=False)
    cfg = app.config
    handler = build_handler(exec_cmd, handler_spec, pool, cfg.job_timeout)
    queue = app.open_queue()
    check_reachable(queue)
    worker_id = cfg.effective_worker_id()
    events = event_source(app, queue, worker_id) if not burst else None
    log.info("settings", extra={"event": "settings", "worker": worker_id, "settings": {
        name: value for name, value, _ in show_config(cfg, app.sources)}})
    metrics = new_metrics() if cfg.metrics_port else None
    options = WorkerOptions(worker_id=worker_id, concurrency=cfg.concurrency, grace=cfg.grace,
                            burst=burst, max_jobs=max_jobs, poll_interval=cfg.poll_interval,
                            events_list_interval=cfg.events_list_interval)
    runner = Worker(queue, handler, options, stop_requests=requests,
                    on_job_done=metrics.on_job_done if metrics else None, events=events)
    if metrics is not None:
        serve_metrics(app, metrics, runner, metrics_addr)
    if cfg.drain_on_interruption:
        watcher = InterruptionWatcher(on_notice=lambda reason: drain(runner, reason)).start()
        app.ctx.call_on_close(watcher.stop)
    stats = runner.run()
    log.info("worker %s done: %d completed, %d failed, %d released, %d lost", worker_id,
             stats.completed, stats.failed, stats.released, stats.lost,
             extra={"event": "worker_done", "worker": worker_id, "completed": stats.completed,
                    "failed": stats.failed, "released": stats.released, "lost": stats.lost})


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
            return ExecHandler(exec_cmd, timeout=timeout or None)
        assert spec is not None
        # Like `python -m`: the handler's module may live in the current directory.
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        if pool == "process":
            paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if cwd not in paths:  # the child runs in a temporary directory
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
