"""The ceiling: the raw rate of the store itself, with the client settings s3q uses (one
store object shared by 8 threads, as a worker's slots share theirs), and the upper bound it
puts on s3q's jobs/s given the request mix of a job."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.common import request_body
from bench.runs import CountedStore
from s3q.store import NotFound, PreconditionFailed
from s3q.storecheck import check_store

THREADS = 8
#: The store operation each counted request type is limited by.
OP_OF_REQUEST = {
    "PutObject": "put_conditional",
    "GetObject": "get",
    "HeadObject": "head",
    "HeadBucket": "head",
    "DeleteObject": "delete",
    "DeleteObjects": "delete_batch",
    "ListObjectsV2": "list_page",
    "CopyObject": "copy",
}
OPS = ("put_conditional", "get", "head", "list_page", "copy", "delete", "delete_batch")


@dataclass
class OpRate:
    op: str
    done: int
    elapsed_s: float
    per_s: float
    errors: int


def _hammer(fn: Callable[[int], None], seconds: float, limit: int | None) -> OpRate:
    """Run ``fn(i)`` for i = 0, 1, ... from THREADS threads for ``seconds`` (or until
    ``limit`` calls were handed out)."""
    counter = itertools.count()
    lock = threading.Lock()
    done = [0]
    errors = [0]
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter)
            if limit is not None and i >= limit:
                return
            try:
                fn(i)
            except (NotFound, PreconditionFailed):
                with lock:
                    errors[0] += 1
                continue
            with lock:
                done[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return OpRate("", done[0], round(elapsed, 3), round(done[0] / elapsed, 1), errors[0])


def measure(store: CountedStore, seconds: float, page_size: int = 100) -> dict[str, OpRate]:
    """Rates of each operation s3q uses, on 1 KB objects. Order: conditional PUTs create
    the objects the later phases read, list, copy and delete. The store is checked first,
    as a worker's start checks it, so that a batch delete is what s3q sends there."""
    check_store(store, max_age=3600)
    body = request_body(0)
    created: list[tuple[str, str]] = []
    clock = threading.Lock()

    def put(i: int) -> None:
        info = store.put(f"obj/{i:08d}", body, if_none_match=True)
        with clock:
            created.append((info.key, info.etag))

    rates = {"put_conditional": _hammer(put, seconds, None)}
    keys = sorted(created)
    n = len(keys)
    rng = random.Random(1)

    def get(i: int) -> None:
        store.get(keys[rng.randrange(n)][0])

    def head(i: int) -> None:
        store.head(keys[rng.randrange(n)][0])

    def list_page(i: int) -> None:
        store.list_page("obj/", start_after=keys[rng.randrange(n)][0], limit=page_size)

    def copy(i: int) -> None:
        store.copy(keys[i % n][0], f"copy/{i:08d}")

    def delete(i: int) -> None:  # conditional, as s3q's c3 and d5 (d4 costs the same)
        store.delete(keys[i][0], if_match=keys[i][1])

    def delete_batch(i: int) -> None:  # 2 conditional deletes in one request: a one-slot
        # worker's c2 with the commit (d5) of its previous job (one by one where the store
        # does not honour per-object ETags in DeleteObjects: what s3q sends there)
        store.delete_batch(keys[n - 2 - 2 * i:n - 2 * i])

    rates["get"] = _hammer(get, seconds, None)
    rates["head"] = _hammer(head, seconds, None)
    rates["list_page"] = _hammer(list_page, seconds, None)
    rates["copy"] = _hammer(copy, seconds, None)
    rates["delete"] = _hammer(delete, seconds, n // 2)  # the first half of the objects,
    rates["delete_batch"] = _hammer(delete_batch, seconds, n // 4)  # the last half in pairs
    for op, r in rates.items():
        r.op = op
    return rates


def bound(mix_per_job: Mapping[str, float], rates: Mapping[str, OpRate]) -> tuple[float, float]:
    """(seconds of store capacity one job uses, the resulting jobs/s upper bound):
    sum over operations of requests-per-job / rate of that operation."""
    seconds = 0.0
    for request, per in mix_per_job.items():
        op = OP_OF_REQUEST.get(request)
        if op is None or op not in rates or rates[op].per_s <= 0:
            continue
        seconds += per / rates[op].per_s
    return seconds, (1 / seconds if seconds else float("nan"))
