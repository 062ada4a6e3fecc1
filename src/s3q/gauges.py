"""Queue gauges for Prometheus (and autoscaling), from ONE process per queue: the dashboard
(``s3q dashboard`` serves them at ``/metrics``) or ``s3q exporter``. Workers do not export
them (every worker would repeat the same listings and the same numbers).

Each scrape reads the latest :class:`~s3q.dashboard.snapshot.Snapshot` (rebuilt at most
every ``ttl`` seconds, whatever the scrape rate), so the store cost is bounded as described
in :mod:`s3q.dashboard.snapshot`. Every name, type and label: docs/METRICS.md.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from s3q.dashboard.snapshot import Snapshot, Snapshots
from s3q.logs import FailureRun
from s3q.metrics import StoreCollector
from s3q.store import Store, StoreError

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["QueueCollector", "queue_registry", "serve_gauges"]

log = logging.getLogger("s3q.gauges")


class QueueCollector(Collector):
    """The gauges of one queue, from its snapshots."""

    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterable[Metric]:
        return gauges(self.snapshots.get())


def gauges(snap: Snapshot) -> list[Metric]:
    def gauge(name: str, help_: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, help_, labels=labels)

    requests = gauge("s3q_queue_requests", "Requests per state (listed up to the count "
                     "limit: see s3q_queue_requests_complete).", ["state"])
    complete = gauge("s3q_queue_requests_complete", "1 if s3q_queue_requests{state} is "
                     "the exact count, 0 if the listing stopped at the limit (there are "
                     "more).", ["state"])
    for state, count in snap.counts.items():
        requests.add_metric([state], count.count)
        complete.add_metric([state], 1 if count.complete else 0)
    oldest = gauge("s3q_queue_oldest_waiting_age_seconds", "Age of the oldest request in "
                   "wait/ (0 when none waits): the backlog's latency.")
    oldest.add_metric([], snap.oldest_waiting_age or 0.0)
    retrying = gauge("s3q_queue_retry_waiting", "Requests back in wait/ waiting for a "
                     "retry (their backoff).")
    retrying.add_metric([], snap.retrying)
    in_flight = gauge("s3q_queue_in_flight", "Requests in flight (leases other than "
                      "resting retries), per worker id holding them.", ["worker"])
    for worker, n in sorted(Counter(r.worker for r in snap.in_flight).items()):
        in_flight.add_metric([worker], n)
    expired = gauge("s3q_queue_expired_leases", "Leases not renewed in time (their worker "
                    "died); taken over within two scan intervals.")
    expired.add_metric([], sum(r.expired for r in snap.in_flight))
    overdue = gauge("s3q_queue_overdue_leases", "Expired leases nobody took over in time: "
                    "no worker is running (s3q status --check fails).")
    overdue.add_metric([], sum(r.overdue for r in snap.in_flight))
    unreadable = gauge("s3q_queue_unreadable_leases", "Leases this process may not read "
                       "(GET denied): in no other gauge; if their worker dies, no worker "
                       "can take them over (s3q status --check fails).")
    unreadable.add_metric([], len(snap.unreadable_leases))
    corrupt = gauge("s3q_queue_corrupt_leases", "Corrupt leases the takeover leaves for an "
                    "operator (no body s3q can read, the request nowhere else): never "
                    "overdue, never cleared by a worker (s3q status --check fails).")
    corrupt.add_metric([], len(snap.kept_leases))
    read = gauge("s3q_queue_leases_complete", "1 if every lease was read, 0 if only the "
                 "first ones (in key order, up to the limit): in flight, retry waiting, "
                 "expired and overdue then count those only.")
    read.add_metric([], 1 if snap.leases_complete else 0)
    paused = gauge("s3q_queue_paused", "1 while the queue is paused (s3q pause).")
    paused.add_metric([], 1 if snap.paused else 0)
    workers = gauge("s3q_workers", "Workers in the registry, live or stale.", ["state"])
    live = snap.live_workers
    workers.add_metric(["live"], len(live))
    workers.add_metric(["stale"], len(snap.workers) - len(live))
    slots = gauge("s3q_worker_slots", "Slots (concurrency) of each live worker, as of its "
                  "last heartbeat.", ["worker"])
    busy = gauge("s3q_worker_busy_slots", "Busy slots of each live worker: the requests it "
                 "holds, from the leases.", ["worker"])
    for w in live:
        if w.record is not None:
            slots.add_metric([w.id], w.record.slots)
            busy.add_metric([w.id], snap.busy(w.id))
    rate = gauge("s3q_queue_completed_per_minute", "Requests completed per minute over the "
                 "last 5 whole minutes, from the worker registry (finish/ is not listed).")
    rate.add_metric([], sum(snap.throughput[-6:-1]) / 5)
    backlog = gauge("s3q_queue_backlog_per_worker", "Requests in wait/ per live worker (all "
                    "of wait/ with no live worker): the target-tracking metric for "
                    "scaling a fleet on its backlog.")
    backlog.add_metric([], snap.counts["wait"].count / max(1, len(live)))
    took = gauge("s3q_exporter_snapshot_seconds", "How long gathering the latest snapshot "
                 "took.")
    took.add_metric([], snap.seconds)
    return [requests, complete, oldest, retrying, in_flight, expired, overdue, unreadable,
            corrupt, read, paused, workers, slots, busy, rate, backlog, took]


def queue_registry(snapshots: Snapshots, store: Store) -> CollectorRegistry:
    """A registry with the queue gauges and the exporter's own store requests."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(snapshots))
    registry.register(StoreCollector(store))
    return registry


def answering_store_errors(app: WSGIApplication) -> WSGIApplication:
    """``app`` (prometheus_client's), a scrape the store fails answered 503 with why in one
    line (a failed scrape: Prometheus' ``up`` is 0, never gauges of an empty queue) instead
    of a traceback on stderr each time; the first of a run of such scrapes is logged at
    WARNING, the next ones at DEBUG, and its end at INFO."""
    failures = FailureRun(log, "scrapes", failed_event="scrape_failed",
                          ended_event="scrape_answered")

    def answer(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            body = app(environ, start_response)
        except StoreError as e:
            failures.failed(f"cannot read the queue for a scrape: {e}")
            start_response("503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"s3q exporter: cannot read the queue: {' '.join(str(e).split())}\n"
                    .encode()]
        failures.ended("scrapes answered again, after %d that could not")
        return body

    return answer


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no line per request
        pass


def serve_gauges(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve ``registry`` on ``host:port`` (``/metrics``, any path), in a daemon thread,
    as prometheus_client's ``start_http_server`` does, answering store errors
    (:func:`answering_store_errors`). Raises OSError (the port in use, ...)."""
    family, _, _, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(str(where[0]), port, answering_store_errors(make_wsgi_app(registry)),
                         Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="s3q-gauges", daemon=True).start()
    return server
