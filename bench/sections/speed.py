"""The ``speed`` section (issue 12): s3q against the seed's unsafe copy-and-delete, side by
side in one run, at 4 and 16 threads, on plain moto and behind a proxy that adds 25 ms to
every request (S3's round trips; a client that waits for ``100 Continue`` waits twice):
jobs/s and their ratio, requests per job by kind, the round trips a thread waits for per
job, the CPU each process spends per job, and every duplicate counted; then moto's own rate
per operation, and the least server time a job of the seed and of a one-slot s3q worker can
cost (an estimate of how far one-slot workers can go where the server is the limit). Each
shape runs ``--rounds`` times (default 3); ratios are medians of each round's."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from bench import ceiling, seed
from bench.common import Context, CpuMeter
from bench.runs import Location, RunResult, run_s3q
from bench.s3env import S3Env
from bench.sections._shared import Section, Shared, _check_run, _fmt, _ratio
from tests.s3server import S3Endpoint

LATENCY = 0.025
SERVER = "S3 server"
#: The least a small job can cost the server, by request (listing wait/ left out: every
#: worker of either kind pays it): the seed's claim, read and finish by copy + delete, and a
#: worker of one slot (c0 GET, c1 PUT, c2 sent with its previous job's commit d5 in one
#: DeleteObjects, the finish/ PUT).
FLOORS = {"seed": {"CopyObject": 2, "DeleteObject": 2, "GetObject": 1},
          "s3q, one slot": {"GetObject": 1, "PutObject": 2, "DeleteObjects": 1}}


@contextmanager
def latency_proxy(upstream: str, latency: float) -> Iterator[tuple[str, int]]:
    """tests/storeproxy.py in a process of its own (not sharing this process's GIL with the
    clients it measures), adding ``latency`` seconds to every request: its URL and pid."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.storeproxy", upstream,
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip(), proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def _endpoint(s3: S3Env, tag: str, url: str | None) -> tuple[S3Endpoint, str]:
    endpoint, prefix = s3.fresh(tag)
    return (replace(endpoint, endpoint_url=url) if url else endpoint), prefix


def _s3q(s3: S3Env, tag: str, url: str | None, n: int, *, threads: int,
         workers: int, meter: CpuMeter | None = None) -> RunResult:
    endpoint, prefix = _endpoint(s3, tag, url)
    loc = Location("s3", f"s3://{endpoint.bucket}/{prefix} at {endpoint.endpoint_url}",
                   lambda: s3.store(endpoint, prefix,
                                    max_pool_connections=2 * threads + 4))
    return run_s3q(loc, n, concurrency=threads // workers, workers=workers,
                   label=f"s3q {workers}x{threads // workers}", meter=meter)


def _row(label: str, runs: list[Any], *, jobs: int, threads: int,
         latency: float) -> dict[str, Any]:
    """A table row over ``runs`` (seed results or RunResults of one shape): median jobs/s,
    requests per job over all of them, round trips of the median run, every duplicate."""
    median = _median_run(runs)
    cpu = {k: round(1000 * v / jobs, 1) for k, v in median.extra.get("cpu_s", {}).items()}
    # the cores the run's processes used: all three together, and moto's server alone
    busy = {"all": sum(cpu.values()), SERVER: cpu.get(SERVER)} if cpu else {}
    counts: Counter[str] = Counter()
    for r in runs:
        counts.update(r.counts)
    done = jobs * len(runs)
    per_job = {k: round(v / done, 2) for k, v in sorted(counts.items()) if v}
    return {"label": label, "jobs_per_s": median.jobs_per_s,
            "rounds": [r.jobs_per_s for r in runs], "requests_per_job": per_job,
            "total_per_job": round(sum(counts.values()) / done, 2),
            "round_trips_per_job": (round(threads * median.elapsed_s / jobs / latency, 1)
                                    if latency else None),
            "processed_more_than_once": sum(getattr(r, "processed_more_than_once", 0)
                                            for r in runs),
            "cpu_ms_per_job": cpu,
            "cores_used": {k: round(median.jobs_per_s * v / 1000, 2)
                           for k, v in busy.items() if v is not None}}


