"""s3q side by side with others on the same server: the ``seed`` section (the seed's copy +
delete, boto3 and ``aws s3 mv``) and the ``peers`` section (other S3 queues, run in
bench/.peers-venv)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict

from bench import peers, seed
from bench.common import Context, timed
from bench.runs import run_s3q, s3_location
from bench.s3env import S3Env
from bench.sections._shared import Section, Shared, _check_run, _fmt, _ratio


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
    # s3q's runs of the `seed` section, else those of `speed` (plain moto, 4 threads)
    source = "seed" if "seed-s3q-1x4" in shared.runs else "speed"
    ref = shared.runs.get(f"{source}-s3q-1x4")
    ref4 = shared.runs.get(f"{source}-s3q-4x1")
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
    sec.md += [f"- The s3q references are this run's `{source}` section runs (same server, "
               f"{ref.jobs if ref else n:,} requests): 1 worker x 4 handlers = "
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

