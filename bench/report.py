"""The report: report.md (ratios first, then one section per measurement), results.json
(everything measured, with the command and environment) and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import Context
from bench.sections import Section


def _summary(ctx: Context, sections: dict[str, Section]) -> list[str]:
    """The ratios (measured side by side in this run) first, then headline figures."""
    lines = ["## Ratios first (side by side, same run, same machine)", ""]
    seed = sections.get("seed")
    if seed and seed.data:
        d = seed.data
        sb = d["seed_boto3"]
        lines += [
            "- s3q / seed copy+delete (boto3, 4 racing workers): "
            f"**{d['ratio_s3q_1x4_over_seed_boto3']}x** "
            f"(s3q 1 worker x 4 handlers), **{d['ratio_s3q_4x1_over_seed_boto3']}x** "
            "(s3q 4 racing workers x 1) — and the seed processed "
            f"**{sb['processed_more_than_once']:,} of {sb['jobs']:,}** requests more than "
            "once; s3q none.",
            f"- s3q / seed `aws s3 mv` per move (CLI): **{d['ratio_s3q_over_seed_cli']}x**.",
        ]
    ceil = sections.get("ceiling")
    if ceil and ceil.data.get("bounds"):
        parts = [f"{b['run']} {b['fraction']:.2f}" for b in ceil.data["bounds"]]
        lines.append("- s3q throughput / the store's own ceiling for its request mix: "
                     + ", ".join(parts) + ".")
    tp = sections.get("throughput")
    if tp and tp.data.get("runs"):
        runs = {(r["store"], r["concurrency"]): r["jobs_per_s"] for r in tp.data["runs"]}
        for store in ("local", "s3"):
            base = runs.get((store, 1))
            more = [f"{c} handlers {runs[(store, c)] / base:.2f}x" for c in (4, 16)
                    if base and (store, c) in runs]
            if more:
                lines.append(f"- {store}: scaling over 1 handler: " + ", ".join(more) + ".")
    peers = sections.get("peers")
    if peers and peers.data.get("results"):
        ref = seed.data["s3q_1x4"]["jobs_per_s"] if seed and seed.data else None
        for res in peers.data["results"]:
            if res.get("ok") and res.get("jobs_per_s") and ref:
                boxed = ", time-boxed" if res.get("timed_out") else ""
                lines.append(f"- s3q (1x4) / {res['peer']} {res.get('package_version')} "
                             f"(4 workers{boxed}): **{ref / res['jobs_per_s']:.2f}x**.")
            elif not res.get("ok"):
                lines.append(f"- {res['peer']}: could not run ({res.get('error')}).")
        for pkg, err in peers.data.get("venv", {}).get("failed", {}).items():
            lines.append(f"- {pkg}: could not be installed ({err.strip()[:200]}).")
    lat = sections.get("latency")
    if lat and lat.data.get("runs"):
        runs = lat.data["runs"]
        for a, b in zip(runs[::2], runs[1::2], strict=False):
            lines.append(f"- latency at {a.get('rate_per_s', 0):g} requests/s, default "
                         f"poll_interval ({a['poll_interval']:g} s) / poll_interval="
                         f"{b['poll_interval']:g}: p50 **{a['p50_s'] / b['p50_s']:.2f}x**, "
                         f"p99 **{a['p99_s'] / b['p99_s']:.2f}x** ({a['p99_s']:.2f} s vs "
                         f"{b['p99_s']:.2f} s).")
    ev = sections.get("events")
    if ev and ev.data.get("latency"):
        poll, on = ev.data["latency"]
        lines.append(f"- latency at 1 request/s, polling / events: p99 "
                     f"**{poll['p99_s'] / on['p99_s']:.1f}x** ({poll['p99_s']:.2f} s vs "
                     f"{on['p99_s']:.2f} s; p50 {poll['p50_s']:.2f} s vs {on['p50_s']:.2f} s).")
        fleets = {(r["fleet"], r["workers"]): r for r in ev.data["idle"]}
        old = fleets.get(("before issue 13: every worker scans", 1))
        ten = fleets.get(("events", 10))
        if old and ten:
            ratio = ten["lists_per_hour"] / max(1.0, old["lists_per_hour"])
            lines.append(f"- idle LISTs per hour, 10 workers with events / 1 worker before "
                         f"issue 13: **{ratio:.2f}x**; $ per idle worker per day "
                         f"{ten['usd_per_worker_day']:.4f} vs {old['usd_per_worker_day']:.4f}.")
    rec = sections.get("recovery")
    if rec and rec.data.get("cases"):
        cases = rec.data["cases"]
        a = next((c for c in cases if c["case"] == "survivor"
                  and c.get("seconds_to_all_done")), None)
        b = next((c for c in cases if c["case"] == "restart"
                  and c.get("seconds_to_all_done")), None)
        if a and b:
            lines.append(f"- recovery of 8 jobs after SIGKILL (lease_ttl={a['lease_ttl']:g}): "
                         f"takeover by a surviving worker {a['seconds_to_all_done']:.1f} s / "
                         f"restart of the same worker id {b['seconds_to_all_done']:.1f} s = "
                         f"**{a['seconds_to_all_done'] / b['seconds_to_all_done']:.1f}x**.")
    sc = sections.get("scale")
    if sc and sc.data.get("mem_ratio_100k_over_10k"):
        lines.append(f"- scale, local backlog 100k / 10k: peak memory "
                     f"**{sc.data['mem_ratio_100k_over_10k']}x**, time to first claim "
                     f"**{sc.data['claim_ratio_100k_over_10k']}x**.")
    costs = sections.get("costs")
    if costs and costs.data.get("rows"):
        rows = {r["label"]: r for r in costs.data["rows"]}
        s3q = next((r for label, r in rows.items() if label.startswith("s3q, S3, 1 worker x 4")),
                   None)
        sd = next((r for label, r in rows.items() if label.startswith("seed copy+delete")), None)
        cli = next((r for label, r in rows.items() if label.startswith("seed `aws")), None)
        if s3q and sd:
            usd = s3q["usd_per_million_jobs"]
            line = (f"- cost per million jobs: s3q ${usd:.2f} ({s3q['total_per_job']:.2f} "
                    f"requests/job); seed with racing workers ${sd['usd_per_million_jobs']:.2f}"
                    f" ({sd['total_per_job']:.2f}/job): s3q/seed "
                    f"**{usd / sd['usd_per_million_jobs']:.2f}x**")
            if cli:
                line += (f"; seed without races (`aws s3 mv`, disjoint shares) "
                         f"${cli['usd_per_million_jobs']:.2f} ({cli['total_per_job']:.2f}/job): "
                         f"s3q/seed **{usd / cli['usd_per_million_jobs']:.2f}x**")
            lines.append(line + ".")
    costs_idle = costs.data.get("idle") if costs else None
    if costs_idle:
        lines.append(f"- idle worker (defaults): {costs_idle['per_hour_steady']:,.0f} requests/"
                     f"hour after the back-off ramp ≈ ${costs_idle['usd_per_month_steady']:.2f}"
                     " per month.")
    return lines


def write(ctx: Context, sections: dict[str, Section], plots_note: str) -> Path:
    env = asdict(ctx.env)
    md = [
        f"# s3q benchmark report{' (--quick)' if ctx.quick else ''}",
        "",
        f"- Command: `{ctx.command}` (from the repository root)",
        f"- Environment: Python {env['python']} on {env['platform']}; {env['cores_usable']} "
        f"usable of {env['cores']} cores, {env['memory_gib']} GiB; boto3 {env['boto3']}, "
        f"botocore {env['botocore']}, moto {env['moto']} (S3 server in a separate process on "
        f"loopback), awscli {env['awscli']}, matplotlib {env['matplotlib']}; s3q at "
        f"{env['s3q_commit']}{' with uncommitted changes in src/' if env['s3q_dirty'] else ''}",
        f"- Load average at start: {env['load_at_start']} (the machine is shared: absolute "
        "figures are noisy; compare the ratios, each measured side by side in this run). "
        "Every figure in results.json carries the load average at the time it was measured.",
        f"- Requests per throughput run: {ctx.jobs:,}. Total run time: "
        f"{_elapsed(ctx)}.",
        "",
    ]
    md += _summary(ctx, sections)
    md.append("")
    for sec in sections.values():
        md += [f"## {sec.title}", "", f"_Command: `{ctx.command}` · environment: {sec.env} "
               f"(load at the section's start) · section took {sec.seconds:.0f} s_", ""]
        md += sec.md
        for plot in sec.plots:
            if (ctx.out / plot).exists():
                md += ["", f"![{plot}]({plot})"]
        md.append("")
    if ctx.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in ctx.notes] + [""]
    if plots_note:
        md += [f"_Plots: {plots_note}_", ""]
    path = ctx.out / "report.md"
    path.write_text("\n".join(md))
    data = {"command": ctx.command, "env": env, "quick": ctx.quick, "jobs": ctx.jobs,
            "elapsed_s": round(_seconds(ctx), 1),
            "sections": {k: {"title": s.title, "data": s.data} for k, s in sections.items()},
            "figures": ctx.figures, "notes": ctx.notes}
    (ctx.out / "results.json").write_text(json.dumps(_clean(data), indent=2,
                                                     default=_jsonable, allow_nan=False))
    return path


def _seconds(ctx: Context) -> float:
    import time

    return time.time() - ctx.started


def _elapsed(ctx: Context) -> str:
    s = _seconds(ctx)
    return f"{int(s // 60)} min {int(s % 60)} s"


def _clean(o: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def _jsonable(o: Any) -> Any:
    return str(o)