def speed_section(ctx: Context, s3: S3Env, shared: Shared) -> Section:
    """Each shape runs ``ctx.rounds`` times, the seed's spread baseline and s3q's two shapes
    one after the other in each round, so that each ratio compares runs minutes apart at
    most; the report gives each ratio's median over the rounds and its range (this
    machine's speed drifts by tens of percent between runs)."""
    sec = Section("speed", "Faster than the seed: side by side, plain moto and 25 ms RTT")
    rows: list[dict[str, Any]] = []
    ratios: dict[str, dict[str, Any]] = {}
    for latency in (0.0, LATENCY):
        n = (200 if ctx.quick else 800) if not latency else (150 if ctx.quick else 400)
        with latency_proxy(s3.url, latency) if latency else _nothing() as proxy:
            url = proxy[0] if proxy else None
            pids = {SERVER: s3.server_pid} if s3.server_pid is not None else {}
            if proxy:
                pids["proxy"] = proxy[1]
            where = f"{int(latency * 1000)} ms added" if latency else "plain moto"
            for threads in (4, 16):
                ep, prefix = _endpoint(s3, f"order{threads}", url)
                # the in-order seed runs once: it shows what colliding costs
                ordered = seed.run_seed_boto3(ep, prefix, n, threads, meter=CpuMeter(pids))
                spreads: list[seed.SeedResult] = []
                ones: list[RunResult] = []
                manys: list[RunResult] = []
                for _ in range(ctx.rounds):
                    ep, prefix = _endpoint(s3, f"spread{threads}", url)
                    spreads.append(seed.run_seed_boto3(ep, prefix, n, threads, spread=True,
                                                       meter=CpuMeter(pids)))
                    ones.append(_s3q(s3, f"s3q1x{threads}", url, n, threads=threads,
                                     workers=1, meter=CpuMeter(pids)))
                    manys.append(_s3q(s3, f"s3q{threads}x1", url, n, threads=threads,
                                      workers=threads, meter=CpuMeter(pids)))
                for r in ones + manys:
                    _check_run(ctx, r)
                for label, runs in (
                        (f"seed, spread, {threads} threads", spreads),
                        (f"seed, in order, {threads} threads", [ordered]),
                        (f"s3q, 1 worker x {threads}", ones),
                        (f"s3q, {threads} workers x 1", manys)):
                    row = _row(label, runs, jobs=n, threads=threads, latency=latency)
                    row["where"] = where
                    rows.append(row)
                    ctx.figure("speed", f"{label} ({where})", row["jobs_per_s"], "jobs/s",
                               rounds=row["rounds"])
                if not latency and threads == 4:  # the peers section's references
                    shared.runs["speed-s3q-1x4"] = _median_run(ones)
                    shared.runs["speed-s3q-4x1"] = _median_run(manys)
                for key, mine in ((f"1x{threads}", ones), (f"{threads}x1", manys)):
                    each = [_ratio(m.jobs_per_s, sp.jobs_per_s)
                            for m, sp in zip(mine, spreads, strict=True)]
                    got = [x for x in each if x is not None]
                    ratio = statistics.median(got) if got else None
                    ratios[f"{where}: s3q {key} / seed spread"] = {
                        "median": ratio, "rounds": each}
                    ctx.figure("speed", f"ratio s3q {key} / seed spread ({where})",
                               ratio or 0.0, "x", rounds=each)
    sec.data = {"rows": rows, "ratios": ratios, "latency_s": LATENCY, "rounds": ctx.rounds,
                "capacity": _capacity(ctx, s3)}
    sec.md += [
        "One moto server, one run: each row a fresh bucket, the same N small requests, the "
        "seed's copy + delete written plainly with boto3 (each thread its own client; "
        "'spread': each takes its own share of each listing, the strongest honest version; "
        "'in order': all take the listing in order and collide), and s3q's burst worker "
        f"(threads in one worker, or one worker per thread). Behind the proxy every request "
        f"waits {int(LATENCY * 1000)} ms more (tests/storeproxy.py, its own process), and "
        "a `100 Continue` a client waits for before sending a body as long again (on S3 "
        "that interim answer is a round trip of its own). "
        f"Each shape ran {ctx.rounds} time(s) (`--rounds`), the spread seed and s3q's two "
        "shapes one after the other in each round (the in-order seed once); jobs/s is the "
        "median, with the range; requests per job are over all rounds. A ratio is taken "
        "within each round, and given as the median, with each round's value. "
        "Round trips per job = threads x elapsed / jobs / latency (of the median run): "
        "what a thread waits for. CPU per job (of the median run, ms): what the clients "
        "(this process: s3q's workers, or the seed's threads), moto's server and the proxy "
        "spent while it ran, divided by its jobs; cores used = jobs/s x CPU per job, of "
        "the three together and of moto's server alone (one process under one GIL: one "
        "core at most). Where the three share the machine's cores with little left, each "
        "side's rate follows its CPU per job rather than its round trips (as the round "
        "trips per job of the 16-thread rows show: several times the 4-thread rows'). S3's "
        "servers do not share the clients' cores.",
        "",
        "| where | approach | jobs/s (median) | range | requests per job | by kind "
        "| round trips per job | CPU per job: client / S3 server / proxy "
        "| cores used: all / S3 server | processed more than once |",
        "|---|---|---:|---|---:|---|---:|---|---:|---:|",
        *(f"| {r['where']} | {r['label']} | **{_fmt(r['jobs_per_s'])}** | "
          f"{_fmt(min(r['rounds']))}-{_fmt(max(r['rounds']))} | {r['total_per_job']} | "
          f"{', '.join(f'{k} {v}' for k, v in r['requests_per_job'].items())} | "
          f"{r['round_trips_per_job'] if r['round_trips_per_job'] is not None else '-'} | "
          f"{_cpu(r['cpu_ms_per_job'])} | "
          f"{' / '.join(str(v) for v in r['cores_used'].values()) or '-'} | "
          f"{r['processed_more_than_once']} |" for r in rows),
        "",
        *(f"- {k}: **{_fmt(v['median'], 2) if v['median'] is not None else '-'}x** "
          f"(rounds: {', '.join(_fmt(x, 2) if x is not None else '-' for x in v['rounds'])})"
          for k, v in ratios.items()),
        "",
        *_capacity_md(sec.data["capacity"]),
    ]
    return sec


