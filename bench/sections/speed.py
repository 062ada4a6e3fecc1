"""The ``speed`` section (issue 12): s3q against the seed's unsafe copy-and-delete, side by
side in one run, at 4 and 16 threads, on plain moto and behind a proxy that adds 25 ms to
every request (S3's round trips): jobs/s and their ratio, requests per job by kind, the
round trips a thread waits for per job, and every duplicate counted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from bench import seed
from bench.common import Context
from bench.runs import Location, RunResult, run_s3q
from bench.s3env import S3Env
from bench.sections._shared import Section, Shared, _check_run, _fmt, _ratio
from tests.s3server import S3Endpoint

LATENCY = 0.025


@contextmanager
def latency_proxy(upstream: str, latency: float) -> Iterator[str]:
    """tests/storeproxy.py in a process of its own (not sharing this process's GIL with the
    clients it measures), adding ``latency`` seconds to every request."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.storeproxy", upstream,
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def _endpoint(s3: S3Env, tag: str, url: str | None) -> tuple[S3Endpoint, str]:
    endpoint, prefix = s3.fresh(tag)
    return (replace(endpoint, endpoint_url=url) if url else endpoint), prefix


def _s3q(s3: S3Env, tag: str, url: str | None, n: int, *, threads: int,
         workers: int) -> RunResult:
    endpoint, prefix = _endpoint(s3, tag, url)
    loc = Location("s3", f"s3://{endpoint.bucket}/{prefix} at {endpoint.endpoint_url}",
                   lambda: s3.store(endpoint, prefix,
                                    max_pool_connections=2 * threads + 4))
    return run_s3q(loc, n, concurrency=threads // workers, workers=workers,
                   label=f"s3q {workers}x{threads // workers}")


def _row(label: str, jobs_per_s: float, counts: dict[str, int], *, jobs: int, threads: int,
         elapsed: float, latency: float, dupes: int) -> dict[str, Any]:
    per_job = {k: round(v / jobs, 2) for k, v in sorted(counts.items()) if v}
    return {"label": label, "jobs_per_s": jobs_per_s, "requests_per_job": per_job,
            "total_per_job": round(sum(counts.values()) / jobs, 2),
            "round_trips_per_job": (round(threads * elapsed / jobs / latency, 1)
                                    if latency else None),
            "processed_more_than_once": dupes}


def speed_section(ctx: Context, s3: S3Env, shared: Shared) -> Section:
    sec = Section("speed", "Faster than the seed: side by side, plain moto and 25 ms RTT")
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float | None] = {}
    for latency in (0.0, LATENCY):
        n = (200 if ctx.quick else 800) if not latency else (150 if ctx.quick else 400)
        with latency_proxy(s3.url, latency) if latency else _nothing() as url:
            where = f"{int(latency * 1000)} ms added" if latency else "plain moto"
            for threads in (4, 16):
                ep, prefix = _endpoint(s3, f"spread{threads}", url)
                spread = seed.run_seed_boto3(ep, prefix, n, threads, spread=True)
                ep, prefix = _endpoint(s3, f"order{threads}", url)
                ordered = seed.run_seed_boto3(ep, prefix, n, threads)
                one = _s3q(s3, f"s3q1x{threads}", url, n, threads=threads, workers=1)
                many = _s3q(s3, f"s3q{threads}x1", url, n, threads=threads, workers=threads)
                for r in (one, many):
                    _check_run(ctx, r)
                for label, jps, counts, elapsed, dupes in (
                        (f"seed, spread, {threads} threads", spread.jobs_per_s, spread.counts,
                         spread.elapsed_s, spread.processed_more_than_once),
                        (f"seed, in order, {threads} threads", ordered.jobs_per_s,
                         ordered.counts, ordered.elapsed_s, ordered.processed_more_than_once),
                        (f"s3q, 1 worker x {threads}", one.jobs_per_s, one.counts,
                         one.elapsed_s, 0),
                        (f"s3q, {threads} workers x 1", many.jobs_per_s, many.counts,
                         many.elapsed_s, 0)):
                    row = _row(label, jps, counts, jobs=n, threads=threads, elapsed=elapsed,
                               latency=latency, dupes=dupes)
                    row["where"] = where
                    rows.append(row)
                    ctx.figure("speed", f"{label} ({where})", jps, "jobs/s")
                if not latency and threads == 4:  # the peers section's references
                    shared.runs["speed-s3q-1x4"], shared.runs["speed-s3q-4x1"] = one, many
                for key, r in ((f"1x{threads}", one), (f"{threads}x1", many)):
                    ratio = _ratio(r.jobs_per_s, spread.jobs_per_s)
                    ratios[f"{where}: s3q {key} / seed spread"] = ratio
                    ctx.figure("speed", f"ratio s3q {key} / seed spread ({where})",
                               ratio or 0.0, "x")
    sec.data = {"rows": rows, "ratios": ratios, "latency_s": LATENCY}
    sec.md += [
        "One moto server, one run: each row a fresh bucket, the same N small requests, the "
        "seed's copy + delete written plainly with boto3 (each thread its own client; "
        "'spread': each takes its own share of each listing, the strongest honest version; "
        "'in order': all take the listing in order and collide), and s3q's burst worker "
        f"(threads in one worker, or one worker per thread). Behind the proxy every request "
        f"waits {int(LATENCY * 1000)} ms more (tests/storeproxy.py, its own process). "
        "Round trips per job = threads x elapsed / jobs / latency: what a thread waits for.",
        "",
        "| where | approach | jobs/s | requests per job | by kind | round trips per job "
        "| processed more than once |",
        "|---|---|---:|---:|---|---:|---:|",
        *(f"| {r['where']} | {r['label']} | **{_fmt(r['jobs_per_s'])}** | "
          f"{r['total_per_job']} | "
          f"{', '.join(f'{k} {v}' for k, v in r['requests_per_job'].items())} | "
          f"{r['round_trips_per_job'] if r['round_trips_per_job'] is not None else '-'} | "
          f"{r['processed_more_than_once']} |" for r in rows),
        "",
        *(f"- {k}: **{_fmt(v) if v is not None else '-'}x**" for k, v in ratios.items()),
    ]
    return sec


@contextmanager
def _nothing() -> Iterator[None]:
    yield None
