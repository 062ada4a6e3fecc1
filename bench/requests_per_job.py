"""Count S3 requests per job, by operation, for the paths of docs/PROTOCOL.md §5, on a moto
server started here (or the endpoint in S3Q_TEST_S3_ENDPOINT, see tests/s3server.py), and
compare with the seed's copy-and-delete. Also measures jobs/s of s3q against the seed's
approach side by side, in the same run, same server, same client settings.

    .venv/bin/python -m bench.requests_per_job [--jobs 300] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

from s3q import Queue, QueueConfig
from s3q.backends.s3 import S3Store
from tests.s3server import endpoint_from_env, moto_endpoint, start_moto_server, stop

PRICE = {"class_a": 0.005 / 1000, "class_b": 0.0004 / 1000}  # us-east-1 list prices
CLASS_A = {"PutObject", "CopyObject", "ListObjectsV2", "UploadPartCopy"}
CLASS_B = {"GetObject", "HeadObject"}


def cost_per_million(counts: Counter[str], jobs: int) -> float:
    a = sum(v for k, v in counts.items() if k in CLASS_A)
    b = sum(v for k, v in counts.items() if k in CLASS_B)
    return (a * PRICE["class_a"] + b * PRICE["class_b"]) / jobs * 1e6


def run_s3q(endpoint: object, jobs: int, threads: int, fail_first: bool = False
            ) -> tuple[Counter[str], float]:
    prefix = f"bench/{uuid4().hex}"
    stores = [S3Store(endpoint.bucket, prefix, endpoint.options())  # type: ignore[attr-defined]
              for _ in range(threads)]
    submitter = Queue(stores[0], QueueConfig(retry_base_delay=0, retry_max_delay=0))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: submitter.submit(f"{i:06d}_request.json", b'{"x": 1}' * 128),
                      range(jobs)))
    for s in stores:
        s.request_counts.clear()
    failed_once: set[str] = set()

    def work(store: S3Store) -> None:
        q = Queue(store, QueueConfig(retry_base_delay=0, retry_max_delay=0))
        while (job := q.claim(f"bench-{id(store)}")) is not None:
            job.read()
            if fail_first and job.name not in failed_once:
                failed_once.add(job.name)
                job.fail("first attempt fails")
            else:
                job.complete()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, stores))
    elapsed = time.perf_counter() - t0
    total: Counter[str] = Counter()
    for s in stores:
        total.update(s.request_counts)
    return total, jobs / elapsed


def run_seed(endpoint: object, jobs: int, threads: int) -> tuple[Counter[str], float]:
    """The seed's protocol written plainly with boto3: list wait/, copy+delete to
    processing/, read, copy+delete to finish/. No lease, no lock."""
    prefix = f"bench/{uuid4().hex}"
    store = S3Store(endpoint.bucket, prefix, endpoint.options())  # type: ignore[attr-defined]
    client = store._client
    bucket = endpoint.bucket  # type: ignore[attr-defined]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(
            Bucket=bucket, Key=f"{prefix}/wait/{i:06d}_request.json", Body=b'{"x": 1}' * 128),
            range(jobs)))
    store.request_counts.clear()
    keys = [o.key for o in store.list_page("wait/", limit=1000).items]
    shares = [keys[i::threads] for i in range(threads)]  # no contention: the seed's best case

    def work(mine: list[str]) -> None:
        for key in mine:
            name = key[len("wait/"):]
            src, proc, fin = (f"{prefix}/{key}", f"{prefix}/processing/{name}",
                              f"{prefix}/finish/{name}")
            client.copy_object(Bucket=bucket, Key=proc, CopySource={"Bucket": bucket, "Key": src})
            client.delete_object(Bucket=bucket, Key=src)
            client.get_object(Bucket=bucket, Key=proc)["Body"].read()
            client.copy_object(Bucket=bucket, Key=fin, CopySource={"Bucket": bucket, "Key": proc})
            client.delete_object(Bucket=bucket, Key=proc)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, shares))
    return Counter(store.request_counts), jobs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    endpoint = endpoint_from_env()
    proc = None
    if endpoint is None:
        proc, url = start_moto_server()
        endpoint = moto_endpoint(url)
        endpoint.client().create_bucket(Bucket=endpoint.bucket)
    try:
        report = {}
        for label, fn in [("s3q", lambda: run_s3q(endpoint, args.jobs, args.threads)),
                          ("seed copy+delete", lambda: run_seed(endpoint, args.jobs,
                                                                args.threads)),
                          ("s3q, every job fails once", lambda: run_s3q(
                              endpoint, args.jobs, args.threads, fail_first=True))]:
            counts, rate = fn()
            per_job = {k: round(v / args.jobs, 2) for k, v in sorted(counts.items())}
            report[label] = {"jobs_per_s": round(rate, 1), "requests_per_job": per_job,
                             "total_per_job": round(sum(counts.values()) / args.jobs, 2),
                             "usd_per_million_jobs": round(cost_per_million(counts,
                                                                            args.jobs), 2)}
        s3q_rate = report["s3q"]["jobs_per_s"]
        seed_rate = report["seed copy+delete"]["jobs_per_s"]
        report["ratio s3q/seed jobs_per_s"] = round(s3q_rate / seed_rate, 2)  # type: ignore[operator]
        print(json.dumps({"jobs": args.jobs, "threads": args.threads, **report}, indent=2))
    finally:
        if proc is not None:
            stop(proc)


if __name__ == "__main__":
    main()