def _capacity(ctx: Context, s3: S3Env) -> dict[str, Any]:
    """moto's rate per operation (bench/ceiling.py), measured after the runs, and the least
    a job of each kind (FLOORS) can cost at those rates (None when an operation it needs
    measured nothing)."""
    seconds = 0.5 if ctx.quick else 2.0
    endpoint, prefix = s3.fresh("speed-capacity")
    rates = ceiling.measure(s3.store(endpoint, prefix), seconds)
    measured = all(rates[ceiling.OP_OF_REQUEST[r]].per_s > 0
                   for mix in FLOORS.values() for r in mix)
    floors = {k: ceiling.bound(mix, rates)[0] for k, mix in FLOORS.items()}
    ratio = round(floors["seed"] / floors["s3q, one slot"], 2) if measured else None
    ctx.figure("speed", "seed floor / one-slot floor (server time per job)", ratio or 0.0,
               "x", floors_ms={k: round(v * 1000, 1) for k, v in floors.items()})
    return {"seconds_per_op": seconds, "threads": ceiling.THREADS,
            "ops_per_s": {op: r.per_s for op, r in rates.items()},
            "floor_ms_per_job": {k: round(v * 1000, 1) if measured else None
                                 for k, v in floors.items()},
            "floor_ratio": ratio}


def _capacity_md(cap: dict[str, Any]) -> list[str]:
    ops = ", ".join(f"{op} {_fmt(v)}/s" for op, v in cap["ops_per_s"].items())
    text = (f"**What the server allows.** moto's rates, measured after the runs "
            f"({cap['threads']} threads of this process, one operation at a time, "
            f"~{cap['seconds_per_op']:g} s each, deletes until their objects ran out; "
            f"bench/ceiling.py): {ops}. ")
    if cap["floor_ratio"] is None:
        return [text + "An operation measured nothing: no floor this run."]
    seed_ms, one_ms = cap["floor_ms_per_job"]["seed"], cap["floor_ms_per_job"]["s3q, one slot"]
    return [
        text + "Where moto's server is the limit (its cores used near one in the table "
        "above), a row's jobs/s follow what its requests cost the server more than its "
        "round trips. Counting each operation at what it costs alone (an estimate: "
        "in a mix, and from more clients, an operation may cost the server more or less), "
        f"the least a job can cost: the seed's 5 requests {seed_ms} ms, the 4 of an s3q "
        f"worker of one slot {one_ms} ms (c0 GET, c1 PUT, c2 with the previous job's "
        "commit in one DeleteObjects, the finish/ PUT); listing wait/ left out (every worker "
        "of either kind lists it, and a LIST costs the server by the keys it returns). "
        "There, workers of one slot that list as much as the seed's can be expected to run "
        f"about **{cap['floor_ratio']}x** the seed at best, less what their collisions and "
        "each worker's start and end cost beyond the seed's (a worker registers, recovers "
        "its own work, takes part in the scanner role, and a burst looks at the leases "
        "before it ends). "
        "Where the server is not the limit (round trips or the clients' CPU are), they can "
        "do better; so can a worker of many slots, which shares one listing and its deletes "
        "among them.",
    ]


def _cpu(ms: dict[str, float]) -> str:
    """CPU ms per job, client / S3 server / proxy (what was measured; '-' for the rest)."""
    return " / ".join(str(ms[k]) if k in ms else "-" for k in ("client", SERVER, "proxy"))


def _median_run(runs: list[Any]) -> Any:
    """The run of median jobs/s (of an even number, the faster of the middle two)."""
    return sorted(runs, key=lambda r: r.jobs_per_s)[len(runs) // 2]


@contextmanager
def _nothing() -> Iterator[None]:
    yield None
