"""The ``events`` section: waking on S3 events (moto's S3 notifications to its own SQS)
against polling, side by side in one run: latency from PUT to handler start at 1 request/s
(p50, p99), and the requests idle fleets of 1 and 10 workers make per hour, priced at S3
and SQS list prices."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from bench.common import (
    PRICE_CLASS_A,
    PRICE_CLASS_B,
    Context,
    diff_counts,
    percentile,
    price_class,
    request_body,
    request_name,
    wait_for,
)
from bench.s3env import S3Env
from bench.sections._shared import Section, _fmt
from s3q import Queue, QueueConfig
from s3q.backends.s3 import S3Store
from s3q.events import EventSource
from s3q.eventsetup import setup_events
from s3q.job import Job
from s3q.sqs import SqsQueue, parse_queue
from s3q.worker import Worker, WorkerOptions
from tests.s3server import S3Endpoint

#: SQS list price (standard queue, beyond the free tier), dollars per request.
PRICE_SQS = 0.40 / 1e6
#: The fleets measured idle at once: (label, workers, events, scanner role).
FLEETS = [("before issue 13: every worker scans", 1, False, False),
          ("before issue 13: every worker scans", 10, False, False),
          ("polling", 1, False, True), ("polling", 10, False, True),
          ("events", 1, True, True), ("events", 10, True, True)]


def _sqs(endpoint: S3Endpoint, name: str) -> SqsQueue:
    return SqsQueue(parse_queue(name), region=endpoint.region,
                    endpoint_url=endpoint.endpoint_url, access_key_id=endpoint.access_key_id,
                    secret_access_key=endpoint.secret_access_key)


def _wire(s3: S3Env, tag: str) -> tuple[S3Endpoint, str, str]:
    """A fresh bucket wired to a fresh SQS queue by ``s3q events setup``'s function."""
    endpoint, prefix = s3.fresh(tag)
    name = f"bench-{tag}-{uuid4().hex[:8]}"
    setup = _sqs(endpoint, name)
    setup_events(endpoint.client(), setup, bucket=endpoint.bucket, wait_prefix=f"{prefix}/wait/")
    setup.close()
    return endpoint, prefix, name


@dataclass
class _Member:
    """One worker of a fleet, in a thread of this process, with its own clients."""

    store: S3Store
    worker: Worker
    sqs: SqsQueue | None
    events: EventSource | None
    thread: threading.Thread = field(init=False)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        sqs = Counter(self.sqs.request_counts) if self.sqs is not None else Counter()
        return self.store.snapshot_counts()[0], sqs

    def stop(self) -> None:
        self.worker.stop()
        self.worker.stop()
        self.thread.join(timeout=30)
        if self.sqs is not None:
            self.sqs.close()


def _member(s3: S3Env, endpoint: S3Endpoint, prefix: str, worker_id: str, *,
            queue_name: str | None, role: bool = True, handler: Any = None) -> _Member:
    store = s3.store(endpoint, prefix)
    queue = Queue(store)
    if not role:  # as before issue 13: every worker scans (no scanner role)
        queue._scanner.role = None
    sqs = _sqs(endpoint, queue_name) if queue_name else None
    events = EventSource(queue, sqs, worker_id) if sqs is not None else None
    worker = Worker(queue, handler or (lambda job: None), WorkerOptions(worker_id),
                    events=events)
    return _Member(store, worker, sqs, events)


def _latency_run(s3: S3Env, n: int, rate: float, events: bool) -> dict[str, Any]:
    if events:
        endpoint, prefix, name = _wire(s3, "ev-lat")
    else:
        (endpoint, prefix), name = s3.fresh("poll-lat"), ""
    started: dict[str, float] = {}

    def handler(job: Job) -> None:
        started.setdefault(job.name, time.time())

    member = _member(s3, endpoint, prefix, "bench-latency", queue_name=name or None,
                     handler=handler)
    producer = Queue(s3.store(endpoint, prefix))
    member.start()
    time.sleep(2.0)  # the worker has found the queue empty (and listens on SQS)
    if member.events is not None:
        wait_for(lambda: member.events is not None and member.events.healthy, 30)
    s0, q0 = member.counts()
    submitted: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        submitted[request_name(i)] = time.time()  # before the PUT
        producer.submit(request_name(i), request_body(i))
    wait_for(lambda: len(started) >= n, 60)
    s1, q1 = member.counts()
    member.stop()
    lat = [started[k] - submitted[k] for k in submitted if k in started]
    return {"mode": "events" if events else "polling", "requests": n, "handled": len(lat),
            "p50_s": percentile(lat, 50), "p90_s": percentile(lat, 90),
            "p99_s": percentile(lat, 99), "max_s": max(lat) if lat else float("nan"),
            "s3_per_job": sum(diff_counts(s1, s0).values()) / max(1, len(lat)),
            "sqs_per_job": sum(diff_counts(q1, q0).values()) / max(1, len(lat)),
            "latencies": lat}


