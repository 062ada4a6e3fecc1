"""``s3q exporter``: the queue gauges for Prometheus, from one process for the whole queue."""

from __future__ import annotations

import logging
import threading

import click

from s3q.cli.dashboard import exit_on_sigterm, open_metered_queue
from s3q.cli.errors import Failure
from s3q.cli.options import App, Duration, S3qCommand, setting_options

log = logging.getLogger("s3q.cli")
DEFAULT_PORT = 9464


@click.command(cls=S3qCommand, examples=[
    "s3q exporter                                   # http://127.0.0.1:9464/metrics",
    "s3q exporter --metrics-addr 0.0.0.0:9464        # for a Prometheus on another host",
    "s3q exporter --cloudwatch-namespace S3Q/prod   # and BacklogPerInstance for Auto Scaling"])
@click.option("--refresh", type=Duration(minimum=1.0), default="15s", show_default=True,
              metavar="EVERY", help="Read the store at most once per this interval, "
              "whatever the scrape rate.")
@click.option("--count-limit", type=click.IntRange(min=1), default=100_000,
              show_default=True, metavar="N", help="List at most N requests per state "
              "(finish/: one page) per refresh.")
@click.option("--cloudwatch-namespace", metavar="NAMESPACE", help="Also put the backlog "
              "per instance (and Backlog, LiveWorkers, OldestWaitingAge, InFlight, Failed) "
              "into this CloudWatch namespace every refresh, for an Auto Scaling "
              "target-tracking policy (needs cloudwatch:PutMetricData).")
@setting_options("metrics_addr")
def exporter(refresh: float, count_limit: int, cloudwatch_namespace: str | None) -> None:
    """Serve the queue gauges (counts per state, oldest waiting age, in flight per worker,
    workers, paused, backlog per worker) on metrics_addr (default 127.0.0.1:9464)/metrics.

    Run ONE per queue (or use the dashboard's /metrics): workers do not export these.
    Names, types and labels: docs/METRICS.md."""
    from s3q.dashboard.snapshot import Snapshots
    from s3q.gauges import queue_registry, serve_gauges

    app = App(quiet=False)
    host, port = app.config.metrics_endpoint(DEFAULT_PORT)
    queue = open_metered_queue(app)
    snapshots = Snapshots(queue, ttl=refresh, count_limit=count_limit)
    registry = queue_registry(snapshots, queue.store)
    publisher = None
    if cloudwatch_namespace:
        from s3q.cloudwatch import BacklogPublisher

        publisher = BacklogPublisher(cloudwatch_namespace, region=app.config.region)
    try:
        server = serve_gauges(registry, host, port)
    except OSError as e:
        raise Failure(f"metrics_addr: cannot serve on {host}:{port}: {e.strerror or e}"
                      ) from None
    url = f"http://{host}:{server.server_port}/metrics"
    log.info("queue gauges on %s", url, extra={"event": "exporter_serving", "url": url})
    click.echo(f"s3q exporter on {url} (Ctrl-C to stop)", err=True)
    exit_on_sigterm()
    forever = threading.Event()  # never set: SIGTERM and Ctrl-C end the loop
    try:
        while not forever.is_set():
            if publisher is not None:
                publisher.publish_latest(snapshots)
            forever.wait(refresh if publisher is not None else None)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
