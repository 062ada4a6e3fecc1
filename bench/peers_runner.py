"""Runs one peer library's queue on the suite's workload, inside bench/.peers-venv (the
peers need Python >= 3.12 and pin their own boto3; nothing of s3q is imported here).

    bench/.peers-venv/bin/python bench/peers_runner.py '{"peer": "pail", ...}'

Workload, as for s3q: ``jobs`` small (1 KB JSON) jobs submitted first, then ``workers``
workers (each with its own client, as separate servers would have) drain them with a no-op
handler that records which job it ran (so jobs run more than once are counted), for at most
``timeout`` seconds. With ``"wait_for_go": true`` the runner prints ``ready`` after the
submission and waits for a line on stdin before starting the workers (so the caller can
count the workers' requests alone with moto's recorder). The result is one JSON object on
the last line of stdout.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

DISTRIBUTION = {"pail": "pailq", "jqueue": "jqueue", "buquet": "buquet"}


def payload(i: int, size: int = 1024) -> dict[str, Any]:
    """A JSON job of ``size`` bytes once serialized."""
    head = {"id": i, "kind": "bench", "pad": ""}
    pad = size - len(json.dumps(head))
    return {**head, "pad": "x" * max(0, pad)}


class Tally:
    """Handler runs per job id, and requests per S3 operation (botocore 'before-call')."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: Counter[int] = Counter()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def ran(self, job_id: int) -> None:
        with self.lock:
            self.runs[job_id] += 1

    def on_call(self, event_name: str, **_: Any) -> None:
        with self.lock:
            self.requests[event_name.rsplit(".", 1)[-1]] += 1

    def error(self, exc: BaseException) -> None:
        with self.lock:
            self.errors[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1

    def hook(self, client: Any) -> Any:
        client.meta.events.register("before-call.s3", self.on_call)
        return client


def s3_client(cfg: dict[str, Any]) -> Any:
    return boto3.client(
        "s3", endpoint_url=cfg["endpoint"], region_name=cfg["region"],
        aws_access_key_id=cfg["access_key"], aws_secret_access_key=cfg["secret_key"],
        config=Config(s3={"addressing_style": "path"}))


def ready(cfg: dict[str, Any]) -> None:
    if cfg.get("wait_for_go"):
        print("ready", flush=True)
        sys.stdin.readline()


# ---------------------------------------------------------------------------------- pail
def run_pail(cfg: dict[str, Any], tally: Tally) -> dict[str, Any]:
    pail = importlib.import_module("pail")
    bucket, n = cfg["bucket"], cfg["jobs"]
    s3_client(cfg).create_bucket(Bucket=bucket)

    def connect() -> Any:
        return pail.Pail.connect(bucket, endpoint_url=cfg["endpoint"],
                                 access_key_id=cfg["access_key"],
                                 secret_access_key=cfg["secret_key"], region=cfg["region"])

    producer = connect()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: producer.enqueue(payload(i)), range(n)))
    ready(cfg)
    deadline = time.monotonic() + cfg["timeout"]

    def handler(p: dict[str, Any]) -> None:
        tally.ran(int(p["id"]))

    def worker(k: int) -> None:
        p = connect()
        tally.hook(p.store.client)
        while time.monotonic() < deadline:
            try:
                if not p.work_once(handler):
                    return  # nothing left to claim
            except Exception as exc:
                tally.error(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(cfg["workers"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    stats = producer.stats()
    return {"elapsed_s": elapsed, "completed": stats.done,
            "left": {"pending": stats.pending, "running": stats.running,
                     "failed": stats.failed},
            "settings": (f"{cfg['workers']} threads, one Pail.connect() each, "
                         "loop work_once(handler) until it finds nothing; defaults "
                         "(visibility_timeout=30, max_retries=3)")}


# -------------------------------------------------------------------------------- jqueue
class Boto3Storage:
    """jqueue's ObjectStoragePort on plain boto3 (its documented custom-adapter seam): the
    same two calls as jqueue's own S3Storage (GET with ETag; PUT with If-Match), which
    needs aioboto3 — uninstallable next to pailq's boto3 pin in one venv."""

    def __init__(self, client: Any, bucket: str, key: str, conflict: type[Exception]) -> None:
        self.client, self.bucket, self.key, self.conflict = client, bucket, key, conflict

    def _read(self) -> tuple[bytes, str | None]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return b"", None
            raise
        return bytes(resp["Body"].read()), str(resp["ETag"])

    def _write(self, content: bytes, if_match: str | None) -> str:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key, "Body": content,
                                  "ContentType": "application/json"}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            return str(self.client.put_object(**kwargs)["ETag"])
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise self.conflict("S3 ETag mismatch (PreconditionFailed)") from e
            raise

    async def read(self) -> tuple[bytes, str | None]:
        return await asyncio.to_thread(self._read)

    async def write(self, content: bytes, if_match: str | None = None) -> str:
        return await asyncio.to_thread(self._write, content, if_match)


def run_jqueue(cfg: dict[str, Any], tally: Tally) -> dict[str, Any]:
    jq = importlib.import_module("jqueue")
    bucket, n, key = cfg["bucket"], cfg["jobs"], "queues/bench.json"
    s3_client(cfg).create_bucket(Bucket=bucket)

    def storage() -> Boto3Storage:
        return Boto3Storage(tally.hook(s3_client(cfg)), bucket, key, jq.CASConflictError)

    async def submit() -> None:
        async with jq.BrokerQueue(Boto3Storage(s3_client(cfg), bucket, key,
                                               jq.CASConflictError)) as q:
            await asyncio.gather(*(q.enqueue("bench", json.dumps(payload(i)).encode())
                                   for i in range(n)))

    asyncio.run(submit())
    ready(cfg)

    async def work() -> float:
        deadline = time.monotonic() + cfg["timeout"]

        async def worker(k: int) -> None:
            async with jq.BrokerQueue(storage()) as q:
                while time.monotonic() < deadline:
                    try:
                        jobs = await q.dequeue("bench", batch_size=1)
                        if not jobs:
                            return
                        for job in jobs:
                            tally.ran(int(json.loads(job.payload)["id"]))
                            await q.ack(job.id)
                    except jq.JQueueError as exc:
                        tally.error(exc)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(cfg["workers"])))
        return time.perf_counter() - t0

    elapsed = asyncio.run(work())
    left = Boto3Storage(s3_client(cfg), bucket, key, jq.CASConflictError)._read()[0]
    remaining = len(json.loads(left).get("jobs", [])) if left else 0
    return {"elapsed_s": elapsed, "completed": n - remaining,
            "left": {"in_state_file": remaining}, "state_file_bytes_at_end": len(left),
            "settings": (f"{cfg['workers']} BrokerQueue instances (group commit), each its own "
                         "boto3 client, on one state object; loop dequeue(batch_size=1) + "
                         "ack; stale_timeout default (5 min)")}