def _usd(s3_counts: Counter[str], sqs_counts: Counter[str]) -> float:
    total = sum(n * (PRICE_CLASS_A if price_class(op) == "A" else
                     PRICE_CLASS_B if price_class(op) == "B" else 0.0)
                for op, n in s3_counts.items())
    return total + sum(sqs_counts.values()) * PRICE_SQS


def _model(workers: int, events: bool, role: bool, config: QueueConfig,
           options: WorkerOptions) -> dict[str, float]:
    """Requests per hour the idle fleet should make: the slots' listing of wait/ (one slot
    polls, every ~3/4 of its cap), the scans (2 LISTs each), the role, the long polls."""
    scan = config.effective_scan_interval
    cap = options.events_list_interval if events else min(options.poll_interval, scan)
    scanners = 1 if role else workers
    return {"ListObjectsV2": workers * 3600 / (0.75 * cap) + scanners * 2 * 3600 / scan,
            "PutObject": 3600 / scan if role else 0.0,
            "GetObject": (workers - 1) * 3600 / scan if role else 0.0,
            "ReceiveMessage": workers * 3600 / 20 if events else 0.0}


def _idle_fleets(ctx: Context, s3: S3Env, seconds: float, warmup: float) -> list[dict[str, Any]]:
    members: list[tuple[int, _Member]] = []
    for f, (_, workers, events, role) in enumerate(FLEETS):
        if events:
            endpoint, prefix, name = _wire(s3, f"ev-idle{f}")
        else:
            (endpoint, prefix), name = s3.fresh(f"poll-idle{f}"), ""
        for w in range(workers):
            members.append((f, _member(s3, endpoint, prefix, f"bench-{f}-{w}",
                                       queue_name=name or None, role=role)))
    for _, m in members:
        m.start()
    time.sleep(warmup)  # start-up listings, the role taken, the polling back-off ramp
    before = [m.counts() for _, m in members]
    t0 = time.monotonic()
    time.sleep(seconds)
    after = [m.counts() for _, m in members]
    elapsed = time.monotonic() - t0
    for _, m in members:
        m.stop()
    rows: list[dict[str, Any]] = []
    for f, (label, workers, events, role) in enumerate(FLEETS):
        s3c: Counter[str] = Counter()
        sqsc: Counter[str] = Counter()
        for (g, _), (b3, bq), (a3, aq) in zip(members, before, after, strict=True):
            if g == f:
                s3c.update(diff_counts(a3, b3))
                sqsc.update(diff_counts(aq, bq))
        per_hour = {op: n * 3600 / elapsed for op, n in (s3c + sqsc).items()}
        usd_day = _usd(s3c, sqsc) * 86400 / elapsed
        model = _model(workers, events, role, QueueConfig(), WorkerOptions("x"))
        rows.append({"fleet": label, "workers": workers, "events": events, "role": role,
                     "per_hour": per_hour, "model_per_hour": model,
                     "lists_per_hour": per_hour.get("ListObjectsV2", 0.0),
                     "usd_per_worker_day": usd_day / workers,
                     "usd_per_fleet_month": usd_day * 30})
        ctx.figure("events", f"idle {label}, {workers} worker(s): LIST/hour",
                   round(rows[-1]["lists_per_hour"]), "requests/h",
                   model=round(model["ListObjectsV2"]))
        ctx.figure("events", f"idle {label}, {workers} worker(s): $/worker/day",
                   round(rows[-1]["usd_per_worker_day"], 4), "$")
    return rows


