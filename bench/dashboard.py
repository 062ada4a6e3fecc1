"""Dashboard page times and store requests per page, with a large history (not a test).

    .venv/bin/python -m bench.dashboard [--finished 100000] [--failed 10000] [--only local,moto]

Fills a queue with FINISHED requests in finish/, FAILED in failed/ (each with an error record
of one of 4 error types), 200 waiting, 40 in flight (claimed, leases held) and 12 worker
records; then draws every page with the dashboard's Flask application (in this process,
through its test client) and counts the store requests each page makes (the dashboard's
MeteredStore). "cold" = a new dashboard process (no cache); "warm" = the same page again
after the snapshot's ttl expired (counts and leases are listed again; for failed/, "warm" is
the view once every error record has been read: each view reads at most 1,000 new ones and
caches them by ETag). Writes bench/results/dashboard-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import BENCH, isolate_from_aws_config, request_body, request_name
from bench.s3env import S3Env
from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.dashboard.app import create_app
from s3q.dashboard.metered import MeteredStore
from s3q.dashboard.security import Credentials
from s3q.dashboard.snapshot import Snapshots
from s3q.gauges import queue_registry
from s3q.records import ErrorRecord
from s3q.registry import PREFIX, WorkerRecord
from s3q.store import Store

ERRORS = [("KeyError", "'customer_id'"), ("TimeoutError", "upstream took 30 s"),
          ("ValueError", "bad date '2026-13-01'"), ("HandlerError", "exit code 2")]
PAGES = ["/", "/inflight", "/workers", "/failed", "/failed?glob=00001*",
         "/failed?type=KeyError&page=3", "/request/{failed}", "/metrics"]


def error_body(i: int) -> bytes:
    kind, message = ERRORS[i % len(ERRORS)]
    return ErrorRecord(name=request_name(i), attempts=3, worker="bench-w", failed_at=time.time(),
                       error={"type": kind, "message": message,
                              "traceback": f"Traceback ...\n{kind}: {message}\n"}).to_bytes()


def fill_local(root: Path, finished: int, failed: int) -> None:
    """Files written directly (as a long-running queue leaves them), not through put()."""
    for prefix, n, offset in (("finish", finished, 0), ("failed", failed, finished)):
        base = root / prefix
        base.mkdir(parents=True, exist_ok=True)
        for i in range(offset, offset + n):
            (base / request_name(i)).write_bytes(request_body(i, 256))
    errors = root / ".s3q" / "error"
    errors.mkdir(parents=True, exist_ok=True)
    for i in range(finished, finished + failed):
        (errors / request_name(i)).write_bytes(error_body(i))


def fill_s3(put: Any, finished: int, failed: int) -> None:
    """PUTs from 10 threads (moto takes ~200 a second)."""
    done = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        if i < finished:
            put(f"finish/{request_name(i)}", request_body(i, 256))
        else:
            put(f"failed/{request_name(i)}", request_body(i, 256))
            put(f".s3q/error/{request_name(i)}", error_body(i))
        with lock:
            done[0] += 1
            if done[0] % 10_000 == 0:
                print(f"    filled {done[0]:,}", flush=True)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(one, range(finished + failed)))


def live_parts(store: Store, base: int) -> None:
    """200 waiting, 40 in flight (leases held), 12 worker records."""
    q = Queue(store, QueueConfig(lease_ttl=3600))
    for i in range(240):
        q.submit(request_name(base + i), request_body(i, 256))
    for _ in range(40):
        assert q.claim("bench-holder") is not None
    for w in range(12):
        record = WorkerRecord(id=f"ip-10-0-0-{w}/i-{w:08x}", host=f"ip-10-0-0-{w}", pid=w,
                              version="0.1.0", slots=4, busy=w % 5, paused=False,
                              interval=60, started=time.time() - 3600,
                              heartbeat=time.time(),
                              counters={"completed": 1000 + w, "failed": w},
                              history=[(time.time() - 60 * m, 20 + m % 7) for m in range(60)])
        store.put(PREFIX + record.id, record.to_bytes())


def measure(store: Store, failed_name: str, rounds: int = 3) -> list[dict[str, Any]]:
    rows = []
    for template in PAGES:
        path = template.format(failed=failed_name)
        metered = MeteredStore(store)
        queue = Queue(metered, QueueConfig(lease_ttl=3600))
        app = create_app(queue, Credentials(), refresh=0.0,  # every view gathers anew
                         metrics=queue_registry(Snapshots(queue, ttl=0.0), metered))
        client = app.test_client()
        times, costs = [], []
        # failed/: each view reads at most 1,000 unseen error records; go on until all are
        n = rounds if "/failed" not in path else rounds + 12
        for _ in range(n):
            before = metered.snapshot_counts()[0]
            t0 = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - t0)
            assert response.status_code == 200, (path, response.status_code)
            after = metered.snapshot_counts()[0]
            costs.append({op: n - before.get(op, 0) for op, n in after.items()
                          if n - before.get(op, 0)})
        rows.append({"page": path, "cold_s": round(times[0], 3),
                     "warm_s": round(min(times[1:]), 3), "cold_requests": costs[0],
                     "warm_requests": costs[-1]})
        print(f"    {path:32} cold {times[0]:7.3f} s {sum(costs[0].values()):6} req "
              f"{costs[0]}   warm {min(times[1:]):7.3f} s {sum(costs[-1].values()):5} req",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--only", default="local,moto")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"finished": args.finished, "failed": args.failed,
                               "load_at_start": os.getloadavg()[0]}
    failed_name = request_name(args.finished + 1)
    if "local" in args.only:
        with tempfile.TemporaryDirectory(prefix="s3q-bench-dash-") as tmp:
            t0 = time.monotonic()
            fill_local(Path(tmp), args.finished, args.failed)
            store: Store = LocalStore(Path(tmp))
            live_parts(store, args.finished + args.failed)
            print(f"== local store (filled in {time.monotonic() - t0:.0f} s)", flush=True)
            results["local"] = measure(store, failed_name)
    if "moto" in args.only:
        isolate_from_aws_config()
        s3 = S3Env(Path(tempfile.mkdtemp()) / "rec.jsonl")
        try:
            endpoint, prefix = s3.fresh("dash")
            client = endpoint.client()
            t0 = time.monotonic()
            fill_s3(lambda key, body: client.put_object(
                Bucket=endpoint.bucket, Key=f"{prefix}/{key}", Body=body),
                args.finished, args.failed)
            store = s3.store(endpoint, prefix)
            live_parts(store, args.finished + args.failed)
            print(f"== moto (filled in {time.monotonic() - t0:.0f} s)", flush=True)
            results["moto"] = measure(store, failed_name)
        finally:
            s3.close()
    out = BENCH / "results" / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
