"""The ``status`` section: what ``s3q status`` and ``s3q status --check`` cost as finish/
grows (with on_finish=move it keeps one object per request forever, and ValidateService
runs ``status --check`` every 5 s)."""

from __future__ import annotations

import time
from typing import Any

from bench.common import Context, diff_counts, request_body, request_name
from bench.s3env import S3Env
from bench.sections._shared import Section, _fill_moto, _ratio
from s3q import Queue
from s3q.backends.s3 import S3Store
from s3q.cli.status import queue_status

WAITING = 10  # a few waiting requests, so that wait/ is listed too


def _time_status(store: S3Store, queue: Queue, history: bool) -> tuple[float, int]:
    """(seconds, LIST requests) of one status computation on ``queue`` (over ``store``)."""
    before, _ = store.snapshot_counts()
    t0 = time.perf_counter()
    queue_status(queue, history=history)
    seconds = time.perf_counter() - t0
    after, _ = store.snapshot_counts()
    return seconds, diff_counts(after, before).get("ListObjectsV2", 0)


def _status_run(s3: S3Env, finished: int, rounds: int) -> dict[str, Any]:
    endpoint, prefix = s3.fresh("status")
    filled = _fill_moto(endpoint, prefix, finished, seconds=600, state="finish")
    store = s3.store(endpoint, prefix)
    queue = Queue(store)
    for i in range(WAITING):
        queue.submit(request_name(finished + i), request_body(i))
    full, check = [], []
    for _ in range(rounds):  # alternated, side by side
        full.append(_time_status(store, queue, history=True))
        check.append(_time_status(store, queue, history=False))
    return {"finished": filled, "rounds": rounds,
            "status_s": min(s for s, _ in full), "check_s": min(s for s, _ in check),
            "status_lists": full[0][1], "check_lists": check[0][1]}


def status_section(ctx: Context, s3: S3Env) -> Section:
    sec = Section("status", "Status: `s3q status` vs `s3q status --check` as finish/ grows")
    sizes = [1_000, 5_000] if ctx.quick else [2_000, 20_000]
    runs = [_status_run(s3, n, rounds=3) for n in sizes]
    for r in runs:
        label = f"finish/ {r['finished']:,}"
        ctx.figure("status", f"{label}: status", round(r["status_s"], 3), "s")
        ctx.figure("status", f"{label}: status --check", round(r["check_s"], 3), "s")
    sec.data = {"runs": runs, "waiting": WAITING}
    sec.md += [
        f"S3 (moto): finish/ filled with N objects, {WAITING} requests waiting; "
        "`queue_status()` as `s3q status` computes it (with history) and as "
        "`s3q status --check` does (finish/ not listed), alternated, best of 3.",
        "",
        "| finish/ | status s | --check s | status / --check | LIST status | LIST --check |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        sec.md.append(f"| {r['finished']:,} | {r['status_s']:.3f} | {r['check_s']:.3f} | "
                      f"**{_ratio(r['status_s'], r['check_s'])}x** | {r['status_lists']} | "
                      f"{r['check_lists']} |")
    sec.md += [
        "",
        "- `status` lists finish/ to count it (one LIST per 1,000 objects on S3); "
        "`--check` does not, so its cost does not grow with the history. Trim finish/ with "
        "an S3 lifecycle rule or `s3q purge finish --older-than` (docs/OPERATIONS.md).",
    ]
    return sec
