"""``s3q dashboard``: the web dashboard (and the queue gauges at its /metrics)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import click

from s3q import layout
from s3q.cli.errors import EXIT_STORE, Failure
from s3q.cli.options import App, Duration, S3qCommand, setting_options
from s3q.config import resolve_secrets
from s3q.queue import Queue
from s3q.store import StoreError

log = logging.getLogger("s3q.cli")


def open_metered_queue(app: App) -> Queue:
    """The queue over a store that counts its requests (shown per page, exported)."""
    from s3q.dashboard.metered import MeteredStore

    queue = app.open_queue(wrap=MeteredStore)
    try:
        queue.store.list_page(layout.WAIT, limit=1)
    except StoreError as e:
        raise Failure(f"cannot use the queue at {queue.store.url}: {e}", EXIT_STORE) from None
    return queue


def exit_on_sigterm() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)


@click.command(cls=S3qCommand, examples=[
    "s3q dashboard                     # http://127.0.0.1:8080/",
    "ssh -L 8080:127.0.0.1:8080 HOST   # then open it from your laptop",
    "S3Q_DASHBOARD_TOKEN=ssm:/app/dashboard-token s3q dashboard --host 0.0.0.0"])
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs dashboard_token or "
              "dashboard_user + dashboard_password in the settings.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port (0: any free one, printed at start).")
@click.option("--refresh", type=Duration(minimum=1.0), default="5s", show_default=True,
              metavar="EVERY", help="Live refresh of the pages; the store is read at most "
              "once per this interval, whatever the number of viewers.")
@click.option("--count-limit", type=click.IntRange(min=1), default=10_000,
              show_default=True, metavar="N", help="List at most N requests per state "
              "(finish/: one page) per refresh; beyond, counts read 'N+'.")
@setting_options("metrics_addr")
def dashboard(host: str, port: int, refresh: float, count_limit: int) -> None:
    """Serve the web dashboard: counts, throughput, in flight, failed, workers, pause.

    Pages are rendered on the server; actions (requeue, purge, pause, resume) are POSTs
    with CSRF protection, confirmed with the number of requests they touch, and logged with
    who and when. The queue gauges are at /metrics. Bound to loopback by default."""
    from waitress.server import BaseWSGIServer, create_server

    from s3q.dashboard.app import create_app
    from s3q.dashboard.security import Credentials
    from s3q.dashboard.snapshot import Snapshots
    from s3q.gauges import queue_registry

    app = App(quiet=False)
    app.config = resolve_secrets(app.config)
    credentials = Credentials.from_config(app.config)
    refusal = credentials.bind_refusal(host)
    if refusal:
        raise Failure(refusal)
    queue = open_metered_queue(app)
    snapshots = Snapshots(queue, ttl=refresh, count_limit=count_limit)  # pages and /metrics
    web = create_app(queue, credentials, refresh=refresh, count_limit=count_limit,
                     metrics=queue_registry(snapshots, queue.store), snapshots=snapshots)
    try:
        server = create_server(web, host=host, port=port, threads=8, ident="s3q")
    except OSError as e:  # the port in use, an address not of this host
        raise Failure(f"cannot serve the dashboard on {host}:{port}: {e.strerror or e}"
                      ) from None
    except ValueError:  # waitress: a name that does not resolve, not an address
        raise Failure(f"cannot serve the dashboard on {host}:{port}: --host is not an "
                      "address or a name of this host") from None
    assert isinstance(server, BaseWSGIServer)  # one host and port: one socket
    url = f"http://{host if ':' not in host else f'[{host}]'}:{server.getsockname()[1]}/"
    log.info("dashboard on %s", url, extra={"event": "dashboard_serving", "url": url,
                                             "auth": credentials.required})
    click.echo(f"s3q dashboard on {url} (Ctrl-C to stop)", err=True)
    exit_on_sigterm()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
