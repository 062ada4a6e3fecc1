"""One measured s3q run: submit N small requests, then drain them with
:class:`s3q.worker.Worker` (burst mode) and count what it cost."""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.common import CountingStore, CpuMeter, diff_counts, request_body, request_name
from bench.s3env import S3Env
from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.job import Job
from s3q.store import Store, list_all
from s3q.storecheck import check_store
from s3q.worker import Worker, WorkerOptions


class CountedStore(Store, Protocol):
    def snapshot_counts(self) -> tuple[Counter[str], Counter[str]]: ...


#: Builds one store on the run's location (each worker of a run gets its own, as separate
#: processes would; the threads of one worker share theirs).
StoreFactory = Callable[[], CountedStore]


@dataclass
class Location:
    kind: str  # "local" or "s3"
    describe: str
    factory: StoreFactory
    cleanup: Callable[[], None] = lambda: None


def local_location(tag: str, parent: Path | None = None) -> Location:
    root = Path(tempfile.mkdtemp(prefix=f"s3q-bench-{tag}-", dir=parent))

    def cleanup() -> None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)

    return Location("local", f"local directory {root}",
                    lambda: CountingStore(LocalStore(root)), cleanup)


def s3_location(s3: S3Env, tag: str) -> Location:
    endpoint, prefix = s3.fresh(tag)
    return Location("s3", f"s3://{endpoint.bucket}/{prefix} at {s3.url}",
                    lambda: s3.store(endpoint, prefix))


@dataclass
class RunResult:
    label: str
    store: str
    workers: int
    concurrency: int
    jobs: int
    completed: int
    elapsed_s: float
    jobs_per_s: float
    counts: dict[str, int]
    errors: dict[str, int]
    finished: int
    left_waiting: int
    settings: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_handler(job: Job) -> None:
    """The no-op handler: receives the request (reads its 1 KB body) and does nothing."""
    job.read()


def submit(queue: Queue, jobs: int, threads: int = 16, start: int = 0) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: queue.submit(request_name(i), request_body(i)),
                      range(start, start + jobs)))


def run_s3q(
    location: Location,
    jobs: int,
    *,
    concurrency: int,
    workers: int = 1,
    config: QueueConfig | None = None,
    handler: Callable[[Job], None] = read_handler,
    label: str = "s3q",
    prefill: bool = True,
    meter: CpuMeter | None = None,
) -> RunResult:
    """Submit ``jobs`` requests, then time ``workers`` Worker objects (each with its own
    store and ``concurrency`` slots, burst mode) until the queue is drained; ``meter`` is
    started and stopped with the clock (stores are made, and checked as a worker's start
    checks them, before it starts)."""
    config = config or QueueConfig()
    stores = [location.factory() for _ in range(workers)]
    for store in stores:  # as `s3q worker` does at its start (probed once, then cached)
        check_store(store, max_age=3600)
    queues = [Queue(s, config) for s in stores]
    if prefill:
        submit(queues[0], jobs)
    before = [s.snapshot_counts() for s in stores]
    results: list[Any] = [None] * workers

    def one(i: int) -> None:
        w = Worker(queues[i], handler, WorkerOptions(
            worker_id=f"bench-{label}-{i}", concurrency=concurrency, burst=True))
        results[i] = w.run()

    if meter is not None:
        meter.start()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if meter is not None:
        meter.stop()
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for s, (c0, e0) in zip(stores, before, strict=True):
        c1, e1 = s.snapshot_counts()
        counts.update(diff_counts(c1, c0))
        errors.update(diff_counts(e1, e0))
    completed = sum(r.completed for r in results if r is not None)
    finished = sum(1 for _ in list_all(stores[0], "finish/"))
    waiting = sum(1 for _ in list_all(stores[0], "wait/"))
    for q in queues:
        q.close()
    c = config
    settings = (f"Worker(burst=True, concurrency={concurrency}) x {workers}; "
                f"QueueConfig(lease_ttl={c.lease_ttl:g}, page_size={c.page_size}, "
                f"on_finish={c.on_finish!r})")
    return RunResult(label=label, store=location.kind, workers=workers,
                     concurrency=concurrency, jobs=jobs, completed=completed,
                     elapsed_s=round(elapsed, 3), jobs_per_s=round(completed / elapsed, 2),
                     counts=dict(counts), errors=dict(errors), finished=finished,
                     left_waiting=waiting, settings=settings,
                     extra={"cpu_s": meter.spent} if meter is not None else {})
