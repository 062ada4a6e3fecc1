"""The ``costs`` section: S3 requests per job by operation and $ per million jobs (s3q,
the seed, the peers; compared with PROTOCOL.md §5), and the requests of an idle worker."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

from bench.common import Context, diff_counts, per_job, usd_per_million_jobs
from bench.runs import run_s3q, s3_location
from bench.s3env import S3Env
from bench.sections._shared import (
    PROTOCOL_DELETE_MIX,
    PROTOCOL_MIX,
    PROTOCOL_RETRY_MIX,
    Section,
    Shared,
    _compare_mix,
    _fmt,
)
from s3q import Queue, QueueConfig
from s3q.job import Job
from s3q.worker import Worker, WorkerOptions


def _cost_row(label: str, counts: dict[str, int], jobs: int) -> dict[str, Any]:
    return {"label": label, "jobs": jobs, "per_job": per_job(counts, jobs),
            "total_per_job": round(sum(counts.values()) / jobs, 3) if jobs else None,
            "usd_per_million_jobs": round(usd_per_million_jobs(counts, jobs), 2)}


def costs_section(ctx: Context, s3: S3Env, shared: Shared) -> Section:
    sec = Section("costs", "Requests and cost per job")
    small = 100 if ctx.quick else 300
    rows = []
    for key, label in (("seed-s3q-1x4", "s3q, S3, 1 worker x 4"),
                       ("seed-s3q-4x1", "s3q, S3, 4 racing workers x 1"),
                       ("s3-c16", "s3q, S3, 1 worker x 16")):
        r = shared.runs.get(key)
        if r:
            rows.append(_cost_row(label, r.counts, r.jobs))
    # on_finish = "delete"
    loc = s3_location(s3, "cost-del")
    deleted = run_s3q(loc, small, concurrency=4, config=QueueConfig(on_finish="delete"),
                      label="delete")
    rows.append(_cost_row("s3q, S3, on_finish=delete, 1 x 4", deleted.counts, deleted.jobs))
    # every job fails once, then succeeds (retry without delay)
    failed: set[str] = set()
    lock = threading.Lock()

    def fail_once(job: Job) -> None:
        job.read()
        with lock:
            first = job.name not in failed
            failed.add(job.name)
        if first:
            raise RuntimeError("first attempt fails")

    loc = s3_location(s3, "cost-retry")
    r = run_s3q(loc, small, concurrency=4, handler=fail_once, label="retry",
                config=QueueConfig(retry_base_delay=0, retry_max_delay=0))
    # the burst worker may stop while retries wait: drain what is left
    rr = run_s3q(loc, small, concurrency=4, handler=fail_once, label="retry", prefill=False,
                 config=QueueConfig(retry_base_delay=0, retry_max_delay=0))
    counts = Counter(r.counts)
    counts.update(rr.counts)
    if rr.finished != small:
        ctx.note(f"retry run: finish/ holds {rr.finished} of {small}")
    rows.append(_cost_row("s3q, S3, every job fails once then succeeds", dict(counts),
                          small))
    sb = shared.seed.get("boto3")
    if sb:
        rows.append(_cost_row(f"seed copy+delete, boto3, {sb.workers} racing", sb.counts,
                              sb.finished))
    sc = shared.seed.get("cli")
    if sc and sc.counts:
        rows.append(_cost_row("seed `aws s3 mv` x 2 (CLI)", sc.counts, sc.finished))
    for peer, res in shared.peers.items():
        if res.get("ok") and res.get("requests") and res.get("requests_jobs"):
            rows.append(_cost_row(f"peer {peer} {res.get('package_version')}, 4 workers",
                                  res["requests"], int(res["requests_jobs"])))
    for row in rows:
        ctx.figure("costs", f"{row['label']}: requests/job", row["total_per_job"] or 0.0,
                   "requests", usd_per_million_jobs=row["usd_per_million_jobs"])
    # compare with PROTOCOL.md §5
    mismatches: list[str] = []
    ref = shared.runs.get("seed-s3q-1x4") or shared.runs.get("s3-c4")
    if ref:
        mismatches += _compare_mix("move to finish (1 worker x 4)", ref.counts, ref.jobs,
                                   PROTOCOL_MIX)
    mismatches += _compare_mix("on_finish=delete", deleted.counts, deleted.jobs,
                               PROTOCOL_DELETE_MIX)
    mismatches += _compare_mix("fails once, then succeeds", dict(counts), small,
                               PROTOCOL_RETRY_MIX)
    for m in mismatches:
        ctx.note(f"PROTOCOL.md §5 vs measured: {m}")
    idle = _idle(ctx, s3)
    sec.data = {"rows": rows, "protocol_mismatches": mismatches, "idle": idle,
                "prices": {"class_a_per_1000": 0.005, "class_b_per_1000": 0.0004,
                           "delete": 0}}
    ops = sorted({op for row in rows for op in row["per_job"]})
    sec.md += [
        "Every S3 request counted by operation (s3q: `S3Store.request_counts`, i.e. HTTP "
        "requests sent, retries included; boto3-plain runs: botocore `before-call`; the CLI "
        "and buquet: moto's recorder), divided by jobs, priced at S3 list prices: PUT, "
        "COPY, POST, LIST $0.005 per 1,000; GET, HEAD and other requests $0.0004 per 1,000; "
        "DELETE free.",
        "",
        "| run | " + " | ".join(ops) + " | total | $ per million jobs |",
        "|---|" + "---:|" * (len(ops) + 2),
    ]
    for row in rows:
        cells = [f"{row['per_job'].get(op, 0):.2f}" if row["per_job"].get(op) else ""
                 for op in ops]
        sec.md.append(f"| {row['label']} | " + " | ".join(cells) +
                      f" | {_fmt(row['total_per_job'], 2)} | "
                      f"**{_fmt(row['usd_per_million_jobs'], 2)}** |")
    sec.md.append("")
    if mismatches:
        sec.md.append("- **Differs from PROTOCOL.md §5** (a difference of at least 0.1 "
                      "request per job): " + "; ".join(mismatches) + ".")
    else:
        sec.md.append("- The measured s3q mixes match PROTOCOL.md §5 (moved to finish: 2 PUT, "
                      "1 GET, 2 DELETE, ~1/100 LIST per job; on_finish=delete: one PUT less; "
                      "one retry: the '+' row).")
    sec.md.append("- With racing workers a stale listing makes some claims win the lease "
                  "(c1) for a request already finished by another worker, then find it gone "
                  "at c2 (COPY 404) and drop the lease (DELETE): the 4 x 1 row's extra "
                  "requests.")
    sec.md += [
        "",
        "**Idle cost** — one idle `Worker` on an empty S3 queue, default settings "
        f"({idle['settings']}), for {idle['seconds']:g} s: {idle['requests']} requests "
        f"({json.dumps(idle['counts'])}).",
        f"- Naive extrapolation of the whole window: {idle['per_hour_naive']:,.0f} "
        "requests/hour (over-counts: the window includes the back-off ramp 0.2 s → "
        f"{idle['poll_interval']:g} s).",
        f"- After the ramp ({idle['steady_from_s']:g} s → end, {idle['steady_requests']} "
        f"requests): **{idle['per_hour_steady']:,.0f} requests/hour** ≈ "
        f"${idle['usd_per_month_steady']:.2f} per idle worker per month (LIST, class A).",
        f"- Model: {idle['model']}.",
    ]
    sec.plots.append("requests_per_job.png")
    return sec


def _idle(ctx: Context, s3: S3Env) -> dict[str, Any]:
    seconds = 10.0 if ctx.quick else 30.0
    endpoint, prefix = s3.fresh("idle")
    store = s3.store(endpoint, prefix)
    opts = WorkerOptions(worker_id="bench-idle")
    config = QueueConfig()
    worker = Worker(Queue(store, config), lambda job: None, opts)
    c0, _ = store.snapshot_counts()
    th = threading.Thread(target=worker.run, daemon=True)
    t0 = time.monotonic()
    th.start()
    # back-off: sleeps of uniform(cap/2, cap), cap = 0.2 * 2**k up to poll_interval
    ramp = 0.0
    k = 1
    while 0.2 * 2**k < opts.poll_interval:
        ramp += 0.2 * 2**k
        k += 1
    steady_from = min(ramp, seconds / 2)
    time.sleep(steady_from)
    c1, _ = store.snapshot_counts()
    time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    c2, _ = store.snapshot_counts()
    elapsed = time.monotonic() - t0
    worker.stop()
    worker.stop()
    th.join(timeout=30)
    total = diff_counts(c2, c0)
    steady = diff_counts(c2, c1)
    steady_s = elapsed - steady_from
    per_hour_steady = sum(steady.values()) / steady_s * 3600
    scan = config.effective_scan_interval
    model_lists = opts.concurrency * 3600 / (0.75 * opts.poll_interval) + 2 * 3600 / scan
    result: dict[str, Any] = {
        "settings": (f"concurrency={opts.concurrency}, poll_interval={opts.poll_interval:g} s, "
                     f"lease_ttl={config.lease_ttl:g} s, scan_interval={scan:g} s, "
                     f"page_size={config.page_size}"),
        "seconds": round(elapsed, 1), "requests": sum(total.values()), "counts": dict(total),
        "per_hour_naive": sum(total.values()) / elapsed * 3600,
        "steady_from_s": round(steady_from, 1), "steady_requests": sum(steady.values()),
        "per_hour_steady": per_hour_steady,
        "usd_per_month_steady": per_hour_steady * 24 * 30 * 0.005 / 1000,
        "poll_interval": opts.poll_interval,
        "model": (f"{opts.concurrency} slots x one LIST per ~0.75 x {opts.poll_interval:g} s "
                  f"+ 2 LISTs per {scan:g} s scan = {model_lists:,.0f} requests/hour; plus "
                  "one HEAD of the pause flag per poll (class B, at most one a second) and "
                  "one PUT of the worker's registry record a minute"),
    }
    ctx.figure("costs", "idle worker, requests/hour (after ramp)", round(per_hour_steady),
               "requests/h", naive=round(result["per_hour_naive"]))
    store.close()
    return result

