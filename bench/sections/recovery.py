"""The ``recovery`` section: SIGKILL of a worker process holding 8 jobs, then takeover by a
surviving worker vs a restart with the same worker id."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Context, read_events, request_body, request_name, wait_for
from bench.s3env import S3Env
from bench.sections._shared import Section, _fmt, _kill, _s3_spec
from s3q import Queue, QueueConfig
from s3q.worker import WorkerOptions


def _spawn(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.child", json.dumps(spec)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)



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
