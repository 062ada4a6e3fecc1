"""Worker lifecycle defects found in review, each on moto's S3 server: a handler that
gives up on its lease deadline, a burst whose store blinks, a stop that must drain within
``grace``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from s3q import Queue, QueueConfig
from s3q.backends.delegating import DelegatingStore
from s3q.context import Deadline
from s3q.job import Job
from s3q.store import Store, StoreUnavailable
from s3q.worker import Worker, WorkerOptions
from tests.s3server import MakeS3Store

T = TypeVar("T")


def _queue(store: Store, **cfg: Any) -> Queue:
    config = QueueConfig(**{"lease_ttl": 6.0, "retry_base_delay": 0.0,
                            "retry_max_delay": 0.0, "max_attempts": 3, **cfg})
    return Queue(store, config)


def test_a_handler_giving_up_at_its_deadline_does_not_complete_the_request(
        make_s3_store: MakeS3Store) -> None:
    """A handler that checks its lease (``job.check_deadline()``) after its process stalled
    past the deadline gets LeaseLost and stops before doing its work. The worker must not
    then complete the request: its work was never done, and finish/ would say it was."""
    q = _queue(make_s3_store(), lease_ttl=5.0)
    q.submit("a_request.json", b"{}")
    done: list[str] = []
    stalled: list[int] = []

    def handler(job: Job) -> None:
        if not stalled:  # its first run: the process stalled past the deadline
            stalled.append(job.attempt)
            job.deadline = Deadline(job.deadline.at - 3600, job.deadline.monotonic, job.name)
            job.check_deadline()  # raises LeaseLost: the work below is not done
        done.append(job.name)

    worker = Worker(q, handler, WorkerOptions("w", concurrency=1, burst=True))
    stats = worker.run()
    assert not (q.counts()["finish"] == 1 and done == []), \
        "the request is in finish/ although its handler never did its work"
    assert stats.completed == 0
    # its lease (not renewable in time: the failure's w1 is refused) is left to recovery:
    # here the next run's own recovery; the request runs again, and completes
    stats = worker.run()
    assert done == ["a_request.json"] and stats.completed == 1
    assert q.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}


class ListsFail(DelegatingStore):
    """Every LIST fails while ``failing`` is set (a store that blinks); the test clears it
    once ``failures`` LISTs failed."""

    def __init__(self, inner: Store, failures: int) -> None:
        super().__init__(inner)
        self.left = failures
        self.lock = threading.Lock()

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "list":
            with self.lock:
                if self.left > 0:
                    self.left -= 1
                    raise StoreUnavailable("list: injected")
        return fn()


def test_a_burst_outlasts_a_store_that_blinks(make_s3_store: MakeS3Store) -> None:
    """A burst's claim and its look at what is left both fail once (a LIST refused): the
    burst must carry on and process what waits, not end with its last slot dead."""
    inner = make_s3_store()
    q0 = _queue(inner)
    q0.submit("a_request.json", b"{}")
    store = ListsFail(inner, failures=2)
    q = _queue(store)
    errors: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        stats = Worker(q, lambda job: None,
                       WorkerOptions("w", concurrency=1, burst=True, scanner=False,
                                     recover_on_start=False)).run()
    finally:
        threading.excepthook = previous
    assert errors == [], f"a slot died: {errors!r}"
    assert stats.completed == 1
    assert q0.counts() == {"wait": 0, "processing": 0, "finish": 1, "failed": 0}
