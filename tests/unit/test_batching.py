"""s3q.batching: conditional deletes that share a request keep their own conditions and
answers; a lone one, or one on a store without the capability, is a DeleteObject of its own;
a request that fails as a whole fails each of its deletes (tested on a MemoryStore that
says it honours DeleteObjects' ETags; tests/contract has the same on S3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from s3q.backends.delegating import DelegatingStore
from s3q.backends.memory import MemoryStore
from s3q.batching import DeleteBatcher
from s3q.store import NotFound, PreconditionFailed, StoreError, StoreUnavailable

T = TypeVar("T")


class Recorded(DelegatingStore):
    """The requests sent: ("delete", key) or ("delete_batch", keys); ``fail`` makes the
    next request of several deletes fail as a whole, after it took effect."""

    def __init__(self, batches: bool = True) -> None:
        mem = MemoryStore("batching")
        mem.capabilities = replace(mem.capabilities, batch_conditional_delete=batches)
        super().__init__(mem)
        self.mem = mem
        self.sent: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    def _call(self, op: str, args: dict[str, Any], fn: Callable[[], T]) -> T:
        if op == "delete":
            self.sent.append((op, args["key"]))
        elif op == "delete_batch":
            self.sent.append((op, sorted(k for k, _ in args["items"])))
            if self.fail is not None:
                error, self.fail = self.fail, None
                fn()
                raise error
        return fn()


def _together(batcher: DeleteBatcher, items: Sequence[tuple[str, str]]
              ) -> dict[str, BaseException | None]:
    """Each delete from a thread of its own; once all of them wait (the first lingering
    for others: the batcher's linger is long), :meth:`DeleteBatcher.close` sends them at
    once. Each one's outcome."""
    outcomes: dict[str, BaseException | None] = {}

    def one(key: str, etag: str) -> None:
        try:
            batcher.delete(key, etag)
            outcomes[key] = None
        except Exception as exc:
            outcomes[key] = exc

    threads = [threading.Thread(target=one, args=item) for item in items]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(batcher._pending) < len(items) and time.monotonic() < deadline:
        time.sleep(0.005)
    batcher.close()
    for t in threads:
        t.join(10)
    return outcomes


def test_deletes_that_meet_share_one_request_and_keep_their_own_answers() -> None:
    store = Recorded()
    etags = {k: store.put(k, k.encode()).etag for k in ("a", "b", "c", "d")}
    stale = etags["b"]
    store.put("b", b"changed since")  # b's ETag is stale now
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes = _together(batcher, [("a", etags["a"]), ("b", stale), ("c", etags["c"]),
                                   ("gone", etags["d"])])
    assert store.sent == [("delete_batch", ["a", "b", "c", "gone"])]
    assert outcomes["a"] is None and outcomes["c"] is None
    assert isinstance(outcomes["b"], PreconditionFailed)
    assert isinstance(outcomes["gone"], NotFound)
    assert set(store.mem.snapshot()) == {"b", "d"}  # the refused one is kept


def test_a_lone_delete_is_a_delete_of_its_own() -> None:
    store = Recorded()
    etag = store.put("a", b"a").etag
    DeleteBatcher(lambda: store, linger=0.01).delete("a", etag)
    assert store.sent == [("delete", "a")] and store.mem.snapshot() == {}
    with pytest.raises(NotFound):
        DeleteBatcher(lambda: store, linger=0.01).delete("a", etag)


@pytest.mark.parametrize(("capable", "enabled"), [(False, True), (True, False)])
def test_without_the_capability_or_switched_off_each_delete_goes_at_once(
        capable: bool, enabled: bool) -> None:
    """(Switched off: the batch_deletes setting, QueueConfig.batch_deletes.)"""
    store = Recorded(batches=capable)
    etags = {k: store.put(k, b"x" + k.encode()).etag for k in ("a", "b")}
    batcher = DeleteBatcher(lambda: store, linger=30.0, enabled=enabled)
    started = time.monotonic()
    for key, etag in etags.items():
        batcher.delete(key, etag)
    assert time.monotonic() - started < 15  # nobody lingered
    assert sorted(store.sent) == [("delete", "a"), ("delete", "b")]


def test_a_request_that_fails_as_a_whole_fails_each_delete() -> None:
    """(After it took effect: each caller must treat its delete as possibly applied, as
    after a DeleteObject that failed; leases.commit's retry then sees NotFound, retried.)"""
    store = Recorded()
    etags = {k: store.put(k, k.encode()).etag for k in ("a", "b")}
    store.fail = StoreUnavailable("connection reset")
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    outcomes = _together(batcher, list(etags.items()))
    assert all(isinstance(o, StoreUnavailable) for o in outcomes.values()), outcomes
    assert store.mem.snapshot() == {}
    store.put("c", b"c")
    batcher.delete("c", store.head("c").etag)  # the next request is sent as usual
    assert store.mem.snapshot() == {}


def test_a_key_deleted_twice_at_once_goes_in_two_requests() -> None:
    """Each delete gets its own answer: the first takes the object, the second finds it
    gone (a request holding both could answer only once for the key)."""
    store = Recorded()
    etag = store.put("a", b"a").etag
    batcher = DeleteBatcher(lambda: store, linger=0.3)
    answers: list[BaseException | None] = []
    start = threading.Barrier(2)

    def one() -> None:
        start.wait()
        try:
            batcher.delete("a", etag)
            answers.append(None)
        except StoreError as exc:
            answers.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.sent == [("delete", "a"), ("delete", "a")]
    assert answers[0] is None and isinstance(answers[1], NotFound)


def test_closing_sends_what_is_gathered_at_once() -> None:
    store = Recorded()
    etag = store.put("a", b"a").etag
    batcher = DeleteBatcher(lambda: store, linger=30.0)
    done = threading.Event()

    def delete() -> None:
        batcher.delete("a", etag)
        done.set()

    waiter = threading.Thread(target=delete)
    waiter.start()
    deadline = time.monotonic() + 5
    while not batcher._pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not done.is_set()  # lingering, for another delete to join it
    batcher.close()
    assert done.wait(5) and store.mem.snapshot() == {}
    waiter.join(5)


def test_a_wrong_answer_from_the_store_fails_its_deletes_not_the_batcher() -> None:
    """A store whose delete_batch answers for the wrong number of keys (a bug) fails those
    deletes with the error; the next caller leads the next request as usual."""

    class Short(Recorded):
        def delete_batch(self, items: Sequence[tuple[str, str]]) -> list[StoreError | None]:
            return super().delete_batch(items)[:1]

    short = Short()
    etags = {k: short.put(k, k.encode()).etag for k in ("a", "b")}
    batcher = DeleteBatcher(lambda: short, linger=30.0)
    outcomes = _together(batcher, list(etags.items()))
    assert all(isinstance(o, ValueError) for o in outcomes.values()), outcomes
    short.put("c", b"c")
    batcher.delete("c", short.head("c").etag)
    assert short.sent[-1] == ("delete", "c")
