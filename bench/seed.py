"""The seed's approach, measured on the same server as s3q: requests moved wait/ ->
processing/ -> finish/ by copy + delete, no lease, no lock.

* :func:`run_seed_boto3`: written plainly with boto3. Each worker (a thread with its own
  client, as the seed's servers each had their own) lists wait/ and works through the
  listing, as a server that lists and takes what it sees would: ``spread=True`` (the
  strongest honest version: each worker takes its own share of each listing, so they
  rarely collide) or in order (they collide on nearly every key). Workers really race: two
  that copy the same request before either deletes it both process it. Every handler run
  is recorded, so the duplicates are counted, not inferred.
* :func:`run_seed_cli`: the seed's scripts: one ``aws s3 mv`` subprocess per move.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from bench.common import CpuMeter, request_body, request_name
from tests.s3server import S3Endpoint

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass
class SeedResult:
    label: str
    workers: int
    jobs: int
    elapsed_s: float
    jobs_per_s: float
    handler_runs: int
    processed_more_than_once: int
    extra_runs: int
    finished: int
    left_waiting: int
    left_processing: int
    counts: dict[str, int]
    errors: dict[str, int]
    settings: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _count_keys(client: S3Client, bucket: str, prefix: str) -> int:
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += len(page.get("Contents", []))
    return n


def _prefill(client: S3Client, bucket: str, prefix: str, jobs: int) -> None:
    with ThreadPoolExecutor(10) as pool:  # the client's connection pool holds 10
        list(pool.map(lambda i: client.put_object(
            Bucket=bucket, Key=f"{prefix}/wait/{request_name(i)}", Body=request_body(i)),
            range(jobs)))


def run_seed_boto3(endpoint: S3Endpoint, prefix: str, jobs: int, workers: int, *,
                   spread: bool = False, meter: CpuMeter | None = None) -> SeedResult:
    setup = endpoint.client()
    bucket = endpoint.bucket
    _prefill(setup, bucket, prefix, jobs)
    runs: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def count_call(event_name: str, **_: Any) -> None:
        with lock:
            counts[event_name.rsplit(".", 1)[-1]] += 1

    def work(i: int) -> None:
        client = endpoint.client()  # one per worker, like one per server
        client.meta.events.register("before-call.s3", count_call)
        wait = f"{prefix}/wait/"
        while True:
            listing = client.list_objects_v2(Bucket=bucket, Prefix=wait, MaxKeys=1000)
            keys = [o["Key"] for o in listing.get("Contents", [])]
            if not keys:
                return
            # spread: worker i takes every workers-th key from the i-th on (its own share)
            for key in keys[i::workers] if spread and len(keys) >= workers else keys:
                name = key[len(wait):]
                proc, fin = f"{prefix}/processing/{name}", f"{prefix}/finish/{name}"
                try:  # aws s3 mv = copy, then delete: the seed's "claim"
                    client.copy_object(Bucket=bucket, Key=proc,
                                       CopySource={"Bucket": bucket, "Key": key})
                except ClientError as e:
                    with lock:
                        errors[f"claim copy: {_code(e)}"] += 1
                    continue  # somebody else moved it first
                client.delete_object(Bucket=bucket, Key=key)
                try:
                    client.get_object(Bucket=bucket, Key=proc)["Body"].read()
                except ClientError as e:
                    with lock:
                        errors[f"read: {_code(e)}"] += 1
                    continue  # the other claimer already finished it
                with lock:
                    runs[name] += 1  # the handler ran on this request
                try:
                    client.copy_object(Bucket=bucket, Key=fin,
                                       CopySource={"Bucket": bucket, "Key": proc})
                    client.delete_object(Bucket=bucket, Key=proc)
                except ClientError as e:
                    with lock:
                        errors[f"finish copy: {_code(e)}"] += 1

    if meter is not None:
        meter.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, range(workers)))
    elapsed = time.perf_counter() - t0
    if meter is not None:
        meter.stop()
    finished = _count_keys(setup, bucket, f"{prefix}/finish/")
    dupes = sum(1 for n in runs.values() if n > 1)
    return SeedResult(
        label=f"seed copy+delete (boto3{', spread' if spread else ', in order'})",
        workers=workers, jobs=jobs,
        elapsed_s=round(elapsed, 3), jobs_per_s=round(finished / elapsed, 2),
        handler_runs=sum(runs.values()), processed_more_than_once=dupes,
        extra_runs=sum(runs.values()) - len(runs), finished=finished,
        left_waiting=_count_keys(setup, bucket, f"{prefix}/wait/"),
        left_processing=_count_keys(setup, bucket, f"{prefix}/processing/"),
        counts=dict(counts), errors=dict(errors),
        settings=(f"{workers} workers (threads, one boto3 client each), each: LIST wait/ "
                  f"(1000 keys), then for each key of {'its share of ' if spread else ''}"
                  f"the listing{'' if spread else ' in order'}: COPY to processing/, "
                  "DELETE wait/, GET, handler, COPY to finish/, DELETE processing/; "
                  "requests counted with botocore 'before-call' events"),
        extra={"cpu_s": meter.spent} if meter is not None else {})


def aws_cli() -> Path:
    """The AWS CLI of this virtualenv (the seed's scripts call ``aws``)."""
    import sys

    return Path(sys.executable).parent / "aws"


def run_seed_cli(endpoint: S3Endpoint, prefix: str, jobs: int, workers: int) -> SeedResult:
    """``aws s3 mv`` per move, one subprocess each, ``workers`` in parallel, each on its
    own share of the requests (no races: the CLI's best case)."""
    setup = endpoint.client()
    bucket = endpoint.bucket
    _prefill(setup, bucket, prefix, jobs)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": endpoint.access_key_id or "",
           "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key or "",
           "AWS_DEFAULT_REGION": endpoint.region, "AWS_PAGER": ""}
    base = [str(aws_cli()), "s3", "mv", "--only-show-errors"]
    if endpoint.endpoint_url:
        base += ["--endpoint-url", endpoint.endpoint_url]
    names = [request_name(i) for i in range(jobs)]
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def mv(src: str, dst: str) -> bool:
        out = subprocess.run([*base, f"s3://{bucket}/{prefix}/{src}",
                              f"s3://{bucket}/{prefix}/{dst}"], env=env,
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            with lock:
                failures[(out.stderr.strip().splitlines() or ["?"])[-1][:200]] += 1
        return out.returncode == 0

    def work(share: list[str]) -> None:
        for name in share:
            if mv(f"wait/{name}", f"processing/{name}"):
                mv(f"processing/{name}", f"finish/{name}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, [names[i::workers] for i in range(workers)]))
    elapsed = time.perf_counter() - t0
    finished = _count_keys(setup, bucket, f"{prefix}/finish/")
    return SeedResult(
        label="seed aws s3 mv (CLI)", workers=workers, jobs=jobs, elapsed_s=round(elapsed, 3),
        jobs_per_s=round(finished / elapsed, 3), handler_runs=finished,
        processed_more_than_once=0, extra_runs=0, finished=finished,
        left_waiting=_count_keys(setup, bucket, f"{prefix}/wait/"),
        left_processing=_count_keys(setup, bucket, f"{prefix}/processing/"),
        counts={}, errors=dict(failures),
        settings=(f"{workers} parallel workers, each: `aws s3 mv --only-show-errors "
                  "--endpoint-url URL s3://B/wait/X s3://B/processing/X` then the same to "
                  "finish/ (2 subprocesses per request; handler reads nothing); disjoint "
                  "shares, no races; requests counted by moto's recorder"))
