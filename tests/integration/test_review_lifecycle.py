"""Further worker lifecycle defects found in review (on moto's S3 server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.store import Store, StoreError, StoreUnavailable
from s3q.worker import Worker, WorkerOptions, WorkerStats
from tests.s3server import MakeS3Store

T = TypeVar("T")


def _queue(store: Store, **cfg: Any) -> Queue:
    config = QueueConfig(**{"lease_ttl": 6.0, "retry_base_delay": 0.0,
                            "retry_max_delay": 0.0, "max_attempts": 3, **cfg})
    return Queue(store, config)


class FirstFinishFailsSecondSlow(DelegatingStore):
    """The first write to finish/ fails (its settlement leaves the lease); the second
    takes ``slow`` seconds (a settlement still under way when the burst looks)."""

    def __init__(self, inner: Store, slow: float) -> None:
        super().__init__(inner)
        self.writes = 0
        self.slow = slow
        self.lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op in ("put", "copy") and \
                str(args.get("key", args.get("dst"))).startswith("finish/"):
            with self.lock:
                self.writes += 1
                n = self.writes
            if n == 1:
                raise StoreUnavailable("finish/: injected")
            if n == 2:
                time.sleep(self.slow)
        return fn()


def test_a_burst_waits_for_its_own_unsettled_lease_while_another_job_settles(
        make_s3_store: MakeS3Store) -> None:
    """A completion whose d3 fails leaves the worker's own lease (nobody renews it; the
    request comes back once it expires). If the burst's last look comes while another of
    its settlements is under way, it must not skip that lease as 'its business': the
    settlement that left it is over, and nothing else will ever handle it."""
    q = _queue(FirstFinishFailsSecondSlow(make_s3_store(), slow=2.0), lease_ttl=12.0)
    for name in ("a_request.json", "b_request.json"):
        q.submit(name, b"{}")
    ran: list[str] = []
    stats = Worker(q, lambda job: ran.append(job.name),
                   WorkerOptions("w", concurrency=1, burst=True)).run()
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 2, "failed": 0}, \
        f"burst ended with {q.counts()} after runs {ran}, stats {stats}"


class ListsRefused(DelegatingStore):
    """Every LIST is refused for good (a bucket policy or credentials revoked mid-run)."""

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "list":
            raise StoreError("list: AccessDenied (injected, for good)")
        return fn()


def test_a_burst_ends_when_its_store_keeps_failing(make_s3_store: MakeS3Store) -> None:
    """A burst (cron, a batch job) whose store refuses every LIST for good ends once it has
    answered nothing but errors for burst_patience, and says why (WorkerStats.error: the
    command exits 3), instead of retrying for ever (or, before, ending as if drained)."""
    inner = make_s3_store()
    _queue(inner).submit("a_request.json", b"{}")
    q = _queue(ListsRefused(inner))
    worker = Worker(q, lambda job: None,
                    WorkerOptions("w", concurrency=2, burst=True, scanner=False,
                                  recover_on_start=False, poll_interval=0.5,
                                  burst_patience=2.0))
    stats: list[WorkerStats] = []
    runner = threading.Thread(target=lambda: stats.append(worker.run()), daemon=True)
    runner.start()
    runner.join(60)
    ended = not runner.is_alive()
    if not ended:
        worker.stop()
        runner.join(30)
    assert ended, "the burst still runs after 60 s of a store refusing every LIST"
    [got] = stats
    assert got.error is not None and "errors for 2s" in got.error, got.error
    assert (got.claimed, got.completed) == (0, 0)
    assert _queue(inner).counts()["wait"] == 1  # still waiting


class WaitWritesFail(DelegatingStore):
    """Every write to wait/ fails once ``failing`` is set (the give-back's w1)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.failing = False

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if self.failing and op in ("put", "copy") and \
                str(args.get("key", args.get("dst"))).startswith("wait/"):
            raise StoreUnavailable("wait/: injected")
        return fn()


def test_a_breaker_give_back_that_failed_is_not_counted_released(
        make_s3_store: MakeS3Store) -> None:
    """The breaker's give-back (job.release) fails: nothing was given back (the request
    returns once its lease expires). ad5ae36 counts the breaker's give-backs as released:
    it must not count one that never happened."""
    from s3q.breaker import Breaker

    store = WaitWritesFail(make_s3_store())
    q = _queue(store, max_attempts=5)
    q.submit("a_request.json", b"{}")
    store.failing = True
    breaker = Breaker(q, "w", threshold=1, pause=60.0)

    def broken(job: Any) -> None:
        raise RuntimeError("cannot reach the database")

    outcomes: list[str] = []
    worker = Worker(q, breaker.wrap(broken),
                    WorkerOptions("w", concurrency=1, max_jobs=1, scanner=False),
                    on_job_done=lambda job, outcome, _: outcomes.append(outcome))
    stats = worker.run()
    assert stats.released == 0 and outcomes != ["released"], \
        f"a give-back that failed counted as released: {stats}, outcomes {outcomes}"
