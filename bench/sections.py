"""The measurements, one function per report section. Each returns a :class:`Section`:
its data (for the JSON report) and its markdown. Figures are logged through the
:class:`~bench.common.Context` as they are measured (printed with the command and the
environment)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import ceiling, peers, seed
from bench.common import (
    ROOT,
    Context,
    CountingStore,
    diff_counts,
    per_job,
    percentile,
    read_events,
    request_body,
    request_name,
    timed,
    usd_per_million_jobs,
    wait_for,
)
from bench.runs import RunResult, local_location, run_s3q, s3_location
from bench.s3env import S3Env
from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.job import Job
from s3q.worker import Worker, WorkerOptions
from tests.s3server import S3Endpoint

#: PROTOCOL.md §5: a small request moved to finish/, per job (LIST: 1/P, P = 100).
PROTOCOL_MIX = {"PutObject": 2, "CopyObject": 2, "GetObject": 1, "DeleteObject": 3,
                "ListObjectsV2": 0.01}
#: ... with on_finish = "delete", and with one failure that retries (base + the "+" row).
PROTOCOL_DELETE_MIX = {"PutObject": 2, "CopyObject": 1, "GetObject": 1, "DeleteObject": 3,
                       "ListObjectsV2": 0.01}
PROTOCOL_RETRY_MIX = {"PutObject": 6, "CopyObject": 3, "GetObject": 2, "HeadObject": 1,
                      "DeleteObject": 4, "ListObjectsV2": 0.01}


def _compare_mix(label: str, counts: dict[str, int], jobs: int,
                 want: dict[str, float]) -> list[str]:
    """Differences of a measured mix from PROTOCOL.md §5 (LIST and fractions below 0.1
    ignored: they depend on page size and races)."""
    mix = {op: n / jobs for op, n in counts.items()}
    out = []
    for op in sorted(set(want) | set(mix)):
        if op == "ListObjectsV2":
            continue
        got, expect = mix.get(op, 0.0), want.get(op, 0.0)
        if abs(got - expect) >= 0.1:
            out.append(f"{label}: {op} measured {got:.2f}/job, PROTOCOL.md §5 gives "
                       f"{expect:g}")
    return out


@dataclass
class Section:
    key: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    md: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    env: str = ""  # the environment line at the start of the section
    seconds: float = 0.0


@dataclass
class Shared:
    """What later sections reuse from earlier ones."""

    runs: dict[str, RunResult] = field(default_factory=dict)
    rates: dict[str, dict[str, ceiling.OpRate]] = field(default_factory=dict)
    seed: dict[str, seed.SeedResult] = field(default_factory=dict)
    seed_cli_counts: dict[str, int] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def _check_run(ctx: Context, r: RunResult) -> None:
    if r.completed != r.jobs or r.finished != r.jobs or r.left_waiting:
        ctx.note(f"{r.label}: completed {r.completed}/{r.jobs}, finish/ holds {r.finished}, "
                 f"{r.left_waiting} left in wait/")


# ----------------------------------------------------------------------------- throughput
def throughput(ctx: Context, s3: S3Env, shared: Shared) -> Section:
    sec = Section("throughput", "Throughput")
    conc_local = [1, 4, 16]
    conc_s3 = [4] if ctx.quick else [1, 4, 16]
    seconds = 0.5 if ctx.quick else 3.0
    rows = []
    local_reps = 3  # local runs are short and fsync-bound (noisy disk): 3 rounds, median
    for kind, concs in (("local", conc_local), ("s3", conc_s3)):
        reps = local_reps if kind == "local" else 1
        tries: dict[int, list[RunResult]] = {c: [] for c in concs}
        for _ in range(reps):  # interleaved: c=1, 4, 16, then again
            for c in concs:
                loc = (local_location(f"tp{c}") if kind == "local"
                       else s3_location(s3, f"tp{c}"))
                r = run_s3q(loc, ctx.jobs, concurrency=c, label=f"{kind}-c{c}")
                loc.cleanup()
                _check_run(ctx, r)
                tries[c].append(r)
        for c in concs:
            ranked = sorted(tries[c], key=lambda x: x.jobs_per_s)
            r = ranked[len(ranked) // 2]
            r.extra["jobs_per_s_all_rounds"] = [x.jobs_per_s for x in tries[c]]
            shared.runs[r.label] = r
            ctx.figure("throughput", f"s3q {kind}, {c} concurrent handler(s)"
                       + (f", median of {reps}" if reps > 1 else ""), r.jobs_per_s,
                       "jobs/s", jobs=r.jobs, all_rounds=r.extra["jobs_per_s_all_rounds"])
            rows.append(r)
        # the ceiling of this store, measured right after its throughput runs
        if kind == "local":
            root = Path(tempfile.mkdtemp(prefix="s3q-bench-ceiling-"))
            shared.rates[kind] = ceiling.measure(CountingStore(LocalStore(root)), seconds)
            shutil.rmtree(root, ignore_errors=True)
        else:
            endpoint, prefix = s3.fresh("ceiling")
            shared.rates[kind] = ceiling.measure(s3.store(endpoint, prefix), seconds)
        for op, rate in shared.rates[kind].items():
            ctx.figure("ceiling", f"{kind} {op} ({ceiling.THREADS} threads)", rate.per_s,
                       "ops/s", done=rate.done, elapsed_s=rate.elapsed_s, errors=rate.errors)
    sec.data["runs"] = [r.as_dict() for r in rows]
    sec.md += [
        f"{ctx.jobs:,} requests of 1 KB JSON submitted to `wait/` first, then drained by one "
        "`s3q.worker.Worker(burst=True, concurrency=N)` with a no-op handler (it reads the "
        "1 KB body and returns nothing; `job.read()` is one GET). Time = `Worker.run()` "
        "start to return. Local = a fresh temporary directory (`LocalStore`, fsync on every "
        "write); S3 = moto's server in a separate process on loopback, a fresh bucket per "
        "run, s3q's default client settings (`S3Options()`: pool 16, standard retries). "
        f"Local runs: {local_reps} interleaved rounds (c=1, 4, 16, c=1, ...), the median "
        "shown with all rounds (the local store is fsync-bound and this disk is shared); "
        "S3 runs: one each.",
        "",
        "| store | concurrent handlers | jobs | elapsed s | jobs/s | all rounds jobs/s | "
        "requests/job |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        rounds = ", ".join(f"{x:.0f}" for x in r.extra.get("jobs_per_s_all_rounds", []))
        sec.md.append(f"| {r.store} | {r.concurrency} | {r.completed:,} | "
                      f"{_fmt(r.elapsed_s, 2)} | **{_fmt(r.jobs_per_s)}** | {rounds} | "
                      f"{_fmt(sum(r.counts.values()) / max(1, r.jobs), 2)} |")
    sec.md.append("")
    for kind in ("local", "s3"):
        base = shared.runs.get(f"{kind}-c1")
        if base:
            for c in (4, 16):
                more = shared.runs.get(f"{kind}-c{c}")
                if more:
                    sec.md.append(f"- {kind}: {c} handlers / 1 handler = "
                                  f"**{_ratio(more.jobs_per_s, base.jobs_per_s)}x**")
    sec.plots.append("throughput.png")
    return sec


def ceiling_section(ctx: Context, shared: Shared) -> Section:
    sec = Section("ceiling", "The ceiling: the store's own rate, and s3q's share of it")
    seconds = 0.5 if ctx.quick else 3.0
    sec.md += [
        f"Raw rates of each store operation s3q uses, on 1 KB objects, {ceiling.THREADS} "
        f"threads sharing one store object (s3q's client settings), ~{seconds:g} s each, "
        "measured in the same run right after that store's throughput runs. PUTs are "
        "conditional (`If-None-Match: *`, as c1), DELETEs conditional (`If-Match`, as c3/d5), "
        "LIST pages are 100 keys (s3q's `page_size`). HEAD requests are bounded by the HEAD "
        "rate. Bound = 1 / Σ_op (requests of op per job ÷ rate of op), with the request mix "
        "each throughput run actually made.",
        "",
        "| operation | local ops/s | S3 (moto) ops/s |",
        "|---|---:|---:|",
    ]
    for op in ceiling.OPS:
        lo = shared.rates.get("local", {}).get(op)
        s3r = shared.rates.get("s3", {}).get(op)
        sec.md.append(f"| {op} | {_fmt(lo.per_s if lo else None)} | "
                      f"{_fmt(s3r.per_s if s3r else None)} |")
    sec.md += ["", "| run | requests/job mix | store-seconds/job | bound jobs/s | s3q jobs/s "
               "| s3q / bound |", "|---|---|---:|---:|---:|---:|"]
    bounds = []
    for label, r in shared.runs.items():
        if not label.startswith(("local-c", "s3-c")):
            continue
        rates = shared.rates.get(r.store)
        if not rates:
            continue
        mix = {op: n / r.jobs for op, n in r.counts.items()}
        secs, bound = ceiling.bound(mix, rates)
        frac = r.jobs_per_s / bound if not math.isnan(bound) else float("nan")
        ctx.figure("ceiling", f"s3q {r.store} c={r.concurrency} as a fraction of the bound",
                   round(frac, 3), "x", bound_jobs_per_s=round(bound, 1))
        mix_s = ", ".join(f"{op} {v:.2f}" for op, v in sorted(mix.items()))
        bounds.append({"run": label, "mix": mix, "store_seconds_per_job": secs,
                       "bound_jobs_per_s": bound, "jobs_per_s": r.jobs_per_s,
                       "fraction": frac})
        sec.md.append(f"| {label} | {mix_s} | {secs * 1000:.2f} ms | {_fmt(bound)} | "
                      f"{_fmt(r.jobs_per_s)} | **{frac:.2f}** |")
    sec.data = {"rates": {k: {op: asdict(v) for op, v in rs.items()}
                          for k, rs in shared.rates.items()},
                "bounds": bounds, "threads": ceiling.THREADS, "seconds_per_op": seconds}
    sec.md += ["", "The bound assumes the store is the only limit, each operation costing "
               "what it costs alone. On this 2-core machine the client (s3q + boto3) and "
               "moto's server share the CPUs. For S3 the fraction is how close s3q's request "
               "mix gets to the rate the server sustains for those requests. For the local "
               "store a fraction above 1 means the one-operation-at-a-time rates understate "
               "what a mix achieves (fsync waits of different operations overlap, and "
               "single-op phases contend on the same lock stripes and directory), so the "
               "local bound is indicative only."]
    sec.plots.append("ceiling.png")
    return sec


# ----------------------------------------------------------------------------------- seed
def seed_section(ctx: Context, s3: S3Env, shared: Shared) -> Section:
    sec = Section("seed", "The seed's approach, side by side")
    n = ctx.jobs
    workers = 4
    reused = shared.runs.get("s3-c4") if ctx.quick else None
    if reused is not None:  # --quick: the throughput section's run (same server, same N)
        a = reused
    else:
        loc = s3_location(s3, "seed-s3q14")
        a = run_s3q(loc, n, concurrency=4, workers=1, label="s3q 1 worker x 4")
        _check_run(ctx, a)
    ctx.figure("seed", "s3q, 1 worker x 4 handlers", a.jobs_per_s, "jobs/s")
    loc = s3_location(s3, "seed-s3q41")
    b = run_s3q(loc, n, concurrency=1, workers=4, label="s3q 4 workers x 1")
    _check_run(ctx, b)
    ctx.figure("seed", "s3q, 4 racing workers x 1 handler", b.jobs_per_s, "jobs/s")
    shared.runs["seed-s3q-1x4"], shared.runs["seed-s3q-4x1"] = a, b
    endpoint, prefix = s3.fresh("seed-boto3")
    sb = seed.run_seed_boto3(endpoint, prefix, n, workers)
    shared.seed["boto3"] = sb
    ctx.figure("seed", f"seed copy+delete (boto3), {workers} racing workers", sb.jobs_per_s,
               "jobs/s")
    ctx.figure("seed", "seed: requests processed more than once", sb.processed_more_than_once,
               f"of {n}", extra_handler_runs=sb.extra_runs)
    n_cli = 8 if ctx.quick else 40
    endpoint, prefix = s3.fresh("seed-cli")
    with s3.record() as rec:
        sc = seed.run_seed_cli(endpoint, prefix, n_cli, workers)
    sc.counts = dict(rec.by_bucket.get(endpoint.bucket, Counter()))
    # the prefill PUTs happened inside the recording window too: take them out
    if sc.counts.get("PutObject"):
        sc.counts["PutObject"] -= n_cli
        if not sc.counts["PutObject"]:
            del sc.counts["PutObject"]
    for op in ("ListObjectsV2",):  # the final _count_keys listings (3 per run)
        if sc.counts.get(op, 0) >= 3:
            sc.counts[op] -= 3
            if not sc.counts[op]:
                del sc.counts[op]
    shared.seed["cli"] = sc
    ctx.figure("seed", f"seed `aws s3 mv` per move (CLI), {workers} parallel", sc.jobs_per_s,
               "jobs/s", jobs=n_cli)
    r_boto = _ratio(a.jobs_per_s, sb.jobs_per_s)
    r_boto_race = _ratio(b.jobs_per_s, sb.jobs_per_s)
    r_cli = _ratio(a.jobs_per_s, sc.jobs_per_s)
    ctx.figure("seed", "ratio s3q (1x4) / seed boto3 (4 workers)", r_boto or 0.0, "x")
    ctx.figure("seed", "ratio s3q (4x1) / seed boto3 (4 workers)", r_boto_race or 0.0, "x")
    ctx.figure("seed", "ratio s3q (1x4) / seed CLI", r_cli or 0.0, "x")
    sec.data = {"s3q_1x4": a.as_dict(), "s3q_4x1": b.as_dict(), "seed_boto3": sb.as_dict(),
                "seed_cli": sc.as_dict(), "ratio_s3q_1x4_over_seed_boto3": r_boto,
                "ratio_s3q_4x1_over_seed_boto3": r_boto_race, "ratio_s3q_over_seed_cli": r_cli}
    sec.md += [
        "Same moto server, same run, one after the other, a fresh bucket each, "
        f"{n:,} requests (the CLI: {n_cli}, one subprocess per move makes more pointless).",
        "",
        "| approach | workers | jobs | jobs/s | requests processed more than once | extra "
        "handler runs | left in wait/ / processing/ |",
        "|---|---|---:|---:|---:|---:|---|",
        f"| s3q (lease, conditional writes) | 1 x 4 handlers | {a.completed:,} | "
        f"**{_fmt(a.jobs_per_s)}** | 0 | 0 | {a.left_waiting} / 0 |",
        f"| s3q | 4 racing x 1 | {b.completed:,} | **{_fmt(b.jobs_per_s)}** | 0 | 0 | "
        f"{b.left_waiting} / 0 |",
        f"| seed: copy + delete, boto3 | {workers} racing | {sb.finished:,} | "
        f"**{_fmt(sb.jobs_per_s)}** | **{sb.processed_more_than_once:,}** | {sb.extra_runs:,} "
        f"| {sb.left_waiting} / {sb.left_processing} |",
        f"| seed: `aws s3 mv` per move | {workers} parallel (disjoint) | {sc.finished} | "
        f"**{_fmt(sc.jobs_per_s, 2)}** | (no race: disjoint shares) | - | "
        f"{sc.left_waiting} / {sc.left_processing} |",
        "",
        f"- **s3q / seed (boto3): {r_boto}x** (1 worker x 4 handlers), **{r_boto_race}x** "
        "(4 racing workers x 1 handler).",
        f"- **s3q / seed (AWS CLI): {r_cli}x**.",
        f"- The seed's safety problem, counted: {sb.processed_more_than_once:,} of {n:,} "
        f"requests were processed more than once ({sb.extra_runs:,} extra handler runs) by "
        f"{workers} workers racing over the same listing. s3q: 0 by construction (the lease "
        "is created with `If-None-Match: *`; the s3q runs' handler-run counts equal their "
        "completions).",
        f"- Seed errors seen (lost races, by step): "
        f"{json.dumps(sb.errors) if sb.errors else 'none'}.",
        f"- Seed (boto3): {sb.settings}.",
        f"- Seed (CLI): {sc.settings}. CLI failures: "
        f"{json.dumps(sc.errors) if sc.errors else 'none'}.",
    ]
    sec.plots.append("seed.png")
    return sec


# ---------------------------------------------------------------------------------- peers
def peers_section(ctx: Context, s3: S3Env, shared: Shared) -> Section:
    sec = Section("peers", "Peers")
    n = ctx.jobs
    timeout = 10.0 if ctx.quick else 60.0
    if not s3.is_moto:
        sec.md.append("Skipped: peers run only against the suite's own moto server (they "
                      "need buckets of their own).")
        return sec
    with timed() as t:
        venv = peers.ensure_venv()
    sec.data["venv"] = asdict(venv) | {"python": str(venv.python), "setup_s": round(t[0], 1)}
    sec.md += [
        "Installed with `pip install pailq jqueue buquet` (one at a time only if that "
        f"fails) into `bench/.peers-venv` (base interpreter: {venv.base_python}; the peers "
        "need Python >= 3.12; never into `.venv`), run by "
        "`bench/peers_runner.py` on the same moto server: "
        f"{n:,} jobs of ~1 KB JSON submitted first, then 4 workers (each its own client) "
        f"with a no-op handler, time-boxed at {timeout:g} s (a peer that has not finished "
        "by then is reported with the jobs it did). Requests/job: botocore `before-call` "
        "events on the peer's boto3 clients (pail, jqueue), moto's request recorder for "
        "buquet (Rust SDK; a separate, smaller run so the recorder does not slow the timed "
        "one).",
        "",
    ]
    for pkg, err in venv.failed.items():
        sec.md.append(f"- **{pkg} could not be installed**: `{err.strip()}`")
        ctx.note(f"peer {pkg} could not be installed: {err.strip()[:300]}")
    ref = shared.runs.get("seed-s3q-1x4")
    ref4 = shared.runs.get("seed-s3q-4x1")
    rows = []
    for pkg, version in venv.installed.items():
        peer = peers.PEER_OF_PACKAGE[pkg]
        res = peers.run_peer(venv, s3, peer, jobs=n, workers=4, timeout=timeout)
        if peer == "buquet" and res.get("ok"):
            small = min(n, 100 if ctx.quick else 300)
            counted = peers.run_peer(venv, s3, peer, jobs=small, workers=4, timeout=timeout,
                                     record=True)
            res["requests"] = counted.get("recorded_requests")
            res["requests_jobs"] = counted.get("distinct_jobs_run")
        else:
            res["requests_jobs"] = res.get("distinct_jobs_run")
        res["package"], res["package_version"] = pkg, version
        shared.peers[peer] = res
        rows.append(res)
        if res.get("ok"):
            ctx.figure("peers", f"{peer} {version}, 4 workers", res.get("jobs_per_s") or 0.0,
                       "jobs/s", done=res.get("distinct_jobs_run"), timed_out=res["timed_out"])
        else:
            ctx.note(f"peer {peer} failed to run: {res.get('error')}")
    sec.data["results"] = rows
    sec.md += ["| peer | version | jobs done / submitted | s | jobs/s | requests/job | "
               "processed more than once | s3q (1x4) / peer | s3q (4x1) / peer |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in rows:
        peer = res["peer"]
        if not res.get("ok"):
            sec.md.append(f"| {peer} | {res.get('package_version')} | - | - | - | - | - | - "
                          "| - |")
            continue
        req = res.get("requests")
        rj = res.get("requests_jobs") or 0
        per = f"{sum(req.values()) / rj:.2f}" if req and rj else "not measurable"
        done = res.get("distinct_jobs_run") or 0
        jps = res.get("jobs_per_s")
        boxed = " (time-boxed)" if res.get("timed_out") else ""
        sec.md.append(
            f"| {peer} | {res.get('package_version')} | {done:,} / {n:,}{boxed} | "
            f"{_fmt(res.get('elapsed_s'))} | **{_fmt(jps, 2)}** | {per} | "
            f"{res.get('processed_more_than_once')} | "
            f"{_ratio(ref.jobs_per_s if ref else None, jps)} | "
            f"{_ratio(ref4.jobs_per_s if ref4 else None, jps)} |")
    sec.md.append("")
    for res in rows:
        if res.get("ok"):
            mix = res.get("requests") or {}
            rj = res.get("requests_jobs") or 0
            mix_s = ", ".join(f"{op} {v / rj:.2f}" for op, v in sorted(mix.items())) \
                if rj else "n/a"
            sec.md.append(f"- **{res['peer']}**: {res.get('settings')}. Requests per job: "
                          f"{mix_s or 'n/a'} (over {rj} jobs). Errors: "
                          f"{json.dumps(res.get('errors')) if res.get('errors') else 'none'}.")
        else:
            sec.md.append(f"- **{res['peer']} could not run against moto**: "
                          f"`{res.get('error')}`")
    sec.md += ["- The s3q references are this run's `seed` section runs (same server, same "
               f"{n:,} requests): 1 worker x 4 handlers = "
               f"{_fmt(ref.jobs_per_s if ref else None)} jobs/s, 4 racing workers x 1 = "
               f"{_fmt(ref4.jobs_per_s if ref4 else None)} jobs/s."]
    if "jqueue" in venv.installed:
        sec.md.append("- jqueue's own `S3Storage` needs `aioboto3` (extra `jqueue[s3]`), whose "
                      "boto3 pin cannot coexist with pailq's `boto3==1.43.24` in one venv; "
                      "jqueue ran through its documented custom-adapter port "
                      "(`ObjectStoragePort`) on plain boto3 with the same two calls "
                      "(GET with ETag, PUT with If-Match).")
    if "buquet" in venv.installed:
        sec.md.append("- buquet requires bucket versioning and checks it with "
                      "GetBucketVersioning, whose moto answer its Rust SDK cannot parse "
                      "(root element `GetBucketVersioningResponse`, not "
                      "`VersioningConfiguration`); versioning is enabled on its bucket and the "
                      "check is skipped with `BUQUET_ALLOW_NO_VERSIONING=1`.")
    sec.plots.append("peers.png")
    return sec


# ---------------------------------------------------------------------------------- costs
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
                      "2 COPY, 1 GET, 3 DELETE, ~1/100 LIST per job; on_finish=delete: one "
                      "COPY less; one retry: the '+' row).")
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
                  f"+ 2 LISTs per {scan:g} s scan = {model_lists:,.0f} requests/hour"),
    }
    ctx.figure("costs", "idle worker, requests/hour (after ramp)", round(per_hour_steady),
               "requests/h", naive=round(result["per_hour_naive"]))
    store.close()
    return result


# -------------------------------------------------------------------------------- latency
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


# ------------------------------------------------------------------------------- recovery
def _spawn(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.child", json.dumps(spec)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _spawn_forked(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Like :func:`_spawn`, through ``sh`` which forks before exec'ing Python: Linux keeps
    ru_maxrss across execve(), and a child exec'd straight from this (large) process would
    report this process's peak as its own; a forked grandchild starts from sh's."""
    return subprocess.Popen(["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m",
                             "bench.child", json.dumps(spec)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _s3_spec(endpoint: S3Endpoint, prefix: str) -> dict[str, Any]:
    return {"endpoint": endpoint.endpoint_url, "bucket": endpoint.bucket, "prefix": prefix,
            "region": endpoint.region, "access_key": endpoint.access_key_id,
            "secret_key": endpoint.secret_access_key}


def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _recovery_case(s3: S3Env, scratch: Path, case: str, lease_ttl: float,
                   poll_interval: float | None) -> dict[str, Any]:
    n = 8
    endpoint, prefix = s3.fresh("recovery")
    q = Queue(s3.store(endpoint, prefix), QueueConfig(lease_ttl=lease_ttl))
    for i in range(n):
        q.submit(request_name(i), request_body(i))
    events = scratch / f"recovery-{case}-{lease_ttl:g}-{poll_interval}.jsonl"
    events.unlink(missing_ok=True)
    base = {**_s3_spec(endpoint, prefix), "events": str(events), "lease_ttl": lease_ttl,
            "concurrency": n}
    if poll_interval:
        base["poll_interval"] = poll_interval
    victim_id = "bench-victim" if case == "survivor" else "bench-restarted"
    victim = _spawn({**base, "worker_id": victim_id, "sleep": 3600})
    result: dict[str, Any] = {"case": case, "lease_ttl": lease_ttl, "jobs": n,
                              "poll_interval": poll_interval or WorkerOptions("x").poll_interval}
    try:
        held = wait_for(lambda: sum(1 for e in read_events(events) if e["ev"] == "start"
                                    and e["worker"] == victim_id) >= n, 60)
        if not held:
            result["error"] = "the victim never held all 8 jobs"
            return result
        rescuer_id = "bench-survivor" if case == "survivor" else victim_id
        if case == "survivor":
            rescuer = _spawn({**base, "worker_id": rescuer_id, "sleep": 0})
            pid = rescuer.pid
            wait_for(lambda: any(e["ev"] == "started" and e["pid"] == pid
                                 for e in read_events(events)), 30)
            time.sleep(1.0)  # the survivor is polling (and backing off) before the kill
        t_kill = time.time()
        _kill(victim)
        if case == "restart":
            rescuer = _spawn({**base, "worker_id": rescuer_id, "sleep": 0})
            pid = rescuer.pid

        def done() -> list[dict[str, Any]]:
            return [e for e in read_events(events) if e["ev"] == "done" and e["pid"] == pid]

        ok = wait_for(lambda: len({e["name"] for e in done()}) >= n,
                      lease_ttl + 60 + (poll_interval or 10))
        _kill(rescuer, signal.SIGTERM)
        ev = read_events(events)
        finished = [e["t"] for e in done()]
        started_ev = [e for e in ev if e["ev"] == "started" and e["pid"] == pid]
        result.update({
            "all_recovered": ok, "recovered": len({e["name"] for e in done()}),
            "seconds_to_all_done": round(max(finished) - t_kill, 2) if finished else None,
            "seconds_to_first_done": round(min(finished) - t_kill, 2) if finished else None,
            "rescuer_startup_s": round(started_ev[0]["t"] - t_kill, 2)
            if started_ev and case == "restart" else None,
            "attempts_seen": sorted({e.get("attempt", 0) for e in ev
                                     if e["ev"] == "start" and e["pid"] == pid}),
        })
    finally:
        _kill(victim)
    return result


def recovery_section(ctx: Context, s3: S3Env, scratch: Path) -> Section:
    sec = Section("recovery", "Recovery time after SIGKILL")
    cases: list[tuple[str, float, float | None]] = [("survivor", 5.0, None),
                                                     ("restart", 5.0, None)]
    if not ctx.quick:
        cases += [("survivor", 5.0, 1.0), ("restart", 30.0, None)]
    results = []
    for case, ttl, poll in cases:
        r = _recovery_case(s3, scratch, case, ttl, poll)
        results.append(r)
        label = (f"{'(a) surviving worker' if case == 'survivor' else '(b) same id restarted'}"
                 f", lease_ttl={ttl:g}, poll_interval={r['poll_interval']:g}")
        if r.get("seconds_to_all_done") is not None:
            ctx.figure("recovery", label, r["seconds_to_all_done"], "s to all 8 done")
        else:
            ctx.note(f"recovery {label}: {r.get('error') or 'not all jobs recovered'}")
    sec.data = {"cases": results}
    sec.md += [
        "A worker process (`python -m bench.child`: `Worker(concurrency=8)` on S3/moto) holds "
        "8 jobs in a slow handler (sleep 3600 s) and is SIGKILLed. Time from the kill until "
        "all 8 have completed (handler done) (a) by a second worker process that was already "
        "running and idle, (b) by a new process with the same worker id (own recovery at "
        "start, then claims). Child processes, not the CLI.",
        "",
        "| case | lease_ttl | poll_interval | recovered | first done s | all 8 done s | "
        "attempt seen |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        sec.md.append(
            f"| {'(a) surviving worker' if r['case'] == 'survivor' else '(b) same id restarted'}"
            f" | {r['lease_ttl']:g} s | {r['poll_interval']:g} s | {r.get('recovered', 0)}/8 | "
            f"{_fmt(r.get('seconds_to_first_done'), 2)} | "
            f"**{_fmt(r.get('seconds_to_all_done'), 2)}** | {r.get('attempts_seen')} |")
    sec.md += [
        "",
        "- (a) is bounded by PROTOCOL.md invariant 3: lease_ttl + 2 s (clock margin) + "
        "scan_interval (lease_ttl/2) after the last renewal, plus the survivor's idle "
        "back-off (up to poll_interval) before its next claim call. (b) does not wait for "
        "the lease: the restarted id re-queues its own leases at start (it includes Python "
        "start-up and imports, and does not depend on lease_ttl).",
    ]
    return sec


# ---------------------------------------------------------------------------------- scale
def _write_backlog_local(root: Path, n: int) -> float:
    """Drop ``n`` request files into wait/ as any producer (``cp``) would."""
    wait = root / "wait"
    wait.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        (wait / request_name(i)).write_bytes(request_body(i))
    return time.perf_counter() - t0


def _fill_moto(endpoint: S3Endpoint, prefix: str, n: int, seconds: float) -> int:
    """PUT ``n`` requests into wait/ from 16 threads; stop after ``seconds``."""
    client = endpoint.client()
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    done = [0]

    def put(i: int) -> None:
        if time.monotonic() < deadline:
            client.put_object(Bucket=endpoint.bucket, Key=f"{prefix}/wait/{request_name(i)}",
                              Body=request_body(i))
            with lock:
                done[0] += 1

    with ThreadPoolExecutor(10) as pool:  # the client's connection pool holds 10
        list(pool.map(put, range(n)))
    return done[0]


def _scale_child(spec: dict[str, Any], events: Path) -> dict[str, Any]:
    events.unlink(missing_ok=True)
    t_spawn = time.time()
    proc = _spawn_forked({**spec, "events": str(events)})
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        _kill(proc)
    ev = read_events(events)
    started = next((e for e in ev if e["ev"] == "started"), None)
    first = min((e["t"] for e in ev if e["ev"] == "start"), default=None)
    ex = next((e for e in ev if e["ev"] == "exit"), None)
    out: dict[str, Any] = {"exit_code": proc.returncode}
    if started and first:
        out["first_claim_s"] = round(first - started["t"], 3)
        out["first_claim_from_spawn_s"] = round(first - t_spawn, 3)
    if started:
        out["ru_maxrss_at_start_mib"] = round(started["ru_maxrss_kib"] / 1024, 1)
    if ex:
        out["ru_maxrss_mib"] = round(ex["ru_maxrss_kib"] / 1024, 1)
        if ex.get("vmhwm_kib"):
            out["vmhwm_mib"] = round(ex["vmhwm_kib"] / 1024, 1)
        out["completed"] = ex["completed"]
        if started:
            out["run_s"] = round(ex["t"] - started["t"], 2)
    return out


def scale_section(ctx: Context, s3: S3Env, scratch: Path) -> Section:
    sec = Section("scale", "Scale: a large backlog in wait/")
    jobs_each = 200
    results: list[dict[str, Any]] = []
    local_sizes = [10, 10_000, 100_000]
    for n in local_sizes:
        root = Path(tempfile.mkdtemp(prefix=f"s3q-bench-scale-{n}-"))
        try:
            created = _write_backlog_local(root, n)
            r = _scale_child({"root": str(root), "worker_id": f"bench-scale-{n}",
                              "max_jobs": min(jobs_each, n), "sleep": 0},
                             scratch / f"scale-local-{n}.jsonl")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        r.update({"store": "local", "backlog": n, "create_s": round(created, 1)})
        results.append(r)
        ctx.figure("scale", f"local, backlog {n:,}: time to first claim",
                   r.get("first_claim_s", float("nan")), "s")
        ctx.figure("scale", f"local, backlog {n:,}: worker peak RSS",
                   r.get("ru_maxrss_mib", float("nan")), "MiB")
    moto_sizes = [] if ctx.quick else [10, 10_000]
    skipped = ""
    if not s3.is_moto:
        skipped = "the S3 backlog runs only on the suite's own moto server"
    elif ctx.quick:
        skipped = "moto backlog skipped with --quick"
    for n in moto_sizes:
        if skipped:
            break
        endpoint, prefix = s3.fresh(f"scale{n}")
        with timed() as t:
            done = _fill_moto(endpoint, prefix, n, seconds=120)
        if done < n:
            skipped = (f"creating {n:,} objects on moto did not finish in 2 min "
                       f"({done:,} done): skipped")
            break
        r = _scale_child({**_s3_spec(endpoint, prefix), "worker_id": f"bench-scale-s3-{n}",
                          "max_jobs": min(jobs_each, n), "sleep": 0},
                         scratch / f"scale-s3-{n}.jsonl")
        r.update({"store": "s3 (moto)", "backlog": n, "create_s": round(t[0], 1)})
        results.append(r)
        ctx.figure("scale", f"moto, backlog {n:,}: time to first claim",
                   r.get("first_claim_s", float("nan")), "s")
        ctx.figure("scale", f"moto, backlog {n:,}: worker peak RSS",
                   r.get("ru_maxrss_mib", float("nan")), "MiB")
    if skipped:
        ctx.note(f"scale: {skipped}")
    by = {(r["store"], r["backlog"]): r for r in results}
    mem_ratio = _ratio(by.get(("local", 100_000), {}).get("ru_maxrss_mib"),
                       by.get(("local", 10_000), {}).get("ru_maxrss_mib"))
    claim_ratio = _ratio(by.get(("local", 100_000), {}).get("first_claim_s"),
                         by.get(("local", 10_000), {}).get("first_claim_s"))
    sec.data = {"results": results, "jobs_processed_each": jobs_each,
                "mem_ratio_100k_over_10k": mem_ratio, "claim_ratio_100k_over_10k": claim_ratio,
                "skipped": skipped}
    sec.md += [
        "A backlog of N requests (1 KB) dropped into `wait/` (local: plain file writes, as "
        "`cp` would; moto: PutObject from 16 threads), then a worker *process* (`python -m "
        f"bench.child`: `Worker(concurrency=4)`, defaults, `max_jobs={jobs_each}` (or N if "
        "smaller)) starts, claims and exits. Time to first claim = `Worker.run()` called → "
        "first handler start (from spawn: includes interpreter start and imports). Peak "
        "memory = the child's `ru_maxrss` (it imports only the backend in use; it is "
        "started through `sh`, which forks, because Linux keeps ru_maxrss across execve() and "
        "a child exec'd straight from the benchmark process would report the benchmark's "
        "peak; VmHWM from /proc/self/status agrees).",
        "",
        "| store | backlog | backlog written in s | first claim s | from spawn s | "
        f"{jobs_each} jobs done in s | RSS before claiming MiB | peak RSS (ru_maxrss) MiB | "
        "VmHWM MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        sec.md.append(f"| {r['store']} | {r['backlog']:,} | {_fmt(r.get('create_s'))} | "
                      f"**{_fmt(r.get('first_claim_s'), 3)}** | "
                      f"{_fmt(r.get('first_claim_from_spawn_s'), 2)} | "
                      f"{_fmt(r.get('run_s'), 2)} | {_fmt(r.get('ru_maxrss_at_start_mib'))} | "
                      f"**{_fmt(r.get('ru_maxrss_mib'))}** | {_fmt(r.get('vmhwm_mib'))} |")
    sec.md += ["", f"- local, 100k / 10k: peak memory **{mem_ratio}x**, time to first claim "
               f"**{claim_ratio}x**."]
    if skipped:
        sec.md.append(f"- {skipped}.")
    sec.plots.append("scale.png")
    return sec

