"""Helpers shared by the integration tests, importable by spawned child processes (so this
module must not import pytest or the test fixtures).

* :class:`CountingStore` wraps a store and counts the claim races it sees (c1 lease
  creations that lost, c2 copies abandoned because the request had left wait/).
* :func:`drain` claims and completes until wait/ is empty.
* :func:`race_child` is the body of one racing process; the store it uses is described by a
  :data:`StoreSpec` of plain, picklable values.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, TypeVar

from s3q import Queue, QueueConfig
from s3q.backends import S3Options
from s3q.backends.delegating import DelegatingStore
from s3q.backends.local import LocalStore
from s3q.backends.s3 import S3Store
from s3q.store import NotFound, PreconditionFailed, Store

__all__ = ["CountingStore", "StoreSpec", "drain", "open_spec", "race_child"]

T = TypeVar("T")

LEASE_PREFIX = ".s3q/lease/"
WAIT_PREFIX = "wait/"

#: {"kind": "s3", "bucket": str, "prefix": str, "options": {S3Options fields}}
#: or {"kind": "local", "root": str}
StoreSpec = dict[str, Any]


def open_spec(spec: StoreSpec) -> Store:
    """The store a :data:`StoreSpec` describes (a new one, with its own client)."""
    if spec["kind"] == "s3":
        return S3Store(spec["bucket"], spec["prefix"], S3Options(**spec["options"]))
    if spec["kind"] == "local":
        return LocalStore(Path(spec["root"]))
    raise ValueError(f"unknown store kind {spec['kind']!r}")


class CountingStore(DelegatingStore):
    """A :class:`~s3q.store.Store` that delegates to ``inner`` and counts claim races:

    * ``c1``: lease creations (``put`` of ``.s3q/lease/…`` with ``if_none_match``);
    * ``c1_lost``: those that raised PreconditionFailed (another claimer held the name);
    * ``c0_gone``: reads of a listed request that found it gone (claimed by another
      worker between the listing and the read).
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        c1 = op == "put" and args["if_none_match"] and args["key"].startswith(LEASE_PREFIX)
        if c1:
            self._count("c1")
        try:
            return fn()
        except (NotFound, PreconditionFailed) as exc:
            if c1 and isinstance(exc, PreconditionFailed):
                self._count("c1_lost")
            elif op == "get" and args["key"].startswith(WAIT_PREFIX):
                self._count("c0_gone")
            raise


def drain(queue: Queue, worker_id: str, *, timeout: float = 100.0) -> list[str]:
    """Claim, read and complete requests until wait/ is empty; return the names completed.
    Each body must be its own name (as the race tests submit them)."""
    done: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = queue.claim(worker_id)
        if job is None:
            # nothing claimable for us: finished, or what is left is in flight elsewhere
            if not queue.store.list_page(WAIT_PREFIX, limit=1).items:
                return done
            time.sleep(0.02)
            continue
        body = job.read()
        if body != job.name.encode():
            raise AssertionError(f"{job.name}: read {body[:60]!r}")
        job.complete()
        done.append(job.name)
    raise TimeoutError(f"{worker_id}: wait/ still not empty after {timeout} s")


def race_child(spec: StoreSpec, worker_id: str, page_size: int, barrier: Barrier,
               results: MPQueue[tuple[str, Any, dict[str, int]]]) -> None:
    """One racing process: its own store and queue; reports (worker_id, names, counts), or
    (worker_id, the traceback as a str, {}) if it failed."""
    try:
        store = CountingStore(open_spec(spec))
        with Queue(store, QueueConfig(page_size=page_size)) as queue:
            barrier.wait(timeout=60)
            names = drain(queue, worker_id)
        results.put((worker_id, names, dict(store.counts)))
    except BaseException:
        results.put((worker_id, traceback.format_exc(), {}))
        raise
