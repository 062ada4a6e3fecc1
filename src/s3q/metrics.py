"""Prometheus metrics of one worker process (``s3q worker --metrics-port P``).

:class:`Metrics` keeps its own registry (nothing is added to prometheus_client's global one)
and is fed by three hooks the library offers, without patching anything:

* ``Queue.listeners``: every state transition this process makes (claims, completions,
  retries, dead letters, releases, lost leases, takeovers) → counters;
* ``Worker(on_job_done=...)``: the outcome and duration of every handler run → a histogram;
* ``Worker.running`` → the in-flight gauge, read at scrape time;
* ``S3Store.snapshot_counts()`` (when the store has it) → S3 requests by operation and error
  answers by code, read at scrape time.

Exported names (counters get ``_total``): ``s3q_jobs_{claimed,completed,failed,retried,
dead_lettered,released,lease_lost,takeovers,lease_renewals}_total``,
``s3q_handler_duration_seconds``
(label ``outcome``), ``s3q_jobs_in_flight``, ``s3q_store_requests_total`` (label
``operation``), ``s3q_store_errors_total`` (label ``code``), ``s3q_breaker_open`` and
``s3q_breaker_events_total`` (label ``event``: opened, closed, held_back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from s3q.breaker import Breaker
    from s3q.job import Job
    from s3q.store import Store
    from s3q.worker import Worker

__all__ = ["Metrics", "StoreCollector"]

#: Queue event → the counters it increments.
EVENTS: dict[str, tuple[str, ...]] = {
    "claimed": ("claimed",),
    "completed": ("completed",),
    "retry_scheduled": ("failed", "retried"),
    "dead_lettered": ("failed", "dead_lettered"),
    "released": ("released",),
    "lease_lost": ("lease_lost",),
    "took_over": ("takeovers",),
    "renewed": ("lease_renewals",),
}
COUNTERS: dict[str, str] = {
    "claimed": "Requests claimed from wait/ by this process.",
    "completed": "Requests completed (moved to finish/ or deleted).",
    "failed": "Failed attempts (retried or dead-lettered).",
    "retried": "Failed attempts scheduled for a retry.",
    "dead_lettered": "Requests moved to failed/.",
    "released": "Requests given back to wait/ (shutdown, recovery).",
    "lease_lost": "Jobs whose lease was taken over by another worker (fenced).",
    "takeovers": "Expired or own leases taken over by this process.",
    "lease_renewals": "Lease renewals (heartbeats) of running jobs.",
}
#: Handler durations, seconds: sub-second scripts to hour-long batch jobs.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class StoreCollector(Collector):
    """S3 requests by operation and error answers by code, read from the store at scrape
    time (stores without ``snapshot_counts``, such as the local one, export nothing)."""

    def __init__(self, store: Store) -> None:
        self._snapshot: Callable[[], tuple[dict[str, int], dict[str, int]]] | None = getattr(
            store, "snapshot_counts", None)

    def collect(self) -> Iterable[Metric]:
        if self._snapshot is None:
            return []
        requests, errors = self._snapshot()
        sent = CounterMetricFamily("s3q_store_requests", "Requests sent to the store "
                                   "(retries included), by operation.", labels=["operation"])
        for operation, n in sorted(requests.items()):
            sent.add_metric([operation], n)
        failed = CounterMetricFamily("s3q_store_errors", "Error answers and transport "
                                     "failures of the store, by code.", labels=["code"])
        for code, n in sorted(errors.items()):
            failed.add_metric([code], n)
        return [sent, failed]


class Metrics:
    """The metrics of one worker process, in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counters = {name: Counter(f"s3q_jobs_{name}", help_, registry=self.registry)
                         for name, help_ in COUNTERS.items()}
        self.duration = Histogram("s3q_handler_duration_seconds",
                                  "Handler run time, by outcome (completed, failed, released, "
                                  "lost, store_error).", ["outcome"], buckets=BUCKETS,
                                  registry=self.registry)
        self.in_flight = Gauge("s3q_jobs_in_flight", "Jobs this worker is running now.",
                               registry=self.registry)
        self.breaker_open = Gauge("s3q_breaker_open", "1 while this worker's circuit breaker "
                                  "is open (it does not claim), else 0.",
                                  registry=self.registry)
        self.breaker_events = Counter("s3q_breaker_events", "Circuit breaker events: opened, "
                                      "closed, held_back (a request given back uncharged).",
                                      ["event"], registry=self.registry)
        self._server: WSGIServer | None = None

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        """A ``Queue.listeners`` callback."""
        for name in EVENTS.get(event, ()):
            self.counters[name].inc()

    def on_job_done(self, job: Job, outcome: str, seconds: float) -> None:
        """A ``Worker(on_job_done=...)`` callback."""
        self.duration.labels(outcome).observe(seconds)

    def watch_worker(self, worker: Worker) -> None:
        """Feed from a worker: its queue's events, its jobs' outcomes and its running jobs
        (call before ``worker.run()``; the worker must have been built with
        ``on_job_done=metrics.on_job_done``)."""
        worker.queue.listeners.append(self.on_event)
        self.in_flight.set_function(lambda: len(worker.running))
        self.registry.register(StoreCollector(worker.queue.store))

    def watch_breaker(self, breaker: Breaker) -> None:
        """Feed from a worker's circuit breaker (:mod:`s3q.breaker`)."""
        self.breaker_open.set_function(lambda: float(breaker.is_open))
        breaker.listeners.append(lambda event: self.breaker_events.labels(event).inc())

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` over HTTP in a background thread."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
