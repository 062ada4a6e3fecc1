"""The ``scale`` section: 10 / 10k / 100k requests waiting in wait/, the worker process's
time to first claim and peak RSS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Context, read_events, request_body, request_name, timed
from bench.s3env import S3Env
from bench.sections._shared import Section, _fill_moto, _fmt, _kill, _ratio, _s3_spec


def _spawn_forked(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Like :func:`bench.sections.recovery._spawn`, through ``sh`` which forks before
    exec'ing Python: Linux keeps ru_maxrss across execve(), and a child exec'd straight
    from this (large) process would report this process's peak as its own; a forked
    grandchild starts from sh's."""
    return subprocess.Popen(["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m",
                             "bench.child", json.dumps(spec)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)



def _write_backlog_local(root: Path, n: int) -> float:
    """Drop ``n`` request files into wait/ as any producer (``cp``) would."""
    wait = root / "wait"
    wait.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        (wait / request_name(i)).write_bytes(request_body(i))
    return time.perf_counter() - t0


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
    moto_sizes = [] if ctx.quick else list(ctx.s3_backlogs)
    skipped = ""
    if not s3.is_moto:
        skipped = "the S3 backlog runs only on the suite's own moto server"
    elif ctx.quick:
        skipped = "moto backlog skipped with --quick"
    for n in moto_sizes:
        if skipped:
            break
        endpoint, prefix = s3.fresh(f"scale{n}")
        limit = max(120.0, n / 50)  # moto fills ~200/s; a quarter of that still finishes
        with timed() as t:
            done = _fill_moto(endpoint, prefix, n, seconds=limit)
        if done < n:
            skipped = (f"creating {n:,} objects on moto did not finish in {limit:g} s "
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
    big, small = by.get(("s3 (moto)", 100_000)), by.get(("s3 (moto)", 10_000))
    if big and small:
        sec.md.append(f"- moto, 100k / 10k: peak memory "
                      f"**{_ratio(big.get('ru_maxrss_mib'), small.get('ru_maxrss_mib'))}x**, "
                      f"time to first claim "
                      f"**{_ratio(big.get('first_claim_s'), small.get('first_claim_s'))}x**.")
    if skipped:
        sec.md.append(f"- {skipped}.")
    sec.plots.append("scale.png")
    return sec