def events_section(ctx: Context, s3: S3Env) -> Section:
    sec = Section("events", "Waking on S3 events vs polling: latency and idle cost")
    if not s3.is_moto:
        sec.md = ["Not run: needs moto (S3 notifications to its own SQS)."]
        return sec
    n = 30 if ctx.quick else 120
    seconds, warmup = (120.0, 20.0) if ctx.quick else (600.0, 30.0)
    runs = [_latency_run(s3, n, 1.0, events) for events in (False, True)]
    for r in runs:
        for q in ("p50", "p99"):
            ctx.figure("events", f"latency at 1/s, {r['mode']} {q}", round(r[f"{q}_s"], 3), "s")
    fleets = _idle_fleets(ctx, s3, seconds, warmup)
    sec.data = {"latency": runs, "idle": fleets, "idle_seconds": seconds,
                "prices": {"s3_class_a_per_1000": 0.005, "s3_class_b_per_1000": 0.0004,
                           "sqs_per_million": 0.40}}
    poll, ev = runs
    sec.md += [
        f"**Latency**, PUT → handler start, {n} requests at 1/s, one `Worker` (defaults: "
        "concurrency 4, poll_interval 10 s) on S3 (moto); events: `events_queue` wired by "
        "`s3q events setup`'s function, `events_list_interval` 300 s. Polling first, then "
        "events, same run.",
        "",
        "| mode | handled | p50 s | p90 s | p99 s | max s | S3 requests/job | SQS requests/job |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        sec.md.append(f"| {r['mode']} | {r['handled']}/{r['requests']} | **{r['p50_s']:.3f}** "
                      f"| {r['p90_s']:.3f} | **{r['p99_s']:.3f}** | {r['max_s']:.3f} | "
                      f"{r['s3_per_job']:.2f} | {r['sqs_per_job']:.2f} |")
    sec.md += [
        "",
        f"- p99 polling / events: **{poll['p99_s'] / ev['p99_s']:.1f}x** "
        f"({poll['p99_s']:.2f} s vs {ev['p99_s']:.2f} s; goal with events: < 0.3 s).",
        "",
        f"**Idle fleets**, all measured at once for {seconds:g} s after a {warmup:g} s "
        "warm-up, each fleet on its own bucket (and SQS queue), defaults (lease_ttl 30 s: a "
        "scan every 15 s). \"Before issue 13\" is the same code with the scanner role "
        "switched off (every worker scans, as before). Requests per hour for the whole "
        "fleet, measured (model in brackets); dollars at S3 list prices (PUT/LIST $0.005 "
        "per 1,000, GET/HEAD $0.0004 per 1,000) and SQS $0.40 per million requests.",
        "",
        "| fleet | workers | LIST/h | PUT/h | GET/h | SQS receives/h | $ per worker per day "
        "| $ per fleet per month |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in fleets:
        ph, mo = row["per_hour"], row["model_per_hour"]

        def cell(op: str, ph: dict[str, float] = ph, mo: dict[str, float] = mo) -> str:
            return f"{_fmt(ph.get(op, 0.0), 0)} [{_fmt(mo.get(op, 0.0), 0)}]"

        sec.md.append(f"| {row['fleet']} | {row['workers']} | **{cell('ListObjectsV2')}** | "
                      f"{cell('PutObject')} | {cell('GetObject')} | {cell('ReceiveMessage')} | "
                      f"{row['usd_per_worker_day']:.4f} | {row['usd_per_fleet_month']:.2f} |")
    old_one = next(r for r in fleets if r["fleet"].startswith("before") and r["workers"] == 1)
    ev_ten = next(r for r in fleets if r["events"] and r["workers"] == 10)
    sec.md += [
        "",
        f"- LISTs of an idle 10-worker fleet with events / one idle worker before issue 13: "
        f"**{ev_ten['lists_per_hour'] / max(1.0, old_one['lists_per_hour']):.2f}x** "
        f"({ev_ten['lists_per_hour']:,.0f} vs {old_one['lists_per_hour']:,.0f} per hour; "
        "goal: at most 1x).",
        "- With events, a worker lists wait/ every 150-300 s (`events_list_interval`); a "
        "window shorter than a few of those intervals counts few of them (see the model).",
    ]
    return sec
