"""The ``latency`` section: submit → handler start at low load, p50/p99, with the default
poll_interval and with 1 s."""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.common import (
    Context,
    diff_counts,
    percentile,
    request_body,
    request_name,
    wait_for,
)
from bench.s3env import S3Env
from bench.sections._shared import Section, _ratio
from s3q import Queue
from s3q.job import Job
from s3q.worker import Worker, WorkerOptions


def _latency_run(s3: S3Env, seconds: float, rate: float,
                 poll_interval: float | None) -> dict[str, Any]:
    endpoint, prefix = s3.fresh("latency")
    producer = Queue(s3.store(endpoint, prefix))
    store = s3.store(endpoint, prefix)
    started: dict[str, float] = {}
    submitted: dict[str, float] = {}

    def handler(job: Job) -> None:
        started.setdefault(job.name, time.time())
        job.read()

    kw: dict[str, Any] = {"poll_interval": poll_interval} if poll_interval else {}
    opts = WorkerOptions(worker_id="bench-latency", **kw)
    worker = Worker(Queue(store), handler, opts)
    th = threading.Thread(target=worker.run, daemon=True)
    th.start()
    time.sleep(2.0)  # the worker has found the queue empty and is backing off
    c0, _ = store.snapshot_counts()
    n = int(seconds * rate)
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        name = request_name(i)
        submitted[name] = time.time()  # before the PUT
        producer.submit(name, request_body(i))
    wait_for(lambda: len(started) >= n, opts.poll_interval + 30)
    c1, _ = store.snapshot_counts()
    worker.stop()
    worker.stop()
    th.join(timeout=30)
    lat = [started[k] - submitted[k] for k in submitted if k in started]
    return {"poll_interval": opts.poll_interval, "requests": n, "handled": len(lat),
            "p50_s": percentile(lat, 50), "p90_s": percentile(lat, 90),
            "p99_s": percentile(lat, 99), "max_s": max(lat) if lat else float("nan"),
            "min_s": min(lat) if lat else float("nan"), "latencies": lat,
            "requests_per_job": sum(diff_counts(c1, c0).values()) / max(1, len(lat)),
            "concurrency": opts.concurrency}


def latency_section(ctx: Context, s3: S3Env) -> Section:
    sec = Section("latency", "Latency: submit → handler start, at low load")
    seconds = 4.0 if ctx.quick else 20.0
    variants: list[tuple[float, float | None]] = [(5.0, None), (5.0, 1.0)]
    if not ctx.quick:  # sparse arrivals: the idle back-off has time to reach its cap
        variants += [(1.0, None), (1.0, 1.0)]
    runs = []
    for rate, poll in variants:
        r = _latency_run(s3, seconds, rate, poll)
        r["rate_per_s"] = rate
        runs.append(r)
        label = (f"{rate:g}/s, poll_interval={r['poll_interval']:g}"
                 + (" (default)" if poll is None else ""))
        ctx.figure("latency", f"{label} p50", round(r["p50_s"], 3), "s")
        ctx.figure("latency", f"{label} p99", round(r["p99_s"], 3), "s")
    sec.data = {"runs": runs, "rate_per_s": variants[0][0], "seconds": seconds}
    sec.md += [
        f"One `Worker` (default concurrency {runs[0]['concurrency']}) on S3 (moto); after it "
        f"has idled 2 s, requests are submitted one by one at a steady rate for {seconds:g} s; "
        "`time.time()` is taken before each PUT and at handler start.",
        "",
        "| arrivals | poll_interval | requests | p50 s | p90 s | p99 s | max s | "
        "S3 requests/job |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        sec.md.append(f"| {r['rate_per_s']:g}/s | {r['poll_interval']:g} s | "
                      f"{r['handled']}/{r['requests']} | **{r['p50_s']:.3f}** | "
                      f"{r['p90_s']:.3f} | **{r['p99_s']:.3f}** | {r['max_s']:.3f} | "
                      f"{r['requests_per_job']:.2f} |")
    sec.md.append("")
    for i in range(0, len(runs), 2):
        a, b = runs[i], runs[i + 1]
        sec.md.append(f"- at {a['rate_per_s']:g}/s: p50 default / poll_interval=1: "
                      f"**{_ratio(a['p50_s'], b['p50_s'])}x**, p99: "
                      f"**{_ratio(a['p99_s'], b['p99_s'])}x**.")
    sec.md += [
        "- The idle back-off: a slot that finds nothing sleeps uniform(cap/2, cap), cap = "
        "0.2 s doubling per empty poll up to `poll_interval`; a slot that found work polls "
        "again at once. With 4 slots and 5 arrivals/s every slot keeps finding work, the "
        "back-off stays near its 0.2 s floor and `poll_interval` does not matter. With "
        "sparse arrivals (or the first request after a quiet spell) slots back off towards "
        "the cap and the wait follows `poll_interval` (the sparse rows; not run with "
        "--quick). Lower poll_interval = lower latency after idle spells, more idle LISTs "
        "(see the idle cost).",
    ]
    sec.plots.append("latency.png")
    return sec

