"""``s3q exporter``: the queue gauges for Prometheus, from one process for the whole queue."""

from __future__ import annotations

import logging
import threading

import click

from s3q.cli.dashboard import exit_on_sigterm, open_metered_queue
from s3q.cli.errors import Failure
from s3q.cli.options import App, setting_options

log = logging.getLogger("s3q.cli")
DEFAULT_PORT = 9464


@click.command()
@click.option("--refresh", type=click.FloatRange(min=1), default=15.0, show_default=True,
              metavar="SECONDS", help="Read the store at most once per this interval, "
              "whatever the scrape rate.")
@click.option("--count-limit", type=click.IntRange(min=1), default=100_000,
              show_default=True, metavar="N", help="List at most N requests per state "
              "(finish/: one page) per refresh.")
@setting_options
def exporter(refresh: float, count_limit: int) -> None:
    """Serve the queue gauges (counts per state, oldest waiting age, in flight per worker,
    workers, paused, backlog per worker) on metrics_addr (default 127.0.0.1:9464)/metrics.

    Run ONE per queue (or use the dashboard's /metrics): workers do not export these.
    Names, types and labels: docs/METRICS.md."""
    from prometheus_client import start_http_server

    from s3q.dashboard.snapshot import Snapshots
    from s3q.gauges import queue_registry

    app = App(quiet=False)
    host, port = app.config.metrics_endpoint(DEFAULT_PORT)
    queue = open_metered_queue(app)
    registry = queue_registry(Snapshots(queue, ttl=refresh, count_limit=count_limit),
                              queue.store)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise Failure(f"metrics_addr: cannot serve on {host}:{port}: {e.strerror or e}"
                      ) from None
    url = f"http://{host}:{server.server_port}/metrics"
    log.info("queue gauges on %s", url, extra={"event": "exporter_serving", "url": url})
    click.echo(f"s3q exporter on {url} (Ctrl-C to stop)", err=True)
    exit_on_sigterm()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
