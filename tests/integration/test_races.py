"""Racing claimers on one queue: many threads, each with its own :class:`Queue` (and its own
store client), and many processes, on moto's S3 server and on the local directory store.

Every request must be completed exactly once, and the queue must end clean (everything in
finish/, no lease left). The claim races seen (c1 lease creations that lost, c2 copies
abandoned) are printed, not asserted: they show how much the claimers contended."""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

from s3q import Queue, QueueConfig
from s3q.backends.local import LocalStore
from s3q.backends.s3 import S3Store
from s3q.store import Store
from tests.integration._support import CountingStore, StoreSpec, drain, race_child
from tests.s3server import MakeS3Store, S3Endpoint

REQUESTS = 500
THREADS = 8
PROCESSES = 4
PAGE_SIZE = QueueConfig().page_size


def _names(n: int = REQUESTS) -> list[str]:
    # some nested, so that listing crosses "directories" on the local store
    return [f"b{i % 5}/r{i:04d}_request.json" if i % 3 == 0 else f"r{i:04d}_request.json"
            for i in range(n)]


def _submit_all(queue: Queue, names: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: queue.submit(name, name.encode()), names))


def _check_clean(queue: Queue, names: list[str], record: list[tuple[str, str]]) -> None:
    per_name = Counter(name for name, _ in record)
    twice = {name: n for name, n in per_name.items() if n > 1}
    assert not twice, f"completed more than once: {twice}"
    assert set(per_name) == set(names), f"never completed: {sorted(set(names) - set(per_name))}"
    assert len(record) == len(names)
    assert queue.counts() == {"wait": 0, "processing": 0, "finish": len(names), "failed": 0}
    assert list(queue.leases()) == []


def _report(label: str, record: list[tuple[str, str]], counts: Counter[str],
            seconds: float) -> None:
    per_worker = Counter(worker for _, worker in record)
    print(f"\n[races] {label}: {len(record)} jobs in {seconds:.1f} s "
          f"({len(record) / seconds:.0f} jobs/s); c1 lease writes {counts['c1']}, "
          f"lost {counts['c1_lost']} ({counts['c1_lost'] / max(1, counts['c1']):.0%}), "
          f"c0 found it gone {counts['c0_gone']}; jobs per worker "
          f"{sorted(per_worker.values())}")


def _race_threads(make_store: Callable[[], Store], names: list[str], label: str) -> None:
    with Queue(make_store()) as submitter:
        _submit_all(submitter, names)
    stores = [CountingStore(make_store()) for _ in range(THREADS)]
    queues = [Queue(store, QueueConfig(page_size=PAGE_SIZE)) for store in stores]
    record: list[tuple[str, str]] = []
    record_lock = threading.Lock()
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        worker_id = f"thread-{i}"
        try:
            barrier.wait(timeout=30)
            done = drain(queues[i], worker_id)
        except BaseException as exc:
            errors.append(exc)
            raise
        with record_lock:
            record.extend((name, worker_id) for name in done)

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    seconds = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a claiming thread hung"
    assert not errors, errors
    counts: Counter[str] = sum((s.counts for s in stores), Counter())
    try:
        _report(label, record, counts, seconds)
        _check_clean(queues[0], names, record)
    finally:
        for q in queues:
            q.close()


def _race_processes(spec: StoreSpec, check_queue: Queue, names: list[str],
                    label: str) -> None:
    _submit_all(check_queue, names)
    ctx = multiprocessing.get_context("spawn")
    results: Any = ctx.Queue()
    barrier = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=race_child,
                         args=(spec, f"proc-{i}", PAGE_SIZE, barrier, results))
             for i in range(PROCESSES)]
    started = time.monotonic()
    for p in procs:
        p.start()
    record: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
    failures: list[str] = []
    try:
        for _ in procs:
            worker_id, names_or_error, child_counts = results.get(timeout=150)
            if isinstance(names_or_error, str):
                failures.append(f"{worker_id}:\n{names_or_error}")
                continue
            record.extend((name, worker_id) for name in names_or_error)
            counts.update(child_counts)
        seconds = time.monotonic() - started
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    assert not failures, "\n".join(failures)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    _report(label, record, counts, seconds)
    _check_clean(check_queue, names, record)


# -- S3 (moto) ----------------------------------------------------------------------------


def test_threads_own_queues_s3(make_s3_store: MakeS3Store) -> None:
    prefix = f"t/{uuid4().hex}"
    _race_threads(lambda: make_s3_store(prefix=prefix), _names(),
                  f"S3, {THREADS} threads")


def test_processes_s3(s3_endpoint: S3Endpoint, make_s3_store: MakeS3Store) -> None:
    prefix = f"t/{uuid4().hex}"
    spec: StoreSpec = {"kind": "s3", "bucket": s3_endpoint.bucket, "prefix": prefix,
                       "options": dataclasses.asdict(s3_endpoint.options())}
    store: S3Store = make_s3_store(prefix=prefix)
    _race_processes(spec, Queue(store), _names(), f"S3, {PROCESSES} processes")


# -- local directory ------------------------------------------------------------------------


def test_threads_own_queues_local(tmp_path: Path) -> None:
    _race_threads(lambda: LocalStore(tmp_path), _names(), f"local, {THREADS} threads")


def test_processes_local(tmp_path: Path) -> None:
    spec: StoreSpec = {"kind": "local", "root": str(tmp_path)}
    with Queue(str(tmp_path)) as queue:
        _race_processes(spec, queue, _names(), f"local, {PROCESSES} processes")

