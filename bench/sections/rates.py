"""The ``throughput`` section (jobs/s, local directory and S3, 1 / 4 / 16 concurrent
handlers; it also measures each store's own rates) and the ``ceiling`` section built on
those rates."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench import ceiling
from bench.common import Context, CountingStore
from bench.runs import RunResult, local_location, run_s3q, s3_location
from bench.s3env import S3Env
from bench.sections._shared import Section, Shared, _check_run, _fmt, _ratio
from s3q.backends.local import LocalStore


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
        f"threads sharing one store object (s3q's client settings), ~{seconds:g} s each "
        "(deletes: until their objects ran out), "
        "measured in the same run right after that store's throughput runs. PUTs are "
        "conditional (`If-None-Match: *`, as c1), DELETEs conditional (`If-Match`, as c3/d5), "
        "a batch delete is one DeleteObjects of 2 conditional deletes (a one-slot worker's "
        "c2 with its previous job's commit; on a store that does not honour their ETags, "
        "the 2 DeleteObject s3q sends there instead), "
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