# -------------------------------------------------------------------------------- buquet
def run_buquet(cfg: dict[str, Any], tally: Tally) -> dict[str, Any]:
    bq = importlib.import_module("buquet")
    bucket, n, workers = cfg["bucket"], cfg["jobs"], cfg["workers"]
    setup = s3_client(cfg)
    setup.create_bucket(Bucket=bucket)
    setup.put_bucket_versioning(Bucket=bucket,
                                VersioningConfiguration={"Status": "Enabled"})
    os.environ.setdefault("AWS_ACCESS_KEY_ID", cfg["access_key"])
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", cfg["secret_key"])

    async def connect() -> Any:
        return await bq.connect(endpoint=cfg["endpoint"], bucket=bucket, region=cfg["region"])

    async def submit() -> None:
        q = await connect()
        batch = 200
        for start in range(0, n, batch):
            await q.submit_many([("bench", payload(i))
                                 for i in range(start, min(n, start + batch))])

    asyncio.run(submit())
    ready(cfg)
    quotas = [n // workers + (1 if k < n % workers else 0) for k in range(workers)]

    async def work() -> tuple[float, bool]:
        runs = []
        for k in range(workers):
            q = await connect()
            w = bq.Worker(q, f"bench-{k}", q.all_shards())

            async def handle(inp: Any) -> None:
                tally.ran(int(inp["id"]))

            w.task("bench")(handle)
            runs.append(w.run(bq.WorkerRunOptions(max_tasks=quotas[k])))
        t0 = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(*runs), cfg["timeout"])
        except TimeoutError:
            timed_out = True
        return time.perf_counter() - t0, timed_out

    elapsed, timed_out = asyncio.run(work())
    return {"elapsed_s": elapsed, "completed": len(tally.runs), "timed_out_inner": timed_out,
            "settings": (f"{workers} buquet.Worker (own connection each, all 16 shards), "
                         f"run(WorkerRunOptions(max_tasks=N/{workers})) — defaults otherwise "
                         "(embedded monitor on, poll 1 s); bucket versioning enabled")}


RUNNERS: dict[str, Callable[[dict[str, Any], Tally], dict[str, Any]]] = {
    "pail": run_pail, "jqueue": run_jqueue, "buquet": run_buquet}


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    peer = cfg["peer"]
    tally = Tally()
    out: dict[str, Any] = {"peer": peer, "jobs": cfg["jobs"], "workers": cfg["workers"],
                           "timeout_s": cfg["timeout"], "python": sys.version.split()[0]}
    try:
        out["version"] = importlib.metadata.version(DISTRIBUTION[peer])
        out["boto3"] = importlib.metadata.version("boto3")
        out.update(RUNNERS[peer](cfg, tally))
        out["ok"] = True
    except Exception as exc:
        out["ok"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()[-3000:]
    out["handler_runs"] = sum(tally.runs.values())
    out["distinct_jobs_run"] = len(tally.runs)
    out["processed_more_than_once"] = sum(1 for v in tally.runs.values() if v > 1)
    out["requests"] = dict(tally.requests) or None
    out["errors"] = dict(tally.errors)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
